//! Table 3: one station process with 1, 8, 32, 64 slots — units per hour and CPU per unit.
//!
//! The real [`Supervisor`] runs the `promicro-macropad` recipe (full verify, fuses) with a real
//! SQLite file, fed one scan per unit as fast as slots free up:
//!
//! * `sim` slots: in-process simulated programmer + target with datasheet timing (`timing: true`);
//!   the process CPU then includes the simulation itself, so the supervisor's own CPU per unit is
//!   measured apart: a station with *untimed* sim slots (pure work, no sleeps) minus the same
//!   untimed job run bare (no station, no records);
//! * `avrisp` slots: each slot's ArduinoISP emulator runs in its own `flashline sim serve
//!   --protocol stk500v1 --timing --bridge none` child process on a pty (115200 baud, bare UART line timing), so this
//!   process's CPU is exactly what a station driving real programmers spends (drivers, serial
//!   I/O, supervisor, records). The emulators' CPU is reported apart.
//!
//! CPU comes from `getrusage(RUSAGE_SELF)` (and `RUSAGE_CHILDREN` for the emulators) around the
//! batch.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db::Db;
use crate::job::{self, JobEvent};
use crate::programmer::SimProgrammer;
use crate::sim::{Fault, SimOptions};
use crate::station::{Station, StationEvent, Supervisor};
use crate::verify::VerifyPolicy;

use super::{cpu_time, BenchError, BenchOptions, BenchResult, Table};

/// Goal: N slots deliver at least this share of N × the single-slot rate.
pub const GOAL_EFFICIENCY: f64 = 0.90;

/// Which programmers the slots have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    Sim,
    Avrisp,
}

impl SlotKind {
    pub fn name(self) -> &'static str {
        match self {
            SlotKind::Sim => "sim (timed)",
            SlotKind::Avrisp => "avrisp → pty STK500v1 emulator (timed, 115200)",
        }
    }
}

/// One station batch.
#[derive(Debug, Clone)]
pub struct Batch {
    pub kind: SlotKind,
    pub slots: usize,
    pub units: u64,
    pub passed: u64,
    pub wall: Duration,
    /// This process's CPU over the batch.
    pub cpu: Duration,
    /// The emulator processes' CPU (avrisp slots).
    pub emulator_cpu: Duration,
    /// Median per-unit cycle as the station measured it (scan dispatched → recorded).
    pub median_cycle: Duration,
}

impl Batch {
    pub fn units_per_hour(&self) -> f64 {
        self.units as f64 * 3600.0 / self.wall.as_secs_f64().max(1e-9)
    }
    pub fn cpu_per_unit(&self) -> Duration {
        self.cpu / self.units.max(1) as u32
    }
}

/// `flashline sim serve` child processes, stopped (SIGTERM, then SIGKILL) on drop.
struct Emulators {
    children: Vec<Child>,
    paths: Vec<PathBuf>,
}

