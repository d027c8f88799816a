//! Fuse decoding (each field in words) and the safety check that refuses fuse values known to
//! brick boards on a production line (seed guide: "Setting incorrect fuse values, in particular
//! the clock-related bits, may render the MCU practically unrecoverable").

use std::fmt;

use crate::part::{ClockClass, FuseField, FuseKind, FuseSet, Part};

/// One decoded fuse field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedField {
    pub name: &'static str,
    pub fuse: FuseKind,
    /// Bits of the fuse byte holding this field.
    pub mask: u8,
    /// The field's bits, shifted down (`BOOTSZ` of 0xD9 is 0b00).
    pub value: u8,
    /// Number of bits in the field.
    pub width: u8,
    /// What the value means, in words.
    pub meaning: String,
}

impl DecodedField {
    /// The field value as binary digits (`00`, `1`, `1110`).
    pub fn bits(&self) -> String {
        format!("{:0w$b}", self.value, w = self.width as usize)
    }
}

impl fmt::Display for DecodedField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<8} {:<9} = {:<4} {}", self.fuse.name(), self.name, self.bits(), self.meaning)
    }
}

/// Decode every field of the fuse bytes present in `fuses`, in the part's field order.
pub fn decode(part: &Part, fuses: FuseSet) -> Vec<DecodedField> {
    part.fuse_fields
        .iter()
        .filter_map(|field| {
            let byte = fuses.get(field.fuse)?;
            let shift = field.mask.trailing_zeros();
            let value = (byte & field.mask) >> shift;
            let width = field.mask.count_ones() as u8;
            Some(DecodedField {
                name: field.name,
                fuse: field.fuse,
                mask: field.mask,
                value,
                width,
                meaning: meaning(part, field, value, byte),
            })
        })
        .collect()
}

fn meaning(part: &Part, field: &FuseField, value: u8, byte: u8) -> String {
    let programmed = value == 0;
    match field.name {
        "CKSEL" => {
            let r = part.clock_source(byte);
            format!("{} ({}, CKSEL {:X}..{:X})", r.description, r.class, r.lo, r.hi)
        }
        "SUT" => format!("start-up time code {value} (its delay depends on CKSEL; see the datasheet table)"),
        "BOOTSZ" => {
            let size = part.boot_size(byte);
            format!(
                "boot section {} bytes ({} words) at 0x{:04X}..0x{:04X}",
                size,
                size / 2,
                part.boot_start(byte),
                part.flash_size - 1
            )
        }
        "BOOTRST" => {
            if programmed {
                format!("reset jumps to the boot section at 0x{:04X} (bootloader runs first)", part.boot_start(byte))
            } else {
                "reset jumps to 0x0000 (application runs first)".to_string()
            }
        }
        "BODLEVEL" if field.mask.count_ones() > 1 => bodlevel(part, value),
        "BODLEVEL" => {
            // ATmega32A: one bit, effective only with BODEN.
            if programmed { "brown-out level 4.0 V (when BODEN is on)".into() } else { "brown-out level 2.7 V (when BODEN is on)".into() }
        }
        "SPIEN" if !programmed => "serial (ISP) programming DISABLED: ISP can no longer reach this chip".into(),
        "RSTDISBL" if programmed => "external reset DISABLED: the RESET pin is an I/O pin, ISP is impossible".into(),
        "DWEN" if programmed => "debugWIRE enabled: RESET is the debugWIRE line, ISP is impossible".into(),
        _ => format!("{}: {}", field.description, if programmed { "yes (programmed)" } else { "no" }),
    }
}

