//! One unit's way through a slot, in the order the records need it:
//!
//! 1. wait while the records are unavailable, then commit the `running` attempt row
//!    (`begin_attempt`) — no board is touched before its attempt is recorded;
//! 2. plan the job: the production image plus this unit's serial number (reserved for this
//!    attempt in the records);
//! 3. run the job, bounded by a backstop;
//! 4. commit steps, result and the serial number's move (used / free / void) in one
//!    transaction, retried until it lands — only then the slot shows PASS/FAIL and the totals
//!    count it;
//! 5. decide whether the slot goes offline (a programmer that is gone; never the records).

use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;

use crate::db::{AttemptId, AttemptOutcome, AttemptResult, DbError, NewAttempt, Reservation, StepRecord};
use crate::error::FailureClass;
use crate::job::{self, JobEvent, JobPlan, JobReport, JobResult, Step};
use crate::programmer::sim::SimProgrammer;
use crate::programmer::{self, Programmer, ProgrammerInfo, ProgrammerKind};
use crate::recipe::{SerialMemory, SerialWrite};
use crate::sim::stk500::EmulatedAvrisp;
use crate::sim::SimOptions;

use super::recorder::{RecordError, Unrecorded};
use super::supervisor::{SlotCtx, SlotStatus, StationEvent, StepState, Work};

/// Bound on one unit's job, beyond the job's own per-step timeouts: a backstop so a slot can
/// never hang forever. Recording is outside it (it has its own retry policy).
const UNIT_BACKSTOP: Duration = Duration::from_secs(600);

