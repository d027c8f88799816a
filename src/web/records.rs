//! What the dashboard reads from the records: today's figures and charts (through
//! [`crate::report`], so the dashboard and `flashline report` never disagree), and for
//! `flashline serve` the whole view rebuilt from the database.

use chrono::{Duration, NaiveDate, Utc};
use serde::Serialize;
use sqlx::Row;

use super::model::{Model, Recent, Refused, Tile, TotalsView, RECENT};
use crate::db::{with_pool, Ctx, Db};
use crate::error::FailureClass;
use crate::report::{self, filter_sql, Filters, GroupBy, ReportError, YieldRow};
use crate::station::Totals;

/// Today's figures for the page (UTC day, like every report).
#[derive(Debug, Clone, Serialize)]
pub struct Today {
    pub day: String,
    #[serde(flatten)]
    pub row: YieldRow,
}

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn filters(station: Option<&str>, since: NaiveDate) -> Filters {
    Filters { station: station.map(str::to_string), since: Some(since), until: Some(today()), ..Default::default() }
}

/// Today's yield and failure Pareto at `station` (all stations when `None`).
pub async fn today_figures(db: &Db, station: Option<&str>) -> Result<Today, ReportError> {
    let rep = report::yield_report(db, &filters(station, today()), GroupBy::None).await?;
    Ok(Today { day: today().format("%Y-%m-%d").to_string(), row: rep.total })
}

/// The charts (SVG from [`crate::report::html`]): yield per day over the last seven days, and
/// today's failure Pareto.
pub async fn charts(db: &Db, station: Option<&str>) -> Result<String, ReportError> {
    let week = report::yield_report(db, &filters(station, today() - Duration::days(6)), GroupBy::Day).await?;
    let day = report::yield_report(db, &filters(station, today()), GroupBy::None).await?;
    Ok(report::html::charts_svg(&week, &day.total))
}

fn u(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok())
}

/// `HH:MM:SS` of a stored timestamp (UTC).
fn clock(ts: &str) -> String {
    ts.get(11..19).unwrap_or(ts).to_string()
}

