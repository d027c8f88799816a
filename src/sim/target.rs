//! A simulated AVR target, as seen from its ISP pins.
//!
//! It decodes the four-byte serial-programming instructions ([`crate::isp`]) exactly as the
//! silicon does: Programming Enable needs RESET held low and echoes `0x53`; flash is written
//! through a page buffer and a Write Page instruction can only clear bits (erased flash is
//! 0xFF, programming ANDs); Chip Erase resets flash, EEPROM (unless EESAVE) and lock bits but
//! not fuses; lock bits limit readback; fuse bits that do not exist read back as junk.
//!
//! **Timing model** (when `timing` is on): page write, chip erase, EEPROM and fuse/lock writes
//! keep the target busy for the part's datasheet delay ([`crate::part::Delays`]). Only
//! Poll RDY/BSY (`F0`) is honoured while busy; anything else is ignored and counted in
//! [`SimStats::busy_violations`], so a driver that does not wait long enough loses data exactly
//! as on silicon, and tests can assert a driver never violates.
//!
//! **Faults** ([`Fault`]) model what goes wrong on a line: no target, wrong chip, flaky contact,
//! stuck flash bits, a target too slow for the SCK, and a programmer unplugged mid-write.

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::isp::Cmd;
use crate::part::{FuseKind, Part};

/// Faults a simulated target (or the programmer in front of it) can carry.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Nothing on MISO: every bit reads 0 (`no-target`) or 1 (`no-target-ff`).
    NoTarget { miso: u8 },
    /// A different chip is seated: it answers with this signature (`wrong-chip`, default
    /// ATmega16U4's 1E 94 88, or ATmega32U4's when the simulated part is a 16U4).
    WrongChip { signature: [u8; 3] },
    /// Flaky contact: each bit read on MISO flips with probability `rate` (`flaky[:RATE]`).
    Flaky { rate: f64 },
    /// Flash bits stuck at `value` in `mask` at byte address `addr` (`stuck[:ADDR]`): writes and
    /// erases cannot change them, so verification must catch it.
    StuckBits { addr: u32, mask: u8, value: u8 },
    /// The target clock is slow: SPI faster than `max_sck_hz` garbles every reply (`slow[:HZ]`).
    SlowTarget { max_sck_hz: u32 },
    /// The programmer disappears after this many flash page writes (`unplug[:PAGES]`).
    Unplug { after_pages: u32 },
}

impl Fault {
    /// Parse a fault as written on the command line or in a station config:
    /// `none`, `no-target`, `no-target-ff`, `wrong-chip`, `flaky[:RATE]`, `stuck[:ADDR]`,
    /// `slow[:HZ]`, `unplug[:PAGES]`.
    pub fn parse(s: &str) -> Result<Fault, String> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k.trim(), Some(a.trim())),
            None => (s.trim(), None),
        };
        let num = |a: &str| -> Result<u64, String> {
            let r = if let Some(h) = a.strip_prefix("0x").or_else(|| a.strip_prefix("0X")) {
                u64::from_str_radix(h, 16)
            } else {
                a.parse()
            };
            r.map_err(|_| format!("fault '{s}': '{a}' is not a number"))
        };
        Ok(match kind {
            "none" | "" => Fault::None,
            "no-target" | "no-target-00" => Fault::NoTarget { miso: 0x00 },
            "no-target-ff" => Fault::NoTarget { miso: 0xFF },
            "wrong-chip" => {
                let signature = match arg {
                    Some(a) => {
                        let v = num(a)? as u32;
                        [(v >> 16) as u8, (v >> 8) as u8, v as u8]
                    }
                    None => [0x1E, 0x94, 0x88],
                };
                Fault::WrongChip { signature }
            }
            "flaky" => {
                let rate = match arg {
                    Some(a) => a.parse::<f64>().map_err(|_| format!("fault '{s}': rate must be a number like 0.001"))?,
                    None => 0.0005,
                };
                if !(0.0..=1.0).contains(&rate) {
                    return Err(format!("fault '{s}': rate must be between 0 and 1"));
                }
                Fault::Flaky { rate }
            }
            "stuck" => Fault::StuckBits { addr: arg.map(num).transpose()?.unwrap_or(0x0100) as u32, mask: 0x01, value: 0x00 },
            "slow" => Fault::SlowTarget { max_sck_hz: arg.map(num).transpose()?.unwrap_or(100_000) as u32 },
            "unplug" => Fault::Unplug { after_pages: arg.map(num).transpose()?.unwrap_or(20) as u32 },
            _ => {
                return Err(format!(
                    "unknown fault '{s}': expected none, no-target, no-target-ff, wrong-chip, flaky[:RATE], stuck[:ADDR], slow[:HZ] or unplug[:PAGES]"
                ))
            }
        })
    }

    /// Short name, as [`Fault::parse`] accepts it.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::NoTarget { miso: 0xFF } => "no-target-ff",
            Fault::NoTarget { .. } => "no-target",
            Fault::WrongChip { .. } => "wrong-chip",
            Fault::Flaky { .. } => "flaky",
            Fault::StuckBits { .. } => "stuck",
            Fault::SlowTarget { .. } => "slow",
            Fault::Unplug { .. } => "unplug",
        }
    }
}

