//! Memory over a long batch, in its own test binary so no other test shares the process RSS.

use std::path::PathBuf;
use std::sync::Arc;

use flashline::db::Db;
use flashline::station::{Station, Supervisor};

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_over_a_long_batch() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("recipes/planck-rev4/recipe.yaml");
    let mut y = String::from("station: long\nslots:\n");
    for i in 0..8 {
        y.push_str(&format!("  - {{ name: S{i}, programmer: sim }}\n"));
    }
    let st = dir.path().join("station.yaml");
    std::fs::write(&st, &y).unwrap();
    let db = Db::connect(&format!("sqlite://{}", dir.path().join("long.db").display())).await.unwrap();
    let production = Arc::new(flashline::build::prepare(&recipe).unwrap());
    let sup = Supervisor::start(Station::load(&st).unwrap(), production, db, "tester".into()).await.unwrap();
    for i in 0..200 {
        sup.submit(&format!("PL4-{i:06}")).await;
    }
    let warm = rss_kib();
    for i in 200..1000 {
        sup.submit(&format!("PL4-{i:06}")).await;
    }
    let after = rss_kib();
    let totals = sup.finish().await;
    assert_eq!((totals.attempts, totals.units, totals.units_passed), (1000, 1000, 1000));
    // A leak of one image per unit would be ~32 KiB × 800 ≈ 25 MiB.
    assert!(after < warm + 12 * 1024, "RSS grew from {warm} KiB to {after} KiB over 800 units");
}
