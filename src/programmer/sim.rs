//! `sim`: an in-process programmer with a [`SimTarget`] behind it.
//!
//! It behaves like a USBasp-class programmer wired straight to the simulated chip: it drives
//! RESET, clocks four-byte ISP instructions at an SCK taken from a ladder
//! ([`SCK_LADDER`]), lowers the SCK when the Programming Enable echo does not come back, and
//! waits the part's datasheet delays after self-timed writes.
//!
//! **Timing** (`SimOptions::timing`): every instruction costs 32 SCK periods of wire time and
//! every self-timed write (page, erase, EEPROM, fuse, lock) its datasheet delay, measured on a
//! virtual clock that runs ahead of the wall clock. Wire time is slept off only once at least
//! 1 ms has accumulated (so 64 slots in one process stay cheap); a self-timed write is always
//! waited out in full before the call returns, so the target is never addressed while busy
//! (tests assert `SimStats::busy_violations == 0`) and each step's time is its own. Off: no sleeps.
//!
//! **Faults** come from the target ([`crate::sim::Fault`]); the programmer turns them into the
//! errors a real one would: constant MISO at every SCK → `NoTarget`, garbled echo at every SCK
//! → `ProgEnable`, an unplugged target → `ProgrammerGone` on every later call.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::{FailureClass, ProgError, ProgResult};
use crate::isp::{self, Cmd};
use crate::part::{FuseKind, Part};
use crate::programmer::{Programmer, ProgrammerInfo, ProgrammerKind};
use crate::sim::{SimOptions, SimTarget};

/// SCK frequencies tried in order by [`Programmer::enter_progmode`], like a USBasp's
/// automatic clock selection: 1.5 MHz, 375 kHz, 93.75 kHz, 32 kHz, 8 kHz.
pub const SCK_LADDER: [u32; 5] = [1_500_000, 375_000, 93_750, 32_000, 8_000];

/// Programming Enable attempts per SCK step (a flaky contact may garble one echo).
const ENABLE_ATTEMPTS_PER_STEP: usize = 2;

/// Datasheet: after a RESET pulse, wait at least 20 ms before Programming Enable.
const RESET_SETTLE: Duration = Duration::from_millis(20);

/// How far the virtual clock may lag the wall clock (see `SimProgrammer::charge`).
const OVERSLEEP_CREDIT: Duration = Duration::from_millis(2);

/// Sleep only when the virtual clock runs this far ahead of the wall clock.
const SLEEP_CHUNK: Duration = Duration::from_millis(1);

