//! Records: where a unit row is written. SQLite by default, PostgreSQL when many stations share
//! one database; the same schema (`migrations/sqlite`, `migrations/postgres`, embedded) and the
//! same SQL text run on both.
//!
//! | file | what lives there |
//! |---|---|
//! | `mod.rs` | [`Db`] (connect, migrate, backend dispatch), [`DbError`], timestamp format |
//! | [`records`] | the plain data the station hands over and gets back |
//! | `write.rs` | `begin_attempt`, `add_steps`, `finish_attempt`, `recover_interrupted`, `reject_scan` |
//! | `serials.rs` | the serial-number pool: every state transition (free → reserved → used / free / void) |
//! | `history.rs` | `unit_history` |
//! | [`testing`] | a throwaway PostgreSQL cluster for tests and benchmarks |

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

mod history;
pub mod records;
mod serials;
pub mod testing;
mod write;

pub use records::*;
pub use serials::{Reservation, SerialRow};

/// Where the records go when neither `--db` nor `FLASHLINE_DB` says otherwise.
pub const DEFAULT_DB: &str = "./flashline.db";

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// How long a writer waits for another writer's lock (SQLite busy timeout, pool acquire).
const LOCK_WAIT: Duration = Duration::from_secs(15);

/// A database error, worded for the production engineer who has to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The URL is not one flashline can use.
    #[error("database '{url}': {reason}")]
    BadUrl { url: String, reason: String },
    /// The database could not be opened or reached.
    #[error("database {target}: cannot open: {source} — check the path/host, that the directory is writable or the server is running, and the credentials")]
    Open { target: String, #[source] source: sqlx::Error },
    /// Applying the embedded schema failed.
    #[error("database {target}: schema migration failed: {source} — is this a flashline database of a newer version?")]
    Migrate { target: String, #[source] source: sqlx::migrate::MigrateError },
    /// A statement failed.
    #[error("database: {context}: {source}")]
    Query { context: &'static str, #[source] source: sqlx::Error },
    /// The caller handed over data the records cannot hold.
    #[error("records: {0}")]
    Invalid(String),
    /// `finish_attempt` on an attempt that is not `running` (finished twice, or recovered as interrupted).
    #[error("attempt {id} is already '{state}', it cannot be finished again")]
    NotRunning { id: i64, state: String },
    /// No such attempt.
    #[error("attempt {0} does not exist in this database")]
    NoAttempt(i64),
    /// A passing attempt claims a serial number it does not hold (the pool says another
    /// attempt, `by`, owns it; 0 when nobody does).
    #[error("serial number {number} of SKU {sku} is not held by this attempt (its owner is attempt {by}): the board must not ship with it — erase it and retest")]
    SerialTaken { sku: String, number: u64, by: i64 },
    /// The serial-number pool could not hand out a number (heavy contention or exhausted range).
    #[error("serial number pool for SKU {sku}: {reason}")]
    SerialPool { sku: String, reason: String },
}

impl DbError {
    /// When the records cannot be written *for now* (disk or database full, a lock held beyond
    /// the busy timeout, an I/O error, the server down or refusing connections), the root
    /// cause in words; `None` for errors that retrying cannot cure (bad data, a finished
    /// attempt, a schema from a newer version).
    pub fn unavailable(&self) -> Option<String> {
        let source = match self {
            DbError::Open { source, .. } | DbError::Query { source, .. } => source,
            DbError::Migrate { source: sqlx::migrate::MigrateError::Execute(source), .. } => source,
            _ => return None,
        };
        unavailable_cause(source)
    }
}

/// The root cause of a transient database failure, or `None` (see [`DbError::unavailable`]).
fn unavailable_cause(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Io(io) => Some(format!("cannot reach the database: {io}")),
        sqlx::Error::Tls(t) => Some(format!("cannot reach the database: {t}")),
        sqlx::Error::PoolTimedOut => Some("no database connection within the lock timeout (the database is locked by another writer, or unreachable)".into()),
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => Some("the database connection pool is closed".into()),
        sqlx::Error::Protocol(p) => Some(format!("the database connection broke: {p}")),
        sqlx::Error::Database(d) => {
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            let transient = if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLite primary result codes (extended codes keep them in the low byte):
                // BUSY 5, LOCKED 6, NOMEM 7, READONLY 8, IOERR 10, FULL 13, CANTOPEN 14, PROTOCOL 15.
                code.parse::<i64>().map(|c| matches!(c & 0xff, 5 | 6 | 7 | 8 | 10 | 13 | 14 | 15)).unwrap_or(false)
            } else {
                // PostgreSQL SQLSTATE classes: 08 connection exception, 53 insufficient
                // resources (disk full, out of memory, too many connections), 57P0x the server
                // shutting down or starting, 58 system error (I/O), 40001/40P01 serialization
                // failure and deadlock (retry).
                code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") || code.starts_with("58") || code == "40001" || code == "40P01"
            };
            transient.then(|| d.message().to_string())
        }
        _ => None,
    }
}

