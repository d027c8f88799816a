//! The simulated STM32F103 as a bus slave: its memory map as a debugger's MEM-AP sees it, the
//! Cortex-M3 debug registers (halt, reset, core registers) and the identification registers.
//!
//! This is the memory-access API the debug-port emulators (JTAG here, ST-Link next) are built
//! on: [`Stm32Chip::read`] / [`Stm32Chip::write`] with a byte, half-word or word size, an AHB
//! error as `Err`. Every access counts as one bus transfer.

use std::collections::HashMap;

use crate::sim::stm32::flash::{Flash, FlashBusError, FlashStats};
use crate::sim::stm32::Stm32Fault;
use crate::stm32::part::{Revision, Stm32Part};

/// Access width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    U8,
    U16,
    U32,
}

impl Size {
    pub fn bytes(self) -> u32 {
        match self {
            Size::U8 => 1,
            Size::U16 => 2,
            Size::U32 => 4,
        }
    }
}

/// Why an access got an AHB error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("read of protected flash at {0:#010x} (read-out protection is on)")]
    ReadProtected(u32),
    #[error("flash interface refused the access at {0:#010x}")]
    Refused(u32),
    #[error("nothing at {0:#010x}")]
    Unmapped(u32),
}

/// Cortex-M3 system control space and debug registers.
pub mod scs {
    pub const CPUID: u32 = 0xE000_ED00;
    pub const AIRCR: u32 = 0xE000_ED0C;
    pub const DFSR: u32 = 0xE000_ED30;
    pub const DHCSR: u32 = 0xE000_EDF0;
    pub const DCRSR: u32 = 0xE000_EDF4;
    pub const DCRDR: u32 = 0xE000_EDF8;
    pub const DEMCR: u32 = 0xE000_EDFC;
    pub const DBGKEY: u32 = 0xA05F << 16;
    pub const C_DEBUGEN: u32 = 1 << 0;
    pub const C_HALT: u32 = 1 << 1;
    pub const C_STEP: u32 = 1 << 2;
    pub const C_MASKINTS: u32 = 1 << 3;
    pub const S_REGRDY: u32 = 1 << 16;
    pub const S_HALT: u32 = 1 << 17;
    pub const S_RETIRE_ST: u32 = 1 << 24;
    pub const S_RESET_ST: u32 = 1 << 25;
    pub const VC_CORERESET: u32 = 1 << 0;
    pub const VECTKEY: u32 = 0x05FA << 16;
    pub const SYSRESETREQ: u32 = 1 << 2;
    pub const VECTRESET: u32 = 1 << 0;
    pub const DFSR_HALTED: u32 = 1 << 0;
    pub const DFSR_VCATCH: u32 = 1 << 3;
    pub const REGWNR: u32 = 1 << 16;
}

/// DBGMCU_CR, after DBGMCU_IDCODE.
const DBGMCU_CR: u32 = 0xE004_2004;
/// Flash patch and breakpoint unit control: NUM_CODE 6, NUM_LIT 2 (Cortex-M3 TRM).
const FP_CTRL: u32 = 0xE000_2000;
const FP_CTRL_RO: u32 = 0x260;
/// DWT control: NUMCOMP 4.
const DWT_CTRL: u32 = 0xE000_1000;
const DWT_CTRL_RO: u32 = 0x4000_0000;
/// The Cortex-M3 ROM table.
pub const ROM_TABLE: u32 = 0xE00F_F000;

/// Options for a simulated board.
#[derive(Debug, Clone)]
pub struct ChipOptions {
    pub timing: bool,
    pub fault: Stm32Fault,
    /// Seeds the unique id (and the readout-protected board's old firmware).
    pub seed: u64,
    /// Silicon revision (defaults to the part's newest).
    pub revision: Option<Revision>,
}

impl ChipOptions {
    pub fn new(timing: bool, fault: Stm32Fault) -> ChipOptions {
        ChipOptions { timing, fault, seed: 0x5EED, revision: None }
    }
}

/// Counters for one board.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChipStats {
    pub transfers: u64,
    pub bus_errors: u64,
    pub system_resets: u64,
    pub flash: FlashStats,
}

