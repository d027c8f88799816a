//! What the console shows, as plain data: the station's events folded into per-slot rows, the
//! totals, the recent events, the refused scans and the input line. Drawing reads this; nothing
//! here touches the terminal. Every untrusted string (serials, messages, reasons, programmer
//! identities, log lines) is escaped with [`shown`] as it enters the model.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use flashline::error::FailureClass;
use flashline::station::{SlotStatus, StationEvent, Totals};
use flashline::text::shown;

/// How many lines the event pane keeps.
pub const EVENT_LINES: usize = 500;
/// How long the first stop press stays armed.
pub const STOP_ARM: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    Idle,
    Busy,
    Pass,
    Fail,
    Error,
    Offline,
}

impl SlotState {
    pub fn word(self) -> &'static str {
        match self {
            SlotState::Idle => "IDLE",
            SlotState::Busy => "BUSY",
            SlotState::Pass => "PASS",
            SlotState::Fail => "FAIL",
            SlotState::Error => "ERROR",
            SlotState::Offline => "OFFLINE",
        }
    }
}

/// One slot's row.
#[derive(Debug, Clone)]
pub struct SlotRow {
    pub name: String,
    pub programmer: String,
    pub serial: String,
    pub attempt: i64,
    pub step: String,
    pub done: u64,
    pub total: u64,
    pub state: SlotState,
    /// The result's detail: cycle time on PASS, class, message and hint on FAIL/ERROR, the
    /// reason when offline.
    pub detail: String,
}

/// What kind of line an event-pane line is (for its colour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    Bad,
    Warn,
}

#[derive(Debug, Clone)]
pub struct EventLine {
    pub at: String,
    pub text: String,
    pub tone: Tone,
}

/// A message on the status line (the answer to the last key or command), with its time.
#[derive(Debug, Clone)]
pub struct Status {
    pub text: String,
    pub tone: Tone,
    pub at: Instant,
}

/// The whole console state.
pub struct Model {
    pub station: String,
    pub sku: String,
    pub recipe: String,
    pub operator: String,
    pub slots: Vec<SlotRow>,
    pub totals: Totals,
    pub events: VecDeque<EventLine>,
    /// The last refused scan, escaped, with its reason; and how many this session.
    pub refused: Option<String>,
    /// What the operator has typed so far (raw; escaped when drawn).
    pub input: String,
    pub status: Option<Status>,
    pub help: bool,
    pub stop_armed: Option<Instant>,
    pub stopping: bool,
    /// Scans submitted but not yet taken by a slot (all busy).
    pub waiting: usize,
    /// Slots in the order their last unit failed, most recent last (for F2).
    pub failed_order: Vec<String>,
}

fn now_hms() -> String {
    chrono::Local::now().format("%H:%M:%S").to_string()
}

impl Model {
    pub fn new(station: &str, sku: &str, recipe: &str, operator: &str, slots: &[(String, SlotStatus)], programmers: &[(String, Option<String>)], totals: Totals) -> Model {
        let rows = slots
            .iter()
            .map(|(name, st)| {
                let programmer = programmers.iter().find(|(n, _)| n == name).and_then(|(_, p)| p.as_deref()).map(|p| shown(p).into_owned()).unwrap_or_default();
                let mut row = SlotRow {
                    name: shown(name).into_owned(),
                    programmer,
                    serial: String::new(),
                    attempt: 0,
                    step: String::new(),
                    done: 0,
                    total: 0,
                    state: SlotState::Idle,
                    detail: String::new(),
                };
                match st {
                    SlotStatus::Idle => {}
                    SlotStatus::Busy { serial } => {
                        row.state = SlotState::Busy;
                        row.serial = shown(serial).into_owned();
                    }
                    SlotStatus::Offline { reason } => {
                        row.state = SlotState::Offline;
                        row.detail = shown(reason).into_owned();
                    }
                }
                row
            })
            .collect();
        Model {
            station: shown(station).into_owned(),
            sku: shown(sku).into_owned(),
            recipe: shown(recipe).into_owned(),
            operator: shown(operator).into_owned(),
            slots: rows,
            totals,
            events: VecDeque::new(),
            refused: None,
            input: String::new(),
            status: None,
            help: false,
            stop_armed: None,
            stopping: false,
            waiting: 0,
            failed_order: Vec::new(),
        }
    }

