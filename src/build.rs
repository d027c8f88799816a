//! Production-image builder: firmware + bootloader merged at the memory-image level, with every
//! check that stands between a recipe and a shipped broken board.
//!
//! [`prepare`] does all the work and writes nothing; `flashline build` writes
//! [`Production::hex`] and `flashline check` only reports.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::bootloader::Bootloader;
use crate::fuse::{self, FuseSafetyError};
use crate::hex::{self, HexError};
use crate::image::Image;
use crate::mcu::Mcu;
use crate::part::{ClockClass, FuseSet, Part};
use crate::recipe::{FileSpec, Protect, Recipe, RecipeError, SerialMemory, SerialRule};
use crate::stm32::Stm32Part;
use crate::verify::VerifyPolicy;

/// Which input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Firmware,
    Bootloader,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Firmware => "firmware",
            Role::Bootloader => "bootloader",
        })
    }
}

/// Address ranges printed as `0x7000..0x7FFF` (inclusive ends, as datasheets write them).
struct Ranges<'a>(&'a [Range<u64>]);

impl fmt::Display for Ranges<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().take(4).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "0x{:04X}..0x{:04X}", r.start, r.end.saturating_sub(1))?;
        }
        if self.0.len() > 4 {
            write!(f, " and {} more", self.0.len() - 4)?;
        }
        Ok(())
    }
}

fn fmt_ranges(r: &[Range<u64>]) -> String {
    Ranges(r).to_string()
}

/// Where the boot-section geometry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HighFuseOrigin {
    Recipe,
    Catalog,
    /// Neither the recipe nor a catalog bootloader gives a high fuse: the part's factory value.
    Factory,
}

/// The boot section the production fuses select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootSection {
    pub high_fuse: u8,
    pub origin: HighFuseOrigin,
    pub bootsz: u8,
    pub start: u32,
    pub size: u32,
    /// BOOTRST programmed: reset enters the boot section.
    pub bootrst: bool,
    /// HWBE programmed (USB parts): the HWB pin can enter the boot section.
    pub hwbe: bool,
}

impl fmt::Display for BootSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = match self.origin {
            HighFuseOrigin::Recipe => "the recipe's",
            HighFuseOrigin::Catalog => "the catalog bootloader's",
            HighFuseOrigin::Factory => "the factory-default",
        };
        write!(
            f,
            "boot section 0x{:04X}..0x{:04X} ({} bytes, BOOTSZ={:02b} from {} high fuse 0x{:02X})",
            self.start,
            self.start + self.size - 1,
            self.size,
            self.bootsz,
            origin,
            self.high_fuse
        )
    }
}

/// Why a production image cannot be built. Every message is for the operator/engineer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    #[error("{role}: {source}")]
    Hex { role: Role, source: HexError },
    #[error(
        "{role} {path} does not match the recipe's sha256 pin: the file has {actual}, the recipe pins {pinned}. \
         Use the released file, or update the pin if the new file is approved"
    )]
    HashMismatch { role: Role, path: PathBuf, pinned: String, actual: String },
    #[error("{role} {path} holds no data")]
    Empty { role: Role, path: PathBuf },
    #[error(
        "{role} {path} has data at {} beyond the {part}'s flash (0x{first:04X}..0x{last:04X}); is the mcu right?",
        fmt_ranges(.ranges)
    )]
    BeyondFlash { role: Role, path: PathBuf, part: &'static str, first: u32, last: u32, ranges: Vec<Range<u64>> },
    #[error(
        "firmware {firmware} and bootloader {bootloader} overlap at {}; a QMK firmware should end below the boot section",
        fmt_ranges(.ranges)
    )]
    Overlap { firmware: PathBuf, bootloader: PathBuf, ranges: Vec<Range<u64>> },
    #[error(
        "firmware {path} reaches into the {boot} at {}; the firmware is too large for this bootloader size, \
         or the high fuse's BOOTSZ is wrong",
        fmt_ranges(.ranges)
    )]
    FirmwareInBootSection { path: PathBuf, boot: BootSection, ranges: Vec<Range<u64>> },
    #[error(
        "bootloader {path} starts at 0x{start:04X}, below the {boot}; it cannot self-program from there. \
         Check BOOTSZ in the high fuse"
    )]
    BootloaderBelowBootSection { path: PathBuf, start: u32, boot: BootSection },
    #[error(
        "bootloader {path} starts at 0x{start:04X}, but {entry} enters the {boot} at 0x{:04X}; \
         the board would jump into empty flash. Check BOOTSZ in the high fuse or the bootloader file",
        .boot.start
    )]
    BootloaderStart { path: PathBuf, start: u32, boot: BootSection, entry: &'static str },
    #[error(
        "{entry} enters the {boot} but the image has nothing at 0x{:04X} (the recipe has no bootloader); \
         add the bootloader or leave BOOTRST unprogrammed (high fuse bit 0 = 1)",
        .boot.start
    )]
    ResetIntoNothing { boot: BootSection, entry: &'static str },
    #[error(transparent)]
    Fuses(#[from] FuseSafetyError),
    #[error(
        "firmware {path} starts at 0x{start:08X}, but {expected_by} expects the application's vector table at 0x{expected:08X}; \
         {advice}"
    )]
    ApplicationAddress { path: PathBuf, start: u32, expected: u32, expected_by: String, advice: &'static str },
    #[error("{role} {path}: {problem} at 0x{table:08X}; {advice}")]
    VectorTable { role: Role, path: PathBuf, table: u32, problem: String, advice: String },
    #[error("serial.write: {0}")]
    Serial(String),
}