/// Format a clock frequency for operators: `1.5 MHz`, `93.75 kHz`, `8 kHz`.
pub fn fmt_hz(hz: u32) -> String {
    let trim = |v: f64| {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if hz >= 1_000_000 {
        format!("{} MHz", trim(hz as f64 / 1e6))
    } else if hz >= 1_000 {
        format!("{} kHz", trim(hz as f64 / 1e3))
    } else {
        format!("{hz} Hz")
    }
}

/// The in-process simulated programmer. Identity `sim:NAME`.
pub struct SimProgrammer {
    name: String,
    target: Arc<Mutex<SimTarget>>,
    timing: bool,
    sck_hz: u32,
    /// Virtual time at which the wire work issued so far is done.
    clock: Instant,
    /// Wall-clock time of the last instruction batch handed to the target.
    last_call: Instant,
    notes: Vec<String>,
}

impl SimProgrammer {
    /// A programmer with a fresh simulated `part` behind it.
    pub fn new(part: &'static Part, opts: SimOptions, name: impl Into<String>) -> Self {
        let timing = opts.timing;
        Self::with_target(Arc::new(Mutex::new(SimTarget::new(part, opts))), timing, name)
    }

    /// A programmer in front of an existing (shared) target.
    pub fn with_target(target: Arc<Mutex<SimTarget>>, timing: bool, name: impl Into<String>) -> Self {
        SimProgrammer {
            name: name.into(),
            target,
            timing,
            sck_hz: SCK_LADDER[0],
            clock: Instant::now(),
            last_call: Instant::now(),
            notes: Vec::new(),
        }
    }

    /// The simulated chip, for inspection (tests, benchmarks). Do not hold the guard across
    /// an `.await` on this programmer.
    pub fn target(&self) -> MutexGuard<'_, SimTarget> {
        lock(&self.target)
    }

    /// A shared handle on the simulated chip, usable after the programmer has been boxed.
    pub fn target_handle(&self) -> Arc<Mutex<SimTarget>> {
        self.target.clone()
    }

    fn identity(&self) -> String {
        format!("sim:{}", self.name)
    }

    fn check_present(&self) -> ProgResult<()> {
        if lock(&self.target).unplugged() {
            return Err(ProgError::gone(format!("programmer {} disappeared (unplugged)", self.identity())));
        }
        Ok(())
    }

    /// Wire time of `n` four-byte instructions at the current SCK.
    fn wire_time(&self, n: u64) -> Duration {
        Duration::from_nanos(n * 32 * 1_000_000_000 / self.sck_hz.max(1) as u64)
    }

    /// Advance the virtual clock by `d` of wire time. The clock may lag the wall clock by up
    /// to [`OVERSLEEP_CREDIT`] (a timer wakes up late, never early): that much of the next
    /// work is taken as already done, so the total stays at least the modelled total without
    /// every wake-up's lateness adding up.
    fn charge(&mut self, d: Duration) {
        if !self.timing {
            return;
        }
        let floor = Instant::now() - OVERSLEEP_CREDIT;
        if self.clock < floor {
            self.clock = floor;
        }
        self.clock += d;
    }

    /// Catch the wall clock up with the virtual clock: fully after a self-timed write or a
    /// reset pulse (`full`: the target must not be addressed while busy), otherwise only once
    /// ≥ 1 ms of wire time has accumulated (the remainder carries over to the next call).
    async fn settle(&mut self, full: bool) {
        if !self.timing {
            return;
        }
        let now = Instant::now();
        if self.clock > now && (full || self.clock >= now + SLEEP_CHUNK) {
            tokio::time::sleep_until(self.clock).await;
        }
    }

    /// A self-timed write of `us` microseconds just started: wait it out before returning.
    async fn busy_for(&mut self, us: u32) {
        if !self.timing {
            return;
        }
        // The target's busy time runs from when it took the instruction (real time), however
        // far the virtual clock lags.
        self.clock = self.clock.max(self.last_call) + Duration::from_micros(us as u64);
        self.settle(true).await;
    }

    /// Clock a batch of instructions through the target under one lock.
    async fn transfer(&mut self, cmds: &[Cmd]) -> ProgResult<Vec<Cmd>> {
        let r = self.transfer_unsettled(cmds)?;
        self.settle(false).await;
        Ok(r)
    }

    /// [`Self::transfer`] without sleeping off the wire time: for a batch that ends in a
    /// self-timed write, whose [`Self::busy_for`] then waits for both at once (one wake-up).
    fn transfer_unsettled(&mut self, cmds: &[Cmd]) -> ProgResult<Vec<Cmd>> {
        self.check_present()?;
        let sck = self.sck_hz;
        let replies: Vec<Cmd> = {
            let mut t = lock(&self.target);
            cmds.iter().map(|c| t.spi_at(*c, sck)).collect()
        };
        self.last_call = Instant::now();
        self.charge(self.wire_time(cmds.len() as u64));
        Ok(replies)
    }

    async fn one(&mut self, cmd: Cmd) -> ProgResult<Cmd> {
        let r = self.transfer(&[cmd]).await?;
        Ok(r[0])
    }

    /// Pulse RESET (release, assert) and wait the datasheet settle time.
    async fn pulse_reset(&mut self) {
        {
            let mut t = lock(&self.target);
            t.set_reset(false);
            t.set_reset(true);
        }
        self.last_call = Instant::now();
        self.busy_for(RESET_SETTLE.as_micros() as u32).await;
    }
}

