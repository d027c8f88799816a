//! The target-family seam: one catalog lookup over every family flashline knows.
//!
//! A recipe's `mcu:` names a row of either family's catalog — AVR parts in [`crate::part`]
//! (programmed over ISP, fuses and lock bits) or STM32 parts in [`crate::stm32`] (programmed over
//! SWD/JTAG, option bytes and read-out protection). Everything that is the same for both (name,
//! where flash is, its erase unit) is asked of [`Mcu`]; what differs stays in each family's part
//! data and is reached by matching once, where the family matters (the build's layout checks,
//! the job a programmer runs).

use std::fmt;
use std::ops::Range;

use crate::part::Part;
use crate::stm32::Stm32Part;

/// A target family: what programs it and what its protection settings are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Microchip AVR over ISP: signature bytes, fuses, lock bits.
    Avr,
    /// ST STM32 over SWD/JTAG: DBGMCU_IDCODE, option bytes, read-out protection.
    Stm32,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Avr => "AVR",
            Family::Stm32 => "STM32",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One catalog row of either family (equal when the catalog id is).
#[derive(Debug, Clone, Copy)]
pub enum Mcu {
    Avr(&'static Part),
    Stm32(&'static Stm32Part),
}

impl Mcu {
    /// Look a part up by id or alias in every family's catalog.
    pub fn find(name: &str) -> Option<Mcu> {
        crate::part::find(name).map(Mcu::Avr).or_else(|| crate::stm32::find(name).map(Mcu::Stm32))
    }

    /// Every catalog id, AVR first.
    pub fn ids() -> Vec<&'static str> {
        let mut v = crate::part::ids();
        v.extend(crate::stm32::ids());
        v
    }

    pub fn family(&self) -> Family {
        match self {
            Mcu::Avr(_) => Family::Avr,
            Mcu::Stm32(_) => Family::Stm32,
        }
    }

    /// Catalog id (`atmega32u4`, `stm32f103c8`).
    pub fn id(&self) -> &'static str {
        match self {
            Mcu::Avr(p) => p.id,
            Mcu::Stm32(p) => p.id,
        }
    }

    /// Datasheet name (`ATmega32U4`, `STM32F103C8`).
    pub fn name(&self) -> &'static str {
        match self {
            Mcu::Avr(p) => p.name,
            Mcu::Stm32(p) => p.name,
        }
    }

    /// Main flash as an address range (AVR flash starts at 0, STM32 flash at 0x0800_0000).
    pub fn flash(&self) -> Range<u32> {
        match self {
            Mcu::Avr(p) => 0..p.flash_size,
            Mcu::Stm32(p) => p.flash_base..p.flash_base + p.flash_size,
        }
    }

    /// The flash programming/erase unit in bytes (AVR: the page the ISP writes; STM32: the
    /// page the FPEC erases).
    pub fn page_size(&self) -> u32 {
        match self {
            Mcu::Avr(p) => p.flash_page_size,
            Mcu::Stm32(p) => p.page_size,
        }
    }

    /// Where an application starts when there is no bootloader: the reset vector (AVR 0x0000)
    /// or the vector table the boot pins select with BOOT0 = 0 (STM32: flash base).
    pub fn reset_address(&self) -> u32 {
        self.flash().start
    }

    pub fn avr(&self) -> Option<&'static Part> {
        match self {
            Mcu::Avr(p) => Some(p),
            Mcu::Stm32(_) => None,
        }
    }

    pub fn stm32(&self) -> Option<&'static Stm32Part> {
        match self {
            Mcu::Stm32(p) => Some(p),
            Mcu::Avr(_) => None,
        }
    }
}

impl PartialEq for Mcu {
    fn eq(&self, other: &Mcu) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Mcu {}

impl fmt::Display for Mcu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_families_are_found_and_ids_are_unique() {
        assert_eq!(Mcu::find("m32u4").unwrap().family(), Family::Avr);
        let c8 = Mcu::find("STM32F103C8T6").unwrap();
        assert_eq!((c8.family(), c8.id(), c8.flash()), (Family::Stm32, "stm32f103c8", 0x0800_0000..0x0801_0000));
        assert_eq!(c8.page_size(), 1024);
        let ids = Mcu::ids();
        for id in &ids {
            assert_eq!(ids.iter().filter(|i| *i == id).count(), 1, "{id}");
            assert_eq!(Mcu::find(id).unwrap().id(), *id);
        }
        assert!(Mcu::find("stm32f407vg").is_none());
    }
}