/// Options for a simulated target.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SimOptions {
    /// Model datasheet write/erase delays (busy time). Off for fast tests, on for benchmarks.
    pub timing: bool,
    pub fault: Fault,
    /// Seed for the flaky-contact bit errors, so a run can be reproduced.
    pub seed: u64,
}

impl SimOptions {
    pub fn new(timing: bool, fault: Fault) -> Self {
        Self { timing, fault, seed: 0x5EED }
    }
}

/// Counters the tests and benchmarks read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    pub spi_commands: u64,
    pub page_writes: u64,
    pub chip_erases: u64,
    /// Instructions other than Poll RDY/BSY received while the target was busy (ignored).
    pub busy_violations: u64,
}

/// The simulated chip.
pub struct SimTarget {
    part: &'static Part,
    flash: Vec<u8>,
    eeprom: Vec<u8>,
    page_buf: Vec<u8>,
    ee_buf: Vec<u8>,
    fuses: [u8; 3],
    lock: u8,
    ext_addr: u8,
    reset_asserted: bool,
    prog_mode: bool,
    busy_until: Option<Instant>,
    timing: bool,
    fault: Fault,
    rng: SmallRng,
    unplugged: bool,
    stats: SimStats,
}

/// What fuse bits that do not exist read back as (the seed guide's `E:CB` on a 32U4).
const ABSENT_FUSE_BITS: u8 = 0xC0;

impl SimTarget {
    pub fn new(part: &'static Part, opts: SimOptions) -> Self {
        let f = part.factory_fuses;
        let page = part.flash_page_size as usize;
        let mut t = SimTarget {
            part,
            flash: vec![0xFF; part.flash_size as usize],
            eeprom: vec![0xFF; part.eeprom_size as usize],
            page_buf: vec![0xFF; page],
            ee_buf: vec![0xFF; part.eeprom_page_size as usize],
            fuses: [f.low.unwrap_or(0xFF), f.high.unwrap_or(0xFF), f.extended.unwrap_or(0xFF)],
            lock: 0xFF,
            ext_addr: 0,
            reset_asserted: false,
            prog_mode: false,
            busy_until: None,
            timing: opts.timing,
            fault: opts.fault,
            rng: SmallRng::seed_from_u64(opts.seed),
            unplugged: false,
            stats: SimStats::default(),
        };
        t.apply_stuck_bits();
        t
    }

