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
use crate::part::{ClockClass, FuseSet, Part};
use crate::recipe::{Recipe, RecipeError, SerialMemory, SerialRule};
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
        "{role} {path} has data at {} beyond the {part}'s flash (0x0000..0x{last:04X}); is the mcu right?",
        fmt_ranges(.ranges)
    )]
    BeyondFlash { role: Role, path: PathBuf, part: &'static str, last: u32, ranges: Vec<Range<u64>> },
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
    pub part: &'static Part,
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
    /// Fuses to program: the recipe's bytes, missing ones from the catalog bootloader.
    pub fuses: FuseSet,
    /// The declared (or inferred from the catalog) clock class.
    pub clock: Option<ClockClass>,
    pub boot: BootSection,
    pub lock: Option<u8>,
    pub verify: VerifyPolicy,
    pub serial: Option<SerialRule>,
}

impl Production {
    /// Where `flashline build` writes by default: `<firmware-stem>_production.hex` next to the recipe.
    pub fn default_output(&self) -> PathBuf {
        let stem = self.recipe.firmware.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
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

fn hex_lower(b: &[u8]) -> String {
    ::hex::encode(b)
}

struct Input {
    path: PathBuf,
    sha256: String,
    image: Image,
}

fn load_input(role: Role, path: PathBuf, pin: Option<&str>) -> Result<Input, BuildError> {
    let name = path.display().to_string();
    let bytes = crate::input::read_bytes(&path, crate::input::HEX_LIMIT)
        .map_err(|e| BuildError::Hex { role, source: HexError::input(&name, e) })?;
    let sha256 = sha256_hex(&bytes);
    if let Some(pinned) = pin {
        if pinned != sha256 {
            return Err(BuildError::HashMismatch { role, path, pinned: pinned.to_string(), actual: sha256 });
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let image = hex::parse(&text, &name).map_err(|source| BuildError::Hex { role, source })?;
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
    let part = recipe.part();
    let dir = recipe_path.parent().unwrap_or(Path::new(""));
    let entry = recipe.bootloader.as_ref().and_then(|b| b.entry());
    let pins = recipe.sha256.clone().unwrap_or(crate::recipe::Pins { firmware: None, bootloader: None });

    // Inputs: pins first (a wrong file is the likeliest mistake), then syntax.
    let fw = load_input(Role::Firmware, dir.join(&recipe.firmware), pins.firmware.as_deref())?;
    let bl = match &recipe.bootloader {
        Some(spec) => Some(load_input(Role::Bootloader, dir.join(&spec.file), pins.bootloader.as_deref())?),
        None => None,
    };

    // Everything inside the part's flash.
    for (role, input) in std::iter::once((Role::Firmware, &fw)).chain(bl.as_ref().map(|b| (Role::Bootloader, b))) {
        let beyond = input.image.slice(part.flash_size as u64..u64::MAX).ranges();
        if !beyond.is_empty() {
            return Err(BuildError::BeyondFlash {
                role,
                path: input.path.clone(),
                part: part.name,
                last: part.flash_size - 1,
                ranges: beyond,
            });
        }
    }
    if let Some(bl) = &bl {
        let ov = fw.image.overlaps(&bl.image);
        if !ov.is_empty() {
            return Err(BuildError::Overlap { firmware: fw.path.clone(), bootloader: bl.path.clone(), ranges: ov });
        }
    }

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
    match &bl {
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
        check_serial_region(part, &image, rule).map_err(BuildError::Serial)?;
    }

    let hex = hex::to_string(&image, recipe.record_size);
    let image_sha256 = sha256_hex(hex.as_bytes());
    Ok(Production {
        recipe_path: recipe_path.to_path_buf(),
        recipe_sha256,
        part,
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
        fuses,
        clock,
        boot,
        lock: recipe.lock,
        verify: recipe.verify,
        serial: recipe.serial.clone(),
        recipe,
    })
}

fn check_serial_region(part: &Part, image: &Image, rule: &SerialRule) -> Result<(), String> {
    let Some(w) = &rule.write else { return Ok(()) };
    let len = w.byte_len() as u64;
    let start = w.address as u64;
    let end = start + len;
    let (size, mem) = match w.memory {
        SerialMemory::Eeprom => (part.eeprom_size as u64, "EEPROM"),
        SerialMemory::Flash => (part.flash_size as u64, "flash"),
    };
    if end > size {
        return Err(format!(
            "{len} bytes at 0x{start:X} run past the {}'s {size}-byte {mem} (last address 0x{:X})",
            part.name,
            size - 1
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
