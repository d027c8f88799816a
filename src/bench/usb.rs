//! Table 2b: USBasp and USBtinyISP at the control-transfer level — our drivers against
//! avrdude's algorithm, counted by the same emulator.
//!
//! No USB programmer is attached to this machine, so both sides run against the control-transfer
//! emulators of [`crate::sim::usb`] (ATmega32U4 target, datasheet delays modelled, not slept):
//! the emulator counts every transfer and adds up its modelled time (USB low-speed transactions
//! framed to 1 ms, firmware SPI time, firmware waits, host waits).
//!
//! * **ours**: [`crate::job::run_job`] through [`Usbasp`] / [`Usbtiny`] (full and written verify);
//! * **avrdude's algorithm**: the same transfers avrdude 7.1 issues for
//!   `-U flash:w:IMAGE:i -U lfuse:w:… -U hfuse:w:… -U efuse:w:…`, replayed here from the facts of
//!   its `usbasp.c`/`usbtiny.c`/`avr.c` (not its code): initialize (USBasp: GETCAPABILITIES,
//!   SETISPSCK, CONNECT, a 100 ms host wait, ENABLEPROG; USBtinyISP: POWERUP, a 50 ms wait,
//!   Programming Enable), signature (3 SPI), safemode fuse reads (3 SPI), chip erase (SPI, the
//!   erase delay, then initialize again), every page the file covers written page by page
//!   (USBasp: SETLONGADDRESS + WRITEFLASH; USBtinyISP: FLASH_WRITE + Write Page SPI + the page's
//!   max write delay), every such page read back page by page (USBasp: SETLONGADDRESS +
//!   READFLASH; USBtinyISP: FLASH_READ), each fuse written (SPI, the fuse delay, one read-back
//!   poll) and verified (SPI read), safemode's closing fuse reads (3 SPI), then DISCONNECT /
//!   POWERDOWN. Where avrdude may poll more than once, one poll is counted, so this side is if
//!   anything too kind to avrdude.
//!
//! After every run the target must hold the image.

use std::time::Duration;

use crate::build::Production;
use crate::job::{self, JobEvent};
use crate::part::FuseKind;
use crate::programmer::usb::{UsbError, UsbTransport};
use crate::programmer::usbasp::Usbasp;
use crate::programmer::usbtiny::Usbtiny;
use crate::programmer::Programmer;
use crate::sim::usb::{usbasp_req, usbtiny_req, UsbSimStats, UsbaspSim, UsbtinySim};
use crate::sim::{Fault, SimOptions, SimTarget};
use crate::verify::VerifyPolicy;

use super::{BenchError, BenchOptions, BenchResult, Table};

const TO: Duration = Duration::from_secs(5);

fn usb_err(what: &str, e: UsbError) -> BenchError {
    BenchError::new(format!("{what}: {}", e.into_prog("avrdude replay").message))
}

fn fresh_target(production: &Production) -> SimTarget {
    SimTarget::new(production.part, SimOptions::new(false, Fault::None))
}

fn check_flash(flash: &[u8], production: &Production, who: &str) -> BenchResult<()> {
    for (addr, data) in production.image.segments() {
        if flash.get(addr as usize..addr as usize + data.len()) != Some(data) {
            return Err(BenchError::new(format!("{who}: the target's flash does not hold the image at 0x{addr:04X}")));
        }
    }
    Ok(())
}

/// Pages (start addresses) the image's file covers: every page with at least one byte in it.
fn covered_pages(production: &Production) -> Vec<(u32, Vec<u8>)> {
    production.image.pages(production.part.flash_page_size)
}

fn spi_args(cmd: [u8; 4]) -> (u16, u16) {
    (u16::from_le_bytes([cmd[0], cmd[1]]), u16::from_le_bytes([cmd[2], cmd[3]]))
}

/// avrdude's USBasp sequence on `usb`.
async fn avrdude_usbasp(usb: &mut UsbaspSim, production: &Production) -> BenchResult<()> {
    use crate::isp;
    let part = production.part;
    let e = |w: &'static str| move |x: UsbError| usb_err(w, x);
    async fn init(usb: &mut UsbaspSim) -> Result<(), UsbError> {
        usb.control_in(usbasp_req::GETCAPABILITIES, 0, 0, 4, TO).await?;
        usb.control_in(usbasp_req::SETISPSCK, 0, 0, 4, TO).await?; // no -B: automatic SCK
        usb.control_in(usbasp_req::CONNECT, 0, 0, 4, TO).await?;
        usb.delay(Duration::from_millis(100)).await;
        usb.control_in(usbasp_req::ENABLEPROG, 0, 0, 4, TO).await?;
        Ok(())
    }
    async fn spi(usb: &mut UsbaspSim, cmd: [u8; 4]) -> Result<Vec<u8>, UsbError> {
        let (v, i) = spi_args(cmd);
        usb.control_in(usbasp_req::TRANSMIT, v, i, 4, TO).await
    }
    init(usb).await.map_err(e("initialize"))?;
    for i in 0..3 {
        spi(usb, isp::read_signature(i)).await.map_err(e("signature"))?;
    }
    let fuses: Vec<FuseKind> = FuseKind::ALL.into_iter().filter(|k| part.fuse_masks.get(*k).is_some()).collect();
    for k in &fuses {
        spi(usb, isp::read_fuse(*k)).await.map_err(e("safemode"))?;
    }
    spi(usb, isp::CHIP_ERASE).await.map_err(e("erase"))?;
    usb.delay(Duration::from_micros(part.delays.chip_erase_us as u64)).await;
    init(usb).await.map_err(e("initialize after erase"))?;
    let ps = part.flash_page_size;
    let pages = covered_pages(production);
    for (addr, data) in &pages {
        usb.control_in(usbasp_req::SETLONGADDRESS, *addr as u16, (*addr >> 16) as u16, 4, TO).await.map_err(e("set address"))?;
        let index = (ps & 0xFF) as u16 | (((usbasp_req::BLOCKFLAG_FIRST as u32 + ((ps & 0xF00) >> 4)) as u16) << 8);
        usb.control_out(usbasp_req::WRITEFLASH, *addr as u16, index, data, TO).await.map_err(e("write flash"))?;
    }
    for (addr, data) in &pages {
        usb.control_in(usbasp_req::SETLONGADDRESS, *addr as u16, (*addr >> 16) as u16, 4, TO).await.map_err(e("set address"))?;
        let got = usb.control_in(usbasp_req::READFLASH, *addr as u16, 0, data.len() as u16, TO).await.map_err(e("read flash"))?;
        if &got != data {
            return Err(BenchError::new(format!("avrdude replay (usbasp): verify mismatch in the page at 0x{addr:04X}")));
        }
    }
    for k in &fuses {
        if let Some(v) = production.fuses.get(*k) {
            spi(usb, isp::write_fuse(*k, v)).await.map_err(e("fuse write"))?;
            usb.delay(Duration::from_micros(part.delays.fuse_us as u64)).await;
            spi(usb, isp::read_fuse(*k)).await.map_err(e("fuse poll"))?;
            spi(usb, isp::read_fuse(*k)).await.map_err(e("fuse verify"))?;
        }
    }
    for k in &fuses {
        spi(usb, isp::read_fuse(*k)).await.map_err(e("safemode"))?;
    }
    usb.control_in(usbasp_req::DISCONNECT, 0, 0, 4, TO).await.map_err(e("disconnect"))?;
    Ok(())
}