/// One simulated STM32F103 board.
#[derive(Debug, Clone)]
pub struct Stm32Chip {
    part: &'static Stm32Part,
    opts: ChipOptions,
    revision: Revision,
    unique_id: [u8; 12],
    flash: Flash,
    sram: Vec<u8>,
    /// Plain read/write words: peripherals and PPB registers with no behaviour here.
    plain: HashMap<u32, u32>,
    core: Core,
    transfers: u64,
    bus_errors: u64,
    resets: u64,
}

#[derive(Debug, Clone)]
struct Core {
    /// r0..r15, xPSR, MSP, PSP, (19 unused), CONTROL/FAULTMASK/BASEPRI/PRIMASK.
    regs: [u32; 21],
    dhcsr: u32,
    halted: bool,
    reset_st: bool,
    dcrdr: u32,
    demcr: u32,
    dfsr: u32,
    prigroup: u32,
}

impl Stm32Chip {
    pub fn new(part: &'static Stm32Part, opts: ChipOptions) -> Stm32Chip {
        let revision = opts.revision.unwrap_or(*part.latest_revision());
        let mut flash = Flash::new(part, opts.timing);
        match opts.fault {
            Stm32Fault::Clone => flash.set_clone(true),
            Stm32Fault::Stuck(addr) => flash.set_stuck(addr, 0x01),
            Stm32Fault::ReadoutProtected => {
                // A board that left another line protected: old firmware inside, RDP 0x00.
                let mut rng = opts.seed ^ 0x00DD_BA11;
                let old: Vec<u8> = (0..part.flash_size / 4).map(|_| next(&mut rng) as u8).collect();
                flash.preload(0, &old);
                let mut ob = part.option_bytes.factory();
                ob[0] = crate::stm32::part::with_complement(0x00);
                flash.preload_option_bytes(ob);
                flash.reset();
            }
            _ => {}
        }
        let mut chip = Stm32Chip {
            part,
            unique_id: unique_id(opts.seed),
            opts,
            revision,
            flash,
            sram: vec![0; part.sram_size as usize],
            plain: HashMap::new(),
            core: Core { regs: [0; 21], dhcsr: 0, halted: false, reset_st: false, dcrdr: 0, demcr: 0, dfsr: 0, prigroup: 0 },
            transfers: 0,
            bus_errors: 0,
            resets: 0,
        };
        chip.plain.insert(0x4002_1000, 0x0000_0083); // RCC_CR: HSI on and ready
        chip.system_reset();
        chip.resets = 0;
        chip
    }

