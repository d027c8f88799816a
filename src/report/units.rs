//! `report units`: one CSV row per attempt, stable column names, RFC 4180 (the `csv` crate),
//! UTC ISO 8601 timestamps, and no cell a spreadsheet would execute.

use std::io::Write;

use futures::TryStreamExt;
use sqlx::Row;

use super::{filter_sql, Filters, ReportError};
use crate::db::{with_pool, Ctx, Db};

/// The columns of `report units`, in order. Stable: scripts and spreadsheets key on them.
pub const UNIT_COLUMNS: &[&str] = &[
    "serial",
    "sku",
    "recipe",
    "recipe_sha256",
    "image_sha256",
    "station",
    "slot",
    "programmer",
    "operator",
    "attempt",
    "started_at",
    "finished_at",
    "result",
    "failure_class",
    "message",
    "signature",
    "fuses_before",
    "fuses_after",
    "lock_before",
    "lock_after",
    "bytes_written",
    "cycle_ms",
    "serial_number",
];

const UNITS_SQL: &str = "
SELECT u.serial, r.sku, r.name AS recipe, r.sha256 AS recipe_sha256, a.image_sha256,
       s.name AS station, a.slot, p.kind || ' ' || p.identity AS programmer, a.operator,
       a.attempt_no, a.started_at, a.finished_at, a.result, a.failure_class, a.message,
       a.signature, a.fuses_before, a.fuses_after, a.lock_before, a.lock_after,
       a.bytes_written, a.cycle_ms, a.serial_number
FROM attempts a
JOIN units u ON u.id = a.unit_id
JOIN recipes r ON r.id = a.recipe_id
JOIN stations s ON s.id = a.station_id
JOIN programmers p ON p.id = a.programmer_id
WHERE a.result <> 'running'";

/// Make a cell safe to open in a spreadsheet: text starting with `=`, `+`, `-`, `@`, tab or
/// carriage return would be run as a formula (barcodes and messages come from outside), so it
/// gets a leading `'`, which spreadsheets show as plain text. Anything else is unchanged.
pub fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

fn opt_int(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// Write the selected attempts (oldest first) as CSV with a header row of [`UNIT_COLUMNS`];
/// returns how many rows were written. Rows are streamed, not collected.
pub async fn export_units<W: Write>(db: &Db, filters: &Filters, out: W) -> Result<u64, ReportError> {
    let (cond, binds) = filter_sql(filters);
    let sql = format!("{UNITS_SQL}{cond} ORDER BY a.started_at, a.id");
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(out);
    w.write_record(UNIT_COLUMNS)?;
    let mut n = 0u64;
    with_pool!(db, |p| {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for b in &binds {
            q = q.bind(b.as_str());
        }
        let mut rows = q.fetch(p);
        while let Some(r) = rows.try_next().await.ctx("unit export")? {
            let text = |c: &str| -> Result<String, ReportError> {
                let v: Option<String> = r.try_get(c).ctx("unit export: column")?;
                Ok(neutralise(&v.unwrap_or_default()).into_owned())
            };
            let int = |c: &str| -> Result<String, ReportError> {
                let v: Option<i64> = r.try_get(c).ctx("unit export: column")?;
                Ok(opt_int(v))
            };
            let record = [
                text("serial")?,
                text("sku")?,
                text("recipe")?,
                text("recipe_sha256")?,
                text("image_sha256")?,
                text("station")?,
                text("slot")?,
                text("programmer")?,
                text("operator")?,
                int("attempt_no")?,
                text("started_at")?,
                text("finished_at")?,
                text("result")?,
                text("failure_class")?,
                text("message")?,
                text("signature")?,
                text("fuses_before")?,
                text("fuses_after")?,
                text("lock_before")?,
                text("lock_after")?,
                int("bytes_written")?,
                int("cycle_ms")?,
                int("serial_number")?,
            ];
            w.write_record(&record)?;
            n += 1;
        }
    });
    w.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::neutralise;

    #[test]
    fn formula_cells_are_defused() {
        assert_eq!(neutralise("=HYPERLINK(\"http://x\",\"y\")"), "'=HYPERLINK(\"http://x\",\"y\")");
        for bad in ["+1", "-1+2", "@SUM(A1)", "\tx", "\rx"] {
            assert!(neutralise(bad).starts_with('\''), "{bad:?}");
        }
        assert_eq!(neutralise("KB-0001"), "KB-0001");
        assert_eq!(neutralise(""), "");
        assert_eq!(neutralise("2025-06-01T08:00:00.000Z"), "2025-06-01T08:00:00.000Z");
    }
}
