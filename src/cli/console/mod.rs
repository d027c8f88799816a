//! The operator console: a full-screen terminal view of a running station (ratatui on
//! crossterm), used by `flashline run` when stdin and stdout are a terminal.
//!
//! - [`model`]: station events folded into what is shown (untrusted text escaped on the way in);
//! - [`draw`]: the layout — header, slot rows, totals, events pane, refused scans, status line,
//!   input line — truncated to the terminal's size on every frame;
//! - [`term`]: taking the terminal and giving it back on every exit path.
//!
//! The loop here redraws after every batch of station events, every key, every captured log
//! line and on a 250 ms tick (totals are re-read from the supervisor on the tick, so they are
//! current even if an event was missed). Scans go to one worker task in the order typed, so a
//! scan waiting for a free slot never blocks the keyboard.

pub mod draw;
pub mod model;
pub mod term;

use std::future::Future;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossterm::event::{Event, EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use crossterm::terminal::{BeginSynchronizedUpdate, EndSynchronizedUpdate};
use futures::StreamExt;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;
use ratatui::Terminal;
use tokio::sync::{broadcast, mpsc};

use flashline::station::{Submit, Supervisor, Totals};
use flashline::text::shown;

use model::{Model, Tone};

/// Longest input line kept (a scan is at most 128 characters; the rest is a stuck key).
const INPUT_MAX: usize = 512;

/// What the operator asked the scan worker to do.
enum Request {
    Scan(String),
    Retest(String),
}

/// What a key asked of the loop.
enum Action {
    None,
    Send(Request),
    Stop,
    Repaint,
}

/// Run the console until the operator stops the station (or `stop` fires, or SIGTERM/SIGHUP
/// arrives); the station is finished (running boards complete and are recorded) before the
/// terminal is given back. Returns the session totals.
pub async fn run(sup: Arc<Supervisor>, operator: &str, stop: impl Future<Output = ()> + Unpin) -> anyhow::Result<Totals> {
    let (log_tx, log_rx) = mpsc::unbounded_channel::<String>();
    let guard = term::TermGuard::enter(log_tx)?;
    let result = console_loop(&sup, operator, stop, log_rx).await;
    let captured = guard.captured.clone();
    drop(guard);
    // What was logged while the screen was up goes to the real stderr, as it would have.
    let lines = std::mem::take(&mut *captured.lock().unwrap());
    if !lines.is_empty() {
        let mut err = std::io::stderr().lock();
        for l in lines {
            let _ = writeln!(err, "{l}");
        }
    }
    if term::PANICKED.load(Ordering::SeqCst) {
        anyhow::bail!("a panic stopped the console (see the message above); the station was stopped and its records are complete");
    }
    result
}

async fn console_loop(sup: &Arc<Supervisor>, operator: &str, mut stop: impl Future<Output = ()> + Unpin, mut logs: mpsc::UnboundedReceiver<String>) -> anyhow::Result<Totals> {
    let mut rx = sup.subscribe();
    let p = sup.production();
    let recipe = flashline::station::supervisor::recipe_name(&p.recipe_path, &p.recipe.sku);
    let mut m = Model::new(&sup.station().name, &p.recipe.sku, &recipe, operator, &sup.slot_status(), &sup.slot_programmers(), sup.totals());
    let slot_names: Vec<String> = sup.station().slots.iter().map(|s| s.name.clone()).collect();

    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut stop_fired = false;
    let mut keys_open = true;

    // The scan worker: one request at a time, in the order typed.
    let (req_tx, mut req_rx) = mpsc::unbounded_channel::<Request>();
    let (reply_tx, mut replies) = mpsc::unbounded_channel::<(String, Submit)>();
    let worker_sup = sup.clone();
    let worker = tokio::spawn(async move {
        while let Some(r) = req_rx.recv().await {
            let (what, res) = match r {
                Request::Scan(line) => {
                    let res = worker_sup.submit(&line).await;
                    (line, res)
                }
                Request::Retest(slot) => {
                    let res = worker_sup.retest(&slot).await;
                    (format!("retest {slot}"), res)
                }
            };
            if reply_tx.send((what, res)).is_err() {
                break;
            }
        }
    });
    let mut finishing = false;
    let (done_tx, mut done_rx) = mpsc::channel::<Totals>(1);

    let begin_stop = |m: &mut Model, finishing: &mut bool, why: &str| {
        if *finishing {
            return;
        }
        *finishing = true;
        worker.abort();
        m.waiting = 0;
        m.stopping = true;
        m.stop_armed = None;
        m.log(format!("stopping ({why}): boards in the fixtures finish and are recorded"), Tone::Warn);
        let s = sup.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let _ = done.send(s.finish().await).await;
        });
    };

    loop {
        if !term::PANICKED.load(Ordering::SeqCst) {
            draw_frame(&mut terminal, &m)?;
        } else {
            begin_stop(&mut m, &mut finishing, "panic");
        }
        tokio::select! {
            ev = rx.recv() => {
                match ev {
                    Ok(ev) => m.apply(&ev),
                    Err(broadcast::error::RecvError::Lagged(n)) => m.log(format!("display fell behind: {n} events skipped"), Tone::Warn),
                    Err(broadcast::error::RecvError::Closed) => {}
                }
                // Take what else has arrived before drawing: one frame per burst.
                for _ in 0..1000 {
                    match rx.try_recv() {
                        Ok(ev) => m.apply(&ev),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => m.log(format!("display fell behind: {n} events skipped"), Tone::Warn),
                        Err(_) => break,
                    }
                }
            }
            k = keys.next(), if keys_open => match k {
                Some(Ok(ev)) => for action in on_input(&mut m, ev, &slot_names) { match action {
                    Action::None => {}
                    Action::Send(r) => {
                        if m.stopping {
                            m.say("the station is stopping: no new scans", Tone::Warn);
                        } else {
                            m.waiting += 1;
                            let _ = req_tx.send(r);
                        }
                    }
                    Action::Stop => begin_stop(&mut m, &mut finishing, "operator"),
                    Action::Repaint => {
                        let s = terminal.size()?;
                        terminal.resize(Rect::new(0, 0, s.width, s.height))?;
                    }
                }},
                Some(Err(e)) => return Err(anyhow::anyhow!("reading the keyboard: {e}")),
                None => {
                    keys_open = false;
                    begin_stop(&mut m, &mut finishing, "the terminal closed");
                }
            },
            Some((what, res)) = replies.recv() => {
                m.waiting = m.waiting.saturating_sub(1);
                let what = shown(&what).into_owned();
                match res {
                    Submit::Queued { slot, serial } => m.say(format!("{} → slot {}", shown(&serial), shown(&slot)), Tone::Good),
                    Submit::Rejected { reason } => {
                        let reason = shown(&reason).into_owned();
                        if what.starts_with("retest ") {
                            m.log(format!("{what} refused: {reason}"), Tone::Warn);
                        }
                        m.say(format!("refused '{what}': {reason}"), Tone::Bad);
                    }
                    Submit::Quit | Submit::Ignored => {}
                }
            }
            Some(line) = logs.recv() => m.log(format!("log: {}", shown(&line)), Tone::Warn),
            _ = tick.tick() => {
                m.totals = sup.totals();
                m.expire(Instant::now());
            }
            _ = sigterm.recv() => begin_stop(&mut m, &mut finishing, "SIGTERM"),
            _ = sighup.recv() => begin_stop(&mut m, &mut finishing, "SIGHUP"),
            _ = &mut stop, if !stop_fired => {
                stop_fired = true;
                begin_stop(&mut m, &mut finishing, "signal");
            }
            Some(totals) = done_rx.recv() => {
                m.totals = totals.clone();
                if !term::PANICKED.load(Ordering::SeqCst) {
                    draw_frame(&mut terminal, &m)?;
                }
                return Ok(totals);
            }
        }
    }
}