    pub fn part(&self) -> &'static Stm32Part {
        self.part
    }
    pub fn fault(&self) -> &Stm32Fault {
        &self.opts.fault
    }
    pub fn timing(&self) -> bool {
        self.opts.timing
    }
    /// DBGMCU_IDCODE as this board reports it.
    pub fn idcode(&self) -> u32 {
        self.part.dbgmcu_idcode(&self.revision)
    }
    /// The 96-bit unique id, as the three words at `part.unique_id_addr` read.
    pub fn unique_id(&self) -> [u8; 12] {
        self.unique_id
    }
    pub fn flash(&self) -> &Flash {
        &self.flash
    }
    pub fn flash_mut(&mut self) -> &mut Flash {
        &mut self.flash
    }
    pub fn halted(&self) -> bool {
        self.core.halted
    }
    /// A core register by DCRSR REGSEL number (0..=15 r0..pc, 16 xPSR, 17 MSP, 18 PSP).
    pub fn core_register(&self, n: usize) -> u32 {
        self.core.regs[n]
    }
    pub fn stats(&self) -> ChipStats {
        ChipStats {
            transfers: self.transfers,
            bus_errors: self.bus_errors,
            system_resets: self.resets,
            flash: self.flash.stats().clone(),
        }
    }

    /// System reset (NRST or SYSRESETREQ): flash interface locked, option bytes reloaded, the
    /// core fetches SP and PC from the vector table and halts there if VC_CORERESET is set. The
    /// debug registers (DHCSR control bits, DEMCR) and SRAM survive, as on silicon.
    pub fn system_reset(&mut self) {
        self.resets += 1;
        self.flash.reset();
        self.core_reset();
    }

    fn core_reset(&mut self) {
        let c = &mut self.core;
        c.regs = [0; 21];
        let sp = le(self.flash.array(), 0);
        let pc = le(self.flash.array(), 4);
        let c = &mut self.core;
        c.regs[13] = sp & !3;
        c.regs[17] = sp & !3;
        c.regs[14] = 0xFFFF_FFFF;
        c.regs[15] = pc & !1;
        c.regs[16] = (pc & 1) << 24;
        c.reset_st = true;
        c.prigroup = 0;
        if c.dhcsr & scs::C_DEBUGEN != 0 && c.demcr & scs::VC_CORERESET != 0 {
            c.halted = true;
            c.dfsr |= scs::DFSR_VCATCH;
        } else {
            c.halted = false;
        }
    }

    /// A debug read of `size` at `addr` (aligned down to the size).
    pub fn read(&mut self, addr: u32, size: Size) -> Result<u32, BusError> {
        self.transfers += 1;
        let a = addr & !(size.bytes() - 1);
        let r = self.read_inner(a, size);
        if r.is_err() {
            self.bus_errors += 1;
        }
        r
    }

    /// A debug write of `size` at `addr`; `value` holds the data in its low bits.
    pub fn write(&mut self, addr: u32, size: Size, value: u32) -> Result<(), BusError> {
        self.transfers += 1;
        let a = addr & !(size.bytes() - 1);
        let v = match size {
            Size::U8 => value & 0xFF,
            Size::U16 => value & 0xFFFF,
            Size::U32 => value,
        };
        let r = self.write_inner(a, size, v);
        if r.is_err() {
            self.bus_errors += 1;
        }
        r
    }

    /// Convenience: 32-bit read.
    pub fn read32(&mut self, addr: u32) -> Result<u32, BusError> {
        self.read(addr, Size::U32)
    }
    /// Convenience: 32-bit write.
    pub fn write32(&mut self, addr: u32, v: u32) -> Result<(), BusError> {
        self.write(addr, Size::U32, v)
    }

    fn flash_err(e: FlashBusError, addr: u32) -> BusError {
        match e {
            FlashBusError::ReadProtected => BusError::ReadProtected(addr),
            FlashBusError::Refused => BusError::Refused(addr),
        }
    }

    fn read_inner(&mut self, a: u32, size: Size) -> Result<u32, BusError> {
        let p = self.part;
        let n = size.bytes();
        // Boot from main flash (BOOT0 low): flash is aliased at 0.
        if a < p.flash_size {
            return self.flash.read_array(a, n).map_err(|e| Self::flash_err(e, a));
        }
        if p.in_flash(a) {
            return self.flash.read_array(a - p.flash_base, n).map_err(|e| Self::flash_err(e, a));
        }
        if p.in_sram(a) {
            return Ok(le_n(&self.sram, (a - p.sram_base) as usize, n));
        }
        if p.in_option_bytes(a) {
            return Ok(self.flash.read_option_bytes(a - p.option_bytes.base, n));
        }
        let (sys, sys_len) = p.system_memory;
        if a >= sys && a < sys + sys_len {
            self.flash.tick();
            return Ok(self.system_memory_word(a & !3) >> (8 * (a & 3)) & mask(n));
        }
        if a >= p.fpec_base && a < p.fpec_base + 0x400 {
            let v = self.flash.read_reg(a - p.fpec_base);
            return Ok(v >> (8 * (a & 3)) & mask(n));
        }
        self.flash.tick();
        if (0x4000_0000..0x5000_0000).contains(&a) {
            return Ok(self.plain_read(a, n));
        }
        if a >= 0xE000_0000 {
            let w = self.ppb_read(a & !3);
            return Ok(w >> (8 * (a & 3)) & mask(n));
        }
        Err(BusError::Unmapped(a))
    }

    fn write_inner(&mut self, a: u32, size: Size, v: u32) -> Result<(), BusError> {
        let p = self.part;
        let n = size.bytes();
        if a < p.flash_size {
            return self.flash.write_array(a, n, v).map_err(|e| Self::flash_err(e, a));
        }
        if p.in_flash(a) {
            return self.flash.write_array(a - p.flash_base, n, v).map_err(|e| Self::flash_err(e, a));
        }
        if p.in_sram(a) {
            let o = (a - p.sram_base) as usize;
            self.sram[o..o + n as usize].copy_from_slice(&v.to_le_bytes()[..n as usize]);
            return Ok(());
        }
        if p.in_option_bytes(a) {
            return self.flash.write_option_bytes(a - p.option_bytes.base, n, v).map_err(|e| Self::flash_err(e, a));
        }
        let (sys, sys_len) = p.system_memory;
        if a >= sys && a < sys + sys_len {
            self.flash.tick();
            return Ok(()); // ROM
        }
        if a >= p.fpec_base && a < p.fpec_base + 0x400 {
            // Registers take word writes; narrower writes land in their lanes.
            let w = v << (8 * (a & 3));
            return self.flash.write_reg(a - p.fpec_base, w).map_err(|e| Self::flash_err(e, a));
        }
        self.flash.tick();
        if (0x4000_0000..0x5000_0000).contains(&a) {
            self.plain_write(a, n, v);
            return Ok(());
        }
        if a >= 0xE000_0000 {
            if n == 4 {
                self.ppb_write(a, v);
            } else {
                // Sub-word writes to the PPB: merge into the word.
                let w = a & !3;
                let sh = 8 * (a & 3);
                let cur = self.ppb_read_plain(w);
                let m = mask(n) << sh;
                self.ppb_write(w, (cur & !m) | (v << sh));
            }
            return Ok(());
        }
        Err(BusError::Unmapped(a))
    }

    fn system_memory_word(&self, a: u32) -> u32 {
        let p = self.part;
        if a == p.flash_size_reg {
            // F_SIZE in the low half-word; the upper half reads as erased.
            return 0xFFFF_0000 | p.flash_size_kib() as u32;
        }
        if a >= p.unique_id_addr && a < p.unique_id_addr + 12 {
            let o = (a - p.unique_id_addr) as usize;
            return u32::from_le_bytes(self.unique_id[o..o + 4].try_into().unwrap());
        }
        if a >= p.flash_size_reg {
            return 0xFFFF_FFFF;
        }
        // ST's system boot loader lives here; its code is not modelled.
        0
    }

    fn plain_read(&self, a: u32, n: u32) -> u32 {
        let w = *self.plain.get(&(a & !3)).unwrap_or(&0);
        w >> (8 * (a & 3)) & mask(n)
    }

    fn plain_write(&mut self, a: u32, n: u32, v: u32) {
        let w = a & !3;
        let sh = 8 * (a & 3);
        let m = mask(n) << sh;
        let cur = *self.plain.get(&w).unwrap_or(&0);
        self.plain.insert(w, (cur & !m) | (v << sh));
    }

    fn ppb_read_plain(&self, a: u32) -> u32 {
        *self.plain.get(&a).unwrap_or(&0)
    }

    fn ppb_read(&mut self, a: u32) -> u32 {
        if let Some(v) = rom_and_ids(a) {
            return v;
        }
        if a == self.part.dbgmcu_idcode_addr {
            return self.idcode();
        }
        match a {
            scs::CPUID => self.part.cpuid,
            scs::AIRCR => 0xFA05_0000 | self.core.prigroup << 8,
            scs::DFSR => self.core.dfsr,
            scs::DHCSR => {
                let c = &mut self.core;
                let mut v = c.dhcsr & 0xFFFF;
                v |= scs::S_REGRDY;
                if c.halted {
                    v |= scs::S_HALT;
                } else {
                    v |= scs::S_RETIRE_ST;
                }
                if c.reset_st {
                    v |= scs::S_RESET_ST;
                    c.reset_st = false;
                }
                v
            }
            FP_CTRL => FP_CTRL_RO | self.ppb_read_plain(a) & 1,
            DWT_CTRL => DWT_CTRL_RO | self.ppb_read_plain(a) & 0x0FFF_FFFF,
            scs::DCRSR => 0,
            scs::DCRDR => self.core.dcrdr,
            scs::DEMCR => self.core.demcr,
            _ => self.ppb_read_plain(a),
        }
    }

    fn ppb_write(&mut self, a: u32, v: u32) {
        if rom_and_ids(a).is_some() || a == self.part.dbgmcu_idcode_addr {
            return;
        }
        match a {
            scs::CPUID => {}
            scs::AIRCR => {
                if v >> 16 == scs::VECTKEY >> 16 {
                    self.core.prigroup = (v >> 8) & 7;
                    if v & scs::SYSRESETREQ != 0 {
                        self.system_reset();
                    } else if v & scs::VECTRESET != 0 {
                        self.core_reset();
                    }
                }
            }
            scs::DFSR => self.core.dfsr &= !v,
            scs::DHCSR => {
                if v & 0xFFFF_0000 != scs::DBGKEY {
                    return;
                }
                let c = &mut self.core;
                c.dhcsr = v & (scs::C_DEBUGEN | scs::C_HALT | scs::C_STEP | scs::C_MASKINTS | 1 << 5);
                if c.dhcsr & scs::C_DEBUGEN == 0 {
                    c.halted = false;
                } else if c.dhcsr & scs::C_HALT != 0 {
                    if !c.halted {
                        c.dfsr |= scs::DFSR_HALTED;
                    }
                    c.halted = true;
                } else if c.dhcsr & scs::C_STEP != 0 {
                    // One instruction is not modelled: the core stays where it is, halted.
                    c.dfsr |= scs::DFSR_HALTED;
                    c.halted = true;
                } else {
                    c.halted = false;
                }
            }
            scs::DCRSR => {
                let sel = (v & 0x7F) as usize;
                let c = &mut self.core;
                if sel < c.regs.len() {
                    if v & scs::REGWNR != 0 {
                        c.regs[sel] = c.dcrdr;
                        if sel == 13 {
                            c.regs[17] = c.dcrdr;
                        }
                    } else {
                        c.dcrdr = c.regs[sel];
                    }
                }
            }
            FP_CTRL => {
                // Only ENABLE is writable, and only with KEY set.
                if v & 2 != 0 {
                    self.plain.insert(a, v & 1);
                }
            }
            DWT_CTRL => {
                self.plain.insert(a, v & 0x0FFF_FFFF);
            }
            scs::DCRDR => self.core.dcrdr = v,
            scs::DEMCR => self.core.demcr = v & 0x010F_07F1,
            DBGMCU_CR => {
                self.plain.insert(a, v & 0x007F_FFE7);
            }
            _ => {
                self.plain.insert(a, v);
            }
        }
    }
}

