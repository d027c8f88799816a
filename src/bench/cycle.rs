//! Table 1: the per-unit cycle of our STK500v1 driver on the timed emulator, against the
//! protocol's lower bound ([`super::bound`]), for each USB bridge model
//! ([`crate::sim::bridge`]) and the stock ArduinoISP sketch's 19200 baud behind an Uno's 16U2.
//!
//! Setup, per run: a fresh ATmega32U4 [`SimTarget`] with datasheet timing behind a fresh
//! ArduinoISP emulator on a pty with the bridge and line timing (115200 baud unless said); the job runner
//! ([`crate::job::run_job`]) drives [`Stk500Programmer`] through connect → identify → read fuses →
//! erase → program → verify → fuses → leave, exactly as the station does per unit. After each run
//! the target's flash is compared with the image and the target's busy-violation counter must be
//! zero (the driver never talked to a busy chip), or the table fails.

use std::time::{Duration, Instant};

use super::AvrProduction;
use crate::job::{self, JobEvent, JobPlan, JobReport};
use crate::programmer::stk500::Stk500Programmer;
use crate::sim::bridge::Bridge;
use crate::sim::stk500::{EmulatorOptions, Stk500Emulator, Stk500Mode};
use crate::sim::{Fault, SimOptions, SimTarget};
use crate::verify::VerifyPolicy;

use super::{bound, median, ms, spread, BenchError, BenchOptions, BenchResult, Table};

/// Line rate of the cycle and avrdude tables (the QMK ISP firmwares; avrdude's default).
pub const BAUD: u32 = 115_200;
/// The stock ArduinoISP sketch's rate (on an Uno: behind its 16U2).
pub const ARDUINOISP_BAUD: u32 = 19_200;

/// The links a table measures: every bridge model at [`BAUD`], then the stock ArduinoISP sketch
/// (19200 baud behind a 16U2). `--quick`: the bare UART and native CDC only.
pub fn cases(quick: bool) -> Vec<(Bridge, u32)> {
    if quick {
        return vec![(Bridge::None, BAUD), (Bridge::Cdc, BAUD)];
    }
    let mut v: Vec<(Bridge, u32)> = Bridge::ALL.iter().map(|b| (*b, BAUD)).collect();
    v.push((Bridge::U16u2, ARDUINOISP_BAUD));
    v
}

/// `cdc`, `16u2 @ 19200` — how a case is named in tables.
pub fn case_name(bridge: Bridge, baud: u32) -> String {
    if baud == BAUD {
        bridge.to_string()
    } else {
        format!("{bridge} @ {baud}")
    }
}
/// Goal: measured cycle within this factor of the bound.
pub const GOAL: f64 = 1.10;

/// One measured cycle.
#[derive(Debug, Clone)]
pub struct CycleRun {
    pub wall: Duration,
    /// Bytes that crossed the emulated line, both directions.
    pub wire_bytes: u64,
    /// STK500 commands the emulator answered.
    pub commands: u64,
    pub report: JobReport,
}

/// A fresh timed emulator with a blank timed target behind `bridge`, its UART at `baud`.
pub fn timed_emulator(production: &AvrProduction, bridge: Bridge, baud: u32) -> BenchResult<Stk500Emulator> {
    let target = SimTarget::new(production.part, SimOptions::new(true, Fault::None));
    Stk500Emulator::spawn(target, EmulatorOptions::new(Stk500Mode::Avrisp).baud(baud).line_timing(true).bridge(bridge))
        .map_err(|e| BenchError::new(format!("cannot start the STK500v1 emulator on a pty: {e}")))
}

/// After a run: the target holds the image; returns how many instructions reached it while it
/// was busy (ignored by the chip, as on silicon). `strict`: any such instruction fails the run
/// (our driver must never do it; avrdude polls fuse writes by reading back, which may).
pub fn check_target(emu: &Stk500Emulator, production: &AvrProduction, who: &str, strict: bool) -> BenchResult<u64> {
    check_sim(&emu.target(), production, who, strict)
}

/// [`check_target`] on any simulated target.
pub fn check_sim(t: &SimTarget, production: &AvrProduction, who: &str, strict: bool) -> BenchResult<u64> {
    let flash = t.flash();
    for (addr, data) in production.image.segments() {
        let got = flash.get(addr as usize..addr as usize + data.len());
        if got != Some(data) {
            return Err(BenchError::new(format!("{who}: the target's flash does not hold the image at 0x{addr:04X} after the run")));
        }
    }
    let v = t.stats().busy_violations;
    if strict && v != 0 {
        return Err(BenchError::new(format!("{who}: {v} instruction(s) reached the target while it was busy")));
    }
    Ok(v)
}

/// The job plan the station would run for `production` under `verify`.
pub fn plan(production: &AvrProduction, verify: VerifyPolicy) -> JobPlan {
    let mut plan = JobPlan::new(production.part, production.image.clone());
    plan.fuses = production.fuses;
    plan.lock = production.lock;
    plan.verify = verify;
    plan
}

