//! The part catalog: AVR microcontrollers as data.
//!
//! Facts come from the Microchip datasheets (fuse bit tables, boot-section sizes, clock-select
//! tables) and from avrdude 7.1's `avrdude.conf` (signatures, page sizes, write delays).
//! Every fuse bit follows AVR convention: `0` = programmed (feature on), `1` = unprogrammed.

use std::fmt;

/// One of the fuse bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FuseKind {
    Low,
    High,
    Extended,
}

impl FuseKind {
    pub const ALL: [FuseKind; 3] = [FuseKind::Low, FuseKind::High, FuseKind::Extended];
    pub fn name(self) -> &'static str {
        match self {
            FuseKind::Low => "low",
            FuseKind::High => "high",
            FuseKind::Extended => "extended",
        }
    }
    /// avrdude's memory name for this fuse.
    pub fn avrdude_name(self) -> &'static str {
        match self {
            FuseKind::Low => "lfuse",
            FuseKind::High => "hfuse",
            FuseKind::Extended => "efuse",
        }
    }
}

impl fmt::Display for FuseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A named field inside a fuse byte.
#[derive(Debug, Clone, Copy)]
pub struct FuseField {
    pub name: &'static str,
    pub fuse: FuseKind,
    /// Bits of the fuse byte that make up this field.
    pub mask: u8,
    pub description: &'static str,
}

/// Coarse class of the clock source selected by CKSEL, for safety checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockClass {
    /// External crystal or ceramic resonator (low-power or full-swing oscillator).
    Crystal,
    /// 32.768 kHz watch crystal oscillator.
    LowFrequencyCrystal,
    /// Calibrated internal RC oscillator.
    InternalRc,
    /// 128 kHz internal oscillator.
    Internal128k,
    /// External RC oscillator.
    ExternalRc,
    /// External clock on XTAL1: the chip stops answering ISP if nothing drives that pin.
    ExternalClock,
    /// Reserved CKSEL code: the datasheet gives it no meaning.
    Reserved,
}

impl ClockClass {
    pub fn name(self) -> &'static str {
        match self {
            ClockClass::Crystal => "crystal",
            ClockClass::LowFrequencyCrystal => "low-frequency-crystal",
            ClockClass::InternalRc => "internal-rc",
            ClockClass::Internal128k => "internal-128k",
            ClockClass::ExternalRc => "external-rc",
            ClockClass::ExternalClock => "external-clock",
            ClockClass::Reserved => "reserved",
        }
    }
}

impl fmt::Display for ClockClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A range of CKSEL3..0 codes (inclusive) and what they select.
#[derive(Debug, Clone, Copy)]
pub struct ClockRange {
    pub lo: u8,
    pub hi: u8,
    pub class: ClockClass,
    pub description: &'static str,
}

/// Write and erase delays, in microseconds: the datasheet's serial-programming wait delays
/// (tWD_*), which avrdude.conf's `min_write_delay` / `chip_erase_delay` mostly repeat.
#[derive(Debug, Clone, Copy)]
pub struct Delays {
    pub flash_page_us: u32,
    pub eeprom_us: u32,
    pub chip_erase_us: u32,
    pub fuse_us: u32,
}

/// Which bits of each fuse byte exist on the silicon. Bits that do not exist read back as
/// anything (the seed guide's "top four bits of the efuse" warning), so verification masks them.
#[derive(Debug, Clone, Copy)]
pub struct FuseMasks {
    pub low: u8,
    pub high: u8,
    /// `None` when the part has no extended fuse byte.
    pub extended: Option<u8>,
}

impl FuseMasks {
    pub fn get(&self, kind: FuseKind) -> Option<u8> {
        match kind {
            FuseKind::Low => Some(self.low),
            FuseKind::High => Some(self.high),
            FuseKind::Extended => self.extended,
        }
    }
}

/// A set of fuse values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct FuseSet {
    pub low: Option<u8>,
    pub high: Option<u8>,
    pub extended: Option<u8>,
}

