//! Per-SKU recipes: strict YAML (unknown keys refused with line and column).
//!
//! Every key is documented in the README section "Recipes". Values that can be checked alone
//! (part names, catalog names, fuse bytes, hashes, regexes, enums) are checked while parsing, so
//! their errors carry the line and column; checks that need the input files live in
//! [`crate::build`].

use std::fmt;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::fuse::FuseHazard;
use crate::mcu::Mcu;
use crate::part::{self, ClockClass, FuseSet};
use crate::verify::VerifyPolicy;
use crate::{bootloader, bootloader::Bootloader};

/// A parsed recipe. Paths are as written (relative to the recipe file's directory).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Stock-keeping unit, e.g. `PLANCK-REV6`.
    #[serde(deserialize_with = "de_sku")]
    pub sku: String,
    /// Catalog part id of either family (canonical, e.g. `atmega32u4` or `stm32f103c8`,
    /// whatever alias the recipe used).
    #[serde(deserialize_with = "de_mcu")]
    pub mcu: String,
    /// Application firmware: Intel HEX, or a raw binary with its load address.
    pub firmware: FileSpec,
    /// Bootloader hex, optionally tied to a catalog row.
    #[serde(default)]
    pub bootloader: Option<BootloaderSpec>,
    /// Fuses to program (each byte optional; missing bytes come from the catalog bootloader).
    #[serde(default, deserialize_with = "de_fuses")]
    pub fuses: Option<FuseSet>,
    /// Lock byte programmed last (AVR).
    #[serde(default, deserialize_with = "de_opt_u8")]
    pub lock: Option<u8>,
    /// Read-out protection set last (STM32; the counterpart of lock bits).
    #[serde(default)]
    pub protect: Option<Protect>,
    /// SHA-256 pins of the input files (lower-case hex).
    #[serde(default)]
    pub sha256: Option<Pins>,
    /// The board's clock class (crystal, internal-rc, external-clock, …).
    #[serde(default)]
    pub clock: Option<ClockClass>,
    /// Dangerous settings explicitly allowed (fuses, read-out protection). `allow_dangerous:`
    /// is the same key under a family-neutral name.
    #[serde(default, alias = "allow_dangerous")]
    pub allow_dangerous_fuses: Vec<FuseHazard>,
    /// Read-back policy after programming.
    #[serde(default)]
    pub verify: VerifyPolicy,
    /// Data bytes per record in the production hex: 16 (default) or 32.
    #[serde(default = "default_record_size", deserialize_with = "de_record_size")]
    pub record_size: usize,
    /// Barcode validation and per-unit serial number.
    #[serde(default)]
    pub serial: Option<SerialRule>,
}

fn default_record_size() -> usize {
    16
}

/// `bootloader:` — a path, or `{ catalog: NAME, file: PATH, address: ADDR }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootloaderSpec {
    /// Catalog row name (canonical), when given.
    pub catalog: Option<String>,
    pub file: PathBuf,
    /// Load address of a raw binary (default: the catalog row's start).
    pub address: Option<u32>,
}

/// An input image file: Intel HEX (addresses inside), or a raw binary (`*.bin`) loaded at
/// `address`. Written as a path, or `{ file: PATH, address: ADDR }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub file: PathBuf,
    pub address: Option<u32>,
}

impl FileSpec {
    /// Whether the file is a raw binary (by its name: `.bin`), not Intel HEX.
    pub fn is_binary(path: &Path) -> bool {
        path.extension().is_some_and(|e| e.eq_ignore_ascii_case("bin"))
    }
}

/// `protect:` — what to lock after programming (STM32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protect {
    /// Read-out protection level 1 (RDP byte ≠ 0xA5): debug access to flash refused; undone
    /// only by an unlock that mass-erases the flash.
    Readout,
}

impl BootloaderSpec {
    /// The catalog row, when the recipe names one.
    pub fn entry(&self) -> Option<&'static Bootloader> {
        self.catalog.as_deref().and_then(bootloader::find)
    }
}

/// `sha256:` pins.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pins {
    #[serde(default, deserialize_with = "de_opt_sha")]
    pub firmware: Option<String>,
    #[serde(default, deserialize_with = "de_opt_sha")]
    pub bootloader: Option<String>,
}

