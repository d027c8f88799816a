//! The writes a station makes: an attempt row before the job starts, its steps, its outcome
//! (committed before the slot shows PASS), rejected scans, crash recovery, the serial pool.

use chrono::Utc;

use super::{format_ts, to_i64, with_pool, AttemptId, AttemptOutcome, AttemptResult, Ctx, Db, DbError, NewAttempt, Result, StepRecord};
use crate::error::FailureClass;

/// How many times a serial reservation is retried when another station took the candidate
/// number between our read and our write (PostgreSQL only; SQLite writers are serialised).
const SERIAL_RETRIES: usize = 64;

fn require(what: &str, v: &str) -> Result<()> {
    if v.trim().is_empty() {
        return Err(DbError::Invalid(format!("{what} is empty")));
    }
    Ok(())
}

impl Db {
    /// Mark every attempt this station left `running` (the station crashed or was killed while
    /// they ran) as `interrupted`, with failure class `interrupted` and a message saying so, and
    /// return how many. Serial numbers reserved for those attempts go back to the pool.
    /// Call once at station start, before the first job; other stations' rows are not touched.
    pub async fn recover_interrupted(&self, station: &str) -> Result<u64> {
        let now = format_ts(Utc::now());
        let message = format!(
            "the station stopped while this attempt ran (found still running when station '{station}' restarted at {now}) — {}",
            FailureClass::Interrupted.hint()
        );
        with_pool!(self, |p, begin| {
            let mut tx = begin().await.ctx("recover interrupted attempts: begin")?;
            sqlx::query(
                "UPDATE serial_numbers SET state = 'free', attempt_id = NULL, updated_at = $2
                 WHERE state = 'reserved' AND attempt_id IN (
                     SELECT a.id FROM attempts a JOIN stations s ON s.id = a.station_id
                     WHERE s.name = $1 AND a.result = 'running')",
            )
            .bind(station)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .ctx("recover interrupted attempts: release their serial numbers")?;
            let n = sqlx::query(
                "UPDATE attempts SET result = 'interrupted', failure_class = $2, message = $3, finished_at = $4
                 WHERE result = 'running' AND station_id = (SELECT id FROM stations WHERE name = $1)",
            )
            .bind(station)
            .bind(FailureClass::Interrupted.as_str())
            .bind(&message)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .ctx("recover interrupted attempts: mark them")?
            .rows_affected();
            tx.commit().await.ctx("recover interrupted attempts: commit")?;
            if n > 0 {
                tracing::warn!(station, count = n, "attempts left running by a previous run marked interrupted");
            }
            Ok(n)
        })
    }

