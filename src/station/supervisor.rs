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
//! reason; the other slots keep going.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::build::Production;
use crate::db::{AttemptOutcome, AttemptResult, Db, NewAttempt, StepRecord};
use crate::recipe::{SerialMemory, SerialWrite};
use crate::error::FailureClass;
use crate::job::{self, JobEvent, JobPlan, JobReport, JobResult};
use crate::programmer::{self, Programmer, ProgrammerKind, ProgrammerSpec};
use crate::sim::{Fault, SimOptions};

use super::config::{Slot, Station};
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
    #[error("database: {0}")]
    Db(String),
    #[error("{0}")]
    Config(String),
}

struct Work {
    serial: String,
}

struct Shared {
    status: Vec<SlotStatus>,
    in_progress: HashSet<String>,
    totals: Totals,
    /// Per slot: the last unit that finished there and whether it passed (for retest).
    last_unit: Vec<Option<(String, bool)>>,
    /// Per slot: the identity of its programmer, once it is online.
    programmers: Vec<Option<String>>,
}

/// A running station.
pub struct Supervisor {
    station: Arc<Station>,
    production: Arc<Production>,
    db: Db,
    events: broadcast::Sender<StationEvent>,
    shared: Arc<Mutex<Shared>>,
    changed_tx: Arc<watch::Sender<u64>>,
    changed_rx: watch::Receiver<u64>,
    senders: Mutex<Vec<mpsc::Sender<Work>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    serial_pattern: Option<regex::Regex>,
}

/// Bound on one unit's whole job, beyond the job's own per-step timeouts: a backstop so a
/// slot can never hang forever.
const UNIT_BACKSTOP: Duration = Duration::from_secs(600);

impl Supervisor {
    /// Recover interrupted attempts, open every programmer (in parallel) and start the slots.
    pub async fn start(station: Station, production: Arc<Production>, db: Db, operator: String) -> Result<Supervisor, StationError> {
        let station = Arc::new(station);
        let serial_pattern = production.serial.as_ref().and_then(|s| s.pattern.clone());
        let recovered = db.recover_interrupted(&station.name).await.map_err(|e| StationError::Db(e.to_string()))?;
        if recovered > 0 {
            tracing::warn!(recovered, station = %station.name, "attempts left running by a previous crash were marked interrupted");
        }
        let (events, _) = broadcast::channel(65536);
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
                db: db.clone(),
                events: events.clone(),
                shared: shared.clone(),
                changed: changed_tx.clone(),
                operator: operator.clone(),
                recipe_name: recipe_name.clone(),
                session_started,
            };
            tasks.push(tokio::spawn(slot_task(ctx, rx)));
        }
        Ok(Supervisor { station, production, db, events, shared, changed_tx, changed_rx, senders: Mutex::new(senders), tasks: Mutex::new(tasks), serial_pattern })
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

    async fn reject(&self, raw: &str, slot: Option<&str>, reason: String) -> Submit {
        if let Err(e) = self.db.reject_scan(&self.station.name, slot, raw, &reason).await {
            tracing::error!(error = %e, "could not record a rejected scan");
        }
        let totals = {
            let mut sh = self.shared.lock().unwrap();
            sh.totals.rejected_scans += 1;
            sh.totals.clone()
        };
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
    pub async fn finish(&self) -> Totals {
        self.senders.lock().unwrap().clear();
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

struct SlotCtx {
    idx: usize,
    slot: Slot,
    station: Arc<Station>,
    production: Arc<Production>,
    db: Db,
    events: broadcast::Sender<StationEvent>,
    shared: Arc<Mutex<Shared>>,
    changed: Arc<watch::Sender<u64>>,
    operator: String,
    recipe_name: String,
    /// When this session began: totals count the units whose attempts started since.
    session_started: chrono::DateTime<Utc>,
}

impl SlotCtx {
    fn online(&self, programmer: String) {
        self.shared.lock().unwrap().programmers[self.idx] = Some(programmer.clone());
        let _ = self.events.send(StationEvent::SlotOnline { slot: self.slot.name.clone(), programmer });
    }

    fn set_status(&self, st: SlotStatus) {
        {
            let mut sh = self.shared.lock().unwrap();
            // Offline is sticky: a finished job must not bring a dead slot back.
            if !matches!(sh.status[self.idx], SlotStatus::Offline { .. }) || matches!(st, SlotStatus::Offline { .. }) {
                sh.status[self.idx] = st;
            }
        }
        self.changed.send_modify(|g| *g += 1);
    }

    fn offline(&self, reason: String) {
        tracing::error!(slot = %self.slot.name, %reason, "slot offline");
        self.set_status(SlotStatus::Offline { reason: reason.clone() });
        let _ = self.events.send(StationEvent::SlotOffline { slot: self.slot.name.clone(), reason });
    }

    fn spec(&self, sim: SimOptions) -> ProgrammerSpec {
        let mut spec = ProgrammerSpec::new(self.slot.kind, self.slot.name.clone());
        spec.port = self.slot.port.clone();
        spec.baud = self.slot.baud;
        spec.usb = self.slot.usb.clone();
        spec.avrdude_programmer = self.slot.avrdude_programmer.clone();
        spec.sim = sim;
        spec
    }

    /// The simulated board seated for this attempt: carries the slot's fault with the slot's
    /// rate, decided reproducibly from the serial and attempt number.
    fn sim_options(&self, serial: &str, attempt: i64) -> SimOptions {
        let seed = serial.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3)) ^ (attempt as u64).wrapping_mul(0x9E3779B97F4A7C15);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        let fault = if self.slot.fault != Fault::None && rng.gen_bool(self.slot.fault_rate) { self.slot.fault.clone() } else { Fault::None };
        let mut o = SimOptions::new(self.slot.timing, fault);
        o.seed = seed;
        o
    }
}