/// Everything a station needs to produce a SKU, checked.
#[derive(Debug, Clone)]
pub struct Production {
    pub recipe: Recipe,
    pub recipe_path: PathBuf,
    /// SHA-256 (lower-case hex) of the recipe file's bytes.
    pub recipe_sha256: String,
    /// The catalog part, of either family.
    pub mcu: Mcu,
    /// The catalog row the recipe names, if any.
    pub bootloader_entry: Option<&'static Bootloader>,
    pub firmware_path: PathBuf,
    pub firmware_sha256: String,
    pub bootloader_path: Option<PathBuf>,
    pub bootloader_sha256: Option<String>,
    /// The firmware as read.
    pub firmware_image: Image,
    /// The bootloader as read.
    pub bootloader_image: Option<Image>,
    /// The merged memory image (start address: the bootloader's when it has one).
    pub image: Image,
    /// The production hex text exactly as `flashline build` writes it.
    pub hex: String,
    /// SHA-256 of [`Production::hex`]: `sha256sum OUT.hex` prints the same.
    pub image_sha256: String,
    /// What the family adds: fuses, boot section and lock bits (AVR), or application address,
    /// vector table and read-out protection (STM32).
    pub layout: Layout,
    pub verify: VerifyPolicy,
    pub serial: Option<SerialRule>,
}

/// The family-specific half of a production: what is checked and programmed besides flash.
#[derive(Debug, Clone, Copy)]
pub enum Layout {
    Avr(AvrLayout),
    Stm32(Stm32Layout),
}

/// AVR: fuses, boot section, lock bits.
#[derive(Debug, Clone, Copy)]
pub struct AvrLayout {
    pub part: &'static Part,
    /// Fuses to program: the recipe's bytes, missing ones from the catalog bootloader.
    pub fuses: FuseSet,
    /// The declared (or inferred from the catalog) clock class.
    pub clock: Option<ClockClass>,
    pub boot: BootSection,
    pub lock: Option<u8>,
}

/// STM32: where the application's vector table sits, what it holds, and the read-out
/// protection set last.
#[derive(Debug, Clone, Copy)]
pub struct Stm32Layout {
    pub part: &'static Stm32Part,
    /// The application's vector table address (the bootloader's application address, or flash
    /// base without a bootloader).
    pub app_start: u32,
    pub app_vectors: Vectors,
    pub bootloader_vectors: Option<Vectors>,
    pub protect: Option<Protect>,
}

/// The first two words of a Cortex-M vector table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vectors {
    pub table: u32,
    pub initial_sp: u32,
    pub reset: u32,
}

impl fmt::Display for Vectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "vector table 0x{:08X}: initial SP 0x{:08X}, reset 0x{:08X}", self.table, self.initial_sp, self.reset)
    }
}

impl Production {
    /// The AVR half, for code that drives ISP programmers (`None` for an STM32 recipe).
    pub fn avr(&self) -> Option<&AvrLayout> {
        match &self.layout {
            Layout::Avr(a) => Some(a),
            Layout::Stm32(_) => None,
        }
    }

    /// The STM32 half (`None` for an AVR recipe).
    pub fn stm32(&self) -> Option<&Stm32Layout> {
        match &self.layout {
            Layout::Stm32(s) => Some(s),
            Layout::Avr(_) => None,
        }
    }