/// `serial:` — barcode validation and per-unit serial number.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialRule {
    /// Scanned barcodes must match this regex as a whole (it is anchored: `^(?:…)$`).
    #[serde(default, deserialize_with = "de_opt_regex")]
    pub pattern: Option<Regex>,
    /// Where and how to write the per-unit serial number.
    #[serde(default)]
    pub write: Option<SerialWrite>,
}

/// Memory a serial number is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialMemory {
    Eeprom,
    Flash,
}

impl SerialMemory {
    pub fn name(self) -> &'static str {
        match self {
            SerialMemory::Eeprom => "eeprom",
            SerialMemory::Flash => "flash",
        }
    }
}

/// Encoding of a serial number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialFormat {
    /// Decimal digits, zero-padded to `length` bytes.
    Ascii,
    /// 32-bit little-endian.
    U32le,
    /// 32-bit big-endian.
    U32be,
}

impl SerialFormat {
    pub fn name(self) -> &'static str {
        match self {
            SerialFormat::Ascii => "ascii",
            SerialFormat::U32le => "u32le",
            SerialFormat::U32be => "u32be",
        }
    }
}

/// `serial.write:` — per-unit serial numbers allocated from a counter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialWrite {
    pub memory: SerialMemory,
    #[serde(deserialize_with = "de_u32")]
    pub address: u32,
    pub format: SerialFormat,
    /// Bytes written (ascii: digits; u32le/u32be: must be 4, the default).
    #[serde(default, deserialize_with = "de_serial_length")]
    pub length: Option<u32>,
    /// First serial number handed out (default 1; at most `i64::MAX`, how records store it).
    #[serde(default = "default_serial_start", deserialize_with = "de_serial_start")]
    pub start: u64,
}

/// Most digits an ascii serial number can have: `i64::MAX` (how records store it) has 19.
pub const MAX_ASCII_DIGITS: u32 = 19;

/// Longest SKU name, in characters.
pub const MAX_SKU_CHARS: usize = 64;

fn default_serial_start() -> u64 {
    1
}

impl SerialWrite {
    /// Bytes a rendered serial occupies.
    pub fn byte_len(&self) -> u32 {
        match self.format {
            SerialFormat::Ascii => self.length.unwrap_or(0),
            SerialFormat::U32le | SerialFormat::U32be => 4,
        }
    }
}

/// A serial number that cannot be rendered as the recipe asks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("serial number {value} does not fit: {reason}")]
pub struct SerialRenderError {
    pub value: u64,
    pub reason: String,
}

impl SerialRule {
    /// Does a scanned barcode match `pattern` (always true without a pattern)?
    pub fn matches(&self, barcode: &str) -> bool {
        self.pattern.as_ref().is_none_or(|r| r.is_match(barcode))
    }

    /// The pattern as the recipe wrote it (without the added anchors).
    pub fn pattern_str(&self) -> Option<&str> {
        self.pattern.as_ref().map(|r| {
            let s = r.as_str();
            s.strip_prefix("^(?:").and_then(|s| s.strip_suffix(")$")).unwrap_or(s)
        })
    }

    /// Bytes to write for serial number `value` (per `write.format`).
    pub fn render(&self, value: u64) -> Result<Vec<u8>, SerialRenderError> {
        let Some(w) = &self.write else {
            return Err(SerialRenderError { value, reason: "the recipe has no serial.write".into() });
        };
        match w.format {
            SerialFormat::Ascii => {
                let n = w.length.unwrap_or(0) as usize;
                if n > MAX_ASCII_DIGITS as usize {
                    return Err(SerialRenderError { value, reason: format!("serial.write.length {n} is more than {MAX_ASCII_DIGITS} digits") });
                }
                let s = format!("{value:0n$}");
                if s.len() > n {
                    return Err(SerialRenderError { value, reason: format!("needs {} digits, serial.write.length is {n}", s.len()) });
                }
                Ok(s.into_bytes())
            }
            SerialFormat::U32le | SerialFormat::U32be => {
                let v = u32::try_from(value)
                    .map_err(|_| SerialRenderError { value, reason: "larger than a 32-bit number".into() })?;
                Ok(if w.format == SerialFormat::U32le { v.to_le_bytes() } else { v.to_be_bytes() }.to_vec())
            }
        }
    }
}

