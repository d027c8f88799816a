//! Table 2: avrdude 7.1 against `flashline flash` on the very same emulator and image.
//!
//! Both tools run as the processes a user starts (`avrdude …` and `flashline flash …`), each
//! against its own fresh timed ArduinoISP emulator (ATmega32U4, 115200 baud, the USB bridge
//! model and line timing, datasheet delays) in this process, so the emulator's counters say how
//! many bytes each tool put on the wire. avrdude runs the seed guide's own command line (fuses
//! in its order: lfuse, hfuse, efuse; no `-b` at avrdude's default 115200). After every run the
//! target must hold the image, or the table fails.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::AvrProduction;
use crate::part::FuseKind;
use crate::sim::bridge::Bridge;
use crate::sim::buspirate::{BusPirateEmulator, BusPirateOptions};
use crate::sim::stk500::Stk500Emulator;
use crate::sim::{Fault, SimOptions, SimTarget};

use super::cycle::{case_name, cases, check_sim, timed_emulator, BAUD};
use super::{median, secs, spread, BenchError, BenchOptions, BenchResult, Table};

/// Goals: avrdude's time / ours.
pub const GOAL_FULL: f64 = 2.0;
pub const GOAL_WRITTEN: f64 = 2.5;

/// Which programmer protocol both tools drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// STK500v1 ISP programmer (ArduinoISP): avrdude `-c avrisp`, flashline `-c avrisp`.
    Avrisp,
    /// Bus Pirate v3 binary SPI mode: avrdude `-c buspirate`, flashline `-c buspirate`.
    Buspirate,
}

impl Wire {
    pub fn name(self) -> &'static str {
        match self {
            Wire::Avrisp => "avrisp",
            Wire::Buspirate => "buspirate",
        }
    }
}

/// A fresh timed emulator of either kind.
enum Emu {
    Stk(Stk500Emulator),
    Bp(BusPirateEmulator),
}

impl Emu {
    fn spawn(wire: Wire, production: &AvrProduction, bridge: Bridge, baud: u32) -> BenchResult<Emu> {
        match wire {
            Wire::Avrisp => Ok(Emu::Stk(timed_emulator(production, bridge, baud)?)),
            Wire::Buspirate => {
                let target = SimTarget::new(production.part, SimOptions::new(true, Fault::None));
                let opts = BusPirateOptions { baud: BAUD, line_timing: true, ..BusPirateOptions::default() };
                BusPirateEmulator::spawn(target, opts).map(Emu::Bp).map_err(|e| BenchError::new(format!("cannot start the Bus Pirate emulator on a pty: {e}")))
            }
        }
    }
    fn path(&self) -> &Path {
        match self {
            Emu::Stk(e) => e.path(),
            Emu::Bp(e) => e.path(),
        }
    }
    fn check(&self, production: &AvrProduction, who: &str, strict: bool) -> BenchResult<u64> {
        match self {
            Emu::Stk(e) => check_sim(&e.target(), production, who, strict),
            Emu::Bp(e) => check_sim(&e.target(), production, who, strict),
        }
    }
    /// (bytes both ways, protocol commands)
    fn counters(&self) -> (u64, u64) {
        match self {
            Emu::Stk(e) => {
                let s = e.stats();
                (s.bytes_in.load(Ordering::Relaxed) + s.bytes_out.load(Ordering::Relaxed), s.commands.load(Ordering::Relaxed))
            }
            Emu::Bp(e) => {
                let s = e.stats();
                (s.bytes_in.load(Ordering::Relaxed) + s.bytes_out.load(Ordering::Relaxed), s.commands.load(Ordering::Relaxed))
            }
        }
    }
}

/// Which tool and mode one run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Avrdude,
    FlashlineFull,
    FlashlineWritten,
}

impl Tool {
    pub fn label(self, wire: Wire) -> String {
        match self {
            Tool::Avrdude => format!("avrdude 7.1 -c {} (full verify)", wire.name()),
            Tool::FlashlineFull => "flashline flash (verify full)".into(),
            Tool::FlashlineWritten => "flashline flash --verify written".into(),
        }
    }
}

