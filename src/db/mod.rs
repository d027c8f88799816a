//! Records: where a unit row is written. SQLite by default, PostgreSQL when many stations share
//! one database; the same schema (`migrations/sqlite`, `migrations/postgres`, embedded) and the
//! same SQL text run on both.
//!
//! | file | what lives there |
//! |---|---|
//! | `mod.rs` | [`Db`] (connect, migrate, backend dispatch), [`DbError`], timestamp format |
//! | [`records`] | the plain data the station hands over and gets back |
//! | `write.rs` | `begin_attempt`, `add_steps`, `finish_attempt`, `recover_interrupted`, `reject_scan`, serial pool |
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
pub mod testing;
mod write;

pub use records::*;

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
    /// A passing attempt claims a serial number another passing unit already consumed.
    #[error("serial number {number} of SKU {sku} was already consumed by attempt {by}: two units would carry the same number")]
    SerialTaken { sku: String, number: u64, by: i64 },
    /// The serial-number pool could not hand out a number (heavy contention or exhausted range).
    #[error("serial number pool for SKU {sku}: {reason}")]
    SerialPool { sku: String, reason: String },
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
/// on a lock upgrade). The body is written once and compiled for both backends.
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
pub(crate) use with_pool;

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
        let opts = if url.starts_with("sqlite:") {
            let o = SqliteConnectOptions::from_str(url)
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
    fn timestamps_are_fixed_width_utc() {
        let t = DateTime::parse_from_rfc3339("2025-06-01T10:15:02.12+02:00").unwrap().with_timezone(&Utc);
        assert_eq!(format_ts(t), "2025-06-01T08:15:02.120Z");
        assert_eq!(parse_ts("2025-06-01T08:15:02.120Z").unwrap(), t);
    }
}
