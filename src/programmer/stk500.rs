//! STK500 version 1 over serial: the `avrisp`/`stk500v1` ISP programmers (ArduinoISP, the QMK
//! Pro Micro and Teensy 2.0 ISP firmwares) and `arduino` (Optiboot-style bootloaders).
//!
//! Frames: the host sends a command byte, its arguments and `CRC_EOP` (0x20); the programmer
//! answers `INSYNC` (0x14), any data, then `OK` (0x10) — or `NOSYNC` (0x15) when the frame did
//! not end in `CRC_EOP`. Addresses sent with `LOAD_ADDRESS` are *word* addresses, little endian.

/// Command, response and parameter codes of the STK500 v1 protocol (Atmel AVR061).
pub mod wire {
    pub const GET_SYNC: u8 = 0x30;
    pub const GET_SIGN_ON: u8 = 0x31;
    pub const SET_PARAMETER: u8 = 0x40;
    pub const GET_PARAMETER: u8 = 0x41;
    pub const SET_DEVICE: u8 = 0x42;
    pub const SET_DEVICE_EXT: u8 = 0x45;
    pub const ENTER_PROGMODE: u8 = 0x50;
    pub const LEAVE_PROGMODE: u8 = 0x51;
    pub const CHIP_ERASE: u8 = 0x52;
    pub const LOAD_ADDRESS: u8 = 0x55;
    pub const UNIVERSAL: u8 = 0x56;
    pub const PROG_FLASH: u8 = 0x60;
    pub const PROG_DATA: u8 = 0x61;
    pub const PROG_PAGE: u8 = 0x64;
    pub const READ_PAGE: u8 = 0x74;
    pub const READ_SIGN: u8 = 0x75;

    pub const CRC_EOP: u8 = 0x20;

    pub const OK: u8 = 0x10;
    pub const FAILED: u8 = 0x11;
    pub const UNKNOWN: u8 = 0x12;
    pub const NODEVICE: u8 = 0x13;
    pub const INSYNC: u8 = 0x14;
    pub const NOSYNC: u8 = 0x15;

    pub const PARM_HW_VER: u8 = 0x80;
    pub const PARM_SW_MAJOR: u8 = 0x81;
    pub const PARM_SW_MINOR: u8 = 0x82;
    pub const PARM_PROGMODE: u8 = 0x93;
    pub const PARM_TOPCARD_DETECT: u8 = 0x98;

    /// Memory type byte of PROG_PAGE / READ_PAGE.
    pub const MEM_FLASH: u8 = b'F';
    pub const MEM_EEPROM: u8 = b'E';

    /// Largest PROG_PAGE / READ_PAGE block: the 16-bit length field is there, but the
    /// firmwares buffer at most 256 bytes (ArduinoISP `buff[256]`, Optiboot's page buffer).
    pub const MAX_BLOCK: usize = 256;
}

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::{SerialPort, SerialPortBuilderExt, SerialStream};

use crate::error::{FailureClass, ProgError, ProgResult};
use crate::isp::Cmd;
use crate::part::{FuseKind, Part};
use crate::programmer::{delay_us, Programmer, ProgrammerInfo, ProgrammerKind};

/// Default line rate (QMK's ISP firmwares, Optiboot on 16 MHz boards).
pub const DEFAULT_BAUD: u32 = 115_200;
/// The stock ArduinoISP sketch's rate.
pub const ARDUINOISP_BAUD: u32 = 19_200;
/// Sync attempts before giving up (avrdude: 10 with 2 warm-up sends; ours are bounded by time).
pub const SYNC_ATTEMPTS: usize = 5;
/// How long one sync attempt waits for `INSYNC OK`.
const SYNC_WAIT: Duration = Duration::from_millis(250);
/// Base allowance for any reply on top of its line time.
const REPLY_SLACK: Duration = Duration::from_millis(1000);
/// Worst-case wait the firmware spends per EEPROM byte (ArduinoISP waits 45 ms).
const EEPROM_BYTE_ALLOWANCE: Duration = Duration::from_millis(50);
/// EEPROM block size through `PROG_PAGE 'E'` (keeps each command's worst case near 3 s).
const EEPROM_BLOCK: usize = 64;

