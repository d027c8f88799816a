//! The AVR serial-programming (ISP) instruction set: four-byte SPI instructions, as in the
//! "Serial Programming Instruction Set" table of each datasheet and avrdude.conf's opcode strings.
//!
//! Byte 4 of the reply holds read data; byte 3 of the reply to Programming Enable echoes 0x53.

use crate::part::{FuseKind, Part};

pub type Cmd = [u8; 4];

/// `AC 53 00 00`: Programming Enable. The target echoes `0x53` in the third reply byte when in sync.
pub const PROG_ENABLE: Cmd = [0xAC, 0x53, 0x00, 0x00];
/// `AC 80 00 00`: Chip Erase (flash, EEPROM unless EESAVE, lock bits).
pub const CHIP_ERASE: Cmd = [0xAC, 0x80, 0x00, 0x00];
/// `F0 00 00 00`: Poll RDY/BSY; bit 0 of the reply's 4th byte is 1 while busy.
pub const POLL_RDY: Cmd = [0xF0, 0x00, 0x00, 0x00];

/// Index (0..=2) of the signature byte to read: `30 00 0i 00`.
pub fn read_signature(i: u8) -> Cmd {
    [0x30, 0x00, i & 0x03, 0x00]
}

/// `38 00 0i 00`: read calibration byte `i`.
pub fn read_calibration(i: u8) -> Cmd {
    [0x38, 0x00, i & 0x03, 0x00]
}

/// Read program memory byte at byte address `addr` (`20` low byte, `28` high byte of the word).
pub fn read_flash(addr: u32) -> Cmd {
    let word = addr >> 1;
    let op = if addr & 1 == 0 { 0x20 } else { 0x28 };
    [op, (word >> 8) as u8, word as u8, 0x00]
}

/// Load program memory page byte (`40` low / `48` high) at byte address `addr` within the page.
pub fn load_page(addr: u32, value: u8) -> Cmd {
    let word = addr >> 1;
    let op = if addr & 1 == 0 { 0x40 } else { 0x48 };
    [op, 0x00, word as u8, value]
}

/// `4C`: write the page buffer to the flash page holding byte address `addr`.
pub fn write_page(addr: u32) -> Cmd {
    let word = addr >> 1;
    [0x4C, (word >> 8) as u8, word as u8, 0x00]
}

/// `4D 00 ee 00`: Load Extended Address byte (bits 23..16 of the *word* address). Needed only
/// on parts above 128 KiB; harmless on the others.
pub fn load_extended_address(addr: u32) -> Cmd {
    [0x4D, 0x00, ((addr >> 1) >> 16) as u8, 0x00]
}

/// `A0`: read EEPROM byte.
pub fn read_eeprom(addr: u32) -> Cmd {
    [0xA0, (addr >> 8) as u8, addr as u8, 0x00]
}

/// `C0`: write EEPROM byte (byte mode).
pub fn write_eeprom(addr: u32, value: u8) -> Cmd {
    [0xC0, (addr >> 8) as u8, addr as u8, value]
}

/// `C1`: load EEPROM page buffer byte.
pub fn load_eeprom_page(offset: u32, value: u8) -> Cmd {
    [0xC1, 0x00, offset as u8, value]
}

/// `C2`: write the EEPROM page at `addr`.
pub fn write_eeprom_page(addr: u32) -> Cmd {
    [0xC2, (addr >> 8) as u8, addr as u8, 0x00]
}

/// Read fuse: low `50 00`, high `58 08`, extended `50 08`.
pub fn read_fuse(kind: FuseKind) -> Cmd {
    match kind {
        FuseKind::Low => [0x50, 0x00, 0x00, 0x00],
        FuseKind::High => [0x58, 0x08, 0x00, 0x00],
        FuseKind::Extended => [0x50, 0x08, 0x00, 0x00],
    }
}

/// Write fuse: low `AC A0`, high `AC A8`, extended `AC A4`.
pub fn write_fuse(kind: FuseKind, value: u8) -> Cmd {
    let op = match kind {
        FuseKind::Low => 0xA0,
        FuseKind::High => 0xA8,
        FuseKind::Extended => 0xA4,
    };
    [0xAC, op, 0x00, value]
}

/// `58 00`: read lock bits.
pub const READ_LOCK: Cmd = [0x58, 0x00, 0x00, 0x00];

/// `AC E0`: write lock bits. Unused bits are sent as 1 (unprogrammed), as avrdude does.
pub fn write_lock(part: &Part, value: u8) -> Cmd {
    [0xAC, 0xE0, 0x00, value | !part.lock_mask]
}

/// Whether a Programming Enable reply shows the target in sync.
pub fn prog_enable_ok(reply: &Cmd) -> bool {
    reply[2] == 0x53
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_addressing() {
        assert_eq!(read_flash(0x1234), [0x20, 0x09, 0x1A, 0]);
        assert_eq!(read_flash(0x1235), [0x28, 0x09, 0x1A, 0]);
        assert_eq!(write_page(0x1E000), [0x4C, 0xF0, 0x00, 0]);
        assert_eq!(load_page(0x7F, 0xAA), [0x48, 0, 0x3F, 0xAA]);
        assert_eq!(read_fuse(FuseKind::High), [0x58, 0x08, 0, 0]);
    }
}