fn bodlevel(part: &Part, value: u8) -> String {
    if value == 0b111 {
        return "brown-out detection disabled".into();
    }
    // Typical V_BOT per datasheet "BODLEVEL Fuse Coding" tables, indexed by the code (0b000
    // first); `None` is a code the datasheet calls reserved.
    let table: Option<[Option<&str>; 7]> = match part.id {
        "atmega16u4" | "atmega32u4" => Some([Some("4.3"), Some("3.5"), Some("3.4"), Some("2.6"), Some("2.4"), Some("2.2"), Some("2.0")]),
        "atmega328p" => Some([None, None, None, None, Some("4.3"), Some("2.7"), Some("1.8")]),
        // AT90USB64/128 datasheet Table 9-2.
        "at90usb646" | "at90usb647" | "at90usb1286" | "at90usb1287" => Some([Some("4.3"), Some("3.5"), Some("3.4"), Some("2.6"), None, None, None]),
        _ => None,
    };
    match table.map(|t| t[value as usize]) {
        Some(Some(v)) => format!("brown-out detection at {v} V (typical)"),
        Some(None) => format!("reserved BODLEVEL code {value:03b}: do not use"),
        None => format!("brown-out detection on, level code {value:03b} (see the datasheet's BODLEVEL table)"),
    }
}

/// The clock class a low-fuse byte selects on `part`.
pub fn clock_class(part: &Part, low: u8) -> ClockClass {
    part.clock_source(low).class
}

/// Fuse settings that can make a board unreachable by ISP; a recipe may override each one
/// explicitly with `allow_dangerous_fuses: [...]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FuseHazard {
    /// SPIEN unprogrammed: serial programming disabled.
    SpienDisabled,
    /// RSTDISBL programmed: RESET becomes an I/O pin.
    Rstdisbl,
    /// DWEN programmed: RESET becomes the debugWIRE line.
    Dwen,
    /// CKSEL selects a clock other than the one declared (or a reserved code).
    Clock,
    /// STM32 read-out protection (`protect: readout`): undone only by a mass erase.
    ReadoutProtection,
}

impl FuseHazard {
    pub fn name(self) -> &'static str {
        match self {
            FuseHazard::SpienDisabled => "spien-disabled",
            FuseHazard::Rstdisbl => "rstdisbl",
            FuseHazard::Dwen => "dwen",
            FuseHazard::Clock => "clock",
            FuseHazard::ReadoutProtection => "readout-protection",
        }
    }
}

impl fmt::Display for FuseHazard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One dangerous setting found by [`check_safety`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseProblem {
    pub hazard: FuseHazard,
    pub message: String,
}

/// Fuses refused by [`check_safety`]; lists every problem and the override that would allow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseSafetyError {
    pub problems: Vec<FuseProblem>,
}

impl fmt::Display for FuseSafetyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("refusing fuses that can brick boards: ")?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(&p.message)?;
        }
        let names: Vec<&str> = self.problems.iter().map(|p| p.hazard.name()).collect();
        write!(
            f,
            ". Check the fuse values against the datasheet; if this is really intended, add \
             `allow_dangerous_fuses: [{}]` to the recipe",
            names.join(", ")
        )
    }
}

impl std::error::Error for FuseSafetyError {}

