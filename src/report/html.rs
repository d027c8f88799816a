//! Pictures of a yield report: first-pass and final yield per day, and the failure Pareto,
//! as inline SVG; a self-contained HTML page (no scripts, no fonts, no network).

use std::fmt::Write as _;

use super::render::{describe_filters, pct};
use super::{GroupBy, YieldReport, YieldRow};

/// Escape text for XML/HTML content and attributes.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if c.is_control() && c != '\n' => o.push('\u{FFFD}'),
            c => o.push(c),
        }
    }
    o
}

const FPY_COLOR: &str = "#7aa6d8";
const FINAL_COLOR: &str = "#2a6f3b";
const FAIL_COLOR: &str = "#c0392b";

/// Grouped bar chart: first-pass and final yield for each day of `by_day` (a report grouped by
/// day). `x`/`y` place it inside a larger SVG; width 720, height 300.
fn yield_chart(out: &mut String, by_day: &YieldReport, x: f64, y: f64) {
    let (w, h) = (720.0, 300.0);
    let (left, right, top, bottom) = (50.0, 10.0, 30.0, 60.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let _ = write!(out, r#"<g transform="translate({x},{y})" font-family="sans-serif" font-size="11">"#);
    let _ = write!(out, r#"<text x="{left}" y="16" font-size="14" font-weight="bold">Yield per day (UTC)</text>"#);
    for i in 0..=4 {
        let v = i as f64 * 25.0;
        let yy = top + ph - ph * v / 100.0;
        let _ = write!(
            out,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v}%</text>"##,
            left + pw,
            left - 4.0,
            yy + 4.0
        );
    }
    let days = &by_day.groups;
    if days.is_empty() {
        let _ = write!(out, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">no attempts</text>"#, left + pw / 2.0, top + ph / 2.0);
    }
    let slot = if days.is_empty() { pw } else { pw / days.len() as f64 };
    let bw = (slot * 0.35).min(28.0);
    let label_every = days.len().div_ceil(12).max(1);
    for (i, d) in days.iter().enumerate() {
        let cx = left + slot * (i as f64 + 0.5);
        for (j, (v, color, name)) in
            [(d.first_pass_yield, FPY_COLOR, "first-pass"), (d.final_yield, FINAL_COLOR, "final")].into_iter().enumerate()
        {
            let v = v.unwrap_or(0.0);
            let bh = ph * v;
            let bx = cx - bw + j as f64 * bw;
            let _ = write!(
                out,
                r#"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{color}"><title>{} {name} yield {} ({} units)</title></rect>"#,
                top + ph - bh,
                bw - 1.0,
                esc(&d.key),
                pct(Some(v)),
                d.units
            );
        }
        // Label every day while they fit; beyond a dozen days, every n-th as MM-DD.
        if i % label_every == 0 {
            let label = if days.len() > 12 { d.key.get(5..).unwrap_or(&d.key) } else { &d.key };
            let _ = write!(out, r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, top + ph + 14.0, esc(label));
            if days.len() <= 12 {
                let _ = write!(
                    out,
                    r##"<text x="{cx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{} u</text>"##,
                    top + ph + 27.0,
                    d.units
                );
            }
        }
    }
    let ly = h - 12.0;
    let _ = write!(
        out,
        r#"<rect x="{left}" y="{:.1}" width="10" height="10" fill="{FPY_COLOR}"/><text x="{:.1}" y="{ly:.1}">first-pass yield</text><rect x="{:.1}" y="{:.1}" width="10" height="10" fill="{FINAL_COLOR}"/><text x="{:.1}" y="{ly:.1}">final yield</text></g>"#,
        ly - 9.0,
        left + 14.0,
        left + 130.0,
        ly - 9.0,
        left + 144.0
    );
}

/// Pareto chart of `row`'s failure classes: bars by count, cumulative share as a line.
fn pareto_chart(out: &mut String, row: &YieldRow, x: f64, y: f64) {
    let (w, h) = (720.0, 300.0);
    let (left, right, top, bottom) = (50.0, 50.0, 30.0, 70.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let _ = write!(out, r#"<g transform="translate({x},{y})" font-family="sans-serif" font-size="11">"#);
    let _ = write!(
        out,
        r#"<text x="{left}" y="16" font-size="14" font-weight="bold">Failure Pareto ({} non-passing attempts)</text>"#,
        row.failures
    );
    // Axis top rounded up to a multiple of 4 so the five count ticks are distinct integers.
    let max = (row.pareto.first().map(|p| p.count).unwrap_or(0).max(1).div_ceil(4) * 4) as f64;
    let _ = write!(out, r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999"/>"##, top + ph, left + pw, top + ph);
    for i in 0..=4 {
        let yy = top + ph - ph * i as f64 / 4.0;
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><text x="{:.1}" y="{:.1}">{}%</text>"##,
            left - 4.0,
            yy + 4.0,
            (max as u64) * i / 4,
            left + pw + 4.0,
            yy + 4.0,
            i * 25
        );
    }
    if row.pareto.is_empty() {
        let _ = write!(out, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">no failures</text></g>"#, left + pw / 2.0, top + ph / 2.0);
        return;
    }
    let slot = pw / row.pareto.len() as f64;
    let bw = (slot * 0.7).min(60.0);
    let mut cum = 0.0;
    let mut points = Vec::new();
    for (i, p) in row.pareto.iter().enumerate() {
        let cx = left + slot * (i as f64 + 0.5);
        let bh = ph * p.count as f64 / max;
        cum += p.share;
        points.push(format!("{cx:.1},{:.1}", top + ph - ph * cum.min(1.0)));
        let _ = write!(
            out,
            r#"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{bh:.1}" fill="{FAIL_COLOR}"><title>{}: {} ({})</title></rect><text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate({cx:.1},{:.1}) rotate(30)" >{}</text>"#,
            cx - bw / 2.0,
            top + ph - bh,
            esc(&p.class),
            p.count,
            pct(Some(p.share)),
            top + ph - bh - 3.0,
            p.count,
            top + ph + 12.0,
            esc(&p.class)
        );
    }
    let _ = write!(out, r##"<polyline points="{}" fill="none" stroke="#333" stroke-width="1.5"/>"##, points.join(" "));
    for pt in &points {
        let (px, py) = pt.split_once(',').unwrap_or(("0", "0"));
        let _ = write!(out, r##"<circle cx="{px}" cy="{py}" r="2.5" fill="#333"/>"##);
    }
    out.push_str("</g>");
}

/// One SVG holding both charts (for `--chart FILE.svg`).
pub fn charts_svg(by_day: &YieldReport, total: &YieldRow) -> String {
    let mut s = String::new();
    s.push_str(r#"<svg xmlns="http://www.w3.org/2000/svg" width="720" height="620" viewBox="0 0 720 620">"#);
    s.push_str(r#"<rect width="720" height="620" fill="white"/>"#);
    yield_chart(&mut s, by_day, 0.0, 0.0);
    pareto_chart(&mut s, total, 0.0, 315.0);
    s.push_str("</svg>\n");
    s
}

/// A self-contained HTML page: the report table, the yield-per-day chart and the Pareto.
/// `by_day` is the same selection grouped by day (for the chart).
pub fn page(rep: &YieldReport, by_day: &YieldReport, generated: &str) -> String {
    let mut s = String::new();
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>flashline yield report</title>");
    s.push_str(
        "<style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse}\
         td,th{padding:3px 10px;white-space:nowrap;border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child{text-align:left}\
         tr.total td{font-weight:bold;border-top:2px solid #999}.note{color:#666;font-size:90%}</style></head><body>\n",
    );
    let _ = write!(s, "<h1>Yield report</h1><p class=\"note\">generated {}", esc(generated));
    let f = describe_filters(rep);
    if !f.is_empty() {
        let _ = write!(s, " — {}", esc(&f));
    }
    s.push_str("</p>\n<table><tr>");
    for h in [rep.by.as_str(), "units", "attempts", "first-pass yield", "final yield", "retests", "still failing", "mean cycle ms", "p95 cycle ms", "top failure"] {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr>\n");
    let mut rows: Vec<(&str, &YieldRow, bool)> = rep.groups.iter().map(|g| (g.key.as_str(), g, false)).collect();
    if rep.by != GroupBy::None {
        rows.push(("TOTAL", &rep.total, true));
    }
    for (key, r, total) in rows {
        let top = r.pareto.first().map(|p| format!("{} ({})", p.class, pct(Some(p.share)))).unwrap_or_default();
        let _ = writeln!(
            s,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if total { " class=\"total\"" } else { "" },
            esc(key),
            r.units,
            r.attempts,
            pct(r.first_pass_yield),
            pct(r.final_yield),
            r.retests,
            r.still_failing,
            r.mean_cycle_ms.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into()),
            r.p95_cycle_ms.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            esc(&top)
        );
    }
    s.push_str("</table>\n");
    s.push_str(
        "<p class=\"note\">first-pass yield = units whose first attempt passed / units; final yield = units whose last \
         attempt passed / units; retests = attempts − units; each group is computed from its own attempts. \
         See the README section “Reports” for every definition.</p>\n",
    );
    s.push_str(&charts_svg(by_day, &rep.total));
    s.push_str("</body></html>\n");
    s
}