/// A recipe that could not be read or parsed. Display: `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for RecipeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{}:{}: {}", self.file, l, c, self.message),
            (Some(l), None) => write!(f, "{}:{}: {}", self.file, l, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for RecipeError {}

impl Recipe {
    /// Parse recipe text; `name` is used in errors (usually the path).
    pub fn parse(text: &str, name: &str) -> Result<Recipe, RecipeError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if let Err((line, column, _)) = crate::input::check_nesting(text, crate::input::MAX_NESTING) {
            return Err(RecipeError {
                file: name.to_string(),
                line: Some(line),
                column: Some(column),
                message: format!("nested deeper than {} levels: not a recipe", crate::input::MAX_NESTING),
            });
        }
        let r: Recipe = serde_yaml::from_str(text).map_err(|e| {
            let loc = e.location();
            let mut message = e.to_string();
            // serde_yaml appends " at line L column C"; the location goes in front instead.
            if let Some(i) = message.rfind(" at line ") {
                message.truncate(i);
            }
            // The parser quotes the file's text (keys, values): escape what a terminal would act on.
            let message = crate::text::shown(&message).into_owned();
            RecipeError {
                file: name.to_string(),
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                message,
            }
        })?;
        r.validate().map_err(|message| {
            let at = key_position(text, &message);
            RecipeError { file: name.to_string(), line: at.map(|a| a.0), column: at.map(|a| a.1), message }
        })?;
        Ok(r)
    }

    /// Read and parse a recipe file.
    pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
        let name = path.display().to_string();
        let text = crate::input::read_text(path, crate::input::CONFIG_LIMIT).map_err(|e| RecipeError {
            file: name.clone(),
            line: None,
            column: None,
            message: e.kind.message("recipe"),
        })?;
        Self::parse(&text, &name)
    }

    /// The catalog part (always present: `mcu` is checked while parsing).
    pub fn mcu(&self) -> Mcu {
        Mcu::find(&self.mcu).unwrap_or(Mcu::Avr(&part::PARTS[0]))
    }

    /// Cross-key checks that need no files.
    fn validate(&self) -> Result<(), String> {
        let mcu = self.mcu();
        if let Some(bl) = self.bootloader.as_ref().and_then(BootloaderSpec::entry) {
            if !bl.runs_on(mcu.id()) {
                return Err(format!(
                    "bootloader.catalog: {} is for the {}, but mcu is {}; pick the catalog entry for this MCU (see `flashline bootloaders`)",
                    bl.name,
                    bl.mcu_names(),
                    mcu.name()
                ));
            }
        }
        // Settings of the other family are refused, not ignored: a recipe that says `lock:` for a
        // Bluepill expects something to be locked.
        match mcu {
            Mcu::Avr(part) => {
                if let Some(f) = &self.fuses {
                    crate::fuse::check_fits(part, f).map_err(|e| format!("fuses: {e}"))?;
                }
                if self.protect.is_some() {
                    return Err(format!(
                        "protect: is for STM32 parts; the {} is an AVR: use `lock:` (lock bits) instead",
                        part.name
                    ));
                }
            }
            Mcu::Stm32(part) => {
                let other = [
                    (self.fuses.is_some(), "fuses", "option bytes are set by the job; there are no fuses"),
                    (self.lock.is_some(), "lock", "use `protect: readout` for read-out protection"),
                    (self.clock.is_some(), "clock", "the clock is chosen by the firmware, not by a fuse"),
                ];
                if let Some((_, key, advice)) = other.iter().find(|o| o.0) {
                    return Err(format!("{key}: is for AVR parts; the {} is an STM32: {advice}", part.name));
                }
                if self.protect == Some(Protect::Readout)
                    && !self.allow_dangerous_fuses.contains(&FuseHazard::ReadoutProtection)
                {
                    return Err(format!(
                        "protect: readout sets read-out protection (RDP level 1) on every {}: debug reads of flash are refused afterwards, \
                         and only an unlock that mass-erases the whole flash undoes it. Add `allow_dangerous: [readout-protection]` \
                         to the recipe if that is what this SKU ships with",
                        part.name
                    ));
                }
                if self.serial.as_ref().and_then(|s| s.write.as_ref()).is_some_and(|w| w.memory == SerialMemory::Eeprom) {
                    return Err(format!("serial.write.memory: the {} has no EEPROM; write the serial number to flash", part.name));
                }
            }
        }
        if let Some(a) = self.firmware.address {
            if !FileSpec::is_binary(&self.firmware.file) {
                return Err(format!(
                    "firmware.address: 0x{a:08X} is for raw binaries (*.bin); {} is read as Intel HEX, which carries its own addresses",
                    self.firmware.file.display()
                ));
            }
        } else if FileSpec::is_binary(&self.firmware.file) {
            return Err(format!(
                "firmware: {} is a raw binary and has no addresses; write `firmware: {{ file: {}, address: 0x{:08X} }}`",
                self.firmware.file.display(),
                self.firmware.file.display(),
                self.bootloader.as_ref().and_then(BootloaderSpec::entry).map_or(mcu.reset_address(), |b| b.app_start.max(mcu.reset_address()))
            ));
        }
        if let Some(b) = &self.bootloader {
            if b.address.is_some() && !FileSpec::is_binary(&b.file) {
                return Err(format!("bootloader.address: is for raw binaries (*.bin); {} is read as Intel HEX", b.file.display()));
            }
            if b.address.is_none() && b.entry().is_none() && FileSpec::is_binary(&b.file) {
                return Err(format!(
                    "bootloader: {} is a raw binary and has no addresses; give `address:` or a `catalog:` row",
                    b.file.display()
                ));
            }
        }
        if self.sha256.as_ref().is_some_and(|p| p.bootloader.is_some()) && self.bootloader.is_none() {
            return Err("sha256.bootloader pins a bootloader but the recipe has no `bootloader:`".into());
        }
        if let Some(s) = &self.serial {
            if s.pattern.is_none() && s.write.is_none() {
                return Err("serial: give `pattern:`, `write:` or both".into());
            }
            if let Some(w) = &s.write {
                match (w.format, w.length) {
                    (SerialFormat::Ascii, None | Some(0)) => {
                        return Err("serial.write.length is required for format ascii (number of digits)".into())
                    }
                    (SerialFormat::Ascii, Some(n)) if n > MAX_ASCII_DIGITS => {
                        return Err(format!(
                            "serial.write.length is {n}, but serial numbers have at most {MAX_ASCII_DIGITS} digits (they are stored as 64-bit signed numbers)"
                        ))
                    }
                    (SerialFormat::U32le | SerialFormat::U32be, Some(n)) if n != 4 => {
                        return Err(format!("serial.write.length is {n}, but u32le/u32be numbers take 4 bytes"))
                    }
                    _ => {}
                }
                if w.start > i64::MAX as u64 {
                    return Err(format!("serial.write.start: {} is larger than {} (serial numbers are stored as 64-bit signed numbers)", w.start, i64::MAX));
                }
                s.render(w.start).map_err(|e| format!("serial.write.start: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Where the key a cross-key message starts with (`serial.write.start: …` → `start`) is
/// written: its first occurrence as `KEY:` at the start of a line or after `{`, `,` or `- `.
fn key_position(text: &str, message: &str) -> Option<(usize, usize)> {
    let path = message.split([':', ' ']).next()?;
    let key = path.rsplit('.').next().filter(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))?;
    for (i, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(j) = line[from..].find(key) {
            let at = from + j;
            let before = line[..at].trim_end();
            let after = &line[at + key.len()..];
            if (before.is_empty() || before.ends_with(['{', ',', '-'])) && after.trim_start().starts_with(':') {
                return Some((i + 1, line[..at].chars().count() + 1));
            }
            from = at + key.len();
        }
    }
    None
}

// ---- value deserializers (errors raised here carry line and column) --------------------------

/// A scalar as YAML gave it.
enum Scalar {
    Str(String),
    Int(i128),
}

/// Visitor that checks a scalar while serde_yaml still knows where it is, so the error
/// carries the value's own line and column.
struct Check<F>(&'static str, F);

impl<T, F: FnOnce(Scalar) -> Result<T, String>> Visitor<'_> for Check<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.1)(Scalar::Str(v.to_string())).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.1)(Scalar::Int(v as i128)).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        (self.1)(Scalar::Int(v as i128)).map_err(E::custom)
    }
}

fn string_of(s: Scalar) -> String {
    match s {
        Scalar::Str(s) => s,
        Scalar::Int(i) => i.to_string(),
    }
}

fn de_sku<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(Check("an SKU name", |s| {
        let s = string_of(s);
        if s.trim().is_empty() {
            Err("empty".to_string())
        } else {
            crate::input::check_name(&s, MAX_SKU_CHARS).map(|()| s)
        }
    }))
}

fn de_mcu<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    d.deserialize_any(Check("a part name such as atmega32u4 or stm32f103c8", |s| {
        let s = string_of(s);
        Mcu::find(&s)
            .map(|p| p.id().to_string())
            .ok_or_else(|| format!("unknown part '{s}' (known: {})", Mcu::ids().join(", ")))
    }))
}

fn de_catalog<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(Check("a bootloader catalog name", |s| {
        let s = string_of(s);
        bootloader::find(&s)
            .map(|b| Some(b.name.to_string()))
            .ok_or_else(|| format!("unknown bootloader catalog entry '{s}' (see `flashline bootloaders`)"))
    }))
}

