//! Issue 11: the dashboard survives its network. A flood of idle and half-sent connections
//! does not starve the station (units keep being programmed and recorded, the page loads),
//! the server holds a bounded number of descriptors, idle sockets are closed, and the
//! post-login redirect never leaves the server.

mod web_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use web_support::*;

const STATION: &str = "station: web-limits
slots:
  - { name: S1, programmer: sim }
  - { name: S2, programmer: sim }
  - { name: S3, programmer: sim }
";

/// Descriptors the process `pid` has open.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn two_thousand_idle_connections_do_not_starve_the_station() {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    // The station gets a tight descriptor limit (inherited at spawn): 1024, below the flood.
    let station_limit = 1024.min(hard);
    setrlimit(Resource::RLIMIT_NOFILE, station_limit, hard).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let recipe = recipe_without_pattern(dir.path());
    let station = station_file(dir.path(), STATION);
    let db = dir.path().join("line.db");
    let p = Proc::start(
        &[
            "run",
            recipe.to_str().unwrap(),
            "--station",
            station.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--scans",
            "-",
            "--serve",
            "127.0.0.1:0",
        ],
        dir.path(),
    );
    // The test itself needs room for the flood.
    let flood = 2000u64;
    assert!(hard >= flood + 200, "hard descriptor limit {hard} is too low for this test");
    setrlimit(Resource::RLIMIT_NOFILE, (flood + 500).max(soft).min(hard), hard).unwrap();

    let a = p.addr;
    let mut idle = Vec::new();
    for i in 0..flood {
        let mut s = TcpStream::connect_timeout(&a, Duration::from_secs(5)).expect("connect");
        if i % 2 == 1 {
            // Half of them start a request and never finish its headers (slowloris).
            let _ = s.write_all(format!("GET / HTTP/1.1\r\nHost: {a}\r\nX-Slow: ").as_bytes());
        }
        idle.push(s);
    }
    assert_eq!(idle.len() as u64, flood);
    let fds = open_fds(p.pid());
    assert!(fds < station_limit as usize, "the station holds {fds} descriptors with the flood open (limit {station_limit})");

    // Units keep being programmed and recorded while the flood stays open.
    let serials: Vec<String> = (1..=6).map(|i| format!("FLOOD-{i:03}")).collect();
    for s in &serials {
        let r = http(a, "POST", "/api/scan", &[("Content-Type", "application/json")], Some(&format!(r#"{{"line":"{s}"}}"#)));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.json()["ok"], true, "{r:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (pass, _, _, total, _) = db_counts(&db, "web-limits");
        if pass == serials.len() as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "{pass} of {} units recorded as passed ({total} attempts):\n{}", serials.len(), p.stderr());
        std::thread::sleep(Duration::from_millis(200));
    }
    // The page and the snapshot still load; no slot went offline.
    let page = http(a, "GET", "/", &[], None);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<html") || page.body.contains("<!doctype") || page.body.contains("<!DOCTYPE"), "{}", page.body);
    let snap = http(a, "GET", "/api/snapshot", &[], None).json();
    let tiles = snap["model"]["tiles"].as_array().unwrap().clone();
    assert_eq!(tiles.len(), 3);
    assert!(tiles.iter().all(|t| t["state"] != "offline"), "{tiles:?}");
    let err = p.stderr();
    assert!(!err.contains("unable to open database file") && !err.contains("Too many open files"), "{err}");
    assert!(open_fds(p.pid()) < station_limit as usize);

    // The server closes idle and half-sent connections by itself (header / idle timeouts or
    // eviction): every socket of the flood reads end-of-file within a bounded wait.
    let deadline = Instant::now() + Duration::from_secs(90);
    for s in idle.iter_mut().step_by(97) {
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = [0u8; 512];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue, // e.g. a 408 for the half-sent request, then the close
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(_) => assert!(Instant::now() < deadline, "an idle connection stayed open"),
            }
        }
    }
    drop(idle);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
}

#[test]
fn login_redirects_only_to_a_local_path() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = recipe_without_pattern(dir.path());
    let station = station_file(dir.path(), STATION);
    let db = dir.path().join("line.db");
    let token = "corpus-token-0123456789";
    let p = Proc::start(
        &["run", recipe.to_str().unwrap(), "--station", station.to_str().unwrap(), "--db", db.to_str().unwrap(), "--scans", "-", "--serve", "127.0.0.1:0", "--token", token],
        dir.path(),
    );
    for (path, want) in [
        ("//evil.example/", "/"),
        ("/\\evil.example/", "/"),
        ("//evil.example/x/../", "/"),
        ("/login", "/"),
        ("/api/snapshot", "/api/snapshot"),
    ] {
        let r = http(p.addr, "GET", &format!("{path}?token={token}"), &[], None);
        assert_eq!(r.status, 303, "{path}: {r:?}");
        assert_eq!(r.header("location"), Some(want), "{path}");
    }
}
