//! `report yield`: per group, units seen, attempts, first-pass and final yield, retests,
//! units still failing, mean and p95 cycle time, and the failure Pareto.
//!
//! Definitions (the README repeats them next to the command):
//! - Only finished attempts count (`running` rows are ignored); the filters pick attempts.
//! - Each group is computed from its own attempts alone, exactly as if the report had been run
//!   with a filter selecting that group; the total is the report without grouping. So a unit
//!   retested on a second day or station is a unit of both groups.
//! - A unit's *first* attempt is its lowest attempt number in the group (attempt numbers follow
//!   start order across all stations), its *last* the highest.
//! - **units** = distinct serials; **attempts** = attempt rows.
//! - **first-pass yield** = units whose first attempt passed / units.
//! - **final yield** = units whose last attempt passed / units.
//! - **retests** = attempts − units.  **still failing** = units whose last attempt did not pass.
//! - **cycle** over attempts with a recorded cycle time, whatever their result (attempts
//!   recovered as interrupted have none): mean = sum / count; p95 = nearest rank, the
//!   ⌈0.95·n⌉-th smallest.
//! - **failure Pareto**: attempts whose result is not `pass`, counted by failure class
//!   (`unclassified` when none), most frequent first (ties by name); share = count / those attempts.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use super::{filter_sql, Filters, GroupBy, ReportError};
use crate::db::{with_pool, Ctx, Db};

/// One failure class of a group's Pareto.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParetoEntry {
    /// [`crate::error::FailureClass::as_str`], or `unclassified`.
    pub class: String,
    /// Non-passing attempts of this class.
    pub count: u64,
    /// count / the group's non-passing attempts.
    pub share: f64,
}

/// The figures of one group (or of the whole selection).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct YieldRow {
    /// Group key (`2025-06-01`, `line1-st3`, `line1-st3/A1`…), `all` for the total.
    pub key: String,
    pub units: u64,
    pub attempts: u64,
    /// Units whose first attempt passed.
    pub first_pass: u64,
    /// Units whose last attempt passed.
    pub final_pass: u64,
    /// first_pass / units.
    pub first_pass_yield: Option<f64>,
    /// final_pass / units.
    pub final_yield: Option<f64>,
    /// attempts − units.
    pub retests: u64,
    /// units − final_pass.
    pub still_failing: u64,
    /// Attempts with a cycle time.
    pub cycle_count: u64,
    /// Sum of those cycle times.
    pub cycle_sum_ms: u64,
    /// cycle_sum_ms / cycle_count.
    pub mean_cycle_ms: Option<f64>,
    /// Nearest-rank 95th percentile of the cycle times.
    pub p95_cycle_ms: Option<u64>,
    /// Non-passing attempts.
    pub failures: u64,
    /// Failure classes, most frequent first.
    pub pareto: Vec<ParetoEntry>,
}

/// A yield report: the groups in key order and the total over the whole selection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct YieldReport {
    pub by: GroupBy,
    pub filters: Filters,
    pub groups: Vec<YieldRow>,
    pub total: YieldRow,
}

