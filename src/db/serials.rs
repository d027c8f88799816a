//! The serial-number pool: one state machine per (SKU, number), every transition here.
//!
//! ```text
//!            reserve(A)                 A passed
//!   free ───────────────▶ reserved(A) ───────────▶ used(A)
//!    ▲                     │   │
//!    │ A failed before     │   │ A failed, or ended unknown, after the write began
//!    │ the write began     │   ▼
//!    └─────────────────────┘  void(A)
//! ```
//!
//! - **free**: never written to any chip; no owner.
//! - **reserved(A)**: held by the running attempt A. Only A's finish (or the recovery of A after
//!   a crash) moves it on.
//! - **used(A)**: A passed; its unit's chip carries the number.
//! - **void(A)**: the number may sit in the chip of A's unit (the write began, or nobody knows
//!   because the station died), so it is never handed to another unit.
//!
//! A unit keeps its number: when a unit is programmed again (a retest after a failure, a rework
//! after a pass), the number its chip may already hold (`used` or `void` by an earlier attempt
//! of the same unit) is reserved again before any other, so a unit never collects numbers and
//! no number ever reaches a second chip.
//!
//! Every transition is one SQL statement that names the state it leaves *and the owner*, so
//! nothing can move a number held by another attempt; the statements run inside the
//! attempt's own transactions (`reserve_serial_for`, `finish_attempt`, `recover_interrupted`).

use chrono::Utc;
use serde::Serialize;

use super::{format_ts, to_i64, write_tx, AttemptId, Ctx, Db, DbError, Result};

/// How many times a reservation is retried when another station took the candidate number
/// between our read and our write (PostgreSQL; SQLite writers are serialised).
const RETRIES: usize = 64;

/// The latest number the attempt's unit may already carry for this SKU (`used` or `void` by
/// an earlier attempt of the same unit). $1 sku, $2 attempt.
pub(super) const FIND_OWN: &str = "
SELECT sn.number, sn.state, sn.attempt_id FROM serial_numbers sn
JOIN attempts o ON o.id = sn.attempt_id
WHERE sn.sku = $1 AND sn.state IN ('used', 'void')
  AND o.unit_id = (SELECT unit_id FROM attempts WHERE id = $2)
ORDER BY o.attempt_no DESC, sn.number DESC LIMIT 1";

/// used/void(earlier attempt of the same unit) → reserved(A). $1 A, $2 now, $3 sku, $4 number,
/// $5 state left, $6 previous owner.
pub(super) const TAKE_OWN: &str = "
UPDATE serial_numbers SET state = 'reserved', attempt_id = $1, updated_at = $2
WHERE sku = $3 AND number = $4 AND state = $5 AND attempt_id = $6";

/// Lowest free number at or above the start. $1 sku, $2 start.
pub(super) const FIND_FREE: &str =
    "SELECT MIN(number) FROM serial_numbers WHERE sku = $1 AND state = 'free' AND number >= $2";

/// free → reserved(A). $1 sku, $2 number, $3 A, $4 now.
pub(super) const TAKE_FREE: &str = "
UPDATE serial_numbers SET state = 'reserved', attempt_id = $3, updated_at = $4
WHERE sku = $1 AND number = $2 AND state = 'free' AND attempt_id IS NULL";

/// Highest number ever handed out for the SKU. $1 sku.
pub(super) const HIGHEST: &str = "SELECT MAX(number) FROM serial_numbers WHERE sku = $1";

/// (nothing) → reserved(A), a number never handed out. $1 sku, $2 number, $3 A, $4 now.
pub(super) const MINT: &str = "
INSERT INTO serial_numbers (sku, number, state, attempt_id, updated_at)
VALUES ($1, $2, 'reserved', $3, $4) ON CONFLICT (sku, number) DO NOTHING";

/// The number attempt A holds, if any. $1 A.
pub(super) const HELD_BY: &str =
    "SELECT sku, number FROM serial_numbers WHERE attempt_id = $1 AND state = 'reserved'";

/// reserved(A) → used(A): A passed with this number. $1 A, $2 now, $3 sku, $4 number.
pub(super) const CONSUME: &str = "
UPDATE serial_numbers SET state = 'used', updated_at = $2
WHERE attempt_id = $1 AND state = 'reserved' AND sku = $3 AND number = $4";