/// Result of a records operation.
pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// Attach a context to a sqlx error.
pub(crate) trait Ctx<T> {
    fn ctx(self, context: &'static str) -> Result<T>;
}

impl<T> Ctx<T> for std::result::Result<T, sqlx::Error> {
    fn ctx(self, context: &'static str) -> Result<T> {
        self.map_err(|source| DbError::Query { context, source })
    }
}

/// Which database engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Run `$body` with `$p` bound to the concrete pool; `$begin()` opens a write transaction
/// (`BEGIN IMMEDIATE` on SQLite so two writers queue on the busy timeout instead of failing
/// on a lock upgrade). The body is written once and compiled for both backends. Bulk tools
/// (synthetic histories) use this; the station's writes go through [`write_tx!`].
macro_rules! with_pool {
    ($db:expr, |$p:ident, $begin:ident| $body:expr) => {
        match &$db.pool {
            $crate::db::Pool::Sqlite($p) => {
                #[allow(unused_variables)]
                let $begin = || $p.begin_with("BEGIN IMMEDIATE");
                $body
            }
            $crate::db::Pool::Postgres($p) => {
                #[allow(unused_variables)]
                let $begin = || $p.begin();
                $body
            }
        }
    };
    ($db:expr, |$p:ident| $body:expr) => {
        match &$db.pool {
            $crate::db::Pool::Sqlite($p) => $body,
            $crate::db::Pool::Postgres($p) => $body,
        }
    };
}

/// One write transaction: `$body` (a block evaluating to `Result<T>`, free to return early
/// with `?`, `return Err(..)` or `return Ok(..)` — an early `Ok` commits too) runs with `$tx` open on a connection of its own (`BEGIN
/// IMMEDIATE` on SQLite); `Ok` commits. On any error — a failed statement, a failed or
/// unanswered commit — the connection is closed instead of going back to the pool, so the
/// next writer never inherits a connection in an unknown transaction state. Compiled once per
/// backend.
macro_rules! write_tx {
    ($db:expr, $what:literal, |$tx:ident| $body:expr) => {
        match &$db.pool {
            $crate::db::Pool::Sqlite(p) => $crate::db::write_tx!(@on p, $what, |c| sqlx::Connection::begin_with(c, "BEGIN IMMEDIATE"), |$tx| $body),
            $crate::db::Pool::Postgres(p) => $crate::db::write_tx!(@on p, $what, |c| sqlx::Connection::begin(c), |$tx| $body),
        }
    };
    (@on $p:ident, $what:literal, |$c:ident| $begin:expr, |$tx:ident| $body:expr) => {{
        let mut conn = $p.acquire().await.ctx(concat!($what, ": connect"))?;
        let r = async {
            let $c = &mut *conn;
            let mut $tx = $begin.await.ctx(concat!($what, ": begin"))?;
            let v: _ = async { $body }.await?;
            $tx.commit().await.ctx(concat!($what, ": commit"))?;
            Ok::<_, $crate::db::DbError>(v)
        }
        .await;
        if r.is_err() {
            conn.close_on_drop();
        }
        r
    }};
}

pub(crate) use with_pool;
pub(crate) use write_tx;

/// A handle on the records database. Cheap to clone (a connection pool inside); share one per
/// process.
#[derive(Clone)]
pub struct Db {
    pub(crate) pool: Pool,
    target: String,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("target", &self.target).field("backend", &self.backend()).finish()
    }
}

