//! Table 2b: USBasp and USBtinyISP at the control-transfer level — our drivers against
//! avrdude's algorithm, counted by the same emulator.
//!
//! No USB programmer is attached to this machine, so both sides run against the control-transfer
//! emulators of [`crate::sim::usb`] (ATmega32U4 target, datasheet delays modelled, not slept):
//! the emulator counts every transfer and adds up its modelled time (USB low-speed transactions
//! framed to 1 ms, firmware SPI time, firmware waits, host waits).
//!
//! * **ours**: [`crate::job::run_job`] through [`Usbasp`] / [`Usbtiny`] (full and written verify);
//! * **avrdude's algorithm**: [`crate::sim::usb::avrdude_way`] (the USB driver owner's replay of
//!   the transfers avrdude 7.1 issues for `-U flash:w:IMAGE:i -U lfuse:w:… …`, taken from the
//!   facts of its `usbasp.c`/`usbtiny.c`/`avr.c`), on the same emulator.
//!
//! After every run the target must hold the image.

use super::AvrProduction;
use crate::job::{self, JobEvent};
use crate::programmer::usb::UsbError;
use crate::programmer::usbasp::Usbasp;
use crate::programmer::usbtiny::Usbtiny;
use crate::programmer::Programmer;
use crate::sim::usb::{avrdude_way, UsbSimStats, UsbaspSim, UsbtinySim};
use crate::sim::{Fault, SimOptions, SimTarget};
use crate::verify::VerifyPolicy;

use super::{BenchError, BenchOptions, BenchResult, Table};

fn usb_err(what: &str, e: UsbError) -> BenchError {
    BenchError::new(format!("{what}: {}", e.into_prog("avrdude replay").message))
}

fn fresh_target(production: &AvrProduction) -> SimTarget {
    SimTarget::new(production.part, SimOptions::new(false, Fault::None))
}

fn check_flash(flash: &[u8], production: &AvrProduction, who: &str) -> BenchResult<()> {
    for (addr, data) in production.image.segments() {
        if flash.get(addr as usize..addr as usize + data.len()) != Some(data) {
            return Err(BenchError::new(format!("{who}: the target's flash does not hold the image at 0x{addr:04X}")));
        }
    }
    Ok(())
}

/// Our job through `prog`; the emulator's stats after it.
async fn ours(prog: &mut dyn Programmer, production: &AvrProduction, verify: VerifyPolicy) -> BenchResult<()> {
    let plan = super::cycle::plan(production, verify);
    let mut sink = |_e: JobEvent| {};
    let r = job::run_job(prog, &plan, &mut sink).await;
    if !r.passed() {
        return Err(BenchError::new(format!("{}: job failed: {}", prog.info(), r.message.unwrap_or_default())));
    }
    Ok(())
}

/// One row's figures.
struct Figures {
    who: String,
    stats: UsbSimStats,
}

/// Table 2b.
pub async fn table(opts: &BenchOptions) -> BenchResult<Table> {
    let production = super::production_image(&opts.root)?;
    let mut rows: Vec<(&str, Vec<Figures>)> = Vec::new();

    // USBasp
    let mut f = Vec::new();
    let mut sim = UsbaspSim::new(fresh_target(&production));
    avrdude_way::usbasp_flash(&mut sim, production.part, &production.image, &production.fuses)
        .await
        .map_err(|e| usb_err("avrdude's sequence (usbasp)", e))?;
    check_flash(sim.target().await.flash(), &production, "avrdude replay (usbasp)")?;
    f.push(Figures { who: "avrdude 7.1 algorithm".into(), stats: sim.stats().await });
    for verify in [VerifyPolicy::Full, VerifyPolicy::Written] {
        let sim = UsbaspSim::new(fresh_target(&production));
        let mut prog = Usbasp::new(sim.clone());
        ours(&mut prog, &production, verify).await?;
        check_flash(sim.target().await.flash(), &production, "flashline usbasp")?;
        f.push(Figures { who: format!("flashline (verify {})", verify.name()), stats: sim.stats().await });
    }
    rows.push(("usbasp", f));

    // USBtinyISP
    let mut f = Vec::new();
    let mut sim = UsbtinySim::new(fresh_target(&production));
    avrdude_way::usbtiny_flash(&mut sim, production.part, &production.image, &production.fuses)
        .await
        .map_err(|e| usb_err("avrdude's sequence (usbtiny)", e))?;
    check_flash(sim.target().await.flash(), &production, "avrdude replay (usbtiny)")?;
    f.push(Figures { who: "avrdude 7.1 algorithm".into(), stats: sim.stats().await });
    for verify in [VerifyPolicy::Full, VerifyPolicy::Written] {
        let sim = UsbtinySim::new(fresh_target(&production));
        let mut prog = Usbtiny::new(sim.clone());
        ours(&mut prog, &production, verify).await?;
        check_flash(sim.target().await.flash(), &production, "flashline usbtiny")?;
        f.push(Figures { who: format!("flashline (verify {})", verify.name()), stats: sim.stats().await });
    }
    rows.push(("usbtiny", f));

    let mut t = Table::new(
        format!("2b. USBasp / USBtinyISP at the transfer level ({}, promicro-macropad image, control-transfer emulators)", production.part.name),
        &["programmer", "algorithm", "control transfers", "bytes in / out", "modelled time", "of which host waits", "avrdude ÷ this", "goal"],
    );
    for (name, figs) in &rows {
        let base = figs[0].stats.modelled.as_secs_f64();
        for (i, fg) in figs.iter().enumerate() {
            let sp = base / fg.stats.modelled.as_secs_f64().max(1e-9);
            let goal = match i {
                0 => "-".to_string(),
                1 => format!("≥ 1.3×{}", if sp >= 1.3 { " met" } else { " **not met**" }),
                _ => format!("≥ 2.5×{}", if sp >= 2.5 { " met" } else { " **not met**" }),
            };
            t.row(vec![
                name.to_string(),
                fg.who.clone(),
                fg.stats.transfers.to_string(),
                format!("{} / {}", fg.stats.bytes_in, fg.stats.bytes_out),
                super::ms(fg.stats.modelled),
                super::ms(fg.stats.host_delays),
                format!("{sp:.2}×"),
                goal,
            ]);
        }
    }
    t.note("modelled time is the emulator's (crate::sim::usb): low-speed transactions of 8 bytes at ≈133 µs, firmware SPI time at the programmer's SCK, firmware waits, each transfer rounded up to the 1 ms USB frame, plus host waits; deterministic, so one run each");
    t.note("avrdude's side is `flashline::sim::usb::avrdude_way` (the transfers avrdude 7.1 issues: every page the file covers written and read back page by page, re-initialize after chip erase), on the same emulator, so both are counted the same way; avrdude's 100 ms (USBasp) / 50 ms (USBtinyISP) wake-up waits after each initialize — twice — are host waits");
    Ok(t)
}
