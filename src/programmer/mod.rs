//! The programmer seam: one small async trait that every ISP programmer driver implements.
//!
//! A driver knows its wire protocol and nothing else: no terminal, no database, no recipe.
//! The job runner ([`crate::job`]) composes these operations into identify → erase → program →
//! verify → fuses → lock and emits progress events.
//!
//! Most operations have default implementations in terms of [`Programmer::spi`] (one raw
//! four-byte ISP instruction), so a driver only overrides what its protocol does better
//! (paged writes, block reads).

pub mod buspirate;
pub mod list;
pub mod usb;
pub mod usbasp;
pub mod usbtiny;

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{FailureClass, ProgError, ProgResult};
use crate::isp::{self, Cmd};
use crate::part::{FuseKind, Part};

pub mod open;
pub mod sim;
pub mod avrdude;
pub mod stk500;

pub use open::{open, ProgrammerSpec};
pub use sim::SimProgrammer;

/// Programmer types flashline drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProgrammerKind {
    /// STK500v1 ISP programmers: ArduinoISP, the QMK Pro Micro / Teensy 2.0 ISP firmwares.
    #[serde(alias = "stk500v1")]
    Avrisp,
    /// Optiboot-style STK500v1 bootloaders (self-programming, no fuses).
    Arduino,
    Usbasp,
    Usbtiny,
    Buspirate,
    /// Any other programmer, through an installed avrdude.
    Avrdude,
    /// In-process simulated programmer and target.
    Sim,
}

impl ProgrammerKind {
    /// Programmers whose firmware clocks SCK at one fixed rate and never checks the
    /// Programming Enable echo (ArduinoISP and its kin): a target too slow for that rate reads
    /// exactly like a missing one.
    pub fn fixed_sck(self) -> bool {
        self == ProgrammerKind::Avrisp
    }

    pub fn name(self) -> &'static str {
        match self {
            ProgrammerKind::Avrisp => "avrisp",
            ProgrammerKind::Arduino => "arduino",
            ProgrammerKind::Usbasp => "usbasp",
            ProgrammerKind::Usbtiny => "usbtiny",
            ProgrammerKind::Buspirate => "buspirate",
            ProgrammerKind::Avrdude => "avrdude",
            ProgrammerKind::Sim => "sim",
        }
    }

    pub fn parse(s: &str) -> Option<ProgrammerKind> {
        Some(match s.to_ascii_lowercase().as_str() {
            "avrisp" | "stk500v1" | "stk500" => ProgrammerKind::Avrisp,
            "arduino" => ProgrammerKind::Arduino,
            "usbasp" => ProgrammerKind::Usbasp,
            "usbtiny" => ProgrammerKind::Usbtiny,
            "buspirate" => ProgrammerKind::Buspirate,
            "avrdude" => ProgrammerKind::Avrdude,
            "sim" => ProgrammerKind::Sim,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ProgrammerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Who a programmer is, for records: kind plus what tells identical programmers apart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProgrammerInfo {
    pub kind: ProgrammerKind,
    /// Stable identity: tty path, `usb:SERIAL`, `usb:BUS-PORT`, `sim:SLOT`…
    pub identity: String,
}

impl std::fmt::Display for ProgrammerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.kind, self.identity)
    }
}

/// Sleep for a part delay given in microseconds.
pub async fn delay_us(us: u32) {
    if us > 0 {
        tokio::time::sleep(Duration::from_micros(us as u64)).await;
    }
}

/// An ISP programmer with a target behind it.
///
/// Addresses are flash *byte* addresses; drivers convert to word addresses where their
/// protocol wants them. Every method must return within a bounded time (drivers own their
/// timeouts) and map transport failures to a [`ProgError`] with the right [`FailureClass`].
#[async_trait]
pub trait Programmer: Send {
    fn info(&self) -> ProgrammerInfo;

    /// Open the link and sync with the programmer itself (not the target). Safe to retry.
    async fn open(&mut self) -> ProgResult<()>;