    /// Record the start of a job: upsert the station, programmer, recipe and unit, and insert
    /// the attempt as `running` with the unit's next attempt number (counted across stations).
    /// Committed before it returns.
    pub async fn begin_attempt(&self, a: &NewAttempt) -> Result<AttemptId> {
        require("unit serial", &a.serial)?;
        require("station name", &a.station)?;
        require("slot name", &a.slot)?;
        require("recipe name", &a.recipe)?;
        require("SKU", &a.sku)?;
        require("programmer kind", &a.programmer_kind)?;
        let started = format_ts(a.started_at);
        with_pool!(self, |p, begin| {
            let mut tx = begin().await.ctx("begin attempt: open transaction")?;
            sqlx::query("INSERT INTO stations (name, first_seen_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(a.station.as_str())
                .bind(&started)
                .execute(&mut *tx)
                .await
                .ctx("begin attempt: station")?;
            let station_id: i64 = sqlx::query_scalar("SELECT id FROM stations WHERE name = $1")
                .bind(a.station.as_str())
                .fetch_one(&mut *tx)
                .await
                .ctx("begin attempt: station id")?;
            sqlx::query(
                "INSERT INTO programmers (kind, identity, first_seen_at) VALUES ($1, $2, $3)
                 ON CONFLICT (kind, identity) DO NOTHING",
            )
            .bind(a.programmer_kind.as_str())
            .bind(a.programmer_identity.as_str())
            .bind(&started)
            .execute(&mut *tx)
            .await
            .ctx("begin attempt: programmer")?;
            let programmer_id: i64 = sqlx::query_scalar("SELECT id FROM programmers WHERE kind = $1 AND identity = $2")
                .bind(a.programmer_kind.as_str())
                .bind(a.programmer_identity.as_str())
                .fetch_one(&mut *tx)
                .await
                .ctx("begin attempt: programmer id")?;
            sqlx::query(
                "INSERT INTO recipes (name, sku, sha256, first_seen_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (name, sku, sha256) DO NOTHING",
            )
            .bind(a.recipe.as_str())
            .bind(a.sku.as_str())
            .bind(a.recipe_sha256.as_str())
            .bind(&started)
            .execute(&mut *tx)
            .await
            .ctx("begin attempt: recipe")?;
            let recipe_id: i64 = sqlx::query_scalar("SELECT id FROM recipes WHERE name = $1 AND sku = $2 AND sha256 = $3")
                .bind(a.recipe.as_str())
                .bind(a.sku.as_str())
                .bind(a.recipe_sha256.as_str())
                .fetch_one(&mut *tx)
                .await
                .ctx("begin attempt: recipe id")?;
            sqlx::query(
                "INSERT INTO units (serial, first_seen_at, last_attempt_no) VALUES ($1, $2, 0)
                 ON CONFLICT (serial) DO NOTHING",
            )
            .bind(a.serial.as_str())
            .bind(&started)
            .execute(&mut *tx)
            .await
            .ctx("begin attempt: unit")?;
            // The increment takes the unit's row lock: two stations retesting one unit at once
            // get consecutive attempt numbers.
            let (unit_id, attempt_no): (i64, i64) = sqlx::query_as(
                "UPDATE units SET last_attempt_no = last_attempt_no + 1 WHERE serial = $1 RETURNING id, last_attempt_no",
            )
            .bind(a.serial.as_str())
            .fetch_one(&mut *tx)
            .await
            .ctx("begin attempt: attempt number")?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO attempts (unit_id, attempt_no, recipe_id, image_sha256, station_id, slot,
                                       programmer_id, operator, result, started_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'running', $9) RETURNING id",
            )
            .bind(unit_id)
            .bind(attempt_no)
            .bind(recipe_id)
            .bind(a.image_sha256.as_str())
            .bind(station_id)
            .bind(a.slot.as_str())
            .bind(programmer_id)
            .bind(a.operator.as_str())
            .bind(&started)
            .fetch_one(&mut *tx)
            .await
            .ctx("begin attempt: insert")?;
            tx.commit().await.ctx("begin attempt: commit")?;
            Ok(AttemptId(id))
        })
    }

