//! `flashline bench all --quick` runs end to end: every table is produced from real runs (timed
//! pty emulators, the real avrdude binary, the station with SQLite, the USB emulators, the
//! builder). Each run inside the bench checks that the target ended up holding the image, so a
//! zero exit status means every tool really programmed and verified. No timing assertions.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn bench_all_quick_runs_end_to_end() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let json = std::env::temp_dir().join(format!("flashline-bench-smoke-{}.json", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashline"))
        .args(["bench", "all", "--quick", "--root"])
        .arg(&root)
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flashline bench");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    // Bounded: a hung benchmark fails the test instead of hanging CI.
    let deadline = Instant::now() + Duration::from_secs(400);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("flashline bench all --quick did not finish within 400 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out_reader.join().unwrap();
    let err = err_reader.join().unwrap();
    assert!(status.success(), "bench failed ({status})\nstdout:\n{out}\nstderr:\n{err}");

    for title in ["### 1. Per-unit cycle", "### 2. avrdude vs flashline", "### 2b. USBasp / USBtinyISP", "### 2c. avrdude vs flashline on the same timed Bus Pirate emulator", "### 3. Scaling", "### 4. `flashline build`"] {
        assert!(out.contains(title), "missing table {title:?} in:\n{out}");
    }
    // The cycle table states the bound's arithmetic, the avrdude table the real avrdude's version.
    assert!(out.contains("× 10 bit / 115200 baud"), "{out}");
    assert!(out.contains("avrdude version 7."), "{out}");
    for row in ["| full |", "| written |", "| avrdude 7.1 -c avrisp", "| flashline flash (verify full)", "| flashline flash --verify written", "| usbasp |", "| usbtiny |", "| 1 × sim", "| 8 × sim", "| 1 × avrisp", "| 4 × avrisp"] {
        assert!(out.contains(row), "missing row {row:?} in:\n{out}");
    }

    // The JSON copy holds the same tables, each with rows.
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("bench --json file")).unwrap();
    let _ = std::fs::remove_file(&json);
    let tables = doc["tables"].as_array().expect("tables");
    assert_eq!(tables.len(), 6, "{doc}");
    assert!(tables.iter().all(|t| !t["rows"].as_array().unwrap().is_empty()));
    assert!(doc["machine"]["nproc"].as_u64().unwrap() >= 1);
}