    /// The image as st-flash would write it as a binary: flash from the image's lowest address to
    /// its end, gaps filled with 0xFF.
    pub fn flat_image(&self) -> (u32, Vec<u8>) {
        flat(&self.image)
    }

    /// Where `flashline build` writes by default: `<firmware-stem>_production.hex` next to the recipe.
    pub fn default_output(&self) -> PathBuf {
        let stem = self.recipe.firmware.file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        self.recipe_path.parent().unwrap_or(Path::new(".")).join(format!("{stem}_production.hex"))
    }

    /// Write the production hex.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, &self.hex)
    }
}

/// SHA-256 as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex_lower(&Sha256::digest(bytes))
}

/// MD5 as lower-case hex, and the 32-bit sum of the bytes: what st-flash prints as
/// `md5 checksum: …, stlink checksum: 0x…` before it writes a file, so an engineer can compare.
pub fn stflash_checksums(bytes: &[u8]) -> (String, u32) {
    use md5::Digest as _;
    let sum = bytes.iter().fold(0u32, |s, &b| s.wrapping_add(b as u32));
    (hex_lower(&md5::Md5::digest(bytes)), sum)
}

/// An image as one flat binary from its lowest address to its end, gaps 0xFF.
pub fn flat(image: &Image) -> (u32, Vec<u8>) {
    let Some(start) = image.min_addr() else { return (0, Vec::new()) };
    let end = image.end_addr().unwrap_or(start as u64);
    let mut v = vec![0xFFu8; (end - start as u64) as usize];
    for (a, d) in image.segments() {
        let o = (a - start) as usize;
        v[o..o + d.len()].copy_from_slice(d);
    }
    (start, v)
}

fn hex_lower(b: &[u8]) -> String {
    ::hex::encode(b)
}

struct Input {
    path: PathBuf,
    sha256: String,
    image: Image,
}

/// Read one input: Intel HEX, or a raw binary (`*.bin`) placed at `address` (the recipe
/// guarantees a binary has one).
fn load_input(role: Role, path: PathBuf, address: Option<u32>, pin: Option<&str>) -> Result<Input, BuildError> {
    let name = path.display().to_string();
    let bytes = crate::input::read_bytes(&path, crate::input::HEX_LIMIT)
        .map_err(|e| BuildError::Hex { role, source: HexError::input(&name, e) })?;
    let sha256 = sha256_hex(&bytes);
    if let Some(pinned) = pin {
        if pinned != sha256 {
            return Err(BuildError::HashMismatch { role, path, pinned: pinned.to_string(), actual: sha256 });
        }
    }
    let image = if FileSpec::is_binary(&path) {
        let mut image = Image::new();
        let at = address.unwrap_or(0);
        if at as u64 + bytes.len() as u64 > 1 << 32 {
            return Err(BuildError::BeyondFlash {
                role,
                path,
                part: "32-bit address space",
                first: 0,
                last: u32::MAX,
                ranges: vec![at as u64..at as u64 + bytes.len() as u64],
            });
        }
        if !bytes.is_empty() {
            // A fresh image has nothing to conflict with.
            let _ = image.insert(at, &bytes);
        }
        image
    } else {
        let text = String::from_utf8_lossy(&bytes);
        hex::parse(&text, &name).map_err(|source| BuildError::Hex { role, source })?
    };
    if image.is_empty() {
        return Err(BuildError::Empty { role, path });
    }
    Ok(Input { path, sha256, image })
}