pub(super) async fn slot_task(ctx: SlotCtx, mut rx: mpsc::Receiver<Work>) {
    // Real programmers are opened once and kept; simulated ones get a board per unit.
    let mut prog: Option<Box<dyn Programmer>> = None;
    if ctx.slot.kind != ProgrammerKind::Sim {
        match programmer::open(&ctx.spec(SimOptions::default()), ctx.avr.part).await {
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
        let offline_reason = run_unit(&ctx, &mut prog, &serial).await;
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

/// What the job did, as far as the records need it.
struct Ran {
    report: Option<JobReport>,
    /// Why the job did not run or did not end by itself (setup, backstop).
    error: Option<(FailureClass, String)>,
    /// The step that writes the serial number began (or nobody knows).
    serial_written: bool,
}

/// Run and record one unit. Returns `Some(reason)` when the slot must go offline.
async fn run_unit(ctx: &SlotCtx, prog: &mut Option<Box<dyn Programmer>>, serial: &str) -> Option<String> {
    let p = &ctx.production;
    let started = Instant::now();
    let identity = match prog {
        Some(pr) => pr.info(),
        None => ProgrammerInfo { kind: ProgrammerKind::Sim, identity: format!("sim:{}", ctx.slot.name) },
    };

    // 1. The attempt row, before the board is touched.
    ctx.rec.gate().await;
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
        started_at: Utc::now(),
    };
    let attempt_id = match ctx.rec.write(|| ctx.rec.db().begin_attempt(&new)).await {
        Ok(id) => id,
        Err(e) => {
            let msg = format!("{serial} was not programmed: its attempt could not be recorded ({e})");
            unrecorded(ctx, serial, None, "not programmed", &e, msg, started);
            return None;
        }
    };
    let attempt_no = ctx.rec.write(|| ctx.rec.db().attempt_no(attempt_id)).await.map(|n| n as i64).unwrap_or(0);
    let _ = ctx.events.send(StationEvent::JobStarted { slot: ctx.slot.name.clone(), serial: serial.to_string(), attempt: attempt_no, attempt_id: attempt_id.0 });

    // 2. The plan, with this unit's serial number.
    let (plan, reservation, setup_error) = plan_unit(ctx, attempt_id).await;

    // 3. The job.
    let ran = match setup_error {
        Some(e) => Ran { report: None, error: Some((FailureClass::Config, e)), serial_written: reservation.is_some_and(|r| r.reused) },
        None => run_job(ctx, prog, serial, attempt_no, &plan, reservation).await,
    };

    // 4. The record.
    let cycle_ms = started.elapsed().as_millis() as u64;
    let outcome = outcome_of(&ran, reservation, cycle_ms);
    let recorded = record(ctx, attempt_id, outcome).await;
    let outcome = match recorded {
        Ok(o) => o,
        Err((o, e)) => {
            let what = format!("result {}", o.result);
            let msg = format!("the result of {serial} ({}) could not be recorded ({e}): set the board aside and retest it", o.result);
            unrecorded(ctx, serial, Some(attempt_id), &what, &e, msg, started);
            return None;
        }
    };
    let passed = outcome.result == AttemptResult::Pass;
    count(ctx, attempt_id, serial, outcome.result).await;
    let _ = ctx.events.send(StationEvent::JobFinished {
        slot: ctx.slot.name.clone(),
        serial: serial.to_string(),
        attempt: attempt_no,
        result: outcome.result.as_str().to_string(),
        failure_class: outcome.failure_class.clone(),
        message: outcome.message.clone(),
        cycle_ms,
        serial_number: if passed { outcome.serial_number } else { None },
    });
    let _ = ctx.events.send(StationEvent::Totals(ctx.shared.lock().unwrap().totals.clone()));

    // 5. The slot.
    let class = outcome.failure_class.as_deref().and_then(FailureClass::parse);
    if let Some(c) = class {
        if c.takes_slot_offline() || (ctx.slot.kind == ProgrammerKind::Sim && c == FailureClass::ProgrammerGone) {
            if let Some(mut pr) = prog.take() {
                let _ = pr.close().await;
            }
            return Some(outcome.message.clone().unwrap_or_else(|| c.hint().to_string()));
        }
    }
    if matches!(&ran.error, Some((FailureClass::Timeout, _))) {
        // The backstop cut the job off: the programmer's state is unknown.
        prog.take();
        return Some(ran.error.map(|(_, m)| m).unwrap_or_default());
    }
    None
}

/// The production image plus this unit's serial number when the recipe writes one.
async fn plan_unit(ctx: &SlotCtx, attempt_id: AttemptId) -> (JobPlan, Option<Reservation>, Option<String>) {
    let p = &ctx.production;
    let mut plan = JobPlan::new(ctx.avr.part, p.image.clone());
    plan.fuses = ctx.avr.fuses;
    plan.lock = ctx.avr.lock;
    plan.verify = p.verify;
    let Some((rule, w)) = p.serial.as_ref().and_then(|s| s.write.as_ref().map(|w| (s, w))) else {
        return (plan, None, None);
    };
    let r = match ctx.rec.write(|| ctx.rec.db().reserve_serial_for(attempt_id, &p.recipe.sku, w.start)).await {
        Ok(r) => r,
        Err(e) => return (plan, None, Some(format!("could not reserve a serial number: {e}"))),
    };
    let err = match rule.render(r.number) {
        Ok(bytes) => apply_serial(&mut plan, w, &bytes).err(),
        Err(e) => Some(e.to_string()),
    };
    (plan, Some(r), err)
}

/// Run the job on the slot's programmer, or on a simulated board seated for this attempt.
async fn run_job(
    ctx: &SlotCtx,
    prog: &mut Option<Box<dyn Programmer>>,
    serial: &str,
    attempt_no: i64,
    plan: &JobPlan,
    reservation: Option<Reservation>,
) -> Ran {
    let mut on_event = events_for(ctx, serial);
    let writing = ctx.production.serial.as_ref().and_then(|s| s.write.as_ref()).map(|w| match w.memory {
        SerialMemory::Eeprom => Step::Eeprom,
        SerialMemory::Flash => Step::Program,
    });
    let reused = reservation.is_some_and(|r| r.reused);
    let written = |r: &JobReport| reservation.is_some() && (reused || writing.is_some_and(|w| r.steps.iter().any(|s| s.step == w)));
    let backstop = |what: String| Ran {
        report: None,
        error: Some((FailureClass::Timeout, format!("{what} did not finish within {} s: the slot is stopped", UNIT_BACKSTOP.as_secs()))),
        serial_written: reservation.is_some(),
    };
    match prog {
        Some(pr) => match tokio::time::timeout(UNIT_BACKSTOP, job::run_job(pr.as_mut(), plan, &mut on_event)).await {
            Ok(r) => Ran { serial_written: written(&r), report: Some(r), error: None },
            Err(_) => backstop(format!("unit {serial}")),
        },
        None if ctx.slot.bridge.is_some() => {
            // A simulated ArduinoISP behind a USB bridge model, driven by the real avrisp driver.
            let bridge = ctx.slot.bridge.unwrap_or_default();
            let mut sim = match EmulatedAvrisp::spawn(ctx.avr.part, ctx.sim_options(serial, attempt_no), bridge, ctx.slot.name.clone()) {
                Ok(p) => p,
                Err(e) => {
                    let msg = format!("sim:{}: cannot start the simulated ArduinoISP on a pty: {e}", ctx.slot.name);
                    return Ran { report: None, error: Some((FailureClass::ProgrammerOpen, msg)), serial_written: reused };
                }
            };
            seat(ctx, serial, &mut sim.emulator().target());
            let r = tokio::time::timeout(UNIT_BACKSTOP, job::run_job(&mut sim, plan, &mut on_event)).await;
            let _ = sim.close().await;
            unseat(ctx, serial, &sim.emulator().target());
            match r {
                Ok(r) => Ran { serial_written: written(&r), report: Some(r), error: None },
                Err(_) => backstop(format!("unit {serial}")),
            }
        }
        None => {
            let mut sim = SimProgrammer::new(ctx.avr.part, ctx.sim_options(serial, attempt_no), ctx.slot.name.clone());
            let chip = sim.target_handle();
            seat(ctx, serial, &mut chip.lock().unwrap());
            let r = tokio::time::timeout(UNIT_BACKSTOP, job::run_job(&mut sim, plan, &mut on_event)).await;
            let _ = sim.close().await;
            unseat(ctx, serial, &chip.lock().unwrap());
            match r {
                Ok(r) => Ran { serial_written: written(&r), report: Some(r), error: None },
                Err(_) => backstop(format!("unit {serial}")),
            }
        }
    }
}

/// Seat the unit's board: its chip as it was when last taken out (`sim_boards:`), else fresh.
fn seat(ctx: &SlotCtx, serial: &str, chip: &mut crate::sim::SimTarget) {
    if let Some(rack) = &ctx.rack {
        match rack.load(serial) {
            Ok(Some(b)) => {
                chip.restore(&b);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, serial = %crate::text::shown(serial), "simulated board could not be read back; seating a fresh one"),
        }
    }
}

/// Put the board back on the rack (`sim_boards:`).
fn unseat(ctx: &SlotCtx, serial: &str, chip: &crate::sim::SimTarget) {
    if let Some(rack) = &ctx.rack {
        if let Err(e) = rack.save(serial, &chip.board_state()) {
            tracing::warn!(error = %e, serial = %crate::text::shown(serial), "simulated board could not be put back on the rack");
        }
    }
}

/// Job events → station events for displays (progress thinned to ~50 per step).
fn events_for(ctx: &SlotCtx, serial: &str) -> impl FnMut(JobEvent) + Send {
    let slot_name = ctx.slot.name.clone();
    let events = ctx.events.clone();
    let serial_s = serial.to_string();
    let mut last_pct: u64 = u64::MAX;
    move |ev: JobEvent| {
        let step_ev = |step: Step, state: StepState, ms: Option<u64>| StationEvent::Step { slot: slot_name.clone(), serial: serial_s.clone(), step: step.name().into(), state, ms };
        let out = match ev {
            JobEvent::StepStarted { step } => {
                last_pct = u64::MAX;
                Some(step_ev(step, StepState::Started, None))
            }
            JobEvent::StepFinished { step, ms } => Some(step_ev(step, StepState::Finished, Some(ms))),
            JobEvent::StepFailed { step, ms, .. } => Some(step_ev(step, StepState::Failed, Some(ms))),
            JobEvent::Progress { step, done, total } => {
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
    }
}

/// The record of what happened.
fn outcome_of(ran: &Ran, reservation: Option<Reservation>, cycle_ms: u64) -> AttemptOutcome {
    let report = ran.report.as_ref();
    let (result, class, message) = match (&ran.error, report) {
        (Some((c, m)), _) => (JobResult::for_class(*c), Some(*c), Some(m.clone())),
        (None, Some(r)) => (r.result, r.failure_class, r.message.clone()),
        (None, None) => (JobResult::Error, Some(FailureClass::Internal), Some("job did not run".into())),
    };
    AttemptOutcome {
        result: match result {
            JobResult::Pass => AttemptResult::Pass,
            JobResult::Fail => AttemptResult::Fail,
            JobResult::Error => AttemptResult::Error,
        },
        failure_class: class.map(|c| c.as_str().to_string()),
        message,
        signature: report.and_then(|r| r.signature.clone()),
        fuses_before: report.and_then(|r| opt_fuses(&r.fuses_before)),
        fuses_after: report.and_then(|r| opt_fuses(&r.fuses_after)),
        lock_before: report.and_then(|r| r.lock_before.map(|l| format!("{l:02X}"))),
        lock_after: report.and_then(|r| r.lock_after.map(|l| format!("{l:02X}"))),
        bytes_written: report.map(|r| r.bytes_written).unwrap_or(0),
        finished_at: Utc::now(),
        cycle_ms,
        serial_number: reservation.map(|r| r.number),
        serial_written: ran.serial_written,
        steps: report
            .map(|r| r.steps.iter().map(|s| StepRecord { name: s.step.name().to_string(), ms: s.ms, ok: s.ok, detail: String::new() }).collect())
            .unwrap_or_default(),
    }
}

/// Commit the outcome (retried until it lands or the stop grace runs out). A pass whose number
/// the pool says this attempt does not hold is recorded as an error instead.
async fn record(ctx: &SlotCtx, id: AttemptId, outcome: AttemptOutcome) -> Result<AttemptOutcome, (AttemptOutcome, RecordError)> {
    match ctx.rec.write(|| ctx.rec.db().finish_attempt(id, &outcome)).await {
        Ok(()) => Ok(outcome),
        Err(RecordError::Failed(e @ DbError::SerialTaken { .. })) => {
            let mut o = outcome.clone();
            o.result = AttemptResult::Error;
            o.failure_class = Some(FailureClass::Internal.as_str().into());
            o.message = Some(format!("{e} — {}", FailureClass::Internal.hint()));
            o.serial_written = true;
            match ctx.rec.write(|| ctx.rec.db().finish_attempt(id, &o)).await {
                Ok(()) => Ok(o),
                Err(e) => Err((o, e)),
            }
        }
        Err(e) => Err((outcome, e)),
    }
}

/// Session totals after a recorded result: attempts by result, and distinct units / units
/// whose latest attempt passed from the records (the unit's previous finished attempt on this
/// station in this session), so the station keeps no per-unit set.
async fn count(ctx: &SlotCtx, id: AttemptId, serial: &str, result: AttemptResult) {
    let previous = match ctx.rec.write(|| ctx.rec.db().previous_result_since(id, ctx.session_started)).await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, serial = %crate::text::shown(serial), "session totals: could not read the unit's previous attempt; unit counts skip this one");
            None
        }
    };
    let passed = result == AttemptResult::Pass;
    let mut sh = ctx.shared.lock().unwrap();
    let t = &mut sh.totals;
    t.attempts += 1;
    match result {
        AttemptResult::Pass => t.passed += 1,
        AttemptResult::Fail => t.failed += 1,
        _ => t.errors += 1,
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
}

/// A result (or a job start) the records did not take: say so on every display, count it, keep
/// it for the exit report. The slot is not blamed.
fn unrecorded(ctx: &SlotCtx, serial: &str, attempt: Option<AttemptId>, what: &str, e: &RecordError, message: String, started: Instant) {
    ctx.rec.note_unrecorded(Unrecorded {
        slot: Some(ctx.slot.name.clone()),
        serial: serial.to_string(),
        attempt_id: attempt.map(|a| a.0),
        what: what.to_string(),
        error: e.to_string(),
    });
    let totals = {
        let mut sh = ctx.shared.lock().unwrap();
        sh.totals.unrecorded += 1;
        if let Some(l) = sh.last_unit.get_mut(ctx.idx) {
            *l = Some((serial.to_string(), false));
        }
        sh.totals.clone()
    };
    let _ = ctx.events.send(StationEvent::JobFinished {
        slot: ctx.slot.name.clone(),
        serial: serial.to_string(),
        attempt: 0,
        result: AttemptResult::Error.as_str().into(),
        failure_class: Some(FailureClass::Records.as_str().into()),
        message: Some(message),
        cycle_ms: started.elapsed().as_millis() as u64,
        serial_number: None,
    });
    let _ = ctx.events.send(StationEvent::Totals(totals));
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

