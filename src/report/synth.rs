//! Synthetic production history for benchmarks: a deterministic (seeded) mix of stations,
//! slots, SKUs, days, first-pass failures and retests, written in large batches into an
//! *empty* records database.

use chrono::{Duration, TimeZone, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::db::{format_ts, with_pool, Backend, Ctx, Db, DbError};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    /// Attempt rows to write (the last unit may add up to two more).
    pub attempts: u64,
    /// Days the history spans, from 2025-05-01.
    pub days: u32,
    /// RNG seed: the same spec always yields the same rows.
    pub seed: u64,
}

impl Default for SynthSpec {
    fn default() -> Self {
        SynthSpec { attempts: 1_000_000, days: 30, seed: 1 }
    }
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthSummary {
    pub units: u64,
    pub attempts: u64,
}

const STATIONS: u64 = 4;
const SLOTS: u64 = 8;
const SKUS: [(&str, &str); 3] = [("kb60-rev2", "KB60"), ("kb65-rev1", "KB65"), ("tkl-rev3", "TKL87")];
const CLASSES: [(&str, u32); 7] = [
    ("communication", 35),
    ("no_target", 25),
    ("verify_flash", 15),
    ("prog_enable", 10),
    ("wrong_chip", 5),
    ("timeout", 5),
    ("verify_fuse", 5),
];
const BATCH: usize = 2000;

struct Row {
    unit: i64,
    no: i64,
    recipe: i64,
    station: i64,
    slot: String,
    programmer: i64,
    result: &'static str,
    class: Option<&'static str>,
    started: String,
    finished: String,
    cycle: i64,
}

fn pick_class(rng: &mut SmallRng) -> &'static str {
    let total: u32 = CLASSES.iter().map(|c| c.1).sum();
    let mut x = rng.gen_range(0..total);
    for (c, w) in CLASSES {
        if x < w {
            return c;
        }
        x -= w;
    }
    "internal"
}

/// Fill an empty database with `spec.attempts` synthetic attempts. Refuses a database that
/// already holds units (ids are assigned here so attempts can point at their units).
pub async fn generate(db: &Db, spec: &SynthSpec) -> Result<SynthSummary, DbError> {
    let existing: i64 = with_pool!(db, |p| sqlx::query_scalar("SELECT COUNT(*) FROM units").fetch_one(p).await.ctx("synth: count units")?);
    if existing > 0 {
        return Err(DbError::Invalid(format!("synthetic history goes into an empty database; this one has {existing} units")));
    }
    let t0 = Utc.with_ymd_and_hms(2025, 5, 1, 6, 0, 0).single().unwrap_or_default();
    let span_ms = i64::from(spec.days.max(1)) * 86_400_000;
    let image = "e3".repeat(32);
    // Dimension rows.
    with_pool!(db, |p, begin| {
        let mut tx = begin().await.ctx("synth: begin")?;
        let first = format_ts(t0);
        for s in 1..=STATIONS {
            sqlx::query("INSERT INTO stations (id, name, first_seen_at) VALUES ($1, $2, $3)")
                .bind(s as i64)
                .bind(format!("line1-st{s}"))
                .bind(&first)
                .execute(&mut *tx)
                .await
                .ctx("synth: station")?;
            for slot in 1..=SLOTS {
                sqlx::query("INSERT INTO programmers (id, kind, identity, first_seen_at) VALUES ($1, $2, $3, $4)")
                    .bind(((s - 1) * SLOTS + slot) as i64)
                    .bind(if slot % 2 == 0 { "usbasp" } else { "avrisp" })
                    .bind(format!("line1-st{s}/S{slot}"))
                    .bind(&first)
                    .execute(&mut *tx)
                    .await
                    .ctx("synth: programmer")?;
            }
        }
        for (i, (name, sku)) in SKUS.iter().enumerate() {
            sqlx::query("INSERT INTO recipes (id, name, sku, sha256, first_seen_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(i as i64 + 1)
                .bind(*name)
                .bind(*sku)
                .bind(format!("{:02x}", i).repeat(32))
                .bind(&first)
                .execute(&mut *tx)
                .await
                .ctx("synth: recipe")?;
        }
        tx.commit().await.ctx("synth: commit")?;
    });

    let mut rng = SmallRng::seed_from_u64(spec.seed);
    let mut units: Vec<(i64, String, String, i64)> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut written = 0u64;
    let mut unit_id = 0i64;
    while written < spec.attempts {
        unit_id += 1;
        // Units arrive evenly over the span; retests follow within the hour.
        let start_ms = (unit_id as i128 * span_ms as i128 / spec.attempts.max(1) as i128 * 85 / 100) as i64 % span_ms;
        let mut t = t0 + Duration::milliseconds(start_ms);
        let recipe = (unit_id % 10).min(2) + 1;
        let mut no = 0;
        loop {
            no += 1;
            let station = rng.gen_range(1..=STATIONS) as i64;
            let slot = rng.gen_range(1..=SLOTS) as i64;
            let pass = rng.gen_bool(if no == 1 { 0.93 } else { 0.8 });
            let cycle = if pass { rng.gen_range(7_500..11_000) } else { rng.gen_range(300..9_000) };
            let finished = t + Duration::milliseconds(cycle);
            rows.push(Row {
                unit: unit_id,
                no,
                recipe,
                station,
                slot: format!("S{slot}"),
                programmer: (station - 1) * SLOTS as i64 + slot,
                result: if pass { "pass" } else { "fail" },
                class: (!pass).then(|| pick_class(&mut rng)),
                started: format_ts(t),
                finished: format_ts(finished),
                cycle,
            });
            if pass || no == 3 {
                break;
            }
            t = finished + Duration::minutes(rng.gen_range(2..50));
        }
        units.push((unit_id, format!("SN{unit_id:08}"), rows[rows.len() - no as usize].started.clone(), no));
        written += no as u64;
        if rows.len() >= BATCH {
            flush(db, &mut units, &mut rows, &image).await?;
        }
    }
    flush(db, &mut units, &mut rows, &image).await?;
    let (u, a): (i64, i64) = with_pool!(db, |p| sqlx::query_as("SELECT (SELECT COUNT(*) FROM units), (SELECT COUNT(*) FROM attempts)")
        .fetch_one(p)
        .await
        .ctx("synth: count")?);
    if db.backend() == Backend::Postgres {
        with_pool!(db, |p| {
            for t in ["stations", "programmers", "recipes", "units", "attempts"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT setval(pg_get_serial_sequence('{t}', 'id'), (SELECT MAX(id) FROM {t}))"
                )))
                .execute(p)
                .await
                .ctx("synth: advance id sequences")?;
            }
        });
    }
    Ok(SynthSummary { units: u as u64, attempts: a as u64 })
}

