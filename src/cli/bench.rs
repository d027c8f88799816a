//! `flashline bench [cycle|avrdude|usb|scaling|build|all] [--quick]`: the speed tables of
//! BENCHMARKS.md, printed as Markdown.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

use flashline::bench::{self, BenchOptions, Machine, Table};

/// Which table(s) to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// 1. per-unit cycle vs the STK500v1 lower bound
    Cycle,
    /// 2. avrdude 7.1 vs `flashline flash` on the same emulator
    Avrdude,
    /// 2b. usbasp/usbtiny at the transfer level vs avrdude's algorithm
    Usb,
    /// 3. one station process with 1…64 slots
    Scaling,
    /// 4. `flashline build` on a 128 KiB image
    Build,
    /// every table
    All,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Table to produce (default: all).
    #[arg(value_enum, default_value = "all")]
    pub which: Which,
    /// One repetition and small batches: checks the benchmarks run end to end, figures are rough.
    #[arg(long)]
    pub quick: bool,
    /// Repetitions per timed run (the median is reported); default 5, 1 with --quick.
    #[arg(long)]
    pub reps: Option<usize>,
    /// Project root holding `recipes/` (default: the current directory).
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Scaling: skip the 64 pty STK500v1 emulator slots (only timed `sim` slots).
    #[arg(long)]
    pub no_avrisp_slots: bool,
    /// Also write the tables as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn bench(a: BenchArgs) -> anyhow::Result<ExitCode> {
    let root = a.root.canonicalize().with_context(|| format!("project root {}", a.root.display()))?;
    if !root.join("recipes/promicro-macropad/recipe.yaml").is_file() {
        anyhow::bail!("{} has no recipes/promicro-macropad/recipe.yaml: run from the project root or pass --root", root.display());
    }
    let work = ScratchDir::new()?;
    let opts = BenchOptions {
        quick: a.quick,
        reps: a.reps.unwrap_or(if a.quick { 1 } else { 5 }).max(1),
        root,
        flashline: std::env::current_exe().context("locating the flashline binary")?,
        work: work.0.clone(),
    };
    if cfg!(debug_assertions) && !a.quick {
        eprintln!("note: this is a debug build; measure with `cargo build --release` and target/release/flashline");
    }
    let machine = Machine::probe();
    let mut out = std::io::stdout().lock();
    writeln!(out, "## flashline bench — {}\n", machine.describe())?;
    writeln!(out, "Reproduce: `cargo build --release && target/release/flashline bench {}{}`\n", format!("{:?}", a.which).to_lowercase(), if a.quick { " --quick" } else { "" })?;
    out.flush()?;
    drop(out);

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let want = |w: Which| a.which == Which::All || a.which == w;
    let mut tables: Vec<Table> = Vec::new();
    let mut failed = Vec::new();
    let mut emit = |name: &str, r: Result<Table, bench::BenchError>, tables: &mut Vec<Table>| {
        match r {
            Ok(t) => {
                println!("{}", t.to_markdown());
                tables.push(t);
            }
            Err(e) => {
                eprintln!("error: bench {name}: {e}");
                failed.push(name.to_string());
            }
        }
        let _ = std::io::stdout().flush();
    };
    if want(Which::Cycle) {
        emit("cycle", rt.block_on(bench::cycle::table(&opts)), &mut tables);
    }
    if want(Which::Avrdude) {
        emit("avrdude", bench::avrdude::table(&opts, bench::avrdude::Wire::Avrisp), &mut tables);
        emit("avrdude-buspirate", bench::avrdude::table(&opts, bench::avrdude::Wire::Buspirate), &mut tables);
    }
    if want(Which::Usb) {
        emit("usb", rt.block_on(bench::usb::table(&opts)), &mut tables);
    }
    if want(Which::Scaling) {
        emit("scaling", rt.block_on(bench::scaling::table(&opts, !a.no_avrisp_slots)), &mut tables);
    }
    if want(Which::Build) {
        emit("build", bench::build::table(&opts), &mut tables);
    }
    println!("Load average at the end: {}", bench::load_avg());
    if let Some(p) = &a.json {
        let doc = serde_json::json!({ "machine": machine, "tables": tables });
        std::fs::write(p, serde_json::to_string_pretty(&doc)?).with_context(|| format!("writing {}", p.display()))?;
    }
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} table(s) failed: {}", failed.len(), failed.join(", "));
        Ok(ExitCode::from(1))
    }
}

/// A scratch directory under the system temp dir, removed when dropped.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> anyhow::Result<ScratchDir> {
        let p = std::env::temp_dir().join(format!("flashline-bench-{}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating scratch directory {}", p.display()))?;
        Ok(ScratchDir(p))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