/// reserved(A) → free: A ended before the write began. $1 A, $2 now.
pub(super) const FREE: &str = "
UPDATE serial_numbers SET state = 'free', attempt_id = NULL, updated_at = $2
WHERE attempt_id = $1 AND state = 'reserved'";

/// reserved(A) → void(A): A ended after the write began. $1 A, $2 now.
pub(super) const VOID: &str = "
UPDATE serial_numbers SET state = 'void', updated_at = $2
WHERE attempt_id = $1 AND state = 'reserved'";

/// reserved(A) → void(A) for every attempt a station left `running` (it crashed: whether the
/// write began is unknown). $1 station name, $2 now.
pub(super) const VOID_INTERRUPTED: &str = "
UPDATE serial_numbers SET state = 'void', updated_at = $2
WHERE state = 'reserved' AND attempt_id IN (
    SELECT a.id FROM attempts a JOIN stations s ON s.id = a.station_id
    WHERE s.name = $1 AND a.result = 'running')";

/// A number reserved for an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub number: u64,
    /// The unit's chip may already carry this number (an earlier attempt of the same unit
    /// held it): if this attempt fails, the number is voided, never freed.
    pub reused: bool,
}

/// A pool row, as `flashline report serials` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SerialRow {
    pub sku: String,
    pub number: u64,
    /// `free`, `reserved`, `used` or `void`.
    pub state: String,
    /// The owning attempt (none for free numbers and legacy ownerless reservations).
    pub attempt_id: Option<i64>,
    /// The unit of the owning attempt.
    pub unit: Option<String>,
    /// The owning attempt's result (`running`, `pass`, `fail`…).
    pub attempt_result: Option<String>,
    /// When the row last changed (UTC ISO 8601).
    pub updated_at: String,
}

impl Db {
    /// Reserve a serial number of `sku` (at least `start`) for the running attempt `attempt`:
    /// the number the attempt's unit may already carry if there is one, else the lowest free
    /// number, else one past the highest ever handed out. Concurrent slots and stations never
    /// get the same number. `finish_attempt` moves it on (used, free or void); if the station
    /// dies first, `recover_interrupted` voids it.
    pub async fn reserve_serial_for(&self, attempt: AttemptId, sku: &str, start: u64) -> Result<Reservation> {
        if sku.trim().is_empty() {
            return Err(DbError::Invalid("SKU is empty".into()));
        }
        let start = to_i64("serial number start", start)?;
        for _ in 0..RETRIES {
            let now = format_ts(Utc::now());
            let got: Option<Reservation> = write_tx!(self, "reserve serial number", |tx| {
                let running: Option<String> = sqlx::query_scalar("SELECT result FROM attempts WHERE id = $1")
                    .bind(attempt.0)
                    .fetch_optional(&mut *tx)
                    .await
                    .ctx("reserve serial number: find attempt")?;
                match running.as_deref() {
                    None => return Err(DbError::NoAttempt(attempt.0)),
                    Some("running") => {}
                    Some(state) => return Err(DbError::NotRunning { id: attempt.0, state: state.to_string() }),
                }
                let held: Option<(String, i64)> =
                    sqlx::query_as(HELD_BY).bind(attempt.0).fetch_optional(&mut *tx).await.ctx("reserve serial number: held")?;
                if let Some((held_sku, n)) = held {
                    if held_sku == sku {
                        // Asked twice (a retried call whose first answer was lost): the same number.
                        return Ok(Some(Reservation { number: n as u64, reused: false }));
                    }
                    return Err(DbError::SerialPool { sku: sku.into(), reason: format!("attempt {attempt} already holds number {n} of SKU {held_sku}") });
                }
                let own: Option<(i64, String, i64)> =
                    sqlx::query_as(FIND_OWN).bind(sku).bind(attempt.0).fetch_optional(&mut *tx).await.ctx("reserve serial number: the unit's own")?;
                if let Some((n, state, owner)) = own {
                    let r = sqlx::query(TAKE_OWN)
                        .bind(attempt.0)
                        .bind(&now)
                        .bind(sku)
                        .bind(n)
                        .bind(&state)
                        .bind(owner)
                        .execute(&mut *tx)
                        .await
                        .ctx("reserve serial number: take the unit's own")?
                        .rows_affected();
                    return Ok((r == 1).then_some(Reservation { number: n as u64, reused: true }));
                }
                let free: Option<i64> =
                    sqlx::query_scalar(FIND_FREE).bind(sku).bind(start).fetch_one(&mut *tx).await.ctx("reserve serial number: find a free one")?;
                let took = if let Some(n) = free {
                    let r = sqlx::query(TAKE_FREE)
                        .bind(sku)
                        .bind(n)
                        .bind(attempt.0)
                        .bind(&now)
                        .execute(&mut *tx)
                        .await
                        .ctx("reserve serial number: take a free one")?
                        .rows_affected();
                    (r == 1).then_some(n)
                } else {
                    let highest: Option<i64> =
                        sqlx::query_scalar(HIGHEST).bind(sku).fetch_one(&mut *tx).await.ctx("reserve serial number: highest")?;
                    let next = match highest {
                        Some(h) if h >= start => h.checked_add(1).ok_or_else(|| DbError::SerialPool {
                            sku: sku.into(),
                            reason: "the number range is exhausted".into(),
                        })?,
                        _ => start,
                    };
                    let r = sqlx::query(MINT)
                        .bind(sku)
                        .bind(next)
                        .bind(attempt.0)
                        .bind(&now)
                        .execute(&mut *tx)
                        .await
                        .ctx("reserve serial number: mint")?
                        .rows_affected();
                    (r == 1).then_some(next)
                };
                Ok(took.map(|n| Reservation { number: n as u64, reused: false }))
            })?;
            if let Some(r) = got {
                return Ok(r);
            }
        }
        Err(DbError::SerialPool {
            sku: sku.into(),
            reason: format!("no number could be reserved after {RETRIES} tries (heavy contention)"),
        })
    }

