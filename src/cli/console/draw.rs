//! Drawing the console model with ratatui. Every line is truncated to its area (no widget here
//! wraps), so a long message never pushes the layout down; the layout is recomputed from the
//! frame's size on every draw, so a resize simply gives the next frame new areas.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table};
use ratatui::Frame;

use flashline::text::shown;

use super::model::{Model, SlotState, Tone};

/// The keys, as the help overlay and the README list them.
pub const KEYS: &[(&str, &str)] = &[
    ("Enter", "submit the input line as a scan: SERIAL (next free slot) or SLOT:SERIAL"),
    ("r SLOT, Enter", "retest the unit that last failed in SLOT (e.g. r S3)"),
    ("F2", "retest the slot typed on the input line, or else the last failed slot"),
    ("F10 or Ctrl-C, twice", "stop; boards in the fixtures finish and are recorded (quit + Enter counts)"),
    ("Esc", "clear the input line; cancel an armed stop; close this help"),
    ("Backspace, Ctrl-U", "delete a character / the whole input line"),
    ("F1 or ? (empty line)", "show or hide this help"),
    ("Ctrl-L", "redraw the whole screen"),
];

fn tone_style(t: Tone) -> Style {
    match t {
        Tone::Plain => Style::default(),
        Tone::Good => Style::default().fg(Color::Green),
        Tone::Bad => Style::default().fg(Color::Red),
        Tone::Warn => Style::default().fg(Color::Yellow),
    }
}

fn state_style(s: SlotState) -> Style {
    let b = Style::default().add_modifier(Modifier::BOLD);
    match s {
        SlotState::Idle => Style::default().fg(Color::DarkGray),
        SlotState::Busy => b.fg(Color::Cyan),
        SlotState::Pass => b.fg(Color::Black).bg(Color::Green),
        SlotState::Fail => b.fg(Color::White).bg(Color::Red),
        SlotState::Error => b.fg(Color::White).bg(Color::Magenta),
        SlotState::Offline => b.fg(Color::Black).bg(Color::Yellow),
    }
}

/// `██████▌░░░ 65%` in `width` cells (bar + percentage).
pub fn bar(done: u64, total: u64, width: usize) -> String {
    if total == 0 {
        return String::new();
    }
    let frac = (done.min(total) as f64) / (total as f64);
    let cells = width.saturating_sub(5).max(1);
    let eighths = (frac * (cells * 8) as f64).round() as usize;
    let mut s = String::new();
    for i in 0..cells {
        let e = eighths.saturating_sub(i * 8).min(8);
        s.push(match e {
            0 => '░',
            8 => '█',
            n => ['▏', '▎', '▍', '▌', '▋', '▊', '▉'][n - 1],
        });
    }
    format!("{s} {:>3}%", (frac * 100.0).round() as u64)
}

pub fn draw(f: &mut Frame, m: &Model) {
    let area = f.area();
    let slots_h = (m.slots.len() as u16).saturating_add(3);
    let [head, slots, totals, events, refused, status, input] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Max(slots_h),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);

    let header = Line::from(vec![
        Span::styled(" flashline ", Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD)),
        Span::raw(format!(" station {}  ·  {} ({})  ·  operator {}  ·  {}", m.station, m.sku, m.recipe, m.operator, chrono::Local::now().format("%H:%M:%S"))),
    ]);
    f.render_widget(Paragraph::new(header), head);

    draw_slots(f, m, slots);

    let t = &m.totals;
    let totals_line = Line::from(vec![
        Span::styled(" TOTALS ", Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!(" attempts {}  ", t.attempts)),
        Span::styled(format!("passed {}", t.passed), Style::default().fg(Color::Green)),
        Span::raw("  "),
        Span::styled(format!("failed {}", t.failed), Style::default().fg(Color::Red)),
        Span::raw("  "),
        Span::styled(format!("errors {}", t.errors), Style::default().fg(Color::Magenta)),
        Span::raw(format!("  units {}  units passed {}  ", t.units, t.units_passed)),
        Span::styled(format!("yield {:.1}%", t.yield_pct()), Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!("  refused scans {}", t.rejected_scans)),
    ]);
    f.render_widget(Paragraph::new(totals_line), totals);

    let block = Block::bordered().title(" Events ").title_bottom(Line::styled(" Enter scan · r SLOT retest · F2 retest last failed · F10 twice stop · F1 help ", Style::default().fg(Color::DarkGray)));
    let inner = block.inner(events);
    f.render_widget(block, events);
    let n = inner.height as usize;
    let skip = m.events.len().saturating_sub(n);
    let lines: Vec<Line> = m.events.iter().skip(skip).map(|e| Line::from(vec![Span::styled(format!("{} ", e.at), Style::default().fg(Color::DarkGray)), Span::styled(e.text.clone(), tone_style(e.tone))])).collect();
    f.render_widget(Paragraph::new(lines), inner);

    let refused_line = Line::from(vec![
        Span::styled(" REFUSED ", Style::default().fg(Color::Black).bg(Color::Yellow)),
        Span::raw(" "),
        Span::raw(m.refused.clone().unwrap_or_else(|| "none".into())),
    ]);
    f.render_widget(Paragraph::new(refused_line), refused);

    let status_line = if m.stopping {
        Line::styled(" STOPPING: boards in the fixtures finish and are recorded; no new scans", Style::default().fg(Color::Black).bg(Color::Yellow))
    } else if m.stop_armed.is_some() {
        Line::styled(" PRESS F10 (or Ctrl-C) AGAIN TO STOP THE STATION — Esc cancels", Style::default().fg(Color::White).bg(Color::Red).add_modifier(Modifier::BOLD))
    } else if let Some(s) = &m.status {
        Line::styled(format!(" {}", s.text), tone_style(s.tone))
    } else {
        Line::styled(" ready: scan a board (SERIAL or SLOT:SERIAL)", Style::default().fg(Color::DarkGray))
    };
    f.render_widget(Paragraph::new(status_line), status);

    // The input line: what is typed, escaped, its tail kept visible when it is longer than
    // the line.
    let prompt = if m.waiting > 0 { format!("scan ({} waiting for a slot)> ", m.waiting) } else { "scan> ".to_string() };
    let typed = shown(&m.input).into_owned();
    let room = (input.width as usize).saturating_sub(prompt.chars().count() + 1);
    let chars: Vec<char> = typed.chars().collect();
    let visible: String = chars[chars.len().saturating_sub(room)..].iter().collect();
    let cursor_x = input.x + (prompt.chars().count() + visible.chars().count()) as u16;
    f.render_widget(Paragraph::new(Line::from(vec![Span::styled(prompt, Style::default().add_modifier(Modifier::BOLD)), Span::raw(visible)])), input);
    if input.height > 0 && cursor_x < input.x + input.width {
        f.set_cursor_position((cursor_x, input.y));
    }

    if m.help {
        draw_help(f, area);
    }
}