/// How much of a SQLite file a reader maps (address space, not memory).
const READER_MMAP_BYTES: u64 = 1 << 30;

impl Db {
    /// Open (creating a SQLite file if missing) and bring the schema up to date.
    ///
    /// `url` is a bare path (`./flashline.db`, SQLite), a `sqlite:` URL, or a
    /// `postgres://` / `postgresql://` URL. SQLite runs in WAL mode with foreign keys on,
    /// `synchronous=FULL` (a committed result survives a power cut) and a busy timeout.
    pub async fn connect(url: &str) -> Result<Db> {
        Self::open(url, false).await
    }

    /// As [`Db::connect`], for a process that mostly reads (reports, `unit`, `serve`): SQLite
    /// files are also memory-mapped (`PRAGMA mmap_size`), so the index lookups of a report
    /// over millions of rows read pages without a system call each. The station's writers do
    /// not map the file (a disk read error there must be an error, not a signal).
    pub async fn connect_reader(url: &str) -> Result<Db> {
        Self::open(url, true).await
    }

    async fn open(url: &str, reader: bool) -> Result<Db> {
        let url = url.trim();
        if url.is_empty() {
            return Err(DbError::BadUrl { url: url.into(), reason: "empty database location".into() });
        }
        let target = redact(url);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)
                .map_err(|e| DbError::BadUrl { url: target.clone(), reason: e.to_string() })?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(LOCK_WAIT)
                .connect_with(opts)
                .await
                .map_err(|source| DbError::Open { target: target.clone(), source })?;
            POSTGRES_MIGRATIONS
                .run(&pool)
                .await
                .map_err(|source| DbError::Migrate { target: target.clone(), source })?;
            return Ok(Db { pool: Pool::Postgres(pool), target });
        }
        let mut max_pages = None;
        let opts = if url.starts_with("sqlite:") {
            let (url, pages) = take_max_pages(url).map_err(|reason| DbError::BadUrl { url: target.clone(), reason })?;
            max_pages = pages;
            let o = SqliteConnectOptions::from_str(&url)
                .map_err(|e| DbError::BadUrl { url: target.clone(), reason: e.to_string() })?;
            if url.contains("mode=") { o } else { o.create_if_missing(true) }
        } else if url.contains("://") {
            return Err(DbError::BadUrl {
                url: target,
                reason: "unsupported scheme: give a file path (SQLite), sqlite://PATH or postgres://USER@HOST/DB".into(),
            });
        } else {
            let path = Path::new(url);
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    return Err(DbError::BadUrl {
                        url: target,
                        reason: format!("directory {} does not exist", dir.display()),
                    });
                }
            }
            SqliteConnectOptions::new().filename(path).create_if_missing(true)
        };
        let opts = opts
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(LOCK_WAIT);
        let opts = if reader { opts.pragma("mmap_size", READER_MMAP_BYTES.to_string()) } else { opts };
        let opts = match max_pages {
            Some(n) => opts.pragma("max_page_count", n.to_string()),
            None => opts,
        };
        // Many stations may start at once on a new file: one at a time creates the schema.
        let _migrating = migration_lock(opts.get_filename()).await.map_err(|e| DbError::BadUrl {
            url: target.clone(),
            reason: format!("cannot take the schema lock on the database's folder: {e}"),
        })?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(LOCK_WAIT)
            .connect_with(opts)
            .await
            .map_err(|source| DbError::Open { target: target.clone(), source })?;
        SQLITE_MIGRATIONS
            .run(&pool)
            .await
            .map_err(|source| DbError::Migrate { target: target.clone(), source })?;
        Ok(Db { pool: Pool::Sqlite(pool), target })
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// The location, with any password replaced by `***` (safe to print).
    pub fn target(&self) -> &str {
        &self.target
    }

    /// `PRAGMA integrity_check` on SQLite (`"ok"` when sound); PostgreSQL has no equivalent and
    /// answers `"ok"` after a round trip.
    pub async fn integrity_check(&self) -> Result<String> {
        match &self.pool {
            Pool::Sqlite(p) => {
                let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
                    .fetch_all(p)
                    .await
                    .ctx("integrity check")?;
                Ok(rows.join("; "))
            }
            Pool::Postgres(p) => {
                sqlx::query("SELECT 1").execute(p).await.ctx("integrity check")?;
                Ok("ok".into())
            }
        }
    }

    /// Close the pool, waiting for connections to finish (checkpoints the SQLite WAL).
    pub async fn close(&self) {
        with_pool!(self, |p| p.close().await)
    }
}

