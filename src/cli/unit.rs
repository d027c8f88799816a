//! `flashline unit SERIAL`: a unit's full history, every attempt and every step.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use flashline::db::{format_ts, UnitHistory};

use super::report::{runtime, DbArg};

#[derive(Args)]
pub struct UnitArgs {
    /// The unit's serial (as scanned).
    pub serial: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub db: DbArg,
}

pub fn run(a: UnitArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let db = a.db.open_existing().await?;
        let h = db.unit_history(&a.serial).await?;
        db.close().await;
        let Some(h) = h else {
            eprintln!("unit {}: no attempt recorded in {}", flashline::text::shown(&a.serial), db.target());
            return Ok(ExitCode::from(1));
        };
        if a.json {
            println!("{}", serde_json::to_string_pretty(&h)?);
        } else {
            print!("{}", super::shown_lines(&text(&h)));
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn or_dash(v: &Option<String>) -> &str {
    v.as_deref().filter(|s| !s.is_empty()).unwrap_or("-")
}

/// The history as text for a person at the line.
pub fn text(h: &UnitHistory) -> String {
    let mut o = String::new();
    let latest = h.latest_result().map(|r| r.as_str().to_uppercase()).unwrap_or_else(|| "-".into());
    let _ = writeln!(
        o,
        "unit {}: {} attempt{}, first seen {}, latest {}",
        h.serial,
        h.attempts.len(),
        if h.attempts.len() == 1 { "" } else { "s" },
        format_ts(h.first_seen_at),
        latest
    );
    for a in &h.attempts {
        let _ = writeln!(o);
        let verdict = match &a.failure_class {
            Some(c) if !c.is_empty() => format!("{} ({c})", a.result.as_str().to_uppercase()),
            _ => a.result.as_str().to_uppercase(),
        };
        let _ = writeln!(
            o,
            "#{} {}  {}/{}  {} {}  {}",
            a.attempt_no,
            format_ts(a.started_at),
            a.station,
            a.slot,
            a.programmer_kind,
            a.programmer_identity,
            verdict
        );
        let _ = writeln!(
            o,
            "   recipe {} ({}) sha256 {}  image sha256 {}",
            a.recipe,
            a.sku,
            a.recipe_sha256,
            a.image_sha256
        );
        let _ = writeln!(
            o,
            "   operator {}  finished {}  cycle {}  bytes written {}",
            if a.operator.is_empty() { "-" } else { &a.operator },
            a.finished_at.map(format_ts).unwrap_or_else(|| "-".into()),
            a.cycle_ms.map(|v| format!("{v} ms")).unwrap_or_else(|| "-".into()),
            a.bytes_written.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
        );
        let _ = writeln!(
            o,
            "   signature {}  fuses {} -> {}  lock {} -> {}{}",
            or_dash(&a.signature),
            or_dash(&a.fuses_before),
            or_dash(&a.fuses_after),
            or_dash(&a.lock_before),
            or_dash(&a.lock_after),
            a.serial_number.map(|n| format!("  serial number {n}")).unwrap_or_default()
        );
        if let Some(m) = a.message.as_deref().filter(|m| !m.is_empty()) {
            let _ = writeln!(o, "   message: {m}");
        }
        let w = a.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for s in &a.steps {
            let _ = writeln!(
                o,
                "     {:<w$}  {:>7} ms  {}{}",
                s.name,
                s.ms,
                if s.ok { "ok" } else { "FAILED" },
                if s.detail.is_empty() { String::new() } else { format!("  {}", s.detail) }
            );
        }
    }
    o
}
