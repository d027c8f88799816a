//! The dashboard's view of a station: one tile per slot, the session totals, refused scans and
//! recent attempts. Live dashboards fold [`StationEvent`]s into it; the records view builds it
//! from the database. The browser gets it whole as a snapshot and then applies the same events.

use std::collections::VecDeque;

use chrono::Utc;
use serde::Serialize;

use crate::error::FailureClass;
use crate::station::{SlotStatus, StationEvent, Totals};

/// How many refused scans and recent attempts a snapshot carries.
pub const RECENT: usize = 12;

/// One slot's tile.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Tile {
    pub slot: String,
    /// `idle`, `busy`, `pass`, `fail`, `error`, `interrupted` or `offline`.
    pub state: String,
    pub serial: Option<String>,
    pub attempt: Option<i64>,
    pub step: Option<String>,
    pub done: u64,
    pub total: u64,
    /// Steps finished in this attempt (drives the overall progress bar).
    pub steps_done: Vec<String>,
    pub failure_class: Option<String>,
    /// What happened (failure message, offline reason).
    pub message: Option<String>,
    /// What the operator should check.
    pub hint: Option<String>,
    pub cycle_ms: Option<u64>,
    pub programmer: Option<String>,
}

impl Tile {
    fn new(slot: &str) -> Tile {
        Tile { slot: slot.to_string(), state: "idle".into(), ..Default::default() }
    }
}

/// A refused scan.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Refused {
    pub at: String,
    pub raw: String,
    pub slot: Option<String>,
    pub reason: String,
}

/// A finished attempt.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Recent {
    pub at: String,
    pub slot: String,
    pub serial: String,
    pub attempt: i64,
    pub result: String,
    pub failure_class: Option<String>,
    pub message: Option<String>,
    pub cycle_ms: Option<u64>,
}

/// Session totals with the yield spelled out for the page.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TotalsView {
    #[serde(flatten)]
    pub totals: Totals,
    /// units_passed / units, in percent (`None` before the first unit).
    pub yield_pct: Option<f64>,
}

impl From<Totals> for TotalsView {
    fn from(t: Totals) -> Self {
        let y = (t.units > 0).then(|| t.yield_pct());
        TotalsView { totals: t, yield_pct: y }
    }
}

/// Everything a freshly loaded page shows.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Model {
    /// `live` (a running station) or `records` (read-only view of a database).
    pub mode: String,
    pub station: String,
    pub sku: String,
    pub recipe: String,
    pub operator: String,
    pub tiles: Vec<Tile>,
    pub totals: TotalsView,
    /// Refused scans, newest first.
    pub refused: VecDeque<Refused>,
    /// Finished attempts, newest first.
    pub recent: VecDeque<Recent>,
    /// The station is finishing its last jobs and will stop.
    pub stopping: bool,
    /// Records cannot be written: the reason, with its root cause (no job starts meanwhile).
    pub records_unavailable: Option<String>,
}

fn now() -> String {
    Utc::now().format("%H:%M:%S").to_string()
}

fn hint_for(class: Option<&str>) -> Option<String> {
    class.and_then(FailureClass::parse).map(|c| c.hint().to_string())
}

impl Model {
    /// A live model for these slots.
    pub fn live(slots: &[(String, SlotStatus)]) -> Model {
        let tiles = slots
            .iter()
            .map(|(name, st)| {
                let mut t = Tile::new(name);
                match st {
                    SlotStatus::Idle => {}
                    SlotStatus::Busy { serial } => {
                        t.state = "busy".into();
                        t.serial = Some(serial.clone());
                    }
                    SlotStatus::Offline { reason } => {
                        t.state = "offline".into();
                        t.message = Some(reason.clone());
                    }
                }
                t
            })
            .collect();
        Model { mode: "live".into(), tiles, ..Default::default() }
    }

    /// Fill in the programmer of each slot already online.
    pub fn set_programmers(&mut self, programmers: &[(String, Option<String>)]) {
        for (slot, p) in programmers {
            if let (Some(t), Some(p)) = (self.tile(slot), p) {
                t.programmer = Some(p.clone());
            }
        }
    }

    fn tile(&mut self, slot: &str) -> Option<&mut Tile> {
        self.tiles.iter_mut().find(|t| t.slot == slot)
    }

