//! The station end to end: simulated slots, real SQLite files, the real binary for crash tests.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flashline::db::Db;
use flashline::station::{SlotStatus, Station, Submit, Supervisor};

mod support;
use support::sql;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn recipe() -> PathBuf {
    repo().join("recipes/planck-rev4/recipe.yaml")
}

fn station_yaml(dir: &Path, body: &str) -> Station {
    let p = dir.join("station.yaml");
    std::fs::write(&p, body).unwrap();
    Station::load(&p).unwrap()
}

async fn start(dir: &Path, station: Station) -> (Supervisor, Db, String) {
    let url = format!("sqlite://{}", dir.join("line.db").display());
    let db = Db::connect(&url).await.unwrap();
    let production = Arc::new(flashline::build::prepare(&recipe()).unwrap());
    let sup = Supervisor::start(station, production, db.clone(), "tester".into()).await.unwrap();
    (sup, db, url)
}

/// (serial, attempt_no, slot, result, failure_class) for every attempt, via the real SQLite file.
fn attempts(db_path: &Path) -> Vec<(String, i64, String, String, Option<String>)> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys,json; c=sqlite3.connect(sys.argv[1]); \
             print(json.dumps(list(c.execute('select u.serial,a.attempt_no,a.slot,a.result,a.failure_class from attempts a join units u on u.id=a.unit_id order by a.id'))))",
        )
        .arg(db_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}


