//! Reports over a known history (passes, failures, retests across two stations and two days)
//! whose figures were computed by hand, on SQLite and on PostgreSQL; the CSV export's
//! escaping of hostile serials; the CLI (`report yield`, `report units`, `unit`).

use assert_cmd::Command;
use chrono::{TimeZone, Utc};
use flashline::db::{testing, AttemptOutcome, AttemptResult, Db, NewAttempt, StepRecord};
use flashline::report::{self, Filters, GroupBy, ParetoEntry, YieldRow};

struct Try {
    serial: &'static str,
    sku: &'static str,
    station: &'static str,
    slot: &'static str,
    day: u32,
    hour: u32,
    result: AttemptResult,
    class: Option<&'static str>,
    cycle_ms: u64,
}

#[allow(clippy::too_many_arguments)]
const fn t(
    serial: &'static str,
    sku: &'static str,
    station: &'static str,
    slot: &'static str,
    day: u32,
    hour: u32,
    result: AttemptResult,
    class: Option<&'static str>,
    cycle_ms: u64,
) -> Try {
    Try { serial, sku, station, slot, day, hour, result, class, cycle_ms }
}

use AttemptResult::{Error as E, Fail as F, Pass as P};

/// The known history, in start order. U8 is then left running at st2 and recovered as
/// interrupted; U9 stays running at st1 (never counted).
const HISTORY: &[Try] = &[
    t("U1", "KB60", "st1", "A1", 1, 8, P, None, 9000),
    t("U2", "KB60", "st1", "A2", 1, 8, F, Some("no_target"), 1000),
    t("U3", "KB60", "st2", "B1", 1, 9, F, Some("verify_flash"), 8000),
    t("U2", "KB60", "st2", "B1", 1, 10, P, None, 9500),
    t("U4", "KB60", "st2", "B2", 1, 11, P, None, 10000),
    t("U3", "KB60", "st2", "B2", 2, 8, F, Some("verify_flash"), 8200),
    t("U5", "KB60", "st1", "A2", 2, 8, F, Some("communication"), 2000),
    t("U6", "KB65", "st1", "A1", 2, 9, P, None, 8800),
    t("U7", "KB60", "st2", "B1", 2, 9, E, Some("programmer_gone"), 500),
    t("U3", "KB60", "st1", "A1", 2, 10, P, None, 9100),
    t("U7", "KB60", "st2", "B1", 2, 10, P, None, 9900),
];

fn new_attempt(serial: &str, sku: &str, station: &str, slot: &str, day: u32, hour: u32) -> NewAttempt {
    NewAttempt {
        serial: serial.into(),
        recipe: format!("{}-recipe", sku.to_lowercase()),
        sku: sku.into(),
        recipe_sha256: "ab".repeat(32),
        image_sha256: "cd".repeat(32),
        station: station.into(),
        slot: slot.into(),
        programmer_kind: "sim".into(),
        programmer_identity: format!("sim:{station}:{slot}"),
        operator: "ana".into(),
        started_at: Utc.with_ymd_and_hms(2025, 6, day, hour, 0, 0).unwrap(),
    }
}

async fn build_known_history(db: &Db) {
    for x in HISTORY {
        let id = db.begin_attempt(&new_attempt(x.serial, x.sku, x.station, x.slot, x.day, x.hour)).await.unwrap();
        db.add_steps(id, &[StepRecord { name: "identify".into(), ms: 40, ok: x.class != Some("no_target"), detail: String::new() }])
            .await
            .unwrap();
        let o = AttemptOutcome {
            result: x.result,
            failure_class: x.class.map(str::to_string),
            message: x.class.map(|c| format!("{c}: see hint")),
            signature: Some("1E9587".into()),
            fuses_before: None,
            fuses_after: Some("L:5E H:D9 E:F3".into()),
            lock_before: None,
            lock_after: Some("3C".into()),
            bytes_written: 28672,
            finished_at: Utc.with_ymd_and_hms(2025, 6, x.day, x.hour, 0, 10).unwrap(),
            cycle_ms: x.cycle_ms,
            serial_number: None,
            serial_written: false,
            steps: Vec::new(),
        };
        db.finish_attempt(id, &o).await.unwrap();
    }
    db.begin_attempt(&new_attempt("U8", "KB60", "st2", "B2", 2, 11)).await.unwrap();
    db.begin_attempt(&new_attempt("U9", "KB60", "st1", "A2", 2, 11)).await.unwrap();
    assert_eq!(db.recover_interrupted("st2").await.unwrap(), 1);
}

