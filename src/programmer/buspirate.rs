//! Bus Pirate (v3/v4, firmware ≥ v5.10) as an AVR ISP programmer, in binary SPI mode over a
//! serial port (`tokio-serial`, 115200 baud).
//!
//! Wiring (seed guide): `+5V`→VCC, `GND`→GND, `CS`→RESET, `CLK`→SCK, `MOSI`→MOSI, `MISO`→MISO,
//! on the 10-pin header (not the 5-pin ICSP header, which programs the Bus Pirate's own PIC).
//!
//! Protocol facts as avrdude's `buspirate.c` uses them: twenty `0x00` bytes enter binary
//! bitbang mode (`BBIO1`), `0x01` enters SPI (`SPI1`), `0100wxyz` sets power/pull-ups/AUX/CS,
//! `01100xxx` the SPI speed, `1000wxyz` the SPI configuration (`0x8A`: 3.3 V push-pull, idle
//! low, change on the trailing edge), `0001xxxx` is a bulk transfer of 1–16 bytes, `0x05` is
//! write-then-read without touching CS, and firmware v6 adds `0x06` AVR extended commands (bulk
//! flash read).
//!
//! Where flashline does the same work with fewer bytes than avrdude:
//! * a whole page — Load Extended Address (large parts), every Load Page instruction **and the
//!   Write Page instruction** — goes in one write-then-read command (avrdude sends Write Page
//!   separately);
//! * flash is read with the extended bulk read in 4 KiB blocks (avrdude: one page per command);
//! * other multi-instruction work (EEPROM reads, signature) packs four instructions per bulk
//!   transfer;
//! * no re-initialisation after chip erase, and the SPI clock starts at 250 kHz (avrdude: 30 kHz)
//!   with a ladder down to 30 kHz for slow targets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

use crate::error::{FailureClass, ProgError, ProgResult};
use crate::isp::{self, Cmd};
use crate::part::{FuseKind, Part};
use crate::programmer::{Programmer, ProgrammerInfo, ProgrammerKind};

/// Default serial rate of the Bus Pirate's USB-serial link.
pub const DEFAULT_BAUD: u32 = 115_200;
/// SPI clock of each `01100xxx` speed code.
pub const SPEEDS_HZ: [u32; 8] = [30_000, 125_000, 250_000, 1_000_000, 2_000_000, 2_600_000, 4_000_000, 8_000_000];
/// Speed codes tried when entering programming mode, fastest first (250 kHz, 125 kHz, 30 kHz).
pub const SPEED_LADDER: &[u8] = &[2, 1, 0];

/// Slack on every reply beyond line and SPI time.
const REPLY_SLACK: Duration = Duration::from_secs(2);
/// Peripherals: power on, CS high (RESET released) / CS low (RESET asserted).
const PERIPH_POWER_CS_HIGH: u8 = 0x49;
const PERIPH_POWER_CS_LOW: u8 = 0x48;
const PERIPH_OFF: u8 = 0x40;
/// SPI config: 3.3 V outputs, clock idle low, output change on active→idle, sample middle.
const SPI_CONFIG: u8 = 0x8A;
/// Largest extended bulk read per command.
const READ_BLOCK: usize = 4096;

/// Bus Pirate driver.
pub struct BusPirate {
    path: PathBuf,
    baud: u32,
    port: Option<SerialStream>,
    speed: u8,
    /// Firmware has write-then-read (v5.10+).
    write_then_read: bool,
    /// Firmware has the AVR extended commands (v6.x).
    extended: bool,
    notes: Vec<String>,
}

impl BusPirate {
    pub fn new(path: impl Into<PathBuf>, baud: Option<u32>) -> Self {
        BusPirate {
            path: path.into(),
            // A line rate of 0 is refused where it is configured; never divide by it here.
            baud: baud.filter(|b| *b > 0).unwrap_or(DEFAULT_BAUD),
            port: None,
            speed: SPEED_LADDER[0],
            write_then_read: false,
            extended: false,
            notes: Vec::new(),
        }
    }

