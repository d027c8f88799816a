//! The bootloader catalog: every row of the seed ISP flashing guide's tables, as data.
//!
//! A recipe names a row (`bootloader: { catalog: caterina-promicro16, file: bl/cat.hex }`) to
//! inherit its default fuses and to have its MCU and start address checked. Fuses, USB IDs and
//! MCUs come from the guide's tables (QMK docs, `isp_flashing_guide.md`); where a bootloader
//! lives follows from its high fuse (BOOTSZ) and the part's boot-section sizes in
//! [`crate::part`], checked against the real images in `tests/fixtures/`.

use std::fmt;

use crate::mcu::Mcu;
use crate::part::{self, FuseSet};

/// Bootloader family (what the host side talks to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Atmel/Microchip factory DFU (FLIP / dfu-programmer).
    AtmelDfu,
    /// QMK's LUFA-based DFU, same protocol and USB IDs as Atmel's.
    QmkDfu,
    /// Caterina (Arduino-style, LUFA CDC, avr109 protocol).
    Caterina,
    /// BootloadHID (PS2AVRGB boards).
    BootloadHid,
    /// USBaspLoader (V-USB, looks like a USBasp).
    UsbAspLoader,
    /// Optiboot (STK500v1 over a USB-serial bridge).
    Optiboot,
    /// STM32duino (Maple lineage, DFU via dfu-util) on STM32F103 Bluepills.
    Stm32duino,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::AtmelDfu => "Atmel DFU",
            Family::QmkDfu => "QMK DFU",
            Family::Caterina => "Caterina",
            Family::BootloadHid => "BootloadHID",
            Family::UsbAspLoader => "USBaspLoader",
            Family::Optiboot => "Optiboot",
            Family::Stm32duino => "STM32duino",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A USB vendor:product id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsbId {
    pub vid: u16,
    pub pid: u16,
}

impl fmt::Display for UsbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}:{:04X}", self.vid, self.pid)
    }
}

/// One catalog row.
#[derive(Debug)]
pub struct Bootloader {
    /// Catalog name, as recipes write it: `caterina-promicro16`.
    pub name: &'static str,
    pub family: Family,
    /// The catalog parts it runs on ([`crate::mcu::Mcu`] ids; the first is the one it was built for).
    pub mcus: &'static [&'static str],
    /// Human description (board / variant).
    pub description: &'static str,
    /// Default fuses from the guide (the extended byte is absent on parts without one).
    pub fuses: FuseSet,
    /// USB ID the bootloader enumerates with (`None`: behind a USB-serial bridge).
    pub usb: Option<UsbId>,
    /// Expected start address (the boot section its high fuse selects).
    pub start: u32,
    /// Expected size: the boot section its high fuse selects (AVR), the slot it owns (STM32).
    pub size: u32,
    /// Where it expects the application's vector table (AVR: 0x0000, the reset vector; STM32duino:
    /// 0x08002000, right after its 8 KiB slot).
    pub app_start: u32,
    /// The published hex also carries an Arduino sketch at 0x0000 (marked * in the guide).
    pub with_sketch: bool,
    /// Where the published hex lives (upstream file name).
    pub upstream: &'static str,
}

impl Bootloader {
    /// The catalog part this bootloader was built for.
    pub fn mcu(&self) -> Mcu {
        // Every row names catalog parts: checked by the `every_row_names_a_part…` test.
        Mcu::find(self.mcus[0]).unwrap_or(Mcu::Avr(&part::PARTS[0]))
    }

    /// Whether it runs on the part with catalog id `id`.
    pub fn runs_on(&self, id: &str) -> bool {
        self.mcus.contains(&id)
    }

    /// The parts it runs on, by datasheet name, for messages: `STM32F103C8 or STM32F103CB`.
    pub fn mcu_names(&self) -> String {
        self.mcus.iter().filter_map(|m| Mcu::find(m)).map(|m| m.name()).collect::<Vec<_>>().join(" or ")
    }
}