fn pareto(items: &[(&str, u64)]) -> Vec<ParetoEntry> {
    let total: u64 = items.iter().map(|i| i.1).sum();
    items.iter().map(|(c, n)| ParetoEntry { class: c.to_string(), count: *n, share: *n as f64 / total as f64 }).collect()
}

/// Assert the counted figures of a row: units, attempts, first pass, final pass, retests,
/// still failing, cycle count, cycle sum, p95.
#[track_caller]
fn check(r: &YieldRow, key: &str, f: [u64; 9]) {
    assert_eq!(r.key, key);
    let got = [r.units, r.attempts, r.first_pass, r.final_pass, r.retests, r.still_failing, r.cycle_count, r.cycle_sum_ms, r.p95_cycle_ms.unwrap_or(0)];
    assert_eq!(got, f, "{key}: [units, attempts, first_pass, final_pass, retests, still_failing, cycle_n, cycle_sum, p95]");
    assert_eq!(r.first_pass_yield, Some(r.first_pass as f64 / r.units as f64));
    assert_eq!(r.final_yield, Some(r.final_pass as f64 / r.units as f64));
    assert_eq!(r.mean_cycle_ms, Some(r.cycle_sum_ms as f64 / r.cycle_count as f64));
}

/// The hand-computed figures (see HISTORY): returns every report computed, for comparison
/// across backends.
async fn assert_known_figures(db: &Db) -> Vec<report::YieldReport> {
    let all = Filters::default();
    let total = report::yield_report(db, &all, GroupBy::None).await.unwrap();
    // 8 units, 12 finished attempts (U9 running is not counted). First pass: U1 U4 U6.
    // Final pass: U1 U2 U3 U4 U6 U7. Still failing: U5, U8. Cycles: 11 values summing 76000,
    // nearest-rank p95 of 11 = the 11th = 10000.
    check(&total.total, "all", [8, 12, 3, 6, 4, 2, 11, 76000, 10000]);
    assert_eq!(total.groups.len(), 1);
    assert_eq!(total.total.first_pass_yield, Some(0.375));
    assert_eq!(total.total.final_yield, Some(0.75));
    assert!((total.total.mean_cycle_ms.unwrap() - 6909.0909).abs() < 1e-3);
    assert_eq!(total.total.failures, 6);
    assert_eq!(
        total.total.pareto,
        pareto(&[("verify_flash", 2), ("communication", 1), ("interrupted", 1), ("no_target", 1), ("programmer_gone", 1)])
    );

    let by_day = report::yield_report(db, &all, GroupBy::Day).await.unwrap();
    assert_eq!(by_day.total, total.total);
    assert_eq!(by_day.groups.len(), 2);
    // Day 1: U1 U2 U3 U4; U2 failed then passed, U3 failed. Cycles 9000 1000 9500 8000 10000.
    check(&by_day.groups[0], "2025-06-01", [4, 5, 2, 3, 1, 1, 5, 37500, 10000]);
    assert_eq!(by_day.groups[0].pareto, pareto(&[("no_target", 1), ("verify_flash", 1)]));
    // Day 2: U3 (fail, pass) U5 (fail) U6 (pass) U7 (error, pass) U8 (interrupted).
    check(&by_day.groups[1], "2025-06-02", [5, 7, 1, 3, 2, 2, 6, 38500, 9900]);
    assert_eq!(
        by_day.groups[1].pareto,
        pareto(&[("communication", 1), ("interrupted", 1), ("programmer_gone", 1), ("verify_flash", 1)])
    );

    let by_station = report::yield_report(db, &all, GroupBy::Station).await.unwrap();
    // st1: U1 pass, U2 fail, U5 fail, U6 pass, U3 pass.
    check(&by_station.groups[0], "st1", [5, 5, 3, 3, 0, 2, 5, 29900, 9100]);
    // st2: U3 fail fail, U2 pass, U4 pass, U7 error pass, U8 interrupted.
    check(&by_station.groups[1], "st2", [5, 7, 2, 3, 2, 2, 6, 46100, 10000]);

    let by_sku = report::yield_report(db, &all, GroupBy::Sku).await.unwrap();
    check(&by_sku.groups[0], "KB60", [7, 11, 2, 5, 4, 2, 10, 67200, 10000]);
    check(&by_sku.groups[1], "KB65", [1, 1, 1, 1, 0, 0, 1, 8800, 8800]);

    let by_slot = report::yield_report(db, &all, GroupBy::Slot).await.unwrap();
    let keys: Vec<&str> = by_slot.groups.iter().map(|g| g.key.as_str()).collect();
    assert_eq!(keys, ["st1/A1", "st1/A2", "st2/B1", "st2/B2"]);
    // st2/B1: U3 fail, U2 pass, U7 error, U7 pass.
    check(&by_slot.groups[2], "st2/B1", [3, 4, 1, 2, 1, 1, 4, 27900, 9900]);
    let by_prog = report::yield_report(db, &all, GroupBy::Programmer).await.unwrap();
    assert_eq!(by_prog.groups[0].key, "sim sim:st1:A1");
    assert_eq!(by_prog.groups.iter().map(|g| g.attempts).sum::<u64>(), 12);

    // Filters equal the corresponding group.
    let st1 = report::yield_report(db, &Filters { station: Some("st1".into()), ..all.clone() }, GroupBy::None).await.unwrap();
    assert_eq!(st1.total, YieldRow { key: "all".into(), ..by_station.groups[0].clone() });
    let day2 = Filters { since: Some("2025-06-02".parse().unwrap()), ..all.clone() };
    let d2 = report::yield_report(db, &day2, GroupBy::None).await.unwrap();
    assert_eq!(d2.total, YieldRow { key: "all".into(), ..by_day.groups[1].clone() });
    let day1 = Filters { until: Some("2025-06-01".parse().unwrap()), ..all.clone() };
    let d1 = report::yield_report(db, &day1, GroupBy::None).await.unwrap();
    assert_eq!(d1.total, YieldRow { key: "all".into(), ..by_day.groups[0].clone() });
    let kb65 = report::yield_report(db, &Filters { sku: Some("KB65".into()), ..all.clone() }, GroupBy::None).await.unwrap();
    check(&kb65.total, "all", [1, 1, 1, 1, 0, 0, 1, 8800, 8800]);
    let none = report::yield_report(db, &Filters { station: Some("nope".into()), ..all.clone() }, GroupBy::Day).await.unwrap();
    assert!(none.groups.is_empty());
    assert_eq!(none.total.units, 0);
    assert_eq!(none.total.first_pass_yield, None);
    vec![total, by_day, by_station, by_sku, by_slot, by_prog, st1, d2, d1, kb65]
}

