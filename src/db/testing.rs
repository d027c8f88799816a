//! A throwaway PostgreSQL cluster for tests and benchmarks, so they run against a real server
//! with nothing set up by hand.
//!
//! [`test_database`] hands out a fresh, empty database URL per call:
//! - if `FLASHLINE_TEST_PG` is set (a `postgres://` URL of a role that may `CREATE DATABASE`),
//!   the databases are created on that server;
//! - otherwise one cluster per process is made with `initdb` in a temporary directory (as the
//!   `postgres` user when running as root), listening only on a unix socket in that directory,
//!   and started with `pg_ctl`. A watchdog shell holding a pipe from this process stops the
//!   server and removes the directory when the process ends, however it ends.
//!
//! The server binaries are looked up in `FLASHLINE_PG_BIN`, then `/usr/lib/postgresql/*/bin`
//! (Debian's `postgresql` package), then `PATH`.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use sqlx::Connection;

/// A PostgreSQL cluster living in a temporary directory; stopped and removed when dropped or
/// when the process exits.
pub struct TempPostgres {
    dir: PathBuf,
    port: u16,
    /// `pg_ctl` arguments to start the server again after [`TempPostgres::stop`].
    restart: Vec<String>,
    watchdog: Option<Child>,
    pipe: Option<ChildStdin>,
}

impl std::fmt::Debug for TempPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TempPostgres").field("dir", &self.dir).field("port", &self.port).finish()
    }
}

fn find_bindir() -> Result<PathBuf, String> {
    if let Ok(d) = std::env::var("FLASHLINE_PG_BIN") {
        return Ok(PathBuf::from(d));
    }
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        for e in rd.flatten() {
            let bin = e.path().join("bin");
            let ver = e.file_name().to_string_lossy().split('.').next().and_then(|v| v.parse().ok()).unwrap_or(0);
            if bin.join("initdb").is_file() && bin.join("pg_ctl").is_file() {
                found.push((ver, bin));
            }
        }
    }
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if d.join("initdb").is_file() && d.join("pg_ctl").is_file() {
                return Ok(d);
            }
        }
    }
    Err("PostgreSQL server binaries (initdb, pg_ctl) not found: install the `postgresql` package, \
         set FLASHLINE_PG_BIN to their directory, or set FLASHLINE_TEST_PG to a server URL"
        .into())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { nix::libc::geteuid() == 0 }
}

/// Run `bin args…` as the cluster owner (the `postgres` user when we are root).
fn as_owner(bin: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(bin).args(args);
        c
    } else {
        let mut c = Command::new(bin);
        c.args(args);
        c
    }
}

