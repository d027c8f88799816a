//! The flash array, the option bytes and the flash program/erase controller (FPEC) of an
//! STM32F1, as RM0008 ("Embedded Flash memory") and PM0075 describe them.
//!
//! Registers at `part.fpec_base`: ACR 0x00, KEYR 0x04, OPTKEYR 0x08, SR 0x0C, CR 0x10, AR 0x14,
//! OBR 0x1C, WRPR 0x20. The FPEC starts locked; KEY1 then KEY2 written to KEYR unlocks CR, any
//! other sequence locks it until the next reset (and the write gets a bus error). The same keys
//! in OPTKEYR (with CR unlocked) set OPTWRE. Programming is by half-words with PG set; a
//! location that is not erased gives PGERR (writing 0x0000 is the one exception), a
//! write-protected page WRPRTERR. OBR and WRPR are loaded from the option bytes at reset only.
//!
//! Time: with `timing` on, an operation keeps BSY set for its datasheet time and any access to
//! the flash array meanwhile stalls the bus (the caller is made to wait). With it off the
//! operation completes at once; the time it would have taken is still counted.
//! The `clone` behaviour (some Bluepill clones): BSY is never shown and the bus never stalls;
//! instead a half-word written while the previous one is still being programmed is dropped,
//! with EOP set as if it had been written. Read-out protection (OBR.RDPRT): debug reads of
//! main flash get a bus error, programming and page erase from the debugger give WRPRTERR
//! (pages 0-3 are write-protected besides), mass erase still works; programming RDP back to
//! 0xA5 first mass-erases main flash (PM0075). The program cycle outlasts the next two bus
//! transfers, whatever they are (52 µs is longer than two debug transfers at any practical
//! clock), so the rule does not depend on how fast the host is.

use std::time::{Duration, Instant};

use crate::stm32::part::{with_complement, OptionBytes, Stm32Part};

pub const KEY1: u32 = 0x4567_0123;
pub const KEY2: u32 = 0xCDEF_89AB;

/// Register offsets from the FPEC base.
pub mod reg {
    pub const ACR: u32 = 0x00;
    pub const KEYR: u32 = 0x04;
    pub const OPTKEYR: u32 = 0x08;
    pub const SR: u32 = 0x0C;
    pub const CR: u32 = 0x10;
    pub const AR: u32 = 0x14;
    pub const OBR: u32 = 0x1C;
    pub const WRPR: u32 = 0x20;
}

/// FLASH_SR bits.
pub mod sr {
    pub const BSY: u32 = 1 << 0;
    pub const PGERR: u32 = 1 << 2;
    pub const WRPRTERR: u32 = 1 << 4;
    pub const EOP: u32 = 1 << 5;
}

/// FLASH_CR bits.
pub mod cr {
    pub const PG: u32 = 1 << 0;
    pub const PER: u32 = 1 << 1;
    pub const MER: u32 = 1 << 2;
    pub const OPTPG: u32 = 1 << 4;
    pub const OPTER: u32 = 1 << 5;
    pub const STRT: u32 = 1 << 6;
    pub const LOCK: u32 = 1 << 7;
    pub const OPTWRE: u32 = 1 << 9;
    pub const ERRIE: u32 = 1 << 10;
    pub const EOPIE: u32 = 1 << 12;
}

/// FLASH_OBR bits.
pub mod obr {
    pub const OPTERR: u32 = 1 << 0;
    pub const RDPRT: u32 = 1 << 1;
    pub const USER_SHIFT: u32 = 2;
    pub const DATA0_SHIFT: u32 = 10;
    pub const DATA1_SHIFT: u32 = 18;
}

/// Bus transfers a clone's program cycle outlasts (see the module comment).
pub const CLONE_CYCLE_TRANSFERS: u32 = 2;