    fn slot_mut(&mut self, name: &str) -> Option<&mut SlotRow> {
        let name = shown(name);
        self.slots.iter_mut().find(|s| s.name == name)
    }

    pub fn log(&mut self, text: String, tone: Tone) {
        self.events.push_back(EventLine { at: now_hms(), text, tone });
        while self.events.len() > EVENT_LINES {
            self.events.pop_front();
        }
    }

    pub fn say(&mut self, text: impl Into<String>, tone: Tone) {
        self.status = Some(Status { text: text.into(), tone, at: Instant::now() });
    }

    /// Fold one station event into the model.
    pub fn apply(&mut self, ev: &StationEvent) {
        match ev {
            StationEvent::Started { .. } => {}
            StationEvent::SlotOnline { slot, programmer } => {
                let p = shown(programmer).into_owned();
                if let Some(r) = self.slot_mut(slot) {
                    r.programmer = p;
                }
            }
            StationEvent::SlotOffline { slot, reason } => {
                let reason = shown(reason).into_owned();
                let s = shown(slot).into_owned();
                if let Some(r) = self.slot_mut(slot) {
                    r.state = SlotState::Offline;
                    r.detail = reason.clone();
                }
                self.log(format!("{s} OFFLINE  {reason}"), Tone::Bad);
            }
            StationEvent::RecordsUnavailable { reason } => {
                let reason = shown(reason).into_owned();
                self.log(format!("RECORDS  {reason}"), Tone::Bad);
                self.say(reason, Tone::Bad);
            }
            StationEvent::RecordsAvailable { after_ms } => {
                let line = format!("records writable again after {:.1} s: the station resumes", *after_ms as f64 / 1000.0);
                self.log(format!("RECORDS  {line}"), Tone::Good);
                self.say(line, Tone::Good);
            }
            StationEvent::ScanRejected { raw, reason, .. } => {
                let line = format!("'{}': {}", shown(raw), shown(reason));
                self.log(format!("scan refused  {line}"), Tone::Warn);
                self.refused = Some(format!("{} {line}", now_hms()));
            }
            StationEvent::JobStarted { slot, serial, attempt, .. } => {
                let serial = shown(serial).into_owned();
                let s = shown(slot).into_owned();
                if let Some(r) = self.slot_mut(slot) {
                    r.serial = serial.clone();
                    r.attempt = *attempt;
                    r.step = "starting".into();
                    r.done = 0;
                    r.total = 0;
                    r.state = SlotState::Busy;
                    r.detail.clear();
                }
                self.failed_order.retain(|f| *f != s);
                self.log(format!("{s} {serial} attempt {attempt} started"), Tone::Plain);
            }
            StationEvent::Step { slot, step, .. } => {
                let step = shown(step).into_owned();
                if let Some(r) = self.slot_mut(slot) {
                    if r.step != step {
                        r.done = 0;
                        r.total = 0;
                    }
                    r.step = step;
                }
            }
            StationEvent::Progress { slot, done, total, .. } => {
                if let Some(r) = self.slot_mut(slot) {
                    r.done = *done;
                    r.total = *total;
                }
            }
            StationEvent::Note { slot, serial, message } => {
                self.log(format!("{} {} note: {}", shown(slot), shown(serial), shown(message)), Tone::Plain);
            }
            StationEvent::JobFinished { slot, serial, attempt, result, failure_class, message, cycle_ms, serial_number } => {
                let serial = shown(serial).into_owned();
                let s = shown(slot).into_owned();
                let secs = *cycle_ms as f64 / 1000.0;
                let (state, detail, logged, tone) = match result.as_str() {
                    "pass" => {
                        let n = serial_number.map(|n| format!(" · serial number {n}")).unwrap_or_default();
                        let d = format!("{secs:.2} s{n}");
                        (SlotState::Pass, d.clone(), d, Tone::Good)
                    }
                    other => {
                        let class = failure_class.as_deref().unwrap_or("unclassified");
                        let hint = failure_class.as_deref().and_then(FailureClass::parse).map(|c| c.hint()).unwrap_or("");
                        let msg = message.as_deref().unwrap_or("");
                        // The row says what to check (the class's hint, which a truncated row
                        // still shows); the events pane keeps the job's own message.
                        let row = if hint.is_empty() { format!("{}: {}", shown(class), shown(msg)) } else { format!("{}: {hint}", shown(class)) };
                        let text = if msg.is_empty() { row.clone() } else { format!("{}: {}", shown(class), shown(msg)) };
                        (if other == "fail" { SlotState::Fail } else { SlotState::Error }, row, text, Tone::Bad)
                    }
                };
                let offline = self.slot_mut(slot).map(|r| r.state == SlotState::Offline).unwrap_or(false);
                if let Some(r) = self.slot_mut(slot) {
                    r.serial = serial.clone();
                    r.attempt = *attempt;
                    if !offline {
                        r.state = state;
                        r.detail = detail.clone();
                    }
                    if r.total > 0 && state == SlotState::Pass {
                        r.done = r.total;
                    }
                }
                if state != SlotState::Pass {
                    self.failed_order.retain(|f| *f != s);
                    self.failed_order.push(s.clone());
                }
                self.log(format!("{s} {serial} {} {logged}  (attempt {attempt})", state.word()), tone);
            }
            StationEvent::Totals(t) => self.totals = t.clone(),
            StationEvent::Stopped(t) => {
                self.totals = t.clone();
                self.stopping = true;
            }
        }
    }

