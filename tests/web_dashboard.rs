//! The dashboard end to end: a simulated station (the real binary, timed sim slots) serving
//! the dashboard, driven by Debian's headless Chromium through chromedriver. Serials are typed
//! into the scan box as a barcode scanner does (characters + Enter); tiles must turn PASS/FAIL
//! with the operator hint, retest must make a second attempt, hostile serials must render as
//! text, and the totals on the page must match the database.
//!
//! `FLASHLINE_SCREENSHOT=docs/dashboard.png cargo test --test web_dashboard -- --ignored screenshot`
//! takes the README's screenshot mid-batch with the same browser.

mod web_support;

use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::Value;
use web_support::*;

const ENTER: &str = "\u{E007}";

const STATION: &str = "station: web-e2e
slots:
  - { name: S1, programmer: sim, timing: true }
  - { name: S2, programmer: sim, timing: true }
  - { name: S3, programmer: sim, timing: true, fault: no-target, fault_rate: 1.0 }
  - { name: S4, programmer: sim, timing: true }
";

/// Every tile as the browser shows it.
async fn tiles(c: &Client) -> Vec<Value> {
    let v = c
        .execute(
            "return [...document.querySelectorAll('#tiles .tile')].map(t => ({
                slot: t.querySelector('.slot').textContent, state: t.dataset.state, prog: t.querySelector('.prog').textContent,
                badge: t.querySelector('.badge').textContent, serial: t.querySelector('.serial').textContent,
                serialHtml: t.querySelector('.serial').innerHTML, children: t.querySelector('.serial').children.length,
                message: t.querySelector('.message').textContent, hint: t.querySelector('.hint').textContent,
                meta: t.querySelector('.meta').textContent, fill: t.querySelector('.fill').style.width,
                retest: getComputedStyle(t.querySelector('.retest')).display !== 'none' }));",
            vec![],
        )
        .await
        .expect("read tiles");
    v.as_array().cloned().unwrap_or_default()
}

fn tile<'a>(ts: &'a [Value], slot: &str) -> &'a Value {
    ts.iter().find(|t| t["slot"] == slot).unwrap_or_else(|| panic!("no tile {slot} in {ts:?}"))
}

async fn text_of(c: &Client, id: &str) -> String {
    c.find(Locator::Id(id)).await.unwrap_or_else(|e| panic!("#{id}: {e}")).text().await.unwrap()
}

/// Type a scan into whatever has the focus (the scan box must have it), then Enter.
async fn scan(c: &Client, line: &str) {
    let active = c.active_element().await.expect("focused element");
    assert_eq!(active.attr("id").await.unwrap().as_deref(), Some("scan"), "the scan box lost the focus");
    active.send_keys(&format!("{line}{ENTER}")).await.expect("type a scan");
}

async fn wait_state(c: &Client, slot: &str, states: &[&str], secs: u64) -> Value {
    let what = format!("tile {slot} to show {states:?}");
    wait_for(secs, &what, || async {
        let ts = tiles(c).await;
        ts.iter().find(|t| t["slot"] == slot && states.iter().any(|s| t["state"] == *s)).cloned()
    })
    .await
}