/// One measured process run.
#[derive(Debug, Clone)]
pub struct ToolRun {
    pub wall: Duration,
    pub wire_bytes: u64,
    pub commands: u64,
    /// Instructions that reached the target while it was busy (ignored by the chip).
    pub busy_violations: u64,
}

/// The avrdude version line (`avrdude version 7.1, …`), or an error saying it is missing.
pub fn avrdude_version() -> BenchResult<String> {
    let out = Command::new("avrdude").arg("-?").output().map_err(|e| BenchError::new(format!("avrdude is not runnable ({e}): install Debian's avrdude 7.1")))?;
    let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains("avrdude version"))
        .map(|l| l.trim().to_string())
        .ok_or_else(|| BenchError::new("avrdude -? printed no version line"))
}

/// The command line for `tool` against `pty` at `baud` (the program, then its arguments).
/// avrdude's is the seed guide's: `avrdude -c avrisp -P PORT -p atmega32u4 -U flash:w:…:i
/// -U lfuse:w:…:m -U hfuse:w:…:m -U efuse:w:…:m`, with `-b` only off avrdude's default 115200.
pub fn command_line(wire: Wire, tool: Tool, flashline: &Path, production: &AvrProduction, image: &Path, pty: &Path, baud: u32) -> Vec<String> {
    let f = production.fuses;
    let mut v: Vec<String> = Vec::new();
    match tool {
        Tool::Avrdude => {
            v.extend(["avrdude", "-c", wire.name()].map(String::from));
            if baud != BAUD || wire == Wire::Buspirate {
                v.extend(["-b".to_string(), baud.to_string()]);
            }
            v.push("-P".into());
            v.push(pty.display().to_string());
            v.extend(["-p".to_string(), production.part.avrdude_id().to_string()]);
            v.push("-U".into());
            v.push(format!("flash:w:{}:i", image.display()));
            for (k, name) in [(FuseKind::Low, "lfuse"), (FuseKind::High, "hfuse"), (FuseKind::Extended, "efuse")] {
                if let Some(b) = f.get(k) {
                    v.push("-U".into());
                    v.push(format!("{name}:w:0x{b:02X}:m"));
                }
            }
            if let Some(l) = production.lock {
                v.push("-U".into());
                v.push(format!("lock:w:0x{l:02X}:m"));
            }
        }
        Tool::FlashlineFull | Tool::FlashlineWritten => {
            v.push(flashline.display().to_string());
            v.extend(["flash", "-c", wire.name(), "-b", &baud.to_string(), "-p", production.part.id, "-P"].map(String::from));
            v.push(pty.display().to_string());
            v.push(image.display().to_string());
            for (k, name) in [(FuseKind::Low, "--lfuse"), (FuseKind::High, "--hfuse"), (FuseKind::Extended, "--efuse")] {
                if let Some(b) = f.get(k) {
                    v.push(name.into());
                    v.push(format!("0x{b:02X}"));
                }
            }
            if let Some(l) = production.lock {
                v.push("--lock".into());
                v.push(format!("0x{l:02X}"));
            }
            if tool == Tool::FlashlineWritten {
                v.push("--verify".into());
                v.push("written".into());
            }
            v.push("--json".into());
        }
    }
    v
}

/// Run `tool` once on a fresh timed emulator behind `bridge` at `baud`; the target must hold
/// the image afterwards.
pub fn run_once(wire: Wire, tool: Tool, flashline: &Path, production: &AvrProduction, image: &Path, bridge: Bridge, baud: u32) -> BenchResult<ToolRun> {
    let emu = Emu::spawn(wire, production, bridge, baud)?;
    let argv = command_line(wire, tool, flashline, production, image, emu.path(), baud);
    let t0 = Instant::now();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::new(format!("cannot start {}: {e}", argv[0])))?;
    // Bounded: a tool that hangs on the emulator is a failed run, not a stuck benchmark.
    let deadline = t0 + Duration::from_secs(180);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BenchError::new(format!("{} did not finish within 180 s", tool.label(wire))));
            }
            Err(e) => return Err(BenchError::new(format!("waiting for {}: {e}", argv[0]))),
        }
    };
    let wall = t0.elapsed();
    let out = child.wait_with_output().map_err(|e| BenchError::new(format!("reading {}'s output: {e}", argv[0])))?;
    if !status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(6).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(BenchError::new(format!("{} failed ({status}): {}", argv.join(" "), tail.join(" / "))));
    }
    let busy_violations = emu.check(production, &tool.label(wire), tool != Tool::Avrdude)?;
    let (wire_bytes, commands) = emu.counters();
    Ok(ToolRun { wall, wire_bytes, commands, busy_violations })
}