impl FuseSet {
    pub fn get(&self, kind: FuseKind) -> Option<u8> {
        match kind {
            FuseKind::Low => self.low,
            FuseKind::High => self.high,
            FuseKind::Extended => self.extended,
        }
    }
    pub fn set(&mut self, kind: FuseKind, v: u8) {
        match kind {
            FuseKind::Low => self.low = Some(v),
            FuseKind::High => self.high = Some(v),
            FuseKind::Extended => self.extended = Some(v),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.low.is_none() && self.high.is_none() && self.extended.is_none()
    }
}

impl fmt::Display for FuseSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for k in FuseKind::ALL {
            if let Some(v) = self.get(k) {
                if !first {
                    f.write_str(" ")?;
                }
                first = false;
                let c = match k {
                    FuseKind::Low => 'L',
                    FuseKind::High => 'H',
                    FuseKind::Extended => 'E',
                };
                write!(f, "{c}:{v:02X}")?;
            }
        }
        if first {
            f.write_str("-")?;
        }
        Ok(())
    }
}

/// An AVR part.
#[derive(Debug)]
pub struct Part {
    /// Catalog id, lower case, as recipes write it: `atmega32u4`.
    pub id: &'static str,
    /// Datasheet name: `ATmega32U4`.
    pub name: &'static str,
    /// Other accepted names (avrdude's `-p` id first).
    pub aliases: &'static [&'static str],
    pub signature: [u8; 3],
    pub flash_size: u32,
    /// Flash page size in bytes.
    pub flash_page_size: u32,
    pub eeprom_size: u32,
    pub eeprom_page_size: u32,
    /// Boot section size in bytes, indexed by the BOOTSZ1..0 value (0b00 = largest).
    pub boot_sizes: [u32; 4],
    pub fuse_masks: FuseMasks,
    pub fuse_fields: &'static [FuseField],
    /// Lock bits that exist (BLB12 BLB11 BLB02 BLB01 LB2 LB1 on all catalog parts).
    pub lock_mask: u8,
    pub clock_table: &'static [ClockRange],
    /// Fuse values as the chip leaves the factory (datasheet defaults).
    pub factory_fuses: FuseSet,
    pub calibration_bytes: u8,
    pub delays: Delays,
    /// STK500 device code (avrdude.conf `stk500_devcode`; the USB parts have none and borrow 0xB2).
    pub stk500_devcode: u8,
}

impl Part {
    /// avrdude's `-p` id for this part.
    pub fn avrdude_id(&self) -> &'static str {
        self.aliases[0]
    }

    pub fn signature_u32(&self) -> u32 {
        u32::from_be_bytes([0, self.signature[0], self.signature[1], self.signature[2]])
    }

    pub fn flash_pages(&self) -> u32 {
        self.flash_size / self.flash_page_size
    }

    /// True when flash byte addresses exceed 16 bits (AT90USB128x). Word addresses still fit in
    /// 16 bits for every catalog part, but protocols that count in bytes (USBtinyISP, USBasp's
    /// address field) need care, and the ISP `4D` extended-address instruction is not needed
    /// below 128 KiW.
    pub fn above_64k(&self) -> bool {
        self.flash_size > 0x10000
    }

    /// BOOTSZ value (0..=3) in a high-fuse byte.
    pub fn bootsz(high_fuse: u8) -> u8 {
        (high_fuse >> 1) & 0x03
    }

    /// BOOTRST programmed (reset vector points at the boot section).
    pub fn bootrst(high_fuse: u8) -> bool {
        high_fuse & 0x01 == 0
    }

    /// Byte size of the boot section selected by `high_fuse`.
    pub fn boot_size(&self, high_fuse: u8) -> u32 {
        self.boot_sizes[Self::bootsz(high_fuse) as usize]
    }

    /// Byte address where the boot section selected by `high_fuse` starts.
    pub fn boot_start(&self, high_fuse: u8) -> u32 {
        self.flash_size - self.boot_size(high_fuse)
    }

    /// The clock source selected by a low-fuse byte (CKSEL3..0 = bits 3..0 on every catalog part).
    pub fn clock_source(&self, low_fuse: u8) -> &'static ClockRange {
        let cksel = low_fuse & 0x0F;
        self.clock_table
            .iter()
            .find(|r| (r.lo..=r.hi).contains(&cksel))
            .expect("clock tables cover all 16 CKSEL codes")
    }

    /// Fuse field by name (case-insensitive).
    pub fn field(&self, name: &str) -> Option<&'static FuseField> {
        self.fuse_fields.iter().find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// Whether the part has an RSTDISBL fuse (only then can ISP be disabled by it).
    pub fn has_rstdisbl(&self) -> bool {
        self.field("RSTDISBL").is_some()
    }
}