/// ROM table entries and the CoreSight component/peripheral ID registers of the Cortex-M3
/// components it points to (Cortex-M3 TRM; the ROM table's part number is ST's 0x410).
fn rom_and_ids(a: u32) -> Option<u32> {
    const ENTRIES: [u32; 7] = [0xFFF0_F003, 0xFFF0_2003, 0xFFF0_3003, 0xFFF0_1003, 0xFFF4_1003, 0xFFF4_2002, 0];
    if (ROM_TABLE..ROM_TABLE + 4 * ENTRIES.len() as u32).contains(&a) {
        return Some(ENTRIES[((a - ROM_TABLE) / 4) as usize]);
    }
    // (component base, PIDR0..PIDR4, CIDR class)
    let comps: [(u32, [u32; 5], u32); 6] = [
        (ROM_TABLE, [0x10, 0x04, 0x0A, 0x00, 0x00], 0x10),
        (0xE000_E000, [0x00, 0xB0, 0x1B, 0x00, 0x04], 0xE0),
        (0xE000_1000, [0x02, 0xB0, 0x1B, 0x00, 0x04], 0xE0),
        (0xE000_2000, [0x03, 0xB0, 0x0B, 0x00, 0x04], 0xE0),
        (0xE000_0000, [0x01, 0xB0, 0x1B, 0x00, 0x04], 0xE0),
        (0xE004_0000, [0x23, 0xB9, 0x0B, 0x00, 0x04], 0x90),
    ];
    for (base, pid, class) in comps {
        let o = a.wrapping_sub(base);
        match o {
            0xFCC if base == ROM_TABLE => return Some(1), // MEMTYPE: system memory present
            0xFD0 => return Some(pid[4]),
            0xFD4..=0xFDC => return Some(0),
            0xFE0..=0xFEC => return Some(pid[((o - 0xFE0) / 4) as usize]),
            0xFF0 => return Some(0x0D),
            0xFF4 => return Some(class),
            0xFF8 => return Some(0x05),
            0xFFC => return Some(0xB1),
            _ => {}
        }
    }
    None
}

