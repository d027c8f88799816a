//! STM32F103 medium-density parts as data.
//!
//! Facts from ST's RM0008 (reference manual: memory map, FPEC registers, option bytes, debug
//! support), PM0075 (flash programming manual: unlock keys, read-out protection) and the
//! STM32F103x8/xB datasheet (flash timings, "Flash memory characteristics" table). Kept free of
//! any simulator or programmer code so a part catalog can list these rows as they are.

use std::time::Duration;

/// A silicon revision as DBGMCU_IDCODE's REV_ID reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revision {
    /// REV_ID, DBGMCU_IDCODE bits 31:16.
    pub rev_id: u16,
    /// The revision letter printed on the package / in the errata sheet.
    pub name: &'static str,
}

/// Option-byte block layout (RM0008 "Option byte description"): eight bytes, each stored as a
/// half-word whose high byte is the complement of the low byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionBytes {
    /// Address of RDP (then USER, DATA0, DATA1, WRP0..WRP3 every two bytes).
    pub base: u32,
    /// RDP value that leaves read-out protection off; any other value turns it on (level 1).
    pub rdp_unprotected: u8,
    /// Flash pages covered by one WRP bit.
    pub pages_per_wrp_bit: u32,
}

impl OptionBytes {
    pub const RDP: u32 = 0;
    pub const USER: u32 = 2;
    pub const DATA0: u32 = 4;
    pub const DATA1: u32 = 6;
    pub const WRP0: u32 = 8;
    /// Number of option bytes (each one half-word with its complement).
    pub const COUNT: usize = 8;
    /// The factory block: RDP 0xA5 (unprotected), everything else 0xFF, as half-words.
    pub fn factory(&self) -> [u16; Self::COUNT] {
        let mut ob = [0x00FFu16; Self::COUNT];
        ob[0] = with_complement(self.rdp_unprotected);
        ob
    }
}

/// A byte stored with its complement in the high byte, as the option bytes are.
pub const fn with_complement(v: u8) -> u16 {
    (v as u16) | ((!v as u16) << 8)
}

/// One STM32 part.
#[derive(Debug, Clone, PartialEq)]
pub struct Stm32Part {
    /// Catalog id (`stm32f103c8`).
    pub id: &'static str,
    /// Datasheet name.
    pub name: &'static str,
    /// Main flash base address.
    pub flash_base: u32,
    /// Main flash size in bytes.
    pub flash_size: u32,
    /// Erase granularity (page) in bytes.
    pub page_size: u32,
    /// SRAM base address and size in bytes.
    pub sram_base: u32,
    pub sram_size: u32,
    /// DBGMCU_IDCODE address; DEV_ID is its bits 11:0.
    pub dbgmcu_idcode_addr: u32,
    pub dev_id: u16,
    /// Known revisions, oldest first.
    pub revisions: &'static [Revision],
    /// Flash size data register (16 bits, KiB).
    pub flash_size_reg: u32,
    /// 96-bit unique device id (three words).
    pub unique_id_addr: u32,
    /// System memory (ST's boot loader) base and size.
    pub system_memory: (u32, u32),
    pub option_bytes: OptionBytes,
    /// Flash interface (FPEC) register base.
    pub fpec_base: u32,
    /// Half-word program time: min, typical, max (datasheet tPROG).
    pub t_prog: [Duration; 3],
    /// Page erase time: min, max (datasheet tERASE).
    pub t_erase_page: [Duration; 2],
    /// Mass erase time: min, max (datasheet tME).
    pub t_mass_erase: [Duration; 2],
    /// JTAG IDCODE of the Cortex-M3 JTAG-DP (RM0008 "JTAG debug port").
    pub jtag_dp_idcode: u32,
    /// JTAG IDCODE of the boundary-scan TAP (medium-density).
    pub bsc_idcode: u32,
    /// SW-DP IDCODE (for SWD transports).
    pub swd_dp_idcode: u32,
    /// Cortex-M3 CPUID (r1p1 in these parts).
    pub cpuid: u32,
}