/// avrdude's USBtinyISP sequence on `usb` (default SCK period 10 µs, 128-byte chunks).
async fn avrdude_usbtiny(usb: &mut UsbtinySim, production: &Production) -> BenchResult<()> {
    use crate::isp;
    let part = production.part;
    let e = |w: &'static str| move |x: UsbError| usb_err(w, x);
    async fn spi(usb: &mut UsbtinySim, cmd: [u8; 4]) -> Result<Vec<u8>, UsbError> {
        let (v, i) = spi_args(cmd);
        usb.control_in(usbtiny_req::SPI, v, i, 4, TO).await
    }
    async fn init(usb: &mut UsbtinySim) -> Result<(), UsbError> {
        usb.control_in(usbtiny_req::POWERUP, 10, usbtiny_req::RESET_LOW, 0, TO).await?;
        usb.delay(Duration::from_millis(50)).await;
        spi(usb, isp::PROG_ENABLE).await?;
        Ok(())
    }
    init(usb).await.map_err(e("initialize"))?;
    for i in 0..3 {
        spi(usb, isp::read_signature(i)).await.map_err(e("signature"))?;
    }
    let fuses: Vec<FuseKind> = FuseKind::ALL.into_iter().filter(|k| part.fuse_masks.get(*k).is_some()).collect();
    for k in &fuses {
        spi(usb, isp::read_fuse(*k)).await.map_err(e("safemode"))?;
    }
    spi(usb, isp::CHIP_ERASE).await.map_err(e("erase"))?;
    usb.delay(Duration::from_micros(part.delays.chip_erase_us as u64)).await;
    init(usb).await.map_err(e("initialize after erase"))?;
    let pages = covered_pages(production);
    for (addr, data) in &pages {
        usb.control_out(usbtiny_req::FLASH_WRITE, 0, *addr as u16, data, TO).await.map_err(e("flash write"))?;
        spi(usb, isp::write_page(*addr)).await.map_err(e("write page"))?;
        usb.delay(Duration::from_micros(part.delays.flash_page_us as u64)).await;
    }
    for (addr, data) in &pages {
        let got = usb.control_in(usbtiny_req::FLASH_READ, 0, *addr as u16, data.len() as u16, TO).await.map_err(e("flash read"))?;
        if &got != data {
            return Err(BenchError::new(format!("avrdude replay (usbtiny): verify mismatch in the page at 0x{addr:04X}")));
        }
    }
    for k in &fuses {
        if let Some(v) = production.fuses.get(*k) {
            spi(usb, isp::write_fuse(*k, v)).await.map_err(e("fuse write"))?;
            usb.delay(Duration::from_micros(part.delays.fuse_us as u64)).await;
            spi(usb, isp::read_fuse(*k)).await.map_err(e("fuse poll"))?;
            spi(usb, isp::read_fuse(*k)).await.map_err(e("fuse verify"))?;
        }
    }
    for k in &fuses {
        spi(usb, isp::read_fuse(*k)).await.map_err(e("safemode"))?;
    }
    usb.control_in(usbtiny_req::POWERDOWN, 0, 0, 0, TO).await.map_err(e("powerdown"))?;
    Ok(())
}

/// Our job through `prog`; the emulator's stats after it.
async fn ours(prog: &mut dyn Programmer, production: &Production, verify: VerifyPolicy) -> BenchResult<()> {
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
    avrdude_usbasp(&mut sim, &production).await?;
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
    avrdude_usbtiny(&mut sim, &production).await?;
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
    t.note("avrdude's side is a replay of the transfers avrdude 7.1 issues (see the module doc of flashline::bench::usb), on the same emulator, so both are counted the same way; avrdude's 100 ms (USBasp) / 50 ms (USBtinyISP) wake-up waits after each initialize — twice, since it re-initializes after chip erase — are host waits");
    Ok(t)
}