fn mask(n: u32) -> u32 {
    if n >= 4 {
        u32::MAX
    } else {
        (1u32 << (8 * n)) - 1
    }
}

fn le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

fn le_n(b: &[u8], o: usize, n: u32) -> u32 {
    let mut v = 0;
    for i in 0..n as usize {
        v |= (b[o + i] as u32) << (8 * i);
    }
    v
}

fn next(s: &mut u64) -> u64 {
    // xorshift64*
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    s.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// A unique id laid out as ST's are: X and Y wafer coordinates (16 bits each), wafer number,
/// then a 7-character ASCII lot number; all derived from the board's seed.
fn unique_id(seed: u64) -> [u8; 12] {
    let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
    if s == 0 {
        s = 1;
    }
    let r = next(&mut s);
    let mut id = [0u8; 12];
    id[0..2].copy_from_slice(&((r % 200) as u16).to_le_bytes());
    id[2..4].copy_from_slice(&(((r >> 16) % 200) as u16).to_le_bytes());
    id[4] = ((r >> 32) % 25 + 1) as u8;
    let lot = next(&mut s);
    for i in 0..7 {
        let d = ((lot >> (i * 6)) % 36) as u8;
        id[5 + i] = if d < 10 { b'0' + d } else { b'A' + d - 10 };
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stm32::part;

    fn chip(fault: Stm32Fault) -> Stm32Chip {
        Stm32Chip::new(part::find("stm32f103c8").unwrap(), ChipOptions::new(false, fault))
    }

    #[test]
    fn identification_registers() {
        let mut c = chip(Stm32Fault::None);
        assert_eq!(c.read32(0xE004_2000).unwrap(), 0x2003_0410);
        assert_eq!(c.read(0x1FFF_F7E0, Size::U16).unwrap(), 64);
        assert_eq!(c.read32(scs::CPUID).unwrap(), 0x411F_C231);
        let uid: Vec<u8> = (0..3).flat_map(|i| c.read32(0x1FFF_F7E8 + 4 * i).unwrap().to_le_bytes()).collect();
        assert_eq!(uid, c.unique_id());
        let other = Stm32Chip::new(part::find("stm32f103c8").unwrap(), ChipOptions { seed: 7, ..ChipOptions::new(false, Stm32Fault::None) });
        assert_ne!(other.unique_id(), c.unique_id(), "seeded per board");
        assert!(matches!(c.read32(0x3000_0000), Err(BusError::Unmapped(_))));
    }

    #[test]
    fn halt_reset_and_core_registers() {
        let mut c = chip(Stm32Fault::None);
        c.flash_mut().preload(0, &[0x00, 0x28, 0x00, 0x20, 0xF1, 0x00, 0x00, 0x08]);
        c.write32(scs::DHCSR, scs::DBGKEY | scs::C_DEBUGEN | scs::C_HALT).unwrap();
        assert!(c.halted());
        c.write32(scs::DEMCR, scs::VC_CORERESET).unwrap();
        c.write32(scs::AIRCR, scs::VECTKEY | scs::SYSRESETREQ).unwrap();
        let dhcsr = c.read32(scs::DHCSR).unwrap();
        assert_ne!(dhcsr & scs::S_RESET_ST, 0);
        assert_ne!(dhcsr & scs::S_HALT, 0);
        assert_eq!(c.read32(scs::DHCSR).unwrap() & scs::S_RESET_ST, 0, "S_RESET_ST clears on read");
        c.write32(scs::DCRSR, 15).unwrap();
        assert_eq!(c.read32(scs::DCRDR).unwrap(), 0x0800_00F0);
        c.write32(scs::DCRSR, 13).unwrap();
        assert_eq!(c.read32(scs::DCRDR).unwrap(), 0x2000_2800);
        c.write32(scs::DCRSR, 16).unwrap();
        assert_eq!(c.read32(scs::DCRDR).unwrap(), 0x0100_0000);
        c.write32(scs::DCRDR, 0x1234).unwrap();
        c.write32(scs::DCRSR, scs::REGWNR | 3).unwrap();
        assert_eq!(c.core_register(3), 0x1234);
        // Without the key DHCSR ignores writes.
        c.write32(scs::DHCSR, scs::C_DEBUGEN).unwrap();
        assert!(c.halted());
        c.write32(scs::DHCSR, scs::DBGKEY | scs::C_DEBUGEN).unwrap();
        assert!(!c.halted());
    }

    #[test]
    fn readout_protected_board_refuses_flash_reads() {
        let mut c = chip(Stm32Fault::ReadoutProtected);
        assert!(matches!(c.read32(0x0800_0000), Err(BusError::ReadProtected(_))));
        assert_eq!(c.read32(0x4002_201C).unwrap() & 2, 2);
        assert_eq!(c.read(0x1FFF_F800, Size::U16).unwrap(), 0xFF00);
    }
}
