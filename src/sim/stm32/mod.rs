//! A simulated STM32F103 ("Bluepill") and the debug ports that put it on a wire.
//!
//! | file | what |
//! |---|---|
//! | `flash.rs` | flash array, option bytes, the FPEC (keys, PG/PER/MER/OPTPG/OPTER, BSY, errors, RDP) |
//! | `chip.rs` | memory map and bus API ([`Stm32Chip::read`]/[`Stm32Chip::write`]), Cortex-M3 debug registers, ids |
//! | `dap.rs` | ADIv5 DP (CTRL/STAT, SELECT, RDBUFF) and the AHB-AP (CSW, TAR, DRW, BD0-3, BASE, IDR) |
//! | `jtag.rs` | the two-TAP JTAG chain (boundary scan + JTAG-DP) and its state machine |
//! | `bitbang.rs` | a TCP server speaking OpenOCD's `remote_bitbang` protocol |

pub mod bitbang;
pub mod chip;
pub mod dap;
pub mod flash;
pub mod jtag;

pub use bitbang::BitbangServer;
pub use chip::{BusError, ChipOptions, ChipStats, Size, Stm32Chip};
pub use dap::Dap;
pub use jtag::JtagChain;

/// A fault the simulated board carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stm32Fault {
    #[default]
    None,
    /// Nothing answers on the debug port (TDO pulled high: the chain reads all ones).
    NoTarget,
    /// Read-out protection on (RDP level 1) with old firmware inside.
    ReadoutProtected,
    /// A clone whose flash drops half-words written during a program cycle instead of stalling.
    Clone,
    /// Bit 0 of the flash byte at this address stuck at 0: erase cannot clear it, so the FPEC
    /// refuses to program that half-word (PGERR).
    Stuck(u32),
}

impl Stm32Fault {
    /// Default address of `stuck`: inside the first page, where every image lands.
    pub const DEFAULT_STUCK: u32 = 0x0800_0100;

    /// `none`, `no-target`, `readout-protected`, `clone`, `stuck[:ADDR]`.
    pub fn parse(s: &str) -> Result<Stm32Fault, String> {
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let f = match (name, arg) {
            ("none", None) => Stm32Fault::None,
            ("no-target", None) => Stm32Fault::NoTarget,
            ("readout-protected", None) => Stm32Fault::ReadoutProtected,
            ("clone", None) => Stm32Fault::Clone,
            ("stuck", a) => {
                let addr = match a {
                    None => Self::DEFAULT_STUCK,
                    Some(a) => crate::sim::stm32::parse_u32(a).ok_or_else(|| format!("fault stuck: '{a}' is not an address (e.g. 0x08000100)"))?,
                };
                Stm32Fault::Stuck(addr)
            }
            _ => {
                return Err(format!(
                    "unknown STM32 fault '{}': expected none, no-target, readout-protected, clone or stuck[:ADDR]",
                    crate::text::shown(s)
                ))
            }
        };
        Ok(f)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Stm32Fault::None => "none",
            Stm32Fault::NoTarget => "no-target",
            Stm32Fault::ReadoutProtected => "readout-protected",
            Stm32Fault::Clone => "clone",
            Stm32Fault::Stuck(_) => "stuck",
        }
    }
}

fn parse_u32(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names() {
        assert_eq!(Stm32Fault::parse("stuck:0x08000200"), Ok(Stm32Fault::Stuck(0x0800_0200)));
        assert_eq!(Stm32Fault::parse("stuck"), Ok(Stm32Fault::Stuck(Stm32Fault::DEFAULT_STUCK)));
        assert_eq!(Stm32Fault::parse("clone"), Ok(Stm32Fault::Clone));
        assert!(Stm32Fault::parse("flaky").unwrap_err().contains("readout-protected"));
        assert!(Stm32Fault::parse("stuck:zz").is_err());
        assert!(Stm32Fault::parse("clone:1").is_err());
    }
}
