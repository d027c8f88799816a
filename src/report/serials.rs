//! `report serials`: the serial-number pool as a quality engineer audits it — every number
//! handed out, its state (`used`, `void`, `reserved`, `free`), the attempt and unit that own it,
//! and when it last changed. See the README ("Serial numbers") for what `void` means.

use serde::Serialize;

use crate::db::SerialRow;
use crate::text::shown;

use super::units::neutralise;

/// How many numbers are in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolCounts {
    pub used: u64,
    pub void: u64,
    pub reserved: u64,
    pub free: u64,
}

pub fn counts(rows: &[SerialRow]) -> PoolCounts {
    let mut c = PoolCounts::default();
    for r in rows {
        match r.state.as_str() {
            "used" => c.used += 1,
            "void" => c.void += 1,
            "reserved" => c.reserved += 1,
            _ => c.free += 1,
        }
    }
    c
}

/// A fixed-width table with a count line at the end; untrusted text escaped.
pub fn table(rows: &[SerialRow]) -> String {
    let mut out = format!("{:<16} {:>10}  {:<8} {:>9}  {:<24} {:<11} {}\n", "SKU", "NUMBER", "STATE", "ATTEMPT", "UNIT", "RESULT", "UPDATED");
    for r in rows {
        out.push_str(&format!(
            "{:<16} {:>10}  {:<8} {:>9}  {:<24} {:<11} {}\n",
            shown(&r.sku),
            r.number,
            r.state,
            r.attempt_id.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            r.unit.as_deref().map(shown).unwrap_or("-".into()),
            r.attempt_result.as_deref().unwrap_or("-"),
            r.updated_at
        ));
    }
    let c = counts(rows);
    out.push_str(&format!("{} numbers: {} used, {} void, {} reserved, {} free\n", rows.len(), c.used, c.void, c.reserved, c.free));
    out
}

/// RFC 4180 CSV, formula cells neutralised.
pub fn csv(rows: &[SerialRow]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["sku", "number", "state", "attempt_id", "unit_serial", "attempt_result", "updated_at"])?;
    for r in rows {
        w.write_record([
            neutralise(&r.sku).as_ref(),
            &r.number.to_string(),
            &r.state,
            &r.attempt_id.map(|a| a.to_string()).unwrap_or_default(),
            neutralise(r.unit.as_deref().unwrap_or("")).as_ref(),
            r.attempt_result.as_deref().unwrap_or(""),
            &r.updated_at,
        ])?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `{"counts": {...}, "numbers": [...]}`.
pub fn json(rows: &[SerialRow]) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        counts: PoolCounts,
        numbers: &'a [SerialRow],
    }
    serde_json::to_string_pretty(&Out { counts: counts(rows), numbers: rows }).unwrap_or_default() + "\n"
}
