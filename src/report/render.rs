//! Renderings of a [`YieldReport`]: an aligned text table for people, CSV for spreadsheets,
//! JSON for scripts. Percentages print with one decimal, cycle times in milliseconds.

use std::fmt::Write as _;

use super::units::neutralise;
use super::{ReportError, YieldReport, YieldRow};

/// `97.5%`, or `-` when there is nothing to divide.
pub fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}%", v * 100.0)).unwrap_or_else(|| "-".into())
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

fn ms_int(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// The Pareto of a row as `class:count` pairs separated by `;`.
fn pareto_cell(r: &YieldRow) -> String {
    r.pareto.iter().map(|p| format!("{}:{}", p.class, p.count)).collect::<Vec<_>>().join(";")
}

/// Describe the filters in one line (empty if none).
pub fn describe_filters(rep: &YieldReport) -> String {
    let f = &rep.filters;
    let mut parts = Vec::new();
    if let Some(s) = &f.sku {
        parts.push(format!("sku {s}"));
    }
    if let Some(s) = &f.station {
        parts.push(format!("station {s}"));
    }
    if let Some(d) = f.since {
        parts.push(format!("since {d}"));
    }
    if let Some(d) = f.until {
        parts.push(format!("until {d}"));
    }
    parts.join(", ")
}

/// Aligned text table, one line per group, a total line, then the failure Pareto.
pub fn table(rep: &YieldReport) -> String {
    let header = [
        if rep.by == super::GroupBy::None { "selection" } else { rep.by.as_str() },
        "units",
        "attempts",
        "first-pass",
        "final",
        "retests",
        "failing",
        "mean ms",
        "p95 ms",
    ];
    let line = |r: &YieldRow| -> Vec<String> {
        vec![
            r.key.clone(),
            r.units.to_string(),
            r.attempts.to_string(),
            pct(r.first_pass_yield),
            pct(r.final_yield),
            r.retests.to_string(),
            r.still_failing.to_string(),
            ms(r.mean_cycle_ms),
            ms_int(r.p95_cycle_ms),
        ]
    };
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    rows.extend(rep.groups.iter().map(line));
    let grouped = rep.by != super::GroupBy::None;
    if grouped {
        let mut t = line(&rep.total);
        t[0] = "TOTAL".into();
        rows.push(t);
    }
    let widths: Vec<usize> = (0..header.len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    let filters = describe_filters(rep);
    if !filters.is_empty() {
        let _ = writeln!(out, "filters: {filters}");
    }
    for (i, r) in rows.iter().enumerate() {
        if grouped && i == rows.len() - 1 {
            let _ = writeln!(out, "{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
        }
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, v)| if c == 0 { format!("{v:<w$}", w = widths[c]) } else { format!("{v:>w$}", w = widths[c]) })
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    let _ = writeln!(out);
    if rep.total.failures == 0 {
        let _ = writeln!(out, "failure Pareto: no failures");
        return out;
    }
    let _ = writeln!(out, "failure Pareto ({} non-passing attempts):", rep.total.failures);
    let cw = rep.total.pareto.iter().map(|p| p.class.len()).max().unwrap_or(0);
    let mut cum = 0.0;
    for p in &rep.total.pareto {
        let share = p.share;
        cum += share;
        let _ = writeln!(out, "  {:<cw$}  {:>7}  {:>6}  (cumulative {})", p.class, p.count, pct(Some(share)), pct(Some(cum)));
    }
    if grouped {
        for g in &rep.groups {
            if g.failures > 0 {
                let list: Vec<String> = g.pareto.iter().map(|p| format!("{} {} ({})", p.class, p.count, pct(Some(p.share)))).collect();
                let _ = writeln!(out, "  {}: {}", g.key, list.join(", "));
            }
        }
    }
    out
}

/// Column names of [`csv`].
pub const YIELD_COLUMNS: &[&str] = &[
    "group_by",
    "group",
    "units",
    "attempts",
    "first_pass",
    "first_pass_yield",
    "final_pass",
    "final_yield",
    "retests",
    "still_failing",
    "mean_cycle_ms",
    "p95_cycle_ms",
    "failures",
    "failure_pareto",
];

/// RFC 4180 CSV: one row per group, then a `TOTAL` row when grouped. Yields are fractions
/// with six decimals; the Pareto column lists `class:count` pairs separated by `;`.
pub fn csv(rep: &YieldReport) -> Result<String, ReportError> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    w.write_record(YIELD_COLUMNS)?;
    let frac = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    let mut rows: Vec<(&str, &YieldRow)> = rep.groups.iter().map(|g| (g.key.as_str(), g)).collect();
    if rep.by != super::GroupBy::None {
        rows.push(("TOTAL", &rep.total));
    }
    for (key, r) in rows {
        w.write_record([
            rep.by.as_str().to_string(),
            neutralise(key).into_owned(),
            r.units.to_string(),
            r.attempts.to_string(),
            r.first_pass.to_string(),
            frac(r.first_pass_yield),
            r.final_pass.to_string(),
            frac(r.final_yield),
            r.retests.to_string(),
            r.still_failing.to_string(),
            r.mean_cycle_ms.map(|v| format!("{v:.1}")).unwrap_or_default(),
            r.p95_cycle_ms.map(|v| v.to_string()).unwrap_or_default(),
            r.failures.to_string(),
            pareto_cell(r),
        ])?;
    }
    let bytes = w.into_inner().map_err(|e| ReportError::Io(e.into_error()))?;
    String::from_utf8(bytes).map_err(|e| ReportError::Invalid(e.to_string()))
}

/// Pretty JSON of the whole report (group_by, filters, groups, total).
pub fn json(rep: &YieldReport) -> Result<String, ReportError> {
    serde_json::to_string_pretty(rep).map_err(|e| ReportError::Invalid(e.to_string()))
}
