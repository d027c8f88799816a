//! ADIv5 debug access port of the Cortex-M3: the DP registers (CTRL/STAT with its power-up
//! handshake, SELECT, RDBUFF) and AP 0, the AHB-AP (a MEM-AP: CSW, TAR with auto-increment
//! inside a 4 KiB block (see [`ap::TAR_AUTOINC_BLOCK`]), DRW, BD0-BD3, CFG, BASE pointing at the ROM table, IDR).
//!
//! [`Dap::transact`] is one DPACC/APACC transaction as the JTAG-DP sees it: the result of a
//! read is what the *next* scan captures (the JTAG-DP's pipeline is the caller's business,
//! see `jtag.rs`).

use crate::sim::stm32::chip::{Size, Stm32Chip, ROM_TABLE};

/// DP register addresses (A[3:2] << 2).
pub mod dp {
    pub const CTRL_STAT: u8 = 0x4;
    pub const SELECT: u8 = 0x8;
    pub const RDBUFF: u8 = 0xC;
    pub const ORUNDETECT: u32 = 1 << 0;
    pub const STICKYORUN: u32 = 1 << 1;
    pub const STICKYCMP: u32 = 1 << 4;
    pub const STICKYERR: u32 = 1 << 5;
    pub const READOK: u32 = 1 << 6;
    pub const CDBGRSTREQ: u32 = 1 << 26;
    pub const CDBGRSTACK: u32 = 1 << 27;
    pub const CDBGPWRUPREQ: u32 = 1 << 28;
    pub const CDBGPWRUPACK: u32 = 1 << 29;
    pub const CSYSPWRUPREQ: u32 = 1 << 30;
    pub const CSYSPWRUPACK: u32 = 1 << 31;
}

/// MEM-AP register addresses.
pub mod ap {
    pub const CSW: u8 = 0x00;
    pub const TAR: u8 = 0x04;
    pub const DRW: u8 = 0x0C;
    pub const BD0: u8 = 0x10;
    pub const CFG: u8 = 0xF4;
    pub const BASE: u8 = 0xF8;
    pub const IDR: u8 = 0xFC;
    /// Cortex-M3 AHB-AP.
    pub const IDR_VALUE: u32 = 0x2477_0011;
    pub const CSW_DEVICE_EN: u32 = 1 << 6;
    /// TAR auto-increment wraps inside a block of this size. ADIv5 only promises 1 KiB; the
    /// Cortex-M3/M4 AHB-AP increments the low 12 bits (OpenOCD's cortex_m driver relies on 4 KiB
    /// for these cores and reads across 1 KiB boundaries without rewriting TAR).
    pub const TAR_AUTOINC_BLOCK: u32 = 4096;
}

/// The debug port and its one MEM-AP, in front of the chip.
#[derive(Debug, Clone)]
pub struct Dap {
    pub chip: Stm32Chip,
    ctrl_stat: u32,
    /// Power-up requests granted on the next DP access (the handshake takes a moment).
    pending_ack: u32,
    select: u32,
    csw: u32,
    tar: u32,
    /// AP transactions that got an AHB error.
    pub faults: u64,
}

impl Dap {
    pub fn new(chip: Stm32Chip) -> Dap {
        Dap { chip, ctrl_stat: 0, pending_ack: 0, select: 0, csw: ap::CSW_DEVICE_EN | 0x2, tar: 0, faults: 0 }
    }

    /// Debug power is up (both ACKs).
    pub fn powered(&self) -> bool {
        self.ctrl_stat & (dp::CDBGPWRUPACK | dp::CSYSPWRUPACK) == dp::CDBGPWRUPACK | dp::CSYSPWRUPACK
    }

    /// DP power-on / JTAG TRST: DP registers back to reset values.
    pub fn reset(&mut self) {
        self.ctrl_stat = 0;
        self.pending_ack = 0;
        self.select = 0;
    }

    /// Start of a DP access: the ACKs granted by the previous access become visible.
    fn begin(&mut self) {
        let acks = dp::CDBGPWRUPACK | dp::CSYSPWRUPACK | dp::CDBGRSTACK;
        self.ctrl_stat = (self.ctrl_stat & !acks) | self.pending_ack;
    }

    /// End of a DP access: each ACK follows its REQ (one bit up) one access later.
    fn end(&mut self) {
        self.pending_ack = (self.ctrl_stat & (dp::CDBGPWRUPREQ | dp::CSYSPWRUPREQ | dp::CDBGRSTREQ)) << 1;
    }