/// Look a part up by catalog id, datasheet name or avrdude id (case-insensitive).
pub fn find(name: &str) -> Option<&'static Part> {
    let n = name.trim();
    PARTS.iter().find(|p| {
        p.id.eq_ignore_ascii_case(n)
            || p.name.eq_ignore_ascii_case(n)
            || p.aliases.iter().any(|a| a.eq_ignore_ascii_case(n))
    })
}

/// Find a part by its device signature.
pub fn by_signature(sig: [u8; 3]) -> Option<&'static Part> {
    PARTS.iter().find(|p| p.signature == sig)
}

/// All catalog ids, for error messages.
pub fn ids() -> Vec<&'static str> {
    PARTS.iter().map(|p| p.id).collect()
}

// ---------------------------------------------------------------------------------------------
// Fuse field tables
// ---------------------------------------------------------------------------------------------

const fn field(name: &'static str, fuse: FuseKind, mask: u8, description: &'static str) -> FuseField {
    FuseField { name, fuse, mask, description }
}

// Fields that several parts share, bit for bit.
const CKDIV8: FuseField = field("CKDIV8", FuseKind::Low, 0x80, "divide clock by 8");
const CKOUT: FuseField = field("CKOUT", FuseKind::Low, 0x40, "clock output on CLKO pin");
const SUT: FuseField = field("SUT", FuseKind::Low, 0x30, "start-up time");
const CKSEL: FuseField = field("CKSEL", FuseKind::Low, 0x0F, "clock source select");
const OCDEN: FuseField = field("OCDEN", FuseKind::High, 0x80, "on-chip debug enabled");
const JTAGEN: FuseField = field("JTAGEN", FuseKind::High, 0x40, "JTAG interface enabled");
const SPIEN: FuseField = field("SPIEN", FuseKind::High, 0x20, "serial (ISP) programming enabled");
const WDTON: FuseField = field("WDTON", FuseKind::High, 0x10, "watchdog always on");
const EESAVE: FuseField = field("EESAVE", FuseKind::High, 0x08, "EEPROM preserved through chip erase");
const BOOTSZ: FuseField = field("BOOTSZ", FuseKind::High, 0x06, "boot section size");
const BOOTRST: FuseField = field("BOOTRST", FuseKind::High, 0x01, "reset vector at boot section");

/// ATmega16U4/32U4 and AT90USB646/647/1286/1287 (datasheet tables "Fuse Low/High/Extended Byte").
static USB_AVR_FIELDS: [FuseField; 13] = [
    CKDIV8,
    CKOUT,
    SUT,
    CKSEL,
    OCDEN,
    JTAGEN,
    SPIEN,
    WDTON,
    EESAVE,
    BOOTSZ,
    BOOTRST,
    field("HWBE", FuseKind::Extended, 0x08, "hardware boot (HWB pin) enabled"),
    field("BODLEVEL", FuseKind::Extended, 0x07, "brown-out detection level"),
];

