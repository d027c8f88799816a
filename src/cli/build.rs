//! `build`, `check`, `parts`, `bootloaders`, `fuses decode`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

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

pub fn build(_a: BuildArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("build: being implemented")
}
pub fn check(_a: CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("check: being implemented")
}
pub fn parts() -> anyhow::Result<ExitCode> {
    for p in flashline::part::PARTS {
        println!(
            "{:<12} {:<12} sig {:02X}{:02X}{:02X}  flash {:>6} B (page {:>3})  eeprom {:>4} B",
            p.id, p.name, p.signature[0], p.signature[1], p.signature[2], p.flash_size, p.flash_page_size, p.eeprom_size
        );
    }
    Ok(ExitCode::SUCCESS)
}
pub fn bootloaders() -> anyhow::Result<ExitCode> {
    anyhow::bail!("bootloaders: being implemented")
}
pub fn fuses(_c: FusesCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("fuses: being implemented")
}