async fn flush(db: &Db, units: &mut Vec<(i64, String, String, i64)>, rows: &mut Vec<Row>, image: &str) -> Result<(), DbError> {
    if rows.is_empty() && units.is_empty() {
        return Ok(());
    }
    let mut usql = String::from("INSERT INTO units (id, serial, first_seen_at, last_attempt_no) VALUES ");
    for i in 0..units.len() {
        let b = i * 4;
        usql += &format!("{}(${}, ${}, ${}, ${})", if i > 0 { "," } else { "" }, b + 1, b + 2, b + 3, b + 4);
    }
    const COLS: usize = 15;
    let mut asql = String::from(
        "INSERT INTO attempts (unit_id, attempt_no, recipe_id, image_sha256, station_id, slot, programmer_id, operator,
                               result, failure_class, message, signature, started_at, finished_at, cycle_ms) VALUES ",
    );
    for i in 0..rows.len() {
        let b = i * COLS;
        let ph: Vec<String> = (1..=COLS).map(|c| format!("${}", b + c)).collect();
        asql += &format!("{}({})", if i > 0 { "," } else { "" }, ph.join(", "));
    }
    with_pool!(db, |p, begin| {
        let mut tx = begin().await.ctx("synth: begin batch")?;
        if !units.is_empty() {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(usql.clone()));
            for (id, serial, first, last) in units.iter() {
                q = q.bind(*id).bind(serial.as_str()).bind(first.as_str()).bind(*last);
            }
            q.execute(&mut *tx).await.ctx("synth: insert units")?;
        }
        if !rows.is_empty() {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(asql.clone()));
            for r in rows.iter() {
                q = q
                    .bind(r.unit)
                    .bind(r.no)
                    .bind(r.recipe)
                    .bind(image)
                    .bind(r.station)
                    .bind(r.slot.as_str())
                    .bind(r.programmer)
                    .bind("synth")
                    .bind(r.result)
                    .bind(r.class)
                    .bind(r.class.map(|c| format!("{c}: synthetic failure")))
                    .bind("1E9587")
                    .bind(r.started.as_str())
                    .bind(r.finished.as_str())
                    .bind(r.cycle);
            }
            q.execute(&mut *tx).await.ctx("synth: insert attempts")?;
        }
        tx.commit().await.ctx("synth: commit batch")?;
    });
    units.clear();
    rows.clear();
    Ok(())
}