/// A bus access the flash interface refuses with an AHB error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashBusError {
    /// A debug read of main flash while read-out protection is on.
    ReadProtected,
    /// A wrong key sequence (KEYR), or a write of the wrong width while programming.
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyState {
    /// Locked, waiting for KEY1.
    Locked,
    /// KEY1 seen, waiting for KEY2.
    Key1,
    /// Unlocked.
    Unlocked,
    /// A wrong sequence was written: locked until reset.
    Jammed,
}

/// Counters of what the controller did, and the time it took (or would have taken).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlashStats {
    pub half_words: u64,
    pub page_erases: u64,
    pub mass_erases: u64,
    pub option_erases: u64,
    pub option_writes: u64,
    pub dropped_writes: u64,
    pub pgerr: u64,
    pub wrprterr: u64,
    /// Sum of the datasheet times of every operation started.
    pub busy_time: Duration,
    /// Time the bus was held by accesses to a busy array (timed mode only).
    pub stalled: Duration,
}

/// What the flash interface looks like from a bus master: main flash, option bytes, registers.
#[derive(Debug, Clone)]
pub struct Flash {
    part: &'static Stm32Part,
    timing: bool,
    clone: bool,
    /// Byte address and bit mask stuck at 0 (the `stuck` fault): erase cannot set them.
    stuck: Option<(u32, u8)>,
    array: Vec<u8>,
    options: [u16; OptionBytes::COUNT],
    key: KeyState,
    opt_key1: bool,
    acr: u32,
    sr: u32,
    cr: u32,
    ar: u32,
    obr: u32,
    wrpr: u32,
    busy_until: Option<Instant>,
    clone_cycle: u32,
    stats: FlashStats,
}

impl Flash {
    /// An erased array with factory option bytes, loaded as after power-on.
    pub fn new(part: &'static Stm32Part, timing: bool) -> Flash {
        let mut f = Flash {
            part,
            timing,
            clone: false,
            stuck: None,
            array: vec![0xFF; part.flash_size as usize],
            options: part.option_bytes.factory(),
            key: KeyState::Locked,
            opt_key1: false,
            acr: 0x30,
            sr: 0,
            cr: cr::LOCK,
            ar: 0,
            obr: 0,
            wrpr: 0,
            busy_until: None,
            clone_cycle: 0,
            stats: FlashStats::default(),
        };
        f.reset();
        f
    }

    /// Behave like a clone that drops writes instead of stalling.
    pub fn set_clone(&mut self, on: bool) {
        self.clone = on;
    }

    /// Stick `mask` bits of the byte at `addr` (main flash) at 0.
    pub fn set_stuck(&mut self, addr: u32, mask: u8) {
        self.stuck = Some((addr, mask));
        self.apply_stuck();
    }

