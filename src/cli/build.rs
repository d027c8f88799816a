//! `build`, `check`, `parts`, `bootloaders`, `fuses decode`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use flashline::build::{self, Layout, Production};
use flashline::recipe::Protect;
use flashline::image::{Image, StartAddress};
use flashline::part::{FuseKind, FuseSet};
use flashline::{bootloader, fuse};

#[derive(Args)]
pub struct BuildArgs {
    /// Recipe YAML file.
    pub recipe: PathBuf,
    /// Output hex (default: <firmware-stem>_production.hex next to the recipe).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

#[derive(Args)]
pub struct CheckArgs {
    /// Recipe YAML file.
    pub recipe: PathBuf,
}

#[derive(Subcommand)]
pub enum FusesCommand {
    /// Print each fuse field in words.
    Decode {
        #[arg(long)]
        mcu: String,
        #[arg(long, value_parser = parse_u8)]
        low: Option<u8>,
        #[arg(long, value_parser = parse_u8)]
        high: Option<u8>,
        #[arg(long, value_parser = parse_u8)]
        extended: Option<u8>,
    },
}

/// Parse `0x5E`, `5E`h-less decimal `94`, or `0b01011110`.
pub fn parse_u8(s: &str) -> Result<u8, String> {
    let t = s.trim();
    let r = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u8::from_str_radix(h, 16)
    } else if let Some(b) = t.strip_prefix("0b") {
        u8::from_str_radix(b, 2)
    } else {
        t.parse()
    };
    r.map_err(|_| format!("'{s}' is not a byte (write 0x5E, 94 or 0b01011110)"))
}

fn summary(p: &Production) {
    let r = &p.recipe;
    println!("{} ({}, {}) from {}", r.sku, p.mcu.name(), p.mcu.family(), p.recipe_path.display());
    let show = |role: &str, path: &std::path::Path, sha: &str, im: &Image| {
        println!(
            "  {role:<10} {}  {}  {} bytes  sha256 {sha}",
            path.display(),
            fmt_ranges(&im.ranges()),
            im.len()
        );
        println!("  {:<10} {}", "", stflash_line(im));
    };
    show("firmware", &p.firmware_path, &p.firmware_sha256, &p.firmware_image);
    if let (Some(path), Some(sha), Some(im)) = (&p.bootloader_path, &p.bootloader_sha256, &p.bootloader_image) {
        show("bootloader", path, sha, im);
        if let Some(e) = p.bootloader_entry {
            let usb = e.usb.map(|u| format!(", USB {u}")).unwrap_or_default();
            println!("  {:<10} {}: {}{usb}", "catalog", e.name, e.description);
        }
    }
    let start = match p.image.start {
        Some(StartAddress::Segment { cs, ip }) => format!("{cs:04X}:{ip:04X}"),
        Some(StartAddress::Linear(a)) => format!("0x{a:08X}"),
        None => "none".into(),
    };
    println!("  {:<10} {}; {} bytes; start address {start}", "image", fmt_ranges(&p.image.ranges()), p.image.len());
    println!("  {:<10} {}", "", stflash_line(&p.image));
    match &p.layout {
        Layout::Avr(a) => {
            println!("  {:<10} {}", "boot", a.boot);
            println!(
                "  {:<10} {}  lock {}  clock {}  verify {}",
                "fuses",
                a.fuses,
                a.lock.map(|l| format!("0x{l:02X}")).unwrap_or_else(|| "-".into()),
                a.clock.map(|c| c.name()).unwrap_or("-"),
                p.verify.name()
            );
        }
        Layout::Stm32(s) => {
            println!("  {:<10} application at 0x{:08X}; {}", "vectors", s.app_start, s.app_vectors);
            if let Some(v) = &s.bootloader_vectors {
                println!("  {:<10} bootloader {v}", "");
            }
            println!(
                "  {:<10} {}  verify {}",
                "protect",
                match s.protect {
                    Some(Protect::Readout) => "readout (RDP level 1, set last; undone only by a mass erase)",
                    None => "none (RDP level 0)",
                },
                p.verify.name()
            );
        }
    }
    if let Some(s) = &p.serial {
        if let Some(pat) = s.pattern_str() {
            println!("  {:<10} barcodes must match {pat}", "serial");
        }
        if let Some(w) = &s.write {
            println!(
                "  {:<10} {} at {} 0x{:X}, {} bytes, first {}",
                "serial no.",
                w.format.name(),
                w.memory.name(),
                w.address,
                w.byte_len(),
                w.start
            );
        }
    }
}

/// What st-flash prints before writing this image as a binary (flat from its lowest address,
/// gaps 0xFF), so the engineer can compare with an st-flash log.
fn stflash_line(im: &Image) -> String {
    let (start, flat) = flashline::build::flat(im);
    let (md5, sum) = flashline::build::stflash_checksums(&flat);
    format!("as a binary at 0x{start:08X}: {} bytes, md5 checksum: {md5}, stlink checksum: 0x{sum:08x}", flat.len())
}

fn fmt_ranges(r: &[std::ops::Range<u64>]) -> String {
    if r.is_empty() {
        return "(empty)".into();
    }
    r.iter().map(|r| format!("0x{:04X}..0x{:04X}", r.start, r.end - 1)).collect::<Vec<_>>().join(", ")
}