/// A byte written as `0x5E`, `94`, `0b01011110` or a YAML integer.
struct ByteVisitor(u64);

impl Visitor<'_> for ByteVisitor {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a number up to 0x{:X} (0x5E, 94 or 0b01011110)", self.0)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        if v > self.0 {
            return Err(E::custom(format!("{v} (0x{v:X}) is larger than 0x{:X}", self.0)));
        }
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative"))).and_then(|v| self.visit_u64(v))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<u64, E> {
        let t = s.trim();
        let r = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            u64::from_str_radix(h, 16)
        } else if let Some(b) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
            u64::from_str_radix(b, 2)
        } else {
            t.parse()
        };
        let v = r.map_err(|_| E::custom(format!("'{s}' is not a number (write 0x5E, 94 or 0b01011110)")))?;
        self.visit_u64(v)
    }
}

fn de_u8<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    d.deserialize_any(ByteVisitor(0xFF)).map(|v| v as u8)
}

fn de_opt_u8<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    de_u8(d).map(Some)
}

fn de_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    d.deserialize_any(ByteVisitor(u32::MAX as u64)).map(|v| v as u32)
}

fn de_opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    de_u32(d).map(Some)
}

fn de_serial_length<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = d.deserialize_any(ByteVisitor(u32::MAX as u64))?;
    if v == 0 || v > MAX_ASCII_DIGITS as u64 {
        return Err(de::Error::custom(format!(
            "length {v} is out of range: ascii serial numbers have 1 to {MAX_ASCII_DIGITS} digits, u32le/u32be take 4 bytes"
        )));
    }
    Ok(Some(v as u32))
}

