//! Records on a real SQLite file: the station's write path, unit history, serial pool, crash
//! recovery after a real `kill -9` of a writer process, integrity.

use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use flashline::db::{AttemptOutcome, AttemptResult, Db, DbError, NewAttempt, StepRecord};
use sqlx::Row;

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
        programmer_identity: format!("sim:{slot}"),
        operator: "ana".into(),
        started_at: Utc.with_ymd_and_hms(2025, 6, 1, 8, minute, 0).unwrap(),
    }
}

fn outcome(result: AttemptResult, class: Option<&str>, minute: u32, serial_number: Option<u64>) -> AttemptOutcome {
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
        finished_at: Utc.with_ymd_and_hms(2025, 6, 1, 8, minute, 30).unwrap(),
        cycle_ms: 30_000,
        serial_number,
        serial_written: false,
        steps: Vec::new(),
    }
}

fn steps() -> Vec<StepRecord> {
    ["identify", "erase", "program", "verify"]
        .iter()
        .enumerate()
        .map(|(i, n)| StepRecord { name: n.to_string(), ms: 10 * (i as u64 + 1), ok: true, detail: String::new() })
        .collect()
}

async fn open(dir: &tempfile::TempDir) -> (Db, String) {
    let path = dir.path().join("flashline.db").to_string_lossy().to_string();
    (Db::connect(&path).await.expect("open sqlite"), path)
}

async fn raw(path: &str) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&format!("sqlite://{path}")).await.unwrap()
}

#[tokio::test]
async fn creates_the_file_in_wal_mode_with_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let (db, path) = open(&dir).await;
    assert!(std::path::Path::new(&path).is_file());
    let pool = raw(&path).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&pool).await.unwrap();
    assert_eq!(mode, "wal");
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetch_all(&pool).await.unwrap();
    for t in ["attempts", "programmers", "recipes", "rejected_scans", "serial_numbers", "stations", "steps", "units"] {
        assert!(tables.iter().any(|x| x == t), "table {t} missing: {tables:?}");
    }
    // Re-opening an existing database runs no migration twice.
    db.close().await;
    let again = Db::connect(&path).await.expect("reopen");
    assert_eq!(again.integrity_check().await.unwrap(), "ok");
}

#[tokio::test]
async fn bad_locations_are_refused_with_a_reason() {
    let e = Db::connect("mysql://root@localhost/x").await.unwrap_err();
    assert!(matches!(e, DbError::BadUrl { .. }), "{e}");
    assert!(e.to_string().contains("unsupported scheme"), "{e}");
    let e = Db::connect("/nonexistent-dir-flashline/x.db").await.unwrap_err();
    assert!(e.to_string().contains("/nonexistent-dir-flashline"), "{e}");
}

#[tokio::test]
async fn attempts_merge_across_stations_with_steps_and_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = open(&dir).await;
    let a1 = db.begin_attempt(&attempt("KB-0001", "line1-st1", "A1", 0)).await.unwrap();
    db.add_steps(a1, &steps()[..2]).await.unwrap();
    db.add_steps(a1, &steps()[2..]).await.unwrap();
    db.finish_attempt(a1, &outcome(AttemptResult::Fail, Some("verify_flash"), 0, None)).await.unwrap();
    let a2 = db.begin_attempt(&attempt("KB-0001", "line1-st2", "B3", 5)).await.unwrap();
    db.finish_attempt(a2, &outcome(AttemptResult::Pass, None, 5, None)).await.unwrap();
    assert_ne!(a1, a2);

    let h = db.unit_history("KB-0001").await.unwrap().expect("unit known");
    assert_eq!(h.serial, "KB-0001");
    assert_eq!(h.attempts.len(), 2);
    let (f, p) = (&h.attempts[0], &h.attempts[1]);
    assert_eq!((f.attempt_no, f.station.as_str(), f.slot.as_str()), (1, "line1-st1", "A1"));
    assert_eq!((p.attempt_no, p.station.as_str(), p.slot.as_str()), (2, "line1-st2", "B3"));
    assert_eq!(f.result, AttemptResult::Fail);
    assert_eq!(f.failure_class.as_deref(), Some("verify_flash"));
    assert_eq!(p.result, AttemptResult::Pass);
    assert_eq!(p.fuses_after.as_deref(), Some("L:5E H:D9 E:F3"));
    assert_eq!(p.signature.as_deref(), Some("1E9587"));
    assert_eq!(p.lock_after.as_deref(), Some("3C"));
    assert_eq!(p.bytes_written, Some(32768));
    assert_eq!(p.cycle_ms, Some(30_000));
    assert_eq!(p.programmer_identity, "sim:B3");
    assert_eq!(f.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["identify", "erase", "program", "verify"]);
    assert_eq!(f.steps[3].ms, 40);
    assert!(p.steps.is_empty());
    assert_eq!(h.latest_result(), Some(AttemptResult::Pass));
    assert_eq!(h.first_seen_at, Utc.with_ymd_and_hms(2025, 6, 1, 8, 0, 0).unwrap());
    assert!(db.unit_history("KB-9999").await.unwrap().is_none());
}