/// Read a recipe and its inputs, run every check, and merge: nothing is written.
pub fn prepare(recipe_path: &Path) -> Result<Production, BuildError> {
    let name = recipe_path.display().to_string();
    let input_error = |e: crate::input::InputError| RecipeError { file: name.clone(), line: None, column: None, message: e.kind.message("recipe") };
    let recipe_bytes = crate::input::read_bytes(recipe_path, crate::input::CONFIG_LIMIT).map_err(input_error)?;
    let recipe_sha256 = sha256_hex(&recipe_bytes);
    let text = crate::input::text_of(recipe_path, recipe_bytes).map_err(input_error)?;
    let recipe = Recipe::parse(&text, &name)?;
    let mcu = recipe.mcu();
    let dir = recipe_path.parent().unwrap_or(Path::new(""));
    let entry = recipe.bootloader.as_ref().and_then(|b| b.entry());
    let pins = recipe.sha256.clone().unwrap_or(crate::recipe::Pins { firmware: None, bootloader: None });

    // Inputs: pins first (a wrong file is the likeliest mistake), then syntax.
    let fw = load_input(Role::Firmware, dir.join(&recipe.firmware.file), recipe.firmware.address, pins.firmware.as_deref())?;
    let bl = match &recipe.bootloader {
        Some(spec) => {
            let address = spec.address.or_else(|| spec.entry().map(|e| e.start));
            Some(load_input(Role::Bootloader, dir.join(&spec.file), address, pins.bootloader.as_deref())?)
        }
        None => None,
    };

    // Everything inside the part's flash.
    let flash = mcu.flash();
    for (role, input) in std::iter::once((Role::Firmware, &fw)).chain(bl.as_ref().map(|b| (Role::Bootloader, b))) {
        let mut outside = input.image.slice(0..flash.start as u64).ranges();
        outside.extend(input.image.slice(flash.end as u64..u64::MAX).ranges());
        if !outside.is_empty() {
            return Err(BuildError::BeyondFlash {
                role,
                path: input.path.clone(),
                part: mcu.name(),
                first: flash.start,
                last: flash.end - 1,
                ranges: outside,
            });
        }
    }
    if let Some(bl) = &bl {
        let ov = fw.image.overlaps(&bl.image);
        if !ov.is_empty() {
            return Err(BuildError::Overlap { firmware: fw.path.clone(), bootloader: bl.path.clone(), ranges: ov });
        }
    }

    // The family's own layout rules.
    let layout = match mcu {
        Mcu::Avr(part) => Layout::Avr(avr_layout(&recipe, part, entry, &fw, bl.as_ref())?),
        Mcu::Stm32(part) => Layout::Stm32(stm32_layout(&recipe, part, entry, &fw, bl.as_ref())?),
    };

    // Merge.
    let mut image = fw.image.clone();
    if let Some(bl) = &bl {
        for (a, d) in bl.image.segments() {
            // Disjoint: checked above.
            image.insert(a, d).map_err(|c| BuildError::Overlap {
                firmware: fw.path.clone(),
                bootloader: bl.path.clone(),
                ranges: std::iter::once(c.addr as u64..c.addr as u64 + 1).collect(),
            })?;
        }
    }
    image.start = bl.as_ref().and_then(|b| b.image.start).or(fw.image.start);

    if let Some(rule) = &recipe.serial {
        check_serial_region(mcu, &image, rule).map_err(BuildError::Serial)?;
    }

    let hex = hex::to_string(&image, recipe.record_size);
    let image_sha256 = sha256_hex(hex.as_bytes());
    Ok(Production {
        recipe_path: recipe_path.to_path_buf(),
        recipe_sha256,
        mcu,
        bootloader_entry: entry,
        firmware_path: fw.path,
        firmware_sha256: fw.sha256.clone(),
        bootloader_path: bl.as_ref().map(|b| b.path.clone()),
        bootloader_sha256: bl.as_ref().map(|b| b.sha256.clone()),
        firmware_image: fw.image,
        bootloader_image: bl.map(|b| b.image),
        image,
        hex,
        image_sha256,
        layout,
        verify: recipe.verify,
        serial: recipe.serial.clone(),
        recipe,
    })
}