#[derive(Default)]
struct Acc {
    units: u64,
    attempts: u64,
    first_pass: u64,
    final_pass: u64,
    cycle_sum: u64,
    cycle_n: u64,
    hist: Vec<(u64, u64)>,
    pareto: Vec<ParetoEntry>,
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Nearest-rank percentile over a (value, count) histogram sorted by value.
fn nearest_rank(hist: &[(u64, u64)], pct: u64) -> Option<u64> {
    let n: u64 = hist.iter().map(|h| h.1).sum();
    if n == 0 {
        return None;
    }
    let rank = (pct * n).div_ceil(100).max(1);
    let mut cum = 0;
    for &(v, c) in hist {
        cum += c;
        if cum >= rank {
            return Some(v);
        }
    }
    hist.last().map(|h| h.0)
}

fn finish(key: String, mut a: Acc) -> YieldRow {
    a.pareto.sort_by(|x, y| y.count.cmp(&x.count).then_with(|| x.class.cmp(&y.class)));
    let failures: u64 = a.pareto.iter().map(|p| p.count).sum();
    for p in &mut a.pareto {
        p.share = p.count as f64 / failures as f64;
    }
    a.hist.sort_unstable();
    let ratio = |num: u64, den: u64| (den > 0).then(|| num as f64 / den as f64);
    YieldRow {
        key,
        units: a.units,
        attempts: a.attempts,
        first_pass: a.first_pass,
        final_pass: a.final_pass,
        first_pass_yield: ratio(a.first_pass, a.units),
        final_yield: ratio(a.final_pass, a.units),
        retests: a.attempts.saturating_sub(a.units),
        still_failing: a.units.saturating_sub(a.final_pass),
        cycle_count: a.cycle_n,
        cycle_sum_ms: a.cycle_sum,
        mean_cycle_ms: ratio(a.cycle_sum, a.cycle_n),
        p95_cycle_ms: nearest_rank(&a.hist, 95),
        failures,
        pareto: a.pareto,
    }
}

/// Compute the groups for one grouping (three aggregate scans over the selected attempts).
async fn groups(db: &Db, f: &Filters, by: GroupBy) -> Result<BTreeMap<String, Acc>, ReportError> {
    let (key, joins) = by.key_sql();
    let (cond, binds) = filter_sql(f);
    // Per unit: attempts, and its first and last attempt encoded as attempt_no*2 + passed, so
    // one MIN and one MAX give both the order and the result.
    let code = "a.attempt_no * 2 + CASE WHEN a.result = 'pass' THEN 1 ELSE 0 END";

    // Plans. Unfiltered and ungrouped, the per-unit pass streams from the covering index
    // attempts_unit_cover in unit order and the histogram from attempts_cycle: index-only, no
    // sort. Otherwise SQLite would still walk those indexes to save a sort, looking up every
    // row in the table to test the filter or read the key — random reads that cost more than
    // scanning the table and sorting (1.2 s against 0.5 s for a million rows). A unary `+`
    // makes the grouping term an expression, which no index can order, so SQLite scans (or
    // uses the started_at index for a date filter) and sorts. PostgreSQL reads `+x` as x.
    let narrowed = by != GroupBy::None || !cond.is_empty();
    let (unit_term, cycle_term) = if narrowed { ("+a.unit_id", "+a.cycle_ms") } else { ("a.unit_id", "a.cycle_ms") };
    let (inner_key, inner_group, outer_key, outer_group) = if by == GroupBy::None {
        ("", unit_term.to_string(), "'all' AS k", "")
    } else {
        (&*format!("{key} AS k, "), format!("1, {unit_term}"), "k", " GROUP BY k")
    };
    let units_sql = format!(
        "WITH pu AS (
             SELECT {inner_key}COUNT(*) AS n, MIN({code}) AS f, MAX({code}) AS l,
                    SUM(a.cycle_ms) AS cs, COUNT(a.cycle_ms) AS cn
             FROM attempts a{joins}
             WHERE a.result <> 'running'{cond}
             GROUP BY {inner_group})
         SELECT {outer_key}, COUNT(*) AS units, CAST(COALESCE(SUM(n), 0) AS BIGINT) AS attempts,
                CAST(COALESCE(SUM(f % 2), 0) AS BIGINT) AS first_pass,
                CAST(COALESCE(SUM(l % 2), 0) AS BIGINT) AS final_pass,
                CAST(COALESCE(SUM(cs), 0) AS BIGINT) AS cycle_sum,
                CAST(COALESCE(SUM(cn), 0) AS BIGINT) AS cycle_n
         FROM pu{outer_group}"
    );
    // Only finished attempts carry a cycle time, so `cycle_ms IS NOT NULL` selects finished
    // ones.
    let (sel_key, hist_group, pareto_group) =
        if by == GroupBy::None { ("'all'", "2", "2") } else { (key, "1, 2", "1, 2") };
    let hist_sql = format!(
        "SELECT {sel_key} AS k, {cycle_term} AS c, COUNT(*) AS n
         FROM attempts a{joins}
         WHERE a.cycle_ms IS NOT NULL{cond}
         GROUP BY {hist_group}"
    );
    // Same condition as the partial index attempts_failures.
    let pareto_sql = format!(
        "SELECT {sel_key} AS k, COALESCE(a.failure_class, 'unclassified') AS fc, COUNT(*) AS n
         FROM attempts a{joins}
         WHERE a.result <> 'pass' AND a.result <> 'running'{cond}
         GROUP BY {pareto_group}"
    );
    // The three scans are independent: run them at once on separate pooled connections
    // (each sorts on its own core when grouped).
    let out = with_pool!(db, |p| {
        let bound = |sql: String| {
            let binds = binds.clone();
            async move {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for b in binds {
                    q = q.bind(b);
                }
                q.fetch_all(p).await
            }
        };
        let units = async { bound(units_sql).await.ctx("yield report: units") };
        let hist = async { bound(hist_sql).await.ctx("yield report: cycle times") };
        let pareto = async { bound(pareto_sql).await.ctx("yield report: failure classes") };
        let (urows, hrows, prows) = tokio::try_join!(units, hist, pareto)?;
        let mut out: BTreeMap<String, Acc> = BTreeMap::new();
        for r in &urows {
            let k: String = r.try_get("k").ctx("yield report: group key")?;
            let acc = out.entry(k).or_default();
            acc.units = u(r.try_get("units").ctx("yield report: units")?);
            acc.attempts = u(r.try_get("attempts").ctx("yield report: attempts")?);
            acc.first_pass = u(r.try_get("first_pass").ctx("yield report: first pass")?);
            acc.final_pass = u(r.try_get("final_pass").ctx("yield report: final pass")?);
            acc.cycle_sum = u(r.try_get("cycle_sum").ctx("yield report: cycle sum")?);
            acc.cycle_n = u(r.try_get("cycle_n").ctx("yield report: cycle count")?);
        }
        for r in &hrows {
            let k: String = r.try_get("k").ctx("yield report: group key")?;
            let c: i64 = r.try_get("c").ctx("yield report: cycle")?;
            let n: i64 = r.try_get("n").ctx("yield report: cycle count")?;
            out.entry(k).or_default().hist.push((u(c), u(n)));
        }
        for r in &prows {
            let k: String = r.try_get("k").ctx("yield report: group key")?;
            let class: String = r.try_get("fc").ctx("yield report: failure class")?;
            let n: i64 = r.try_get("n").ctx("yield report: failure count")?;
            out.entry(k).or_default().pareto.push(ParetoEntry { class, count: u(n), share: 0.0 });
        }
        out
    });
    Ok(out)
}

