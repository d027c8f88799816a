//! Records you can trust under load and faults, checked by invariants rather than one scenario:
//! many slots with high fault rates, hundreds of units, the serial number written to EEPROM,
//! two station processes on one database, database faults injected for real (a SQLite file at
//! its size cap, a PostgreSQL server stopped mid-batch), ten stations starting at once on a new
//! file. After every run the simulated chips are read back from their rack and the records are
//! read with sqlx directly (not through flashline's own queries).
//!
//! What must always hold (see `check`): no two chips carry the same number; every number in a
//! chip is `used` or `void` in the pool *by an attempt of that very unit*; a unit whose latest
//! attempt passed carries exactly the number that attempt recorded; every pool row agrees with
//! its attempt; nothing is left `running`; no step is recorded twice; the summary line's
//! totals equal the database.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flashline::sim::boards::{BoardRack, BoardState};

mod support;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn recipe() -> PathBuf {
    repo().join("recipes/planck-rev4/recipe.yaml")
}

/// Where and how the Planck recipe writes the serial number (recipes/planck-rev4/recipe.yaml).
const SERIAL_ADDR: usize = 0x3F0;
const SERIAL_LEN: usize = 8;

/// Eight untimed simulated slots, five of them with a fault on half their boards, sharing a
/// board rack in `rack`.
fn station_file(dir: &Path, name: &str, rack: &Path) -> PathBuf {
    let faults = ["flaky", "no-target", "wrong-chip", "stuck", "flaky:0.02"];
    let mut y = format!("station: {name}\nsim_boards: {}\nslots:\n", rack.display());
    for i in 0..8 {
        match faults.get(i) {
            Some(f) => y.push_str(&format!("  - {{ name: S{i}, programmer: sim, fault: '{f}', fault_rate: 0.5 }}\n")),
            None => y.push_str(&format!("  - {{ name: S{i}, programmer: sim }}\n")),
        }
    }
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, y).unwrap();
    p
}

/// Scans for units `first..first+n`, every seventh one scanned a second time later on (a retest
/// after a failure, or a rework after a pass: both must keep the unit's number).
fn scan_file(dir: &Path, name: &str, first: u32, n: u32) -> (PathBuf, u32) {
    let mut lines: Vec<String> = (first..first + n).map(|i| format!("PL4-{i:06}")).collect();
    let again: Vec<String> = (first..first + n).step_by(7).map(|i| format!("PL4-{i:06}")).collect();
    lines.extend(again);
    let p = dir.join(format!("{name}.scans"));
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    (p, lines.len() as u32)
}

fn station(db: &str, station: &Path, scans: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flashline"));
    c.args(["run", recipe().to_str().unwrap(), "--station", station.to_str().unwrap(), "--scans", scans.to_str().unwrap(), "--db", db, "--operator", "qa"]);
    c.env("RUST_LOG", "warn").stdin(Stdio::null());
    c
}