#[tokio::test]
async fn an_attempt_is_finished_once_and_only_if_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = open(&dir).await;
    let a = db.begin_attempt(&attempt("KB-0002", "st1", "A1", 1)).await.unwrap();
    db.finish_attempt(a, &outcome(AttemptResult::Pass, None, 1, None)).await.unwrap();
    let e = db.finish_attempt(a, &outcome(AttemptResult::Fail, Some("timeout"), 1, None)).await.unwrap_err();
    assert!(matches!(&e, DbError::NotRunning { state, .. } if state == "pass"), "{e}");
    let e = db.finish_attempt(flashline::db::AttemptId(424242), &outcome(AttemptResult::Pass, None, 1, None)).await.unwrap_err();
    assert!(matches!(e, DbError::NoAttempt(424242)), "{e}");
    let e = db.add_steps(flashline::db::AttemptId(424242), &steps()).await.unwrap_err();
    assert!(matches!(e, DbError::NoAttempt(424242)), "{e}");
    let e = db.begin_attempt(&attempt("  ", "st1", "A1", 1)).await.unwrap_err();
    assert!(e.to_string().contains("serial"), "{e}");
}

#[tokio::test]
async fn rejected_scans_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let (db, path) = open(&dir).await;
    db.reject_scan("st1", Some("A2"), "XX-12", "does not match ^KB-[0-9]{4}$").await.unwrap();
    db.reject_scan("st1", None, "=1+1", "does not match ^KB-[0-9]{4}$").await.unwrap();
    let pool = raw(&path).await;
    let rows = sqlx::query("SELECT s.name, r.slot, r.raw, r.reason FROM rejected_scans r JOIN stations s ON s.id = r.station_id ORDER BY r.id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<String, _>("name"), "st1");
    assert_eq!(rows[0].get::<Option<String>, _>("slot").as_deref(), Some("A2"));
    assert_eq!(rows[1].get::<Option<String>, _>("slot"), None);
    assert_eq!(rows[1].get::<String, _>("raw"), "=1+1");
}

fn state_of(pool: &[flashline::db::SerialRow], n: u64) -> Option<(&str, Option<&str>)> {
    pool.iter().find(|r| r.number == n).map(|r| (r.state.as_str(), r.unit.as_deref()))
}