/// The read-only view of `station` (or every station) rebuilt from the records: one tile per
/// slot that worked today (its latest attempt), today's totals, recent attempts and refused scans.
pub async fn records_model(db: &Db, station: Option<&str>) -> Result<Model, ReportError> {
    let f = filters(station, today());
    let (cond, binds) = filter_sql(&f);
    let tiles_sql = format!(
        "SELECT s.name AS station, a.slot, u.serial, a.attempt_no, a.result, a.failure_class, a.message, a.cycle_ms,
                p.kind || ' ' || p.identity AS programmer, r.sku, r.name AS recipe, a.operator
         FROM attempts a JOIN units u ON u.id = a.unit_id JOIN stations s ON s.id = a.station_id
              JOIN programmers p ON p.id = a.programmer_id JOIN recipes r ON r.id = a.recipe_id
         WHERE a.id IN (SELECT MAX(a.id) FROM attempts a WHERE 1 = 1{cond} GROUP BY a.station_id, a.slot)
         ORDER BY s.name, a.slot"
    );
    let counts_sql = format!("SELECT a.result, COUNT(*) AS n FROM attempts a WHERE 1 = 1{cond} GROUP BY a.result");
    let recent_sql = format!(
        "SELECT COALESCE(a.finished_at, a.started_at) AS at, s.name AS station, a.slot, u.serial, a.attempt_no, a.result,
                a.failure_class, a.message, a.cycle_ms
         FROM attempts a JOIN units u ON u.id = a.unit_id JOIN stations s ON s.id = a.station_id
         WHERE a.result <> 'running'{cond}
         ORDER BY a.id DESC LIMIT {RECENT}"
    );
    let mut rejected_sql = String::from(
        "SELECT r.at, s.name AS station, r.slot, r.raw, r.reason FROM rejected_scans r JOIN stations s ON s.id = r.station_id WHERE r.at >= $1",
    );
    let mut rejected_binds = vec![format!("{}T00:00:00.000Z", today().format("%Y-%m-%d"))];
    if let Some(st) = station {
        rejected_binds.push(st.to_string());
        rejected_sql += " AND s.name = $2";
    }
    let rejected_count_sql = rejected_sql.replacen("SELECT r.at, s.name AS station, r.slot, r.raw, r.reason", "SELECT COUNT(*) AS n", 1);
    rejected_sql += &format!(" ORDER BY r.id DESC LIMIT {RECENT}");

    let mut m = Model { mode: "records".into(), station: station.unwrap_or("").to_string(), ..Default::default() };
    let mut stations = std::collections::BTreeSet::new();
    let mut rows_tiles = Vec::new();
    let mut totals = Totals::default();
    with_pool!(db, |p| {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(tiles_sql));
        for b in &binds {
            q = q.bind(b.as_str());
        }
        for r in q.fetch_all(p).await.ctx("dashboard: slots")? {
            let st: String = r.try_get("station").ctx("dashboard: station")?;
            stations.insert(st.clone());
            let result: String = r.try_get("result").ctx("dashboard: result")?;
            let class: Option<String> = r.try_get("failure_class").ctx("dashboard: failure class")?;
            m.sku = r.try_get("sku").ctx("dashboard: sku")?;
            m.recipe = r.try_get("recipe").ctx("dashboard: recipe")?;
            m.operator = r.try_get("operator").ctx("dashboard: operator")?;
            let tile = Tile {
                slot: r.try_get("slot").ctx("dashboard: slot")?,
                state: if result == "running" { "busy".into() } else { result },
                serial: Some(r.try_get("serial").ctx("dashboard: serial")?),
                attempt: Some(r.try_get("attempt_no").ctx("dashboard: attempt")?),
                hint: class.as_deref().and_then(FailureClass::parse).map(|c| c.hint().to_string()),
                failure_class: class,
                message: r.try_get("message").ctx("dashboard: message")?,
                cycle_ms: u(r.try_get("cycle_ms").ctx("dashboard: cycle")?),
                programmer: Some(r.try_get("programmer").ctx("dashboard: programmer")?),
                ..Default::default()
            };
            rows_tiles.push((st, tile));
        }
        let many = stations.len() > 1;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(counts_sql));
        for b in &binds {
            q = q.bind(b.as_str());
        }
        for r in q.fetch_all(p).await.ctx("dashboard: counts")? {
            let result: String = r.try_get("result").ctx("dashboard: result")?;
            let n = u(Some(r.try_get("n").ctx("dashboard: count")?)).unwrap_or(0);
            match result.as_str() {
                "pass" => totals.passed += n,
                "fail" => totals.failed += n,
                "running" => continue,
                _ => totals.errors += n,
            }
            totals.attempts += n;
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(recent_sql));
        for b in &binds {
            q = q.bind(b.as_str());
        }
        let recent_rows = q.fetch_all(p).await.ctx("dashboard: recent attempts")?;
        for r in &recent_rows {
            let st: String = r.try_get("station").ctx("dashboard: station")?;
            let slot: String = r.try_get("slot").ctx("dashboard: slot")?;
            m.recent.push_back(Recent {
                at: clock(&r.try_get::<String, _>("at").ctx("dashboard: time")?),
                slot: if many { format!("{st}/{slot}") } else { slot },
                serial: r.try_get("serial").ctx("dashboard: serial")?,
                attempt: r.try_get("attempt_no").ctx("dashboard: attempt")?,
                result: r.try_get("result").ctx("dashboard: result")?,
                failure_class: r.try_get("failure_class").ctx("dashboard: failure class")?,
                message: r.try_get("message").ctx("dashboard: message")?,
                cycle_ms: u(r.try_get("cycle_ms").ctx("dashboard: cycle")?),
            });
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(rejected_sql));
        for b in &rejected_binds {
            q = q.bind(b.as_str());
        }
        for r in q.fetch_all(p).await.ctx("dashboard: refused scans")? {
            m.refused.push_back(Refused {
                at: clock(&r.try_get::<String, _>("at").ctx("dashboard: time")?),
                raw: r.try_get("raw").ctx("dashboard: raw scan")?,
                slot: r.try_get("slot").ctx("dashboard: slot")?,
                reason: r.try_get("reason").ctx("dashboard: reason")?,
            });
        }
        let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(rejected_count_sql));
        for b in &rejected_binds {
            q = q.bind(b.as_str());
        }
        totals.rejected_scans = u(Some(q.fetch_one(p).await.ctx("dashboard: refused scans")?)).unwrap_or(0);
    });
    let many = stations.len() > 1;
    if stations.len() == 1 && station.is_none() {
        m.station = stations.iter().next().cloned().unwrap_or_default();
    }
    m.tiles = rows_tiles.into_iter().map(|(st, mut t)| {
        if many {
            t.slot = format!("{st}/{}", t.slot);
        }
        t
    }).collect();
    let today = today_figures(db, station).await?;
    totals.units = today.row.units;
    totals.units_passed = today.row.final_pass;
    m.totals = TotalsView::from(totals);
    Ok(m)
}
