//! The station supervisor: one tokio task per slot, a dispatcher for scans, and every attempt
//! recorded before it starts and after it ends.
//!
//! Order of events for one unit, and why:
//! 1. the scan is checked (serial pattern, slot exists/online, unit not already in a slot);
//!    refused scans are recorded as rejected scans;
//! 2. `begin_attempt` commits a `running` attempt row *before* the programmer is touched, so a
//!    crash or `kill -9` leaves a row that the next start marks `interrupted`;
//! 3. the job runs (identify → erase → program → verify → fuses → lock [→ serial number]);
//! 4. steps and the result are committed (`finish_attempt`, one transaction) and only then is
//!    the slot shown PASS/FAIL.
//!
//! Slot failures are isolated: a programmer that disappears takes its slot offline with the
//! reason; the other slots keep going. Records that cannot be written (disk full, database
//! down) blame no slot: every write goes through the [`Recorder`](super::recorder), which
//! holds new jobs back and retries until the records are writable again. One unit's way
//! through a slot is in [`super::unit`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::build::{AvrLayout, Production};
use crate::db::{Db, DbError};
use crate::programmer::ProgrammerSpec;
use crate::sim::boards::BoardRack;
use crate::sim::{Fault, SimOptions};

use super::config::{Slot, Station};
use super::recorder::{Recorder, RecordsState, Unrecorded};
use super::scan::{parse_line, Scan};

/// Everything that happens on a station, for displays (terminal, `--json`, web dashboard).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StationEvent {
    Started { station: String, sku: String, recipe: String, image_sha256: String, operator: String, slots: Vec<String> },
    SlotOnline { slot: String, programmer: String },
    SlotOffline { slot: String, reason: String },
    ScanRejected { raw: String, slot: Option<String>, reason: String },
    JobStarted { slot: String, serial: String, attempt: i64, attempt_id: i64 },
    Step { slot: String, serial: String, step: String, state: StepState, ms: Option<u64> },
    Progress { slot: String, serial: String, step: String, done: u64, total: u64 },
    Note { slot: String, serial: String, message: String },
    JobFinished {
        slot: String,
        serial: String,
        attempt: i64,
        result: String,
        failure_class: Option<String>,
        message: Option<String>,
        cycle_ms: u64,
        serial_number: Option<u64>,
    },
    /// Records cannot be written: no job starts until they can (`reason` names the root cause).
    RecordsUnavailable { reason: String },
    /// Records are writable again after `after_ms`; the station resumes by itself.
    RecordsAvailable { after_ms: u64 },
    Totals(Totals),
    Stopped(Totals),
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Started,
    Finished,
    Failed,
}

/// Counts for this session.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Totals {
    pub attempts: u64,
    pub passed: u64,
    pub failed: u64,
    pub errors: u64,
    pub rejected_scans: u64,
    /// Distinct units seen this session.
    pub units: u64,
    /// Distinct units whose latest attempt passed.
    pub units_passed: u64,
    /// Results (and scans) that could not be recorded: the boards must be set aside. Not in
    /// `attempts`, which counts what the records hold.
    pub unrecorded: u64,
}

impl Totals {
    /// Units whose latest attempt passed / units seen, in percent.
    pub fn yield_pct(&self) -> f64 {
        if self.units == 0 {
            0.0
        } else {
            100.0 * self.units_passed as f64 / self.units as f64
        }
    }
}

/// What a slot is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SlotStatus {
    Idle,
    Busy { serial: String },
    Offline { reason: String },
}

/// A refused scan, as returned to whoever submitted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submit {
    Queued { slot: String, serial: String },
    Rejected { reason: String },
    Quit,
    Ignored,
}

/// Errors that stop a station from starting.
#[derive(Debug, thiserror::Error)]
pub enum StationError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Config(String),
}

/// After Stop (scans ended, SIGTERM, the dashboard's Stop), how long the station keeps trying to
/// record results while the records are unavailable before it gives up and says which boards
/// are not recorded.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