    /// Append timed steps to an attempt (numbered after the ones already stored), in one
    /// transaction.
    pub async fn add_steps(&self, id: AttemptId, steps: &[StepRecord]) -> Result<()> {
        if steps.is_empty() {
            return Ok(());
        }
        let rows = steps
            .iter()
            .map(|s| Ok((s.name.as_str(), to_i64("step time (ms)", s.ms)?, s.ok, s.detail.as_str())))
            .collect::<Result<Vec<_>>>()?;
        with_pool!(self, |p, begin| {
            let mut tx = begin().await.ctx("add steps: begin")?;
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM attempts WHERE id = $1")
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await
                .ctx("add steps: find attempt")?;
            if exists.is_none() {
                return Err(DbError::NoAttempt(id.0));
            }
            let base: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM steps WHERE attempt_id = $1")
                .bind(id.0)
                .fetch_one(&mut *tx)
                .await
                .ctx("add steps: last step number")?;
            for (i, (name, ms, ok, detail)) in rows.iter().enumerate() {
                sqlx::query("INSERT INTO steps (attempt_id, seq, name, ms, ok, detail) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(id.0)
                    .bind(base + 1 + i as i64)
                    .bind(*name)
                    .bind(*ms)
                    .bind(*ok)
                    .bind(*detail)
                    .execute(&mut *tx)
                    .await
                    .ctx("add steps: insert")?;
            }
            tx.commit().await.ctx("add steps: commit")?;
            Ok(())
        })
    }

    /// Write how a job ended, in one transaction, committed before it returns (the station
    /// shows PASS only after this returns `Ok`).
    ///
    /// With `serial_number` set: a pass consumes the number (pool state `used`, and the
    /// attempt's `serial_number` column); any other result releases it to the pool. If the
    /// number was already consumed by another passing unit this returns
    /// [`DbError::SerialTaken`] and writes nothing: the attempt stays `running`, and the station
    /// should finish it again as an error without the number.
    pub async fn finish_attempt(&self, id: AttemptId, o: &AttemptOutcome) -> Result<()> {
        if o.result == AttemptResult::Running {
            return Err(DbError::Invalid(format!("attempt {id}: an outcome cannot be 'running'")));
        }
        let finished = format_ts(o.finished_at);
        let bytes = to_i64("bytes written", o.bytes_written)?;
        let cycle = to_i64("cycle time (ms)", o.cycle_ms)?;
        let serial = o.serial_number.map(|n| to_i64("serial number", n)).transpose()?;
        let pass = o.result == AttemptResult::Pass;
        with_pool!(self, |p, begin| {
            let mut tx = begin().await.ctx("finish attempt: begin")?;
            let row: Option<(String, String)> = sqlx::query_as(
                "SELECT a.result, r.sku FROM attempts a JOIN recipes r ON r.id = a.recipe_id WHERE a.id = $1",
            )
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await
            .ctx("finish attempt: find attempt")?;
            let Some((state, sku)) = row else { return Err(DbError::NoAttempt(id.0)) };
            if state != "running" {
                return Err(DbError::NotRunning { id: id.0, state });
            }
            let mut consumed = None;
            if let Some(n) = serial {
                if pass {
                    let took = sqlx::query(
                        "UPDATE serial_numbers SET state = 'used', attempt_id = $1, updated_at = $2
                         WHERE sku = $3 AND number = $4 AND state IN ('reserved', 'free')
                           AND (attempt_id IS NULL OR attempt_id = $1)",
                    )
                    .bind(id.0)
                    .bind(&finished)
                    .bind(&sku)
                    .bind(n)
                    .execute(&mut *tx)
                    .await
                    .ctx("finish attempt: consume serial number")?
                    .rows_affected();
                    if took == 0 {
                        // Not in the pool at all (the station minted it itself): record it as used.
                        let ins = sqlx::query(
                            "INSERT INTO serial_numbers (sku, number, state, attempt_id, updated_at)
                             VALUES ($1, $2, 'used', $3, $4) ON CONFLICT (sku, number) DO NOTHING",
                        )
                        .bind(&sku)
                        .bind(n)
                        .bind(id.0)
                        .bind(&finished)
                        .execute(&mut *tx)
                        .await
                        .ctx("finish attempt: record serial number")?
                        .rows_affected();
                        if ins == 0 {
                            let by: Option<i64> = sqlx::query_scalar(
                                "SELECT attempt_id FROM serial_numbers WHERE sku = $1 AND number = $2",
                            )
                            .bind(&sku)
                            .bind(n)
                            .fetch_one(&mut *tx)
                            .await
                            .ctx("finish attempt: serial number owner")?;
                            return Err(DbError::SerialTaken { sku, number: n as u64, by: by.unwrap_or(0) });
                        }
                    }
                    consumed = Some(n);
                } else {
                    sqlx::query(
                        "UPDATE serial_numbers SET state = 'free', attempt_id = NULL, updated_at = $1
                         WHERE sku = $2 AND number = $3 AND state = 'reserved'",
                    )
                    .bind(&finished)
                    .bind(&sku)
                    .bind(n)
                    .execute(&mut *tx)
                    .await
                    .ctx("finish attempt: release serial number")?;
                }
            }
            sqlx::query(
                "UPDATE attempts SET result = $2, failure_class = $3, message = $4, signature = $5,
                        fuses_before = $6, fuses_after = $7, lock_before = $8, lock_after = $9,
                        bytes_written = $10, finished_at = $11, cycle_ms = $12, serial_number = $13
                 WHERE id = $1 AND result = 'running'",
            )
            .bind(id.0)
            .bind(o.result.as_str())
            .bind(o.failure_class.as_deref())
            .bind(o.message.as_deref())
            .bind(o.signature.as_deref())
            .bind(o.fuses_before.as_deref())
            .bind(o.fuses_after.as_deref())
            .bind(o.lock_before.as_deref())
            .bind(o.lock_after.as_deref())
            .bind(bytes)
            .bind(&finished)
            .bind(cycle)
            .bind(consumed)
            .execute(&mut *tx)
            .await
            .ctx("finish attempt: update")?;
            tx.commit().await.ctx("finish attempt: commit")?;
            Ok(())
        })
    }

    /// Record a scan the station refused (serial pattern mismatch, unknown slot…).
    pub async fn reject_scan(&self, station: &str, slot: Option<&str>, raw: &str, reason: &str) -> Result<()> {
        require("station name", station)?;
        let now = format_ts(Utc::now());
        with_pool!(self, |p, begin| {
            let mut tx = begin().await.ctx("reject scan: begin")?;
            sqlx::query("INSERT INTO stations (name, first_seen_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(station)
                .bind(&now)
                .execute(&mut *tx)
                .await
                .ctx("reject scan: station")?;
            sqlx::query(
                "INSERT INTO rejected_scans (station_id, slot, raw, reason, at)
                 VALUES ((SELECT id FROM stations WHERE name = $1), $2, $3, $4, $5)",
            )
            .bind(station)
            .bind(slot)
            .bind(raw)
            .bind(reason)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .ctx("reject scan: insert")?;
            tx.commit().await.ctx("reject scan: commit")?;
            Ok(())
        })
    }

    /// Reserve the next serial number of `sku`, at least `start`: the lowest released number
    /// first, else one past the highest ever handed out. Concurrent slots and stations never
    /// get the same number. Pass it to `finish_attempt` (a pass consumes it, anything else
    /// releases it) or give it back with [`Db::release_serial`].
    pub async fn reserve_serial(&self, sku: &str, start: u64) -> Result<u64> {
        self.reserve(sku, start, None).await
    }

    /// Like [`Db::reserve_serial`], tied to an attempt: if the station dies during that attempt,
    /// `recover_interrupted` releases the number.
    pub async fn reserve_serial_for(&self, attempt: AttemptId, sku: &str, start: u64) -> Result<u64> {
        self.reserve(sku, start, Some(attempt.0)).await
    }

    async fn reserve(&self, sku: &str, start: u64, attempt: Option<i64>) -> Result<u64> {
        require("SKU", sku)?;
        let start = to_i64("serial number start", start)?;
        for _ in 0..SERIAL_RETRIES {
            let now = format_ts(Utc::now());
            let got: Option<i64> = with_pool!(self, |p, begin| {
                let mut tx = begin().await.ctx("reserve serial number: begin")?;
                let free: Option<i64> = sqlx::query_scalar(
                    "SELECT MIN(number) FROM serial_numbers WHERE sku = $1 AND state = 'free' AND number >= $2",
                )
                .bind(sku)
                .bind(start)
                .fetch_one(&mut *tx)
                .await
                .ctx("reserve serial number: find a released one")?;
                let took = if let Some(n) = free {
                    let r = sqlx::query(
                        "UPDATE serial_numbers SET state = 'reserved', attempt_id = $3, updated_at = $4
                         WHERE sku = $1 AND number = $2 AND state = 'free'",
                    )
                    .bind(sku)
                    .bind(n)
                    .bind(attempt)
                    .bind(&now)
                    .execute(&mut *tx)
                    .await
                    .ctx("reserve serial number: take a released one")?
                    .rows_affected();
                    (r == 1).then_some(n)
                } else {
                    let highest: Option<i64> = sqlx::query_scalar("SELECT MAX(number) FROM serial_numbers WHERE sku = $1")
                        .bind(sku)
                        .fetch_one(&mut *tx)
                        .await
                        .ctx("reserve serial number: highest")?;
                    let next = match highest {
                        Some(h) if h >= start => h.checked_add(1).ok_or_else(|| DbError::SerialPool {
                            sku: sku.into(),
                            reason: "the number range is exhausted".into(),
                        })?,
                        _ => start,
                    };
                    let r = sqlx::query(
                        "INSERT INTO serial_numbers (sku, number, state, attempt_id, updated_at)
                         VALUES ($1, $2, 'reserved', $3, $4) ON CONFLICT (sku, number) DO NOTHING",
                    )
                    .bind(sku)
                    .bind(next)
                    .bind(attempt)
                    .bind(&now)
                    .execute(&mut *tx)
                    .await
                    .ctx("reserve serial number: mint")?
                    .rows_affected();
                    (r == 1).then_some(next)
                };
                if took.is_some() {
                    tx.commit().await.ctx("reserve serial number: commit")?;
                } else {
                    tx.rollback().await.ctx("reserve serial number: rollback")?;
                }
                Ok::<_, DbError>(took)
            })?;
            if let Some(n) = got {
                return Ok(n as u64);
            }
        }
        Err(DbError::SerialPool {
            sku: sku.into(),
            reason: format!("no number could be reserved after {SERIAL_RETRIES} tries (heavy contention)"),
        })
    }

    /// Give a reserved, unconsumed serial number back to the pool. Numbers already consumed by
    /// a passing unit are never released. Returns whether the number was reserved.
    pub async fn release_serial(&self, sku: &str, number: u64) -> Result<bool> {
        let n = to_i64("serial number", number)?;
        let now = format_ts(Utc::now());
        let r = with_pool!(self, |p| {
            sqlx::query(
                "UPDATE serial_numbers SET state = 'free', attempt_id = NULL, updated_at = $3
                 WHERE sku = $1 AND number = $2 AND state = 'reserved'",
            )
            .bind(sku)
            .bind(n)
            .bind(&now)
            .execute(p)
            .await
            .ctx("release serial number")?
            .rows_affected()
        });
        Ok(r == 1)
    }
}