    pub fn part(&self) -> &'static Stm32Part {
        self.part
    }
    pub fn stats(&self) -> &FlashStats {
        &self.stats
    }
    /// Main flash contents.
    pub fn array(&self) -> &[u8] {
        &self.array
    }
    /// The option-byte block as stored (half-words, value | complement << 8).
    pub fn option_bytes(&self) -> [u16; OptionBytes::COUNT] {
        self.options
    }
    /// Put bytes into main flash as a factory programmer would (no controller involved).
    pub fn preload(&mut self, offset: u32, data: &[u8]) {
        let o = offset as usize;
        self.array[o..o + data.len()].copy_from_slice(data);
        self.apply_stuck();
    }
    /// Set the stored option bytes (takes effect at the next reset, as on silicon).
    pub fn preload_option_bytes(&mut self, ob: [u16; OptionBytes::COUNT]) {
        self.options = ob;
    }

    /// Whether read-out protection is in force (OBR.RDPRT as loaded at the last reset).
    pub fn readout_protected(&self) -> bool {
        self.obr & obr::RDPRT != 0
    }
    /// Whether the controller still has BSY set.
    pub fn busy(&mut self) -> bool {
        self.settle();
        self.busy_until.is_some()
    }
    pub fn unlocked(&self) -> bool {
        self.cr & cr::LOCK == 0
    }

    /// System reset: lock the FPEC, forget key sequences, reload OBR/WRPR from the option bytes.
    pub fn reset(&mut self) {
        // A reset during an operation: its effect is already in the array.
        self.busy_until = None;
        self.key = KeyState::Locked;
        self.opt_key1 = false;
        self.cr = cr::LOCK;
        self.sr = 0;
        self.ar = 0;
        self.acr = 0x30;
        self.clone_cycle = 0;
        self.load_options();
    }

    fn load_options(&mut self) {
        let mut err = false;
        let mut byte = |i: usize| {
            let hw = self.options[i];
            let (v, c) = ((hw & 0xFF) as u8, (hw >> 8) as u8);
            if v == !c {
                v
            } else {
                err = true;
                0xFF
            }
        };
        let rdp = byte(0);
        let user = byte(1);
        let d0 = byte(2);
        let d1 = byte(3);
        let w = [byte(4), byte(5), byte(6), byte(7)];
        // RDP: a mismatched byte is forced to 0xFF, which (not being 0xA5) means protected.
        let rdprt = rdp != self.part.option_bytes.rdp_unprotected;
        let flags = if err { obr::OPTERR } else { 0 } | if rdprt { obr::RDPRT } else { 0 };
        self.obr = flags
            | (user as u32) << obr::USER_SHIFT
            | (d0 as u32) << obr::DATA0_SHIFT
            | (d1 as u32) << obr::DATA1_SHIFT;
        self.wrpr = u32::from_le_bytes(w);
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    /// Complete an operation whose time is up.
    fn settle(&mut self) {
        if let Some(t) = self.busy_until {
            if self.now() >= t {
                self.busy_until = None;
            }
        }
    }

    /// Start an operation of datasheet duration `d`.
    fn start_busy(&mut self, d: Duration) {
        self.stats.busy_time += d;
        if self.timing {
            let base = self.busy_until.map_or_else(|| self.now(), |t| t.max(self.now()));
            self.busy_until = Some(base + d);
        }
    }

    /// An access to the array while BSY: hold the bus until the operation ends.
    fn stall(&mut self) {
        self.settle();
        if let Some(t) = self.busy_until.take() {
            let now = self.now();
            if t > now {
                std::thread::sleep(t - now);
                self.stats.stalled += t - now;
            }
        }
    }

    /// Called for every bus transfer the chip sees (the clone's program cycle counts them).
    pub fn tick(&mut self) {
        self.clone_cycle = self.clone_cycle.saturating_sub(1);
    }

    // Timed mode uses the datasheet's typical tPROG (52.5 µs, the only typical value it gives)
    // and the maximum page / mass erase times (40 ms; the table gives 20 ms min, no typical).
    fn t_prog(&self) -> Duration {
        self.part.t_prog[1]
    }
    fn t_erase(&self) -> Duration {
        self.part.t_erase_page[1]
    }
    fn t_mass(&self) -> Duration {
        self.part.t_mass_erase[1]
    }

    /// Page index of a main-flash byte offset.
    fn page_of(&self, offset: u32) -> u32 {
        offset / self.part.page_size
    }

    /// Whether a page is write-protected: a WRP bit at 0, or one of the first four pages while
    /// read-out protection is on (PM0075).
    fn page_protected(&self, page: u32) -> bool {
        let bit = (page / self.part.option_bytes.pages_per_wrp_bit).min(31);
        self.wrpr & (1 << bit) == 0 || (self.readout_protected() && page < 4)
    }

    fn apply_stuck(&mut self) {
        if let Some((addr, mask)) = self.stuck {
            if self.part.in_flash(addr) {
                self.array[(addr - self.part.flash_base) as usize] &= !mask;
            }
        }
    }

    // ---- main flash and option bytes as memory ----

    /// Debug read of main flash at byte `offset`, `size` bytes (1, 2, 4), little-endian.
    pub fn read_array(&mut self, offset: u32, size: u32) -> Result<u32, FlashBusError> {
        self.tick();
        if self.readout_protected() {
            return Err(FlashBusError::ReadProtected);
        }
        if !self.clone {
            self.stall();
        }
        Ok(le(&self.array, offset as usize, size))
    }

    /// Read of the option-byte block at byte `offset` (always allowed).
    pub fn read_option_bytes(&mut self, offset: u32, size: u32) -> u32 {
        self.tick();
        let bytes: Vec<u8> = self.options.iter().flat_map(|h| h.to_le_bytes()).collect();
        le(&bytes, offset as usize, size)
    }

    /// Write to main flash: programs a half-word when PG is set, otherwise ignored.
    pub fn write_array(&mut self, offset: u32, size: u32, value: u32) -> Result<(), FlashBusError> {
        let in_cycle = self.clone_cycle > 0;
        self.tick();
        if self.cr & cr::PG == 0 || self.cr & cr::LOCK != 0 {
            return Ok(());
        }
        if size != 2 {
            return Err(FlashBusError::Refused);
        }
        if self.clone {
            if in_cycle {
                self.stats.dropped_writes += 1;
                self.sr |= sr::EOP;
                return Ok(());
            }
        } else {
            self.stall();
        }
        let o = (offset & !1) as usize;
        let page = self.page_of(o as u32);
        if self.page_protected(page) || self.readout_protected() {
            self.sr |= sr::WRPRTERR;
            self.stats.wrprterr += 1;
            return Ok(());
        }
        let cur = u16::from_le_bytes([self.array[o], self.array[o + 1]]);
        let v = value as u16;
        if cur != 0xFFFF && v != 0x0000 {
            self.sr |= sr::PGERR;
            self.stats.pgerr += 1;
            return Ok(());
        }
        self.array[o..o + 2].copy_from_slice(&(cur & v).to_le_bytes());
        self.apply_stuck();
        self.stats.half_words += 1;
        self.start_busy(self.t_prog());
        if self.clone {
            self.clone_cycle = CLONE_CYCLE_TRANSFERS;
        }
        self.sr |= sr::EOP;
        Ok(())
    }

    /// Write into the option-byte block: programs the byte (and its complement) with OPTPG.
    pub fn write_option_bytes(&mut self, offset: u32, size: u32, value: u32) -> Result<(), FlashBusError> {
        self.tick();
        if self.cr & cr::OPTPG == 0 || self.cr & cr::OPTWRE == 0 || self.cr & cr::LOCK != 0 {
            return Ok(());
        }
        if size != 2 {
            return Err(FlashBusError::Refused);
        }
        self.stall();
        let i = (offset / 2) as usize;
        if self.options[i] != 0xFFFF {
            self.sr |= sr::PGERR;
            self.stats.pgerr += 1;
            return Ok(());
        }
        let v = value as u8;
        let mut t = self.t_prog();
        if i == 0 && v == self.part.option_bytes.rdp_unprotected && self.readout_protected() {
            // PM0075: programming RDP back to 0xA5 first forces a mass erase of main flash.
            self.mass_erase_array();
            t += self.t_mass();
        }
        self.options[i] = with_complement(v);
        self.stats.option_writes += 1;
        self.start_busy(t);
        self.sr |= sr::EOP;
        Ok(())
    }

    fn mass_erase_array(&mut self) {
        self.array.fill(0xFF);
        self.apply_stuck();
        self.stats.mass_erases += 1;
    }

    // ---- registers ----

    /// Read a controller register (offset from the FPEC base; word registers, any width).
    pub fn read_reg(&mut self, offset: u32) -> u32 {
        self.tick();
        self.settle();
        match offset & !3 {
            reg::ACR => self.acr,
            reg::SR => {
                let bsy = if self.busy_until.is_some() && !self.clone { sr::BSY } else { 0 };
                self.sr | bsy
            }
            reg::CR => {
                let strt = if self.busy_until.is_some() { self.cr & cr::STRT } else { 0 };
                (self.cr & !cr::STRT) | strt
            }
            reg::AR => self.ar,
            reg::OBR => self.obr,
            reg::WRPR => self.wrpr,
            _ => 0,
        }
    }

    /// Write a controller register.
    pub fn write_reg(&mut self, offset: u32, value: u32) -> Result<(), FlashBusError> {
        self.tick();
        self.settle();
        match offset & !3 {
            reg::ACR => self.acr = value & 0x3F,
            reg::KEYR => return self.write_key(value),
            reg::OPTKEYR if self.unlocked() => {
                if !self.opt_key1 && value == KEY1 {
                    self.opt_key1 = true;
                } else if self.opt_key1 && value == KEY2 {
                    self.opt_key1 = false;
                    self.cr |= cr::OPTWRE;
                } else {
                    self.opt_key1 = false;
                }
            }
            reg::SR => self.sr &= !(value & (sr::PGERR | sr::WRPRTERR | sr::EOP)),
            reg::CR => self.write_cr(value),
            reg::AR if self.unlocked() && self.busy_until.is_none() => self.ar = value,
            _ => {}
        }
        Ok(())
    }

    fn write_key(&mut self, value: u32) -> Result<(), FlashBusError> {
        self.key = match (self.key, value) {
            (KeyState::Unlocked, _) => KeyState::Unlocked,
            (KeyState::Locked, KEY1) => KeyState::Key1,
            (KeyState::Key1, KEY2) => {
                self.cr &= !cr::LOCK;
                KeyState::Unlocked
            }
            _ => {
                // RM0008: a wrong sequence locks the FPEC and FLASH_CR until the next reset,
                // and the access gets a bus error.
                self.key = KeyState::Jammed;
                return Err(FlashBusError::Refused);
            }
        };
        Ok(())
    }

    fn write_cr(&mut self, value: u32) {
        if self.cr & cr::LOCK != 0 || self.busy_until.is_some() {
            return;
        }
        if value & cr::LOCK != 0 {
            self.cr |= cr::LOCK;
            self.key = KeyState::Locked;
        }
        // OPTWRE: software may clear it, only the OPTKEYR sequence sets it.
        let optwre = if value & cr::OPTWRE != 0 { self.cr & cr::OPTWRE } else { 0 };
        let keep = cr::LOCK;
        let rw = cr::PG | cr::PER | cr::MER | cr::OPTPG | cr::OPTER | cr::ERRIE | cr::EOPIE;
        self.cr = (self.cr & keep) | (value & rw) | optwre;
        if value & cr::STRT != 0 && self.cr & cr::LOCK == 0 {
            self.cr |= cr::STRT;
            self.start();
        }
    }

    /// STRT: run the erase CR selects.
    fn start(&mut self) {
        if self.cr & cr::MER != 0 {
            self.mass_erase_array();
            self.start_busy(self.t_mass());
            self.sr |= sr::EOP;
        } else if self.cr & cr::PER != 0 {
            // AR holds a main-flash address (or its alias at 0); anything else erases nothing.
            let off = if self.part.in_flash(self.ar) {
                self.ar - self.part.flash_base
            } else if self.ar < self.part.flash_size {
                self.ar
            } else {
                self.sr |= sr::EOP;
                return;
            };
            let page = self.page_of(off);
            if self.page_protected(page) || self.readout_protected() {
                self.sr |= sr::WRPRTERR;
                self.stats.wrprterr += 1;
                return;
            }
            let ps = self.part.page_size as usize;
            let start = page as usize * ps;
            self.array[start..start + ps].fill(0xFF);
            self.apply_stuck();
            self.stats.page_erases += 1;
            self.start_busy(self.t_erase());
            self.sr |= sr::EOP;
        } else if self.cr & cr::OPTER != 0 {
            if self.cr & cr::OPTWRE == 0 {
                return;
            }
            self.options = [0xFFFF; OptionBytes::COUNT];
            self.stats.option_erases += 1;
            self.start_busy(self.t_erase());
            self.sr |= sr::EOP;
        }
    }
}