/// AVR: fuses (recipe, then catalog), the boot section they select, the bootloader in it, the
/// firmware below it, fuse safety.
fn avr_layout(recipe: &Recipe, part: &'static Part, entry: Option<&'static Bootloader>, fw: &Input, bl: Option<&Input>) -> Result<AvrLayout, BuildError> {
    // Fuses: recipe bytes first, missing ones from the catalog row.
    let recipe_fuses = recipe.fuses.unwrap_or_default();
    let mut fuses = recipe_fuses;
    if let Some(e) = entry {
        for k in crate::part::FuseKind::ALL {
            if fuses.get(k).is_none() {
                if let Some(v) = e.fuses.get(k) {
                    fuses.set(k, v);
                }
            }
        }
    }
    let (high_fuse, origin) = match (recipe_fuses.high, fuses.high) {
        (Some(h), _) => (h, HighFuseOrigin::Recipe),
        (None, Some(h)) => (h, HighFuseOrigin::Catalog),
        _ => (part.factory_fuses.high.unwrap_or(0xFF), HighFuseOrigin::Factory),
    };
    let ext = fuses.extended.or(part.factory_fuses.extended);
    let hwbe = part.field("HWBE").is_some_and(|f| ext.is_some_and(|e| e & f.mask == 0));
    let boot = BootSection {
        high_fuse,
        origin,
        bootsz: Part::bootsz(high_fuse),
        start: part.boot_start(high_fuse),
        size: part.boot_size(high_fuse),
        bootrst: Part::bootrst(high_fuse),
        hwbe,
    };
    let entry_name = match (boot.bootrst, boot.hwbe) {
        (true, _) => Some("BOOTRST (reset vector)"),
        (false, true) => Some("HWBE (hardware boot pin)"),
        _ => None,
    };

    let in_boot = fw.image.slice(boot.start as u64..part.flash_size as u64).ranges();
    if !in_boot.is_empty() {
        return Err(BuildError::FirmwareInBootSection { path: fw.path.clone(), boot, ranges: in_boot });
    }
    match bl {
        Some(bl) => {
            let start = bl.image.min_addr().unwrap_or(0);
            if start < boot.start {
                return Err(BuildError::BootloaderBelowBootSection { path: bl.path.clone(), start, boot });
            }
            if let Some(entry) = entry_name {
                if start != boot.start {
                    return Err(BuildError::BootloaderStart { path: bl.path.clone(), start, boot, entry });
                }
            }
        }
        None => {
            // Only BOOTRST matters here: HWBE needs the HWB pin held low at reset.
            if boot.bootrst && fw.image.get(boot.start).is_none() {
                return Err(BuildError::ResetIntoNothing { boot, entry: "BOOTRST (reset vector)" });
            }
        }
    }

    // Fuse safety, against the declared clock (or the catalog bootloader's).
    let clock = recipe.clock.or_else(|| entry.and_then(|e| e.fuses.low).map(|l| fuse::clock_class(part, l)));
    fuse::check_safety(part, &fuses, clock, &recipe.allow_dangerous_fuses)?;
    Ok(AvrLayout { part, fuses, clock, boot, lock: recipe.lock })
}

/// STM32: the bootloader at the start of flash, the application exactly at the address the
/// bootloader jumps to (flash base without one), and both vector tables plausible for where
/// they are placed.
fn stm32_layout(recipe: &Recipe, part: &'static Stm32Part, entry: Option<&'static Bootloader>, fw: &Input, bl: Option<&Input>) -> Result<Stm32Layout, BuildError> {
    let (app_start, expected_by, advice) = match (bl, entry) {
        (None, _) => (
            part.flash_base,
            format!("a board without a bootloader (BOOT0 = 0 boots from 0x{:08X})", part.flash_base),
            "build the firmware for no bootloader (QMK: BOOTLOADER = none / linked at the start of flash), or add the bootloader to the recipe",
        ),
        (Some(_), Some(e)) => (
            e.app_start,
            format!("the {} bootloader", e.name),
            "build the firmware for this bootloader (QMK: BOOTLOADER = stm32duino links the application at 0x08002000)",
        ),
        (Some(b), None) => {
            // A bootloader file without a catalog row: the application goes right after it, on
            // the next page boundary.
            let end = b.image.end_addr().unwrap_or(part.flash_base as u64) as u32;
            let app = end.div_ceil(part.page_size) * part.page_size;
            (
                app,
                format!("a bootloader ending at 0x{:08X} (no catalog row: the next page)", end - 1),
                "name the bootloader's catalog row (`flashline bootloaders`) or build the firmware for the address its documentation gives",
            )
        }
    };
    if let Some(b) = bl {
        let start = b.image.min_addr().unwrap_or(0);
        if start != part.flash_base {
            return Err(BuildError::VectorTable {
                role: Role::Bootloader,
                path: b.path.clone(),
                table: start,
                problem: format!("starts at 0x{start:08X}, not at the start of flash"),
                advice: format!("the STM32 boots from 0x{:08X}: a bootloader must start there (check bootloader.address)", part.flash_base),
            });
        }
        if let Some(e) = entry {
            let end = b.image.end_addr().unwrap_or(0);
            if end > (e.start + e.size) as u64 {
                return Err(BuildError::VectorTable {
                    role: Role::Bootloader,
                    path: b.path.clone(),
                    table: start,
                    problem: format!("runs to 0x{:08X}, past the {}'s {}-byte slot", end - 1, e.name, e.size),
                    advice: format!("is it the {} file (`flashline bootloaders`)?", e.name),
                });
            }
        }
    }
    let fw_start = fw.image.min_addr().unwrap_or(0);
    if fw_start != app_start {
        return Err(BuildError::ApplicationAddress { path: fw.path.clone(), start: fw_start, expected: app_start, expected_by, advice });
    }
    let app_vectors = vectors(part, Role::Firmware, fw)?;
    let bootloader_vectors = bl.map(|b| vectors(part, Role::Bootloader, b)).transpose()?;
    Ok(Stm32Layout { part, app_start, app_vectors, bootloader_vectors, protect: recipe.protect })
}