    /// Fold one event in (the browser's `app.js` mirrors this function).
    pub fn apply(&mut self, ev: &StationEvent) {
        match ev {
            StationEvent::Started { station, sku, recipe, operator, slots, .. } => {
                self.station = station.clone();
                self.sku = sku.clone();
                self.recipe = recipe.clone();
                self.operator = operator.clone();
                for s in slots {
                    if self.tile(s).is_none() {
                        self.tiles.push(Tile::new(s));
                    }
                }
            }
            StationEvent::SlotOnline { slot, programmer } => {
                if let Some(t) = self.tile(slot) {
                    t.programmer = Some(programmer.clone());
                }
            }
            StationEvent::SlotOffline { slot, reason } => {
                if let Some(t) = self.tile(slot) {
                    t.state = "offline".into();
                    t.message = Some(reason.clone());
                    t.hint = Some("the slot takes no boards until the station is restarted: check the programmer and its cable".into());
                }
            }
            StationEvent::ScanRejected { raw, slot, reason } => {
                self.refused.push_front(Refused { at: now(), raw: raw.clone(), slot: slot.clone(), reason: reason.clone() });
                self.refused.truncate(RECENT);
            }
            StationEvent::JobStarted { slot, serial, attempt, .. } => {
                if let Some(t) = self.tile(slot) {
                    let programmer = t.programmer.take();
                    *t = Tile::new(slot);
                    t.programmer = programmer;
                    t.state = "busy".into();
                    t.serial = Some(serial.clone());
                    t.attempt = Some(*attempt);
                }
            }
            StationEvent::Step { slot, step, state, .. } => {
                if let Some(t) = self.tile(slot) {
                    t.step = Some(step.clone());
                    t.done = 0;
                    t.total = 0;
                    if *state == crate::station::supervisor::StepState::Finished && !t.steps_done.contains(step) {
                        t.steps_done.push(step.clone());
                    }
                }
            }
            StationEvent::Progress { slot, step, done, total, .. } => {
                if let Some(t) = self.tile(slot) {
                    t.step = Some(step.clone());
                    t.done = *done;
                    t.total = *total;
                }
            }
            StationEvent::Note { .. } => {}
            StationEvent::JobFinished { slot, serial, attempt, result, failure_class, message, cycle_ms, .. } => {
                if let Some(t) = self.tile(slot) {
                    if t.state != "offline" {
                        t.state = result.clone();
                    }
                    t.serial = Some(serial.clone());
                    t.attempt = Some(*attempt);
                    t.failure_class = failure_class.clone();
                    t.message = message.clone();
                    t.hint = hint_for(failure_class.as_deref());
                    t.cycle_ms = Some(*cycle_ms);
                    t.step = None;
                }
                self.recent.push_front(Recent {
                    at: now(),
                    slot: slot.clone(),
                    serial: serial.clone(),
                    attempt: *attempt,
                    result: result.clone(),
                    failure_class: failure_class.clone(),
                    message: message.clone(),
                    cycle_ms: Some(*cycle_ms),
                });
                self.recent.truncate(RECENT);
            }
            StationEvent::RecordsUnavailable { reason } => self.records_unavailable = Some(reason.clone()),
            StationEvent::RecordsAvailable { .. } => self.records_unavailable = None,
            StationEvent::Totals(t) => self.totals = t.clone().into(),
            StationEvent::Stopped(t) => {
                self.totals = t.clone().into();
                self.stopping = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_job_shows_class_message_and_hint() {
        let mut m = Model::live(&[("S1".into(), SlotStatus::Idle), ("S2".into(), SlotStatus::Idle)]);
        m.apply(&StationEvent::JobStarted { slot: "S2".into(), serial: "<b>x</b>".into(), attempt: 1, attempt_id: 9 });
        assert_eq!(m.tiles[1].state, "busy");
        m.apply(&StationEvent::Progress { slot: "S2".into(), serial: "<b>x</b>".into(), step: "program".into(), done: 5, total: 10 });
        assert_eq!((m.tiles[1].done, m.tiles[1].total), (5, 10));
        m.apply(&StationEvent::JobFinished {
            slot: "S2".into(),
            serial: "<b>x</b>".into(),
            attempt: 1,
            result: "fail".into(),
            failure_class: Some("no_target".into()),
            message: Some("nothing answered".into()),
            cycle_ms: 10,
            serial_number: None,
        });
        let t = &m.tiles[1];
        assert_eq!(t.state, "fail");
        assert_eq!(t.hint.as_deref(), Some(FailureClass::NoTarget.hint()));
        assert_eq!(m.recent.len(), 1);
        assert_eq!(m.tiles[0].state, "idle");
    }
}