pub(super) struct Work {
    pub(super) serial: String,
}

pub(super) struct Shared {
    pub(super) status: Vec<SlotStatus>,
    pub(super) in_progress: HashSet<String>,
    pub(super) totals: Totals,
    /// Per slot: the last unit that finished there and whether it passed (for retest).
    pub(super) last_unit: Vec<Option<(String, bool)>>,
    /// Per slot: the identity of its programmer, once it is online.
    pub(super) programmers: Vec<Option<String>>,
}

/// A running station.
pub struct Supervisor {
    station: Arc<Station>,
    production: Arc<Production>,
    rec: Arc<Recorder>,
    events: broadcast::Sender<StationEvent>,
    shared: Arc<Mutex<Shared>>,
    changed_tx: Arc<watch::Sender<u64>>,
    changed_rx: watch::Receiver<u64>,
    senders: Mutex<Vec<mpsc::Sender<Work>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    serial_pattern: Option<regex::Regex>,
}

impl Supervisor {
    /// Recover interrupted attempts, open every programmer (in parallel) and start the slots.
    pub async fn start(station: Station, production: Arc<Production>, db: Db, operator: String) -> Result<Supervisor, StationError> {
        let station = Arc::new(station);
        // The station's programmer kinds all program AVR parts over ISP.
        let Some(&avr) = production.avr() else {
            return Err(StationError::Config(format!(
                "{}: recipe {} is for the {} ({}); this station's programmers ({}) program AVR parts over ISP, \
                 so none of its slots can program it",
                station.path.display(),
                production.recipe_path.display(),
                production.mcu.name(),
                production.mcu.family(),
                station.slots.iter().map(|s| s.kind.name()).collect::<std::collections::BTreeSet<_>>().into_iter().collect::<Vec<_>>().join(", ")
            )));
        };
        let serial_pattern = production.serial.as_ref().and_then(|s| s.pattern.clone());
        let recovered = db.recover_interrupted(&station.name).await?;
        let rack = match &station.sim_boards {
            Some(dir) => Some(BoardRack::open(dir).map_err(|e| StationError::Config(format!("{}: sim_boards {}: {e}", station.path.display(), dir.display())))?),
            None => None,
        };
        if recovered > 0 {
            tracing::warn!(recovered, station = %station.name, "attempts left running by a previous crash were marked interrupted");
        }
        let (events, _) = broadcast::channel(65536);
        let rec = Arc::new(Recorder::new(db, events.clone()));
        let (changed_tx, changed_rx) = watch::channel(0u64);
        let changed_tx = Arc::new(changed_tx);
        let shared = Arc::new(Mutex::new(Shared {
            status: vec![SlotStatus::Idle; station.slots.len()],
            in_progress: HashSet::new(),
            totals: Totals::default(),
            last_unit: vec![None; station.slots.len()],
            programmers: vec![None; station.slots.len()],
        }));
        let recipe_name = recipe_name(&production.recipe_path, &production.recipe.sku);
        let _ = events.send(StationEvent::Started {
            station: station.name.clone(),
            sku: production.recipe.sku.clone(),
            recipe: recipe_name.clone(),
            image_sha256: production.image_sha256.clone(),
            operator: operator.clone(),
            slots: station.slots.iter().map(|s| s.name.clone()).collect(),
        });

        let session_started = Utc::now();
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        for (idx, slot) in station.slots.iter().enumerate() {
            let (tx, rx) = mpsc::channel::<Work>(1);
            senders.push(tx);
            let ctx = SlotCtx {
                idx,
                slot: slot.clone(),
                station: station.clone(),
                production: production.clone(),
                avr,
                rec: rec.clone(),
                rack: rack.clone(),
                events: events.clone(),
                shared: shared.clone(),
                changed: changed_tx.clone(),
                operator: operator.clone(),
                recipe_name: recipe_name.clone(),
                session_started,
            };
            tasks.push(tokio::spawn(super::unit::slot_task(ctx, rx)));
        }
        Ok(Supervisor { station, production, rec, events, shared, changed_tx, changed_rx, senders: Mutex::new(senders), tasks: Mutex::new(tasks), serial_pattern })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StationEvent> {
        self.events.subscribe()
    }

    /// A sender for events, for front ends that add their own (e.g. the web dashboard).
    pub fn event_sender(&self) -> broadcast::Sender<StationEvent> {
        self.events.clone()
    }

    pub fn station(&self) -> &Station {
        &self.station
    }

    pub fn production(&self) -> &Production {
        &self.production
    }

    pub fn slot_status(&self) -> Vec<(String, SlotStatus)> {
        let sh = self.shared.lock().unwrap();
        self.station.slots.iter().map(|s| s.name.clone()).zip(sh.status.iter().cloned()).collect()
    }

    /// Each slot's programmer identity (`None` until it is online).
    pub fn slot_programmers(&self) -> Vec<(String, Option<String>)> {
        let sh = self.shared.lock().unwrap();
        self.station.slots.iter().map(|s| s.name.clone()).zip(sh.programmers.iter().cloned()).collect()
    }

    pub fn totals(&self) -> Totals {
        self.shared.lock().unwrap().totals.clone()
    }

    /// Whether the records can be written now (the station starts no job while they cannot).
    pub fn records_state(&self) -> RecordsState {
        self.rec.state()
    }

    /// What could not be recorded so far (results, refused scans), for the front end to print
    /// after [`Supervisor::finish`] and to exit non-zero with.
    pub fn unrecorded(&self) -> Vec<Unrecorded> {
        self.rec.unrecorded()
    }

    async fn reject(&self, raw: &str, slot: Option<&str>, reason: String) -> Submit {
        // Recorded like every other write: while the records are unavailable this waits (the
        // scan intake waits with it), so no refusal is lost.
        let station = self.station.name.as_str();
        let written = self.rec.write(|| self.rec.db().reject_scan(station, slot, raw, &reason)).await;
        let totals = {
            let mut sh = self.shared.lock().unwrap();
            match &written {
                Ok(()) => sh.totals.rejected_scans += 1,
                Err(_) => sh.totals.unrecorded += 1,
            }
            sh.totals.clone()
        };
        if let Err(e) = written {
            self.rec.note_unrecorded(Unrecorded {
                slot: slot.map(str::to_string),
                serial: raw.to_string(),
                attempt_id: None,
                what: format!("rejected scan ({reason})"),
                error: e.to_string(),
            });
        }
        let _ = self.events.send(StationEvent::ScanRejected { raw: raw.to_string(), slot: slot.map(str::to_string), reason: reason.clone() });
        let _ = self.events.send(StationEvent::Totals(totals));
        Submit::Rejected { reason }
    }

    /// Take one scanned line. Waits for a free slot (or the named slot) when all are busy, so a
    /// scan file feeds the station at its own pace.
    pub async fn submit(&self, line: &str) -> Submit {
        let names: Vec<String> = self.station.slots.iter().map(|s| s.name.clone()).collect();
        let (want, serial) = match parse_line(line, &names) {
            None => return Submit::Ignored,
            Some(Scan::Quit) => return Submit::Quit,
            Some(Scan::Any { serial }) => (None, serial),
            Some(Scan::Slot { slot, serial }) => (Some(slot), serial),
        };
        let raw = line.trim();
        if let Err(reason) = super::scan::check_serial(&serial) {
            return self.reject(raw, want.as_deref(), reason).await;
        }
        if let Some(re) = &self.serial_pattern {
            if !re.is_match(&serial) {
                let shown = self.production.serial.as_ref().and_then(|s| s.pattern_str()).unwrap_or(re.as_str()).to_string();
                return self
                    .reject(raw, want.as_deref(), format!("serial '{serial}' does not match the recipe's pattern {shown}: scan the board's label again"))
                    .await;
            }
        }
        let mut changed = self.changed_rx.clone();
        loop {
            changed.borrow_and_update();
            let pick = {
                let mut sh = self.shared.lock().unwrap();
                if sh.in_progress.contains(&serial) {
                    Err(format!("{serial} is already being programmed in another slot"))
                } else {
                    let candidates: Vec<usize> = match &want {
                        Some(n) => names.iter().position(|x| x == n).into_iter().collect(),
                        None => (0..names.len()).collect(),
                    };
                    let offline: Vec<&SlotStatus> = candidates.iter().map(|i| &sh.status[*i]).filter(|s| matches!(s, SlotStatus::Offline { .. })).collect();
                    if offline.len() == candidates.len() {
                        Err(match (&want, offline.first()) {
                            (Some(n), Some(SlotStatus::Offline { reason })) => format!("slot {n} is offline: {reason}"),
                            _ => "no slot is online: check the programmers".to_string(),
                        })
                    } else if let Some(i) = candidates.iter().copied().find(|i| sh.status[*i] == SlotStatus::Idle) {
                        sh.status[i] = SlotStatus::Busy { serial: serial.clone() };
                        sh.in_progress.insert(serial.clone());
                        Ok(Some(i))
                    } else {
                        Ok(None)
                    }
                }
            };
            match pick {
                Err(reason) => return self.reject(raw, want.as_deref(), reason).await,
                Ok(Some(i)) => {
                    let slot = names[i].clone();
                    let tx = self.senders.lock().unwrap().get(i).cloned();
                    let sent = match tx {
                        Some(tx) => tx.send(Work { serial: serial.clone() }).await.is_ok(),
                        None => false,
                    };
                    if !sent {
                        {
                            let mut sh = self.shared.lock().unwrap();
                            sh.in_progress.remove(&serial);
                            sh.status[i] = SlotStatus::Idle;
                        }
                        return self.reject(raw, Some(&slot), format!("slot {slot} stopped")).await;
                    }
                    return Submit::Queued { slot, serial };
                }
                Ok(None) => {
                    if changed.changed().await.is_err() {
                        return Submit::Rejected { reason: "station stopping".into() };
                    }
                }
            }
        }
    }

    /// The last unit that finished in `slot` (serial, passed), if any.
    pub fn last_unit(&self, slot: &str) -> Option<(String, bool)> {
        let i = self.station.slots.iter().position(|s| s.name.eq_ignore_ascii_case(slot))?;
        self.shared.lock().unwrap().last_unit.get(i).cloned().flatten()
    }

    /// Retest: resubmit the unit that last failed in `slot` to the same slot (the operator has
    /// re-seated it), as if `SLOT:SERIAL` had been scanned. Refused (and not recorded as a
    /// rejected scan) when the slot does not exist or its last unit passed.
    pub async fn retest(&self, slot: &str) -> Submit {
        let Some(name) = self.station.slots.iter().find(|s| s.name.eq_ignore_ascii_case(slot.trim())).map(|s| s.name.clone()) else {
            return Submit::Rejected { reason: format!("there is no slot '{}' on this station", slot.trim()) };
        };
        match self.last_unit(&name) {
            None => Submit::Rejected { reason: format!("slot {name} has no finished unit to retest: scan the board") },
            Some((serial, true)) => Submit::Rejected { reason: format!("{serial} passed in slot {name}: nothing to retest") },
            Some((serial, false)) => self.submit(&format!("{name}:{serial}")).await,
        }
    }

    /// Stop taking scans, let running jobs finish and record, and return the session totals.
    /// While the records are unavailable, results are retried for [`STOP_GRACE`]; what still
    /// could not be recorded is in [`Supervisor::unrecorded`] (and `Totals::unrecorded`).
    pub async fn finish(&self) -> Totals {
        self.finish_within(STOP_GRACE).await
    }

    /// [`Supervisor::finish`] with another grace period.
    pub async fn finish_within(&self, grace: Duration) -> Totals {
        self.senders.lock().unwrap().clear();
        self.rec.stop_after(grace);
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock().unwrap());
        for t in tasks {
            let _ = t.await;
        }
        let totals = self.shared.lock().unwrap().totals.clone();
        let _ = self.events.send(StationEvent::Stopped(totals.clone()));
        let _ = &self.changed_tx;
        totals
    }
}