/// A running station process whose stdout lines arrive on a channel as they are printed.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Running {
    fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn flashline run");
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
        Running { child, lines, seen: Vec::new(), stderr }
    }

    /// Wait for a stdout line matching `pred` (bounded); returns it.
    fn wait_for(&mut self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + limit;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("no line {what} within {limit:?}; stdout so far:\n{}", self.seen.join("\n"));
                }
            }
        }
    }

    /// Wait until no line has come for `quiet` (the station is holding), bounded by `limit`.
    fn wait_quiet(&mut self, quiet: Duration, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            match self.lines.recv_timeout(quiet) {
                Ok(l) => self.seen.push(l),
                Err(mpsc::RecvTimeoutError::Timeout) => return,
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the station ended while it should hold:\n{}", self.seen.join("\n")),
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!("the station never held within {limit:?}:\n{}", self.seen.join("\n"));
            }
        }
    }

    /// Wait for the process to end (bounded); returns (exit code, all stdout, stderr).
    fn finish(mut self, limit: Duration) -> (i32, String, String) {
        let until = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
                    self.seen.push(l);
                }
                let err = self.stderr.join().unwrap();
                return (st.code().unwrap_or(-1), self.seen.join("\n"), err);
            }
            while let Ok(l) = self.lines.try_recv() {
                self.seen.push(l);
            }
            if Instant::now() > until {
                let _ = self.child.kill();
                panic!("station did not finish within {limit:?}; stdout:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The records as the database holds them.
#[derive(Debug, Default)]
struct Records {
    /// id → (unit serial, station, result, serial_number)
    attempts: HashMap<i64, (String, String, String, Option<i64>)>,
    /// (number, state, attempt_id)
    pool: Vec<(i64, String, Option<i64>)>,
    duplicate_steps: i64,
    rejected: i64,
}

const ATTEMPTS_SQL: &str = "SELECT a.id, u.serial, s.name, a.result, a.serial_number FROM attempts a \
     JOIN units u ON u.id = a.unit_id JOIN stations s ON s.id = a.station_id";
const POOL_SQL: &str = "SELECT number, state, attempt_id FROM serial_numbers WHERE sku = 'PLANCK-REV4'";
const DUP_STEPS_SQL: &str = "SELECT COUNT(*) FROM (SELECT attempt_id, name FROM steps GROUP BY attempt_id, name HAVING COUNT(*) > 1) d";
const REJECTED_SQL: &str = "SELECT COUNT(*) FROM rejected_scans";

/// The records through a plain sqlx pool of either kind (not flashline's own queries).
macro_rules! read_records {
    ($pool:expr) => {{
        let pool = $pool;
        let rows: Vec<(i64, String, String, String, Option<i64>)> = sqlx::query_as(ATTEMPTS_SQL).fetch_all(&pool).await.unwrap();
        let r = Records {
            attempts: rows.into_iter().map(|(id, u, s, r, n)| (id, (u, s, r, n))).collect(),
            pool: sqlx::query_as(POOL_SQL).fetch_all(&pool).await.unwrap(),
            duplicate_steps: sqlx::query_scalar(DUP_STEPS_SQL).fetch_one(&pool).await.unwrap(),
            rejected: sqlx::query_scalar(REJECTED_SQL).fetch_one(&pool).await.unwrap(),
        };
        pool.close().await;
        r
    }};
}

async fn read_sqlite(path: &Path) -> Records {
    read_records!(sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap())
}

async fn read_pg(url: &str) -> Records {
    read_records!(sqlx::PgPool::connect(url).await.unwrap())
}

/// The number a chip carries in its EEPROM, if any (ASCII digits at the recipe's address).
fn chip_number(b: &BoardState) -> Option<i64> {
    let f = b.eeprom.get(SERIAL_ADDR..SERIAL_ADDR + SERIAL_LEN)?;
    if f.iter().all(|c| c.is_ascii_digit()) {
        std::str::from_utf8(f).ok()?.parse().ok()
    } else {
        assert!(f.iter().all(|c| *c == 0xFF), "a chip holds a torn serial field: {f:02X?}");
        None
    }
}

/// Totals from the summary line `N attempts: P passed, F failed, E errors; U units, …`.
fn summary(stdout: &str) -> (i64, i64, i64, i64) {
    let line = stdout.lines().rev().find(|l| l.contains(" attempts: ")).unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    let nums: Vec<i64> = line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    (nums[0], nums[1], nums[2], nums[3])
}

struct Figures {
    attempts: usize,
    chips_with_numbers: usize,
    void: usize,
}

/// Every invariant, over the whole database and every chip on the rack.
fn check(r: &Records, boards: &[(String, BoardState)], runs: &[(&str, &str)]) -> Figures {
    // Nothing left running by clean exits; no step twice.
    let running: Vec<_> = r.attempts.iter().filter(|(_, a)| a.2 == "running").collect();
    assert!(running.is_empty(), "attempts left running: {running:?}");
    assert_eq!(r.duplicate_steps, 0, "a step recorded twice for one attempt");

    // No two chips carry one number, and every number in a chip belongs to that unit.
    let pool: HashMap<i64, (&str, Option<i64>)> = r.pool.iter().map(|(n, s, a)| (*n, (s.as_str(), *a))).collect();
    let mut carriers: HashMap<i64, &str> = HashMap::new();
    for (unit, b) in boards {
        let Some(n) = chip_number(b) else { continue };
        if let Some(other) = carriers.insert(n, unit) {
            panic!("serial number {n} is in two chips: {other} and {unit}");
        }
        let (state, owner) = pool.get(&n).copied().unwrap_or_else(|| panic!("chip {unit} carries {n}, which the pool never handed out"));
        assert!(state == "used" || state == "void", "chip {unit} carries {n}, which the pool says is {state}");
        let owner = owner.unwrap_or_else(|| panic!("number {n} in chip {unit} has no owner"));
        assert_eq!(r.attempts[&owner].0, *unit, "number {n} is in chip {unit} but the pool gives it to an attempt of {}", r.attempts[&owner].0);
    }

    // A unit whose latest attempt passed carries exactly that attempt's number.
    let chips: HashMap<&str, &BoardState> = boards.iter().map(|(u, b)| (u.as_str(), b)).collect();
    let mut latest: HashMap<&str, (i64, &str, Option<i64>)> = HashMap::new();
    for (id, (unit, _, result, n)) in &r.attempts {
        let e = latest.entry(unit).or_insert((*id, result, *n));
        if *id > e.0 {
            *e = (*id, result, *n);
        }
    }
    for (unit, (id, result, n)) in &latest {
        if *result == "pass" {
            let n = n.unwrap_or_else(|| panic!("passing attempt {id} of {unit} has no serial number"));
            let chip = chips.get(unit).unwrap_or_else(|| panic!("no chip on the rack for {unit}"));
            assert_eq!(chip_number(chip), Some(n), "{unit} passed with number {n} but its chip holds {:?}", chip_number(chip));
        }
    }

    // Every pool row agrees with its attempt.
    for (n, state, owner) in &r.pool {
        match (state.as_str(), owner) {
            ("free", None) => {}
            ("used", Some(a)) => {
                let (unit, _, result, num) = &r.attempts[a];
                assert_eq!(result, "pass", "number {n} used by attempt {a} ({unit}) which is {result}");
                assert_eq!(*num, Some(*n), "number {n} used by attempt {a} which records {num:?}");
            }
            ("void", Some(a)) => {
                let (unit, _, result, num) = &r.attempts[a];
                assert!(result != "pass" && result != "running", "number {n} void by attempt {a} ({unit}) which is {result}");
                assert_eq!(*num, Some(*n), "void number {n}: its attempt {a} does not record it");
            }
            other => panic!("pool row {n} is {other:?}"),
        }
    }

    // The totals each station printed equal what the database holds for it.
    for (station, stdout) in runs {
        let (attempts, passed, failed, errors) = summary(stdout);
        let mine: Vec<&String> = r.attempts.values().filter(|a| a.1 == *station).map(|a| &a.2).collect();
        let count = |want: &str| mine.iter().filter(|r| r.as_str() == want).count() as i64;
        assert_eq!(
            (attempts, passed, failed, errors),
            (mine.len() as i64, count("pass"), count("fail"), count("error")),
            "station {station}: printed totals differ from the records"
        );
    }
    Figures {
        attempts: r.attempts.len(),
        chips_with_numbers: carriers.len(),
        void: r.pool.iter().filter(|p| p.1 == "void").count(),
    }
}

fn rack_boards(rack: &Path) -> Vec<(String, BoardState)> {
    BoardRack::open(rack).unwrap().boards().unwrap()
}

fn no_offline(stdout: &str) {
    let off: Vec<&str> = stdout.lines().filter(|l| l.contains("OFFLINE")).collect();
    assert!(off.is_empty(), "slots went offline: {off:?}");
}

#[test]
fn five_hundred_units_on_faulty_slots_never_share_a_number() {
    let dir = tempfile::tempdir().unwrap();
    let rack = dir.path().join("rack");
    let db = dir.path().join("line.db");
    let st = station_file(dir.path(), "stress-1", &rack);
    let (scans, n) = scan_file(dir.path(), "stress-1", 0, 520);
    let (code, out, err) = Running::spawn(station(db.to_str().unwrap(), &st, &scans)).finish(Duration::from_secs(600));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    no_offline(&out);
    let r = support::rt().block_on(read_sqlite(&db));
    assert_eq!(r.attempts.len() as u32 + r.rejected as u32, n, "every scan is one recorded attempt or a recorded refusal");
    let f = check(&r, &rack_boards(&rack), &[("stress-1", &out)]);
    assert!(f.void > 0, "the faults never hit after the write: the test exercises too little");
    eprintln!("stress-1: {} attempts, {} chips carry numbers, {} void, 0 collisions", f.attempts, f.chips_with_numbers, f.void);
}

#[test]
fn two_station_processes_on_one_sqlite_file_share_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let rack = dir.path().join("rack");
    let db = dir.path().join("line.db");
    let (sa, sb) = (station_file(dir.path(), "st-a", &rack), station_file(dir.path(), "st-b", &rack));
    let (qa, na) = scan_file(dir.path(), "st-a", 0, 300);
    let (qb, nb) = scan_file(dir.path(), "st-b", 5000, 300);
    let a = Running::spawn(station(db.to_str().unwrap(), &sa, &qa));
    let b = Running::spawn(station(db.to_str().unwrap(), &sb, &qb));
    let (ca, oa, ea) = a.finish(Duration::from_secs(600));
    let (cb, ob, eb) = b.finish(Duration::from_secs(600));
    assert_eq!((ca, cb), (0, 0), "st-a:\n{oa}\n{ea}\nst-b:\n{ob}\n{eb}");
    no_offline(&oa);
    no_offline(&ob);
    let r = support::rt().block_on(read_sqlite(&db));
    assert_eq!(r.attempts.len() as u32 + r.rejected as u32, na + nb, "every scan is an attempt or a recorded refusal");
    let f = check(&r, &rack_boards(&rack), &[("st-a", &oa), ("st-b", &ob)]);
    eprintln!("two processes, SQLite: {} attempts, {} chips carry numbers, {} void, 0 collisions", f.attempts, f.chips_with_numbers, f.void);
}

/// A throwaway PostgreSQL cluster with a fresh database, or `None` (with the reason printed)
/// when the server binaries are not installed.
fn postgres() -> Option<(flashline::db::testing::TempPostgres, String)> {
    match flashline::db::testing::TempPostgres::start() {
        Ok(pg) => {
            let url = pg.url("postgres");
            Some((pg, url))
        }
        Err(e) => {
            panic!("PostgreSQL is needed for this test (apt-get install postgresql): {e}");
        }
    }
}

#[test]
fn two_station_processes_on_postgres_share_the_pool() {
    let Some((_pg, url)) = postgres() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rack = dir.path().join("rack");
    let (sa, sb) = (station_file(dir.path(), "pg-a", &rack), station_file(dir.path(), "pg-b", &rack));
    let (qa, na) = scan_file(dir.path(), "pg-a", 0, 260);
    let (qb, nb) = scan_file(dir.path(), "pg-b", 5000, 260);
    let a = Running::spawn(station(&url, &sa, &qa));
    let b = Running::spawn(station(&url, &sb, &qb));
    let (ca, oa, ea) = a.finish(Duration::from_secs(600));
    let (cb, ob, eb) = b.finish(Duration::from_secs(600));
    assert_eq!((ca, cb), (0, 0), "pg-a:\n{oa}\n{ea}\npg-b:\n{ob}\n{eb}");
    no_offline(&oa);
    no_offline(&ob);
    let r = support::rt().block_on(read_pg(&url));
    assert_eq!(r.attempts.len() as u32 + r.rejected as u32, na + nb, "every scan is an attempt or a recorded refusal");
    let f = check(&r, &rack_boards(&rack), &[("pg-a", &oa), ("pg-b", &ob)]);
    eprintln!("two processes, PostgreSQL: {} attempts, {} chips carry numbers, {} void, 0 collisions", f.attempts, f.chips_with_numbers, f.void);
}

#[test]
fn a_full_database_holds_the_line_then_resumes_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let rack = dir.path().join("rack");
    let db = dir.path().join("line.db");
    // A records file with a filler table, capped a few pages above its size: it fills up after
    // a few dozen attempts, as a full disk would.
    let cap = support::rt().block_on(async {
        flashline::db::Db::connect(db.to_str().unwrap()).await.unwrap().close().await;
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.unwrap();
        sqlx::query("CREATE TABLE test_filler (b BLOB)").execute(&pool).await.unwrap();
        for _ in 0..64 {
            sqlx::query("INSERT INTO test_filler VALUES (zeroblob(4000))").execute(&pool).await.unwrap();
        }
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await.unwrap();
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&pool).await.unwrap();
        pool.close().await;
        pages + 4
    });
    let st = station_file(dir.path(), "full-1", &rack);
    let (scans, n) = scan_file(dir.path(), "full-1", 0, 200);
    let url = format!("sqlite://{}?max_pages={cap}", db.display());
    let mut run = Running::spawn(station(&url, &st, &scans));
    let down = run.wait_for("RECORDS … unavailable", Duration::from_secs(300), |l| l.starts_with("RECORDS") && l.contains("unavailable"));
    assert!(down.contains("database or disk is full") && down.contains("no board will be programmed"), "{down}");
    // Near the cap a small write may still fit in a page's free room; soon nothing does and the
    // station holds (no line for 3 s: no job starts, no result). Then space is freed.
    run.wait_quiet(Duration::from_secs(3), Duration::from_secs(120));
    let held_at = run.seen.len();
    let freed_at = Instant::now();
    support::rt().block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.unwrap();
        sqlx::query("DELETE FROM test_filler").execute(&pool).await.unwrap();
        pool.close().await;
    });
    let up = run.wait_for("RECORDS … writable again", Duration::from_secs(120), |l| l.starts_with("RECORDS") && l.contains("writable again"));
    let resumed_in = freed_at.elapsed();
    let (code, out, err) = run.finish(Duration::from_secs(600));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    // While it held, the last thing the operator read was why.
    let before: Vec<&str> = out.lines().take(held_at).collect();
    let last_records = before.iter().rev().find(|l| l.starts_with("RECORDS")).unwrap();
    assert!(last_records.contains("unavailable"), "the station held without saying why: {last_records}");
    no_offline(&out);
    assert!(!out.contains("NOT RECORDED"), "{out}");
    let r = support::rt().block_on(read_sqlite(&db));
    assert_eq!(r.attempts.len() as u32 + r.rejected as u32, n, "no scan lost: every scan is one recorded attempt or refusal");
    let f = check(&r, &rack_boards(&rack), &[("full-1", &out)]);
    eprintln!("full database: {up}; resumed {:.1} s after space was freed; {} attempts, 0 lost, 0 collisions", resumed_in.as_secs_f64(), f.attempts);
}

