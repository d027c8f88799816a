//! Records on a real PostgreSQL server: `FLASHLINE_TEST_PG` if set, else a throwaway cluster
//! this test binary starts (initdb in a temp dir, unix socket only) and removes at exit.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use flashline::db::{testing, AttemptOutcome, AttemptResult, Db, NewAttempt, StepRecord};
use flashline::report::{self, Filters, GroupBy};

fn attempt(serial: &str, station: &str, slot: &str, minute: u32) -> NewAttempt {
    NewAttempt {
        serial: serial.into(),
        recipe: "kb60-rev2".into(),
        sku: "KB60".into(),
        recipe_sha256: "ab".repeat(32),
        image_sha256: "cd".repeat(32),
        station: station.into(),
        slot: slot.into(),
        programmer_kind: "sim".into(),
        programmer_identity: format!("sim:{station}:{slot}"),
        operator: "ana".into(),
        started_at: Utc.with_ymd_and_hms(2025, 6, 1, 8, minute % 60, 0).unwrap(),
    }
}

fn outcome(result: AttemptResult, class: Option<&str>, cycle_ms: u64, serial_number: Option<u64>) -> AttemptOutcome {
    AttemptOutcome {
        result,
        failure_class: class.map(str::to_string),
        message: class.map(|c| format!("{c}: check the board")),
        signature: Some("1E9587".into()),
        fuses_before: Some("L:FF H:FF E:FF".into()),
        fuses_after: Some("L:5E H:D9 E:F3".into()),
        lock_before: Some("FF".into()),
        lock_after: Some("3C".into()),
        bytes_written: 32768,
        finished_at: Utc.with_ymd_and_hms(2025, 6, 1, 9, 0, 0).unwrap(),
        cycle_ms,
        serial_number,
        serial_written: false,
        steps: Vec::new(),
    }
}