#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_slots_account_for_every_unit() {
    let dir = tempfile::tempdir().unwrap();
    let mut y = String::from("station: big\nslots:\n");
    for i in 0..64 {
        y.push_str(&format!("  - {{ name: S{i:02}, programmer: sim }}\n"));
    }
    let (sup, _db, _) = start(dir.path(), station_yaml(dir.path(), &y)).await;
    let sup = Arc::new(sup);
    let n = 256;
    for i in 0..n {
        let r = sup.submit(&format!("PL4-{:06}", 100_000 + i)).await;
        assert!(matches!(r, Submit::Queued { .. }), "{r:?}");
    }
    let totals = sup.finish().await;
    assert_eq!(totals.attempts, n as u64);
    assert_eq!(totals.passed, n as u64);
    let rows = attempts(&dir.path().join("line.db"));
    assert_eq!(rows.len(), n);
    let serials: HashSet<_> = rows.iter().map(|r| r.0.clone()).collect();
    assert_eq!(serials.len(), n, "every unit exactly once");
    assert!(rows.iter().all(|r| r.3 == "pass" && r.1 == 1));
    let slots: HashSet<_> = rows.iter().map(|r| r.2.clone()).collect();
    assert!(slots.len() > 32, "work spread over the slots, got {}", slots.len());
    // Serial numbers: one per passing unit, no duplicates.
    let numbers = sql(&dir.path().join("line.db"), "select count(distinct serial_number), count(serial_number) from attempts");
    assert_eq!(numbers, format!("{n}|{n}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_is_classified_while_other_slots_pass() {
    // ST: 0x0006 holds 0x57 (a vector's jmp target), so its bit 0 stuck at 0 must fail verify.
    let dir = tempfile::tempdir().unwrap();
    let y = "station: faults\nslots:\n\
  - { name: OK1, programmer: sim }\n\
  - { name: OK2, programmer: sim }\n\
  - { name: NT, programmer: sim, fault: no-target }\n\
  - { name: NF, programmer: sim, fault: no-target-ff }\n\
  - { name: WC, programmer: sim, fault: wrong-chip }\n\
  - { name: FL, programmer: sim, fault: 'flaky:0.001' }\n\
  - { name: ST, programmer: sim, fault: 'stuck:0x0006' }\n\
  - { name: SL, programmer: sim, fault: 'slow:1000' }\n\
  - { name: UP, programmer: sim, fault: 'unplug:5' }\n";
    let (sup, _db, _) = start(dir.path(), station_yaml(dir.path(), y)).await;
    let expect: HashMap<&str, (&str, Option<&str>)> = [
        ("OK1", ("pass", None)),
        ("OK2", ("pass", None)),
        ("NT", ("fail", Some("no_target"))),
        ("NF", ("fail", Some("no_target"))),
        ("WC", ("fail", Some("wrong_chip"))),
        ("FL", ("fail", Some("communication"))),
        ("ST", ("fail", Some("verify_flash"))),
        ("SL", ("fail", Some("prog_enable"))),
        ("UP", ("error", Some("programmer_gone"))),
    ]
    .into_iter()
    .collect();
    for (i, slot) in expect.keys().enumerate() {
        assert!(matches!(sup.submit(&format!("{slot}:PL4-{:06}", i + 1)).await, Submit::Queued { .. }));
    }
    // Wait for the batch, then the unplugged slot must be offline and refuse work.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sup.totals().attempts < expect.len() as u64 {
        assert!(Instant::now() < deadline, "batch did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status: HashMap<String, SlotStatus> = sup.slot_status().into_iter().collect();
    match &status["UP"] {
        SlotStatus::Offline { reason } => assert!(reason.contains("disconnected") || reason.contains("programmer"), "{reason}"),
        s => panic!("unplugged slot should be offline, is {s:?}"),
    }
    assert_eq!(status["OK1"], SlotStatus::Idle);
    match sup.submit("UP:PL4-000099").await {
        Submit::Rejected { reason } => assert!(reason.contains("offline"), "{reason}"),
        r => panic!("{r:?}"),
    }
    sup.finish().await;
    let rows = attempts(&dir.path().join("line.db"));
    assert_eq!(rows.len(), expect.len());
    for (serial, _, slot, result, class) in &rows {
        let (r, c) = expect[slot.as_str()];
        assert_eq!((result.as_str(), class.as_deref()), (r, c), "slot {slot} unit {serial}");
    }
    let msgs = sql(&dir.path().join("line.db"), "select slot || ': ' || message from attempts where message is not null order by slot");
    for line in msgs.lines() {
        assert!(line.contains(" — "), "operator message without a hint: {line}");
    }
    assert_eq!(sql(&dir.path().join("line.db"), "select count(*) from rejected_scans"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescan_after_failure_is_a_second_attempt_and_bad_scans_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let y = "station: retest\nslots:\n  - { name: BAD, programmer: sim, fault: no-target }\n  - { name: GOOD, programmer: sim }\n";
    let (sup, _db, _) = start(dir.path(), station_yaml(dir.path(), y)).await;
    assert!(matches!(sup.submit("BAD:PL4-000042").await, Submit::Queued { .. }));
    let deadline = Instant::now() + Duration::from_secs(30);
    while sup.totals().attempts < 1 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(sup.submit("GOOD:PL4-000042").await, Submit::Queued { .. }));
    match sup.submit("PL4-42").await {
        Submit::Rejected { reason } => assert!(reason.contains("pattern"), "{reason}"),
        r => panic!("{r:?}"),
    }
    let totals = sup.finish().await;
    assert_eq!((totals.attempts, totals.passed, totals.failed, totals.units, totals.units_passed), (2, 1, 1, 1, 1));
    let rows = attempts(&dir.path().join("line.db"));
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].1, rows[0].3.as_str()), (1, "fail"));
    assert_eq!((rows[1].1, rows[1].3.as_str()), (2, "pass"));
    assert_eq!(rows[0].0, rows[1].0);
    assert_eq!(sql(&dir.path().join("line.db"), "select count(*) from units"), "1");
    assert_eq!(sql(&dir.path().join("line.db"), "select raw from rejected_scans"), "PL4-42");
    // Only the passing attempt consumed a serial number, and it is the first one.
    assert_eq!(sql(&dir.path().join("line.db"), "select group_concat(coalesce(serial_number,'-')) from attempts order by id"), "-,1");
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_flashline")
}

