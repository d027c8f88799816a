//! A unit's full history: every attempt on every station, with its steps.

use std::collections::HashMap;

use sqlx::Row;

use chrono::{DateTime, Utc};

use super::{format_ts, parse_ts, with_pool, AttemptId, AttemptRecord, AttemptResult, Ctx, Db, DbError, Result, StepRecord, UnitHistory};

const ATTEMPTS_SQL: &str = "
SELECT a.id, a.attempt_no, r.name AS recipe, r.sku, r.sha256 AS recipe_sha256, a.image_sha256,
       s.name AS station, a.slot, p.kind AS programmer_kind, p.identity AS programmer_identity,
       a.operator, a.result, a.failure_class, a.message, a.signature,
       a.fuses_before, a.fuses_after, a.lock_before, a.lock_after, a.bytes_written,
       a.started_at, a.finished_at, a.cycle_ms, a.serial_number
FROM attempts a
JOIN recipes r ON r.id = a.recipe_id
JOIN stations s ON s.id = a.station_id
JOIN programmers p ON p.id = a.programmer_id
WHERE a.unit_id = $1
ORDER BY a.attempt_no";

const STEPS_SQL: &str = "
SELECT st.attempt_id, st.name, st.ms, st.ok, st.detail
FROM steps st JOIN attempts a ON a.id = st.attempt_id
WHERE a.unit_id = $1
ORDER BY st.attempt_id, st.seq";

fn nonneg(what: &str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| DbError::Invalid(format!("stored {what} {v} is negative")))
}

impl Db {
    /// The unit's attempt number (1 = first try, counted across stations) of attempt `id`.
    pub async fn attempt_no(&self, id: AttemptId) -> Result<u64> {
        with_pool!(self, |p| {
            let n: i64 = sqlx::query_scalar("SELECT attempt_no FROM attempts WHERE id = $1")
                .bind(id.0)
                .fetch_one(p)
                .await
                .ctx("attempt number")?;
            nonneg("attempt number", n)
        })
    }

    /// The result of the latest *finished* attempt of the same unit on the same station that
    /// started at or after `since` and before attempt `id` — `None` when attempt `id` is the
    /// unit's first on this station since then. The station's session totals count distinct
    /// units from this, so the station keeps no per-unit state of its own (the records are it).
    pub async fn previous_result_since(&self, id: AttemptId, since: DateTime<Utc>) -> Result<Option<AttemptResult>> {
        let since = format_ts(since);
        with_pool!(self, |p| {
            let r: Option<String> = sqlx::query_scalar(
                "SELECT prev.result FROM attempts a
                 JOIN attempts prev ON prev.unit_id = a.unit_id AND prev.station_id = a.station_id
                                   AND prev.attempt_no < a.attempt_no
                 WHERE a.id = $1 AND prev.started_at >= $2 AND prev.result <> 'running'
                 ORDER BY prev.attempt_no DESC LIMIT 1",
            )
            .bind(id.0)
            .bind(since)
            .fetch_optional(p)
            .await
            .ctx("previous attempt in this session")?;
            match r {
                None => Ok(None),
                Some(s) => AttemptResult::parse(&s)
                    .map(Some)
                    .ok_or_else(|| DbError::Invalid(format!("stored attempt result '{s}' is not one flashline writes"))),
            }
        })
    }

    /// Every attempt of the unit `serial` (oldest first, across all stations) with its steps,
    /// or `None` if the serial was never seen.
    pub async fn unit_history(&self, serial: &str) -> Result<Option<UnitHistory>> {
        with_pool!(self, |p| {
            let unit: Option<(i64, String)> = sqlx::query_as("SELECT id, first_seen_at FROM units WHERE serial = $1")
                .bind(serial)
                .fetch_optional(p)
                .await
                .ctx("unit history: find unit")?;
            let Some((unit_id, first_seen)) = unit else { return Ok(None) };
            let rows = sqlx::query(ATTEMPTS_SQL).bind(unit_id).fetch_all(p).await.ctx("unit history: attempts")?;
            let mut attempts = Vec::with_capacity(rows.len());
            for r in &rows {
                let result: String = r.try_get("result").ctx("unit history: result")?;
                let finished: Option<String> = r.try_get("finished_at").ctx("unit history: finished_at")?;
                let started: String = r.try_get("started_at").ctx("unit history: started_at")?;
                let opt_u64 = |col: &'static str| -> Result<Option<u64>> {
                    let v: Option<i64> = r.try_get(col).ctx("unit history: integer column")?;
                    v.map(|v| nonneg(col, v)).transpose()
                };
                attempts.push(AttemptRecord {
                    id: AttemptId(r.try_get("id").ctx("unit history: id")?),
                    attempt_no: nonneg("attempt number", r.try_get("attempt_no").ctx("unit history: attempt_no")?)?,
                    recipe: r.try_get("recipe").ctx("unit history: recipe")?,
                    sku: r.try_get("sku").ctx("unit history: sku")?,
                    recipe_sha256: r.try_get("recipe_sha256").ctx("unit history: recipe_sha256")?,
                    image_sha256: r.try_get("image_sha256").ctx("unit history: image_sha256")?,
                    station: r.try_get("station").ctx("unit history: station")?,
                    slot: r.try_get("slot").ctx("unit history: slot")?,
                    programmer_kind: r.try_get("programmer_kind").ctx("unit history: programmer_kind")?,
                    programmer_identity: r.try_get("programmer_identity").ctx("unit history: programmer_identity")?,
                    operator: r.try_get("operator").ctx("unit history: operator")?,
                    result: AttemptResult::parse(&result)
                        .ok_or_else(|| DbError::Invalid(format!("stored result '{result}' is unknown")))?,
                    failure_class: r.try_get("failure_class").ctx("unit history: failure_class")?,
                    message: r.try_get("message").ctx("unit history: message")?,
                    signature: r.try_get("signature").ctx("unit history: signature")?,
                    fuses_before: r.try_get("fuses_before").ctx("unit history: fuses_before")?,
                    fuses_after: r.try_get("fuses_after").ctx("unit history: fuses_after")?,
                    lock_before: r.try_get("lock_before").ctx("unit history: lock_before")?,
                    lock_after: r.try_get("lock_after").ctx("unit history: lock_after")?,
                    bytes_written: opt_u64("bytes_written")?,
                    started_at: parse_ts(&started)?,
                    finished_at: finished.as_deref().map(parse_ts).transpose()?,
                    cycle_ms: opt_u64("cycle_ms")?,
                    serial_number: opt_u64("serial_number")?,
                    steps: Vec::new(),
                });
            }
            let step_rows = sqlx::query(STEPS_SQL).bind(unit_id).fetch_all(p).await.ctx("unit history: steps")?;
            let index: HashMap<i64, usize> = attempts.iter().enumerate().map(|(i, a)| (a.id.0, i)).collect();
            for r in &step_rows {
                let attempt_id: i64 = r.try_get("attempt_id").ctx("unit history: step attempt")?;
                let detail: Option<String> = r.try_get("detail").ctx("unit history: step detail")?;
                let step = StepRecord {
                    name: r.try_get("name").ctx("unit history: step name")?,
                    ms: nonneg("step time", r.try_get("ms").ctx("unit history: step ms")?)?,
                    ok: r.try_get("ok").ctx("unit history: step ok")?,
                    detail: detail.unwrap_or_default(),
                };
                if let Some(&i) = index.get(&attempt_id) {
                    attempts[i].steps.push(step);
                }
            }
            Ok(Some(UnitHistory { serial: serial.to_string(), first_seen_at: parse_ts(&first_seen)?, attempts }))
        })
    }
}