/// Little-endian read of `size` bytes at `o` (bytes past the end read as 0xFF).
fn le(bytes: &[u8], o: usize, size: u32) -> u32 {
    let mut v = 0u32;
    for i in 0..size as usize {
        v |= (*bytes.get(o + i).unwrap_or(&0xFF) as u32) << (8 * i);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stm32::part;

    fn flash() -> Flash {
        Flash::new(part::find("stm32f103c8").unwrap(), false)
    }

    fn unlock(f: &mut Flash) {
        f.write_reg(reg::KEYR, KEY1).unwrap();
        f.write_reg(reg::KEYR, KEY2).unwrap();
        assert!(f.unlocked());
    }

    #[test]
    fn starts_locked_and_ignores_cr_until_unlocked() {
        let mut f = flash();
        assert_eq!(f.read_reg(reg::CR), cr::LOCK);
        f.write_reg(reg::CR, cr::PG).unwrap();
        assert_eq!(f.read_reg(reg::CR), cr::LOCK, "CR is read-only while locked");
        f.write_reg(reg::CR, cr::PG).unwrap();
        f.write_array(0, 2, 0x1234).unwrap();
        assert_eq!(f.array()[0..2], [0xFF, 0xFF]);
        unlock(&mut f);
        f.write_reg(reg::CR, cr::PG).unwrap();
        f.write_array(0, 2, 0x1234).unwrap();
        assert_eq!(f.array()[0..2], [0x34, 0x12]);
        assert_eq!(f.read_reg(reg::SR) & sr::EOP, sr::EOP);
        f.write_reg(reg::CR, cr::LOCK).unwrap();
        assert!(!f.unlocked());
    }

    #[test]
    fn wrong_key_locks_until_reset() {
        let mut f = flash();
        f.write_reg(reg::KEYR, KEY1).unwrap();
        assert_eq!(f.write_reg(reg::KEYR, 0xDEAD_BEEF), Err(FlashBusError::Refused));
        // Even the right sequence now fails.
        assert!(f.write_reg(reg::KEYR, KEY1).is_err());
        assert!(f.write_reg(reg::KEYR, KEY2).is_err());
        assert!(!f.unlocked());
        // Keys in the wrong order are wrong too.
        f.reset();
        assert!(f.write_reg(reg::KEYR, KEY2).is_err());
        f.reset();
        unlock(&mut f);
    }

    #[test]
    fn pgerr_on_a_non_erased_half_word_but_zero_is_allowed() {
        let mut f = flash();
        unlock(&mut f);
        f.write_reg(reg::CR, cr::PG).unwrap();
        f.write_array(0x10, 2, 0xAB00).unwrap();
        f.write_array(0x10, 2, 0x1234).unwrap();
        assert_eq!(f.read_reg(reg::SR) & sr::PGERR, sr::PGERR);
        assert_eq!(f.array()[0x10..0x12], [0x00, 0xAB], "the second write changed nothing");
        f.write_reg(reg::SR, sr::PGERR | sr::EOP).unwrap();
        assert_eq!(f.read_reg(reg::SR), 0, "PGERR and EOP are write-1-to-clear");
        f.write_array(0x10, 2, 0x0000).unwrap();
        assert_eq!(f.read_reg(reg::SR) & sr::PGERR, 0);
        assert_eq!(f.array()[0x10..0x12], [0, 0]);
        // Word writes while programming are refused with a bus error.
        assert_eq!(f.write_array(0x20, 4, 0), Err(FlashBusError::Refused));
    }

    #[test]
    fn page_erase_and_mass_erase() {
        let mut f = flash();
        f.preload(0, &[0u8; 4096]);
        unlock(&mut f);
        f.write_reg(reg::CR, cr::PER).unwrap();
        f.write_reg(reg::AR, 0x0800_0400).unwrap();
        f.write_reg(reg::CR, cr::PER | cr::STRT).unwrap();
        assert!(f.array()[0x400..0x800].iter().all(|&b| b == 0xFF));
        assert!(f.array()[..0x400].iter().all(|&b| b == 0) && f.array()[0x800..0x1000].iter().all(|&b| b == 0));
        f.write_reg(reg::CR, cr::MER).unwrap();
        f.write_reg(reg::CR, cr::MER | cr::STRT).unwrap();
        assert!(f.array().iter().all(|&b| b == 0xFF));
        assert_eq!(f.stats().page_erases, 1);
        assert_eq!(f.stats().mass_erases, 1);
        assert_eq!(f.stats().busy_time, f.part().t_erase_page[1] + f.part().t_mass_erase[1]);
    }

    fn program_options(f: &mut Flash, values: [u8; 8]) {
        f.write_reg(reg::OPTKEYR, KEY1).unwrap();
        f.write_reg(reg::OPTKEYR, KEY2).unwrap();
        assert_ne!(f.read_reg(reg::CR) & cr::OPTWRE, 0);
        f.write_reg(reg::CR, cr::OPTER | cr::OPTWRE).unwrap();
        f.write_reg(reg::CR, cr::OPTER | cr::OPTWRE | cr::STRT).unwrap();
        f.write_reg(reg::CR, cr::OPTPG | cr::OPTWRE).unwrap();
        for (i, v) in values.iter().enumerate() {
            f.write_option_bytes(2 * i as u32, 2, *v as u32).unwrap();
        }
    }

    #[test]
    fn wrprterr_on_a_protected_page() {
        let mut f = flash();
        unlock(&mut f);
        // WRP0 bit 1 at 0: pages 4..7 protected.
        program_options(&mut f, [0xA5, 0xFF, 0xFF, 0xFF, 0xFD, 0xFF, 0xFF, 0xFF]);
        assert_eq!(f.option_bytes()[4], 0x02FD, "complement written by the controller");
        f.reset();
        assert_eq!(f.read_reg(reg::WRPR), 0xFFFF_FFFD);
        unlock(&mut f);
        f.write_reg(reg::CR, cr::PG).unwrap();
        f.write_array(0x1000, 2, 0x1111).unwrap();
        assert_eq!(f.read_reg(reg::SR) & sr::WRPRTERR, sr::WRPRTERR);
        assert_eq!(f.array()[0x1000], 0xFF);
        f.write_array(0x0C00, 2, 0x1111).unwrap();
        assert_eq!(f.array()[0x0C00], 0x11, "page 3 is not protected");
        f.write_reg(reg::CR, cr::PER).unwrap();
        f.write_reg(reg::AR, 0x0800_1400).unwrap();
        f.write_reg(reg::SR, sr::WRPRTERR).unwrap();
        f.write_reg(reg::CR, cr::PER | cr::STRT).unwrap();
        assert_eq!(f.read_reg(reg::SR) & sr::WRPRTERR, sr::WRPRTERR);
    }

    #[test]
    fn readout_protection_blocks_reads_and_unprotecting_mass_erases() {
        let mut f = flash();
        f.preload(0, b"secret firmware!");
        unlock(&mut f);
        program_options(&mut f, [0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(f.read_array(0, 4), Ok(u32::from_le_bytes(*b"secr")), "RDP takes effect at reset");
        f.reset();
        assert!(f.readout_protected());
        assert_eq!(f.read_reg(reg::OBR) & obr::RDPRT, obr::RDPRT);
        assert_eq!(f.read_array(0, 4), Err(FlashBusError::ReadProtected));
        assert_eq!(f.read_option_bytes(0, 2), 0xFF00, "option bytes stay readable");
        // Erasing the option bytes alone does not erase flash...
        unlock(&mut f);
        f.write_reg(reg::OPTKEYR, KEY1).unwrap();
        f.write_reg(reg::OPTKEYR, KEY2).unwrap();
        f.write_reg(reg::CR, cr::OPTER | cr::OPTWRE | cr::STRT).unwrap();
        assert_eq!(&f.array()[..6], b"secret");
        // ... programming RDP = 0xA5 does, first.
        f.write_reg(reg::CR, cr::OPTPG | cr::OPTWRE).unwrap();
        f.write_option_bytes(0, 2, 0xA5).unwrap();
        assert!(f.array().iter().all(|&b| b == 0xFF));
        assert_eq!(f.stats().mass_erases, 1);
        f.reset();
        assert!(!f.readout_protected());
        assert_eq!(f.read_array(0, 4), Ok(0xFFFF_FFFF));
    }

    #[test]
    fn erased_option_bytes_mean_protected_with_opterr() {
        let mut f = flash();
        unlock(&mut f);
        f.write_reg(reg::OPTKEYR, KEY1).unwrap();
        f.write_reg(reg::OPTKEYR, KEY2).unwrap();
        f.write_reg(reg::CR, cr::OPTER | cr::OPTWRE | cr::STRT).unwrap();
        f.reset();
        let o = f.read_reg(reg::OBR);
        assert_eq!(o & (obr::OPTERR | obr::RDPRT), obr::OPTERR | obr::RDPRT);
    }

    #[test]
    fn clone_drops_writes_inside_the_program_cycle() {
        let mut f = flash();
        f.set_clone(true);
        unlock(&mut f);
        f.write_reg(reg::CR, cr::PG).unwrap();
        f.write_array(0, 2, 0x1111).unwrap();
        assert_eq!(f.read_reg(reg::SR) & sr::BSY, 0, "a clone never shows BSY");
        // The status read above was the first transfer of the cycle; this write is the second.
        f.write_array(2, 2, 0x2222).unwrap();
        assert_eq!(f.read_reg(reg::SR) & sr::EOP, sr::EOP, "reported as written");
        f.write_array(4, 2, 0x3333).unwrap();
        assert_eq!(f.array()[0..6], [0x11, 0x11, 0xFF, 0xFF, 0x33, 0x33]);
        assert_eq!(f.stats().dropped_writes, 1);
    }

    #[test]
    fn stuck_bit_survives_erase_and_gives_pgerr() {
        let mut f = flash();
        f.set_stuck(0x0800_0100, 0x01);
        assert_eq!(f.array()[0x100], 0xFE);
        unlock(&mut f);
        f.write_reg(reg::CR, cr::PG).unwrap();
        f.write_array(0x100, 2, 0x5555).unwrap();
        assert_ne!(f.read_reg(reg::SR) & sr::PGERR, 0);
    }

    #[test]
    fn timed_mode_shows_bsy_and_stalls_array_access() {
        let mut f = Flash::new(part::find("stm32f103c8").unwrap(), true);
        unlock(&mut f);
        f.write_reg(reg::CR, cr::PER).unwrap();
        f.write_reg(reg::AR, 0x0800_0000).unwrap();
        f.write_reg(reg::CR, cr::PER | cr::STRT).unwrap();
        assert_ne!(f.read_reg(reg::SR) & sr::BSY, 0);
        assert_ne!(f.read_reg(reg::CR) & cr::STRT, 0);
        // Reading flash now waits for the erase: afterwards BSY is clear.
        assert_eq!(f.read_array(0, 4), Ok(0xFFFF_FFFF));
        assert_eq!(f.read_reg(reg::SR) & sr::BSY, 0);
        assert!(f.stats().stalled > Duration::ZERO);
    }
}