fn de_serial_start<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(ByteVisitor(i64::MAX as u64))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FusesYaml {
    #[serde(default, deserialize_with = "de_opt_u8")]
    low: Option<u8>,
    #[serde(default, deserialize_with = "de_opt_u8")]
    high: Option<u8>,
    #[serde(default, deserialize_with = "de_opt_u8")]
    extended: Option<u8>,
}

fn de_fuses<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FuseSet>, D::Error> {
    let f = FusesYaml::deserialize(d)?;
    let set = FuseSet { low: f.low, high: f.high, extended: f.extended };
    if set.is_empty() {
        return Err(de::Error::custom("fuses: is empty; give low, high and/or extended"));
    }
    Ok(Some(set))
}

fn de_record_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    d.deserialize_any(Check("16 or 32", |s| match s {
        Scalar::Int(16) => Ok(16),
        Scalar::Int(32) => Ok(32),
        other => Err(format!("must be 16 or 32, not {}", string_of(other))),
    }))
}

fn de_opt_sha<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(Check("a SHA-256 in hex", |s| {
        let s = string_of(s);
        let t = s.trim().to_ascii_lowercase();
        if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("'{s}' is not a SHA-256 (64 hex digits, as `sha256sum FILE` prints)"));
        }
        Ok(Some(t))
    }))
}

