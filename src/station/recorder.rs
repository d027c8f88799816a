//! The station's one way to write records: every write goes through [`Recorder::write`], which
//! tells a passing trouble (disk or database full, a lock held too long, the server down) from a
//! real error, retries the first until the records are writable again, and keeps the station's
//! records state — available, or unavailable with the root cause — for every display.
//!
//! While the records are unavailable no job starts (a slot waits before `begin_attempt`, and
//! `begin_attempt` is committed before a board is touched), nothing is blamed on a slot or a
//! programmer, scans stay queued, and the station resumes by itself when a write succeeds.
//! When the station stops, retries go on for a grace period; what still could not be recorded
//! is kept as [`Unrecorded`] for the front end to print and to exit non-zero with.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::db::{Db, DbError};

use super::supervisor::StationEvent;

/// First wait between retries of a write that failed for a passing reason; doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// How long a slot about to start a job waits for another slot's retry to bring the records
/// back before it tries itself (its own `begin_attempt` is then the probe).
const GATE_WAIT: Duration = Duration::from_secs(2);

/// Whether the records can be written now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RecordsState {
    Available,
    /// `reason` is the operator's sentence, root cause included.
    Unavailable { reason: String },
}

/// A result (or a scan) the station could not record before it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unrecorded {
    pub slot: Option<String>,
    /// The unit's serial (or the raw scan).
    pub serial: String,
    /// The attempt row left `running` (the next start of this station marks it interrupted).
    pub attempt_id: Option<i64>,
    /// What was not recorded, in words: `result pass`, `not programmed`, `rejected scan`.
    pub what: String,
    /// Why: the last error.
    pub error: String,
}

/// Why a write through the recorder did not happen.
#[derive(Debug)]
pub enum RecordError {
    /// An error that retrying cannot cure.
    Failed(DbError),
    /// The records stayed unavailable until the station's stop grace ran out.
    GaveUp { cause: String },
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Failed(e) => write!(f, "{e}"),
            RecordError::GaveUp { cause } => write!(f, "records unavailable until the station stopped: {cause}"),
        }
    }
}

/// The operator's sentence for records that cannot be written.
pub fn unavailable_message(cause: &str) -> String {
    format!("records unavailable: {cause} — no board will be programmed until it can be recorded")
}

struct Outage {
    since: Instant,
}

pub(crate) struct Recorder {
    db: Db,
    events: broadcast::Sender<StationEvent>,
    state_tx: watch::Sender<RecordsState>,
    outage: Mutex<Option<Outage>>,
    /// Set when the station stops: past it, writes give up instead of retrying.
    deadline: watch::Sender<Option<Instant>>,
    unrecorded: Mutex<Vec<Unrecorded>>,
}

impl Recorder {
    pub(crate) fn new(db: Db, events: broadcast::Sender<StationEvent>) -> Recorder {
        Recorder {
            db,
            events,
            state_tx: watch::channel(RecordsState::Available).0,
            outage: Mutex::new(None),
            deadline: watch::channel(None).0,
            unrecorded: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    pub(crate) fn state(&self) -> RecordsState {
        self.state_tx.borrow().clone()
    }

    /// Stop retrying `grace` from now.
    pub(crate) fn stop_after(&self, grace: Duration) {
        let at = Instant::now() + grace;
        self.deadline.send_modify(|d| *d = Some(d.map_or(at, |old| old.min(at))));
    }

    fn past_deadline(&self) -> bool {
        self.deadline.borrow().is_some_and(|d| Instant::now() >= d)
    }

    pub(crate) fn note_unrecorded(&self, u: Unrecorded) {
        tracing::error!(serial = %crate::text::shown(&u.serial), what = %u.what, error = %u.error, "not recorded");
        self.unrecorded.lock().unwrap().push(u);
    }

    pub(crate) fn unrecorded(&self) -> Vec<Unrecorded> {
        self.unrecorded.lock().unwrap().clone()
    }

    fn went_down(&self, cause: &str) {
        let mut o = self.outage.lock().unwrap();
        let reason = unavailable_message(cause);
        let changed = self.state_tx.send_if_modified(|s| {
            let new = RecordsState::Unavailable { reason: reason.clone() };
            if *s == new {
                false
            } else {
                *s = new;
                true
            }
        });
        if o.is_none() {
            *o = Some(Outage { since: Instant::now() });
        }
        if changed {
            tracing::error!(%reason, "records unavailable");
            let _ = self.events.send(StationEvent::RecordsUnavailable { reason });
        }
    }

    fn came_back(&self) {
        let mut o = self.outage.lock().unwrap();
        if let Some(outage) = o.take() {
            self.state_tx.send_replace(RecordsState::Available);
            let after_ms = outage.since.elapsed().as_millis() as u64;
            tracing::info!(after_ms, "records writable again; the station resumes");
            let _ = self.events.send(StationEvent::RecordsAvailable { after_ms });
        }
    }

    /// Before a job starts: wait (bounded) while the records are unavailable, so a slot does
    /// not start new work while another slot is still failing to record.
    pub(crate) async fn gate(&self) {
        let mut rx = self.state_tx.subscribe();
        let _ = tokio::time::timeout(GATE_WAIT, rx.wait_for(|s| *s == RecordsState::Available)).await;
    }

    /// Run one records write, retrying while it fails for a passing reason, until it succeeds,
    /// fails for good, or the station's stop grace runs out. `op` must be safe to repeat (every
    /// write in `db` is).
    pub(crate) async fn write<T, F, Fut>(&self, mut op: F) -> Result<T, RecordError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, DbError>>,
    {
        let mut wait = RETRY_FIRST;
        loop {
            match op().await {
                Ok(v) => {
                    self.came_back();
                    return Ok(v);
                }
                Err(e) => {
                    let Some(cause) = e.unavailable() else { return Err(RecordError::Failed(e)) };
                    self.went_down(&cause);
                    if self.past_deadline() {
                        return Err(RecordError::GaveUp { cause });
                    }
                    let mut deadline = self.deadline.subscribe();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = deadline.changed() => {}
                    }
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
    }
}