/// ATmega328P.
static M328P_FIELDS: [FuseField; 12] = [
    CKDIV8,
    CKOUT,
    SUT,
    CKSEL,
    field("RSTDISBL", FuseKind::High, 0x80, "external reset disabled (ISP impossible)"),
    field("DWEN", FuseKind::High, 0x40, "debugWIRE enabled (ISP impossible)"),
    SPIEN,
    WDTON,
    EESAVE,
    BOOTSZ,
    BOOTRST,
    field("BODLEVEL", FuseKind::Extended, 0x07, "brown-out detection level"),
];

/// ATmega32A.
static M32A_FIELDS: [FuseField; 11] = [
    field("BODLEVEL", FuseKind::Low, 0x80, "brown-out level (programmed = 4.0 V, unprogrammed = 2.7 V)"),
    field("BODEN", FuseKind::Low, 0x40, "brown-out detection enabled"),
    SUT,
    CKSEL,
    OCDEN,
    JTAGEN,
    SPIEN,
    field("CKOPT", FuseKind::High, 0x10, "oscillator options (full rail-to-rail swing)"),
    EESAVE,
    BOOTSZ,
    BOOTRST,
];

// ---------------------------------------------------------------------------------------------
// Clock-select tables (CKSEL3..0)
// ---------------------------------------------------------------------------------------------

/// ATmega16U4/32U4, AT90USB646/647/1286/1287: datasheet "Device Clocking Options Select".
static USB_AVR_CLOCKS: [ClockRange; 6] = [
    ClockRange { lo: 0x8, hi: 0xF, class: ClockClass::Crystal, description: "low power crystal oscillator" },
    ClockRange { lo: 0x4, hi: 0x7, class: ClockClass::Reserved, description: "reserved" },
    ClockRange { lo: 0x3, hi: 0x3, class: ClockClass::Reserved, description: "reserved" },
    ClockRange { lo: 0x2, hi: 0x2, class: ClockClass::InternalRc, description: "calibrated internal RC oscillator (8 MHz)" },
    ClockRange { lo: 0x1, hi: 0x1, class: ClockClass::Reserved, description: "reserved" },
    ClockRange { lo: 0x0, hi: 0x0, class: ClockClass::ExternalClock, description: "external clock on XTAL1" },
];

/// ATmega328P.
static M328P_CLOCKS: [ClockRange; 7] = [
    ClockRange { lo: 0x8, hi: 0xF, class: ClockClass::Crystal, description: "low power crystal oscillator" },
    ClockRange { lo: 0x6, hi: 0x7, class: ClockClass::Crystal, description: "full swing crystal oscillator" },
    ClockRange { lo: 0x4, hi: 0x5, class: ClockClass::LowFrequencyCrystal, description: "low frequency crystal oscillator" },
    ClockRange { lo: 0x3, hi: 0x3, class: ClockClass::Internal128k, description: "internal 128 kHz RC oscillator" },
    ClockRange { lo: 0x2, hi: 0x2, class: ClockClass::InternalRc, description: "calibrated internal RC oscillator (8 MHz)" },
    ClockRange { lo: 0x1, hi: 0x1, class: ClockClass::Reserved, description: "reserved" },
    ClockRange { lo: 0x0, hi: 0x0, class: ClockClass::ExternalClock, description: "external clock on XTAL1" },
];

/// ATmega32A.
static M32A_CLOCKS: [ClockRange; 5] = [
    ClockRange { lo: 0xA, hi: 0xF, class: ClockClass::Crystal, description: "external crystal/ceramic resonator" },
    ClockRange { lo: 0x9, hi: 0x9, class: ClockClass::LowFrequencyCrystal, description: "external low-frequency crystal" },
    ClockRange { lo: 0x5, hi: 0x8, class: ClockClass::ExternalRc, description: "external RC oscillator" },
    ClockRange { lo: 0x1, hi: 0x4, class: ClockClass::InternalRc, description: "calibrated internal RC oscillator (1/2/4/8 MHz)" },
    ClockRange { lo: 0x0, hi: 0x0, class: ClockClass::ExternalClock, description: "external clock on XTAL1" },
];