fn de_opt_regex<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Regex>, D::Error> {
    d.deserialize_any(Check("a regular expression", |s| {
        let s = string_of(s);
        Regex::new(&format!("^(?:{s})$"))
            .map(Some)
            .map_err(|e| format!("not a valid regex: {e}"))
    }))
}

impl<'de> Deserialize<'de> for BootloaderSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Map {
            #[serde(default, deserialize_with = "de_catalog")]
            catalog: Option<String>,
            #[serde(default)]
            file: Option<PathBuf>,
            #[serde(default, deserialize_with = "de_opt_u32")]
            address: Option<u32>,
        }
        impl<'de> Visitor<'de> for V {
            type Value = BootloaderSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a bootloader file path, or a mapping { catalog: NAME, file: PATH, address: ADDR }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<BootloaderSpec, E> {
                Ok(BootloaderSpec { catalog: None, file: PathBuf::from(s), address: None })
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<BootloaderSpec, A::Error> {
                let m = Map::deserialize(de::value::MapAccessDeserializer::new(m))?;
                let catalog = m.catalog;
                let Some(file) = m.file else {
                    return Err(de::Error::custom(
                        "bootloader.file is missing: the catalog gives fuses and checks, the bootloader image comes from a file",
                    ));
                };
                Ok(BootloaderSpec { catalog, file, address: m.address })
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for FileSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Map {
            file: PathBuf,
            #[serde(default, deserialize_with = "de_opt_u32")]
            address: Option<u32>,
        }
        impl<'de> Visitor<'de> for V {
            type Value = FileSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a file path, or a mapping { file: PATH, address: ADDR }")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<FileSpec, E> {
                Ok(FileSpec { file: PathBuf::from(s), address: None })
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<FileSpec, A::Error> {
                let m = Map::deserialize(de::value::MapAccessDeserializer::new(m))?;
                Ok(FileSpec { file: m.file, address: m.address })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "sku: PLANCK-REV4\nmcu: m32u4\nfirmware: fw/planck.hex\n";

    #[test]
    fn minimal_recipe_and_defaults() {
        let r = Recipe::parse(MIN, "r.yaml").unwrap();
        assert_eq!(r.mcu, "atmega32u4");
        assert_eq!(r.record_size, 16);
        assert_eq!(r.verify, VerifyPolicy::Full);
        assert!(r.bootloader.is_none());
    }

    #[test]
    fn full_recipe() {
        let text = format!(
            "{MIN}bootloader: {{ catalog: caterina_promicro16, file: bl/c.hex }}\n\
             fuses: {{ low: 0x5E, high: 217, extended: \"0xF3\" }}\nlock: 0x2F\nclock: crystal\n\
             allow_dangerous_fuses: [clock]\nverify: written\nrecord_size: 32\n\
             sha256: {{ firmware: \"{}\" }}\n\
             serial: {{ pattern: 'PL-[0-9]{{6}}', write: {{ memory: eeprom, address: 0x3F0, format: ascii, length: 8, start: 100 }} }}\n",
            "AB".repeat(32)
        );
        let r = Recipe::parse(&text, "r.yaml").unwrap();
        assert_eq!(r.bootloader.as_ref().unwrap().catalog.as_deref(), Some("caterina-promicro16"));
        assert_eq!(r.fuses, Some(FuseSet { low: Some(0x5E), high: Some(0xD9), extended: Some(0xF3) }));
        assert_eq!(r.lock, Some(0x2F));
        assert_eq!(r.record_size, 32);
        let s = r.serial.unwrap();
        assert!(s.matches("PL-123456") && !s.matches("PL-1234567") && !s.matches("xPL-123456"));
        assert_eq!(s.pattern_str(), Some("PL-[0-9]{6}"));
        assert_eq!(s.render(42).unwrap(), b"00000042");
        assert!(s.render(123_456_789).is_err());
    }

    #[test]
    fn unknown_key_has_line_and_column() {
        let e = Recipe::parse(&format!("{MIN}fuses:\n  low: 0x5E\n  hihg: 0xD9\n"), "r.yaml").unwrap_err();
        assert_eq!((e.line, e.column), (Some(6), Some(3)), "{e}");
        assert!(e.to_string().starts_with("r.yaml:6:3: "), "{e}");
        assert!(e.message.contains("hihg"), "{e}");
    }
}