/// Run one board's job in-process through our driver on a fresh timed emulator.
pub async fn run_once(production: &AvrProduction, verify: VerifyPolicy, bridge: Bridge, baud: u32) -> BenchResult<CycleRun> {
    let emu = timed_emulator(production, bridge, baud)?;
    let mut prog = Stk500Programmer::avrisp(emu.path(), Some(baud));
    let plan = plan(production, verify);
    let mut sink = |_e: JobEvent| {};
    let t0 = Instant::now();
    let report = job::run_job(&mut prog, &plan, &mut sink).await;
    let wall = t0.elapsed();
    if !report.passed() {
        return Err(BenchError::new(format!(
            "flashline job on the emulator failed: {} ({})",
            report.message.clone().unwrap_or_default(),
            report.failure_class.map(|c| c.as_str()).unwrap_or("?")
        )));
    }
    check_target(&emu, production, "flashline", true)?;
    let s = emu.stats();
    let wire_bytes = s.bytes_in.load(std::sync::atomic::Ordering::Relaxed) + s.bytes_out.load(std::sync::atomic::Ordering::Relaxed);
    let commands = s.commands.load(std::sync::atomic::Ordering::Relaxed);
    Ok(CycleRun { wall, wire_bytes, commands, report })
}

/// Table 1, for full and written verification, per bridge case.
pub async fn table(opts: &BenchOptions) -> BenchResult<Table> {
    let production = super::production_image(&opts.root)?;
    let part = production.part;
    let mut t = Table::new(
        format!("1. Per-unit cycle vs the STK500v1 lower bound ({}, timed emulator, per USB bridge model)", part.name),
        &["bridge", "verify", "pages written", "bytes read back", "bound", "measured (median)", "spread", "ratio", "wire bytes (bound / measured)", "goal ≤ 1.10×"],
    );
    let mut arithmetic = Vec::new();
    let mut steps_note = Vec::new();
    for (bridge, baud) in cases(opts.quick) {
        for verify in [VerifyPolicy::Full, VerifyPolicy::Written] {
            let b = bound::stk500v1(part, &production.image, &production.fuses, verify, baud, bridge);
            let mut runs = Vec::new();
            for _ in 0..opts.reps {
                runs.push(run_once(&production, verify, bridge, baud).await.map_err(|e| BenchError::new(format!("bridge {}: {e}", case_name(bridge, baud))))?);
            }
            let walls: Vec<Duration> = runs.iter().map(|r| r.wall).collect();
            let m = median(&walls);
            let ratio = m.as_secs_f64() / b.total().as_secs_f64();
            let wire = median_u64(runs.iter().map(|r| r.wire_bytes).collect());
            t.row(vec![
                case_name(bridge, baud),
                verify.name().into(),
                format!("{} of {}", b.pages_written, b.pages_total),
                b.verify_bytes.to_string(),
                ms(b.total()),
                ms(m),
                spread(&walls),
                format!("{ratio:.3}×"),
                format!("{} / {}", b.bytes(), wire),
                if ratio <= GOAL { "met".into() } else { "**not met**".into() },
            ]);
            let name = case_name(bridge, baud);
            if bridge == Bridge::None {
                arithmetic.push(format!("bound, bridge {name}, verify {}: {}", verify.name(), b.arithmetic().join("; ")));
            } else {
                arithmetic.push(format!("bound, bridge {name}, verify {}: the same exchanges; {}", verify.name(), b.arithmetic().last().cloned().unwrap_or_default()));
            }
            if let Some(r) = runs.last() {
                let steps: Vec<String> = r.report.steps.iter().map(|s| format!("{} {} ms", s.step, s.ms)).collect();
                steps_note.push(format!("one run's steps, bridge {name}, verify {}: {} (commands answered: {})", verify.name(), steps.join(", "), r.commands));
            }
        }
    }
    t.note(format!(
        "image: recipes/promicro-macropad built by `flashline build` — Arduino's real Caterina-Micro production image (Arduino Micro sketch padded with 0xFF over 0x0000–0x6FFF = 28 KiB, Caterina bootloader 0x7000–0x7FD9 = 4 KiB; {} data bytes), fuses {}",
        production.image.len(),
        production.fuses
    ));
    t.note("bridges (src/sim/bridge.rs, sources there): none = bare UART at the baud (no USB); cdc = native USB CDC, no UART (OUT in the next 1 ms frame, replies at the next start of frame); ftdi = FT232-class, 62-byte packets, 16 ms latency timer; ch340 = 32-byte packets forwarded at the next frame; 16u2 = Arduino usbserial, flushed on its 4.096 ms Timer0 overflow; `16u2 @ 19200` = the stock ArduinoISP sketch on an Uno");
    t.note("reproduce: `target/release/flashline bench cycle` (or by hand: `flashline sim serve --protocol stk500v1 --mcu atmega32u4 --timing --bridge B [--baud 19200]` and `flashline flash -c avrisp -P PTY -b BAUD -p atmega32u4 IMAGE.hex --lfuse 0xFF --hfuse 0xD8 --efuse 0xFB`)");
    t.note(format!("median of {} run(s) each; a run = `job::run_job` (connect → leave, as a station slot does it) through the native driver on a fresh emulator; flash compared with the image and zero busy violations after every run", opts.reps));
    for a in arithmetic {
        t.note(a);
    }
    for s in steps_note {
        t.note(s);
    }
    t.note("measured includes what the bound leaves out: opening the tty, the 20 ms quiet-line drain before sync, two GET_PARAMETER (firmware version, decides SET_DEVICE_EXT), the fuse/lock read before erase (recorded per unit), the lock read after, and every wake-up's latency on a shared machine");
    Ok(t)
}

fn median_u64(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}
