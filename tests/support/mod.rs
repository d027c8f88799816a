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
