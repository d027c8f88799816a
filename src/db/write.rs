//! The writes a station makes: an attempt row before the job starts, its outcome with its
//! steps (one transaction, committed before the slot shows PASS), rejected scans, crash
//! recovery. The serial-number pool's transitions are in `serials.rs`; they run inside these
//! transactions. Every write is safe to retry after an error whose commit may or may not have
//! happened: a retry finds its own earlier work instead of doing it twice.

use chrono::Utc;

use super::serials;
use super::{format_ts, to_i64, write_tx, AttemptId, AttemptOutcome, AttemptResult, Ctx, Db, DbError, NewAttempt, Result, StepRecord};
use crate::error::FailureClass;

/// Append `$rows` (name, ms, ok, detail) to attempt `$id`'s steps inside the open transaction
/// `$tx`, numbered after the ones already stored.
macro_rules! insert_steps {
    ($tx:ident, $id:expr, $rows:expr, $last:literal, $insert:literal) => {
        let base: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM steps WHERE attempt_id = $1")
            .bind($id.0)
            .fetch_one(&mut *$tx)
            .await
            .ctx($last)?;
        for (i, (name, ms, ok, detail)) in $rows.iter().enumerate() {
            sqlx::query("INSERT INTO steps (attempt_id, seq, name, ms, ok, detail) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind($id.0)
                .bind(base + 1 + i as i64)
                .bind(*name)
                .bind(*ms)
                .bind(*ok)
                .bind(*detail)
                .execute(&mut *$tx)
                .await
                .ctx($insert)?;
        }
    };
}

fn require(what: &str, v: &str) -> Result<()> {
    if v.trim().is_empty() {
        return Err(DbError::Invalid(format!("{what} is empty")));
    }
    Ok(())
}

impl Db {
    /// Mark every attempt this station left `running` (the station crashed or was killed while
    /// they ran) as `interrupted`, with failure class `interrupted` and a message saying so, and
    /// return how many. Serial numbers reserved for those attempts are voided (the station died,
    /// so nobody knows whether the number reached the chip) and noted on the attempt row.
    /// Call once at station start, before the first job; other stations' rows are not touched.
    pub async fn recover_interrupted(&self, station: &str) -> Result<u64> {
        let now = format_ts(Utc::now());
        let message = format!(
            "the station stopped while this attempt ran (found still running when station '{station}' restarted at {now}) — {}",
            FailureClass::Interrupted.hint()
        );
        let n = write_tx!(self, "recover interrupted attempts", |tx| {
            // The attempt may have written its number before the station died: void, never free.
            // The attempt row keeps the number it may have written.
            sqlx::query(
                "UPDATE attempts SET serial_number = (
                     SELECT sn.number FROM serial_numbers sn WHERE sn.attempt_id = attempts.id AND sn.state = 'reserved')
                 WHERE result = 'running' AND station_id = (SELECT id FROM stations WHERE name = $1)",
            )
            .bind(station)
            .execute(&mut *tx)
            .await
            .ctx("recover interrupted attempts: note their serial numbers")?;
            sqlx::query(serials::VOID_INTERRUPTED)
                .bind(station)
                .bind(&now)
                .execute(&mut *tx)
                .await
                .ctx("recover interrupted attempts: void their serial numbers")?;
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
            Ok::<_, DbError>(n)
        })?;
        if n > 0 {
            tracing::warn!(station, count = n, "attempts left running by a previous run marked interrupted");
        }
        Ok(n)
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
        write_tx!(self, "begin attempt", |tx| {
            // A retry after an error whose commit did happen finds its own row.
            let again: Option<i64> = sqlx::query_scalar(
                "SELECT a.id FROM attempts a JOIN units u ON u.id = a.unit_id JOIN stations s ON s.id = a.station_id
                 WHERE u.serial = $1 AND s.name = $2 AND a.slot = $3 AND a.started_at = $4 AND a.result = 'running'",
            )
            .bind(a.serial.as_str())
            .bind(a.station.as_str())
            .bind(a.slot.as_str())
            .bind(&started)
            .fetch_optional(&mut *tx)
            .await
            .ctx("begin attempt: find a retried one")?;
            if let Some(id) = again {
                return Ok(AttemptId(id));
            }
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
            Ok::<_, DbError>(AttemptId(id))
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
        write_tx!(self, "add steps", |tx| {
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM attempts WHERE id = $1")
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await
                .ctx("add steps: find attempt")?;
            if exists.is_none() {
                return Err(DbError::NoAttempt(id.0));
            }
            insert_steps!(tx, id, rows, "add steps: last step number", "add steps: insert");
            Ok::<_, DbError>(())
        })
    }

    /// Write how a job ended — its steps and its result, and the move of its serial number —
    /// in one transaction, committed before it returns (the station shows PASS only after this
    /// returns `Ok`).
    ///
    /// The serial number the attempt holds (`serial_numbers`, owner = this attempt) moves on:
    /// a pass with `serial_number` set consumes it (`used`); otherwise it is voided when
    /// `serial_written` says the write began (the number may be in the chip) and freed when it
    /// did not. A pass whose number this attempt does not hold returns
    /// [`DbError::SerialTaken`] and writes nothing: the station then finishes the attempt as an
    /// error.
    ///
    /// Idempotent: finishing again with the same outcome (a retry after a commit whose answer
    /// was lost) finds the attempt already finished that way and returns `Ok` without writing;
    /// any other second finish is [`DbError::NotRunning`].
    pub async fn finish_attempt(&self, id: AttemptId, o: &AttemptOutcome) -> Result<()> {
        if o.result == AttemptResult::Running {
            return Err(DbError::Invalid(format!("attempt {id}: an outcome cannot be 'running'")));
        }
        let finished = format_ts(o.finished_at);
        let bytes = to_i64("bytes written", o.bytes_written)?;
        let cycle = to_i64("cycle time (ms)", o.cycle_ms)?;
        let serial = o.serial_number.map(|n| to_i64("serial number", n)).transpose()?;
        let steps = o
            .steps
            .iter()
            .map(|s| Ok((s.name.as_str(), to_i64("step time (ms)", s.ms)?, s.ok, s.detail.as_str())))
            .collect::<Result<Vec<_>>>()?;
        let pass = o.result == AttemptResult::Pass;
        write_tx!(self, "finish attempt", |tx| {
            let row: Option<(String, Option<String>)> =
                sqlx::query_as("SELECT result, finished_at FROM attempts WHERE id = $1")
                    .bind(id.0)
                    .fetch_optional(&mut *tx)
                    .await
                    .ctx("finish attempt: find attempt")?;
            let Some((state, done_at)) = row else { return Err(DbError::NoAttempt(id.0)) };
            if state != "running" {
                if state == o.result.as_str() && done_at.as_deref() == Some(finished.as_str()) {
                    // Already recorded by an earlier try of this very call.
                    return Ok(());
                }
                return Err(DbError::NotRunning { id: id.0, state });
            }
            let held: Option<(String, i64)> =
                sqlx::query_as(serials::HELD_BY).bind(id.0).fetch_optional(&mut *tx).await.ctx("finish attempt: serial number held")?;
            let mut recorded_number = None;
            match (pass, serial, &held) {
                (true, Some(n), Some((sku, h))) if *h == n => {
                    let took = sqlx::query(serials::CONSUME)
                        .bind(id.0)
                        .bind(&finished)
                        .bind(sku)
                        .bind(n)
                        .execute(&mut *tx)
                        .await
                        .ctx("finish attempt: consume serial number")?
                        .rows_affected();
                    if took != 1 {
                        return Err(DbError::SerialTaken { sku: sku.clone(), number: n as u64, by: 0 });
                    }
                    recorded_number = Some(n);
                }
                (true, Some(n), _) => {
                    // The chip carries a number this attempt does not hold: never record it as
                    // a pass. Name the holder for the message.
                    let sku: Option<String> = sqlx::query_scalar(
                        "SELECT r.sku FROM attempts a JOIN recipes r ON r.id = a.recipe_id WHERE a.id = $1",
                    )
                    .bind(id.0)
                    .fetch_optional(&mut *tx)
                    .await
                    .ctx("finish attempt: sku")?;
                    let sku = sku.unwrap_or_default();
                    let by: Option<Option<i64>> =
                        sqlx::query_scalar("SELECT attempt_id FROM serial_numbers WHERE sku = $1 AND number = $2")
                            .bind(&sku)
                            .bind(n)
                            .fetch_optional(&mut *tx)
                            .await
                            .ctx("finish attempt: serial number owner")?;
                    return Err(DbError::SerialTaken { sku, number: n as u64, by: by.flatten().unwrap_or(0) });
                }
                (_, _, Some((_, h))) => {
                    // Not consumed: voided if the write began (or the outcome does not say which
                    // number it wrote), freed if the chip never saw it.
                    let at_risk = o.serial_written || serial != Some(*h);
                    let sql = if at_risk { serials::VOID } else { serials::FREE };
                    sqlx::query(sql).bind(id.0).bind(&finished).execute(&mut *tx).await.ctx("finish attempt: serial number")?;
                    if at_risk {
                        recorded_number = Some(*h);
                    }
                }
                (_, _, None) => {}
            }
            insert_steps!(tx, id, steps, "finish attempt: last step number", "finish attempt: step");
            let n = sqlx::query(
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
            .bind(recorded_number)
            .execute(&mut *tx)
            .await
            .ctx("finish attempt: update")?
            .rows_affected();
            if n != 1 {
                return Err(DbError::NotRunning { id: id.0, state: "finished meanwhile".into() });
            }
            Ok::<_, DbError>(())
        })
    }

    /// Record a scan the station refused (serial pattern mismatch, unknown slot…).
    pub async fn reject_scan(&self, station: &str, slot: Option<&str>, raw: &str, reason: &str) -> Result<()> {
        require("station name", station)?;
        let now = format_ts(Utc::now());
        write_tx!(self, "reject scan", |tx| {
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
            Ok::<_, DbError>(())
        })
    }
}