    /// Read a DP register.
    pub fn dp_read(&mut self, addr: u8) -> u32 {
        self.begin();
        let v = match addr & 0xC {
            dp::CTRL_STAT => self.ctrl_stat,
            dp::SELECT => self.select,
            // JTAG-DP: RDBUFF reads as zero; its purpose is to clock out the previous result.
            _ => 0,
        };
        self.end();
        v
    }

    /// Write a DP register.
    pub fn dp_write(&mut self, addr: u8, v: u32) {
        self.begin();
        match addr & 0xC {
            dp::CTRL_STAT => {
                // JTAG-DP: the sticky flags are cleared by writing 1 to them.
                let sticky = dp::STICKYORUN | dp::STICKYCMP | dp::STICKYERR;
                let cleared = self.ctrl_stat & sticky & !(v & sticky);
                let rw = dp::ORUNDETECT | (0x3 << 2) | (0xF << 8) | (0xFFF << 12) | dp::CDBGRSTREQ | dp::CDBGPWRUPREQ | dp::CSYSPWRUPREQ;
                let acks = self.ctrl_stat & (dp::CDBGPWRUPACK | dp::CSYSPWRUPACK | dp::CDBGRSTACK);
                self.ctrl_stat = (v & rw) | cleared | acks;
            }
            dp::SELECT => self.select = v,
            _ => {}
        }
        self.end();
    }

    /// Sticky error from an AP access is set.
    pub fn sticky_error(&self) -> bool {
        self.ctrl_stat & dp::STICKYERR != 0
    }

    /// Abort (the ABORT register's DAPABORT): ends any AP transaction; nothing is pending here.
    pub fn abort(&mut self) {}

    fn ap_addr(&self, a: u8) -> (u8, u8) {
        ((self.select >> 24) as u8, ((self.select & 0xF0) as u8) | (a & 0xC))
    }

    fn size(&self) -> Size {
        match self.csw & 7 {
            0 => Size::U8,
            1 => Size::U16,
            _ => Size::U32,
        }
    }

    fn increment(&mut self) {
        if (self.csw >> 4) & 3 == 1 {
            let n = self.size().bytes();
            let m = ap::TAR_AUTOINC_BLOCK - 1;
            self.tar = (self.tar & !m) | (self.tar.wrapping_add(n) & m);
        }
    }

    fn mem_read(&mut self, addr: u32) -> u32 {
        let size = self.size();
        match self.chip.read(addr, size) {
            Ok(v) => match size {
                Size::U32 => v,
                // Narrow reads come back in their byte lanes.
                _ => v << (8 * (addr & 3)),
            },
            Err(_) => {
                self.faults += 1;
                self.ctrl_stat |= dp::STICKYERR;
                0
            }
        }
    }

    fn mem_write(&mut self, addr: u32, v: u32) {
        let size = self.size();
        let data = match size {
            Size::U32 => v,
            _ => v >> (8 * (addr & 3)),
        };
        if self.chip.write(addr, size, data).is_err() {
            self.faults += 1;
            self.ctrl_stat |= dp::STICKYERR;
        }
    }

    /// Read an AP register (of the AP SELECT points at).
    pub fn ap_read(&mut self, a: u8) -> u32 {
        if self.sticky_error() || !self.powered() {
            // With a sticky error set, AP transactions are discarded.
            return 0;
        }
        let (apsel, reg) = self.ap_addr(a);
        if apsel != 0 {
            return 0;
        }
        match reg {
            ap::CSW => self.csw,
            ap::TAR => self.tar,
            ap::DRW => {
                let v = self.mem_read(self.tar);
                self.increment();
                v
            }
            0x10..=0x1C => self.mem_read((self.tar & !0xF) | (reg as u32 - 0x10)),
            ap::CFG => 0,
            ap::BASE => ROM_TABLE | 0x3,
            ap::IDR => ap::IDR_VALUE,
            _ => 0,
        }
    }