    /// Reset the target and enter serial programming mode (Programming Enable echo check).
    /// Drivers that can lower SCK retry slower before failing with [`FailureClass::ProgEnable`].
    async fn enter_progmode(&mut self, part: &'static Part) -> ProgResult<()>;

    /// Leave programming mode and release RESET so the target runs.
    async fn leave_progmode(&mut self) -> ProgResult<()>;

    /// One raw four-byte ISP instruction; returns the four bytes read on MISO.
    async fn spi(&mut self, cmd: Cmd) -> ProgResult<Cmd>;

    /// Close the link (release the port / device). Must not fail on an already-dead link.
    async fn close(&mut self) -> ProgResult<()> {
        Ok(())
    }

    /// The SPI clock the programmer settled on in the last [`Programmer::enter_progmode`], when
    /// it knows it (drivers that lower SCK report it here; the job records it).
    fn sck_hz(&self) -> Option<u32> {
        None
    }

    /// Drain operator-relevant notes the driver gathered (e.g. "lowered SCK to 93.75 kHz").
    /// The job turns each into a [`crate::job::JobEvent::Note`] and keeps it in the report.
    fn take_notes(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// Whether [`Programmer::chip_erase`] really leaves flash blank. A bootloader (`arduino`)
    /// cannot chip-erase: it erases each page as it writes it, so a job must not skip pages that
    /// are all 0xFF when this is false.
    fn erase_clears_flash(&self) -> bool {
        true
    }

    /// Wait out a self-timed write of the target (`us` microseconds, a part delay). Drivers
    /// whose transport keeps its own clock (the USB emulators' modelled time) override this;
    /// the default sleeps.
    async fn wait_us(&mut self, us: u32) {
        delay_us(us).await
    }

    /// Largest read block the protocol handles well (the job reads in chunks of this size).
    fn read_block_size(&self) -> usize {
        256
    }

    /// Read the three signature bytes.
    async fn read_signature(&mut self) -> ProgResult<[u8; 3]> {
        let mut sig = [0u8; 3];
        for (i, s) in sig.iter_mut().enumerate() {
            *s = self.spi(isp::read_signature(i as u8)).await?[3];
        }
        Ok(sig)
    }

    /// Chip erase, waiting the part's erase delay.
    async fn chip_erase(&mut self, part: &'static Part) -> ProgResult<()> {
        self.spi(isp::CHIP_ERASE).await?;
        self.wait_us(part.delays.chip_erase_us).await;
        Ok(())
    }

    /// Write one flash page. `addr` is page-aligned and `data.len() == part.flash_page_size`.
    /// Returns once the page write has completed (delay waited or ready polled).
    async fn write_flash_page(&mut self, part: &'static Part, addr: u32, data: &[u8]) -> ProgResult<()> {
        if part.flash_size > 0x20000 {
            self.spi(isp::load_extended_address(addr)).await?;
        }
        for (i, b) in data.iter().enumerate() {
            self.spi(isp::load_page(addr + i as u32, *b)).await?;
        }
        self.spi(isp::write_page(addr)).await?;
        self.wait_us(part.delays.flash_page_us).await;
        Ok(())
    }

    /// Read `len` bytes of flash from byte address `addr`.
    async fn read_flash(&mut self, part: &'static Part, addr: u32, len: usize) -> ProgResult<Vec<u8>> {
        let _ = part;
        let mut out = Vec::with_capacity(len);
        for a in addr..addr + len as u32 {
            out.push(self.spi(isp::read_flash(a)).await?[3]);
        }
        Ok(out)
    }

    /// Write EEPROM bytes (byte mode, waiting the part's EEPROM delay after each).
    async fn write_eeprom(&mut self, part: &'static Part, addr: u32, data: &[u8]) -> ProgResult<()> {
        for (i, b) in data.iter().enumerate() {
            self.spi(isp::write_eeprom(addr + i as u32, *b)).await?;
            self.wait_us(part.delays.eeprom_us).await;
        }
        Ok(())
    }

    /// Read EEPROM bytes.
    async fn read_eeprom(&mut self, part: &'static Part, addr: u32, len: usize) -> ProgResult<Vec<u8>> {
        let _ = part;
        let mut out = Vec::with_capacity(len);
        for a in addr..addr + len as u32 {
            out.push(self.spi(isp::read_eeprom(a)).await?[3]);
        }
        Ok(out)
    }

    /// Read a fuse byte (raw: bits that do not exist come back as whatever the chip says).
    async fn read_fuse(&mut self, part: &'static Part, kind: FuseKind) -> ProgResult<u8> {
        if part.fuse_masks.get(kind).is_none() {
            return Err(ProgError::new(FailureClass::Config, format!("{} has no {kind} fuse", part.name)));
        }
        Ok(self.spi(isp::read_fuse(kind)).await?[3])
    }

    /// Write a fuse byte and wait the part's fuse delay.
    async fn write_fuse(&mut self, part: &'static Part, kind: FuseKind, value: u8) -> ProgResult<()> {
        if part.fuse_masks.get(kind).is_none() {
            return Err(ProgError::new(FailureClass::Config, format!("{} has no {kind} fuse", part.name)));
        }
        self.spi(isp::write_fuse(kind, value)).await?;
        self.wait_us(part.delays.fuse_us).await;
        Ok(())
    }

    async fn read_lock(&mut self, _part: &'static Part) -> ProgResult<u8> {
        Ok(self.spi(isp::READ_LOCK).await?[3])
    }

    async fn write_lock(&mut self, part: &'static Part, value: u8) -> ProgResult<()> {
        self.spi(isp::write_lock(part, value)).await?;
        self.wait_us(part.delays.fuse_us).await;
        Ok(())
    }
}