fn run(mut c: Command, what: &str) -> Result<(), String> {
    let out = c.stdin(Stdio::null()).output().map_err(|e| format!("{what}: cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| format!("no free port: {e}"))
}

impl TempPostgres {
    /// initdb + start a new cluster. Takes a few seconds.
    pub fn start() -> Result<TempPostgres, String> {
        let bin = find_bindir()?;
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        // Short path under /tmp: unix socket paths are limited to ~107 bytes.
        let dir = PathBuf::from(format!(
            "/tmp/flashline-pg-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut pg = TempPostgres { dir: dir.clone(), port: free_port()?, restart: Vec::new(), watchdog: None, pipe: None };
        if is_root() {
            let mut c = Command::new("chown");
            c.arg("postgres:").arg(&dir);
            run(c, "chown of the cluster directory to the postgres user (does the `postgres` user exist?)")?;
        }
        let data = dir.join("data");
        let data_s = data.to_string_lossy().to_string();
        let dir_s = dir.to_string_lossy().to_string();
        run(
            as_owner(&bin.join("initdb"), &["-D", &data_s, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"]),
            "initdb",
        )?;
        let opts = format!(
            "-k {dir_s} -p {} -c listen_addresses='' -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=200",
            pg.port
        );
        let log = dir.join("server.log").to_string_lossy().to_string();
        // The watchdog: waits for our end of the pipe to close (this process exited or dropped
        // us), then stops the server and removes the directory. Ignores ^C so it can clean up.
        let owner = if is_root() { "runuser -u postgres --" } else { "" };
        let script = format!(
            "trap '' INT TERM HUP; cat >/dev/null; {owner} '{}' -D '{data_s}' stop -m immediate -w >/dev/null 2>&1; rm -rf '{dir_s}'",
            bin.join("pg_ctl").display()
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the cluster watchdog: {e}"))?;
        pg.pipe = child.stdin.take();
        pg.watchdog = Some(child);
        pg.restart = [bin.join("pg_ctl").to_string_lossy().as_ref(), "-D", &data_s, "-o", &opts, "-l", &log, "-w", "-t", "60"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let started = pg.pg_ctl("start");
        if let Err(e) = started {
            let mut tail = String::new();
            if let Ok(mut f) = std::fs::File::open(&log) {
                let _ = f.read_to_string(&mut tail);
            }
            return Err(format!("{e}\nserver log:\n{tail}"));
        }
        Ok(pg)
    }

    fn pg_ctl(&self, action: &str) -> Result<(), String> {
        let (prog, args) = self.restart.split_first().ok_or("no pg_ctl")?;
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        if action == "stop" {
            // -o/-l belong to start only.
            args = vec![args[0], args[1], "-m", "fast", "-w", "-t", "60"];
        }
        args.push(action);
        run(as_owner(Path::new(prog), &args), &format!("pg_ctl {action}"))
    }

    /// Stop the server (fast shutdown: connections are cut), as an outage in the middle of a
    /// shift would.
    pub fn stop(&self) -> Result<(), String> {
        self.pg_ctl("stop")
    }

    /// Start the server again after [`TempPostgres::stop`].
    pub fn start_again(&self) -> Result<(), String> {
        self.pg_ctl("start")
    }

    /// URL of database `db` on this cluster, as the `postgres` superuser over the unix socket.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@localhost/{db}?host={}&port={}", self.dir.display(), self.port)
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        // Closing the pipe tells the watchdog to stop the server and clean up.
        drop(self.pipe.take());
        if let Some(mut w) = self.watchdog.take() {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = w.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// Replace the database name in a `postgres://` URL.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let authority_end = base[scheme_end..].find('/').map(|i| scheme_end + i).unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

fn shared_cluster() -> Result<&'static TempPostgres, String> {
    static CLUSTER: OnceLock<Result<TempPostgres, String>> = OnceLock::new();
    CLUSTER.get_or_init(TempPostgres::start).as_ref().map_err(Clone::clone)
}

/// The URL of the server's maintenance database: `FLASHLINE_TEST_PG`, else this process's
/// throwaway cluster (started on first use).
pub fn server_url() -> Result<String, String> {
    match std::env::var("FLASHLINE_TEST_PG") {
        Ok(u) if !u.trim().is_empty() => Ok(u),
        _ => shared_cluster().map(|c| c.url("postgres")),
    }
}

/// Create a fresh, empty database for one test and return its URL.
pub async fn test_database() -> Result<String, String> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let admin = tokio::task::spawn_blocking(server_url).await.map_err(|e| e.to_string())??;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let name = format!("flashline_test_{}_{}_{nanos}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
    let mut conn = sqlx::PgConnection::connect(&admin).await.map_err(|e| format!("connect to {admin}: {e}"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
    let _ = conn.close().await;
    Ok(with_database(&admin, &name))
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(with_database("postgres://u:p@h:5432/postgres", "t1"), "postgres://u:p@h:5432/t1");
        assert_eq!(with_database("postgres://u@h", "t1"), "postgres://u@h/t1");
        assert_eq!(
            with_database("postgres://postgres@localhost/postgres?host=/tmp/x&port=5", "t2"),
            "postgres://postgres@localhost/t2?host=/tmp/x&port=5"
        );
    }
}