    /// The number a new unit would be given next for `sku` (at least `start`), without taking
    /// it: the lowest free one, else one past the highest ever handed out.
    pub async fn next_serial(&self, sku: &str, start: u64) -> Result<u64> {
        let start = to_i64("serial number start", start)?;
        super::with_pool!(self, |p| {
            let free: Option<i64> = sqlx::query_scalar(FIND_FREE).bind(sku).bind(start).fetch_one(p).await.ctx("next serial number: free")?;
            if let Some(n) = free {
                return Ok(n as u64);
            }
            let highest: Option<i64> = sqlx::query_scalar(HIGHEST).bind(sku).fetch_one(p).await.ctx("next serial number: highest")?;
            Ok(match highest {
                Some(h) if h >= start => h as u64 + 1,
                _ => start as u64,
            })
        })
    }

    /// The pool, one row per number handed out (all SKUs, or one), in SKU and number order.
    pub async fn serial_pool(&self, sku: Option<&str>) -> Result<Vec<SerialRow>> {
        macro_rules! pool_sql {
            ($tail:literal) => {
                concat!(
                    "SELECT sn.sku, sn.number, sn.state, sn.attempt_id, u.serial, a.result, sn.updated_at
                     FROM serial_numbers sn
                     LEFT JOIN attempts a ON a.id = sn.attempt_id
                     LEFT JOIN units u ON u.id = a.unit_id ",
                    $tail
                )
            };
        }
        type Row = (String, i64, String, Option<i64>, Option<String>, Option<String>, String);
        let rows: Vec<Row> = super::with_pool!(self, |p| match sku {
            Some(s) => sqlx::query_as(pool_sql!("WHERE sn.sku = $1 ORDER BY sn.sku, sn.number")).bind(s).fetch_all(p).await.ctx("serial pool")?,
            None => sqlx::query_as(pool_sql!("ORDER BY sn.sku, sn.number")).fetch_all(p).await.ctx("serial pool")?,
        });
        rows.into_iter()
            .map(|(sku, number, state, attempt_id, unit, attempt_result, updated_at)| {
                Ok(SerialRow {
                    sku,
                    number: u64::try_from(number).map_err(|_| DbError::Invalid(format!("stored serial number {number} is negative")))?,
                    state,
                    attempt_id,
                    unit,
                    attempt_result,
                    updated_at,
                })
            })
            .collect()
    }
}