/// Which STK500v1 flavour is on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// An ISP programmer (ArduinoISP and derivatives): SET_DEVICE, ENTER_PROGMODE, UNIVERSAL.
    Isp,
    /// A bootloader on the target (Optiboot): DTR/RTS reset, READ_SIGN, paged flash only.
    Bootloader,
}

/// STK500v1 programmer driver over a serial port.
pub struct Stk500Programmer {
    flavor: Flavor,
    path: PathBuf,
    baud: u32,
    port: Option<SerialStream>,
    /// Firmware version from GET_PARAMETER (decides SET_DEVICE_EXT's length).
    sw_version: (u8, u8),
    /// Word address the firmware holds, when we know it (to skip a repeated LOAD_ADDRESS).
    /// Only `LOAD_ADDRESS` sets it: whether a firmware advances its address over a
    /// `PROG_PAGE`/`READ_PAGE` differs (ArduinoISP does, Optiboot does not, `CHECK_AUTOINC` is
    /// answered by neither), so after any page command it is unknown and the next page gets its
    /// own `LOAD_ADDRESS`, as avrdude sends it.
    here: Option<u32>,
    notes: Vec<String>,
    noted_fuses: bool,
}

impl Stk500Programmer {
    /// A driver for the ISP programmer (`avrisp`/`stk500v1`) on `path`.
    pub fn avrisp(path: impl Into<PathBuf>, baud: Option<u32>) -> Self {
        Self::new(Flavor::Isp, path.into(), baud.unwrap_or(DEFAULT_BAUD))
    }

    /// A driver for an Optiboot-style bootloader (`arduino`) on `path`.
    pub fn arduino(path: impl Into<PathBuf>, baud: Option<u32>) -> Self {
        Self::new(Flavor::Bootloader, path.into(), baud.unwrap_or(DEFAULT_BAUD))
    }