#[tokio::test]
async fn serial_numbers_follow_their_state_machine() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _) = open(&dir).await;
    // 40 concurrent reservations (two pools, like two stations on one file), each for its own
    // attempt, never share a number.
    let (db2, _) = open(&dir).await;
    let mut tasks = Vec::new();
    for i in 0..40u32 {
        let d = if i % 2 == 0 { db.clone() } else { db2.clone() };
        tasks.push(tokio::spawn(async move {
            let a = d.begin_attempt(&attempt(&format!("KB-1{i:03}"), "st1", &format!("A{i}"), 1)).await.unwrap();
            (a, d.reserve_serial_for(a, "KB60", 1000).await.unwrap())
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    let mut numbers: Vec<u64> = got.iter().map(|(_, r)| r.number).collect();
    numbers.sort();
    assert_eq!(numbers, (1000..1040).collect::<Vec<_>>());
    assert!(got.iter().all(|(_, r)| !r.reused));
    let holder = |n: u64| got.iter().find(|(_, r)| r.number == n).unwrap().0;

    // Failing before the write frees the number: the next new unit gets the lowest free one.
    let mut fail = outcome(AttemptResult::Fail, Some("no_target"), 2, Some(1003));
    db.finish_attempt(holder(1003), &fail).await.unwrap();
    assert_eq!(state_of(&db.serial_pool(Some("KB60")).await.unwrap(), 1003).map(|s| s.0), Some("free"));
    let b = db.begin_attempt(&attempt("KB-0101", "st1", "A1", 3)).await.unwrap();
    assert_eq!(db.reserve_serial_for(b, "KB60", 1000).await.unwrap(), flashline::db::Reservation { number: 1003, reused: false });
    // Asking again for the same attempt (a retry) gives the same number, not a second one.
    assert_eq!(db.reserve_serial_for(b, "KB60", 1000).await.unwrap().number, 1003);
    // A pass consumes it and records it on the attempt.
    db.finish_attempt(b, &outcome(AttemptResult::Pass, None, 3, Some(1003))).await.unwrap();
    let h = db.unit_history("KB-0101").await.unwrap().unwrap();
    assert_eq!(h.attempts[0].serial_number, Some(1003));
    assert_eq!(state_of(&db.serial_pool(None).await.unwrap(), 1003), Some(("used", Some("KB-0101"))));
    // Finishing again with the same outcome (a retry after a lost commit answer) is a no-op;
    // anything else is refused.
    db.finish_attempt(b, &outcome(AttemptResult::Pass, None, 3, Some(1003))).await.unwrap();
    assert!(matches!(db.finish_attempt(b, &fail).await.unwrap_err(), DbError::NotRunning { .. }));
    assert_eq!(db.unit_history("KB-0101").await.unwrap().unwrap().attempts.len(), 1);

    // Failing after the write began voids the number: it may be in that chip.
    fail.serial_number = Some(1010);
    fail.serial_written = true;
    let owner = state_of(&db.serial_pool(None).await.unwrap(), 1010).unwrap().1.unwrap().to_string();
    db.finish_attempt(holder(1010), &fail).await.unwrap();
    assert_eq!(state_of(&db.serial_pool(None).await.unwrap(), 1010), Some(("void", Some(owner.as_str()))));
    // A pass claiming a number it does not hold (1010, void by another unit) is refused and
    // writes nothing: the attempt can still be finished, as an error.
    let c = db.begin_attempt(&attempt("KB-0102", "st1", "A2", 4)).await.unwrap();
    let e = db.finish_attempt(c, &outcome(AttemptResult::Pass, None, 4, Some(1010))).await.unwrap_err();
    assert!(matches!(e, DbError::SerialTaken { number: 1010, .. }), "{e}");
    db.finish_attempt(c, &outcome(AttemptResult::Error, Some("internal"), 4, None)).await.unwrap();
    // A new unit never gets a void number: after the 40 handed out comes 1040.
    let d = db.begin_attempt(&attempt("KB-0103", "st1", "A3", 5)).await.unwrap();
    assert_eq!(db.reserve_serial_for(d, "KB60", 1000).await.unwrap().number, 1040);
    // The unit whose chip may hold 1010 gets 1010 back on its retest, and a passed unit that is
    // reworked keeps 1003: a unit never collects numbers.
    let retest = db.begin_attempt(&attempt(&owner, "st1", "A4", 6)).await.unwrap();
    assert_eq!(db.reserve_serial_for(retest, "KB60", 1000).await.unwrap(), flashline::db::Reservation { number: 1010, reused: true });
    let rework = db.begin_attempt(&attempt("KB-0101", "st1", "A5", 7)).await.unwrap();
    assert_eq!(db.reserve_serial_for(rework, "KB60", 1000).await.unwrap(), flashline::db::Reservation { number: 1003, reused: true });
    // A reused number that fails is voided even "before the write": the chip may carry it.
    let mut f2 = outcome(AttemptResult::Fail, Some("no_target"), 7, Some(1003));
    f2.serial_written = true;
    db.finish_attempt(rework, &f2).await.unwrap();
    assert_eq!(state_of(&db.serial_pool(None).await.unwrap(), 1003), Some(("void", Some("KB-0101"))));
    // A different SKU has its own range.
    let e2 = db.begin_attempt(&attempt("KB-0104", "st1", "A6", 8)).await.unwrap();
    assert_eq!(db.reserve_serial_for(e2, "KB65", 1).await.unwrap().number, 1);
    assert_eq!(db.next_serial("KB60", 1000).await.unwrap(), 1041);
}

/// Child half of the crash test: begins attempts, reports their ids, then waits to be killed.
#[tokio::test]
#[ignore = "child half of kill_9_mid_batch_then_recovery_marks_running_attempts_interrupted"]
async fn crash_child() {
    let Ok(path) = std::env::var("FLASHLINE_CRASH_CHILD_DB") else { return };
    let db = Db::connect(&path).await.unwrap();
    let first = db.begin_attempt(&attempt("KB-0500", "crashy", "A1", 10)).await.unwrap();
    db.add_steps(first, &steps()[..1]).await.unwrap();
    db.finish_attempt(first, &outcome(AttemptResult::Pass, None, 10, None)).await.unwrap();
    for (i, slot) in ["A1", "A2", "A3"].iter().enumerate() {
        let id = db.begin_attempt(&attempt(&format!("KB-06{i:02}"), "crashy", slot, 11)).await.unwrap();
        let n = db.reserve_serial_for(id, "KB60", 7000).await.unwrap().number;
        println!("RUNNING {} {n}", id.0);
    }
    println!("READY");
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[tokio::test]
async fn kill_9_mid_batch_then_recovery_marks_running_attempts_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flashline.db").to_string_lossy().to_string();
    // Another station's running attempt must survive this station's recovery untouched.
    let db = Db::connect(&path).await.unwrap();
    let other = db.begin_attempt(&attempt("KB-0700", "neighbour", "Z1", 12)).await.unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("FLASHLINE_CRASH_CHILD_DB", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let done = line.contains("READY");
            let _ = tx.send(line);
            if done {
                break;
            }
        }
    });
    let mut running = Vec::new();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("child did not get ready within 30 s");
        // The harness may print its "test crash_child ... " prefix on the same line.
        if let Some((_, rest)) = line.split_once("RUNNING ") {
            let mut it = rest.split(' ');
            running.push((it.next().unwrap().parse::<i64>().unwrap(), it.next().unwrap().parse::<u64>().unwrap()));
        }
        if line.contains("READY") {
            break;
        }
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    assert_eq!(running.len(), 3);

    // The restarted station recovers its own rows only.
    let db = Db::connect(&path).await.unwrap();
    assert_eq!(db.integrity_check().await.unwrap(), "ok");
    assert_eq!(db.recover_interrupted("crashy").await.unwrap(), 3);
    assert_eq!(db.recover_interrupted("crashy").await.unwrap(), 0, "recovery is idempotent");
    for (i, (id, _)) in running.iter().enumerate() {
        let h = db.unit_history(&format!("KB-06{i:02}")).await.unwrap().expect("unit recorded before the crash");
        assert_eq!(h.attempts.len(), 1, "no duplicate");
        let a = &h.attempts[0];
        assert_eq!(a.id.0, *id);
        assert_eq!(a.result, AttemptResult::Interrupted);
        assert_eq!(a.failure_class.as_deref(), Some("interrupted"));
        assert!(a.message.as_deref().unwrap().contains("station stopped"), "{:?}", a.message);
        assert!(a.finished_at.is_some());
    }
    let done = db.unit_history("KB-0500").await.unwrap().unwrap();
    assert_eq!(done.attempts[0].result, AttemptResult::Pass, "finished work survives the crash");
    assert_eq!(done.attempts[0].steps.len(), 1);
    let n = db.unit_history("KB-0700").await.unwrap().unwrap();
    assert_eq!(n.attempts[0].result, AttemptResult::Running, "another station's job is not touched");
    db.finish_attempt(other, &outcome(AttemptResult::Pass, None, 12, None)).await.unwrap();
    // The serial numbers those attempts held are void (nobody knows whether they reached the
    // chips), noted on the interrupted attempts, and never handed to another unit.
    let pool = db.serial_pool(Some("KB60")).await.unwrap();
    for (i, (_, n)) in running.iter().enumerate() {
        let unit = format!("KB-06{i:02}");
        assert_eq!(state_of(&pool, *n), Some(("void", Some(unit.as_str()))));
        assert_eq!(db.unit_history(&unit).await.unwrap().unwrap().attempts[0].serial_number, Some(*n));
    }
    let highest = running.iter().map(|r| r.1).max().unwrap();
    assert_eq!(db.next_serial("KB60", 7000).await.unwrap(), highest + 1);
    assert_eq!(db.integrity_check().await.unwrap(), "ok");
}