/// What a slot task needs: its slot, the station's shared state, the recorder.
pub(super) struct SlotCtx {
    pub(super) idx: usize,
    pub(super) slot: Slot,
    pub(super) station: Arc<Station>,
    pub(super) production: Arc<Production>,
    /// The production's AVR half (the station refuses other families at start).
    pub(super) avr: AvrLayout,
    pub(super) rec: Arc<Recorder>,
    /// Simulated slots: where the boards keep their chips between attempts (`sim_boards:`).
    pub(super) rack: Option<BoardRack>,
    pub(super) events: broadcast::Sender<StationEvent>,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) changed: Arc<watch::Sender<u64>>,
    pub(super) operator: String,
    pub(super) recipe_name: String,
    /// When this session began: totals count the units whose attempts started since.
    pub(super) session_started: chrono::DateTime<Utc>,
}

impl SlotCtx {
    pub(super) fn online(&self, programmer: String) {
        self.shared.lock().unwrap().programmers[self.idx] = Some(programmer.clone());
        let _ = self.events.send(StationEvent::SlotOnline { slot: self.slot.name.clone(), programmer });
    }

    pub(super) fn set_status(&self, st: SlotStatus) {
        {
            let mut sh = self.shared.lock().unwrap();
            // Offline is sticky: a finished job must not bring a dead slot back.
            if !matches!(sh.status[self.idx], SlotStatus::Offline { .. }) || matches!(st, SlotStatus::Offline { .. }) {
                sh.status[self.idx] = st;
            }
        }
        self.changed.send_modify(|g| *g += 1);
    }

