//! Shared by the `web_*` tests: a real station process with the dashboard, a plain HTTP/1.1
//! client over a TCP socket, the records read back through Python's sqlite3, and headless
//! Chromium through chromedriver.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../support/mod.rs"]
mod support;
pub use support::sql;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_flashline")
}

/// The Planck rev4 recipe with `serial.pattern` removed (so hostile serials reach a slot and
/// are shown on a tile) and paths made absolute; written into `dir`.
pub fn recipe_without_pattern(dir: &Path) -> PathBuf {
    let src = repo().join("recipes/planck-rev4");
    let text = std::fs::read_to_string(src.join("recipe.yaml")).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("pattern:") {
            continue;
        }
        let line = line
            .replace("firmware: fw/", &format!("firmware: {}/fw/", src.display()))
            .replace("file: bl/", &format!("file: {}/bl/", src.display()));
        out.push_str(&line);
        out.push('\n');
    }
    let p = dir.join("recipe.yaml");
    std::fs::write(&p, out).unwrap();
    p
}

/// A station file in `dir`.
pub fn station_file(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("station.yaml");
    std::fs::write(&p, body).unwrap();
    p
}

/// A running `flashline run … --serve` (or `flashline serve`) process; stopped with SIGTERM
/// (then SIGKILL) on drop.
pub struct Proc {
    pub child: Option<Child>,
    pub stderr: Arc<Mutex<String>>,
    pub stdout: Arc<Mutex<String>>,
    pub url: String,
    pub addr: SocketAddr,
    pub token: Option<String>,
}

fn pump(r: impl Read + Send + 'static, buf: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            let mut b = buf.lock().unwrap();
            b.push_str(&line);
            b.push('\n');
        }
    });
}

impl Proc {
    /// Start the binary with `args`; wait (bounded) for the dashboard line on stderr.
    pub fn start(args: &[&str], cwd: &Path) -> Proc {
        let mut child = Command::new(bin())
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start flashline");
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        pump(child.stderr.take().unwrap(), stderr.clone());
        pump(child.stdout.take().unwrap(), stdout.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let text = stderr.lock().unwrap().clone();
            if let Some(l) = text.lines().find(|l| l.starts_with("dashboard (")) {
                break l.rsplit(' ').next().unwrap().to_string();
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("flashline exited ({st}) before serving:\n{text}");
            }
            assert!(Instant::now() < deadline, "no dashboard line within 30 s:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let token = stderr
            .lock()
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("dashboard token (generated): ").map(str::to_string));
        let addr: SocketAddr = url.trim_start_matches("http://").trim_end_matches('/').parse().unwrap();
        Proc { child: Some(child), stderr, stdout, url, addr, token }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// SIGTERM, then wait up to `within` for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(15));
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request, path sent exactly as given (no normalisation), `Connection: close`.
/// For streaming responses (SSE) only the head and what arrived within a short wait are read.
pub fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the dashboard");
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req += &format!("Host: {addr}\r\n");
    }
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    if let Some(b) = body {
        req += &format!("Content-Length: {}\r\n", b.len());
    }
    req += "Connection: close\r\n\r\n";
    if let Some(b) = body {
        req += b;
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => break, // read timeout: a stream that stays open (SSE)
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("");
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
    let headers = lines.filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))).collect();
    Resp { status, headers, body: body.to_string() }
}

/// Attempts of `station` by result: (pass, fail, error + interrupted, total, distinct units).
pub fn db_counts(db_path: &Path, station: &str) -> (u64, u64, u64, u64, u64) {
    let q = format!(
        "select coalesce(sum(a.result='pass'),0), coalesce(sum(a.result='fail'),0), \
         coalesce(sum(a.result in ('error','interrupted')),0), count(*), count(distinct a.unit_id) \
         from attempts a join stations s on s.id=a.station_id where s.name='{station}' and a.result <> 'running'"
    );
    let r = sql(db_path, &q);
    let v: Vec<u64> = r.split('|').map(|x| x.parse().unwrap()).collect();
    (v[0], v[1], v[2], v[3], v[4])
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// chromedriver driving Debian's headless Chromium; killed on drop.
pub struct Driver {
    child: Child,
    pub url: String,
    profile: tempfile::TempDir,
}

impl Driver {
    pub fn start() -> Driver {
        let exe = ["chromedriver", "/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| Command::new(p).arg("--version").output().map(|o| o.status.success()).unwrap_or(false))
            .expect("chromedriver not found: install Debian's chromium and chromium-driver (.ci/run does)");
        let port = free_port();
        let child = Command::new(exe)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, url: format!("http://127.0.0.1:{port}"), profile: tempfile::tempdir().unwrap() }
    }

    /// A browser session: headless Chromium with a fresh profile, alerts left open so a test
    /// can see whether one fired.
    pub async fn client(&self) -> fantoccini::Client {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].into_iter().find(|p| Path::new(p).exists()).expect("chromium not installed");
        let caps = serde_json::json!({
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1600,1000",
                    format!("--user-data-dir={}", self.profile.path().display()),
                ]
            }
        });
        let caps = caps.as_object().unwrap().clone();
        let mut b = fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        b.capabilities(caps);
        tokio::time::timeout(Duration::from_secs(60), b.connect(&self.url))
            .await
            .expect("browser session within 60 s")
            .expect("browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `f` until it returns `Some`, at most `secs` seconds.
pub async fn wait_for<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