/// One frame inside a synchronized update, so terminals that support it never show a half-drawn
/// frame.
fn draw_frame(terminal: &mut Terminal<CrosstermBackend<std::io::Stdout>>, m: &Model) -> std::io::Result<()> {
    crossterm::queue!(terminal.backend_mut(), BeginSynchronizedUpdate)?;
    terminal.draw(|f| draw::draw(f, m))?;
    crossterm::execute!(terminal.backend_mut(), EndSynchronizedUpdate)?;
    Ok(())
}

/// A slot name as the station spells it, if `s` names one (case-insensitive).
fn slot_named(s: &str, slots: &[String]) -> Option<String> {
    slots.iter().find(|n| n.eq_ignore_ascii_case(s.trim())).cloned()
}

fn stop_press(m: &mut Model) -> Action {
    if m.stopping {
        return Action::None;
    }
    match m.stop_armed {
        Some(t) if t.elapsed() <= model::STOP_ARM => Action::Stop,
        _ => {
            m.stop_armed = Some(Instant::now());
            Action::None
        }
    }
}

/// Enter: what the typed line means.
fn on_line(m: &mut Model, line: String, slots: &[String]) -> Action {
    let t = line.trim();
    if t.is_empty() {
        return Action::None;
    }
    if ["quit", "exit", "q"].iter().any(|q| t.eq_ignore_ascii_case(q)) {
        return stop_press(m);
    }
    if let Some((cmd, rest)) = t.split_once(char::is_whitespace) {
        if cmd.eq_ignore_ascii_case("r") || cmd.eq_ignore_ascii_case("retest") {
            return match slot_named(rest, slots) {
                Some(s) => Action::Send(Request::Retest(s)),
                None => {
                    m.say(format!("there is no slot '{}' on this station (slots: {})", shown(rest.trim()), slots.join(" ")), Tone::Bad);
                    Action::None
                }
            };
        }
    }
    Action::Send(Request::Scan(line))
}