fn draw_slots(f: &mut Frame, m: &Model, area: Rect) {
    let name_w = m.slots.iter().map(|s| s.name.chars().count()).max().unwrap_or(4).clamp(4, 12) as u16;
    let widths = [Constraint::Length(name_w), Constraint::Length(7), Constraint::Length(18), Constraint::Length(18), Constraint::Fill(1)];
    let header = Row::new(["SLOT", "STATE", "SERIAL", "PROGRAMMER", "STEP AND PROGRESS / RESULT: WHAT TO CHECK"]).style(Style::default().add_modifier(Modifier::UNDERLINED));
    let rows = m.slots.iter().map(|s| {
        // One wide column: the step and its progress while busy, the result's detail after.
        let (work, style) = match s.state {
            SlotState::Busy => (format!("{:<9} {}", s.step, bar(s.done, s.total, 20)), Style::default().fg(Color::Cyan)),
            SlotState::Idle if s.detail.is_empty() => ("scan a board".to_string(), Style::default().fg(Color::DarkGray)),
            SlotState::Pass => (s.detail.clone(), Style::default().fg(Color::Green)),
            SlotState::Fail | SlotState::Error | SlotState::Offline => (s.detail.clone(), Style::default().fg(Color::Red)),
            SlotState::Idle => (s.detail.clone(), Style::default()),
        };
        let serial = if s.serial.is_empty() { String::new() } else if s.attempt > 1 { format!("{} #{}", s.serial, s.attempt) } else { s.serial.clone() };
        Row::new(vec![
            Cell::from(s.name.clone()).style(Style::default().add_modifier(Modifier::BOLD)),
            Cell::from(format!("{:^7}", s.state.word())).style(state_style(s.state)),
            Cell::from(serial),
            Cell::from(s.programmer.clone()),
            Cell::from(work).style(style),
        ])
    });
    let table = Table::new(rows, widths).header(header).column_spacing(1).block(Block::bordered().title(" Slots "));
    f.render_widget(table, area);
}

fn draw_help(f: &mut Frame, area: Rect) {
    let h = (KEYS.len() as u16 + 4).min(area.height);
    let w = area.width.saturating_sub(4).min(110);
    let r = area.centered(Constraint::Length(w), Constraint::Length(h));
    f.render_widget(Clear, r);
    let mut lines: Vec<Line> = KEYS.iter().map(|(k, what)| Line::from(vec![Span::styled(format!(" {k:<22}"), Style::default().add_modifier(Modifier::BOLD)), Span::raw(*what)])).collect();
    lines.push(Line::raw(""));
    lines.push(Line::styled(" A barcode scanner types into the input line like a keyboard; its Enter submits.", Style::default().fg(Color::DarkGray)));
    f.render_widget(Paragraph::new(lines).block(Block::bordered().title(" Keys (F1/Esc closes) ")), r);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_fills_in_eighths() {
        assert_eq!(bar(0, 0, 16), "");
        assert_eq!(bar(0, 10, 15), "░░░░░░░░░░   0%");
        assert_eq!(bar(10, 10, 15), "██████████ 100%");
        assert_eq!(bar(5, 10, 15), "█████░░░░░  50%");
        assert_eq!(bar(1, 4, 7), "▌░  25%");
        assert_eq!(bar(1, 16, 7), "▏░   6%");
    }
}