impl Stm32Part {
    /// DBGMCU_IDCODE for a revision.
    pub fn dbgmcu_idcode(&self, rev: &Revision) -> u32 {
        (rev.rev_id as u32) << 16 | self.dev_id as u32
    }
    /// The newest revision (what a board bought today carries).
    pub fn latest_revision(&self) -> &'static Revision {
        self.revisions.last().expect("every part lists a revision")
    }
    pub fn pages(&self) -> u32 {
        self.flash_size / self.page_size
    }
    /// Whether `addr` is in main flash.
    pub fn in_flash(&self, addr: u32) -> bool {
        addr >= self.flash_base && addr - self.flash_base < self.flash_size
    }
    pub fn in_sram(&self, addr: u32) -> bool {
        addr >= self.sram_base && addr - self.sram_base < self.sram_size
    }
    /// Whether the option byte block holds `addr`.
    pub fn in_option_bytes(&self, addr: u32) -> bool {
        addr >= self.option_bytes.base && addr - self.option_bytes.base < 2 * OptionBytes::COUNT as u32
    }
    /// Flash size register value (KiB).
    pub fn flash_size_kib(&self) -> u16 {
        (self.flash_size / 1024) as u16
    }
}

/// Medium-density revisions (RM0008 DBGMCU_IDCODE: 0x0000 rev A, 0x2000 rev B, 0x2001 rev Z,
/// 0x2003 revs Y, 1, 2 and X).
const MEDIUM_DENSITY_REVISIONS: &[Revision] = &[
    Revision { rev_id: 0x0000, name: "A" },
    Revision { rev_id: 0x2000, name: "B" },
    Revision { rev_id: 0x2001, name: "Z" },
    Revision { rev_id: 0x2003, name: "Y/1/2/X" },
];

const fn us(n: u64) -> Duration {
    Duration::from_nanos(n * 1_000)
}
const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn medium_density(id: &'static str, name: &'static str, flash_kib: u32) -> Stm32Part {
    Stm32Part {
        id,
        name,
        flash_base: 0x0800_0000,
        flash_size: flash_kib * 1024,
        page_size: 1024,
        sram_base: 0x2000_0000,
        sram_size: 20 * 1024,
        dbgmcu_idcode_addr: 0xE004_2000,
        dev_id: 0x410,
        revisions: MEDIUM_DENSITY_REVISIONS,
        flash_size_reg: 0x1FFF_F7E0,
        unique_id_addr: 0x1FFF_F7E8,
        system_memory: (0x1FFF_F000, 2048),
        option_bytes: OptionBytes { base: 0x1FFF_F800, rdp_unprotected: 0xA5, pages_per_wrp_bit: 4 },
        fpec_base: 0x4002_2000,
        // Datasheet: tPROG 40 / 52.5 / 70 µs, tERASE 20..40 ms, tME 20..40 ms.
        t_prog: [us(40), Duration::from_nanos(52_500), us(70)],
        t_erase_page: [ms(20), ms(40)],
        t_mass_erase: [ms(20), ms(40)],
        jtag_dp_idcode: 0x3BA0_0477,
        bsc_idcode: 0x0641_0041,
        swd_dp_idcode: 0x1BA0_1477,
        cpuid: 0x411F_C231,
    }
}

/// The STM32 catalog.
pub static STM32_PARTS: [Stm32Part; 2] =
    [medium_density("stm32f103c8", "STM32F103C8", 64), medium_density("stm32f103cb", "STM32F103CB", 128)];

/// Look a part up by id or datasheet name (case-insensitive; a trailing package/temperature
/// suffix such as `t6` is accepted: `STM32F103C8T6`).
pub fn find(name: &str) -> Option<&'static Stm32Part> {
    let n = name.trim().to_ascii_lowercase();
    STM32_PARTS.iter().find(|p| n == p.id || (n.starts_with(p.id) && n.len() <= p.id.len() + 2))
}

/// Every catalog id.
pub fn ids() -> Vec<&'static str> {
    STM32_PARTS.iter().map(|p| p.id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts() {
        let c8 = find("STM32F103C8T6").unwrap();
        assert_eq!(c8.flash_size, 65536);
        assert_eq!(c8.pages(), 64);
        assert_eq!(c8.dbgmcu_idcode(c8.latest_revision()), 0x2003_0410);
        let cb = find("stm32f103cb").unwrap();
        assert_eq!(cb.flash_size_kib(), 128);
        assert!(find("stm32f103c").is_none());
        assert_eq!(c8.option_bytes.factory()[0], 0x5AA5);
        assert_eq!(c8.option_bytes.factory()[1], 0x00FF);
        assert!(c8.in_option_bytes(0x1FFF_F80E) && !c8.in_option_bytes(0x1FFF_F810));
    }
}