/// Refuse fuses that disable SPIEN, enable RSTDISBL or DWEN (on parts that have them), or
/// select a clock source other than `declared_clock`, unless the hazard is in `overrides`.
/// A low fuse with no declared clock is refused too: the check needs to know the board's clock.
pub fn check_safety(
    part: &Part,
    fuses: &FuseSet,
    declared_clock: Option<ClockClass>,
    overrides: &[FuseHazard],
) -> Result<(), FuseSafetyError> {
    let mut problems = Vec::new();
    let mut add = |hazard: FuseHazard, message: String| {
        if !overrides.contains(&hazard) {
            problems.push(FuseProblem { hazard, message });
        }
    };
    let bit = |name: &str| -> Option<(u8, u8)> {
        let f = part.field(name)?;
        Some((fuses.get(f.fuse)?, f.mask))
    };
    if let Some((byte, mask)) = bit("SPIEN") {
        if byte & mask != 0 {
            add(
                FuseHazard::SpienDisabled,
                format!("high fuse 0x{byte:02X} leaves SPIEN unprogrammed (bit 5 = 1), which disables ISP programming"),
            );
        }
    }
    if let Some((byte, mask)) = bit("RSTDISBL") {
        if byte & mask == 0 {
            add(
                FuseHazard::Rstdisbl,
                format!("high fuse 0x{byte:02X} programs RSTDISBL (bit 7 = 0): RESET becomes I/O and ISP is impossible"),
            );
        }
    }
    if let Some((byte, mask)) = bit("DWEN") {
        if byte & mask == 0 {
            add(
                FuseHazard::Dwen,
                format!("high fuse 0x{byte:02X} programs DWEN (bit 6 = 0): debugWIRE takes RESET and ISP is impossible"),
            );
        }
    }
    if let Some(low) = fuses.low {
        let src = part.clock_source(low);
        match declared_clock {
            _ if src.class == ClockClass::Reserved => add(
                FuseHazard::Clock,
                format!("low fuse 0x{low:02X} selects a reserved CKSEL code ({:X}) on the {}", low & 0x0F, part.name),
            ),
            Some(declared) if declared != src.class => add(
                FuseHazard::Clock,
                format!(
                    "low fuse 0x{low:02X} selects {} ({}) but the recipe declares clock: {declared}",
                    src.description, src.class
                ),
            ),
            None => add(
                FuseHazard::Clock,
                format!(
                    "low fuse 0x{low:02X} selects {} ({}) but the recipe declares no clock; add `clock: {}` if that is the board's clock",
                    src.description, src.class, src.class
                ),
            ),
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(FuseSafetyError { problems })
    }
}

/// Fuse bytes that the part does not have (an extended byte on the ATmega32A).
pub fn check_fits(part: &Part, fuses: &FuseSet) -> Result<(), String> {
    if fuses.extended.is_some() && part.fuse_masks.extended.is_none() {
        return Err(format!("the {} has no extended fuse byte; remove `extended:` from fuses", part.name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::part;

    #[test]
    fn decodes_the_32u4_dfu_fuses_in_words() {
        let p = part::find("atmega32u4").unwrap();
        let d = decode(p, FuseSet { low: Some(0x5E), high: Some(0xD9), extended: Some(0xF3) });
        let get = |n: &str| d.iter().find(|f| f.name == n).unwrap();
        assert!(get("CKSEL").meaning.contains("crystal"));
        assert_eq!(get("BOOTSZ").bits(), "00");
        assert!(get("BOOTSZ").meaning.contains("4096 bytes") && get("BOOTSZ").meaning.contains("0x7000"));
        assert!(get("BOOTRST").meaning.contains("0x0000"));
        assert!(get("JTAGEN").meaning.ends_with("no"));
        assert!(get("SPIEN").meaning.contains("yes"));
        assert!(get("BODLEVEL").meaning.contains("2.6 V"));
        assert!(get("HWBE").meaning.contains("yes"));
        assert_eq!(d.len(), p.fuse_fields.len());
    }

    #[test]
    fn at90usb_bodlevel_follows_its_own_table() {
        let p = part::find("at90usb1286").unwrap();
        let bod = |e: u8| decode(p, FuseSet { low: Some(0x5E), high: Some(0x99), extended: Some(e) }).into_iter().find(|f| f.name == "BODLEVEL").unwrap().meaning;
        assert!(bod(0xF3).contains("2.6 V"), "{}", bod(0xF3));
        assert!(bod(0xF0).contains("4.3 V"), "{}", bod(0xF0));
        assert!(bod(0xF7).contains("disabled"), "{}", bod(0xF7));
        // 110 is 2.0 V on the 32U4 but reserved on the AT90USB64/128.
        assert!(bod(0xF6).contains("reserved"), "{}", bod(0xF6));
    }

    #[test]
    fn safety_refuses_and_overrides() {
        let p = part::find("atmega328p").unwrap();
        let ok = FuseSet { low: Some(0xFF), high: Some(0xDE), extended: Some(0x05) };
        check_safety(p, &ok, Some(ClockClass::Crystal), &[]).unwrap();
        let bad = FuseSet { low: Some(0xE0), high: Some(0x5E), extended: None };
        let e = check_safety(p, &bad, Some(ClockClass::Crystal), &[]).unwrap_err();
        let hz: Vec<_> = e.problems.iter().map(|p| p.hazard).collect();
        assert_eq!(hz, [FuseHazard::Rstdisbl, FuseHazard::Clock]);
        assert!(e.to_string().contains("allow_dangerous_fuses: [rstdisbl, clock]"), "{e}");
        check_safety(p, &bad, Some(ClockClass::Crystal), &[FuseHazard::Rstdisbl, FuseHazard::Clock]).unwrap();
    }
}