/// Read and check a Cortex-M vector table at the image's lowest address: the initial stack
/// pointer must lie in SRAM (it may equal SRAM's end: the stack grows down), the reset vector
/// must be a Thumb address (bit 0 set) inside the image's own data. A firmware linked for
/// another address fails here: its reset vector points where it does not live (QMK built for
/// the wrong BOOTLOADER).
fn vectors(part: &Stm32Part, role: Role, input: &Input) -> Result<Vectors, BuildError> {
    let table = input.image.min_addr().unwrap_or(0);
    let word = |a: u32| -> Option<u32> {
        let mut b = [0u8; 4];
        for (i, x) in b.iter_mut().enumerate() {
            *x = input.image.get(a + i as u32)?;
        }
        Some(u32::from_le_bytes(b))
    };
    let err = |problem: String, advice: String| BuildError::VectorTable { role, path: input.path.clone(), table, problem, advice };
    let (Some(sp), Some(reset)) = (word(table), word(table + 4)) else {
        return Err(err(
            "has no complete vector table (initial SP and reset vector, 8 bytes)".into(),
            "is this a Cortex-M image? A firmware must start with its vector table".into(),
        ));
    };
    let sram_end = part.sram_base + part.sram_size;
    if !(sp > part.sram_base && sp <= sram_end) {
        return Err(err(
            format!("initial stack pointer 0x{sp:08X} is outside SRAM (0x{:08X}..0x{sram_end:08X})", part.sram_base),
            format!("the image is not built for the {} (or not placed at its vector table)", part.name),
        ));
    }
    if reset & 1 == 0 {
        return Err(err(
            format!("reset vector 0x{reset:08X} is not a Thumb address (bit 0 clear)"),
            "a Cortex-M3 runs Thumb code only: the file is not a firmware image, or it is placed at the wrong address".into(),
        ));
    }
    let target = reset & !1;
    if input.image.get(target).is_none() {
        let (lo, hi) = (input.image.min_addr().unwrap_or(0), input.image.end_addr().unwrap_or(0));
        return Err(err(
            format!("reset vector 0x{reset:08X} points outside the {role} (0x{lo:08X}..0x{:08X})", hi.saturating_sub(1)),
            format!(
                "the {role} was linked for another address than where it is placed; {}",
                if role == Role::Firmware {
                    "QMK built for the wrong BOOTLOADER? (stm32duino: 0x08002000; none: 0x08000000)"
                } else {
                    "check bootloader.address"
                }
            ),
        ));
    }
    Ok(Vectors { table, initial_sp: sp, reset })
}

fn check_serial_region(mcu: Mcu, image: &Image, rule: &SerialRule) -> Result<(), String> {
    let Some(w) = &rule.write else { return Ok(()) };
    let len = w.byte_len() as u64;
    let start = w.address as u64;
    let end = start + len;
    let (base, size, mem) = match (w.memory, mcu) {
        (SerialMemory::Eeprom, Mcu::Avr(part)) => (0, part.eeprom_size as u64, "EEPROM"),
        // The recipe refuses EEPROM on parts without one.
        (SerialMemory::Eeprom, Mcu::Stm32(_)) => (0, 0, "EEPROM"),
        (SerialMemory::Flash, _) => (mcu.flash().start as u64, (mcu.flash().end - mcu.flash().start) as u64, "flash"),
    };
    if start < base {
        return Err(format!("address 0x{start:X} is below the {}'s {mem}, which starts at 0x{base:X}", mcu.name()));
    }
    if end > base + size {
        return Err(format!(
            "{len} bytes at 0x{start:X} run past the {}'s {size}-byte {mem} (last address 0x{:X})",
            mcu.name(),
            (base + size).saturating_sub(1)
        ));
    }
    if w.memory == SerialMemory::Flash {
        let hit = image.slice(start..end).ranges();
        if !hit.is_empty() {
            return Err(format!(
                "flash 0x{start:04X}..0x{:04X} holds image data at {}; put the serial number in unused flash or in EEPROM",
                end - 1,
                fmt_ranges(&hit)
            ));
        }
    }
    Ok(())
}
