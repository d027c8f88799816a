//! USBasp (Thomas Fischl's firmware, VID:PID 16C0:05DC) over vendor control transfers.
//!
//! Requests as avrdude's `usbasp.c` sends them: `wValue` = bytes 0..1 and `wIndex` = bytes 2..3
//! of a four-byte argument. Where flashline differs from avrdude, it does the same work with
//! fewer transfers and no needless waits, keeping the result exact:
//! * no re-CONNECT + 100 ms sleep after chip erase (the target stays in programming mode);
//! * SETLONGADDRESS only when the firmware's auto-incrementing address is not already right;
//! * reads in 254-byte transfers (V-USB's 8-bit `wLength` limit) instead of 200;
//! * page writes rely on the firmware's own flush-and-wait, so no host delay follows them.
//!
//! Entering programming mode walks an SCK ladder (375 kHz → 187.5 → 93.75 → 32 → 16 → 8 kHz)
//! so a target on a slow clock (fresh ATmega with CKDIV8, a 1 MHz RC part) still connects.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{FailureClass, ProgError, ProgResult};
use crate::isp::{self, Cmd};
use crate::part::Part;
use crate::programmer::usb::UsbTransport;
use crate::programmer::{Programmer, ProgrammerInfo, ProgrammerKind};

/// Vendor request numbers (avrdude `usbasp.h`).
mod req {
    pub const CONNECT: u8 = 1;
    pub const DISCONNECT: u8 = 2;
    pub const TRANSMIT: u8 = 3;
    pub const READFLASH: u8 = 4;
    pub const ENABLEPROG: u8 = 5;
    pub const WRITEFLASH: u8 = 6;
    pub const READEEPROM: u8 = 7;
    pub const SETLONGADDRESS: u8 = 9;
    pub const SETISPSCK: u8 = 10;
    pub const GETCAPABILITIES: u8 = 127;
    pub const BLOCKFLAG_FIRST: u8 = 1;
    pub const BLOCKFLAG_LAST: u8 = 2;
}

/// SCK ladder tried by [`Usbasp::enter_progmode`]: (firmware option id, Hz), fastest first.
pub const SCK_LADDER: &[(u8, u32)] = &[(10, 375_000), (9, 187_500), (8, 93_750), (7, 32_000), (6, 16_000), (5, 8_000)];

/// Largest data stage the firmware handles (V-USB with 8-bit `wLength`).
const MAX_BLOCK: usize = 254;
/// Largest write data stage avrdude uses; kept for writes so a page never straddles odd sizes.
const WRITE_BLOCK: usize = 200;

/// Per-transfer timeout: the USB part plus the SPI time of `n` bytes at `sck_hz` (each byte is
/// one 32-clock ISP instruction) plus the firmware's page waits, with margin.
fn timeout_for(n: usize, sck_hz: u32) -> Duration {
    let spi_us = (n as u64 + 4) * 32 * 1_000_000 / sck_hz.max(1) as u64;
    Duration::from_millis(1000) + Duration::from_micros(spi_us * 2) + Duration::from_millis(10 * (n as u64 / 64 + 1))
}

/// `93.75 kHz`, `375 kHz`, `8 kHz`.
pub(crate) fn fmt_hz(hz: u32) -> String {
    if hz.is_multiple_of(1000) {
        format!("{} kHz", hz / 1000)
    } else {
        format!("{} kHz", hz as f64 / 1000.0)
    }
}

/// USBasp driver over any [`UsbTransport`].
pub struct Usbasp<T: UsbTransport> {
    usb: T,
    /// First rung of the SCK ladder (index into [`SCK_LADDER`]).
    start_rung: usize,
    sck_hz: u32,
    /// The firmware's auto-incrementing address once SETLONGADDRESS put it in "new mode".
    fw_address: Option<u32>,
    capabilities: u32,
    notes: Vec<String>,
}

impl<T: UsbTransport> Usbasp<T> {
    pub fn new(usb: T) -> Self {
        Usbasp { usb, start_rung: 0, sck_hz: SCK_LADDER[0].1, fw_address: None, capabilities: 0, notes: Vec::new() }
    }

