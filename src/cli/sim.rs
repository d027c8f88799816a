//! `sim serve`: put an emulated programmer with a simulated target on a pseudo-terminal.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand, ValueEnum};

use flashline::part;
use flashline::sim::buspirate::{BusPirateEmulator, BusPirateOptions};
use flashline::sim::stk500::{EmulatorOptions, Stk500Emulator, Stk500Mode};
use flashline::sim::{Fault, SimOptions, SimTarget};

#[derive(Subcommand)]
pub enum SimCommand {
    /// Serve an emulated serial programmer on a pty: prints the device path as the first line
    /// of stdout, then serves until SIGINT/SIGTERM.
    Serve(ServeArgs),
}

/// Wire protocol the emulator speaks.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Protocol {
    /// STK500v1 ISP programmer as ArduinoISP (avrdude `-c avrisp` / `-c stk500v1`).
    #[value(alias = "avrisp")]
    Stk500v1,
    /// Optiboot bootloader (avrdude `-c arduino`).
    Arduino,
    /// Bus Pirate binary SPI mode (avrdude `-c buspirate`).
    Buspirate,
}

#[derive(Args)]
pub struct ServeArgs {
    #[arg(long, value_enum)]
    pub protocol: Protocol,
    /// Simulated part (catalog id, datasheet name or avrdude id).
    #[arg(long)]
    pub mcu: String,
    /// Model the serial line rate and the target's datasheet write/erase delays.
    #[arg(long)]
    pub timing: bool,
    /// Fault to inject: none, no-target, no-target-ff, wrong-chip, flaky[:RATE], stuck[:ADDR],
    /// slow[:HZ], unplug[:PAGES].
    #[arg(long, default_value = "none")]
    pub fault: String,
    /// Serial rate of the emulated firmware.
    #[arg(long, default_value_t = 115_200, value_parser = clap::value_parser!(u32).range(1..=4_000_000))]
    pub baud: u32,
    /// Seed for the flaky-contact bit errors.
    #[arg(long, default_value_t = 0x5EED)]
    pub seed: u64,
}

pub fn run(cmd: SimCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SimCommand::Serve(a) => serve(a),
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let part = part::find(&a.mcu).ok_or_else(|| anyhow!("unknown MCU '{}': known parts are {}", a.mcu, part::ids().join(", ")))?;
    let fault = Fault::parse(&a.fault).map_err(|e| anyhow!(e))?;
    if a.baud == 0 {
        return Err(anyhow!("--baud must be above 0"));
    }
    let mut opts = SimOptions::new(a.timing, fault);
    opts.seed = a.seed;
    let target = SimTarget::new(part, opts);
    let (path, emu) = match a.protocol {
        Protocol::Stk500v1 | Protocol::Arduino => {
            let mode = if matches!(a.protocol, Protocol::Stk500v1) { Stk500Mode::Avrisp } else { Stk500Mode::Arduino };
            let emu = Stk500Emulator::spawn(target, EmulatorOptions::new(mode).baud(a.baud).line_timing(a.timing))
                .context("could not open a pseudo-terminal for the emulator")?;
            (emu.path().to_path_buf(), Served::Stk500(emu, mode))
        }
        Protocol::Buspirate => {
            let emu = BusPirateEmulator::spawn(target, BusPirateOptions { baud: a.baud, line_timing: a.timing, ..BusPirateOptions::default() })
                .context("could not open a pseudo-terminal for the emulator")?;
            (emu.path().to_path_buf(), Served::BusPirate(emu))
        }
    };

    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", path.display())?;
    out.flush()?;
    drop(out);
    let what = match &emu {
        Served::Stk500(_, Stk500Mode::Avrisp) => "stk500v1 (ArduinoISP)",
        Served::Stk500(..) => "arduino (Optiboot)",
        Served::BusPirate(_) => "buspirate (Bus Pirate v3, firmware v6 binary SPI)",
    };
    eprintln!(
        "serving {what} for {} on {} at {} baud{}{}; stop with Ctrl-C",
        part.name,
        path.display(),
        a.baud,
        if a.timing { ", timed" } else { "" },
        if a.fault != "none" { format!(", fault {}", a.fault) } else { String::new() },
    );

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    let stats = match &emu {
        Served::Stk500(e, _) => e.target().stats().clone(),
        Served::BusPirate(e) => e.target().stats().clone(),
    };
    drop(emu);
    eprintln!("stopped: {} SPI instructions, {} page writes, {} chip erases", stats.spi_commands, stats.page_writes, stats.chip_erases);
    Ok(ExitCode::SUCCESS)
}

/// The emulator being served (dropping it stops it and closes the pty).
enum Served {
    Stk500(Stk500Emulator, Stk500Mode),
    BusPirate(BusPirateEmulator),
}