/// Fold one keyboard/paste/resize event into the model; say what the loop must do.
fn on_input(m: &mut Model, ev: Event, slots: &[String]) -> Vec<Action> {
    match ev {
        Event::Key(k) if k.kind != KeyEventKind::Release => vec![on_key(m, k, slots)],
        Event::Paste(text) => {
            // A paste (or a scanner in paste mode): each line break is an Enter.
            let mut out = Vec::new();
            let mut parts = text.split(['\r', '\n']).peekable();
            while let Some(part) = parts.next() {
                push_input(m, part);
                if parts.peek().is_some() {
                    let line = std::mem::take(&mut m.input);
                    out.push(on_line(m, line, slots));
                }
            }
            out
        }
        // A resize needs nothing but the next frame, which the loop draws.
        _ => Vec::new(),
    }
}

fn push_input(m: &mut Model, s: &str) {
    for c in s.chars() {
        if m.input.chars().count() >= INPUT_MAX {
            m.say("input line full: press Enter or Esc", Tone::Warn);
            break;
        }
        m.input.push(c);
    }
}

fn on_key(m: &mut Model, k: KeyEvent, slots: &[String]) -> Action {
    let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
    match k.code {
        KeyCode::Char('c') if ctrl => stop_press(m),
        KeyCode::Char('u') if ctrl => {
            m.input.clear();
            Action::None
        }
        KeyCode::Char('l') if ctrl => Action::Repaint,
        KeyCode::Char(_) if ctrl => Action::None,
        KeyCode::Char('?') if m.input.is_empty() => {
            m.help = !m.help;
            Action::None
        }
        KeyCode::Char(c) => {
            push_input(m, c.encode_utf8(&mut [0; 4]));
            Action::None
        }
        KeyCode::Backspace => {
            m.input.pop();
            Action::None
        }
        KeyCode::Enter => {
            let line = std::mem::take(&mut m.input);
            on_line(m, line, slots)
        }
        KeyCode::Esc => {
            if m.help {
                m.help = false;
            } else if m.stop_armed.is_some() {
                m.stop_armed = None;
                m.say("stop cancelled", Tone::Plain);
            } else {
                m.input.clear();
            }
            Action::None
        }
        KeyCode::F(1) => {
            m.help = !m.help;
            Action::None
        }
        KeyCode::F(2) => {
            let typed = std::mem::take(&mut m.input);
            let slot = slot_named(&typed, slots).or_else(|| m.failed_order.last().and_then(|s| slot_named(s, slots)));
            match slot {
                Some(s) => Action::Send(Request::Retest(s)),
                None => {
                    m.input = typed;
                    m.say("no failed slot to retest: type the slot (e.g. S3) and press F2, or r S3 Enter", Tone::Bad);
                    Action::None
                }
            }
        }
        KeyCode::F(10) => stop_press(m),
        _ => Action::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashline::station::SlotStatus;

    fn model() -> (Model, Vec<String>) {
        let slots = vec!["S1".to_string(), "S2".to_string()];
        let st: Vec<(String, SlotStatus)> = slots.iter().map(|s| (s.clone(), SlotStatus::Idle)).collect();
        (Model::new("st", "SKU", "r", "op", &st, &[], Totals::default()), slots)
    }

    fn key(c: KeyCode) -> Event {
        Event::Key(KeyEvent::new(c, KeyModifiers::NONE))
    }

    fn on1(m: &mut Model, ev: Event, slots: &[String]) -> Action {
        on_input(m, ev, slots).pop().unwrap_or(Action::None)
    }

    #[test]
    fn typed_line_is_a_scan_a_retest_or_a_stop() {
        let (mut m, slots) = model();
        for c in "s2:PL4-1".chars() {
            on_key(&mut m, KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE), &slots);
        }
        assert_eq!(m.input, "s2:PL4-1");
        assert!(matches!(on1(&mut m, key(KeyCode::Enter), &slots), Action::Send(Request::Scan(l)) if l == "s2:PL4-1"));
        assert!(m.input.is_empty());
        m.input = "r s2".into();
        assert!(matches!(on1(&mut m, key(KeyCode::Enter), &slots), Action::Send(Request::Retest(s)) if s == "S2"));
        m.input = "r S9".into();
        assert!(matches!(on1(&mut m, key(KeyCode::Enter), &slots), Action::None));
        // Stop needs two presses.
        assert!(matches!(on1(&mut m, key(KeyCode::F(10)), &slots), Action::None));
        assert!(m.stop_armed.is_some());
        assert!(matches!(on1(&mut m, key(KeyCode::F(10)), &slots), Action::Stop));
    }

    #[test]
    fn paste_with_line_break_submits() {
        let (mut m, slots) = model();
        let mut a = on_input(&mut m, Event::Paste("PL4-\u{1b}1\r\nrest".into()), &slots).into_iter();
        assert!(matches!(a.next(), Some(Action::Send(Request::Scan(l))) if l == "PL4-\u{1b}1"));
        assert!(matches!(a.next(), Some(Action::None)));
        assert!(a.next().is_none());
        assert_eq!(m.input, "rest");
    }
}
