//! Reports over the records: yield per group with failure Pareto, attempt-level CSV export,
//! and charts. Heavy lifting happens in SQL (the same text on SQLite and PostgreSQL); every
//! ratio is computed in Rust from integer counts, so both backends print identical figures.
//!
//! | file | what lives there |
//! |---|---|
//! | `mod.rs` | [`Filters`], [`GroupBy`], [`ReportError`], the shared WHERE clause |
//! | [`yields`] | `report yield`: the figures and their definitions |
//! | [`serials`] | `report serials`: the serial-number pool, number by number |
//! | [`units`] | `report units`: RFC 4180 CSV, formula-injection neutralised |
//! | [`render`] | table / CSV / JSON renderings of a yield report |
//! | [`html`] | self-contained HTML page and SVG charts (yield per day, failure Pareto) |
//! | [`synth`] | synthetic production history for benchmarks |

use chrono::NaiveDate;
use serde::Serialize;

use crate::db::DbError;

pub mod html;
pub mod render;
pub mod serials;
pub mod synth;
pub mod units;
pub mod yields;

pub use units::{export_units, neutralise, UNIT_COLUMNS};
pub use yields::{yield_report, ParetoEntry, YieldReport, YieldRow};

/// A report error: the database, or the file being written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Which attempts a report looks at. All conditions must hold; `None` means no condition.
/// Attempts still `running` are never counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Filters {
    /// Only attempts of recipes with this SKU.
    pub sku: Option<String>,
    /// Only attempts made at this station.
    pub station: Option<String>,
    /// Only attempts started on or after this UTC day.
    pub since: Option<NaiveDate>,
    /// Only attempts started on or before this UTC day (inclusive).
    pub until: Option<NaiveDate>,
}

/// How a yield report is split into groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// One group: everything selected.
    #[default]
    None,
    /// UTC day the attempt started (`2025-06-01`).
    Day,
    /// The recipe's SKU.
    Sku,
    /// Station name.
    Station,
    /// `station/slot` (slot names repeat across stations).
    Slot,
    /// `kind identity` of the programmer.
    Programmer,
}

impl GroupBy {
    /// Parse `day|sku|station|slot|programmer|none`.
    pub fn parse(s: &str) -> Option<GroupBy> {
        Some(match s {
            "none" | "all" => GroupBy::None,
            "day" => GroupBy::Day,
            "sku" => GroupBy::Sku,
            "station" => GroupBy::Station,
            "slot" => GroupBy::Slot,
            "programmer" => GroupBy::Programmer,
            _ => return None,
        })
    }

    /// The name used in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::None => "all",
            GroupBy::Day => "day",
            GroupBy::Sku => "sku",
            GroupBy::Station => "station",
            GroupBy::Slot => "slot",
            GroupBy::Programmer => "programmer",
        }
    }

    /// SQL for the group key over `attempts a`, and the joins it needs.
    pub(crate) fn key_sql(self) -> (&'static str, &'static str) {
        match self {
            GroupBy::None => ("'all'", ""),
            GroupBy::Day => ("substr(a.started_at, 1, 10)", ""),
            GroupBy::Sku => ("r.sku", " JOIN recipes r ON r.id = a.recipe_id"),
            GroupBy::Station => ("s.name", " JOIN stations s ON s.id = a.station_id"),
            GroupBy::Slot => ("s.name || '/' || a.slot", " JOIN stations s ON s.id = a.station_id"),
            GroupBy::Programmer => ("p.kind || ' ' || p.identity", " JOIN programmers p ON p.id = a.programmer_id"),
        }
    }
}

/// The WHERE conditions (after `WHERE a.result <> 'running'`) for `filters`, with `$n`
/// placeholders numbered from 1, and the values to bind in order.
pub(crate) fn filter_sql(f: &Filters) -> (String, Vec<String>) {
    let mut sql = String::new();
    let mut binds = Vec::new();
    if let Some(sku) = &f.sku {
        binds.push(sku.clone());
        sql += &format!(" AND a.recipe_id IN (SELECT id FROM recipes WHERE sku = ${})", binds.len());
    }
    if let Some(st) = &f.station {
        binds.push(st.clone());
        sql += &format!(" AND a.station_id IN (SELECT id FROM stations WHERE name = ${})", binds.len());
    }
    if let Some(d) = f.since {
        binds.push(format!("{}T00:00:00.000Z", d.format("%Y-%m-%d")));
        sql += &format!(" AND a.started_at >= ${}", binds.len());
    }
    if let Some(d) = f.until {
        // Inclusive day: everything before the next midnight.
        let next = d.succ_opt().unwrap_or(d);
        binds.push(format!("{}T00:00:00.000Z", next.format("%Y-%m-%d")));
        sql += &format!(" AND a.started_at < ${}", binds.len());
    }
    (sql, binds)
}

/// Parse a `--since`/`--until` day (`YYYY-MM-DD`).
pub fn parse_day(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| format!("'{s}' is not a day: write YYYY-MM-DD (UTC), e.g. 2025-06-01"))
}