/// Compute a yield report (see the module documentation for the definitions).
pub async fn yield_report(db: &Db, filters: &Filters, by: GroupBy) -> Result<YieldReport, ReportError> {
    if let (Some(s), Some(u)) = (filters.since, filters.until) {
        if s > u {
            return Err(ReportError::Invalid(format!("--since {s} is after --until {u}: nothing can match")));
        }
    }
    // The total and the groups are independent queries: run them at once.
    let (mut total, grouped) = if by == GroupBy::None {
        (groups(db, filters, GroupBy::None).await?, None)
    } else {
        let (t, g) = tokio::try_join!(groups(db, filters, GroupBy::None), groups(db, filters, by))?;
        (t, Some(g))
    };
    let total = finish("all".into(), total.remove("all").unwrap_or_default());
    let groups = match grouped {
        None => vec![total.clone()],
        Some(g) => g.into_iter().map(|(k, a)| finish(k, a)).collect(),
    };
    Ok(YieldReport { by, filters: filters.clone(), groups, total })
}

#[cfg(test)]
mod tests {
    use super::nearest_rank;

    #[test]
    fn p95_is_the_nearest_rank() {
        // 20 values 1..=20: rank ceil(19) = 19.
        let h: Vec<(u64, u64)> = (1..=20).map(|v| (v, 1)).collect();
        assert_eq!(nearest_rank(&h, 95), Some(19));
        // 10 values: rank ceil(9.5) = 10 → the maximum.
        let h: Vec<(u64, u64)> = (1..=10).map(|v| (v * 100, 1)).collect();
        assert_eq!(nearest_rank(&h, 95), Some(1000));
        assert_eq!(nearest_rank(&[(7, 1)], 95), Some(7));
        assert_eq!(nearest_rank(&[(5, 95), (9, 5)], 95), Some(5));
        assert_eq!(nearest_rank(&[(5, 94), (9, 6)], 95), Some(9));
        assert_eq!(nearest_rank(&[], 95), None);
    }
}