    /// Start the SPI speed ladder at (or below) `hz` (30 kHz … 8 MHz).
    pub fn with_max_sck(mut self, hz: u32) -> Self {
        // Allow faster codes than the default ladder when asked for.
        let code = (0..8u8).rev().find(|c| SPEEDS_HZ[*c as usize] <= hz).unwrap_or(0);
        self.speed = code;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the firmware offers the AVR extended (bulk read) commands.
    pub fn has_extended_commands(&self) -> bool {
        self.extended
    }

    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn line_time(&self, n: usize) -> Duration {
        Duration::from_micros(n as u64 * 10_000_000 / self.baud as u64)
    }

    fn spi_time(&self, bytes: usize) -> Duration {
        Duration::from_micros(bytes as u64 * 8_000_000 / SPEEDS_HZ[self.speed as usize] as u64 + bytes as u64 * 10)
    }

    fn port(&mut self) -> ProgResult<&mut SerialStream> {
        let name = self.name();
        self.port.as_mut().ok_or_else(|| ProgError::new(FailureClass::Internal, format!("Bus Pirate {name}: used before open()")))
    }

    async fn send(&mut self, bytes: &[u8]) -> ProgResult<()> {
        let ctx = format!("Bus Pirate {}: writing", self.name());
        let bound = REPLY_SLACK + self.line_time(bytes.len());
        let port = self.port()?;
        match tokio::time::timeout(bound, port.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ProgError::io(&ctx, &e)),
            Err(_) => Err(ProgError::timeout(ctx)),
        }
    }