impl Emulators {
    fn spawn(flashline: &Path, mcu: &str, n: usize) -> BenchResult<Emulators> {
        let mut e = Emulators { children: Vec::new(), paths: Vec::new() };
        for i in 0..n {
            let mut child = Command::new(flashline)
                .args(["sim", "serve", "--protocol", "stk500v1", "--mcu", mcu, "--timing", "--bridge", "none", "--baud", "115200"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|err| BenchError::new(format!("cannot start emulator {i} ({} sim serve): {err}", flashline.display())))?;
            let stdout = child.stdout.take().ok_or_else(|| BenchError::new("emulator stdout not captured"))?;
            e.children.push(child);
            // The first line is the pty path; bounded by the child exiting (EOF) on failure.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(stdout).read_line(&mut line);
                let _ = tx.send(line);
            });
            let line = rx.recv_timeout(Duration::from_secs(20)).map_err(|_| BenchError::new(format!("emulator {i} printed no pty path within 20 s")))?;
            let path = line.trim();
            if path.is_empty() {
                return Err(BenchError::new(format!("emulator {i} exited without printing a pty path")));
            }
            e.paths.push(PathBuf::from(path));
        }
        Ok(e)
    }

    /// Stop every child by its pid and wait for it (so `RUSAGE_CHILDREN` includes it).
    fn stop(&mut self) {
        for c in &self.children {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for c in &mut self.children {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                    Ok(None) => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        self.children.clear();
    }
}

impl Drop for Emulators {
    fn drop(&mut self) {
        self.stop();
    }
}

fn station_yaml(kind: SlotKind, n: usize, ports: &[PathBuf], timed: bool) -> String {
    let mut s = format!("station: bench-{n}\noperator_prompt: false\nslots:\n");
    match kind {
        SlotKind::Sim => (0..n).for_each(|i| s += &format!("  - {{ name: S{i}, programmer: sim, timing: {timed} }}\n")),
        SlotKind::Avrisp => {
            for (i, port) in ports.iter().enumerate().take(n) {
                s += &format!("  - {{ name: A{i}, programmer: avrisp, port: \"{}\", baud: 115200 }}\n", port.display());
            }
        }
    }
    s
}

/// Run one batch of `units_per_slot × slots` units on a fresh station and database. `timed`:
/// `sim` slots model datasheet delays and SPI time (off: pure CPU work, for CPU accounting).
pub async fn batch(opts: &BenchOptions, kind: SlotKind, slots: usize, units_per_slot: u64, timed: bool) -> BenchResult<Batch> {
    let recipe = opts.root.join("recipes/promicro-macropad/recipe.yaml");
    let production = Arc::new(crate::build::prepare(&recipe).map_err(|e| BenchError::new(format!("{}: {e}", recipe.display())))?);
    let mut emus = match kind {
        SlotKind::Avrisp => Some(Emulators::spawn(&opts.flashline, production.mcu.id(), slots)?),
        SlotKind::Sim => None,
    };
    let ports = emus.as_ref().map(|e| e.paths.clone()).unwrap_or_default();
    let tag = format!("{}-{slots}{}", if kind == SlotKind::Sim { "sim" } else { "avrisp" }, if timed { "" } else { "-untimed" });
    let station_path = opts.work.join(format!("station-{tag}.yaml"));
    std::fs::write(&station_path, station_yaml(kind, slots, &ports, timed)).map_err(|e| BenchError::new(format!("{}: {e}", station_path.display())))?;
    let station = Station::load(&station_path).map_err(|e| BenchError::new(e.to_string()))?;
    let db_path = opts.work.join(format!("scaling-{tag}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db_path.display()));
    }
    let db = Db::connect(&format!("sqlite://{}", db_path.display())).await.map_err(|e| BenchError::new(format!("database {}: {e}", db_path.display())))?;
    let sup = Supervisor::start(station, production, db, "bench".into()).await.map_err(|e| BenchError::new(e.to_string()))?;
    let mut events = sup.subscribe();
    let collector = tokio::spawn(async move {
        let mut cycles = Vec::new();
        let mut failures = Vec::new();
        loop {
            match events.recv().await {
                Ok(StationEvent::JobFinished { cycle_ms, result, message, slot, .. }) => {
                    cycles.push(Duration::from_millis(cycle_ms));
                    if result != "pass" {
                        failures.push(format!("{slot}: {result}: {}", message.unwrap_or_default()));
                    }
                }
                Ok(StationEvent::SlotOffline { slot, reason }) => failures.push(format!("{slot} offline: {reason}")),
                Ok(StationEvent::Stopped(_)) => break,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
        (cycles, failures)
    });
    let units = units_per_slot * slots as u64;
    let cpu0 = cpu_time(false);
    let t0 = Instant::now();
    for u in 0..units {
        sup.submit(&format!("BENCH-{tag}-{u:05}")).await;
    }
    let totals = sup.finish().await;
    let wall = t0.elapsed();
    let cpu = cpu_time(false).saturating_sub(cpu0);
    let (cycles, failures) = tokio::time::timeout(Duration::from_secs(10), collector)
        .await
        .map_err(|_| BenchError::new("station events did not end"))?
        .map_err(|e| BenchError::new(format!("event collector: {e}")))?;
    let emulator_cpu = match emus.as_mut() {
        Some(e) => {
            let c0 = cpu_time(true);
            e.stop();
            cpu_time(true).saturating_sub(c0)
        }
        None => Duration::ZERO,
    };
    if totals.passed != units {
        return Err(BenchError::new(format!(
            "{} slots ({}): {} of {units} units passed; first problems: {}",
            slots,
            kind.name(),
            totals.passed,
            failures.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
        )));
    }
    Ok(Batch { kind, slots, units, passed: totals.passed, wall, cpu, emulator_cpu, median_cycle: super::median(&cycles) })
}

/// CPU per unit of the bare job on an untimed `SimProgrammer` (no station, no records, no
/// sleeps): the simulation's own CPU work.
pub async fn bare_sim_cpu_per_unit(opts: &BenchOptions, units: u64) -> BenchResult<Duration> {
    let production = super::production_image(&opts.root)?;
    let plan = super::cycle::plan(&production, VerifyPolicy::Full);
    let cpu0 = cpu_time(false);
    for i in 0..units {
        let mut p = SimProgrammer::new(production.part, SimOptions::new(false, Fault::None), format!("bare{i}"));
        let mut sink = |_e: JobEvent| {};
        let r = job::run_job(&mut p, &plan, &mut sink).await;
        if !r.passed() {
            return Err(BenchError::new(format!("bare sim job failed: {}", r.message.unwrap_or_default())));
        }
    }
    Ok(cpu_time(false).saturating_sub(cpu0) / units.max(1) as u32)
}

/// Table 3.
pub async fn table(opts: &BenchOptions, avrisp: bool) -> BenchResult<Table> {
    let sizes: &[usize] = if opts.quick { &[1, 8] } else { &[1, 8, 32, 64] };
    let avrisp_sizes: &[usize] = if opts.quick { &[1, 4] } else { &[1, 8, 32, 64] };
    let mut t = Table::new(
        "3. Scaling: one station process, N slots (promicro-macropad recipe, full verify, SQLite records)",
        &["slots", "units", "wall", "units/hour", "vs N × 1-slot rate", "median cycle", "CPU/unit (station process)", "emulator CPU/unit", "goal ≥ 90%"],
    );
    let mut kinds = vec![(SlotKind::Sim, if opts.quick { 1 } else { 8 })];
    if avrisp {
        kinds.push((SlotKind::Avrisp, if opts.quick { 1 } else { 2 }));
    }
    let mut batches = Vec::new();
    for (kind, per_slot) in kinds {
        let mut one: Option<f64> = None;
        for &n in if kind == SlotKind::Avrisp { avrisp_sizes } else { sizes } {
            let b = batch(opts, kind, n, per_slot, true).await?;
            let rate = b.units_per_hour();
            let base = *one.get_or_insert(rate);
            let eff = rate / (base * n as f64);
            t.row(vec![
                format!("{n} × {}", kind.name()),
                b.units.to_string(),
                super::secs(b.wall),
                format!("{rate:.0}"),
                format!("{:.1}%", eff * 100.0),
                super::secs(b.median_cycle),
                super::ms(b.cpu_per_unit()),
                if kind == SlotKind::Avrisp { super::ms(b.emulator_cpu / b.units.max(1) as u32) } else { "(in process)".into() },
                if n == 1 { "-".into() } else if eff >= GOAL_EFFICIENCY { "met".into() } else { "**not met**".into() },
            ]);
            batches.push(b);
        }
    }
    // Supervisor CPU: the same station with untimed sim slots (no sleeps, so CPU per unit is
    // work, not wake-ups) minus the bare untimed job.
    let (probe_slots, probe_units) = if opts.quick { (4, 2) } else { (64, 4) };
    let untimed = batch(opts, SlotKind::Sim, probe_slots, probe_units, false).await?;
    let bare = bare_sim_cpu_per_unit(opts, untimed.units).await?;
    let sup = untimed.cpu_per_unit().saturating_sub(bare);
    t.note(format!(
        "supervisor CPU per unit (dispatch, events, SQLite records): {} — the station with {probe_slots} untimed sim slots spends {} CPU per unit ({} units), the bare untimed job alone {}",
        super::ms(sup),
        super::ms(untimed.cpu_per_unit()),
        untimed.units,
        super::ms(bare)
    ));
    t.note("CPU per unit of the timed sim rows is mostly sleep/wake-up bookkeeping (it falls as more slots share each timer tick); the untimed probe above isolates the work");
    if let Some(b) = batches.iter().filter(|b| b.kind == SlotKind::Avrisp).max_by_key(|b| b.slots) {
        let load = b.cpu.as_secs_f64() / b.wall.as_secs_f64().max(1e-9);
        t.note(format!(
            "station driving {} real-protocol (STK500v1 over tty) slots: {} CPU per unit, i.e. {:.1}% of one core of this machine while all {} slots run",
            b.slots,
            super::ms(b.cpu_per_unit()),
            load * 100.0,
            b.slots
        ));
    }
    t.note(format!("units per slot: {} (sim), {} (avrisp); ", if opts.quick { 1 } else { 8 }, if opts.quick { 1 } else { 2 }) + "units are fed as fast as slots free up (a scan file); each unit: begin-attempt row committed, job, steps + result committed; the wall runs from the first scan to the last record");
    Ok(t)
}