#[tokio::test]
async fn known_history_figures_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&dir.path().join("r.db").to_string_lossy()).await.unwrap();
    build_known_history(&db).await;
    assert_known_figures(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_history_figures_on_postgres_equal_sqlite() {
    let url = testing::test_database().await.expect("a PostgreSQL server for the tests");
    let pg = Db::connect(&url).await.unwrap();
    build_known_history(&pg).await;
    let on_pg = assert_known_figures(&pg).await;
    let dir = tempfile::tempdir().unwrap();
    let lite = Db::connect(&dir.path().join("r.db").to_string_lossy()).await.unwrap();
    build_known_history(&lite).await;
    let on_sqlite = assert_known_figures(&lite).await;
    // Every figure, every rendering: identical on both backends.
    assert_eq!(on_pg, on_sqlite);
    for (a, b) in on_pg.iter().zip(&on_sqlite) {
        assert_eq!(report::render::csv(a).unwrap(), report::render::csv(b).unwrap());
        assert_eq!(report::render::table(a), report::render::table(b));
    }
    let mut csv_pg = Vec::new();
    let mut csv_lite = Vec::new();
    report::export_units(&pg, &Filters::default(), &mut csv_pg).await.unwrap();
    report::export_units(&lite, &Filters::default(), &mut csv_lite).await.unwrap();
    // Same rows except the interrupted attempt's recovery time (wall clock).
    let strip = |v: &[u8]| -> Vec<String> {
        String::from_utf8(v.to_vec()).unwrap().lines().filter(|l| !l.contains("interrupted")).map(str::to_string).collect()
    };
    assert_eq!(strip(&csv_pg), strip(&csv_lite));
}

const HOSTILE: &[&str] = &["=HYPERLINK(\"http://evil.example/x\",\"click\")", "+1+2", "-3+4", "@SUM(A1:A9)", "\tTAB", "\rCR", "KB-0001"];

#[tokio::test]
async fn units_csv_neutralises_hostile_cells_and_keeps_stable_columns() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&dir.path().join("r.db").to_string_lossy()).await.unwrap();
    for (i, serial) in HOSTILE.iter().enumerate() {
        let mut a = new_attempt(serial, "KB60", "st1", "A1", 1, 8 + i as u32);
        a.operator = "=cmd|' /C calc'!A0".into();
        let id = db.begin_attempt(&a).await.unwrap();
        let o = AttemptOutcome {
            result: AttemptResult::Fail,
            failure_class: Some("communication".into()),
            message: Some("-bad contact, \"re-seat\"\nline two".into()),
            signature: Some("1E9587".into()),
            fuses_before: None,
            fuses_after: None,
            lock_before: None,
            lock_after: None,
            bytes_written: 0,
            finished_at: Utc.with_ymd_and_hms(2025, 6, 1, 8 + i as u32, 0, 1).unwrap(),
            cycle_ms: 1000,
            serial_number: None,
            serial_written: false,
            steps: Vec::new(),
        };
        db.finish_attempt(id, &o).await.unwrap();
    }
    let mut out = Vec::new();
    let n = report::export_units(&db, &Filters::default(), &mut out).await.unwrap();
    assert_eq!(n, HOSTILE.len() as u64);
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.contains("\r\n"), "RFC 4180 line ends");
    let mut rd = csv::Reader::from_reader(&out[..]);
    let header: Vec<String> = rd.headers().unwrap().iter().map(str::to_string).collect();
    for col in [
        "serial", "sku", "recipe", "image_sha256", "station", "slot", "programmer", "operator", "attempt", "started_at",
        "finished_at", "result", "failure_class", "message", "signature", "fuses_before", "fuses_after", "cycle_ms",
    ] {
        assert!(header.iter().any(|h| h == col), "column {col} missing from {header:?}");
    }
    assert_eq!(header, report::UNIT_COLUMNS);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let mut serials = Vec::new();
    for rec in rd.records() {
        let rec = rec.unwrap();
        for cell in rec.iter() {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "executable cell {cell:?} in {rec:?}"
            );
        }
        serials.push(rec[col("serial")].to_string());
        assert_eq!(&rec[col("operator")], "'=cmd|' /C calc'!A0");
        assert_eq!(&rec[col("message")], "'-bad contact, \"re-seat\"\nline two");
        assert_eq!(&rec[col("started_at")][..11], "2025-06-01T");
        assert!(rec[col("started_at")].ends_with(".000Z"));
        assert!(rec[col("finished_at")].ends_with(".000Z"));
        assert_eq!(&rec[col("attempt")], "1");
        assert_eq!(&rec[col("cycle_ms")], "1000");
        assert_eq!(&rec[col("result")], "fail");
    }
    let expect: Vec<String> =
        HOSTILE.iter().map(|s| if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_string() }).collect();
    assert_eq!(serials, expect, "hostile serials are kept, behind a leading quote");
    // Filters apply to the export too.
    let mut none = Vec::new();
    assert_eq!(report::export_units(&db, &Filters { sku: Some("KB65".into()), ..Filters::default() }, &mut none).await.unwrap(), 0);
}