    /// Start the SCK ladder at (or below) `hz` instead of 375 kHz.
    pub fn with_max_sck(mut self, hz: u32) -> Self {
        self.start_rung = SCK_LADDER.iter().position(|(_, f)| *f <= hz).unwrap_or(SCK_LADDER.len() - 1);
        self
    }

    pub fn transport(&self) -> &T {
        &self.usb
    }

    fn what(&self, op: &str) -> String {
        format!("USBasp {}: {op}", self.usb.identity())
    }

    async fn cin(&mut self, op: &str, request: u8, arg: [u8; 4], len: usize) -> ProgResult<Vec<u8>> {
        let value = u16::from_le_bytes([arg[0], arg[1]]);
        let index = u16::from_le_bytes([arg[2], arg[3]]);
        let to = timeout_for(len, self.sck_hz);
        self.usb.control_in(request, value, index, len as u16, to).await.map_err(|e| e.into_prog(&self.what(op)))
    }

    async fn cout(&mut self, op: &str, request: u8, arg: [u8; 4], data: &[u8]) -> ProgResult<()> {
        let value = u16::from_le_bytes([arg[0], arg[1]]);
        let index = u16::from_le_bytes([arg[2], arg[3]]);
        let to = timeout_for(data.len(), self.sck_hz);
        self.usb.control_out(request, value, index, data, to).await.map_err(|e| e.into_prog(&self.what(op)))
    }

    async fn set_address(&mut self, addr: u32) -> ProgResult<()> {
        if self.fw_address != Some(addr) {
            self.cin("set address", req::SETLONGADDRESS, addr.to_le_bytes(), 4).await?;
            self.fw_address = Some(addr);
        }
        Ok(())
    }

    async fn read_block(&mut self, request: u8, addr: u32, len: usize) -> ProgResult<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        let mut a = addr;
        while out.len() < len {
            let n = (len - out.len()).min(MAX_BLOCK);
            self.set_address(a).await?;
            let lo = (a as u16).to_le_bytes();
            let got = self.cin("read", request, [lo[0], lo[1], 0, 0], n).await?;
            if got.len() != n {
                self.fw_address = None;
                return Err(ProgError::comm(format!("{}: asked for {n} bytes at 0x{a:05X}, got {}", self.what("read"), got.len())));
            }
            out.extend_from_slice(&got);
            a += n as u32;
            self.fw_address = Some(a);
        }
        Ok(out)
    }

    /// Diagnose a failed programming enable: is anything on MISO at all?
    async fn diagnose_no_sync(&mut self) -> ProgResult<ProgError> {
        let r = self.cin("diagnose", req::TRANSMIT, isp::PROG_ENABLE, 4).await?;
        let slowest = SCK_LADDER[SCK_LADDER.len() - 1].1;
        Ok(if r.iter().all(|b| *b == 0x00) || r.iter().all(|b| *b == 0xFF) {
            ProgError::with_hint(
                FailureClass::NoTarget,
                format!("{}: nothing answers on MISO (reads 0x{:02X}) at any SCK down to {slowest} Hz", self.what("programming enable"), r[0]),
            )
        } else {
            ProgError::with_hint(
                FailureClass::ProgEnable,
                format!("{}: target never echoed 0x53 at any SCK down to {slowest} Hz (last reply {:02X?})", self.what("programming enable"), r),
            )
        })
    }
}

#[async_trait]
impl<T: UsbTransport> Programmer for Usbasp<T> {
    fn info(&self) -> ProgrammerInfo {
        ProgrammerInfo { kind: ProgrammerKind::Usbasp, identity: self.usb.identity() }
    }

    async fn open(&mut self) -> ProgResult<()> {
        // Old firmwares answer GETCAPABILITIES with nothing; that is fine.
        let caps = self.cin("get capabilities", req::GETCAPABILITIES, [0; 4], 4).await?;
        self.capabilities = if caps.len() == 4 { u32::from_le_bytes([caps[0], caps[1], caps[2], caps[3]]) } else { 0 };
        Ok(())
    }