    async fn recv(&mut self, n: usize, extra: Duration, what: &str) -> ProgResult<Vec<u8>> {
        let name = self.name();
        let bound = REPLY_SLACK + extra + self.line_time(n);
        let port = self.port()?;
        let mut buf = vec![0u8; n];
        let fut = async {
            let mut got = 0;
            while got < n {
                let k = port.read(&mut buf[got..]).await?;
                if k == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the tty closed"));
                }
                got += k;
            }
            Ok(())
        };
        match tokio::time::timeout(bound, fut).await {
            Ok(Ok(())) => Ok(buf),
            Ok(Err(e)) => Err(ProgError::io(&format!("Bus Pirate {name}: reading the reply to {what}"), &e)),
            Err(_) => Err(ProgError::timeout(format!("Bus Pirate {name}: {what}"))),
        }
    }

    /// Send a one-byte command that answers `0x01` on success.
    async fn expect_ok(&mut self, cmd: u8, what: &str) -> ProgResult<()> {
        self.send(&[cmd]).await?;
        let r = self.recv(1, Duration::ZERO, what).await?;
        if r[0] != 0x01 {
            return Err(ProgError::comm(format!("Bus Pirate {}: {what} (0x{cmd:02X}) answered 0x{:02X} instead of 0x01", self.name(), r[0])));
        }
        Ok(())
    }

    /// Read and discard whatever arrives until the line is quiet for `quiet`.
    async fn drain(&mut self, quiet: Duration) {
        let Ok(port) = self.port() else { return };
        let _ = port.clear(tokio_serial::ClearBuffer::Input);
        let mut junk = [0u8; 512];
        let mut rounds = 0;
        while let Ok(Ok(n)) = tokio::time::timeout(quiet, port.read(&mut junk)).await {
            rounds += 1;
            if n == 0 || rounds > 200 {
                break;
            }
        }
    }

    /// Twenty zeros, then look for `BBIO1` in whatever comes back.
    async fn enter_binary_mode(&mut self) -> ProgResult<()> {
        self.drain(Duration::from_millis(10)).await;
        self.send(&[0u8; 20]).await?;
        let name = self.name();
        let port = self.port()?;
        let mut seen: Vec<u8> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        let mut buf = [0u8; 128];
        while !seen.windows(5).any(|w| w == b"BBIO1") {
            match tokio::time::timeout_at(deadline, port.read(&mut buf)).await {
                Ok(Ok(0)) => return Err(ProgError::gone(format!("Bus Pirate {name}: the tty closed"))),
                Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => return Err(ProgError::io(&format!("Bus Pirate {name}: entering binary mode"), &e)),
                Err(_) => {
                    let got = String::from_utf8_lossy(&seen).chars().take(40).collect::<String>();
                    // STK500 firmwares answer unknown bytes with NOSYNC (0x15) or INSYNC (0x14).
                    if !seen.is_empty() && seen.iter().all(|b| matches!(b, 0x10..=0x15)) {
                        return Err(ProgError::with_hint(
                            FailureClass::Config,
                            format!(
                                "{name}: this port answers like an STK500 programmer or bootloader (0x{:02X} to binary-mode zeros), not a Bus Pirate: set `programmer: avrisp` (ArduinoISP) or `programmer: arduino` (Optiboot) for this slot",
                                seen[0]
                            ),
                        ));
                    }
                    return Err(ProgError::with_hint(
                        FailureClass::ProgrammerOpen,
                        format!("{name}: no Bus Pirate binary mode answer (BBIO1) within 1 s (got {got:?}) — is this a Bus Pirate with firmware v5.10 or later on this port?"),
                    ));
                }
            }
        }
        // Already in binary mode, it answers BBIO1 to every zero: let the rest arrive and go.
        self.drain(Duration::from_millis(30)).await;
        Ok(())
    }

    /// Run ISP instructions through bulk transfers, four per command.
    async fn spi_batch(&mut self, cmds: &[Cmd]) -> ProgResult<Vec<Cmd>> {
        let mut out = Vec::with_capacity(cmds.len());
        for group in cmds.chunks(4) {
            let mut frame = Vec::with_capacity(1 + 16);
            frame.push(0x10 | (group.len() * 4 - 1) as u8);
            for c in group {
                frame.extend_from_slice(c);
            }
            self.send(&frame).await?;
            let r = self.recv(1 + 4 * group.len(), self.spi_time(16), "bulk SPI transfer").await?;
            if r[0] != 0x01 {
                return Err(ProgError::comm(format!("Bus Pirate {}: bulk SPI transfer refused (0x{:02X})", self.name(), r[0])));
            }
            for k in 0..group.len() {
                out.push([r[1 + 4 * k], r[2 + 4 * k], r[3 + 4 * k], r[4 + 4 * k]]);
            }
        }
        Ok(out)
    }

    /// Write `data` to SPI in one write-then-read command (CS untouched), reading nothing.
    async fn write_spi(&mut self, data: &[u8]) -> ProgResult<()> {
        let mut frame = Vec::with_capacity(5 + data.len());
        frame.push(0x05);
        frame.extend_from_slice(&(data.len() as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(data);
        self.send(&frame).await?;
        let r = self.recv(1, self.spi_time(data.len()) + self.line_time(frame.len()), "write-then-read").await?;
        if r[0] != 0x01 {
            return Err(ProgError::comm(format!("Bus Pirate {}: write-then-read refused (0x{:02X})", self.name(), r[0])));
        }
        Ok(())
    }

    async fn pulse_reset(&mut self) -> ProgResult<()> {
        self.expect_ok(PERIPH_POWER_CS_HIGH, "release RESET").await?;
        self.expect_ok(PERIPH_POWER_CS_LOW, "assert RESET").await?;
        // RESET low ≥ 20 ms before Programming Enable.
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(())
    }
}

#[async_trait]
impl Programmer for BusPirate {
    fn info(&self) -> ProgrammerInfo {
        ProgrammerInfo { kind: ProgrammerKind::Buspirate, identity: self.name() }
    }

    async fn open(&mut self) -> ProgResult<()> {
        self.port = None;
        let port = tokio_serial::new(self.name(), self.baud).timeout(Duration::from_millis(100)).open_native_async().map_err(|e| {
            let hint = match e.kind() {
                tokio_serial::ErrorKind::NoDevice => "it is in use by another program (avrdude, a serial monitor, another slot)",
                tokio_serial::ErrorKind::Io(std::io::ErrorKind::NotFound) => "it is not there: check the cable and the port name (flashline programmers)",
                tokio_serial::ErrorKind::Io(std::io::ErrorKind::PermissionDenied) => {
                    "permission denied: install deploy/99-flashline-programmers.rules and add the station user to the dialout group"
                }
                _ => "check it is plugged in and not in use by another program",
            };
            ProgError::new(FailureClass::ProgrammerOpen, format!("cannot open Bus Pirate {}: {e} — {hint}", self.name()))
        })?;
        self.port = Some(port);
        self.enter_binary_mode().await?;
        self.send(&[0x01]).await?;
        let r = self.recv(4, Duration::ZERO, "enter SPI mode").await?;
        if &r != b"SPI1" {
            return Err(ProgError::comm(format!("Bus Pirate {}: SPI mode not confirmed (got {:?})", self.name(), String::from_utf8_lossy(&r))));
        }
        // Write-then-read with nothing to write: 0x01 on firmware v5.10 and later.
        self.send(&[0x05, 0, 0, 0, 0]).await?;
        self.write_then_read = self.recv(1, Duration::ZERO, "write-then-read probe").await?[0] == 0x01;
        if !self.write_then_read {
            // Older firmware took the zeros for "back to bitbang": return to SPI.
            self.drain(Duration::from_millis(30)).await;
            self.send(&[0x01]).await?;
            self.recv(4, Duration::ZERO, "enter SPI mode").await?;
            self.notes.push("Bus Pirate firmware lacks write-then-read (< v5.10): pages go four instructions at a time".into());
        }
        self.expect_ok(PERIPH_POWER_CS_HIGH, "power on").await?;
        self.expect_ok(0x60 | self.speed, "set SPI speed").await?;
        self.expect_ok(SPI_CONFIG, "configure SPI").await?;
        // AVR extended commands: 0x06 answers 0x01 on v6 firmware; then a no-op sub-command.
        self.send(&[0x06]).await?;
        self.extended = self.recv(1, Duration::ZERO, "AVR extended commands probe").await?[0] == 0x01;
        if self.extended {
            self.send(&[0x00]).await?;
            self.recv(1, Duration::ZERO, "AVR extended no-op").await?;
        }
        tracing::debug!(port = %self.name(), write_then_read = self.write_then_read, extended = self.extended, "Bus Pirate in binary SPI mode");
        Ok(())
    }

    async fn enter_progmode(&mut self, _part: &'static Part) -> ProgResult<()> {
        let first = self.speed;
        let ladder: Vec<u8> = std::iter::once(first).chain(SPEED_LADDER.iter().copied().filter(|c| *c < first)).collect();
        let mut last = [0u8; 4];
        for code in ladder {
            self.speed = code;
            self.expect_ok(0x60 | code, "set SPI speed").await?;
            for _ in 0..2 {
                self.pulse_reset().await?;
                last = self.spi(isp::PROG_ENABLE).await?;
                if isp::prog_enable_ok(&last) {
                    if code != first {
                        self.notes.push(format!(
                            "lowered SCK to {} kHz (target did not answer at {} kHz)",
                            SPEEDS_HZ[code as usize] / 1000,
                            SPEEDS_HZ[first as usize] / 1000
                        ));
                    }
                    return Ok(());
                }
            }
        }
        let _ = self.expect_ok(PERIPH_POWER_CS_HIGH, "release RESET").await;
        let what = format!("Bus Pirate {}: programming enable", self.name());
        if last.iter().all(|b| *b == 0) || last.iter().all(|b| *b == 0xFF) {
            Err(ProgError::with_hint(FailureClass::NoTarget, format!("{what}: nothing answers on MISO (reads 0x{:02X}) down to 30 kHz SCK", last[0])))
        } else {
            Err(ProgError::with_hint(FailureClass::ProgEnable, format!("{what}: target never echoed 0x53 down to 30 kHz SCK (last reply {last:02X?})")))
        }
    }

    async fn leave_progmode(&mut self) -> ProgResult<()> {
        self.expect_ok(PERIPH_POWER_CS_HIGH, "release RESET").await
    }

    async fn spi(&mut self, cmd: Cmd) -> ProgResult<Cmd> {
        Ok(self.spi_batch(&[cmd]).await?[0])
    }

    async fn close(&mut self) -> ProgResult<()> {
        if self.port.is_some() {
            // Back to bitbang, power off, then reset to the text terminal as avrdude leaves it.
            let _ = self.send(&[0x00]).await;
            let _ = self.recv(5, Duration::ZERO, "leave SPI mode").await;
            let _ = self.send(&[PERIPH_OFF]).await;
            let _ = self.recv(1, Duration::ZERO, "pins off").await;
            let _ = self.send(&[0x0F]).await;
            let _ = self.recv(1, Duration::ZERO, "reset").await;
        }
        self.port = None;
        Ok(())
    }

    fn read_block_size(&self) -> usize {
        READ_BLOCK
    }

    fn sck_hz(&self) -> Option<u32> {
        Some(SPEEDS_HZ[self.speed as usize])
    }

    fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    async fn read_signature(&mut self) -> ProgResult<[u8; 3]> {
        let r = self.spi_batch(&[isp::read_signature(0), isp::read_signature(1), isp::read_signature(2)]).await?;
        Ok([r[0][3], r[1][3], r[2][3]])
    }

    async fn chip_erase(&mut self, part: &'static Part) -> ProgResult<()> {
        self.spi(isp::CHIP_ERASE).await?;
        tokio::time::sleep(Duration::from_micros(part.delays.chip_erase_us as u64)).await;
        Ok(())
    }

    async fn write_flash_page(&mut self, part: &'static Part, addr: u32, data: &[u8]) -> ProgResult<()> {
        let mut cmds: Vec<Cmd> = Vec::with_capacity(data.len() + 2);
        if part.flash_size > 0x20000 {
            cmds.push(isp::load_extended_address(addr));
        }
        cmds.extend(data.iter().enumerate().map(|(i, b)| isp::load_page(addr + i as u32, *b)));
        cmds.push(isp::write_page(addr));
        if self.write_then_read {
            let bytes: Vec<u8> = cmds.iter().flatten().copied().collect();
            self.write_spi(&bytes).await?;
        } else {
            self.spi_batch(&cmds).await?;
        }
        tokio::time::sleep(Duration::from_micros(part.delays.flash_page_us as u64)).await;
        Ok(())
    }

    async fn read_flash(&mut self, part: &'static Part, addr: u32, len: usize) -> ProgResult<Vec<u8>> {
        if !self.extended || !addr.is_multiple_of(2) {
            let cmds: Vec<Cmd> = (addr..addr + len as u32).map(isp::read_flash).collect();
            let _ = part;
            return Ok(self.spi_batch(&cmds).await?.iter().map(|r| r[3]).collect());
        }
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let a = addr + out.len() as u32;
            let n = (len - out.len()).min(READ_BLOCK);
            let mut frame = vec![0x06, 0x02];
            frame.extend_from_slice(&(a / 2).to_be_bytes());
            frame.extend_from_slice(&(n as u32).to_be_bytes());
            self.send(&frame).await?;
            let head = self.recv(2, Duration::ZERO, "extended flash read").await?;
            if head != [0x01, 0x01] {
                return Err(ProgError::comm(format!("Bus Pirate {}: extended flash read at 0x{a:05X} refused ({head:02X?})", self.name())));
            }
            let data = self.recv(n, self.spi_time(n * 4), "extended flash read data").await?;
            out.extend_from_slice(&data);
        }
        Ok(out)
    }

    async fn read_eeprom(&mut self, _part: &'static Part, addr: u32, len: usize) -> ProgResult<Vec<u8>> {
        let cmds: Vec<Cmd> = (addr..addr + len as u32).map(isp::read_eeprom).collect();
        Ok(self.spi_batch(&cmds).await?.iter().map(|r| r[3]).collect())
    }

    async fn read_fuse(&mut self, part: &'static Part, kind: FuseKind) -> ProgResult<u8> {
        if part.fuse_masks.get(kind).is_none() {
            return Err(ProgError::new(FailureClass::Config, format!("{} has no {kind} fuse", part.name)));
        }
        Ok(self.spi(isp::read_fuse(kind)).await?[3])
    }
}