async fn slot_task(ctx: SlotCtx, mut rx: mpsc::Receiver<Work>) {
    // Real programmers are opened once and kept; simulated ones get a fresh board per unit.
    let mut prog: Option<Box<dyn Programmer>> = None;
    if ctx.slot.kind != ProgrammerKind::Sim {
        match programmer::open(&ctx.spec(SimOptions::default()), ctx.production.part).await {
            Ok(p) => {
                ctx.online(p.info().to_string());
                prog = Some(p);
            }
            Err(e) => ctx.offline(e.message),
        }
    } else {
        ctx.online(format!("sim:{}", ctx.slot.name));
    }
    while let Some(work) = rx.recv().await {
        let serial = work.serial;
        let offline_reason = match tokio::time::timeout(UNIT_BACKSTOP, run_unit(&ctx, &mut prog, &serial)).await {
            Ok(r) => r,
            Err(_) => Some(format!("unit {serial} did not finish within {} s: the slot is stopped", UNIT_BACKSTOP.as_secs())),
        };
        {
            let mut sh = ctx.shared.lock().unwrap();
            sh.in_progress.remove(&serial);
        }
        match offline_reason {
            Some(reason) => ctx.offline(reason),
            None => ctx.set_status(SlotStatus::Idle),
        }
    }
    if let Some(mut p) = prog {
        let _ = p.close().await;
    }
}

