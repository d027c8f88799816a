//! USBtinyISP / SparkFun PocketAVR (VID:PID 1781:0C9F) over vendor control transfers.
//!
//! Requests as avrdude's `usbtiny.c` sends them: SPI carries one ISP instruction as
//! `wValue = c1c0`, `wIndex = c3c2`; FLASH_READ / FLASH_WRITE / EEPROM_READ / EEPROM_WRITE carry
//! a **16-bit byte address** in `wIndex` and stream up to 128 bytes (fewer at slow SCK).
//!
//! **Above 64 KiB** (AT90USB1286, AT90USB1287): the firmware's address wraps at 0xFFFF, so a
//! chunked read there returns the low 64 KiB again — the seed guide's "USBtinyISP does not
//! support 128 KiB parts". avrdude 7.1 reads such addresses with one SPI instruction per byte;
//! flashline does the same for reads, and writes keep using FLASH_WRITE (loading the page
//! buffer only needs the in-page offset, which survives the wrap) followed by the Write Page
//! instruction with the full word address. Reads there therefore cost one transfer per byte;
//! with `verify: written` only the bytes the image occupies are read.
//!
//! Unlike avrdude, flashline does not re-initialise (POWERUP + 50 ms) after chip erase.
//! Entering programming mode pulses RESET and retries, then walks an SCK-period ladder
//! (avrdude's `-B`) so slow-clocked targets connect.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{FailureClass, ProgError, ProgResult};
use crate::isp::{self, Cmd};
use crate::part::Part;
use crate::programmer::usb::UsbTransport;
use crate::programmer::{Programmer, ProgrammerInfo, ProgrammerKind};

mod req {
    pub const POWERUP: u8 = 5;
    pub const POWERDOWN: u8 = 6;
    pub const SPI: u8 = 7;
    pub const FLASH_READ: u8 = 9;
    pub const FLASH_WRITE: u8 = 10;
    pub const EEPROM_READ: u8 = 11;
    pub const RESET_LOW: u16 = 0;
    pub const RESET_HIGH: u16 = 1;
}

/// SCK periods (µs) tried in order; 10 µs is avrdude's default, 250 µs the firmware's maximum.
pub const SCK_PERIOD_LADDER: &[u8] = &[10, 20, 50, 100, 250];
/// Largest chunk per transfer (avrdude `CHUNK_SIZE`).
const CHUNK_SIZE: usize = 128;
/// Programming-enable tries per SCK period, with a RESET pulse between them.
const PE_TRIES: usize = 2;

/// USBtinyISP driver over any [`UsbTransport`].
pub struct Usbtiny<T: UsbTransport> {
    usb: T,
    start_rung: usize,
    sck_period: u8,
    notes: Vec<String>,
}

impl<T: UsbTransport> Usbtiny<T> {
    pub fn new(usb: T) -> Self {
        Usbtiny { usb, start_rung: 0, sck_period: SCK_PERIOD_LADDER[0], notes: Vec::new() }
    }

    /// Start the ladder at a period of at least `us` µs (avrdude's `-B`).
    pub fn with_sck_period(mut self, us: u8) -> Self {
        self.start_rung = SCK_PERIOD_LADDER.iter().position(|p| *p >= us).unwrap_or(SCK_PERIOD_LADDER.len() - 1);
        self
    }

    pub fn sck_period(&self) -> u8 {
        self.sck_period
    }

    pub fn transport(&self) -> &T {
        &self.usb
    }

    /// Bytes per transfer at the current SCK: halved for slow clocks so one transfer stays short
    /// (same rule as avrdude).
    fn chunk_size(&self) -> usize {
        let mut chunk = CHUNK_SIZE;
        let mut p = self.sck_period as u32;
        while chunk > 8 && p > 16 {
            chunk >>= 1;
            p >>= 1;
        }
        chunk
    }

    fn what(&self, op: &str) -> String {
        format!("USBtinyISP {}: {op}", self.usb.identity())
    }

    fn timeout(&self, bytes: usize) -> Duration {
        // 500 ms USB base plus 32 SCK periods per byte, doubled for margin.
        Duration::from_millis(500) + Duration::from_micros(2 * 32 * self.sck_period as u64 * bytes as u64)
    }

    async fn cin(&mut self, op: &str, request: u8, value: u16, index: u16, len: usize) -> ProgResult<Vec<u8>> {
        let to = self.timeout(len.max(4));
        let r = self.usb.control_in(request, value, index, len as u16, to).await.map_err(|e| e.into_prog(&self.what(op)))?;
        if r.len() != len {
            return Err(ProgError::comm(format!("{}: expected {len} bytes, got {}", self.what(op), r.len())));
        }
        Ok(r)
    }

    async fn powerup(&mut self, reset: u16) -> ProgResult<()> {
        self.cin("power up", req::POWERUP, self.sck_period as u16, reset, 0).await.map(|_| ())
    }

    async fn chunked_read(&mut self, request: u8, addr: u32, len: usize) -> ProgResult<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        let chunk = self.chunk_size();
        while out.len() < len {
            let a = addr + out.len() as u32;
            let n = (len - out.len()).min(chunk);
            let got = self.cin("read", request, 0, a as u16, n).await?;
            out.extend_from_slice(&got);
        }
        Ok(out)
    }
}