// ---------------------------------------------------------------------------------------------
// The catalog
// ---------------------------------------------------------------------------------------------

/// The USB AVRs' serial-programming wait delays: the datasheets' "Minimum Wait Delay Before
/// Writing the Next Flash or EEPROM Location" table (tWD_FUSE 4.5 ms, tWD_FLASH 4.5 ms,
/// tWD_EEPROM 9.0 ms, tWD_ERASE 9.0 ms). avrdude.conf gives fuses 9 ms (its generic value);
/// the simulated target follows the datasheet.
const USB_DELAYS: Delays = Delays { flash_page_us: 4500, eeprom_us: 9000, chip_erase_us: 9000, fuse_us: 4500 };

/// Every part flashline knows. Data only: add a part by adding a row.
pub static PARTS: &[Part] = &[
    Part {
        id: "atmega16u4",
        name: "ATmega16U4",
        aliases: &["m16u4"],
        signature: [0x1E, 0x94, 0x88],
        flash_size: 0x4000,
        flash_page_size: 128,
        eeprom_size: 512,
        eeprom_page_size: 4,
        boot_sizes: [4096, 2048, 1024, 512],
        fuse_masks: FuseMasks { low: 0xFF, high: 0xFF, extended: Some(0x0F) },
        fuse_fields: &USB_AVR_FIELDS,
        lock_mask: 0x3F,
        clock_table: &USB_AVR_CLOCKS,
        factory_fuses: FuseSet { low: Some(0x5E), high: Some(0x99), extended: Some(0xF3) },
        calibration_bytes: 1,
        delays: USB_DELAYS,
        stk500_devcode: 0xB2,
    },
    Part {
        id: "atmega32u4",
        name: "ATmega32U4",
        aliases: &["m32u4"],
        signature: [0x1E, 0x95, 0x87],
        flash_size: 0x8000,
        flash_page_size: 128,
        eeprom_size: 1024,
        eeprom_page_size: 4,
        boot_sizes: [4096, 2048, 1024, 512],
        fuse_masks: FuseMasks { low: 0xFF, high: 0xFF, extended: Some(0x0F) },
        fuse_fields: &USB_AVR_FIELDS,
        lock_mask: 0x3F,
        clock_table: &USB_AVR_CLOCKS,
        factory_fuses: FuseSet { low: Some(0x5E), high: Some(0x99), extended: Some(0xF3) },
        calibration_bytes: 1,
        delays: USB_DELAYS,
        stk500_devcode: 0xB2,
    },
    Part {
        id: "at90usb646",
        name: "AT90USB646",
        aliases: &["usb646", "at90usb647", "usb647", "at90usb64"],
        signature: [0x1E, 0x96, 0x82],
        flash_size: 0x10000,
        flash_page_size: 256,
        eeprom_size: 2048,
        eeprom_page_size: 8,
        boot_sizes: [8192, 4096, 2048, 1024],
        fuse_masks: FuseMasks { low: 0xFF, high: 0xFF, extended: Some(0x0F) },
        fuse_fields: &USB_AVR_FIELDS,
        lock_mask: 0x3F,
        clock_table: &USB_AVR_CLOCKS,
        factory_fuses: FuseSet { low: Some(0x5E), high: Some(0x9B), extended: Some(0xF3) },
        calibration_bytes: 1,
        delays: USB_DELAYS,
        stk500_devcode: 0xB2,
    },
    Part {
        id: "at90usb1286",
        name: "AT90USB1286",
        aliases: &["usb1286", "at90usb1287", "usb1287", "at90usb128"],
        signature: [0x1E, 0x97, 0x82],
        flash_size: 0x20000,
        flash_page_size: 256,
        eeprom_size: 4096,
        eeprom_page_size: 8,
        boot_sizes: [8192, 4096, 2048, 1024],
        fuse_masks: FuseMasks { low: 0xFF, high: 0xFF, extended: Some(0x0F) },
        fuse_fields: &USB_AVR_FIELDS,
        lock_mask: 0x3F,
        clock_table: &USB_AVR_CLOCKS,
        factory_fuses: FuseSet { low: Some(0x5E), high: Some(0x99), extended: Some(0xF3) },
        calibration_bytes: 1,
        delays: USB_DELAYS,
        stk500_devcode: 0xB2,
    },
    Part {
        id: "atmega32a",
        name: "ATmega32A",
        aliases: &["m32a", "atmega32", "m32"],
        signature: [0x1E, 0x95, 0x02],
        flash_size: 0x8000,
        flash_page_size: 128,
        eeprom_size: 1024,
        eeprom_page_size: 4,
        boot_sizes: [4096, 2048, 1024, 512],
        fuse_masks: FuseMasks { low: 0xFF, high: 0xFF, extended: None },
        fuse_fields: &M32A_FIELDS,
        lock_mask: 0x3F,
        clock_table: &M32A_CLOCKS,
        factory_fuses: FuseSet { low: Some(0xE1), high: Some(0x99), extended: None },
        calibration_bytes: 4,
        delays: Delays { flash_page_us: 4500, eeprom_us: 9000, chip_erase_us: 9000, fuse_us: 2000 },
        stk500_devcode: 0x82,
    },
    Part {
        id: "atmega328p",
        name: "ATmega328P",
        aliases: &["m328p"],
        signature: [0x1E, 0x95, 0x0F],
        flash_size: 0x8000,
        flash_page_size: 128,
        eeprom_size: 1024,
        eeprom_page_size: 4,
        boot_sizes: [4096, 2048, 1024, 512],
        fuse_masks: FuseMasks { low: 0xFF, high: 0xFF, extended: Some(0x07) },
        fuse_fields: &M328P_FIELDS,
        lock_mask: 0x3F,
        clock_table: &M328P_CLOCKS,
        factory_fuses: FuseSet { low: Some(0x62), high: Some(0xD9), extended: Some(0xFF) },
        calibration_bytes: 1,
        delays: Delays { flash_page_us: 4500, eeprom_us: 3600, chip_erase_us: 9000, fuse_us: 4500 },
        stk500_devcode: 0x86,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_by_any_name() {
        assert_eq!(find("m32u4").unwrap().id, "atmega32u4");
        assert_eq!(find("ATmega32U4").unwrap().id, "atmega32u4");
        assert_eq!(find("at90usb1287").unwrap().id, "at90usb1286");
        assert!(find("atmega2560").is_none());
    }

    #[test]
    fn boot_sections_match_the_seed_bootloaders() {
        let m32u4 = find("atmega32u4").unwrap();
        // Atmel DFU: H 0xD9 -> BOOTSZ=00 -> 4 KiB at 0x7000.
        assert_eq!(m32u4.boot_start(0xD9), 0x7000);
        assert!(!Part::bootrst(0xD9));
        // Caterina: H 0xD8 -> BOOTRST programmed.
        assert!(Part::bootrst(0xD8));
        let usb1286 = find("at90usb1286").unwrap();
        assert_eq!(usb1286.boot_start(0x99), 0x1E000);
        let m328p = find("atmega328p").unwrap();
        // Optiboot: H 0xDE -> BOOTSZ=11 -> 512 B at 0x7E00.
        assert_eq!(m328p.boot_start(0xDE), 0x7E00);
    }

    #[test]
    fn clock_tables_cover_every_code() {
        for p in PARTS {
            for c in 0..16u8 {
                let _ = p.clock_source(c);
            }
            for f in p.fuse_fields {
                assert_eq!(f.mask & !p.fuse_masks.get(f.fuse).unwrap(), 0, "{} {}", p.id, f.name);
            }
        }
        assert_eq!(find("atmega32u4").unwrap().clock_source(0x5E).class, ClockClass::Crystal);
        assert_eq!(find("atmega32a").unwrap().clock_source(0x0F).class, ClockClass::Crystal);
    }
}