/// Lock the target; a poisoned lock (a panic elsewhere while holding it) still yields the data.
fn lock(t: &Mutex<SimTarget>) -> MutexGuard<'_, SimTarget> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl Programmer for SimProgrammer {
    fn info(&self) -> ProgrammerInfo {
        ProgrammerInfo { kind: ProgrammerKind::Sim, identity: self.identity() }
    }

    async fn open(&mut self) -> ProgResult<()> {
        self.check_present()
    }

    async fn enter_progmode(&mut self, _part: &'static Part) -> ProgResult<()> {
        self.check_present()?;
        let mut constant_miso: Option<u8> = None;
        let mut all_constant = true;
        for (step, &sck) in SCK_LADDER.iter().enumerate() {
            self.sck_hz = sck;
            for _ in 0..ENABLE_ATTEMPTS_PER_STEP {
                self.pulse_reset().await;
                let reply = self.one(isp::PROG_ENABLE).await?;
                if isp::prog_enable_ok(&reply) {
                    if step > 0 {
                        self.notes.push(format!(
                            "lowered SCK to {}: the target did not answer at {}",
                            fmt_hz(sck),
                            fmt_hz(SCK_LADDER[step - 1])
                        ));
                    }
                    return Ok(());
                }
                let first = reply[0];
                if (first == 0x00 || first == 0xFF) && reply.iter().all(|b| *b == first) {
                    if constant_miso.is_some_and(|m| m != first) {
                        all_constant = false;
                    }
                    constant_miso = Some(first);
                } else {
                    all_constant = false;
                }
            }
        }
        lock(&self.target).set_reset(false);
        self.check_present()?;
        let slowest = fmt_hz(SCK_LADDER[SCK_LADDER.len() - 1]);
        match constant_miso.filter(|_| all_constant) {
            Some(miso) => Err(ProgError::new(
                FailureClass::NoTarget,
                format!(
                    "programming enable: MISO reads 0x{miso:02X} at every SCK down to {slowest}: no target answered — check the ISP cable and target power"
                ),
            )),
            None => Err(ProgError::with_hint(
                FailureClass::ProgEnable,
                format!("programming enable: the target never echoed 0x53, at every SCK down to {slowest}"),
            )),
        }
    }

    async fn leave_progmode(&mut self) -> ProgResult<()> {
        self.check_present()?;
        self.settle(true).await;
        lock(&self.target).set_reset(false);
        Ok(())
    }

    async fn spi(&mut self, cmd: Cmd) -> ProgResult<Cmd> {
        self.one(cmd).await
    }

    async fn close(&mut self) -> ProgResult<()> {
        // Nothing to release; must not fail on a dead link.
        Ok(())
    }

    fn sck_hz(&self) -> Option<u32> {
        Some(self.sck_hz)
    }

    fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    fn read_block_size(&self) -> usize {
        256
    }

    async fn chip_erase(&mut self, part: &'static Part) -> ProgResult<()> {
        self.transfer_unsettled(&[isp::CHIP_ERASE])?;
        self.busy_for(part.delays.chip_erase_us).await;
        Ok(())
    }

    async fn write_flash_page(&mut self, part: &'static Part, addr: u32, data: &[u8]) -> ProgResult<()> {
        let mut cmds = Vec::with_capacity(data.len() + 2);
        if part.flash_size > 0x20000 {
            cmds.push(isp::load_extended_address(addr));
        }
        cmds.extend(data.iter().enumerate().map(|(i, b)| isp::load_page(addr + i as u32, *b)));
        cmds.push(isp::write_page(addr));
        self.transfer_unsettled(&cmds)?;
        self.busy_for(part.delays.flash_page_us).await;
        Ok(())
    }

    async fn read_flash(&mut self, part: &'static Part, addr: u32, len: usize) -> ProgResult<Vec<u8>> {
        let mut cmds = Vec::with_capacity(len + 1);
        if part.flash_size > 0x20000 {
            cmds.push(isp::load_extended_address(addr));
        }
        let skip = cmds.len();
        cmds.extend((addr..addr + len as u32).map(isp::read_flash));
        let replies = self.transfer(&cmds).await?;
        Ok(replies[skip..].iter().map(|r| r[3]).collect())
    }

    async fn write_eeprom(&mut self, part: &'static Part, addr: u32, data: &[u8]) -> ProgResult<()> {
        for (i, b) in data.iter().enumerate() {
            self.transfer_unsettled(&[isp::write_eeprom(addr + i as u32, *b)])?;
            self.busy_for(part.delays.eeprom_us).await;
        }
        Ok(())
    }

    async fn read_eeprom(&mut self, _part: &'static Part, addr: u32, len: usize) -> ProgResult<Vec<u8>> {
        let cmds: Vec<Cmd> = (addr..addr + len as u32).map(isp::read_eeprom).collect();
        Ok(self.transfer(&cmds).await?.iter().map(|r| r[3]).collect())
    }

    async fn write_fuse(&mut self, part: &'static Part, kind: FuseKind, value: u8) -> ProgResult<()> {
        if part.fuse_masks.get(kind).is_none() {
            return Err(ProgError::new(FailureClass::Config, format!("{} has no {kind} fuse", part.name)));
        }
        self.transfer_unsettled(&[isp::write_fuse(kind, value)])?;
        self.busy_for(part.delays.fuse_us).await;
        Ok(())
    }

    async fn write_lock(&mut self, part: &'static Part, value: u8) -> ProgResult<()> {
        self.transfer_unsettled(&[isp::write_lock(part, value)])?;
        self.busy_for(part.delays.fuse_us).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::part;
    use crate::sim::Fault;

    fn m32u4() -> &'static Part {
        part::find("atmega32u4").unwrap()
    }

    #[test]
    fn formats_sck() {
        assert_eq!(fmt_hz(1_500_000), "1.5 MHz");
        assert_eq!(fmt_hz(93_750), "93.75 kHz");
        assert_eq!(fmt_hz(8_000), "8 kHz");
        assert_eq!(fmt_hz(500), "500 Hz");
    }

    #[tokio::test]
    async fn slow_target_settles_on_a_lower_sck() {
        let mut p = SimProgrammer::new(m32u4(), SimOptions::new(false, Fault::SlowTarget { max_sck_hz: 100_000 }), "t");
        p.enter_progmode(m32u4()).await.unwrap();
        assert_eq!(p.sck_hz(), Some(93_750));
        let notes = p.take_notes();
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("93.75 kHz"), "{notes:?}");
        assert_eq!(p.read_signature().await.unwrap(), [0x1E, 0x95, 0x87]);
    }

    #[tokio::test]
    async fn no_target_and_too_slow_are_told_apart() {
        let mut p = SimProgrammer::new(m32u4(), SimOptions::new(false, Fault::NoTarget { miso: 0xFF }), "t");
        let e = p.enter_progmode(m32u4()).await.unwrap_err();
        assert_eq!(e.class, FailureClass::NoTarget);
        assert!(e.message.contains("0xFF"), "{e}");
        let mut p = SimProgrammer::new(m32u4(), SimOptions::new(false, Fault::SlowTarget { max_sck_hz: 1_000 }), "t");
        let e = p.enter_progmode(m32u4()).await.unwrap_err();
        assert_eq!(e.class, FailureClass::ProgEnable);
        assert!(!p.target().reset_asserted(), "RESET released after giving up");
    }

    #[tokio::test]
    async fn unplugged_programmer_is_gone_for_good() {
        let mut p = SimProgrammer::new(m32u4(), SimOptions::new(false, Fault::Unplug { after_pages: 1 }), "u");
        p.enter_progmode(m32u4()).await.unwrap();
        p.write_flash_page(m32u4(), 0, &[0u8; 128]).await.unwrap();
        for e in [p.read_signature().await.unwrap_err(), p.open().await.unwrap_err(), p.leave_progmode().await.unwrap_err()] {
            assert_eq!(e.class, FailureClass::ProgrammerGone);
            assert!(e.message.contains("sim:u"), "{e}");
        }
        assert!(p.close().await.is_ok());
    }

    #[tokio::test]
    async fn timed_writes_never_hit_a_busy_target() {
        let part = m32u4();
        let mut p = SimProgrammer::new(part, SimOptions::new(true, Fault::None), "t");
        let t0 = std::time::Instant::now();
        p.enter_progmode(part).await.unwrap();
        p.chip_erase(part).await.unwrap();
        for page in 0..4u32 {
            p.write_flash_page(part, page * 128, &[page as u8; 128]).await.unwrap();
        }
        // Honest timing is never shorter than the model: reset settle, erase, and per page 130
        // instructions of 32 bits at 1.5 MHz plus the page write delay (lower bound only).
        let model = RESET_SETTLE
            + Duration::from_micros(part.delays.chip_erase_us as u64)
            + 4 * (Duration::from_nanos(130 * 32 * 1_000_000_000 / 1_500_000) + Duration::from_micros(part.delays.flash_page_us as u64));
        assert!(t0.elapsed() >= model, "{:?} < modelled {model:?}", t0.elapsed());
        p.write_fuse(part, FuseKind::High, 0xD9).await.unwrap();
        p.write_eeprom(part, 0, &[1, 2]).await.unwrap();
        assert_eq!(p.read_flash(part, 128, 2).await.unwrap(), vec![1, 1]);
        assert_eq!(p.read_eeprom(part, 0, 2).await.unwrap(), vec![1, 2]);
        assert_eq!(p.target().stats().busy_violations, 0);
        assert_eq!(p.target().fuse(FuseKind::High), 0xD9);
    }
}