/// `flashline build RECIPE [-o OUT.hex]`
pub fn build(a: BuildArgs) -> anyhow::Result<ExitCode> {
    let p = build::prepare(&a.recipe)?;
    let out = a.output.clone().unwrap_or_else(|| p.default_output());
    p.write(&out).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    summary(&p);
    println!("wrote {} ({} bytes of data, {} lines, {}-byte records)", out.display(), p.image.len(), p.hex.lines().count(), p.recipe.record_size);
    println!("sha256 {}  {}", p.image_sha256, out.display());
    Ok(ExitCode::SUCCESS)
}

/// `flashline check RECIPE`
pub fn check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let p = build::prepare(&a.recipe)?;
    summary(&p);
    println!("ok: {} passes every check (production image sha256 {})", p.recipe.sku, p.image_sha256);
    Ok(ExitCode::SUCCESS)
}

/// `flashline parts`
pub fn parts() -> anyhow::Result<ExitCode> {
    println!("{:<12} {:<12} {:<8} {:>7} {:>5} {:>7}  boot sections (BOOTSZ 00/01/10/11)", "id", "name", "sig", "flash", "page", "eeprom");
    for p in flashline::part::PARTS {
        println!(
            "{:<12} {:<12} {:02X}{:02X}{:02X}   {:>7} {:>5} {:>7}  {}",
            p.id,
            p.name,
            p.signature[0],
            p.signature[1],
            p.signature[2],
            p.flash_size,
            p.flash_page_size,
            p.eeprom_size,
            p.boot_sizes.iter().map(|b| b.to_string()).collect::<Vec<_>>().join("/")
        );
    }
    println!();
    println!(
        "{:<12} {:<12} {:<10} {:>7} {:>5} {:>6}  {:<21} {:<10} {:<10} option bytes  flash timings (datasheet)",
        "id", "name", "flash at", "flash", "page", "sram", "dev id (revisions)", "flash size", "unique id"
    );
    for p in flashline::stm32::STM32_PARTS.iter() {
        let revs = p.revisions.iter().map(|r| r.name).collect::<Vec<_>>().join(",");
        let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        println!(
            "{:<12} {:<12} 0x{:08X} {:>7} {:>5} {:>6}  {:<21} 0x{:08X} 0x{:08X} 0x{:08X}  half-word {}/{}/{} us, page erase {}-{} ms, mass erase {}-{} ms",
            p.id,
            p.name,
            p.flash_base,
            p.flash_size,
            p.page_size,
            p.sram_size,
            format!("0x{:03X} ({revs})", p.dev_id),
            p.flash_size_reg,
            p.unique_id_addr,
            p.option_bytes.base,
            us(p.t_prog[0]),
            us(p.t_prog[1]),
            us(p.t_prog[2]),
            ms(p.t_erase_page[0]),
            ms(p.t_erase_page[1]),
            ms(p.t_mass_erase[0]),
            ms(p.t_mass_erase[1]),
        );
    }
    println!("  STM32: SRAM at 0x20000000, DBGMCU_IDCODE at 0xE0042000, option bytes RDP/USER/DATA0/DATA1/WRP0-3 (each with its complement)");
    Ok(ExitCode::SUCCESS)
}

/// `flashline bootloaders`
pub fn bootloaders() -> anyhow::Result<ExitCode> {
    println!("{:<28} {:<12} {:<11} {:<14} {:<9} {:<15} description", "name", "family", "mcu", "fuses", "usb", "location");
    for b in bootloader::CATALOG {
        let fuses = if b.fuses.is_empty() { "-".to_string() } else { b.fuses.to_string() };
        let app = if b.app_start != 0 { format!(", application at 0x{:08X}", b.app_start) } else { String::new() };
        println!(
            "{:<28} {:<12} {:<11} {:<14} {:<9} {:<15} {}{}{app}",
            b.name,
            b.family.name(),
            b.mcus.join(","),
            fuses,
            b.usb.map(|u| u.to_string()).unwrap_or_else(|| "-".into()),
            format!("0x{:04X}+{}", b.start, b.size),
            b.description,
            if b.with_sketch { " (published hex includes a sketch)" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `flashline fuses decode --mcu M [--low X] [--high X] [--extended X]`
pub fn fuses(c: FusesCommand) -> anyhow::Result<ExitCode> {
    let FusesCommand::Decode { mcu, low, high, extended } = c;
    let part = flashline::part::find(&mcu)
        .ok_or_else(|| anyhow::anyhow!("unknown mcu '{mcu}' (known: {})", flashline::part::ids().join(", ")))?;
    let set = FuseSet { low, high, extended };
    if set.is_empty() {
        anyhow::bail!("give at least one of --low, --high, --extended");
    }
    flashline::fuse::check_fits(part, &set).map_err(|e| anyhow::anyhow!(e))?;
    println!("{} fuses {}", part.name, set);
    for f in fuse::decode(part, set) {
        println!("  {f}");
    }
    for k in FuseKind::ALL {
        if let (Some(v), Some(mask)) = (set.get(k), part.fuse_masks.get(k)) {
            if mask != 0xFF {
                println!(
                    "  note: {k} fuse bits {:08b} do not exist on the {} and read back as anything (0x{v:02X} & 0x{mask:02X} = 0x{:02X} is what counts)",
                    !mask,
                    part.name,
                    v & mask
                );
            }
        }
    }
    let clock = set.low.map(|l| fuse::clock_class(part, l));
    if let Err(e) = fuse::check_safety(part, &set, clock, &[]) {
        for p in e.problems {
            println!("  WARNING ({}): {}", p.hazard, p.message);
        }
    }
    Ok(ExitCode::SUCCESS)
}
