//! Benchmark (not a test): `report yield` and `report units` over a synthetic SQLite history of
//! 1,000,000 attempts.
//!
//! ```sh
//! cargo bench --bench report                      # 1,000,000 attempts
//! cargo bench --bench report -- --attempts 200000 # another size
//! ```
//! The generated database is kept in `target/bench-data/` and reused when it already holds the
//! requested number of attempts (delete it to regenerate). Figures go to BENCHMARKS.md.

use std::time::{Duration, Instant};

use flashline::db::Db;
use flashline::report::{self, synth, Filters, GroupBy};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut attempts: u64 = 1_000_000;
    let mut runs = 5usize;
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--attempts" => {
                attempts = args.get(i + 1).and_then(|v| v.parse().ok()).expect("--attempts N");
                i += 1;
            }
            "--runs" => {
                runs = args.get(i + 1).and_then(|v| v.parse().ok()).expect("--runs N");
                i += 1;
            }
            _ => {} // cargo passes --bench
        }
        i += 1;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("bench-data");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("report-{attempts}.db"));
        let path_s = path.to_string_lossy().to_string();
        let spec = synth::SynthSpec { attempts, ..Default::default() };
        let mut db = Db::connect(&path_s).await.unwrap();
        let have = report::yield_report(&db, &Filters::default(), GroupBy::None).await.unwrap().total.attempts;
        if have < attempts {
            db.close().await;
            drop(db);
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path_s}{suffix}"));
            }
            db = Db::connect(&path_s).await.unwrap();
            let t = Instant::now();
            let s = synth::generate(&db, &spec).await.unwrap();
            println!("generated {} attempts of {} units in {:.1} s -> {}", s.attempts, s.units, t.elapsed().as_secs_f64(), path.display());
        } else {
            println!("reusing {} ({have} finished attempts)", path.display());
        }
        // Time what the CLI does: `report` opens the file as a reader.
        db.close().await;
        let db = Db::connect_reader(&path_s).await.unwrap();
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!("database file: {:.0} MiB", size as f64 / 1048576.0);
        println!();
        println!("{:<44} {:>10} {:>10} {:>10}", "report (SQLite)", "median", "min", "max");
        let cases: Vec<(&str, Filters, GroupBy)> = vec![
            ("report yield", Filters::default(), GroupBy::None),
            ("report yield --by day", Filters::default(), GroupBy::Day),
            ("report yield --by station", Filters::default(), GroupBy::Station),
            ("report yield --by slot", Filters::default(), GroupBy::Slot),
            ("report yield --by sku", Filters::default(), GroupBy::Sku),
            (
                "report yield --station line1-st2 --since 2025-05-10",
                Filters { station: Some("line1-st2".into()), since: Some("2025-05-10".parse().unwrap()), ..Default::default() },
                GroupBy::None,
            ),
        ];
        for (name, f, by) in cases {
            // One warm-up run (page cache), then timed runs.
            let r = report::yield_report(&db, &f, by).await.unwrap();
            let mut times = Vec::new();
            for _ in 0..runs {
                let t = Instant::now();
                let again = report::yield_report(&db, &f, by).await.unwrap();
                times.push(t.elapsed());
                assert_eq!(again, r);
            }
            let (min, max) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
            println!(
                "{:<44} {:>8.0}ms {:>8.0}ms {:>8.0}ms   ({} attempts, {} units, FPY {})",
                name,
                median(times).as_secs_f64() * 1e3,
                min.as_secs_f64() * 1e3,
                max.as_secs_f64() * 1e3,
                r.total.attempts,
                r.total.units,
                report::render::pct(r.total.first_pass_yield)
            );
        }
        let t = Instant::now();
        let n = report::export_units(&db, &Filters::default(), std::io::sink()).await.unwrap();
        let e = t.elapsed();
        println!(
            "{:<44} {:>8.0}ms   ({n} rows, {:.0} rows/s)",
            "report units (to /dev/null)",
            e.as_secs_f64() * 1e3,
            n as f64 / e.as_secs_f64()
        );
        db.close().await;
    });
}
