//! Helpers shared by test binaries (each `tests/*.rs` is its own crate; include with `mod support;`).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Rows of a query on the SQLite file, read through Python's sqlite3 (another reader of the
/// real file, not our own code), cells joined by '|', rows by '\n'.
pub fn sql(db_path: &Path, q: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print('\\n'.join('|'.join(str(x) for x in r) for r in c.execute(sys.argv[2])))")
        .arg(db_path)
        .arg(q)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A current-thread tokio runtime for tests that drive async code from plain `#[test]`s.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Run a child (stdin closed) with a hard timeout; returns (success, stdout, stderr). A child
/// that overruns is killed and the test fails with its stderr.
pub fn run_child(cmd: &mut Command, limit: std::time::Duration) -> (bool, String, String) {
    use std::process::Stdio;
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return (status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{cmd:?} did not finish in {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// [`run_child`] with stdout and stderr joined (avrdude reports on stderr).
pub fn run_joined(cmd: &mut Command, limit: std::time::Duration) -> (bool, String) {
    let (ok, out, err) = run_child(cmd, limit);
    (ok, out + &err)
}