    async fn enter_progmode(&mut self, _part: &'static Part) -> ProgResult<()> {
        for &(option, hz) in &SCK_LADDER[self.start_rung..] {
            let r = self.cin("set SCK", req::SETISPSCK, [option, 0, 0, 0], 4).await?;
            if r.first().copied() != Some(0) {
                return Err(ProgError::comm(format!("{}: firmware refused SCK option {option} — update the USBasp firmware", self.what("set SCK"))));
            }
            self.sck_hz = hz;
            self.cin("connect", req::CONNECT, [0; 4], 4).await?;
            self.fw_address = None;
            // RESET must be held low ≥ 20 ms before Programming Enable (datasheet).
            self.usb.delay(Duration::from_millis(20)).await;
            let r = self.cin("programming enable", req::ENABLEPROG, [0; 4], 4).await?;
            if r.len() == 1 && r[0] == 0 {
                tracing::debug!(sck_hz = hz, "usbasp in programming mode");
                let first = SCK_LADDER[self.start_rung].1;
                if hz != first {
                    self.notes.push(format!("lowered SCK to {} (target did not answer at {})", fmt_hz(hz), fmt_hz(first)));
                }
                return Ok(());
            }
            tracing::debug!(sck_hz = hz, "usbasp: no sync, trying slower SCK");
        }
        let err = self.diagnose_no_sync().await?;
        let _ = self.cin("disconnect", req::DISCONNECT, [0; 4], 4).await;
        Err(err)
    }

    async fn leave_progmode(&mut self) -> ProgResult<()> {
        self.cin("disconnect", req::DISCONNECT, [0; 4], 4).await?;
        self.fw_address = None;
        Ok(())
    }

    async fn spi(&mut self, cmd: Cmd) -> ProgResult<Cmd> {
        let r = self.cin("SPI", req::TRANSMIT, cmd, 4).await?;
        r.as_slice().try_into().map_err(|_| ProgError::comm(format!("{}: {} reply bytes instead of 4", self.what("SPI"), r.len())))
    }

    fn read_block_size(&self) -> usize {
        MAX_BLOCK * 8
    }

    fn sck_hz(&self) -> Option<u32> {
        Some(self.sck_hz)
    }

    fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    async fn write_flash_page(&mut self, part: &'static Part, addr: u32, data: &[u8]) -> ProgResult<()> {
        let page = part.flash_page_size as usize;
        if data.len() != page || !addr.is_multiple_of(part.flash_page_size) {
            return Err(ProgError::new(FailureClass::Internal, format!("page write at 0x{addr:05X} with {} bytes (page is {page})", data.len())));
        }
        // The firmware flushes the page itself once `page` bytes have arrived and waits for
        // the write to finish before acknowledging the transfer.
        let chunks: Vec<&[u8]> = data.chunks(WRITE_BLOCK).collect();
        let last = chunks.len() - 1;
        let mut a = addr;
        for (i, chunk) in chunks.into_iter().enumerate() {
            self.set_address(a).await?;
            let mut flags = 0;
            if i == 0 {
                flags |= req::BLOCKFLAG_FIRST;
            }
            if i == last {
                flags |= req::BLOCKFLAG_LAST;
            }
            let lo = (a as u16).to_le_bytes();
            let header = [lo[0], lo[1], page as u8, flags | (((page & 0xF00) >> 4) as u8)];
            if let Err(e) = self.cout("write flash", req::WRITEFLASH, header, chunk).await {
                self.fw_address = None;
                return Err(e);
            }
            a += chunk.len() as u32;
            self.fw_address = Some(a);
        }
        Ok(())
    }

    async fn read_flash(&mut self, _part: &'static Part, addr: u32, len: usize) -> ProgResult<Vec<u8>> {
        self.read_block(req::READFLASH, addr, len).await
    }

    async fn read_eeprom(&mut self, _part: &'static Part, addr: u32, len: usize) -> ProgResult<Vec<u8>> {
        self.read_block(req::READEEPROM, addr, len).await
    }

    async fn wait_us(&mut self, us: u32) {
        self.usb.delay(Duration::from_micros(us as u64)).await;
    }

    async fn close(&mut self) -> ProgResult<()> {
        let _ = self.cin("disconnect", req::DISCONNECT, [0; 4], 4).await;
        Ok(())
    }
}