/// Split flashline's own `max_pages=N` parameter off a `sqlite:` URL: a cap on the records
/// file's size in pages (4 KiB each, `PRAGMA max_page_count`). At the cap, writes fail as on a
/// full disk — a quota for a small station disk, and how the tests fill a database for real.
fn take_max_pages(url: &str) -> Result<(String, Option<u64>), String> {
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_string(), None)) };
    let mut pages = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|kv| match kv.strip_prefix("max_pages=") {
            Some(v) => {
                pages = Some(v);
                false
            }
            None => !kv.is_empty(),
        })
        .collect();
    let pages = pages
        .map(|v| v.parse::<u64>().ok().filter(|n| (1..=u32::MAX as u64).contains(n)).ok_or_else(|| format!("max_pages={v}: expected a page count from 1 to {}", u32::MAX)))
        .transpose()?;
    let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    Ok((url, pages))
}

/// How long a process waits for another one's schema migration of the same SQLite file.
const MIGRATION_LOCK_WAIT: Duration = Duration::from_secs(120);

/// Serialise opening and migrating a SQLite file across processes: an exclusive `flock` on
/// the file's folder, held until the returned handle drops. SQLite's own locking cannot do
/// this (the migrator reads before it writes, in several transactions, so two processes both
/// see an empty schema); a lock on the database file itself would be released by SQLite's
/// POSIX locks' close semantics, hence the folder. In-memory databases need none.
async fn migration_lock(file: &Path) -> std::io::Result<Option<std::fs::File>> {
    if file.as_os_str().is_empty() || file.to_string_lossy().starts_with(':') {
        return Ok(None);
    }
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let f = std::fs::File::open(&dir)?;
    let give_up = tokio::time::Instant::now() + MIGRATION_LOCK_WAIT;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) if tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{} stayed locked for {} s by another flashline process", dir.display(), MIGRATION_LOCK_WAIT.as_secs())));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// Format a timestamp the one way the records store it: UTC, milliseconds, `Z`
/// (`2025-06-01T08:15:02.120Z`, always 24 characters, so text order is time order).
pub fn format_ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parse a stored timestamp.
pub fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| DbError::Invalid(format!("stored timestamp '{s}' is not ISO 8601: {e}")))
}

/// Convert a count to the signed 64-bit integer both databases store.
pub(crate) fn to_i64(what: &str, v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| DbError::Invalid(format!("{what} {v} is too large to store")))
}

/// Replace the password of a URL with `***`.
fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((auth, host)) = rest.split_once('@') {
            if let Some((user, _pw)) = auth.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://line:s3cret@db.local/fl"), "postgres://line:***@db.local/fl");
        assert_eq!(redact("postgres://line@db.local/fl"), "postgres://line@db.local/fl");
        assert_eq!(redact("./flashline.db"), "./flashline.db");
    }

    #[test]
    fn max_pages_is_flashlines_own_url_parameter() {
        assert_eq!(take_max_pages("sqlite://a.db").unwrap(), ("sqlite://a.db".into(), None));
        assert_eq!(take_max_pages("sqlite://a.db?max_pages=300").unwrap(), ("sqlite://a.db".into(), Some(300)));
        assert_eq!(take_max_pages("sqlite://a.db?mode=rwc&max_pages=9").unwrap(), ("sqlite://a.db?mode=rwc".into(), Some(9)));
        assert!(take_max_pages("sqlite://a.db?max_pages=0").is_err());
        assert!(take_max_pages("sqlite://a.db?max_pages=x").is_err());
    }

    #[test]
    fn timestamps_are_fixed_width_utc() {
        let t = DateTime::parse_from_rfc3339("2025-06-01T10:15:02.12+02:00").unwrap().with_timezone(&Utc);
        assert_eq!(format_ts(t), "2025-06-01T08:15:02.120Z");
        assert_eq!(parse_ts("2025-06-01T08:15:02.120Z").unwrap(), t);
    }
}