    fn new(flavor: Flavor, path: PathBuf, baud: u32) -> Self {
        // A line rate of 0 is refused where it is configured; never divide by it here.
        let baud = if baud == 0 { DEFAULT_BAUD } else { baud };
        Stk500Programmer { flavor, path, baud, port: None, sw_version: (0, 0), here: None, notes: Vec::new(), noted_fuses: false }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn baud(&self) -> u32 {
        self.baud
    }

    fn kind(&self) -> ProgrammerKind {
        match self.flavor {
            Flavor::Isp => ProgrammerKind::Avrisp,
            Flavor::Bootloader => ProgrammerKind::Arduino,
        }
    }

    fn port_name(&self) -> String {
        self.path.display().to_string()
    }

    /// Time `n` bytes take on the line.
    fn line_time(&self, n: usize) -> Duration {
        Duration::from_micros(n as u64 * 10_000_000 / self.baud as u64)
    }

    fn port(&mut self) -> ProgResult<&mut SerialStream> {
        let name = self.port_name();
        self.port.as_mut().ok_or_else(|| ProgError::new(FailureClass::Internal, format!("{name}: used before open()")))
    }

    async fn send(&mut self, frame: &[u8]) -> ProgResult<()> {
        let ctx = format!("writing to {}", self.port_name());
        let bound = REPLY_SLACK + self.line_time(frame.len());
        let port = self.port()?;
        match tokio::time::timeout(bound, port.write_all(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ProgError::io(&ctx, &e)),
            Err(_) => Err(ProgError::timeout(ctx)),
        }
    }

    /// Read exactly `buf.len()` bytes within `bound`.
    async fn recv(&mut self, buf: &mut [u8], bound: Duration, what: &str) -> ProgResult<()> {
        let name = self.port_name();
        let port = self.port()?;
        let fut = async {
            let mut got = 0;
            while got < buf.len() {
                let n = port.read(&mut buf[got..]).await?;
                if n == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the tty closed"));
                }
                got += n;
            }
            Ok(())
        };
        match tokio::time::timeout(bound, fut).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ProgError::io(&format!("{name}: reading the reply to {what}"), &e)),
            Err(_) => Err(ProgError::timeout(format!("{name}: {what}"))),
        }
    }

    /// Throw away whatever the programmer sent that nobody asked for.
    async fn drain(&mut self) -> ProgResult<()> {
        let Ok(port) = self.port() else { return Ok(()) };
        let _ = port.clear(tokio_serial::ClearBuffer::Input);
        let mut junk = [0u8; 256];
        // Bytes still in flight: read until the line is quiet for a moment.
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(20), port.read(&mut junk)).await {
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Send one frame (command … CRC_EOP) and read `INSYNC`, `n` data bytes, `OK`.
    /// `extra` is time the firmware may spend working before it answers.
    async fn command(&mut self, frame: &[u8], n: usize, extra: Duration, what: &str) -> ProgResult<Vec<u8>> {
        self.send(frame).await?;
        let bound = REPLY_SLACK + extra + self.line_time(frame.len() + n + 2);
        let mut b = [0u8; 1];
        self.recv(&mut b, bound, what).await?;
        match b[0] {
            wire::INSYNC => {}
            wire::NOSYNC => {
                self.here = None;
                self.drain().await?;
                return Err(ProgError::comm(format!("{}: the programmer lost sync (NOSYNC) on {what}", self.port_name())));
            }
            other => {
                self.here = None;
                self.drain().await?;
                return Err(ProgError::comm(format!(
                    "{}: expected INSYNC (0x14) in reply to {what}, got 0x{other:02X}: wrong baud ({} set) or a different programmer type",
                    self.port_name(),
                    self.baud
                )));
            }
        }
        let mut data = vec![0u8; n];
        if n > 0 {
            self.recv(&mut data, bound, what).await?;
        }
        self.recv(&mut b, bound, what).await?;
        match b[0] {
            wire::OK => Ok(data),
            wire::NODEVICE => Err(ProgError::with_hint(FailureClass::NoTarget, format!("{}: the programmer reports no device on {what}", self.port_name()))),
            wire::FAILED => Err(ProgError::with_hint(
                if frame[0] == wire::ENTER_PROGMODE { FailureClass::ProgEnable } else { FailureClass::Communication },
                format!("{}: the programmer reports FAILED on {what}", self.port_name()),
            )),
            other => {
                self.here = None;
                self.drain().await?;
                Err(ProgError::comm(format!("{}: expected OK (0x10) after {what}, got 0x{other:02X}", self.port_name())))
            }
        }
    }

    /// GET_SYNC until `INSYNC OK`, bounded.
    async fn sync(&mut self) -> ProgResult<()> {
        self.drain().await?;
        let mut last_garbage: Option<u8> = None;
        let mut heard: Vec<u8> = Vec::new();
        for attempt in 1..=SYNC_ATTEMPTS {
            self.send(&[wire::GET_SYNC, wire::CRC_EOP]).await?;
            let mut b = [0u8; 2];
            match self.recv(&mut b, SYNC_WAIT, "GET_SYNC").await {
                Ok(()) if b == [wire::INSYNC, wire::OK] => return Ok(()),
                Ok(()) => {
                    tracing::debug!(attempt, "stk500 sync: got {:02X?}", b);
                    last_garbage = Some(if b[0] == wire::INSYNC { b[1] } else { b[0] });
                    if heard.len() < 256 {
                        heard.extend_from_slice(&b);
                        self.collect_text(&mut heard).await;
                    }
                    if let Some(e) = self.other_protocol(&heard) {
                        return Err(e);
                    }
                }
                Err(e) if e.class == FailureClass::Timeout => {
                    tracing::debug!(attempt, "stk500 sync: no answer");
                }
                Err(e) => return Err(e),
            }
            self.drain().await?;
        }
        let port = self.port_name();
        Err(match (last_garbage, self.flavor) {
            // Through a bootloader the board itself answers: garbage is its clock or contacts.
            (Some(g), Flavor::Bootloader) => ProgError::comm(format!(
                "{port}: the board answers garbage (0x{g:02X}) instead of STK500 sync at {} baud: check the baud and the board's clock",
                self.baud
            )),
            // An ISP programmer answers sync itself, before any board is involved: garbage is
            // the programmer or its settings, not the board.
            (Some(g), Flavor::Isp) => ProgError::with_hint(
                FailureClass::Config,
                format!(
                    "{port}: the programmer answers garbage (0x{g:02X}) instead of STK500 sync at {} baud: check the baud (stock ArduinoISP runs at 19200) and the slot's `programmer:` type",
                    self.baud
                ),
            ),
            (None, Flavor::Isp) => ProgError::with_hint(
                FailureClass::Timeout,
                format!("{port}: no STK500 answer to {SYNC_ATTEMPTS} sync attempts at {} baud: is the ArduinoISP firmware running, and the baud right (stock ArduinoISP: 19200)?", self.baud),
            ),
            (None, Flavor::Bootloader) => ProgError::new(
                FailureClass::NoTarget,
                format!(
                    "{port}: no bootloader answered {SYNC_ATTEMPTS} sync attempts at {} baud — check the board is plugged in and powered, that it has an Optiboot-style bootloader, and the baud (115200 for Optiboot at 16 MHz, 57600 for old ATmegaBOOT)",
                    self.baud
                ),
            ),
        })
    }

    /// After unexpected sync bytes: what else is already on the way (a banner, a prompt).
    async fn collect_text(&mut self, heard: &mut Vec<u8>) {
        let Ok(port) = self.port() else { return };
        let mut buf = [0u8; 128];
        while heard.len() < 256 {
            match tokio::time::timeout(Duration::from_millis(30), port.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => heard.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
    }

    /// Answers that are another protocol's: a Bus Pirate's terminal (it echoes `0 ` and
    /// prompts `HiZ>`). An equipment error that names the `programmer:` to set.
    fn other_protocol(&self, heard: &[u8]) -> Option<ProgError> {
        let text = String::from_utf8_lossy(heard);
        let bus_pirate = text.contains("HiZ>") || text.contains("Bus Pirate") || heard.starts_with(&[wire::GET_SYNC, wire::CRC_EOP]);
        bus_pirate.then(|| {
            ProgError::with_hint(
                FailureClass::Config,
                format!(
                    "{}: this port answers like a Bus Pirate's terminal (it echoes the STK500 sync{}), not an STK500 programmer: set `programmer: buspirate` for this slot, or plug the {} into this port",
                    self.port_name(),
                    if text.contains("HiZ>") { " and prompts HiZ>" } else { "" },
                    if self.flavor == Flavor::Isp { "ArduinoISP programmer" } else { "Optiboot board" }
                ),
            )
        })
    }

    async fn get_parameter(&mut self, parm: u8) -> ProgResult<u8> {
        Ok(self.command(&[wire::GET_PARAMETER, parm, wire::CRC_EOP], 1, Duration::ZERO, "GET_PARAMETER").await?[0])
    }

    /// DTR/RTS low then high: the Arduino auto-reset circuit pulses RESET and the bootloader
    /// starts. A pty has no modem lines; then nothing was reset and there is nothing to wait for.
    async fn reset_pulse(&mut self) {
        let Ok(port) = self.port() else { return };
        let low = port.write_data_terminal_ready(false).and_then(|_| port.write_request_to_send(false));
        if let Err(e) = low {
            tracing::debug!("DTR/RTS not settable on this tty ({e}); no reset pulse");
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(port) = self.port() else { return };
        let _ = port.write_data_terminal_ready(true).and_then(|_| port.write_request_to_send(true));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    async fn load_address(&mut self, word: u32) -> ProgResult<()> {
        if self.here == Some(word) {
            return Ok(());
        }
        if word > 0xFFFF {
            return Err(ProgError::new(FailureClass::Config, format!("word address 0x{word:X} is beyond STK500v1's 16-bit LOAD_ADDRESS")));
        }
        self.command(&[wire::LOAD_ADDRESS, word as u8, (word >> 8) as u8, wire::CRC_EOP], 0, Duration::ZERO, "LOAD_ADDRESS").await?;
        self.here = Some(word);
        Ok(())
    }

    fn require_isp(&self, what: &str) -> ProgResult<()> {
        match self.flavor {
            Flavor::Isp => Ok(()),
            Flavor::Bootloader => Err(ProgError::with_hint(
                FailureClass::Config,
                format!("{what} is not reachable through an Optiboot bootloader ({}): use an ISP programmer for it", self.port_name()),
            )),
        }
    }

    /// Optiboot answers every UNIVERSAL with 0x00, so fuse and lock reads say 0x00 (as they do
    /// through avrdude); say so once per session.
    fn note_bootloader_fuses(&mut self) {
        if self.flavor == Flavor::Bootloader && !self.noted_fuses {
            self.noted_fuses = true;
            self.notes.push("fuses and lock bits are not readable through the bootloader: it answers 0x00".into());
        }
    }

    /// SET_DEVICE and SET_DEVICE_EXT from the part catalog, as avrdude sends them.
    async fn set_device(&mut self, part: &'static Part) -> ProgResult<()> {
        let fuse_bytes = FuseKind::ALL.iter().filter(|k| part.fuse_masks.get(**k).is_some()).count() as u8;
        let page = part.flash_page_size as u16;
        let ee = part.eeprom_size as u16;
        let flash = part.flash_size;
        let mut f = vec![wire::SET_DEVICE, part.stk500_devcode, 0x00, 0x00, 0x01, 0x01, 0x01, 0x01, fuse_bytes, 0x00, 0x00, 0x00, 0x00];
        f.extend_from_slice(&page.to_be_bytes());
        f.extend_from_slice(&ee.to_be_bytes());
        f.extend_from_slice(&flash.to_be_bytes());
        f.push(wire::CRC_EOP);
        debug_assert_eq!(f.len(), 22);
        self.command(&f, 0, Duration::ZERO, "SET_DEVICE").await?;
        let (maj, min) = self.sw_version;
        let reset_disposition = if part.has_rstdisbl() { 1 } else { 0 };
        let ext: Vec<u8> = if maj > 1 || (maj == 1 && min > 10) {
            vec![wire::SET_DEVICE_EXT, 5, part.eeprom_page_size as u8, 0xD7, 0xA0, reset_disposition, wire::CRC_EOP]
        } else {
            vec![wire::SET_DEVICE_EXT, 4, part.eeprom_page_size as u8, 0xD7, 0xA0, wire::CRC_EOP]
        };
        self.command(&ext, 0, Duration::ZERO, "SET_DEVICE_EXT").await?;
        Ok(())
    }
}

#[async_trait]
impl Programmer for Stk500Programmer {
    fn info(&self) -> ProgrammerInfo {
        ProgrammerInfo { kind: self.kind(), identity: self.port_name() }
    }

    async fn open(&mut self) -> ProgResult<()> {
        self.port = None;
        self.here = None;
        self.noted_fuses = false;
        let port = tokio_serial::new(self.port_name(), self.baud).timeout(Duration::from_millis(100)).open_native_async().map_err(|e| {
            let hint = match e.kind() {
                tokio_serial::ErrorKind::NoDevice => "it is in use by another program (avrdude, a serial monitor, another slot)",
                tokio_serial::ErrorKind::Io(std::io::ErrorKind::NotFound) => "it is not there: check the cable and the port name (ls /dev/serial/by-id/)",
                tokio_serial::ErrorKind::Io(std::io::ErrorKind::PermissionDenied) => "permission denied: add the station user to the dialout group",
                _ => "check it is plugged in and not in use by another program (avrdude, a serial monitor)",
            };
            ProgError::new(FailureClass::ProgrammerOpen, format!("cannot open {}: {e} — {hint}", self.port_name()))
        })?;
        self.port = Some(port);
        if self.flavor == Flavor::Bootloader {
            self.reset_pulse().await;
        }
        self.sync().await?;
        let maj = self.get_parameter(wire::PARM_SW_MAJOR).await?;
        let min = self.get_parameter(wire::PARM_SW_MINOR).await?;
        self.sw_version = (maj, min);
        tracing::debug!(port = %self.port_name(), "STK500v1 firmware {maj}.{min}");
        // Optiboot reports its own version (4.x–8.x) and 0x03 for every other parameter; ISP
        // firmwares report 1.x/2.x and their hardware version. An ISP driver talking to a
        // bootloader would program the board through the bootloader and then blame the board.
        if self.flavor == Flavor::Isp && maj >= 4 && self.get_parameter(wire::PARM_HW_VER).await? == 0x03 {
            return Err(ProgError::with_hint(
                FailureClass::Config,
                format!(
                    "{}: this port answers like an Optiboot bootloader (software version {maj}.{min}), not an ISP programmer: set `programmer: arduino` for this slot, or plug the ArduinoISP programmer into this port",
                    self.port_name()
                ),
            ));
        }
        Ok(())
    }

    async fn enter_progmode(&mut self, part: &'static Part) -> ProgResult<()> {
        self.here = None;
        match self.flavor {
            Flavor::Isp => {
                self.set_device(part).await?;
                // ArduinoISP pulses RESET and waits 70 ms before Programming Enable.
                self.command(&[wire::ENTER_PROGMODE, wire::CRC_EOP], 0, Duration::from_millis(200), "ENTER_PROGMODE").await?;
            }
            // The bootloader is the program running on the target: nothing to enter.
            Flavor::Bootloader => {}
        }
        Ok(())
    }

    async fn leave_progmode(&mut self) -> ProgResult<()> {
        self.command(&[wire::LEAVE_PROGMODE, wire::CRC_EOP], 0, Duration::ZERO, "LEAVE_PROGMODE").await?;
        self.here = None;
        Ok(())
    }

    async fn spi(&mut self, cmd: Cmd) -> ProgResult<Cmd> {
        let f = [wire::UNIVERSAL, cmd[0], cmd[1], cmd[2], cmd[3], wire::CRC_EOP];
        let r = self.command(&f, 1, Duration::ZERO, "UNIVERSAL").await?;
        // STK500v1 returns only the fourth byte; the first three are what a target in sync echoes.
        Ok([0x00, cmd[0], cmd[1], r[0]])
    }

    async fn close(&mut self) -> ProgResult<()> {
        self.port = None;
        self.here = None;
        Ok(())
    }

    fn read_block_size(&self) -> usize {
        wire::MAX_BLOCK
    }

    fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    fn erase_clears_flash(&self) -> bool {
        self.flavor == Flavor::Isp
    }

    async fn read_signature(&mut self) -> ProgResult<[u8; 3]> {
        let r = self.command(&[wire::READ_SIGN, wire::CRC_EOP], 3, Duration::ZERO, "READ_SIGN").await?;
        Ok([r[0], r[1], r[2]])
    }

    async fn chip_erase(&mut self, part: &'static Part) -> ProgResult<()> {
        match self.flavor {
            Flavor::Isp => {
                self.spi(crate::isp::CHIP_ERASE).await?;
                delay_us(part.delays.chip_erase_us).await;
                Ok(())
            }
            // Optiboot has no chip erase: it erases each page as it writes it. Pages outside
            // the image keep their contents.
            Flavor::Bootloader => {
                self.notes.push("the bootloader cannot chip-erase: flash outside the image keeps its old contents".into());
                Ok(())
            }
        }
    }

    async fn write_flash_page(&mut self, part: &'static Part, addr: u32, data: &[u8]) -> ProgResult<()> {
        if data.len() > wire::MAX_BLOCK || !data.len().is_multiple_of(2) || !addr.is_multiple_of(2) {
            return Err(ProgError::new(FailureClass::Internal, format!("flash page at 0x{addr:X} of {} bytes: STK500v1 writes whole words, at most 256 bytes", data.len())));
        }
        self.load_address(addr / 2).await?;
        let mut f = Vec::with_capacity(data.len() + 5);
        f.extend_from_slice(&[wire::PROG_PAGE, (data.len() >> 8) as u8, data.len() as u8, wire::MEM_FLASH]);
        f.extend_from_slice(data);
        f.push(wire::CRC_EOP);
        // The firmware answers after the page write: allow the erase + write times.
        let work = Duration::from_micros(2 * part.delays.flash_page_us as u64) + Duration::from_millis(60);
        let res = self.command(&f, 0, work, "PROG_PAGE").await;
        // Advanced or not depends on the firmware: never rely on it.
        self.here = None;
        res.map(|_| ())
    }

    async fn read_flash(&mut self, _part: &'static Part, addr: u32, len: usize) -> ProgResult<Vec<u8>> {
        // Whole words from an even address, then trim.
        let start = addr & !1;
        let end = (addr as usize + len + 1) & !1;
        let mut out = Vec::with_capacity(end - start as usize);
        let mut a = start as usize;
        while a < end {
            let n = (end - a).min(wire::MAX_BLOCK);
            self.load_address(a as u32 / 2).await?;
            let f = [wire::READ_PAGE, (n >> 8) as u8, n as u8, wire::MEM_FLASH, wire::CRC_EOP];
            let res = self.command(&f, n, Duration::ZERO, "READ_PAGE").await;
            // Whether reads advance the address differs between firmwares: reload it.
            self.here = None;
            out.extend_from_slice(&res?);
            a += n;
        }
        let skip = (addr - start) as usize;
        Ok(out[skip..skip + len].to_vec())
    }

    async fn write_eeprom(&mut self, part: &'static Part, addr: u32, data: &[u8]) -> ProgResult<()> {
        self.require_isp("EEPROM")?;
        let mut a = addr;
        let mut rest = data;
        if a % 2 == 1 && !rest.is_empty() {
            // PROG_PAGE 'E' addresses words: an odd first byte goes by itself.
            self.spi(crate::isp::write_eeprom(a, rest[0])).await?;
            delay_us(part.delays.eeprom_us).await;
            a += 1;
            rest = &rest[1..];
        }
        while !rest.is_empty() {
            let n = rest.len().min(EEPROM_BLOCK);
            self.load_address(a / 2).await?;
            let mut f = vec![wire::PROG_PAGE, (n >> 8) as u8, n as u8, wire::MEM_EEPROM];
            f.extend_from_slice(&rest[..n]);
            f.push(wire::CRC_EOP);
            let work = EEPROM_BYTE_ALLOWANCE * n as u32;
            let res = self.command(&f, 0, work, "PROG_PAGE (EEPROM)").await;
            self.here = None;
            res?;
            a += n as u32;
            rest = &rest[n..];
        }
        Ok(())
    }

    async fn read_eeprom(&mut self, _part: &'static Part, addr: u32, len: usize) -> ProgResult<Vec<u8>> {
        self.require_isp("EEPROM")?;
        let start = addr & !1;
        let end = addr as usize + len;
        let mut out = Vec::with_capacity(end - start as usize);
        let mut a = start as usize;
        while a < end {
            let n = (end - a).min(wire::MAX_BLOCK);
            self.load_address(a as u32 / 2).await?;
            let f = [wire::READ_PAGE, (n >> 8) as u8, n as u8, wire::MEM_EEPROM, wire::CRC_EOP];
            let res = self.command(&f, n, Duration::ZERO, "READ_PAGE (EEPROM)").await;
            self.here = None;
            out.extend_from_slice(&res?);
            a += n;
        }
        let skip = (addr - start) as usize;
        Ok(out[skip..skip + len].to_vec())
    }

    async fn read_fuse(&mut self, part: &'static Part, kind: FuseKind) -> ProgResult<u8> {
        self.note_bootloader_fuses();
        if part.fuse_masks.get(kind).is_none() {
            return Err(ProgError::new(FailureClass::Config, format!("{} has no {kind} fuse", part.name)));
        }
        Ok(self.spi(crate::isp::read_fuse(kind)).await?[3])
    }

    async fn write_fuse(&mut self, part: &'static Part, kind: FuseKind, value: u8) -> ProgResult<()> {
        self.require_isp("fuses")?;
        if part.fuse_masks.get(kind).is_none() {
            return Err(ProgError::new(FailureClass::Config, format!("{} has no {kind} fuse", part.name)));
        }
        self.spi(crate::isp::write_fuse(kind, value)).await?;
        delay_us(part.delays.fuse_us).await;
        Ok(())
    }

    async fn read_lock(&mut self, _part: &'static Part) -> ProgResult<u8> {
        self.note_bootloader_fuses();
        Ok(self.spi(crate::isp::READ_LOCK).await?[3])
    }

    async fn write_lock(&mut self, part: &'static Part, value: u8) -> ProgResult<()> {
        self.require_isp("lock bits")?;
        self.spi(crate::isp::write_lock(part, value)).await?;
        delay_us(part.delays.fuse_us).await;
        Ok(())
    }
}