fn flashline() -> Command {
    let mut c = Command::cargo_bin("flashline").unwrap();
    c.env_remove("FLASHLINE_DB").timeout(std::time::Duration::from_secs(30));
    c
}

#[tokio::test]
async fn cli_reports_units_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("line.db");
    let path_s = path.to_string_lossy().to_string();
    let db = Db::connect(&path_s).await.unwrap();
    build_known_history(&db).await;
    db.close().await;

    // Table: the total line carries the hand-computed yields.
    let out = flashline().args(["report", "yield", "--db", &path_s]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    let line = table.lines().find(|l| l.starts_with("all ")).expect("a line for the whole selection");
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells, ["all", "8", "12", "37.5%", "75.0%", "4", "2", "6909.1", "10000"], "{table}");
    assert!(table.contains("verify_flash"), "{table}");

    // CSV by day, through FLASHLINE_DB.
    let out = flashline().args(["report", "yield", "--by", "day", "--format", "csv"]).env("FLASHLINE_DB", &path_s).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut rd = csv::Reader::from_reader(&out.stdout[..]);
    let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(&rows[0][1], "2025-06-01");
    assert_eq!(&rows[0][5], "0.500000");
    assert_eq!(&rows[1][1], "2025-06-02");
    assert_eq!(&rows[1][5], "0.200000");
    assert_eq!(&rows[2][1], "TOTAL");
    assert_eq!(&rows[2][7], "0.750000");
    assert_eq!(&rows[2][13], "verify_flash:2;communication:1;interrupted:1;no_target:1;programmer_gone:1");

    // JSON by station.
    let out = flashline().args(["report", "yield", "--db", &path_s, "--by", "station", "--format", "json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["groups"][0]["key"], "st1");
    assert_eq!(v["groups"][0]["first_pass"], 3);
    assert_eq!(v["total"]["final_yield"], 0.75);

    // HTML page and SVG chart: self-contained, both charts drawn.
    let html = dir.path().join("yield.html");
    let svg = dir.path().join("yield.svg");
    let out = flashline()
        .args(["report", "yield", "--db", &path_s, "--format", "html", "-o"])
        .arg(&html)
        .arg("--chart")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains("<svg") && page.contains("Yield per day") && page.contains("Failure Pareto"));
    assert!(page.contains("2025-06-01") && page.contains("2025-06-02"));
    for needle in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!page.contains(needle), "page fetches something: {needle}");
    }
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("verify_flash"));

    // Units CSV to a file.
    let csv_path = dir.path().join("units.csv");
    let out = flashline().args(["report", "units", "--db", &path_s, "--station", "st2", "-o"]).arg(&csv_path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut rd = csv::Reader::from_path(&csv_path).unwrap();
    assert_eq!(rd.records().count(), 7);

    // Unit history.
    let out = flashline().args(["unit", "U3", "--db", &path_s]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("unit U3: 3 attempts"), "{text}");
    assert!(text.contains("#1 2025-06-01T09:00:00.000Z  st2/B1") && text.contains("FAIL (verify_flash)"), "{text}");
    assert!(text.contains("#3 2025-06-02T10:00:00.000Z  st1/A1") && text.contains("PASS"), "{text}");
    assert!(text.contains("identify"), "{text}");
    let out = flashline().args(["unit", "U7", "--json", "--db", &path_s]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["attempts"].as_array().unwrap().len(), 2);
    assert_eq!(v["attempts"][0]["failure_class"], "programmer_gone");
    assert_eq!(v["attempts"][1]["result"], "pass");
    let out = flashline().args(["unit", "NOPE", "--db", &path_s]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOPE"));

    // A missing database is an error naming it, not a silently created empty file.
    let missing = dir.path().join("missing.db");
    let out = flashline().args(["report", "yield", "--db"]).arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.db"));
    assert!(!missing.exists());
    let out = flashline().args(["report", "yield", "--db", &path_s, "--since", "June"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("YYYY-MM-DD"));
}

/// The benchmark's synthetic history generator: same rows on both backends, identical
/// reports, and the database stays usable for real writes afterwards (id sequences advanced).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_history_reports_identically_on_both_backends() {
    let spec = report::synth::SynthSpec { attempts: 1500, days: 3, seed: 7 };
    let dir = tempfile::tempdir().unwrap();
    let lite = Db::connect(&dir.path().join("s.db").to_string_lossy()).await.unwrap();
    let pg = Db::connect(&testing::test_database().await.expect("a PostgreSQL server")).await.unwrap();
    let a = report::synth::generate(&lite, &spec).await.unwrap();
    let b = report::synth::generate(&pg, &spec).await.unwrap();
    assert_eq!(a, b);
    assert!(a.attempts >= 1500 && a.attempts < 1503, "{a:?}");
    assert!(a.units < a.attempts);
    assert!(report::synth::generate(&lite, &spec).await.is_err(), "refuses a non-empty database");
    for by in [GroupBy::None, GroupBy::Day, GroupBy::Station, GroupBy::Slot, GroupBy::Sku, GroupBy::Programmer] {
        let x = report::yield_report(&lite, &Filters::default(), by).await.unwrap();
        let y = report::yield_report(&pg, &Filters::default(), by).await.unwrap();
        assert_eq!(x, y, "{by:?}");
        assert_eq!(x.total.attempts, a.attempts);
        assert_eq!(x.total.units, a.units);
        if by != GroupBy::None {
            assert_eq!(x.groups.iter().map(|g| g.attempts).sum::<u64>(), a.attempts, "{by:?}");
        }
    }
    let f = Filters { station: Some("line1-st2".into()), since: Some("2025-05-02".parse().unwrap()), ..Filters::default() };
    assert_eq!(
        report::yield_report(&lite, &f, GroupBy::Day).await.unwrap(),
        report::yield_report(&pg, &f, GroupBy::Day).await.unwrap()
    );
    for db in [&lite, &pg] {
        let id = db.begin_attempt(&new_attempt("AFTER-SYNTH", "KB60", "line1-st1", "S1", 3, 9)).await.unwrap();
        assert!(id.0 > a.attempts as i64);
        let h = db.unit_history("SN00000001").await.unwrap().unwrap();
        assert_eq!(h.attempts[0].attempt_no, 1);
    }
}