    pub(super) fn offline(&self, reason: String) {
        tracing::error!(slot = %self.slot.name, %reason, "slot offline");
        self.set_status(SlotStatus::Offline { reason: reason.clone() });
        let _ = self.events.send(StationEvent::SlotOffline { slot: self.slot.name.clone(), reason });
    }

    pub(super) fn spec(&self, sim: SimOptions) -> ProgrammerSpec {
        let mut spec = ProgrammerSpec::new(self.slot.kind, self.slot.name.clone());
        spec.port = self.slot.port.clone();
        spec.baud = self.slot.baud;
        spec.usb = self.slot.usb.clone();
        spec.avrdude_programmer = self.slot.avrdude_programmer.clone();
        spec.sim = sim;
        spec.bridge = self.slot.bridge;
        spec
    }

    /// The simulated board seated for this attempt: carries the slot's fault with the slot's
    /// rate, decided reproducibly from the serial and attempt number.
    pub(super) fn sim_options(&self, serial: &str, attempt: i64) -> SimOptions {
        let seed = serial.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3)) ^ (attempt as u64).wrapping_mul(0x9E3779B97F4A7C15);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let fault = if self.slot.fault != Fault::None && rng.gen_bool(self.slot.fault_rate) { self.slot.fault.clone() } else { Fault::None };
        let mut o = SimOptions::new(self.slot.timing, fault);
        o.seed = seed;
        o
    }
}

/// The name records use for a recipe: its file stem, or its folder for `…/NAME/recipe.yaml`.
pub fn recipe_name(path: &std::path::Path, sku: &str) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    if stem.is_empty() {
        return sku.to_string();
    }
    if stem.eq_ignore_ascii_case("recipe") {
        if let Some(dir) = path.canonicalize().ok().and_then(|p| p.parent().and_then(|d| d.file_name()).map(|d| d.to_string_lossy().into_owned())) {
            return dir;
        }
    }
    stem
}