/// Look a bootloader up by catalog name (case-insensitive; `_` and `-` are interchangeable).
pub fn find(name: &str) -> Option<&'static Bootloader> {
    let norm = |s: &str| s.trim().to_ascii_lowercase().replace('_', "-");
    let n = norm(name);
    CATALOG.iter().find(|b| norm(b.name) == n)
}

/// All catalog names, for error messages.
pub fn names() -> Vec<&'static str> {
    CATALOG.iter().map(|b| b.name).collect()
}

const fn fs(low: u8, high: u8, extended: Option<u8>) -> FuseSet {
    FuseSet { low: Some(low), high: Some(high), extended }
}

const fn usb(vid: u16, pid: u16) -> Option<UsbId> {
    Some(UsbId { vid, pid })
}

macro_rules! row {
    ($name:expr, $fam:ident, $mcu:expr, $desc:expr, $fuses:expr, $usb:expr, $start:expr, $size:expr, $sketch:expr, $up:expr) => {
        Bootloader {
            name: $name,
            family: Family::$fam,
            mcus: &[$mcu],
            description: $desc,
            fuses: $fuses,
            usb: $usb,
            start: $start,
            size: $size,
            app_start: 0,
            with_sketch: $sketch,
            upstream: $up,
        }
    };
}

const QMK_UTIL: &str = "qmk/qmk_firmware util/";
const SPARKFUN: &str = "sparkfun/Arduino_Boards sparkfun/avr/bootloaders/caterina/";
const ADAFRUIT: &str = "adafruit/Caterina-Bootloader";
const ARDUINO: &str = "arduino/ArduinoCore-avr bootloaders/";