/// Table 2 (`Wire::Avrisp`, per bridge case) or 2c (`Wire::Buspirate`): the three tools,
/// interleaved run by run so load changes hit all of them alike.
pub fn table(opts: &BenchOptions, wire: Wire) -> BenchResult<Table> {
    let version = avrdude_version()?;
    let production = super::production_image(&opts.root)?;
    let image = super::write_image(&production, &opts.work, "promicro_macropad_production.hex")?;
    // avrdude -c buspirate takes ~100 s per board here: fewer repetitions, none in --quick.
    let (reps, with_avrdude, links) = match wire {
        Wire::Avrisp if opts.quick => (opts.reps, true, vec![(Bridge::Cdc, BAUD)]),
        // Not the bare UART: there avrdude's seed command fails (its next fuse write reaches
        // the chip while the low-fuse write is still busy), as the bridge model explains.
        Wire::Avrisp => (opts.reps, true, cases(false).into_iter().filter(|(b, _)| *b != Bridge::None).collect()),
        Wire::Buspirate => (opts.reps.min(2), !opts.quick, vec![(Bridge::None, BAUD)]),
    };
    let tools: Vec<Tool> = [Tool::Avrdude, Tool::FlashlineFull, Tool::FlashlineWritten].into_iter().filter(|t| with_avrdude || *t != Tool::Avrdude).collect();
    let mut t = match wire {
        Wire::Avrisp => Table::new(
            format!("2. avrdude vs flashline on the same timed STK500v1 emulator ({}, per USB bridge model)", production.part.name),
            &["bridge", "tool", "wall (median)", "spread", "wire bytes", "STK500 commands", "avrdude ÷ this", "goal"],
        ),
        Wire::Buspirate => Table::new(
            format!("2c. avrdude vs flashline on the same timed Bus Pirate emulator ({}, {BAUD} baud, firmware v6 binary SPI)", production.part.name),
            &["bridge", "tool", "wall (median)", "spread", "wire bytes", "binary-mode commands", "avrdude ÷ this", "goal"],
        ),
    };
    let mut busy_notes = Vec::new();
    for (bridge, baud) in &links {
        let (bridge, baud) = (*bridge, *baud);
        let name = case_name(bridge, baud);
        let mut runs: Vec<Vec<ToolRun>> = vec![Vec::new(); tools.len()];
        for _ in 0..reps {
            for (i, tool) in tools.iter().enumerate() {
                runs[i].push(run_once(wire, *tool, &opts.flashline, &production, &image, bridge, baud).map_err(|e| BenchError::new(format!("bridge {name}: {e}")))?);
            }
        }
        let med: Vec<Duration> = runs.iter().map(|r| median(&r.iter().map(|x| x.wall).collect::<Vec<_>>())).collect();
        for (i, tool) in tools.iter().enumerate() {
            let r = &runs[i];
            let speedup = if with_avrdude { med[0].as_secs_f64() / med[i].as_secs_f64().max(1e-9) } else { f64::NAN };
            let (goal, verdict) = match tool {
                Tool::Avrdude => ("-".to_string(), String::new()),
                Tool::FlashlineFull => (format!("≥ {GOAL_FULL}×"), if speedup >= GOAL_FULL { " met".into() } else { " **not met**".into() }),
                Tool::FlashlineWritten => (format!("≥ {GOAL_WRITTEN}×"), if speedup >= GOAL_WRITTEN { " met".into() } else { " **not met**".into() }),
            };
            t.row(vec![
                name.clone(),
                tool.label(wire),
                secs(med[i]),
                spread(&r.iter().map(|x| x.wall).collect::<Vec<_>>()),
                r.last().map(|x| x.wire_bytes.to_string()).unwrap_or_default(),
                r.last().map(|x| x.commands.to_string()).unwrap_or_default(),
                if with_avrdude { format!("{speedup:.2}×") } else { "-".into() },
                if with_avrdude { format!("{goal}{verdict}") } else { "(avrdude not run in --quick)".into() },
            ]);
        }
        if let Some(r) = runs[0].last().filter(|_| with_avrdude) {
            if r.busy_violations > 0 {
                busy_notes.push(format!("{name}: {}", r.busy_violations));
            }
        }
    }
    t.note(format!("{version}; median of {reps} run(s) per tool, interleaved; each run on a fresh emulator, whole process wall time (start to exit), target flash checked against the image after every run"));
    if !with_avrdude {
        t.note("--quick: avrdude -c buspirate (about 100 s per board) not run; flashline's runs still program and verify");
    }
    if wire == Wire::Avrisp {
        t.note("the bare UART (`none`) is left out: there avrdude fails the seed command (it polls the low-fuse write by reading back at once, the busy chip reads 0xFF, and the high-fuse write that follows reaches the chip while it is still busy and is lost) — real programmers all sit behind USB, whose latency gives the chip its time");
    }
    if opts.quick && wire == Wire::Avrisp {
        t.note("--quick: the cdc bridge only; `flashline bench avrdude` runs every bridge model and 19200 baud");
    }
    if !busy_notes.is_empty() {
        t.note(format!("instructions avrdude sent while the target was busy (ignored by the chip; avrdude polls by reading back) — its result still verified: {}", busy_notes.join(", ")));
    }
    let pty = Path::new("PTY");
    let img = Path::new("IMAGE.hex");
    let mut bauds: Vec<u32> = links.iter().map(|l| l.1).collect();
    bauds.sort_unstable_by(|a, b| b.cmp(a));
    bauds.dedup();
    for baud in bauds {
        t.note(format!("avrdude at {baud} baud: `{}`", command_line(wire, Tool::Avrdude, Path::new("flashline"), &production, img, pty, baud).join(" ")));
        t.note(format!("flashline at {baud} baud: `{}` (and the same with `--verify written`)", command_line(wire, Tool::FlashlineFull, Path::new("flashline"), &production, img, pty, baud).join(" ")));
    }
    if wire == Wire::Avrisp {
        t.note("PTY = the first line of `flashline sim serve --protocol stk500v1 --mcu atmega32u4 --timing --bridge B [--baud 19200]`; IMAGE.hex = `flashline build recipes/promicro-macropad/recipe.yaml`; the whole table: `target/release/flashline bench avrdude`");
    } else {
        t.note("PTY = the first line of `flashline sim serve --protocol buspirate --mcu atmega32u4 --timing`; IMAGE.hex = `flashline build recipes/promicro-macropad/recipe.yaml`");
    }
    let (pages, written) = super::bound::pages(production.part, &production.image);
    let blank = written.iter().filter(|w| !**w).count();
    t.note(match wire {
        Wire::Avrisp => format!(
            "why: the image covers {} pages, {blank} of them all 0xFF (the sketch area's padding). avrdude writes and reads back every page the file covers, 128 bytes per READ_PAGE with a LOAD_ADDRESS before each page; flashline skips the blank pages after chip erase and reads back in 256-byte blocks (one LOAD_ADDRESS before each page and block, like avrdude: it does not rely on address auto-increment), and with `written` reads back only the pages it wrote. Behind USB every exchange costs at least its frames (or an FTDI latency period), so the fewer exchanges weigh more than the fewer bytes. No pipelining (ArduinoISP handles one frame at a time).",
            pages.len()
        ),
        Wire::Buspirate => format!(
            "the image covers {} pages, {blank} of them all 0xFF; avrdude writes and reads back every covered page, flashline skips blank pages after chip erase (and reads back only written pages with `written`). Both speak the binary SPI mode of the same emulated firmware v6. The Bus Pirate's own FT232R bridge is not modelled (bare UART at 115200).",
            pages.len()
        ),
    });
    Ok(t)
}