    pub fn part(&self) -> &'static Part {
        self.part
    }
    pub fn fault(&self) -> &Fault {
        &self.fault
    }
    pub fn timing(&self) -> bool {
        self.timing
    }
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }
    pub fn flash(&self) -> &[u8] {
        &self.flash
    }
    pub fn eeprom(&self) -> &[u8] {
        &self.eeprom
    }
    /// Stored fuse value (existing bits only meaningful).
    pub fn fuse(&self, kind: FuseKind) -> u8 {
        self.fuses[kind as usize]
    }
    pub fn lock_bits(&self) -> u8 {
        self.lock
    }
    pub fn in_prog_mode(&self) -> bool {
        self.prog_mode
    }
    /// True once an `unplug` fault has fired: the programmer in front of this target is gone.
    pub fn unplugged(&self) -> bool {
        self.unplugged
    }

    /// Load flash contents directly (as if programmed earlier), e.g. a bootloader for the
    /// `arduino` emulator.
    pub fn preload_flash(&mut self, addr: u32, data: &[u8]) {
        let a = addr as usize;
        self.flash[a..a + data.len()].copy_from_slice(data);
        self.apply_stuck_bits();
    }

    /// What the chip holds now, to be seated again later ([`crate::sim::boards`]).
    pub fn board_state(&self) -> crate::sim::boards::BoardState {
        crate::sim::boards::BoardState {
            part: self.part.id.to_string(),
            flash: self.flash.clone(),
            eeprom: self.eeprom.clone(),
            fuses: self.fuses,
            lock: self.lock,
        }
    }

    /// Give the chip the contents it had when it was last taken out. Returns `false` (and
    /// changes nothing) when the state is of another part.
    pub fn restore(&mut self, b: &crate::sim::boards::BoardState) -> bool {
        if b.part != self.part.id || b.flash.len() != self.flash.len() || b.eeprom.len() != self.eeprom.len() {
            return false;
        }
        self.flash.copy_from_slice(&b.flash);
        self.eeprom.copy_from_slice(&b.eeprom);
        self.fuses = b.fuses;
        self.lock = b.lock;
        self.apply_stuck_bits();
        true
    }

    /// Set fuses directly (as if programmed earlier).
    pub fn preload_fuse(&mut self, kind: FuseKind, value: u8) {
        self.fuses[kind as usize] = value;
    }

    /// Drive the RESET pin. Asserting it (low) stops the target's program and lets the SPI
    /// pins take instructions; releasing it leaves programming mode.
    pub fn set_reset(&mut self, asserted: bool) {
        self.reset_asserted = asserted;
        if !asserted {
            self.prog_mode = false;
        }
        self.ext_addr = 0;
    }

    pub fn reset_asserted(&self) -> bool {
        self.reset_asserted
    }

    /// Remaining busy time of a self-timed write (zero when idle or timing is off).
    pub fn busy_remaining(&self) -> Duration {
        match self.busy_until {
            Some(t) => t.saturating_duration_since(Instant::now()),
            None => Duration::ZERO,
        }
    }

    pub fn is_busy(&self) -> bool {
        !self.busy_remaining().is_zero()
    }

    fn make_busy(&mut self, us: u32) {
        if self.timing {
            self.busy_until = Some(Instant::now() + Duration::from_micros(us as u64));
        }
    }

    /// One four-byte SPI transaction at a nominal (fast enough) SCK.
    pub fn spi(&mut self, cmd: Cmd) -> Cmd {
        self.spi_at(cmd, 0)
    }

    /// One four-byte SPI transaction at `sck_hz` (0 = "fast enough for this target").
    pub fn spi_at(&mut self, cmd: Cmd, sck_hz: u32) -> Cmd {
        self.stats.spi_commands += 1;
        if self.unplugged {
            return [0xFF; 4];
        }
        if let Fault::NoTarget { miso } = self.fault {
            return [miso; 4];
        }
        if !self.reset_asserted {
            // The target runs its program; MISO is an ordinary pin nobody drives.
            return [0xFF; 4];
        }
        if let Fault::SlowTarget { max_sck_hz } = self.fault {
            if sck_hz == 0 || sck_hz > max_sck_hz {
                // The target samples too slowly: what comes back is shifted garbage.
                return [0x00, cmd[0] >> 1, cmd[1] >> 1, 0x00];
            }
        }
        let mut reply = self.execute(cmd);
        if let Fault::Flaky { rate } = self.fault {
            for b in reply.iter_mut() {
                for bit in 0..8 {
                    if self.rng.gen_bool(rate) {
                        *b ^= 1 << bit;
                    }
                }
            }
        }
        reply
    }

    fn execute(&mut self, cmd: Cmd) -> Cmd {
        let out = |v: u8| [0x00, cmd[0], cmd[1], v];
        if !self.prog_mode {
            if cmd[0] == 0xAC && cmd[1] == 0x53 {
                self.prog_mode = true;
                return [0x00, 0xAC, 0x53, 0x00];
            }
            // Out of sync: the target shifts in bits but executes nothing.
            return [0x00, 0x00, 0x00, 0x00];
        }
        if self.is_busy() {
            if cmd[0] == 0xF0 {
                return out(0x01);
            }
            self.stats.busy_violations += 1;
            return out(0xFF);
        }
        self.busy_until = None;
        let part = self.part;
        let page_words = part.flash_page_size / 2;
        let lock_mode = self.lock & 0x03; // LB2..1: 11 none, 10 no write, 00 no write/verify
        let word = ((self.ext_addr as u32) << 16) | ((cmd[1] as u32) << 8) | cmd[2] as u32;
        match cmd[0] {
            0xAC => match cmd[1] {
                0x53 => [0x00, 0xAC, 0x53, 0x00],
                0x80 => {
                    self.chip_erase();
                    out(0x00)
                }
                0xA0 | 0xA8 | 0xA4 => {
                    let kind = match cmd[1] {
                        0xA0 => FuseKind::Low,
                        0xA8 => FuseKind::High,
                        _ => FuseKind::Extended,
                    };
                    // Lock mode 10/00 ("further programming disabled") also protects fuses.
                    if lock_mode == 0b11 {
                        if let Some(mask) = part.fuse_masks.get(kind) {
                            self.fuses[kind as usize] = cmd[3] & mask | !mask;
                        }
                    }
                    self.make_busy(part.delays.fuse_us);
                    out(0x00)
                }
                0xE0 => {
                    // Lock bits can only be programmed (1 -> 0); chip erase clears them.
                    self.lock &= cmd[3] | !part.lock_mask;
                    self.make_busy(part.delays.fuse_us);
                    out(0x00)
                }
                _ => out(0x00),
            },
            0xF0 => out(0x00),
            0x30 => {
                let sig = match self.fault {
                    Fault::WrongChip { signature } => signature,
                    _ => part.signature,
                };
                out(sig.get(cmd[2] as usize & 3).copied().unwrap_or(0xFF))
            }
            0x38 => {
                let i = cmd[2] & 0x03;
                out(if (i as u32) < part.calibration_bytes as u32 { 0x9A - i } else { 0xFF })
            }
            0x20 | 0x28 => {
                let addr = (word * 2 + (cmd[0] == 0x28) as u32) as usize;
                if lock_mode == 0b00 {
                    return out(0xFF);
                }
                out(self.flash.get(addr).copied().unwrap_or(0xFF))
            }
            0x40 | 0x48 => {
                let off = ((((cmd[1] as u32) << 8) | cmd[2] as u32) % page_words) * 2 + (cmd[0] == 0x48) as u32;
                self.page_buf[off as usize] = cmd[3];
                out(0x00)
            }
            0x4C => {
                let page = (word - word % page_words) as usize * 2;
                let buf = std::mem::replace(&mut self.page_buf, vec![0xFF; part.flash_page_size as usize]);
                if lock_mode == 0b11 && page + buf.len() <= self.flash.len() {
                    for (i, b) in buf.iter().enumerate() {
                        self.flash[page + i] &= *b;
                    }
                    self.apply_stuck_bits();
                }
                self.stats.page_writes += 1;
                self.make_busy(part.delays.flash_page_us);
                if let Fault::Unplug { after_pages } = self.fault {
                    if self.stats.page_writes >= after_pages as u64 {
                        self.unplugged = true;
                    }
                }
                out(0x00)
            }
            0x4D => {
                self.ext_addr = cmd[2];
                out(0x00)
            }
            0xA0 => {
                let a = (((cmd[1] as usize) << 8) | cmd[2] as usize) % part.eeprom_size as usize;
                if lock_mode == 0b00 {
                    return out(0xFF);
                }
                out(self.eeprom[a])
            }
            0xC0 => {
                let a = (((cmd[1] as usize) << 8) | cmd[2] as usize) % part.eeprom_size as usize;
                if lock_mode == 0b11 {
                    self.eeprom[a] = cmd[3];
                }
                self.make_busy(part.delays.eeprom_us);
                out(0x00)
            }
            0xC1 => {
                let off = cmd[2] as usize % part.eeprom_page_size as usize;
                self.ee_buf[off] = cmd[3];
                out(0x00)
            }
            0xC2 => {
                let ps = part.eeprom_page_size as usize;
                let a = (((cmd[1] as usize) << 8) | cmd[2] as usize) % part.eeprom_size as usize;
                let base = a - a % ps;
                let buf = std::mem::replace(&mut self.ee_buf, vec![0xFF; ps]);
                if lock_mode == 0b11 {
                    self.eeprom[base..base + ps].copy_from_slice(&buf);
                }
                self.make_busy(part.delays.eeprom_us);
                out(0x00)
            }
            0x50 | 0x58 => {
                let v = match (cmd[0], cmd[1]) {
                    (0x50, 0x00) => Some(FuseKind::Low),
                    (0x58, 0x08) => Some(FuseKind::High),
                    (0x50, 0x08) => Some(FuseKind::Extended),
                    _ => None,
                };
                match v {
                    Some(kind) => match part.fuse_masks.get(kind) {
                        Some(mask) => out(self.fuses[kind as usize] & mask | (ABSENT_FUSE_BITS & !mask)),
                        None => out(0xFF),
                    },
                    None if cmd[0] == 0x58 && cmd[1] == 0x00 => out(self.lock | !part.lock_mask),
                    None => out(0xFF),
                }
            }
            _ => out(0xFF),
        }
    }

    fn chip_erase(&mut self) {
        self.flash.fill(0xFF);
        let eesave_programmed = self.part.field("EESAVE").map(|f| self.fuses[f.fuse as usize] & f.mask == 0).unwrap_or(false);
        if !eesave_programmed {
            self.eeprom.fill(0xFF);
        }
        self.lock = 0xFF;
        self.stats.chip_erases += 1;
        self.apply_stuck_bits();
        self.make_busy(self.part.delays.chip_erase_us);
    }

    fn apply_stuck_bits(&mut self) {
        if let Fault::StuckBits { addr, mask, value } = self.fault {
            if let Some(b) = self.flash.get_mut(addr as usize) {
                *b = (*b & !mask) | (value & mask);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isp;
    use crate::part;

    fn target(fault: Fault) -> SimTarget {
        let mut t = SimTarget::new(part::find("atmega32u4").unwrap(), SimOptions::new(false, fault));
        t.set_reset(true);
        t
    }

    #[test]
    fn prog_enable_echo_and_signature() {
        let mut t = target(Fault::None);
        assert_eq!(t.spi(isp::read_signature(0)), [0; 4], "ignored before programming enable");
        assert!(isp::prog_enable_ok(&t.spi(isp::PROG_ENABLE)));
        let sig: Vec<u8> = (0..3).map(|i| t.spi(isp::read_signature(i))[3]).collect();
        assert_eq!(sig, [0x1E, 0x95, 0x87]);
    }

    #[test]
    fn page_write_ands_into_flash_and_erase_restores() {
        let mut t = target(Fault::None);
        t.spi(isp::PROG_ENABLE);
        for i in 0..128u32 {
            t.spi(isp::load_page(0x100 + i, i as u8));
        }
        t.spi(isp::write_page(0x100));
        assert_eq!(t.spi(isp::read_flash(0x105))[3], 5);
        // Without erase, programming only clears bits.
        t.spi(isp::load_page(0x100, 0xF0));
        t.spi(isp::write_page(0x100));
        assert_eq!(t.flash()[0x100], 0x00);
        assert_eq!(t.flash()[0x101], 0x01);
        t.spi(isp::CHIP_ERASE);
        assert!(t.flash().iter().all(|b| *b == 0xFF));
    }

    #[test]
    fn fuses_mask_absent_bits_and_lock_limits_readback() {
        let mut t = target(Fault::None);
        t.spi(isp::PROG_ENABLE);
        t.spi(isp::write_fuse(FuseKind::Extended, 0xF3));
        assert_eq!(t.spi(isp::read_fuse(FuseKind::Extended))[3], 0xC3);
        t.spi(isp::write_page(0));
        t.spi(isp::write_lock(t.part(), 0x3C));
        assert_eq!(t.spi(isp::READ_LOCK)[3], 0xFC);
        assert_eq!(t.spi(isp::read_flash(0))[3], 0xFF);
        t.spi(isp::CHIP_ERASE);
        assert_eq!(t.spi(isp::READ_LOCK)[3], 0xFF);
    }

    #[test]
    fn busy_target_ignores_instructions() {
        let mut t = SimTarget::new(part::find("atmega32u4").unwrap(), SimOptions::new(true, Fault::None));
        t.set_reset(true);
        t.spi(isp::PROG_ENABLE);
        t.spi(isp::load_page(0, 0x12));
        t.spi(isp::write_page(0));
        assert_eq!(t.spi(isp::POLL_RDY)[3] & 1, 1);
        t.spi(isp::load_page(0, 0x34));
        assert_eq!(t.stats().busy_violations, 1);
        std::thread::sleep(Duration::from_micros(4600));
        assert_eq!(t.spi(isp::POLL_RDY)[3] & 1, 0);
        assert_eq!(t.spi(isp::read_flash(0))[3], 0x12);
    }

    #[test]
    fn faults() {
        let mut t = target(Fault::NoTarget { miso: 0 });
        assert_eq!(t.spi(isp::PROG_ENABLE), [0; 4]);
        let mut t = target(Fault::SlowTarget { max_sck_hz: 100_000 });
        assert!(!isp::prog_enable_ok(&t.spi_at(isp::PROG_ENABLE, 1_000_000)));
        assert!(isp::prog_enable_ok(&t.spi_at(isp::PROG_ENABLE, 93_750)));
        let mut t = target(Fault::StuckBits { addr: 0x10, mask: 1, value: 0 });
        t.spi(isp::PROG_ENABLE);
        t.spi(isp::CHIP_ERASE);
        assert_eq!(t.spi(isp::read_flash(0x10))[3], 0xFE);
        assert_eq!(Fault::parse("unplug:3").unwrap(), Fault::Unplug { after_pages: 3 });
        assert!(Fault::parse("gremlins").is_err());
    }
}