#[test]
fn postgres_stopped_mid_batch_loses_nothing_and_the_station_resumes() {
    let Some((pg, url)) = postgres() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rack = dir.path().join("rack");
    let st = station_file(dir.path(), "pg-outage", &rack);
    let (scans, n) = scan_file(dir.path(), "pg-outage", 0, 300);
    let mut run = Running::spawn(station(&url, &st, &scans));
    // Let the batch get going, then take the server away.
    for _ in 0..20 {
        run.wait_for("a result", Duration::from_secs(120), |l| l.contains(" PASS ") || l.contains(" FAIL ") || l.contains(" ERROR "));
    }
    pg.stop().unwrap();
    let down = run.wait_for("RECORDS … unavailable", Duration::from_secs(120), |l| l.starts_with("RECORDS") && l.contains("unavailable"));
    // Slots finishing at the moment of the shutdown may still land a write; then the station
    // holds (nothing for 3 s) until the server is back.
    run.wait_quiet(Duration::from_secs(3), Duration::from_secs(120));
    let held_at = run.seen.len();
    let back_at = Instant::now();
    pg.start_again().unwrap();
    let up = run.wait_for("RECORDS … writable again", Duration::from_secs(120), |l| l.starts_with("RECORDS") && l.contains("writable again"));
    let resumed_in = back_at.elapsed();
    let (code, out, err) = run.finish(Duration::from_secs(600));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let before: Vec<&str> = out.lines().take(held_at).collect();
    let last_records = before.iter().rev().find(|l| l.starts_with("RECORDS")).unwrap();
    assert!(last_records.contains("unavailable"), "the station held without saying why: {last_records}");
    no_offline(&out);
    let r = support::rt().block_on(read_pg(&url));
    assert_eq!(r.attempts.len() as u32 + r.rejected as u32, n, "no scan lost");
    let f = check(&r, &rack_boards(&rack), &[("pg-outage", &out)]);
    eprintln!("PostgreSQL outage: {down}; {up}; resumed {:.1} s after the server was back; {} attempts, 0 lost, 0 collisions", resumed_in.as_secs_f64(), f.attempts);
}

#[test]
fn ten_stations_start_at_once_on_a_new_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let rack = dir.path().join("rack");
    let db = dir.path().join("new.db");
    let runs: Vec<(String, Running)> = (0..10u32)
        .map(|i| {
            let name = format!("many-{i}");
            let st = station_file(dir.path(), &name, &rack);
            let scans = dir.path().join(format!("{name}.scans"));
            std::fs::write(&scans, (0..3).map(|k| format!("PL4-{:06}\n", i * 10 + k)).collect::<String>()).unwrap();
            (name, Running::spawn(station(db.to_str().unwrap(), &st, &scans)))
        })
        .collect();
    let mut outs = Vec::new();
    for (name, run) in runs {
        let (code, out, err) = run.finish(Duration::from_secs(300));
        assert_eq!(code, 0, "{name} did not run:\nstdout:\n{out}\nstderr:\n{err}");
        outs.push((name, out));
    }
    let r = support::rt().block_on(read_sqlite(&db));
    assert_eq!(r.attempts.len(), 30);
    let runs: Vec<(&str, &str)> = outs.iter().map(|(n, o)| (n.as_str(), o.as_str())).collect();
    check(&r, &rack_boards(&rack), &runs);
}
