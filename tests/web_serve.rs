//! `run --serve` keeps the station up after the scan input ends (systemd runs it with stdin
//! null) until SIGTERM or Stop; `flashline serve` shows the records read-only and follows them.

mod web_support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use web_support::*;

const STATION: &str = "station: web-srv
slots:
  - { name: S1, programmer: sim }
  - { name: S2, programmer: sim }
  - { name: S3, programmer: sim, fault: wrong-chip, fault_rate: 1.0 }
";

fn recipe() -> String {
    repo().join("recipes/planck-rev4/recipe.yaml").display().to_string()
}

fn write_scans(dir: &Path, name: &str, lines: &[&str]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n")).unwrap();
    p.display().to_string()
}

fn snapshot(p: &Proc) -> serde_json::Value {
    let r = http(p.addr, "GET", "/api/snapshot", &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn with_serve_the_run_outlives_its_scan_file_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let station = station_file(dir.path(), STATION);
    let db = dir.path().join("line.db");
    let scans = write_scans(dir.path(), "scans.txt", &["S1:PL4-000001", "S2:PL4-000002", "S3:PL4-000003"]);
    let mut p = Proc::start(
        &["run", &recipe(), "--station", station.to_str().unwrap(), "--db", db.to_str().unwrap(), "--scans", &scans, "--serve", "127.0.0.1:0"],
        dir.path(),
    );
    wait_until(60, "three attempts on the dashboard", || snapshot(&p)["model"]["totals"]["attempts"] == 3);
    // The scan file has ended; the station still runs and still takes scans from the dashboard.
    assert!(p.child.as_mut().unwrap().try_wait().unwrap().is_none(), "the run ended with its scan file: {}", p.stderr());
    let r = http(p.addr, "POST", "/api/scan", &[("Content-Type", "application/json")], Some(r#"{"line":"S1:PL4-000004"}"#));
    assert_eq!(r.json()["ok"], true, "{}", r.body);
    wait_until(60, "the dashboard scan to finish", || snapshot(&p)["model"]["totals"]["attempts"] == 4);
    // Retest from the dashboard: the wrong-chip board in S3 gets a second attempt.
    let r = http(p.addr, "POST", "/api/retest", &[("Content-Type", "application/json")], Some(r#"{"slot":"S3"}"#));
    assert_eq!(r.json()["ok"], true, "{}", r.body);
    wait_until(60, "the retest to finish", || snapshot(&p)["model"]["totals"]["attempts"] == 5);
    assert_eq!(sql(&db, "select count(*) from attempts a join units u on u.id=a.unit_id where u.serial='PL4-000003'"), "2");

    let st = p.terminate(Duration::from_secs(20)).expect("exits on SIGTERM");
    assert!(st.success(), "{st:?}: {}", p.stderr());
    let out = p.stdout.lock().unwrap().clone();
    assert!(out.contains("5 attempts: 3 passed, 2 failed"), "{out}");
    assert_eq!(sql(&db, "select count(*) from attempts where result='running'"), "0");
}

#[test]
fn stop_on_the_dashboard_ends_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let station = station_file(dir.path(), STATION);
    let db = dir.path().join("line.db");
    let mut p = Proc::start(
        &["run", &recipe(), "--station", station.to_str().unwrap(), "--db", db.to_str().unwrap(), "--scans", "-", "--serve", "127.0.0.1:0"],
        dir.path(),
    );
    let r = http(p.addr, "POST", "/api/scan", &[("Content-Type", "application/json")], Some(r#"{"line":"PL4-000010"}"#));
    assert_eq!(r.json()["ok"], true, "{}", r.body);
    let r = http(p.addr, "POST", "/api/stop", &[("Content-Type", "application/json")], Some("{}"));
    assert_eq!(r.json()["ok"], true, "{}", r.body);
    let child = p.child.as_mut().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the run did not end after Stop: {}", p.stderr());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{}", p.stderr());
    // The board in the fixture finished and was recorded.
    assert_eq!(sql(&db, "select result from attempts"), "pass");
}

#[test]
fn serve_shows_the_records_read_only_and_follows_them() {
    let dir = tempfile::tempdir().unwrap();
    let station = station_file(dir.path(), STATION);
    let db = dir.path().join("line.db");
    let batch = |name: &str, lines: &[&str]| {
        let scans = write_scans(dir.path(), name, lines);
        let out = Command::new(bin())
            .args(["run", &recipe(), "--station", station.to_str().unwrap(), "--db", db.to_str().unwrap(), "--scans", &scans])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    batch("a.txt", &["S1:PL4-000001", "S2:PL4-000002", "S3:PL4-000003", "PL4-BAD", "S1:PL4-000004"]);

    let p = Proc::start(&["serve", "--db", db.to_str().unwrap(), "--bind", "127.0.0.1:0"], dir.path());
    let s = snapshot(&p);
    assert_eq!(s["access"]["read_only"], true);
    let m = &s["model"];
    assert_eq!(m["mode"], "records");
    assert_eq!(m["station"], "web-srv");
    let (pass, fail, errors, attempts, units) = db_counts(&db, "web-srv");
    assert_eq!((pass, fail, attempts), (3, 1, 4));
    let t = &m["totals"];
    assert_eq!((t["passed"].as_u64(), t["failed"].as_u64(), t["errors"].as_u64()), (Some(pass), Some(fail), Some(errors)));
    assert_eq!((t["attempts"].as_u64(), t["units"].as_u64()), (Some(attempts), Some(units)));
    assert_eq!(t["rejected_scans"], 1);
    assert_eq!(m["refused"][0]["raw"], "PL4-BAD");
    // One tile per slot with its latest unit; the failed one carries class and hint.
    let tiles = m["tiles"].as_array().unwrap();
    assert_eq!(tiles.len(), 3);
    let s1 = tiles.iter().find(|t| t["slot"] == "S1").unwrap();
    assert_eq!((s1["serial"].as_str(), s1["state"].as_str()), (Some("PL4-000004"), Some("pass")));
    let s3 = tiles.iter().find(|t| t["slot"] == "S3").unwrap();
    assert_eq!(s3["state"], "fail");
    assert_eq!(s3["failure_class"], "wrong_chip");
    assert_eq!(s3["hint"], flashline::error::FailureClass::WrongChip.hint());
    assert_eq!(m["recent"].as_array().unwrap().len(), 4);
    let today = http(p.addr, "GET", "/api/today", &[], None).json();
    assert_eq!(today["units"].as_u64(), Some(units));
    assert_eq!(today["pareto"][0]["class"], "wrong_chip");
    let svg = http(p.addr, "GET", "/api/charts.svg", &[], None);
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    assert!(svg.body.contains("Failure Pareto") && svg.body.contains("wrong_chip"));

    // Read-only: no scans, retests or stop from here.
    for (path, body) in [("/api/scan", r#"{"line":"PL4-000009"}"#), ("/api/retest", r#"{"slot":"S3"}"#), ("/api/stop", "{}")] {
        let r = http(p.addr, "POST", path, &[("Content-Type", "application/json")], Some(body));
        assert_eq!(r.status, 409, "POST {path}");
        assert!(r.json()["message"].as_str().unwrap().contains("read-only"));
    }

    // Another batch lands in the same database: the view follows (polled).
    batch("b.txt", &["S2:PL4-000005", "S3:PL4-000006"]);
    wait_until(20, "the dashboard to show the new attempts", || snapshot(&p)["model"]["totals"]["attempts"] == 6);
    let m = snapshot(&p)["model"].clone();
    assert_eq!(m["totals"]["failed"], 2);
    let newest: Vec<&str> = m["recent"].as_array().unwrap()[..2].iter().map(|r| r["serial"].as_str().unwrap()).collect();
    assert!(newest.contains(&"PL4-000005") && newest.contains(&"PL4-000006"), "{newest:?}");
}

#[test]
fn serve_without_a_database_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin()).args(["serve", "--db"]).arg(dir.path().join("none.db")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no records database"), "{err}");
}