async fn no_alert(c: &Client) {
    match c.get_alert_text().await {
        Err(fantoccini::error::CmdError::Standard(e)) if e.error == fantoccini::error::ErrorStatus::NoSuchAlert => {}
        other => panic!("an alert fired (or the check failed): {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_in_the_browser_turn_tiles_pass_fail_and_totals_match_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = recipe_without_pattern(dir.path());
    let station = station_file(dir.path(), STATION);
    let db = dir.path().join("line.db");
    let proc = Proc::start(
        &[
            "run",
            recipe.to_str().unwrap(),
            "--station",
            station.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--scans",
            "-",
            "--operator",
            "e2e",
            "--serve",
            "127.0.0.1:0",
        ],
        dir.path(),
    );
    let driver = Driver::start();
    let c = driver.client().await;
    c.goto(&proc.url).await.unwrap();
    wait_for(20, "four tiles", || async { (tiles(&c).await.len() == 4).then_some(()) }).await;
    assert_eq!(text_of(&c, "station").await, "web-e2e");
    wait_for(10, "the live connection", || async { (text_of(&c, "conn").await == "live").then_some(()) }).await;

    // A good board, a board in the fixture with no target, one for any free slot, and a
    // hostile barcode.
    scan(&c, "S1:PL4-000001").await;
    wait_for(10, "the scan to be taken", || async { text_of(&c, "scanmsg").await.contains("PL4-000001 → slot S1").then_some(()) }).await;
    scan(&c, "S3:PL4-000002").await;
    scan(&c, "S4:<script>alert(1)</script>").await;
    scan(&c, "PL4-000003").await;
    // Refused with the reason, shown as text.
    scan(&c, "S2:").await;
    wait_for(10, "the refusal", || async {
        let m = text_of(&c, "scanmsg").await;
        m.contains("REFUSED").then_some(m)
    })
    .await;
    let m = text_of(&c, "scanmsg").await;
    assert!(m.contains("empty serial"), "{m}");

    let s1 = wait_state(&c, "S1", &["pass"], 90).await;
    assert_eq!(s1["badge"], "PASS");
    assert_eq!(s1["serial"], "PL4-000001");
    assert_eq!(s1["prog"], "sim:S1", "the tile names its programmer");
    assert_eq!(s1["retest"], false);
    let s3 = wait_state(&c, "S3", &["fail"], 90).await;
    assert_eq!(s3["badge"], "FAIL");
    assert_eq!(s3["serial"], "PL4-000002");
    assert!(s3["hint"].as_str().unwrap().contains(flashline::error::FailureClass::NoTarget.hint()), "{s3}");
    assert!(s3["meta"].as_str().unwrap().contains("no_target"), "{s3}");
    assert_eq!(s3["retest"], true, "a failed slot offers retest");
    let s2 = wait_state(&c, "S2", &["pass"], 90).await;
    assert_eq!(s2["serial"], "PL4-000003");

    // The hostile serial is text on its tile: no element created, no alert.
    let s4 = wait_state(&c, "S4", &["pass"], 90).await;
    assert_eq!(s4["serial"], "<script>alert(1)</script>");
    assert_eq!(s4["children"], 0);
    assert_eq!(s4["serialHtml"], "&lt;script&gt;alert(1)&lt;/script&gt;");
    let scripts = c.execute("return document.querySelectorAll('script').length", vec![]).await.unwrap();
    assert_eq!(scripts, 1, "only the dashboard's own script");
    no_alert(&c).await;
    // Another one in the refused list (too long: refused) and on a tile via another path.
    let long = format!("<img src=x onerror=alert(2)>{}", "9".repeat(120));
    scan(&c, &long).await;
    scan(&c, "S1:<img src=x onerror=alert(3)>").await;
    wait_state(&c, "S1", &["pass"], 90).await;
    wait_for(30, "S1 to show the img serial", || async {
        let ts = tiles(&c).await;
        (tile(&ts, "S1")["serial"] == "<img src=x onerror=alert(3)>" && tile(&ts, "S1")["state"] == "pass").then_some(())
    })
    .await;
    let imgs = c.execute("return [...document.querySelectorAll('img')].map(i => i.id)", vec![]).await.unwrap();
    assert_eq!(imgs, serde_json::json!(["charts"]), "no image element from a serial");
    let refused = text_of(&c, "refused").await;
    assert!(refused.contains("<img src=x onerror=alert(2)>"), "refused scan shown as text: {refused}");
    no_alert(&c).await;

    // Retest the failed slot with its button: a second attempt of the same unit.
    let btn = c.find(Locator::Css("#tiles .tile[data-slot='S3'] .retest")).await.unwrap();
    btn.click().await.unwrap();
    wait_for(30, "S3 attempt 2", || async {
        let ts = tiles(&c).await;
        let t = tile(&ts, "S3");
        (t["state"] == "fail" && t["meta"].as_str().unwrap_or("").contains("attempt 2")).then_some(())
    })
    .await;
    // Focus went back to the scan box after the click.
    let active = c.active_element().await.unwrap();
    assert_eq!(active.attr("id").await.unwrap().as_deref(), Some("scan"));

    // Totals on the page equal the records.
    let (pass, fail, errors, attempts, units) = db_counts(&db, "web-e2e");
    assert_eq!((pass, fail, attempts, units), (4, 2, 6, 5), "records: {}", sql(&db, "select * from attempts"));
    wait_for(10, "totals to match the records", || async {
        let shown = (
            text_of(&c, "t-passed").await,
            text_of(&c, "t-failed").await,
            text_of(&c, "t-errors").await,
            text_of(&c, "t-attempts").await,
            text_of(&c, "t-units").await,
        );
        let want = (pass.to_string(), fail.to_string(), errors.to_string(), attempts.to_string(), units.to_string());
        (shown == want).then_some(())
    })
    .await;
    let refused_db: u64 = sql(&db, "select count(*) from rejected_scans").parse().unwrap();
    assert_eq!(text_of(&c, "t-refused").await, refused_db.to_string());
    // Yield: units whose latest attempt passed / units.
    assert_eq!(text_of(&c, "t-yield").await, format!("{:.1}%", 100.0 * 4.0 / units as f64));

    // A fresh page load (snapshot path) shows the same, hostile serials still as text.
    c.refresh().await.unwrap();
    wait_for(20, "tiles after reload", || async {
        let ts = tiles(&c).await;
        (ts.len() == 4 && tile(&ts, "S4")["serial"] == "<script>alert(1)</script>").then_some(())
    })
    .await;
    assert_eq!(text_of(&c, "t-passed").await, pass.to_string());
    no_alert(&c).await;

    let mut proc = proc;
    let st = proc.terminate(Duration::from_secs(20)).expect("station stops on SIGTERM");
    assert!(st.success(), "exit {st:?}: {}", proc.stderr());

    // `flashline serve` over the same records: read-only page, same totals, same text.
    let serve = Proc::start(&["serve", "--db", db.to_str().unwrap(), "--bind", "127.0.0.1:0"], dir.path());
    c.goto(&serve.url).await.unwrap();
    wait_for(20, "the records view", || async {
        let ts = tiles(&c).await;
        (ts.len() == 4 && text_of(&c, "t-passed").await == pass.to_string()).then_some(ts)
    })
    .await;
    let ts = tiles(&c).await;
    assert_eq!(tile(&ts, "S4")["serial"], "<script>alert(1)</script>");
    assert_eq!(tile(&ts, "S3")["state"], "fail");
    assert_eq!(text_of(&c, "t-failed").await, fail.to_string());
    assert_eq!(text_of(&c, "t-attempts").await, attempts.to_string());
    let readonly = c.execute("return document.body.classList.contains('readonly') && getComputedStyle(document.getElementById('scanbar')).display === 'none'", vec![]).await.unwrap();
    assert_eq!(readonly, true, "no scan box on the read-only view");
    no_alert(&c).await;
    c.close().await.unwrap();
}

/// The README's screenshot: the demo station mid-batch. Writes the PNG to
/// `$FLASHLINE_SCREENSHOT` (e.g. docs/dashboard.png).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/dashboard.png; run on purpose"]
async fn screenshot() {
    let out = std::env::var("FLASHLINE_SCREENSHOT").unwrap_or_else(|_| repo().join("docs/dashboard.png").display().to_string());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("line.db");
    let proc = Proc::start(
        &[
            "run",
            repo().join("recipes/planck-rev4/recipe.yaml").to_str().unwrap(),
            "--station",
            repo().join("deploy/station.demo.yaml").to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
            "--scans",
            "-",
            "--operator",
            "maria",
            "--serve",
            "127.0.0.1:0",
        ],
        dir.path(),
    );
    let driver = Driver::start();
    let c = driver.client().await;
    c.set_window_size(1600, 1560).await.unwrap();
    c.goto(&proc.url).await.unwrap();
    wait_for(20, "tiles", || async { (tiles(&c).await.len() == 8).then_some(()) }).await;
    // Two full rounds through every slot (the second puts a board that is not seated in S7) and
    // a refused scan, then a third round in S1–S6 caught mid-way.
    for round in 0..2 {
        for i in 1..=8 {
            if round == 1 && i == 7 {
                scan(&c, "S7:PL4-900001").await;
            } else {
                scan(&c, &format!("S{i}:PL4-1{round}00{i:02}")).await;
            }
        }
        if round == 0 {
            scan(&c, "PL4-12X").await;
        }
        wait_for(60, "a round", || async {
            let ts = tiles(&c).await;
            ts.iter().all(|t| t["state"] != "busy" && t["state"] != "idle").then_some(())
        })
        .await;
    }
    for i in 1..=6 {
        scan(&c, &format!("S{i}:PL4-1200{i:02}")).await;
    }
    wait_for(30, "today's figures to catch up", || async {
        let units = text_of(&c, "t-units").await;
        (text_of(&c, "today-units").await == units).then_some(())
    })
    .await;
    wait_for(30, "progress on the tiles", || async {
        let ts = tiles(&c).await;
        let moving = ts.iter().filter(|t| t["state"] == "busy" && t["fill"].as_str().map(|w| w.trim_end_matches('%').parse::<u32>().unwrap_or(0) > 40).unwrap_or(false)).count();
        (moving >= 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = c.screenshot().await.unwrap();
    std::fs::write(&out, png).unwrap();
    c.close().await.unwrap();
}