    /// Forget a status message and a stop arm once they are old.
    pub fn expire(&mut self, now: Instant) {
        if self.stop_armed.is_some_and(|t| now.duration_since(t) > STOP_ARM) {
            self.stop_armed = None;
            if !self.stopping {
                self.say("stop not confirmed: the station keeps running", Tone::Plain);
            }
        }
        if self.status.as_ref().is_some_and(|s| now.duration_since(s.at) > Duration::from_secs(15)) {
            self.status = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        let slots = vec![("S1".to_string(), SlotStatus::Idle), ("S2".to_string(), SlotStatus::Offline { reason: "gone".into() })];
        Model::new("st", "SKU", "r", "op", &slots, &[("S1".into(), Some("sim:S1".into())), ("S2".into(), None)], Totals::default())
    }

    #[test]
    fn results_fold_into_rows_and_untrusted_text_is_escaped() {
        let mut m = model();
        assert_eq!(m.slots[1].state, SlotState::Offline);
        m.apply(&StationEvent::JobStarted { slot: "S1".into(), serial: "X\u{1b}[2J\u{202E}".into(), attempt: 1, attempt_id: 1 });
        assert_eq!(m.slots[0].serial, "X\\e[2J\\u{202E}");
        m.apply(&StationEvent::JobFinished {
            slot: "S1".into(),
            serial: "X".into(),
            attempt: 1,
            result: "fail".into(),
            failure_class: Some("no_target".into()),
            message: Some("signature 0x000000\n".into()),
            cycle_ms: 10,
            serial_number: None,
        });
        assert_eq!(m.slots[0].state, SlotState::Fail);
        assert_eq!(m.slots[0].detail, "no_target: check the ISP cable orientation and that the board is powered");
        assert!(m.events.back().unwrap().text.ends_with("FAIL no_target: signature 0x000000\\n  (attempt 1)"), "{:?}", m.events.back());
        assert_eq!(m.failed_order, vec!["S1".to_string()]);
        m.apply(&StationEvent::ScanRejected { raw: "b\u{1b}".into(), slot: None, reason: "no".into() });
        assert!(m.refused.as_deref().unwrap().ends_with("'b\\e': no"));
    }

    #[test]
    fn stop_arm_expires() {
        let mut m = model();
        let t = Instant::now();
        m.stop_armed = Some(t);
        m.expire(t + Duration::from_secs(1));
        assert!(m.stop_armed.is_some());
        m.expire(t + STOP_ARM + Duration::from_millis(1));
        assert!(m.stop_armed.is_none());
    }
}