async fn fresh() -> (Db, String) {
    let url = testing::test_database().await.expect("a PostgreSQL server for the tests");
    (Db::connect(&url).await.expect("connect + migrate"), url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_path_and_history_on_postgres() {
    let (db, url) = fresh().await;
    // Migrations are idempotent: a second station connecting runs none again.
    let db2 = Db::connect(&url).await.unwrap();
    let a1 = db.begin_attempt(&attempt("KB-0001", "st1", "A1", 0)).await.unwrap();
    db.add_steps(a1, &[StepRecord { name: "identify".into(), ms: 12, ok: false, detail: "signature 000000".into() }])
        .await
        .unwrap();
    db.finish_attempt(a1, &outcome(AttemptResult::Fail, Some("no_target"), 900, None)).await.unwrap();
    let a2 = db2.begin_attempt(&attempt("KB-0001", "st2", "B1", 1)).await.unwrap();
    let n = db2.reserve_serial_for(a2, "KB60", 500).await.unwrap().number;
    assert_eq!(n, 500);
    db2.finish_attempt(a2, &outcome(AttemptResult::Pass, None, 4100, Some(n))).await.unwrap();
    db.reject_scan("st1", Some("A1"), "=HYPERLINK(\"x\")", "pattern").await.unwrap();

    let h = db.unit_history("KB-0001").await.unwrap().unwrap();
    assert_eq!(h.attempts.len(), 2);
    assert_eq!(h.attempts[0].attempt_no, 1);
    assert_eq!(h.attempts[0].station, "st1");
    assert_eq!(h.attempts[0].steps[0].detail, "signature 000000");
    assert!(!h.attempts[0].steps[0].ok);
    assert_eq!(h.attempts[1].attempt_no, 2);
    assert_eq!(h.attempts[1].station, "st2");
    assert_eq!(h.attempts[1].serial_number, Some(500));
    assert_eq!(h.attempts[1].result, AttemptResult::Pass);
    assert_eq!(db.next_serial("KB60", 500).await.unwrap(), 501);
    assert_eq!(db.integrity_check().await.unwrap(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_on_postgres_touches_only_this_station() {
    let (db, _) = fresh().await;
    let mine = db.begin_attempt(&attempt("KB-0100", "st1", "A1", 3)).await.unwrap();
    let held = db.reserve_serial_for(mine, "KB60", 1).await.unwrap().number;
    let theirs = db.begin_attempt(&attempt("KB-0101", "st2", "A1", 3)).await.unwrap();
    assert_eq!(db.recover_interrupted("st1").await.unwrap(), 1);
    let h = db.unit_history("KB-0100").await.unwrap().unwrap();
    assert_eq!(h.attempts[0].result, AttemptResult::Interrupted);
    assert_eq!(h.attempts[0].failure_class.as_deref(), Some("interrupted"));
    // The station died during the attempt: the number may be in that chip, so it is void and
    // never handed to another unit; the interrupted attempt's row keeps it.
    assert_eq!(h.attempts[0].serial_number, Some(held));
    let pool = db.serial_pool(Some("KB60")).await.unwrap();
    assert_eq!(pool.iter().find(|r| r.number == held).map(|r| r.state.as_str()), Some("void"));
    assert_ne!(db.next_serial("KB60", 1).await.unwrap(), held, "a voided number is not handed out again");
    assert_eq!(db.unit_history("KB-0101").await.unwrap().unwrap().attempts[0].result, AttemptResult::Running);
    db.finish_attempt(theirs, &outcome(AttemptResult::Pass, None, 1000, None)).await.unwrap();
    assert!(db.finish_attempt(mine, &outcome(AttemptResult::Pass, None, 1000, None)).await.is_err());
}

/// Child half of the two-writer test: one station process writing its share of a batch.
/// Serials KB-0000..KB-{UNITS}; each unit fails its first try at this station when
/// `serial % 5 == station_index`, then passes on the retest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child half of two_station_processes_share_one_postgres"]
async fn station_child() {
    let (Ok(url), Ok(station)) = (std::env::var("FLASHLINE_CHILD_PG"), std::env::var("FLASHLINE_CHILD_STATION")) else {
        return;
    };
    let index: u64 = std::env::var("FLASHLINE_CHILD_INDEX").unwrap().parse().unwrap();
    let db = Db::connect(&url).await.unwrap();
    db.recover_interrupted(&station).await.unwrap();
    let mut slots = Vec::new();
    for slot in 0..4u64 {
        let db = db.clone();
        let station = station.clone();
        slots.push(tokio::spawn(async move {
            for u in (slot..UNITS).step_by(4) {
                let serial = format!("KB-{u:04}");
                let slot_name = format!("S{slot}");
                let a = attempt(&serial, &station, &slot_name, u as u32);
                if u % 5 == index {
                    let id = db.begin_attempt(&a).await.unwrap();
                    db.finish_attempt(id, &outcome(AttemptResult::Fail, Some("communication"), 1000 + u, None)).await.unwrap();
                }
                let id = db.begin_attempt(&a).await.unwrap();
                let n = db.reserve_serial_for(id, "KB60", 1).await.unwrap().number;
                db.add_steps(id, &[StepRecord { name: "program".into(), ms: 5, ok: true, detail: String::new() }])
                    .await
                    .unwrap();
                db.finish_attempt(id, &outcome(AttemptResult::Pass, None, 2000 + u, Some(n))).await.unwrap();
            }
        }));
    }
    for s in slots {
        s.await.unwrap();
    }
    println!("CHILD-DONE");
}

const UNITS: u64 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_station_processes_share_one_postgres() {
    let (db, url) = fresh().await;
    // Both processes program every unit (each unit is seen at both stations), at the same time.
    let mut children = Vec::new();
    for (i, st) in ["line1-st1", "line1-st2"].iter().enumerate() {
        children.push(
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "station_child", "--ignored", "--nocapture", "--test-threads=1"])
                .env("FLASHLINE_CHILD_PG", &url)
                .env("FLASHLINE_CHILD_STATION", st)
                .env("FLASHLINE_CHILD_INDEX", i.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    for c in children {
        let out = wait_with_timeout(c, Duration::from_secs(45));
        assert!(String::from_utf8_lossy(&out.stdout).contains("CHILD-DONE"), "child failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    // Every unit: attempts from both stations, numbered 1..n without gap or duplicate.
    let mut seen_ids = HashSet::new();
    let mut numbers: HashMap<u64, u64> = HashMap::new();
    for u in 0..UNITS {
        let h = db.unit_history(&format!("KB-{u:04}")).await.unwrap().expect("unit recorded");
        let expect = if u % 5 < 2 { 3 } else { 2 };
        assert_eq!(h.attempts.len(), expect, "unit {u}");
        let nos: Vec<u64> = h.attempts.iter().map(|a| a.attempt_no).collect();
        assert_eq!(nos, (1..=expect as u64).collect::<Vec<_>>(), "unit {u}");
        let stations: HashSet<&str> = h.attempts.iter().map(|a| a.station.as_str()).collect();
        assert_eq!(stations.len(), 2);
        for a in &h.attempts {
            assert!(seen_ids.insert(a.id), "attempt id {} used twice", a.id);
            if let Some(n) = a.serial_number {
                let owner = *numbers.entry(n).or_insert(u);
                assert_eq!(owner, u, "serial number {n} given to two units");
            }
        }
    }
    // Every unit got a number of its own. (A unit keeps its number across stations once it is
    // used; here both stations program each unit at the same moment, so the second may be
    // given a fresh one while the first is still reserved — never another unit's.)
    let units_with_numbers: HashSet<u64> = numbers.values().copied().collect();
    assert_eq!(units_with_numbers.len() as u64, UNITS, "every passing unit consumed a number of its own");
    assert!(numbers.len() as u64 <= 2 * UNITS);

    // The combined report adds up: per station and overall.
    let total = report::yield_report(&db, &Filters::default(), GroupBy::None).await.unwrap();
    let t = &total.total;
    assert_eq!(t.units, UNITS);
    assert_eq!(t.attempts, 2 * UNITS + 2 * UNITS / 5);
    assert_eq!(t.final_pass, UNITS);
    let by = report::yield_report(&db, &Filters::default(), GroupBy::Station).await.unwrap();
    let per: HashMap<&str, &report::YieldRow> = by.groups.iter().map(|g| (g.key.as_str(), g)).collect();
    for (i, st) in ["line1-st1", "line1-st2"].iter().enumerate() {
        let g = per[st];
        assert_eq!(g.units, UNITS, "{st}");
        assert_eq!(g.attempts, UNITS + UNITS / 5, "{st}");
        assert_eq!(g.first_pass, UNITS - UNITS / 5, "{st}: units {i} mod 5 failed first here");
        assert_eq!(g.final_pass, UNITS, "{st}");
        assert_eq!(g.pareto, vec![report::ParetoEntry { class: "communication".into(), count: UNITS / 5, share: 1.0 }]);
    }
    assert_eq!(by.groups.iter().map(|g| g.attempts).sum::<u64>(), t.attempts);
}

fn wait_with_timeout(mut c: std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if c.try_wait().unwrap().is_some() {
            return c.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = c.kill();
            let out = c.wait_with_output().unwrap();
            panic!("station child did not finish within {limit:?}:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