    /// Write an AP register.
    pub fn ap_write(&mut self, a: u8, v: u32) {
        if self.sticky_error() || !self.powered() {
            return;
        }
        let (apsel, reg) = self.ap_addr(a);
        if apsel != 0 {
            return;
        }
        match reg {
            ap::CSW => {
                // Size, AddrInc (off / single; packed is not implemented and reads back off),
                // Mode, Prot and the debug-software enable are kept; DeviceEn reads 1.
                let mut c = v & (0x7 | 0x30 | 0xF00 | 0x7F00_0000 | 1 << 31);
                if (c >> 4) & 3 == 2 {
                    c &= !0x30;
                }
                if c & 7 > 2 {
                    c = (c & !7) | 2;
                }
                self.csw = c | ap::CSW_DEVICE_EN;
            }
            ap::TAR => self.tar = v,
            ap::DRW => {
                self.mem_write(self.tar, v);
                self.increment();
            }
            0x10..=0x1C => self.mem_write((self.tar & !0xF) | (reg as u32 - 0x10), v),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::stm32::{ChipOptions, Stm32Fault};
    use crate::stm32::part;

    /// Read an AP register by its full address: bank through SELECT, then A[3:2].
    fn ap_rd(d: &mut Dap, addr: u8) -> u32 {
        d.dp_write(dp::SELECT, (addr & 0xF0) as u32);
        d.ap_read(addr)
    }

    fn dap() -> Dap {
        let mut d = Dap::new(Stm32Chip::new(part::find("stm32f103c8").unwrap(), ChipOptions::new(false, Stm32Fault::None)));
        d.dp_write(dp::CTRL_STAT, dp::CDBGPWRUPREQ | dp::CSYSPWRUPREQ);
        while !d.powered() {
            d.dp_read(dp::CTRL_STAT);
        }
        d
    }

    #[test]
    fn power_up_handshake_takes_a_poll() {
        let mut d = Dap::new(Stm32Chip::new(part::find("stm32f103c8").unwrap(), ChipOptions::new(false, Stm32Fault::None)));
        d.dp_write(dp::CTRL_STAT, dp::CDBGPWRUPREQ | dp::CSYSPWRUPREQ);
        let first = d.dp_read(dp::CTRL_STAT);
        assert_eq!(first & dp::CDBGPWRUPACK, dp::CDBGPWRUPACK);
        assert!(d.powered());
        d.dp_write(dp::CTRL_STAT, 0);
        d.dp_read(dp::CTRL_STAT);
        assert!(!d.powered());
        assert_eq!(ap_rd(&mut d, ap::IDR), 0, "no AP access without debug power");
    }

    #[test]
    fn tar_autoincrements_within_4k_and_lanes() {
        let mut d = dap();
        d.ap_write(ap::CSW, 0x12); // word, single increment
        d.ap_write(ap::TAR, 0x2000_03FC);
        d.ap_write(ap::DRW, 0x2222_2222);
        assert_eq!(d.ap_read(ap::TAR), 0x2000_0400, "crosses 1 KiB");
        d.ap_write(ap::TAR, 0x2000_0FFC);
        d.ap_write(ap::DRW, 0x2222_2222);
        assert_eq!(d.ap_read(ap::TAR), 0x2000_0000, "wraps at the 4 KiB boundary");
        d.ap_write(ap::TAR, 0x2000_0000);
        d.ap_write(ap::DRW, 0x1111_1111);
        d.ap_write(ap::CSW, 0x11); // half-word
        d.ap_write(ap::TAR, 0x2000_0002);
        d.ap_write(ap::DRW, 0xBEEF_0000);
        d.ap_write(ap::CSW, 0x02);
        d.ap_write(ap::TAR, 0x2000_0000);
        assert_eq!(d.ap_read(ap::DRW), 0xBEEF_1111);
        d.ap_write(ap::CSW, 0x00); // byte
        d.ap_write(ap::TAR, 0x2000_0003);
        assert_eq!(d.ap_read(ap::DRW), 0xBE00_0000, "a byte read comes back in its lane");
        assert_eq!(ap_rd(&mut d, ap::BASE), 0xE00F_F003);
        assert_eq!(ap_rd(&mut d, ap::IDR), 0x2477_0011);
        d.dp_write(dp::SELECT, 0);
        d.ap_write(ap::CSW, 0x02);
        d.ap_write(ap::TAR, 0xE004_2008);
        assert_eq!(ap_rd(&mut d, ap::BD0), 0x2003_0410, "BD0 reads TAR & ~0xF");
    }

    #[test]
    fn bus_error_is_sticky_until_cleared() {
        let mut d = dap();
        d.ap_write(ap::CSW, 0x02);
        d.ap_write(ap::TAR, 0x3000_0000);
        d.ap_read(ap::DRW);
        assert!(d.sticky_error());
        assert_eq!(ap_rd(&mut d, ap::IDR), 0, "discarded while sticky");
        d.dp_write(dp::CTRL_STAT, dp::STICKYERR | dp::CDBGPWRUPREQ | dp::CSYSPWRUPREQ);
        assert!(!d.sticky_error());
        assert_eq!(ap_rd(&mut d, ap::IDR), 0x2477_0011);
    }
}