#[test]
fn kill_dash_nine_mid_batch_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("station.yaml");
    std::fs::write(
        &st,
        "station: crashy\nslots:\n  - { name: S1, programmer: sim, timing: true }\n  - { name: S2, programmer: sim, timing: true }\n  - { name: S3, programmer: sim, timing: true }\n",
    )
    .unwrap();
    let scans = dir.path().join("scans.txt");
    let serials: Vec<String> = (1..=30).map(|i| format!("PL4-{:06}", 500 + i)).collect();
    std::fs::write(&scans, serials.join("\n")).unwrap();
    let db = dir.path().join("crash.db");
    let mut child = Command::new(bin())
        .args(["run", recipe().to_str().unwrap(), "--station", st.to_str().unwrap(), "--scans", scans.to_str().unwrap(), "--json"])
        .args(["--db", db.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Let it finish a few units and be in the middle of others (each timed unit takes ~2–3 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let done = if db.exists() { sql(&db, "select count(*) from attempts where result != 'running'").parse::<u32>().unwrap_or(0) } else { 0 };
        let running = if db.exists() { sql(&db, "select count(*) from attempts where result = 'running'").parse::<u32>().unwrap_or(0) } else { 0 };
        if done >= 3 && running >= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "station never got going");
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let running_before = sql(&db, "select count(*) from attempts where result = 'running'");
    assert_ne!(running_before, "0");

    // Restart with the rest of the scans: startup marks the dead attempts interrupted.
    let done: HashSet<String> = sql(&db, "select u.serial from attempts a join units u on u.id = a.unit_id where a.result = 'pass'").lines().map(str::to_string).collect();
    let rest: Vec<&String> = serials.iter().filter(|s| !done.contains(*s)).collect();
    std::fs::write(&scans, rest.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")).unwrap();
    let st2 = dir.path().join("station2.yaml");
    std::fs::write(&st2, "station: crashy\nslots:\n  - { name: S1, programmer: sim }\n  - { name: S2, programmer: sim }\n").unwrap();
    let out = Command::new(bin())
        .args(["run", recipe().to_str().unwrap(), "--station", st2.to_str().unwrap(), "--scans", scans.to_str().unwrap()])
        .args(["--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sql(&db, "select count(*) from attempts where result = 'running'"), "0");
    assert_eq!(sql(&db, "select count(*) from attempts where result = 'interrupted'"), running_before);
    // Every unit is there exactly once, and every one has passed by now.
    assert_eq!(sql(&db, "select count(*), count(distinct serial) from units"), "30|30");
    let passed: HashSet<String> = sql(&db, "select distinct u.serial from attempts a join units u on u.id = a.unit_id where a.result = 'pass'").lines().map(str::to_string).collect();
    assert_eq!(passed.len(), 30);
    // No serial number handed to two units (a unit retested after the crash takes back the
    // number its interrupted attempt may have written: it keeps one number for life).
    assert_eq!(
        sql(&db, "select count(*) from (select serial_number from attempts where serial_number is not null group by serial_number having count(distinct unit_id) > 1)"),
        "0"
    );
    assert_eq!(sql(&db, "pragma integrity_check"), "ok");
}

#[test]
fn dangerous_fuse_recipe_never_reaches_a_programmer() {
    let dir = tempfile::tempdir().unwrap();
    let src = repo().join("recipes/planck-rev4");
    let r = dir.path().join("recipe.yaml");
    // SPIEN unprogrammed (bit 5 of the high fuse set): ISP would be locked out after this board.
    let text = std::fs::read_to_string(src.join("recipe.yaml")).unwrap();
    let text = text
        .replace("fw/", &format!("{}/fw/", src.display()))
        .replace("bl/", &format!("{}/bl/", src.display()))
        .replace("lock: 0x2F", "lock: 0x2F\nfuses: { low: 0x5E, high: 0xF9, extended: 0xF3 }");
    std::fs::write(&r, text).unwrap();
    let st = dir.path().join("station.yaml");
    std::fs::write(&st, "station: x\nslots:\n  - { name: S1, programmer: sim }\n").unwrap();
    let db = dir.path().join("x.db");
    let scans = dir.path().join("scans.txt");
    std::fs::write(&scans, "PL4-000001\n").unwrap();
    let out = Command::new(bin())
        .args(["run", r.to_str().unwrap(), "--station", st.to_str().unwrap(), "--scans", scans.to_str().unwrap(), "--db", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SPIEN"), "{err}");
    assert!(!db.exists() || sql(&db, "select count(*) from attempts") == "0");
}

#[test]
fn bad_station_file_is_a_config_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("station.yaml");
    std::fs::write(&st, "station: x\nslots:\n  - { name: S1, programmer: sim, faultt: flaky }\n").unwrap();
    let out = Command::new(bin())
        .args(["run", recipe().to_str().unwrap(), "--station", st.to_str().unwrap(), "--scans", "/dev/null"])
        .args(["--db", dir.path().join("x.db").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("station.yaml:3:") && err.contains("faultt"), "{err}");
}


async fn wait_attempts(sup: &Supervisor, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while sup.totals().attempts < n {
        assert!(Instant::now() < deadline, "only {} of {n} attempts finished", sup.totals().attempts);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_totals_count_units_from_the_records_and_restart_with_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let y = "station: totals\nslots:\n  - { name: BAD, programmer: sim, fault: no-target }\n  - { name: GOOD, programmer: sim }\n";
    let (sup, db, _) = start(dir.path(), station_yaml(dir.path(), y)).await;
    // A: fail then pass (counts as passed); B: pass then fail (no longer counts as passed).
    let steps = [("BAD:PL4-000001", 1), ("GOOD:PL4-000001", 2), ("GOOD:PL4-000002", 3), ("BAD:PL4-000002", 4)];
    let mut seen = Vec::new();
    for (scan, n) in steps {
        assert!(matches!(sup.submit(scan).await, Submit::Queued { .. }), "{scan}");
        wait_attempts(&sup, n).await;
        let t = sup.totals();
        seen.push((t.units, t.units_passed));
    }
    assert_eq!(seen, vec![(1, 0), (1, 1), (2, 2), (2, 1)]);
    sup.finish().await;
    drop(db);

    // A new session on the same records counts only what it sees.
    let (sup, _db, _) = start(dir.path(), station_yaml(dir.path(), y)).await;
    assert_eq!((sup.totals().units, sup.totals().units_passed), (0, 0));
    assert!(matches!(sup.submit("GOOD:PL4-000002").await, Submit::Queued { .. }));
    wait_attempts(&sup, 1).await;
    let t = sup.finish().await;
    assert_eq!((t.attempts, t.units, t.units_passed), (1, 1, 1));
    assert_eq!(sql(&dir.path().join("line.db"), "select count(*) from attempts"), "5");
}

/// A simulated slot behind a USB bridge (`bridge:`) runs the emulated ArduinoISP with the real
/// avrisp driver, and keeps its board on the rack like any simulated slot: the chip taken back
/// out carries the serial number the record says it passed with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_slot_programs_through_the_emulated_arduinoisp_and_keeps_its_chip() {
    let dir = tempfile::tempdir().unwrap();
    let y = "station: bridged\nsim_boards: rack\nslots:\n  - { name: B1, programmer: sim, timing: true, bridge: cdc }\n";
    let (sup, _db, _) = start(dir.path(), station_yaml(dir.path(), y)).await;
    assert!(matches!(sup.submit("PL4-000777").await, Submit::Queued { .. }));
    let totals = sup.finish().await;
    assert_eq!((totals.attempts, totals.passed), (1, 1), "{totals:?}");
    let n: u64 = sql(&dir.path().join("line.db"), "select serial_number from attempts").parse().unwrap();
    let rack = flashline::sim::boards::BoardRack::open(dir.path().join("rack")).unwrap();
    let chip = rack.load("PL4-000777").unwrap().expect("the board is back on the rack");
    assert_eq!(&chip.eeprom[0x3F0..0x3F8], format!("{n:08}").as_bytes());
}