/// Run and record one unit. Returns `Some(reason)` when the slot must go offline.
async fn run_unit(ctx: &SlotCtx, prog: &mut Option<Box<dyn Programmer>>, serial: &str) -> Option<String> {
    let p = &ctx.production;
    let started = Instant::now();
    let started_at = Utc::now();
    let identity = match prog {
        Some(pr) => pr.info(),
        None => programmer::ProgrammerInfo { kind: ProgrammerKind::Sim, identity: format!("sim:{}", ctx.slot.name) },
    };
    let new = NewAttempt {
        serial: serial.to_string(),
        sku: p.recipe.sku.clone(),
        recipe: ctx.recipe_name.clone(),
        recipe_sha256: p.recipe_sha256.clone(),
        image_sha256: p.image_sha256.clone(),
        station: ctx.station.name.clone(),
        slot: ctx.slot.name.clone(),
        programmer_kind: identity.kind.name().to_string(),
        programmer_identity: identity.identity.clone(),
        operator: ctx.operator.clone(),
        started_at,
    };
    let attempt_id = match ctx.db.begin_attempt(&new).await {
        Ok(b) => b,
        Err(e) => {
            // Never program a board we cannot record.
            let msg = format!("database: could not record the attempt ({e}); the board was not touched — check the database and restart");
            let _ = ctx.events.send(StationEvent::JobFinished {
                slot: ctx.slot.name.clone(),
                serial: serial.to_string(),
                attempt: 0,
                result: "error".into(),
                failure_class: Some(FailureClass::Internal.as_str().into()),
                message: Some(msg.clone()),
                cycle_ms: started.elapsed().as_millis() as u64,
                serial_number: None,
            });
            return Some(msg);
        }
    };
    // The unit's attempt number across stations and restarts, as the record has it.
    let attempt_no = ctx.db.attempt_no(attempt_id).await.map(|n| n as i64).unwrap_or(0);
    let _ = ctx.events.send(StationEvent::JobStarted { slot: ctx.slot.name.clone(), serial: serial.to_string(), attempt: attempt_no, attempt_id: attempt_id.0 });

    // Plan: the production image, plus this unit's serial number when the recipe writes one.
    let mut plan = JobPlan::new(p.part, p.image.clone());
    plan.fuses = p.fuses;
    plan.lock = p.lock;
    plan.verify = p.verify;
    let mut serial_number = None;
    let mut setup_error = None;
    if let Some((rule, w)) = p.serial.as_ref().and_then(|s| s.write.as_ref().map(|w| (s, w))) {
        match ctx.db.reserve_serial_for(attempt_id, &p.recipe.sku, w.start).await {
            Ok(n) => {
                serial_number = Some(n);
                match rule.render(n) {
                    Ok(bytes) => {
                        if let Err(e) = apply_serial(&mut plan, w, &bytes) {
                            setup_error = Some(e);
                        }
                    }
                    Err(e) => setup_error = Some(e.to_string()),
                }
            }
            Err(e) => setup_error = Some(format!("database: could not reserve a serial number: {e}")),
        }
    }

    let mut report: Option<JobReport> = None;
    if setup_error.is_none() {
        let slot_name = ctx.slot.name.clone();
        let events = ctx.events.clone();
        let serial_s = serial.to_string();
        let mut last_pct: u64 = u64::MAX;
        let mut on_event = move |ev: JobEvent| {
            let out = match ev {
                JobEvent::StepStarted { step } => {
                    last_pct = u64::MAX;
                    Some(StationEvent::Step { slot: slot_name.clone(), serial: serial_s.clone(), step: step.name().into(), state: StepState::Started, ms: None })
                }
                JobEvent::StepFinished { step, ms } => Some(StationEvent::Step { slot: slot_name.clone(), serial: serial_s.clone(), step: step.name().into(), state: StepState::Finished, ms: Some(ms) }),
                JobEvent::StepFailed { step, ms, .. } => Some(StationEvent::Step { slot: slot_name.clone(), serial: serial_s.clone(), step: step.name().into(), state: StepState::Failed, ms: Some(ms) }),
                JobEvent::Progress { step, done, total } => {
                    // At most ~50 progress events per step: displays need no more.
                    let pct = (done * 50).checked_div(total).unwrap_or(100);
                    if pct == last_pct {
                        None
                    } else {
                        last_pct = pct;
                        Some(StationEvent::Progress { slot: slot_name.clone(), serial: serial_s.clone(), step: step.name().into(), done, total })
                    }
                }
                JobEvent::Note { message, .. } => Some(StationEvent::Note { slot: slot_name.clone(), serial: serial_s.clone(), message }),
            };
            if let Some(e) = out {
                let _ = events.send(e);
            }
        };
        report = match prog {
            Some(pr) => Some(job::run_job(pr.as_mut(), &plan, &mut on_event).await),
            None => {
                let spec = ctx.spec(ctx.sim_options(serial, attempt_no));
                match programmer::open(&spec, p.part).await {
                    Ok(mut sim) => {
                        let r = job::run_job(sim.as_mut(), &plan, &mut on_event).await;
                        let _ = sim.close().await;
                        Some(r)
                    }
                    Err(e) => {
                        setup_error = Some(e.message);
                        None
                    }
                }
            }
        };
    }

    let cycle_ms = started.elapsed().as_millis() as u64;
    let (result, class, message) = match (&report, &setup_error) {
        (_, Some(e)) => (JobResult::Error, Some(FailureClass::Config), Some(e.clone())),
        (Some(r), None) => (r.result, r.failure_class, r.message.clone()),
        (None, None) => (JobResult::Error, Some(FailureClass::Internal), Some("job did not run".into())),
    };
    let passed = result == JobResult::Pass;
    let steps: Vec<StepRecord> = report
        .as_ref()
        .map(|r| r.steps.iter().map(|s| StepRecord { name: s.step.name().to_string(), ms: s.ms, ok: s.ok, detail: String::new() }).collect())
        .unwrap_or_default();
    let outcome = AttemptOutcome {
        result: match result {
            JobResult::Pass => AttemptResult::Pass,
            JobResult::Fail => AttemptResult::Fail,
            JobResult::Error => AttemptResult::Error,
        },
        failure_class: class.map(|c| c.as_str().to_string()),
        message: message.clone(),
        signature: report.as_ref().and_then(|r| r.signature.clone()),
        fuses_before: report.as_ref().and_then(|r| opt_fuses(&r.fuses_before)),
        fuses_after: report.as_ref().and_then(|r| opt_fuses(&r.fuses_after)),
        lock_before: report.as_ref().and_then(|r| r.lock_before.map(|l| format!("{l:02X}"))),
        lock_after: report.as_ref().and_then(|r| r.lock_after.map(|l| format!("{l:02X}"))),
        bytes_written: report.as_ref().map(|r| r.bytes_written).unwrap_or(0),
        finished_at: Utc::now(),
        cycle_ms,
        serial_number,
    };
    // Record, retrying a little: the result must be committed before the slot shows it.
    let mut recorded = Err(String::new());
    for i in 0..5 {
        let r = async {
            ctx.db.add_steps(attempt_id, &steps).await?;
            ctx.db.finish_attempt(attempt_id, &outcome).await
        }
        .await;
        match r {
            Ok(()) => {
                recorded = Ok(());
                break;
            }
            Err(e) => {
                recorded = Err(e.to_string());
                tokio::time::sleep(Duration::from_millis(100 * (i + 1))).await;
            }
        }
    }
    if !passed {
        if let Some(n) = serial_number {
            if let Err(e) = ctx.db.release_serial(&p.recipe.sku, n).await {
                tracing::error!(error = %e, n, "could not release a serial number");
            }
        }
    }
    if let Err(e) = recorded {
        let msg = format!("database: the result of {serial} could not be recorded ({e}); the attempt stays 'running' and will be marked interrupted — retest this board");
        let _ = ctx.events.send(StationEvent::JobFinished {
            slot: ctx.slot.name.clone(),
            serial: serial.to_string(),
            attempt: attempt_no,
            result: "error".into(),
            failure_class: Some(FailureClass::Internal.as_str().into()),
            message: Some(msg.clone()),
            cycle_ms,
            serial_number: None,
        });
        return Some(msg);
    }

    // Distinct units and units whose latest attempt passed, from the records: the unit's
    // previous finished attempt on this station in this session (if any) says whether it is
    // new and whether it was counted as passed. No per-unit set grows in memory.
    let previous = match ctx.db.previous_result_since(attempt_id, ctx.session_started).await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, serial, "session totals: could not read the unit's previous attempt; unit counts skip this one");
            None
        }
    };
    let totals = {
        let mut sh = ctx.shared.lock().unwrap();
        let t = &mut sh.totals;
        t.attempts += 1;
        match result {
            JobResult::Pass => t.passed += 1,
            JobResult::Fail => t.failed += 1,
            JobResult::Error => t.errors += 1,
        }
        if let Some(previous) = previous {
            let was_passed = previous == Some(AttemptResult::Pass);
            if previous.is_none() {
                t.units += 1;
            }
            match (was_passed, passed) {
                (false, true) => t.units_passed += 1,
                (true, false) => t.units_passed = t.units_passed.saturating_sub(1),
                _ => {}
            }
        }
        if let Some(l) = sh.last_unit.get_mut(ctx.idx) {
            *l = Some((serial.to_string(), passed));
        }
        sh.totals.clone()
    };
    let _ = ctx.events.send(StationEvent::JobFinished {
        slot: ctx.slot.name.clone(),
        serial: serial.to_string(),
        attempt: attempt_no,
        result: result.as_str().to_string(),
        failure_class: class.map(|c| c.as_str().to_string()),
        message,
        cycle_ms,
        serial_number: if passed { serial_number } else { None },
    });
    let _ = ctx.events.send(StationEvent::Totals(totals));

    if let Some(c) = class {
        if c.takes_slot_offline() {
            if let Some(mut pr) = prog.take() {
                let _ = pr.close().await;
            }
            return Some(outcome.message.clone().unwrap_or_else(|| c.hint().to_string()));
        }
        if ctx.slot.kind == ProgrammerKind::Sim && c == FailureClass::ProgrammerGone {
            return Some(c.hint().to_string());
        }
    }
    None
}

/// `L:5E H:D9 E:F3`, the form records keep; `None` when nothing was read.
fn opt_fuses(f: &crate::part::FuseSet) -> Option<String> {
    (!f.is_empty()).then(|| f.to_string())
}

/// Put a rendered serial number into the job: EEPROM bytes become the job's EEPROM image,
/// flash bytes join the flash image (the recipe check keeps them clear of the image's data).
fn apply_serial(plan: &mut JobPlan, w: &SerialWrite, bytes: &[u8]) -> Result<(), String> {
    match w.memory {
        SerialMemory::Eeprom => {
            let mut im = plan.eeprom.take().unwrap_or_default();
            im.insert(w.address, bytes).map_err(|c| format!("serial number overlaps EEPROM data at 0x{:04X}", c.addr))?;
            plan.eeprom = Some(im);
        }
        SerialMemory::Flash => {
            plan.image
                .insert(w.address, bytes)
                .map_err(|c| format!("serial number overlaps image data at 0x{:05X}", c.addr))?;
        }
    }
    Ok(())
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