#[async_trait]
impl<T: UsbTransport> Programmer for Usbtiny<T> {
    fn info(&self) -> ProgrammerInfo {
        ProgrammerInfo { kind: ProgrammerKind::Usbtiny, identity: self.usb.identity() }
    }

    async fn open(&mut self) -> ProgResult<()> {
        Ok(())
    }

    async fn enter_progmode(&mut self, _part: &'static Part) -> ProgResult<()> {
        let mut last = [0u8; 4];
        for &period in &SCK_PERIOD_LADDER[self.start_rung..] {
            self.sck_period = period;
            self.powerup(req::RESET_LOW).await?;
            // RESET low ≥ 20 ms before Programming Enable.
            self.usb.delay(Duration::from_millis(20)).await;
            for _ in 0..PE_TRIES {
                last = self.spi(isp::PROG_ENABLE).await?;
                if isp::prog_enable_ok(&last) {
                    tracing::debug!(sck_period_us = period, "usbtiny in programming mode");
                    let first = SCK_PERIOD_LADDER[self.start_rung];
                    if period != first {
                        self.notes.push(format!("lowered SCK to a {period} µs period (target did not answer at {first} µs)"));
                    }
                    return Ok(());
                }
                // Out of sync: pulse RESET and try again.
                self.powerup(req::RESET_HIGH).await?;
                self.powerup(req::RESET_LOW).await?;
                self.usb.delay(Duration::from_millis(20)).await;
            }
        }
        let slowest = SCK_PERIOD_LADDER[SCK_PERIOD_LADDER.len() - 1];
        let _ = self.cin("power down", req::POWERDOWN, 0, 0, 0).await;
        if last.iter().all(|b| *b == 0) || last.iter().all(|b| *b == 0xFF) {
            Err(ProgError::with_hint(
                FailureClass::NoTarget,
                format!("{}: nothing answers on MISO (reads 0x{:02X}) down to a {slowest} µs SCK period", self.what("programming enable"), last[0]),
            ))
        } else {
            Err(ProgError::with_hint(
                FailureClass::ProgEnable,
                format!("{}: target never echoed 0x53 down to a {slowest} µs SCK period (last reply {last:02X?})", self.what("programming enable")),
            ))
        }
    }

    async fn leave_progmode(&mut self) -> ProgResult<()> {
        self.cin("power down", req::POWERDOWN, 0, 0, 0).await.map(|_| ())
    }

    async fn spi(&mut self, cmd: Cmd) -> ProgResult<Cmd> {
        let r = self.cin("SPI", req::SPI, u16::from_le_bytes([cmd[0], cmd[1]]), u16::from_le_bytes([cmd[2], cmd[3]]), 4).await?;
        Ok([r[0], r[1], r[2], r[3]])
    }

    fn read_block_size(&self) -> usize {
        CHUNK_SIZE * 16
    }

    fn sck_hz(&self) -> Option<u32> {
        Some(1_000_000 / self.sck_period.max(1) as u32)
    }

    fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    async fn write_flash_page(&mut self, part: &'static Part, addr: u32, data: &[u8]) -> ProgResult<()> {
        if part.flash_size > 0x20000 {
            self.spi(isp::load_extended_address(addr)).await?;
        }
        let chunk = self.chunk_size().min(part.flash_page_size as usize);
        for (i, c) in data.chunks(chunk).enumerate() {
            let a = addr + (i * chunk) as u32;
            // wValue 0: no per-byte wait (the page buffer takes bytes at SPI speed).
            let to = self.timeout(c.len());
            self.usb.control_out(req::FLASH_WRITE, 0, a as u16, c, to).await.map_err(|e| e.into_prog(&self.what("write flash")))?;
        }
        self.spi(isp::write_page(addr)).await?;
        self.usb.delay(Duration::from_micros(part.delays.flash_page_us as u64)).await;
        Ok(())
    }

    async fn read_flash(&mut self, _part: &'static Part, addr: u32, len: usize) -> ProgResult<Vec<u8>> {
        let end = addr + len as u32;
        let low_end = end.min(0x10000);
        let mut out = if addr < low_end { self.chunked_read(req::FLASH_READ, addr, (low_end - addr) as usize).await? } else { Vec::new() };
        // Above 64 KiB the firmware's 16-bit address cannot reach: one instruction per byte.
        for a in addr.max(0x10000)..end {
            out.push(self.spi(isp::read_flash(a)).await?[3]);
        }
        Ok(out)
    }

    async fn read_eeprom(&mut self, _part: &'static Part, addr: u32, len: usize) -> ProgResult<Vec<u8>> {
        self.chunked_read(req::EEPROM_READ, addr, len).await
    }

    async fn wait_us(&mut self, us: u32) {
        self.usb.delay(Duration::from_micros(us as u64)).await;
    }

    async fn close(&mut self) -> ProgResult<()> {
        let _ = self.usb.control_in(req::POWERDOWN, 0, 0, 0, Duration::from_millis(500)).await;
        Ok(())
    }
}
