//! STK500 version 1 over serial: the `avrisp`/`stk500v1` ISP programmers (ArduinoISP, the QMK
//! Pro Micro and Teensy 2.0 ISP firmwares) and `arduino` (Optiboot-style bootloaders).
//!
//! Frames: the host sends a command byte, its arguments and `CRC_EOP` (0x20); the programmer
//! answers `INSYNC` (0x14), any data, then `OK` (0x10) — or `NOSYNC` (0x15) when the frame did
//! not end in `CRC_EOP`. Addresses sent with `LOAD_ADDRESS` are *word* addresses, little endian.

/// Command, response and parameter codes of the STK500 v1 protocol (Atmel AVR061).
pub mod wire {
    pub const GET_SYNC: u8 = 0x30;
    pub const GET_SIGN_ON: u8 = 0x31;
    pub const SET_PARAMETER: u8 = 0x40;
    pub const GET_PARAMETER: u8 = 0x41;
    pub const SET_DEVICE: u8 = 0x42;
    pub const SET_DEVICE_EXT: u8 = 0x45;
    pub const ENTER_PROGMODE: u8 = 0x50;
    pub const LEAVE_PROGMODE: u8 = 0x51;
    pub const CHIP_ERASE: u8 = 0x52;
    pub const LOAD_ADDRESS: u8 = 0x55;
    pub const UNIVERSAL: u8 = 0x56;
    pub const PROG_FLASH: u8 = 0x60;
    pub const PROG_DATA: u8 = 0x61;
    pub const PROG_PAGE: u8 = 0x64;
    pub const READ_PAGE: u8 = 0x74;
    pub const READ_SIGN: u8 = 0x75;

    pub const CRC_EOP: u8 = 0x20;

    pub const OK: u8 = 0x10;
    pub const FAILED: u8 = 0x11;
    pub const UNKNOWN: u8 = 0x12;
    pub const NODEVICE: u8 = 0x13;
    pub const INSYNC: u8 = 0x14;
    pub const NOSYNC: u8 = 0x15;

    pub const PARM_HW_VER: u8 = 0x80;
    pub const PARM_SW_MAJOR: u8 = 0x81;
    pub const PARM_SW_MINOR: u8 = 0x82;
    pub const PARM_PROGMODE: u8 = 0x93;
    pub const PARM_TOPCARD_DETECT: u8 = 0x98;

    /// Memory type byte of PROG_PAGE / READ_PAGE.
    pub const MEM_FLASH: u8 = b'F';
    pub const MEM_EEPROM: u8 = b'E';

    /// Largest PROG_PAGE / READ_PAGE block: the 16-bit length field is there, but the
    /// firmwares buffer at most 256 bytes (ArduinoISP `buff[256]`, Optiboot's page buffer).
    pub const MAX_BLOCK: usize = 256;
}