/// Every bootloader flashline knows. Data only: add a bootloader by adding a row.
pub static CATALOG: &[Bootloader] = &[
    // Atmel DFU (factory), both high-fuse variants: JTAG enabled / JTAG disabled.
    row!("atmel-dfu-atmega16u4", AtmelDfu, "atmega16u4", "factory DFU, JTAG enabled", fs(0x5E, 0x99, Some(0xF3)), usb(0x03EB, 0x2FF3), 0x3000, 0x1000, false, QMK_UTIL),
    row!("atmel-dfu-atmega16u4-nojtag", AtmelDfu, "atmega16u4", "factory DFU, JTAG disabled", fs(0x5E, 0xD9, Some(0xF3)), usb(0x03EB, 0x2FF3), 0x3000, 0x1000, false, QMK_UTIL),
    row!("atmel-dfu-atmega32u4", AtmelDfu, "atmega32u4", "factory DFU, JTAG enabled", fs(0x5E, 0x99, Some(0xF3)), usb(0x03EB, 0x2FF4), 0x7000, 0x1000, false, QMK_UTIL),
    row!("atmel-dfu-atmega32u4-nojtag", AtmelDfu, "atmega32u4", "factory DFU, JTAG disabled", fs(0x5E, 0xD9, Some(0xF3)), usb(0x03EB, 0x2FF4), 0x7000, 0x1000, false, QMK_UTIL),
    row!("atmel-dfu-at90usb64", AtmelDfu, "at90usb646", "factory DFU (QMK-patched for Windows 8+), JTAG enabled", fs(0x5E, 0x9B, Some(0xF3)), usb(0x03EB, 0x2FF9), 0xF000, 0x1000, false, QMK_UTIL),
    row!("atmel-dfu-at90usb64-nojtag", AtmelDfu, "at90usb646", "factory DFU (QMK-patched for Windows 8+), JTAG disabled", fs(0x5E, 0xDB, Some(0xF3)), usb(0x03EB, 0x2FF9), 0xF000, 0x1000, false, QMK_UTIL),
    row!("atmel-dfu-at90usb128", AtmelDfu, "at90usb1286", "factory DFU (QMK-patched for Windows 8+), JTAG enabled", fs(0x5E, 0x99, Some(0xF3)), usb(0x03EB, 0x2FFB), 0x1E000, 0x2000, false, QMK_UTIL),
    row!("atmel-dfu-at90usb128-nojtag", AtmelDfu, "at90usb1286", "factory DFU (QMK-patched for Windows 8+), JTAG disabled", fs(0x5E, 0xD9, Some(0xF3)), usb(0x03EB, 0x2FFB), 0x1E000, 0x2000, false, QMK_UTIL),
    // QMK DFU (LUFA DFU built by QMK): Atmel DFU's fuses (JTAG disabled) and USB IDs.
    row!("qmk-dfu-atmega16u4", QmkDfu, "atmega16u4", "QMK DFU (LUFA)", fs(0x5E, 0xD9, Some(0xF3)), usb(0x03EB, 0x2FF3), 0x3000, 0x1000, false, "qmk/qmk_firmware make KB:KM:bootloader"),
    row!("qmk-dfu-atmega32u4", QmkDfu, "atmega32u4", "QMK DFU (LUFA)", fs(0x5E, 0xD9, Some(0xF3)), usb(0x03EB, 0x2FF4), 0x7000, 0x1000, false, "qmk/qmk_firmware make KB:KM:bootloader"),
    row!("qmk-dfu-at90usb64", QmkDfu, "at90usb646", "QMK DFU (LUFA)", fs(0x5E, 0xDB, Some(0xF3)), usb(0x03EB, 0x2FF9), 0xF000, 0x1000, false, "qmk/qmk_firmware make KB:KM:bootloader"),
    row!("qmk-dfu-at90usb128", QmkDfu, "at90usb1286", "QMK DFU (LUFA)", fs(0x5E, 0xD9, Some(0xF3)), usb(0x03EB, 0x2FFB), 0x1E000, 0x2000, false, "qmk/qmk_firmware make KB:KM:bootloader"),
    // Caterina variants (ATmega32U4 only). H 0xD8/0xD0: BOOTSZ=00 (4 KiB at 0x7000), BOOTRST on.
    row!("caterina-promicro8", Caterina, "atmega32u4", "SparkFun Pro Micro 3V3/8MHz", fs(0xFF, 0xD8, Some(0xFE)), usb(0x1B4F, 0x9203), 0x7000, 0x1000, false, SPARKFUN),
    row!("caterina-promicro16", Caterina, "atmega32u4", "SparkFun Pro Micro 5V/16MHz", fs(0xFF, 0xD8, Some(0xFB)), usb(0x1B4F, 0x9205), 0x7000, 0x1000, false, SPARKFUN),
    row!("caterina-lilypadusb", Caterina, "atmega32u4", "SparkFun LilyPadUSB (and some Pro Micro clones)", fs(0xFF, 0xD8, Some(0xFE)), usb(0x1B4F, 0x9207), 0x7000, 0x1000, false, SPARKFUN),
    row!("caterina-a-star", Caterina, "atmega32u4", "Pololu A-Star 32U4", fs(0xFF, 0xD0, Some(0xF8)), usb(0x1FFB, 0x0101), 0x7000, 0x1000, true, "pololu/a-star bootloaders/caterina/"),
    row!("caterina-feather32u4", Caterina, "atmega32u4", "Adafruit Feather 32U4", fs(0xFF, 0xD8, Some(0xFB)), usb(0x239A, 0x000C), 0x7000, 0x1000, false, ADAFRUIT),
    row!("caterina-itsybitsy-3v", Caterina, "atmega32u4", "Adafruit ItsyBitsy 32U4 3V3/8MHz", fs(0xFF, 0xD8, Some(0xFB)), usb(0x239A, 0x000D), 0x7000, 0x1000, true, ADAFRUIT),
    row!("caterina-itsybitsy-5v", Caterina, "atmega32u4", "Adafruit ItsyBitsy 32U4 5V/16MHz", fs(0xFF, 0xD8, Some(0xFB)), usb(0x239A, 0x000E), 0x7000, 0x1000, false, ADAFRUIT),
    row!("caterina-leonardo", Caterina, "atmega32u4", "Arduino Leonardo", fs(0xFF, 0xD8, Some(0xFB)), usb(0x2341, 0x0036), 0x7000, 0x1000, true, ARDUINO),
    row!("caterina-micro", Caterina, "atmega32u4", "Arduino Micro", fs(0xFF, 0xD8, Some(0xFB)), usb(0x2341, 0x0037), 0x7000, 0x1000, true, ARDUINO),
    // BootloadHID (PS2AVRGB). H 0xD0 on the 32A: BOOTSZ=00, 4 KiB at 0x7000.
    row!("bootloadhid-atmega32a", BootloadHid, "atmega32a", "BootloadHID (PS2AVRGB)", fs(0x0F, 0xD0, None), usb(0x16C0, 0x05DF), 0x7000, 0x1000, false, QMK_UTIL),
    // USBaspLoader, per MCU.
    row!("usbasploader-atmega32a", UsbAspLoader, "atmega32a", "USBaspLoader (coseyfannitutti)", fs(0x1F, 0xC0, None), usb(0x16C0, 0x05DC), 0x7000, 0x1000, false, "coseyfannitutti/discipline doc/bootloader"),
    row!("usbasploader-atmega328p", UsbAspLoader, "atmega328p", "USBaspLoader (coseyfannitutti)", fs(0xD7, 0xD0, Some(0x04)), usb(0x16C0, 0x05DC), 0x7000, 0x1000, false, "coseyfannitutti/discipad doc/bootloader"),
    // Not in the guide: Optiboot, the Arduino Uno's bootloader (fixture in tests/fixtures).
    row!("optiboot-atmega328p", Optiboot, "atmega328p", "Optiboot (Arduino Uno), 16 MHz crystal", fs(0xFF, 0xDE, Some(0x05)), None, 0x7E00, 0x200, false, ARDUINO),
    // STM32duino (the seed guide's last section): generic_boot20_pc13.bin, LED on PC13, 8 KiB
    // slot at the start of flash, the application linked for 0x08002000 (QMK's
    // BOOTLOADER = stm32duino), DFU as 1EAF:0003. No fuses: an STM32 has option bytes instead.
    Bootloader {
        name: "stm32duino-generic-pc13",
        family: Family::Stm32duino,
        mcus: &["stm32f103c8", "stm32f103cb"],
        description: "STM32duino generic_boot20_pc13 (Bluepill, LED on PC13)",
        fuses: FuseSet { low: None, high: None, extended: None },
        usb: usb(0x1EAF, 0x0003),
        start: 0x0800_0000,
        size: 0x2000,
        app_start: 0x0800_2000,
        with_sketch: false,
        upstream: "rogerclarkmelbourne/STM32duino-bootloader bootloader_only_binaries/",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_names_a_part_and_sits_in_its_boot_section() {
        for b in CATALOG {
            for m in b.mcus {
                let mcu = Mcu::find(m).unwrap_or_else(|| panic!("{}: unknown mcu {m}", b.name));
                assert_eq!(mcu.family(), b.mcu().family(), "{}", b.name);
                let flash = mcu.flash();
                assert!(flash.contains(&b.start) && b.start + b.size <= flash.end, "{}", b.name);
            }
            let Mcu::Avr(p) = b.mcu() else {
                // STM32: no boot section; the application follows the bootloader's slot.
                assert_eq!(b.app_start, b.start + b.size, "{}", b.name);
                assert!(b.fuses.is_empty(), "{}", b.name);
                continue;
            };
            assert_eq!(b.app_start, 0, "{}", b.name);
            let high = b.fuses.high.unwrap();
            assert_eq!(p.boot_start(high), b.start, "{}", b.name);
            assert_eq!(p.boot_size(high), b.size, "{}", b.name);
            assert_eq!(b.fuses.extended.is_some(), p.fuse_masks.extended.is_some(), "{}", b.name);
        }
    }

    #[test]
    fn names_are_unique_and_findable() {
        for b in CATALOG {
            assert_eq!(CATALOG.iter().filter(|c| c.name == b.name).count(), 1);
            assert!(std::ptr::eq(find(&b.name.to_uppercase().replace('-', "_")).unwrap(), b));
        }
        assert!(find("caterina-nope").is_none());
    }
}
