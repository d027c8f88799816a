//! `sim serve`: put an emulated programmer with a simulated target on a pseudo-terminal.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand, ValueEnum};

use flashline::part;
use flashline::sim::bridge::Bridge;
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
    /// JTAG over OpenOCD's `remote_bitbang` TCP protocol, for STM32 parts (`--mcu stm32f103c8`).
    JtagBitbang,
}

#[derive(Args)]
pub struct ServeArgs {
    #[arg(long, value_enum)]
    pub protocol: Protocol,
    /// Simulated part (catalog id, datasheet name or avrdude id).
    #[arg(long)]
    pub mcu: String,
    /// Model the link (see --bridge) and the target's datasheet write/erase delays.
    #[arg(long)]
    pub timing: bool,
    /// With --timing, the programmer's USB side: cdc (native USB CDC: 32U4 / Teensy ISP
    /// firmwares, 1 ms frames), ftdi[:MS] (latency timer, default 16 ms), ch340, 16u2 (an Uno's
    /// USB-serial chip), none (a bare UART). Default for stk500v1: cdc; otherwise none.
    #[arg(long)]
    pub bridge: Option<String>,
    /// stk500v1 only: keep the address after PROG_PAGE/READ_PAGE (no auto-increment, like
    /// Optiboot and other STK500v1 firmwares), so a host must send LOAD_ADDRESS per page.
    #[arg(long)]
    pub no_autoinc: bool,
    /// Fault to inject: none, no-target, no-target-ff, wrong-chip, flaky[:RATE], stuck[:ADDR],
    /// slow[:HZ], unplug[:PAGES]; for jtag-bitbang (STM32): none, no-target,
    /// readout-protected, clone, stuck[:ADDR].
    #[arg(long, default_value = "none")]
    pub fault: String,
    /// Serial rate of the emulated firmware.
    #[arg(long, default_value_t = 115_200, value_parser = clap::value_parser!(u32).range(1..=4_000_000))]
    pub baud: u32,
    /// Seed for the flaky-contact bit errors (STM32: for the board's unique id).
    #[arg(long, default_value_t = 0x5EED)]
    pub seed: u64,
    /// jtag-bitbang: TCP address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
}

pub fn run(cmd: SimCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SimCommand::Serve(a) => serve(a),
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    if matches!(a.protocol, Protocol::JtagBitbang) {
        return serve_jtag_bitbang(a);
    }
    let part = part::find(&a.mcu).ok_or_else(|| anyhow!("unknown MCU '{}': known parts are {}", a.mcu, part::ids().join(", ")))?;
    let fault = Fault::parse(&a.fault).map_err(|e| anyhow!(e))?;
    if a.baud == 0 {
        return Err(anyhow!("--baud must be above 0"));
    }
    let bridge = match (&a.bridge, a.protocol) {
        (Some(b), Protocol::Buspirate) => return Err(anyhow!("--bridge {b}: the Bus Pirate emulator models its line only (no bridge model yet)")),
        (Some(_), _) if !a.timing => return Err(anyhow!("--bridge models time: use it with --timing")),
        (Some(b), _) => Bridge::parse(b).map_err(|e| anyhow!(e))?,
        (None, Protocol::Stk500v1) if a.timing => Bridge::Cdc,
        (None, _) => Bridge::None,
    };
    if a.no_autoinc && !matches!(a.protocol, Protocol::Stk500v1) {
        return Err(anyhow!("--no-autoinc applies to --protocol stk500v1"));
    }
    let mut opts = SimOptions::new(a.timing, fault);
    opts.seed = a.seed;
    let target = SimTarget::new(part, opts);
    let (path, emu) = match a.protocol {
        Protocol::Stk500v1 | Protocol::Arduino => {
            let mode = if matches!(a.protocol, Protocol::Stk500v1) { Stk500Mode::Avrisp } else { Stk500Mode::Arduino };
            let emu = Stk500Emulator::spawn(target, EmulatorOptions::new(mode).baud(a.baud).line_timing(a.timing).bridge(bridge).no_autoinc(a.no_autoinc))
                .context("could not open a pseudo-terminal for the emulator")?;
            (emu.path().to_path_buf(), Served::Stk500(emu, mode))
        }
        Protocol::Buspirate => {
            let emu = BusPirateEmulator::spawn(target, BusPirateOptions { baud: a.baud, line_timing: a.timing, ..BusPirateOptions::default() })
                .context("could not open a pseudo-terminal for the emulator")?;
            (emu.path().to_path_buf(), Served::BusPirate(emu))
        }
        Protocol::JtagBitbang => return serve_jtag_bitbang(a),
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
        "serving {what} for {} on {} at {} baud{}{}{}; stop with Ctrl-C",
        part.name,
        path.display(),
        a.baud,
        if a.timing { format!(", timed, bridge {bridge}") } else { String::new() },
        if a.no_autoinc { ", no address auto-increment" } else { "" },
        if a.fault != "none" { format!(", fault {}", a.fault) } else { String::new() },
    );

    wait_for_signal()?;
    let stats = match &emu {
        Served::Stk500(e, _) => e.target().stats().clone(),
        Served::BusPirate(e) => e.target().stats().clone(),
    };
    drop(emu);
    eprintln!("stopped: {} SPI instructions, {} page writes, {} chip erases", stats.spi_commands, stats.page_writes, stats.chip_erases);
    Ok(ExitCode::SUCCESS)
}

/// `--protocol jtag-bitbang`: a simulated STM32 behind a `remote_bitbang` TCP server.
fn serve_jtag_bitbang(a: ServeArgs) -> anyhow::Result<ExitCode> {
    use flashline::sim::stm32::{BitbangServer, ChipOptions, Stm32Chip, Stm32Fault};
    use flashline::text::shown;
    let part = flashline::stm32::find(&a.mcu).ok_or_else(|| {
        anyhow!("unknown MCU '{}' for jtag-bitbang: known STM32 parts are {}", shown(&a.mcu), flashline::stm32::ids().join(", "))
    })?;
    let fault = Stm32Fault::parse(&a.fault).map_err(|e| anyhow!(e))?;
    let listen: std::net::SocketAddr =
        a.listen.parse().map_err(|_| anyhow!("--listen '{}': expected IP:PORT such as 127.0.0.1:3335", shown(&a.listen)))?;
    let mut opts = ChipOptions::new(a.timing, fault);
    opts.seed = a.seed;
    let server = BitbangServer::spawn(listen, Stm32Chip::new(part, opts)).with_context(|| format!("could not listen on {listen}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", server.addr())?;
    out.flush()?;
    drop(out);
    eprintln!(
        "serving remote_bitbang JTAG for {} on {}{}{}; stop with Ctrl-C",
        part.name,
        server.addr(),
        if a.timing { ", timed" } else { "" },
        if fault != Stm32Fault::None { format!(", fault {}", shown(&a.fault)) } else { String::new() },
    );
    wait_for_signal()?;
    let board = server.board();
    let s = board.chip().stats();
    eprintln!(
        "stopped: {} sessions, {} TCK cycles, {} bus transfers ({} errors), {} half-words programmed, {} page erases, {} mass erases",
        board.wire.sessions, board.wire.tck_cycles, s.transfers, s.bus_errors, s.flash.half_words, s.flash.page_erases, s.flash.mass_erases
    );
    Ok(ExitCode::SUCCESS)
}

fn wait_for_signal() -> anyhow::Result<()> {
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
    })
}

/// The emulator being served (dropping it stops it and closes the pty).
enum Served {
    Stk500(Stk500Emulator, Stk500Mode),
    BusPirate(BusPirateEmulator),
}
