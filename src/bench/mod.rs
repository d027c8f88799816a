//! Benchmarks: the speed figures of issue 6, measured side by side and returned as tables.
//!
//! | module | table |
//! |---|---|
//! | [`bound`] | the STK500v1 lower bound for a job: bytes on the wire + the part's delays |
//! | [`cycle`] | 1. per-unit cycle on the timed STK500v1 emulator vs that bound |
//! | [`avrdude`] | 2. avrdude 7.1 vs `flashline flash` on the same emulator and image |
//! | [`usb`] | 2b. usbasp/usbtiny at the transfer level: ours vs avrdude's algorithm |
//! | [`scaling`] | 3. one station process with 1…64 slots: units/hour, CPU per unit |
//! | [`build`] | 4. `flashline build` on a 128 KiB image |
//!
//! Everything here measures real work (real ptys, the real avrdude binary, the real station
//! supervisor with a real SQLite file); nothing is asserted about time. The library knows
//! nothing of the terminal: each benchmark returns a [`Table`] that the CLI prints.

pub mod avrdude;
pub mod bound;
pub mod build;
pub mod cycle;
pub mod scaling;
pub mod usb;


use std::path::{Path, PathBuf};
use std::time::Duration;

/// What every benchmark needs to know.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Fewer repetitions and smaller runs (the smoke test, a quick look).
    pub quick: bool,
    /// Repetitions of each timed run (the median is reported).
    pub reps: usize,
    /// The project root (holds `recipes/`).
    pub root: PathBuf,
    /// The `flashline` binary (for `flashline flash` and `flashline sim serve` child processes).
    pub flashline: PathBuf,
    /// Scratch directory for images, databases and station files.
    pub work: PathBuf,
}

/// A benchmark failure that stops a table: what failed, in words an engineer can act on.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(pub String);

impl BenchError {
    pub fn new(m: impl Into<String>) -> Self {
        BenchError(m.into())
    }
}

pub type BenchResult<T> = Result<T, BenchError>;

/// One result table: a title, columns, rows, and notes (arithmetic, goals, caveats).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub notes: Vec<String>,
}

impl Table {
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Self {
        Table { title: title.into(), headers: headers.iter().map(|s| s.to_string()).collect(), rows: Vec::new(), notes: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn note(&mut self, n: impl Into<String>) {
        self.notes.push(n.into());
    }

    /// GitHub-flavoured Markdown: `### title`, the table, then the notes as a list.
    pub fn to_markdown(&self) -> String {
        let mut s = format!("### {}\n\n", self.title);
        if !self.headers.is_empty() {
            s += &format!("| {} |\n", self.headers.join(" | "));
            s += &format!("|{}\n", "---|".repeat(self.headers.len()));
            for r in &self.rows {
                s += &format!("| {} |\n", r.join(" | "));
            }
        }
        if !self.notes.is_empty() {
            s.push('\n');
            for n in &self.notes {
                s += &format!("- {n}\n");
            }
        }
        s
    }
}

/// The machine a figure came from.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub load_avg: String,
    pub kernel: String,
    pub date_utc: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        Machine {
            nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_model,
            load_avg: load_avg(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default(),
            date_utc: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} CPU(s), {}, Linux {}, load average {} at start, {}",
            self.nproc, self.cpu_model, self.kernel, self.load_avg, self.date_utc
        )
    }
}

/// The 1/5/15-minute load averages, as `/proc/loadavg` has them.
pub fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// CPU time (user + system) used so far by this process (`RUSAGE_SELF`) or by its waited-for
/// children (`RUSAGE_CHILDREN`).
pub fn cpu_time(children: bool) -> Duration {
    let who = if children { nix::libc::RUSAGE_CHILDREN } else { nix::libc::RUSAGE_SELF };
    // SAFETY: getrusage fills the struct we pass; a zeroed rusage is a valid initial value.
    let mut ru: nix::libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { nix::libc::getrusage(who, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: nix::libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Median of the samples (mean of the middle two for an even count); zero for none.
pub fn median(samples: &[Duration]) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut v = samples.to_vec();
    v.sort();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

/// `1234.5 ms` style, to 0.1 ms.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// `4.123 s` style.
pub fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// The samples as `min–max` in seconds, for showing the spread next to a median.
pub fn spread(samples: &[Duration]) -> String {
    match (samples.iter().min(), samples.iter().max()) {
        (Some(a), Some(b)) => format!("{:.3}–{:.3} s", a.as_secs_f64(), b.as_secs_f64()),
        _ => "-".into(),
    }
}

/// The production image the cycle and avrdude tables use: `recipes/promicro-macropad`, Arduino's
/// real Caterina-Micro production image (28 KiB sketch area 0x0000–0x6FFF, padded with 0xFF,
/// plus the 4 KiB Caterina bootloader at 0x7000), built with the same code as `flashline build`.
pub fn production_image(root: &Path) -> BenchResult<AvrProduction> {
    let recipe = root.join("recipes/promicro-macropad/recipe.yaml");
    let p = crate::build::prepare(&recipe).map_err(|e| BenchError::new(format!("building {}: {e}", recipe.display())))?;
    AvrProduction::new(p)
}

/// A production the AVR benchmarks can run: the build plus its AVR half, reachable as
/// `production.part`, `.fuses`, `.lock` (the rest through `Deref`).
pub struct AvrProduction {
    pub production: crate::build::Production,
    pub part: &'static crate::part::Part,
    pub fuses: crate::part::FuseSet,
    pub lock: Option<u8>,
}

impl AvrProduction {
    pub fn new(production: crate::build::Production) -> BenchResult<AvrProduction> {
        let Some(&a) = production.avr() else {
            return Err(BenchError::new(format!("{}: the benchmarks need an AVR recipe", production.recipe_path.display())));
        };
        Ok(AvrProduction { part: a.part, fuses: a.fuses, lock: a.lock, production })
    }
}

impl std::ops::Deref for AvrProduction {
    type Target = crate::build::Production;
    fn deref(&self) -> &Self::Target {
        &self.production
    }
}

/// Write `production`'s hex into the work directory and return its path.
pub fn write_image(production: &crate::build::Production, work: &Path, name: &str) -> BenchResult<PathBuf> {
    let path = work.join(name);
    production.write(&path).map_err(|e| BenchError::new(format!("writing {}: {e}", path.display())))?;
    Ok(path)
}
