//! STK500 v1 programmer emulators on a pseudo-terminal, backed by a [`SimTarget`].
//!
//! * [`Stk500Mode::Avrisp`] answers as the ArduinoISP firmware (also what the QMK Pro Micro and
//!   Teensy 2.0 ISP firmwares run): an ISP programmer in front of the target. `ENTER_PROGMODE`
//!   pulses the target's RESET and sends Programming Enable (without checking the echo, as
//!   ArduinoISP does), `UNIVERSAL` passes a four-byte instruction through, `PROG_PAGE 'F'`
//!   loads the target's page buffer and commits each page with Write Page, `READ_PAGE` reads
//!   word by word, all with the word address set by `LOAD_ADDRESS` and advanced by flash
//!   page reads/writes. SPI runs at ArduinoISP's fixed 1 MHz / 6, so a slow target fails.
//! * [`Stk500Mode::Arduino`] answers as Optiboot 4.4 (the Arduino bootloader): the target
//!   programs itself, `UNIVERSAL` answers 0x00 (so fuse reads say 0x00), page writes erase and
//!   write the page but writes into the bootloader's own section are ignored (boot lock bits),
//!   `PROG_PAGE`/`READ_PAGE` ignore the memory type (Optiboot 4.4 has no EEPROM support), and a
//!   frame without `CRC_EOP` makes it reset (silence until the line is quiet).
//!
//! Differences from the stock firmware, chosen on purpose and documented: ArduinoISP waits a
//! fixed 30 ms after each Write Page; this emulator polls RDY/BSY instead, so a page costs the
//! part's datasheet delay. SPI transfer time is not modelled (only the serial line is).
//! `SET_PARAMETER` and `CHIP_ERASE` (0x52) are accepted (STK500 v1 commands stock ArduinoISP
//! lacks). A pty has no DTR/RTS: the emulated Optiboot board is always in its bootloader when
//! the host syncs, as if the host's reset pulse had reached it.
//!
//! **Line timing** ([`EmulatorOptions::line_timing`]): the link between host and firmware is
//! modelled by [`EmulatorOptions::bridge`] ([`crate::sim::bridge`]): the USB side of the
//! programmer (native CDC frames, an FTDI latency timer, a CH340, an Uno's 16U2) and, behind a
//! USB-serial bridge, the UART at 10 bit times per byte in each direction; `Bridge::None` is the
//! bare UART alone. A command is acted on only once its last byte would have arrived, and reply
//! bytes are delivered when the bridge would hand them to the host. The target's own datasheet
//! delays come on top (see [`crate::sim::SimOptions::timing`]).
//!
//! **Address auto-increment**: ArduinoISP advances its word address over the words a
//! `PROG_PAGE`/`READ_PAGE` touched; with [`EmulatorOptions::no_autoinc`] the emulated firmware
//! keeps the address it was given (as Optiboot and other STK500v1 firmwares do), so a host must
//! send `LOAD_ADDRESS` before every page. `CHECK_AUTOINC` is answered `UNKNOWN`, as ArduinoISP
//! answers it.
//!
//! If the host sets a different baud on the tty than the emulator was started with, the bytes
//! are dropped as garbage (as a UART at the wrong rate would see them) and a warning is logged.
//! Behind native USB CDC (`Bridge::Cdc`) there is no UART and any baud is accepted.
//!
//! **Faults** are the target's ([`Fault`]); `unplug` makes the emulator close the pty master so
//! the host sees the device vanish (reads fail or hit end of file).

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::isp;
use crate::part::{FuseKind, Part};
use crate::programmer::stk500::wire as stk;
use crate::sim::bridge::{Bridge, BridgeClock};
use crate::sim::pty::Pty;
use crate::sim::pty::{read_host, write_host, HostRead};
use crate::sim::serving::Serving;
use crate::sim::target::{Fault, SimTarget};

/// Which firmware the emulator answers as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stk500Mode {
    /// ArduinoISP-style ISP programmer (`avrdude -c avrisp` / `-c stk500v1`).
    Avrisp,
    /// Optiboot bootloader on the target itself (`avrdude -c arduino`).
    Arduino,
}

impl Stk500Mode {
    pub fn name(self) -> &'static str {
        match self {
            Stk500Mode::Avrisp => "stk500v1",
            Stk500Mode::Arduino => "arduino",
        }
    }
}

/// Emulator options.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EmulatorOptions {
    pub mode: Stk500Mode,
    /// Serial rate the emulated firmware runs at (ArduinoISP ships at 19200; the QMK ISP
    /// firmwares and Optiboot on a 16 MHz board at 115200).
    pub baud: u32,
    /// Emulate the link's timing: the bridge below and the UART behind it.
    pub line_timing: bool,
    /// The USB side of the programmer (used with `line_timing`).
    pub bridge: Bridge,
    /// Keep the address after `PROG_PAGE` / `READ_PAGE` instead of advancing it (Avrisp mode).
    pub no_autoinc: bool,
}

impl EmulatorOptions {
    pub fn new(mode: Stk500Mode) -> Self {
        Self { mode, baud: 115_200, line_timing: false, bridge: Bridge::None, no_autoinc: false }
    }
    pub fn bridge(mut self, bridge: Bridge) -> Self {
        self.bridge = bridge;
        self
    }
    pub fn no_autoinc(mut self, on: bool) -> Self {
        self.no_autoinc = on;
        self
    }
    pub fn baud(mut self, baud: u32) -> Self {
        self.baud = baud;
        self
    }
    pub fn line_timing(mut self, on: bool) -> Self {
        self.line_timing = on;
        self
    }
}

/// Traffic counters (for benchmarks and tests).
#[derive(Debug, Default)]
pub struct EmulatorStats {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub commands: AtomicU64,
}

/// ArduinoISP's SPI clock: `SPI_CLOCK (1000000/6)`.
pub const ARDUINOISP_SCK_HZ: u32 = 1_000_000 / 6;
/// ArduinoISP's reported versions: hardware 2, software 1.18.
const AISP_HWVER: u8 = 2;
const AISP_SWMAJ: u8 = 1;
const AISP_SWMIN: u8 = 18;
/// Optiboot 4.4 reports software version 4.4 and 0x03 for every other parameter.
const OPTIBOOT_MAJVER: u8 = 4;
const OPTIBOOT_MINVER: u8 = 4;
/// Datasheet minimum wait between the RESET pulse and Programming Enable.
const RESET_TO_PROG_ENABLE: Duration = Duration::from_millis(20);
/// How long the emulated firmware polls RDY/BSY before giving up on a busy target.
const MAX_BUSY_POLL: Duration = Duration::from_millis(50);

/// The Optiboot image the `arduino` emulator preloads on an ATmega328P (see
/// `tests/fixtures/README.md` for its provenance).
pub const OPTIBOOT_ATMEGA328_HEX: &str = include_str!("../../tests/fixtures/optiboot_atmega328.hex");
/// High fuse of an Arduino Uno: 512-byte boot section, BOOTRST programmed.
pub const OPTIBOOT_HIGH_FUSE: u8 = 0xDE;

/// A running STK500v1 emulator. Dropping it stops the emulator thread and closes the pty.
pub struct Stk500Emulator {
    path: PathBuf,
    stats: Arc<EmulatorStats>,
    serving: Serving,
    mode: Stk500Mode,
}

impl Stk500Emulator {
    /// Open a pty and serve `target` on it from a new thread. In `Arduino` mode on an
    /// ATmega328P, Optiboot is preloaded into the boot section and the fuses set as on an
    /// Arduino Uno.
    pub fn spawn(mut target: SimTarget, opts: EmulatorOptions) -> std::io::Result<Stk500Emulator> {
        if opts.baud == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "baud must be above 0"));
        }
        if opts.mode == Stk500Mode::Arduino {
            prepare_bootloader_target(&mut target)?;
        }
        let pty = Pty::open()?;
        let path = pty.path.clone();
        let stats = Arc::new(EmulatorStats::default());
        let line_stats = stats.clone();
        let mode = opts.mode;
        let serving = Serving::spawn(format!("stk500-{}", mode.name()), target, move |worker_target, stop| {
            let line = Line::new(pty, opts.baud, opts.line_timing, opts.bridge, stop, line_stats);
            let mut fw = Firmware::new(line, worker_target);
            fw.no_autoinc = opts.no_autoinc;
            let end = match mode {
                Stk500Mode::Avrisp => fw.run_arduinoisp(),
                Stk500Mode::Arduino => fw.run_optiboot(),
            };
            match end {
                Halt::Stopped => tracing::debug!("stk500 emulator stopped"),
                Halt::Unplugged => tracing::info!("stk500 emulator: programmer unplugged (fault)"),
                Halt::Io(e) => tracing::warn!("stk500 emulator: pty error: {e}"),
            }
            // Dropping `fw` closes the pty master and our slave fd: the device vanishes.
        })?;
        Ok(Stk500Emulator { path, stats, serving, mode })
    }

    /// The pty slave path the host opens (`/dev/pts/N`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn mode(&self) -> Stk500Mode {
        self.mode
    }

    /// The simulated target, for inspection (memory, fuses, stats) between host sessions.
    /// Hold the guard briefly: the emulator thread locks it for every command.
    pub fn target(&self) -> MutexGuard<'_, SimTarget> {
        self.serving.target()
    }

    pub fn stats(&self) -> &EmulatorStats {
        &self.stats
    }

    /// Whether the emulator thread is still serving (false after an `unplug` fault fired).
    pub fn is_serving(&self) -> bool {
        self.serving.is_serving()
    }

    /// Stop serving and close the pty (the same as dropping it).
    pub fn stop(self) {
        drop(self)
    }
}

/// A simulated ArduinoISP-type programmer behind a USB `bridge`, with a fresh simulated board:
/// an [`Stk500Emulator`] (timed when the board is) on a pty, driven by the real `avrisp` driver.
/// What a `sim` station slot or `flash --programmer sim --timing` runs when given a bridge, so
/// their cycle is the one of a Pro Micro / Teensy / Uno-as-ISP on that link. Identity `sim:NAME`.
pub struct EmulatedAvrisp {
    name: String,
    driver: crate::programmer::stk500::Stk500Programmer,
    emulator: Stk500Emulator,
}

impl EmulatedAvrisp {
    /// Start the emulator for a fresh `part` board with `opts` behind `bridge`.
    pub fn spawn(part: &'static Part, opts: crate::sim::SimOptions, bridge: Bridge, name: impl Into<String>) -> std::io::Result<EmulatedAvrisp> {
        let timing = opts.timing;
        let emulator = Stk500Emulator::spawn(SimTarget::new(part, opts), EmulatorOptions::new(Stk500Mode::Avrisp).line_timing(timing).bridge(bridge))?;
        let driver = crate::programmer::stk500::Stk500Programmer::avrisp(emulator.path(), None);
        Ok(EmulatedAvrisp { name: name.into(), driver, emulator })
    }

    /// The emulator (its target and counters).
    pub fn emulator(&self) -> &Stk500Emulator {
        &self.emulator
    }
}

#[async_trait::async_trait]
impl crate::programmer::Programmer for EmulatedAvrisp {
    fn info(&self) -> crate::programmer::ProgrammerInfo {
        crate::programmer::ProgrammerInfo { kind: crate::programmer::ProgrammerKind::Sim, identity: format!("sim:{}", self.name) }
    }
    async fn open(&mut self) -> crate::error::ProgResult<()> {
        self.driver.open().await
    }
    async fn enter_progmode(&mut self, part: &'static Part) -> crate::error::ProgResult<()> {
        self.driver.enter_progmode(part).await
    }
    async fn leave_progmode(&mut self) -> crate::error::ProgResult<()> {
        self.driver.leave_progmode().await
    }
    async fn spi(&mut self, cmd: isp::Cmd) -> crate::error::ProgResult<isp::Cmd> {
        self.driver.spi(cmd).await
    }
    async fn close(&mut self) -> crate::error::ProgResult<()> {
        self.driver.close().await
    }
    fn sck_hz(&self) -> Option<u32> {
        self.driver.sck_hz()
    }
    fn take_notes(&mut self) -> Vec<String> {
        self.driver.take_notes()
    }
    fn erase_clears_flash(&self) -> bool {
        self.driver.erase_clears_flash()
    }
    async fn wait_us(&mut self, us: u32) {
        self.driver.wait_us(us).await
    }
    fn read_block_size(&self) -> usize {
        self.driver.read_block_size()
    }
    async fn read_signature(&mut self) -> crate::error::ProgResult<[u8; 3]> {
        self.driver.read_signature().await
    }
    async fn chip_erase(&mut self, part: &'static Part) -> crate::error::ProgResult<()> {
        self.driver.chip_erase(part).await
    }
    async fn write_flash_page(&mut self, part: &'static Part, addr: u32, data: &[u8]) -> crate::error::ProgResult<()> {
        self.driver.write_flash_page(part, addr, data).await
    }
    async fn read_flash(&mut self, part: &'static Part, addr: u32, len: usize) -> crate::error::ProgResult<Vec<u8>> {
        self.driver.read_flash(part, addr, len).await
    }
    async fn write_eeprom(&mut self, part: &'static Part, addr: u32, data: &[u8]) -> crate::error::ProgResult<()> {
        self.driver.write_eeprom(part, addr, data).await
    }
    async fn read_eeprom(&mut self, part: &'static Part, addr: u32, len: usize) -> crate::error::ProgResult<Vec<u8>> {
        self.driver.read_eeprom(part, addr, len).await
    }
    async fn read_fuse(&mut self, part: &'static Part, kind: FuseKind) -> crate::error::ProgResult<u8> {
        self.driver.read_fuse(part, kind).await
    }
    async fn write_fuse(&mut self, part: &'static Part, kind: FuseKind, value: u8) -> crate::error::ProgResult<()> {
        self.driver.write_fuse(part, kind, value).await
    }
    async fn read_lock(&mut self, part: &'static Part) -> crate::error::ProgResult<u8> {
        self.driver.read_lock(part).await
    }
    async fn write_lock(&mut self, part: &'static Part, value: u8) -> crate::error::ProgResult<()> {
        self.driver.write_lock(part, value).await
    }
}

/// Put Optiboot and the Uno fuses on an ATmega328P; other parts keep blank flash (the
/// emulator still behaves as Optiboot, with the boot section the high fuse selects).
fn prepare_bootloader_target(target: &mut SimTarget) -> std::io::Result<()> {
    if target.part().id == "atmega328p" {
        let mut reader = ihex::Reader::new(OPTIBOOT_ATMEGA328_HEX);
        let mut base = 0u32;
        for rec in &mut reader {
            let rec = rec.map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("built-in Optiboot image: {e}")))?;
            match rec {
                ihex::Record::Data { offset, value } => target.preload_flash(base + offset as u32, &value),
                ihex::Record::ExtendedSegmentAddress(s) => base = (s as u32) << 4,
                ihex::Record::ExtendedLinearAddress(s) => base = (s as u32) << 16,
                _ => {}
            }
        }
        target.preload_fuse(FuseKind::Low, 0xFF);
        target.preload_fuse(FuseKind::High, OPTIBOOT_HIGH_FUSE);
        target.preload_fuse(FuseKind::Extended, 0xFD);
    }
    Ok(())
}

/// Why the firmware loop ended.
enum Halt {
    Stopped,
    Unplugged,
    Io(std::io::Error),
}

/// The emulator's end of the serial line: byte-wise reads with arrival times, paced writes.
struct Line {
    master: File,
    _slave: OwnedFd,
    baud: u32,
    timing: bool,
    /// The link model; its times count from `epoch`.
    clock: BridgeClock,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    stats: Arc<EmulatorStats>,
    rx: VecDeque<(u8, Instant)>,
    /// When the last byte handed to the firmware would have finished arriving.
    last_arrival: Instant,
    warned_baud: Option<u32>,
}

impl Line {
    fn new(pty: Pty, baud: u32, timing: bool, bridge: Bridge, stop: Arc<AtomicBool>, stats: Arc<EmulatorStats>) -> Line {
        let now = Instant::now();
        Line {
            master: pty.master,
            _slave: pty.slave,
            baud,
            timing,
            clock: BridgeClock::new(bridge, baud),
            epoch: now,
            stop,
            stats,
            rx: VecDeque::new(),
            last_arrival: now,
            warned_baud: None,
        }
    }

    /// The baud the host configured on the tty (termios2 output speed), if readable.
    fn host_baud(&self) -> Option<u32> {
        // SAFETY: TCGETS2 fills a termios2 for a tty fd we own.
        let mut t: nix::libc::termios2 = unsafe { std::mem::zeroed() };
        let rc = unsafe { nix::libc::ioctl(self._slave.as_raw_fd(), nix::libc::TCGETS2, &mut t) };
        (rc == 0 && t.c_ospeed > 0).then_some(t.c_ospeed)
    }

    /// Wait up to `timeout` for bytes from the host; returns whether any are buffered.
    fn fill(&mut self, timeout: Duration) -> Result<bool, Halt> {
        if !self.rx.is_empty() {
            return Ok(true);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let mut buf = [0u8; 4096];
            let n = match read_host(&mut self.master, &mut buf, deadline, &self.stop).map_err(Halt::Io)? {
                HostRead::Bytes(n) => n,
                HostRead::TimedOut => return Ok(false),
                HostRead::Stopped => return Err(Halt::Stopped),
            };
            self.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            if let Some(host) = self.host_baud().filter(|_| self.clock.bridge().has_uart()) {
                if host != self.baud {
                    if self.warned_baud != Some(host) {
                        tracing::warn!("host set {host} baud, emulated firmware runs at {}: bytes are garbage", self.baud);
                        self.warned_baud = Some(host);
                    }
                    continue;
                }
            }
            let now = Instant::now();
            if self.timing {
                let arrivals = self.clock.host_to_device(now - self.epoch, n);
                for (&b, t) in buf[..n].iter().zip(arrivals) {
                    self.rx.push_back((b, self.epoch + t));
                }
            } else {
                self.rx.extend(buf[..n].iter().map(|&b| (b, now)));
            }
            return Ok(true);
        }
    }

    /// Next byte from the host, waiting as long as it takes (until stopped).
    fn getch(&mut self) -> Result<u8, Halt> {
        loop {
            if let Some((b, t)) = self.rx.pop_front() {
                self.last_arrival = t;
                return Ok(b);
            }
            self.fill(Duration::from_secs(3600))?;
        }
    }

    fn getn(&mut self, n: usize) -> Result<Vec<u8>, Halt> {
        (0..n).map(|_| self.getch()).collect()
    }

    /// With line timing on, wait until the bytes consumed so far would have arrived: the
    /// firmware cannot act on a command before it has it.
    fn caught_up(&self) {
        if self.timing {
            let now = Instant::now();
            if self.last_arrival > now {
                std::thread::sleep(self.last_arrival - now);
            }
        }
    }

    /// Send reply bytes; with line timing each part is delivered when the bridge would hand it
    /// to the host.
    fn put(&mut self, bytes: &[u8]) -> Result<(), Halt> {
        if !self.timing {
            return write_host(&mut self.master, bytes, None, &self.stats.bytes_out).map_err(Halt::Io);
        }
        self.caught_up();
        let chunks = self.clock.device_to_host(Instant::now() - self.epoch, bytes.len());
        let mut at = 0;
        for (t, n) in chunks {
            write_host(&mut self.master, &bytes[at..at + n], Some(self.epoch + t), &self.stats.bytes_out).map_err(Halt::Io)?;
            at += n;
        }
        Ok(())
    }

    /// Drop everything until the host has been quiet for `quiet`.
    fn discard_until_quiet(&mut self, quiet: Duration) -> Result<(), Halt> {
        loop {
            self.rx.clear();
            if !self.fill(quiet)? {
                return Ok(());
            }
        }
    }
}

/// ArduinoISP's parameter block from SET_DEVICE (the fields it uses).
#[derive(Debug, Default, Clone)]
struct DeviceParams {
    pagesize: u16,
    eepromsize: u16,
}

struct Firmware {
    line: Line,
    target: Arc<Mutex<SimTarget>>,
    params: DeviceParams,
    /// Word address from LOAD_ADDRESS (ArduinoISP `here`; Optiboot keeps it as a byte address
    /// internally, which is the same thing doubled).
    here: u32,
    pmode: bool,
    rng: SmallRng,
    /// Keep `here` after PROG_PAGE / READ_PAGE (`EmulatorOptions::no_autoinc`).
    no_autoinc: bool,
    self_writes: u64,
    /// Set when an `unplug` fault fires in bootloader mode.
    gone: bool,
}

impl Firmware {
    fn new(line: Line, target: Arc<Mutex<SimTarget>>) -> Firmware {
        Firmware { line, target, params: DeviceParams::default(), here: 0, pmode: false, rng: SmallRng::seed_from_u64(0x0B007), no_autoinc: false, self_writes: 0, gone: false }
    }

    fn target(&self) -> MutexGuard<'_, SimTarget> {
        self.target.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unplugged(&self) -> bool {
        self.target().unplugged()
    }

    // ---------------------------------------------------------------------------------------
    // ArduinoISP
    // ---------------------------------------------------------------------------------------

    fn spi(&mut self, cmd: isp::Cmd) -> u8 {
        self.line.caught_up();
        self.target().spi_at(cmd, ARDUINOISP_SCK_HZ)[3]
    }

    /// `INSYNC OK` if the frame ends here, else `NOSYNC`.
    fn empty_reply(&mut self) -> Result<(), Halt> {
        if self.line.getch()? == stk::CRC_EOP {
            self.line.put(&[stk::INSYNC, stk::OK])
        } else {
            self.line.put(&[stk::NOSYNC])
        }
    }

    /// `INSYNC b OK` if the frame ends here, else `NOSYNC`.
    fn breply(&mut self, b: u8) -> Result<(), Halt> {
        if self.line.getch()? == stk::CRC_EOP {
            self.line.put(&[stk::INSYNC, b, stk::OK])
        } else {
            self.line.put(&[stk::NOSYNC])
        }
    }

    fn run_arduinoisp(&mut self) -> Halt {
        loop {
            if let Err(h) = self.arduinoisp_command() {
                return h;
            }
            if self.unplugged() {
                return Halt::Unplugged;
            }
        }
    }

    fn arduinoisp_command(&mut self) -> Result<(), Halt> {
        let ch = self.line.getch()?;
        self.line.stats.commands.fetch_add(1, Ordering::Relaxed);
        match ch {
            stk::GET_SYNC => self.empty_reply(),
            stk::GET_SIGN_ON => {
                if self.line.getch()? == stk::CRC_EOP {
                    let mut r = vec![stk::INSYNC];
                    r.extend_from_slice(b"AVR ISP");
                    r.push(stk::OK);
                    self.line.put(&r)
                } else {
                    self.line.put(&[stk::NOSYNC])
                }
            }
            stk::GET_PARAMETER => {
                let v = match self.line.getch()? {
                    stk::PARM_HW_VER => AISP_HWVER,
                    stk::PARM_SW_MAJOR => AISP_SWMAJ,
                    stk::PARM_SW_MINOR => AISP_SWMIN,
                    stk::PARM_PROGMODE => b'S',
                    _ => 0,
                };
                self.breply(v)
            }
            stk::SET_PARAMETER => {
                self.line.getn(2)?;
                self.empty_reply()
            }
            stk::SET_DEVICE => {
                let b = self.line.getn(20)?;
                self.params = DeviceParams {
                    pagesize: u16::from_be_bytes([b[12], b[13]]),
                    eepromsize: u16::from_be_bytes([b[14], b[15]]),
                };
                self.empty_reply()
            }
            stk::SET_DEVICE_EXT => {
                self.line.getn(5)?;
                self.empty_reply()
            }
            stk::ENTER_PROGMODE => {
                if !self.pmode {
                    self.start_pmode();
                }
                self.empty_reply()
            }
            stk::LEAVE_PROGMODE => {
                self.end_pmode();
                self.empty_reply()
            }
            stk::CHIP_ERASE => {
                if self.pmode {
                    self.spi(isp::CHIP_ERASE);
                    self.wait_ready();
                }
                self.empty_reply()
            }
            stk::LOAD_ADDRESS => {
                let lo = self.line.getch()? as u32;
                let hi = self.line.getch()? as u32;
                self.here = lo | hi << 8;
                self.empty_reply()
            }
            stk::PROG_FLASH => {
                self.line.getn(2)?;
                self.empty_reply()
            }
            stk::PROG_DATA => {
                self.line.getch()?;
                self.empty_reply()
            }
            stk::PROG_PAGE => self.program_page(),
            stk::READ_PAGE => self.read_page(),
            stk::UNIVERSAL => {
                let b = self.line.getn(4)?;
                let r = self.spi([b[0], b[1], b[2], b[3]]);
                self.breply(r)
            }
            stk::READ_SIGN => {
                if self.line.getch()? != stk::CRC_EOP {
                    return self.line.put(&[stk::NOSYNC]);
                }
                let sig: Vec<u8> = (0..3).map(|i| self.spi(isp::read_signature(i))).collect();
                self.line.put(&[stk::INSYNC, sig[0], sig[1], sig[2], stk::OK])
            }
            // A frame end where a command should be: how the host gets back in sync.
            stk::CRC_EOP => self.line.put(&[stk::NOSYNC]),
            _ => {
                if self.line.getch()? == stk::CRC_EOP {
                    self.line.put(&[stk::UNKNOWN])
                } else {
                    self.line.put(&[stk::NOSYNC])
                }
            }
        }
    }

    fn start_pmode(&mut self) {
        self.line.caught_up();
        let timing = {
            let mut t = self.target();
            // Pulse RESET with SCK low, then hold it asserted.
            t.set_reset(true);
            t.set_reset(false);
            t.set_reset(true);
            t.timing()
        };
        if timing {
            std::thread::sleep(RESET_TO_PROG_ENABLE);
        }
        // ArduinoISP sends Programming Enable and does not look at the echo.
        self.spi(isp::PROG_ENABLE);
        self.pmode = true;
    }

    fn end_pmode(&mut self) {
        self.target().set_reset(false);
        self.pmode = false;
    }

    /// Poll RDY/BSY until the target has finished a self-timed write (bounded).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + MAX_BUSY_POLL;
        loop {
            let (busy_for, ready) = {
                let mut t = self.target();
                let busy_for = t.busy_remaining();
                if !busy_for.is_zero() {
                    (busy_for, false)
                } else {
                    (Duration::ZERO, t.spi_at(isp::POLL_RDY, ARDUINOISP_SCK_HZ)[3] & 1 == 0)
                }
            };
            if ready || Instant::now() >= deadline {
                return;
            }
            // Sleeping the known remainder is the same as polling continuously, minus the CPU.
            std::thread::sleep(busy_for.max(Duration::from_micros(50)).min(MAX_BUSY_POLL));
        }
    }

    /// ArduinoISP `current_page()`: the word address of the page holding `here`, for the page
    /// sizes it knows; any other page size commits every word.
    fn current_page(&self) -> u32 {
        match self.params.pagesize {
            32 => self.here & !0x0F,
            64 => self.here & !0x1F,
            128 => self.here & !0x3F,
            256 => self.here & !0x7F,
            _ => self.here,
        }
    }

    fn commit(&mut self, page_word: u32) {
        self.spi(isp::write_page(page_word * 2));
        self.wait_ready();
    }

    fn program_page(&mut self) -> Result<(), Halt> {
        let len = u16::from_be_bytes([self.line.getch()?, self.line.getch()?]) as usize;
        let memtype = self.line.getch()?;
        match memtype {
            stk::MEM_FLASH => {
                let data = self.line.getn(len)?;
                if self.line.getch()? != stk::CRC_EOP {
                    return self.line.put(&[stk::NOSYNC]);
                }
                let start = self.here;
                let mut page = self.current_page();
                let mut x = 0;
                while x < len {
                    if page != self.current_page() {
                        self.commit(page);
                        page = self.current_page();
                    }
                    let lo = data[x];
                    let hi = data.get(x + 1).copied().unwrap_or(0xFF);
                    self.spi(isp::load_page(self.here * 2, lo));
                    self.spi(isp::load_page(self.here * 2 + 1, hi));
                    x += 2;
                    self.here += 1;
                }
                self.commit(page);
                if self.no_autoinc {
                    self.here = start;
                }
                self.line.put(&[stk::INSYNC, stk::OK])
            }
            stk::MEM_EEPROM => {
                let data = self.line.getn(len)?;
                let result = if len > self.params.eepromsize as usize {
                    stk::FAILED
                } else {
                    let start = self.here * 2;
                    for (i, b) in data.iter().enumerate() {
                        self.spi(isp::write_eeprom(start + i as u32, *b));
                        self.wait_ready();
                    }
                    stk::OK
                };
                if self.line.getch()? == stk::CRC_EOP {
                    self.line.put(&[stk::INSYNC, result])
                } else {
                    self.line.put(&[stk::NOSYNC])
                }
            }
            _ => self.line.put(&[stk::FAILED]),
        }
    }

    fn read_page(&mut self) -> Result<(), Halt> {
        let len = u16::from_be_bytes([self.line.getch()?, self.line.getch()?]) as usize;
        let memtype = self.line.getch()?;
        if self.line.getch()? != stk::CRC_EOP {
            return self.line.put(&[stk::NOSYNC]);
        }
        let mut out = Vec::with_capacity(len + 3);
        out.push(stk::INSYNC);
        let mut result = stk::FAILED;
        if memtype == stk::MEM_FLASH {
            let start = self.here;
            let mut x = 0;
            while x < len {
                out.push(self.spi(isp::read_flash(self.here * 2)));
                out.push(self.spi(isp::read_flash(self.here * 2 + 1)));
                self.here += 1;
                x += 2;
            }
            if self.no_autoinc {
                self.here = start;
            }
            result = stk::OK;
        } else if memtype == stk::MEM_EEPROM {
            let start = self.here * 2;
            for x in 0..len as u32 {
                out.push(self.spi(isp::read_eeprom(start + x)));
            }
            result = stk::OK;
        }
        out.push(result);
        self.line.put(&out)
    }

    // ---------------------------------------------------------------------------------------
    // Optiboot 4.4
    // ---------------------------------------------------------------------------------------

    fn run_optiboot(&mut self) -> Halt {
        let fault = self.target().fault().clone();
        if let Fault::NoTarget { .. } = fault {
            // No board on the cable: nothing ever answers.
            loop {
                if let Err(h) = self.line.getch() {
                    return h;
                }
            }
        }
        loop {
            match self.optiboot_command() {
                Ok(()) => {}
                Err(OptiErr::Halt(h)) => return h,
                Err(OptiErr::Reset) => {
                    // verifySpace() failed: watchdog reset. The board is silent until the host
                    // stops talking (and, on real hardware, pulses DTR).
                    tracing::debug!("optiboot: frame without CRC_EOP, watchdog reset");
                    if let Err(h) = self.line.discard_until_quiet(Duration::from_millis(50)) {
                        return h;
                    }
                }
            }
            if self.gone || self.unplugged() {
                return Halt::Unplugged;
            }
        }
    }

    /// Optiboot `verifySpace()`: the frame must end here, then `INSYNC` goes out.
    fn verify_space(&mut self, reply: &mut Vec<u8>) -> Result<(), OptiErr> {
        if self.line.getch()? != stk::CRC_EOP {
            return Err(OptiErr::Reset);
        }
        reply.push(stk::INSYNC);
        Ok(())
    }

    /// Bytes the bootloader sends, through the board's line faults: a flaky line flips bits,
    /// a target on the wrong clock (slow) sends at the wrong rate, i.e. garbage.
    fn opti_put(&mut self, mut bytes: Vec<u8>) -> Result<(), Halt> {
        let fault = self.target().fault().clone();
        match fault {
            Fault::Flaky { rate } => {
                for b in bytes.iter_mut() {
                    for bit in 0..8 {
                        if self.rng.gen_bool(rate) {
                            *b ^= 1 << bit;
                        }
                    }
                }
            }
            Fault::SlowTarget { .. } => {
                for b in bytes.iter_mut() {
                    *b = (*b >> 1) | 0x80;
                }
            }
            _ => {}
        }
        self.line.put(&bytes)
    }

    fn signature(&self) -> [u8; 3] {
        let t = self.target();
        match t.fault() {
            Fault::WrongChip { signature } => *signature,
            _ => t.part().signature,
        }
    }

    fn optiboot_command(&mut self) -> Result<(), OptiErr> {
        let ch = self.line.getch()?;
        self.line.stats.commands.fetch_add(1, Ordering::Relaxed);
        let mut reply = Vec::new();
        match ch {
            stk::GET_PARAMETER => {
                let which = self.line.getch()?;
                self.verify_space(&mut reply)?;
                reply.push(match which {
                    stk::PARM_SW_MINOR => OPTIBOOT_MINVER,
                    stk::PARM_SW_MAJOR => OPTIBOOT_MAJVER,
                    _ => 0x03,
                });
            }
            stk::SET_DEVICE => {
                self.line.getn(20)?;
                self.verify_space(&mut reply)?;
            }
            stk::SET_DEVICE_EXT => {
                self.line.getn(5)?;
                self.verify_space(&mut reply)?;
            }
            stk::LOAD_ADDRESS => {
                let lo = self.line.getch()? as u32;
                let hi = self.line.getch()? as u32;
                self.here = lo | hi << 8;
                self.verify_space(&mut reply)?;
            }
            stk::UNIVERSAL => {
                self.line.getn(4)?;
                self.verify_space(&mut reply)?;
                reply.push(0x00);
            }
            stk::PROG_PAGE => {
                self.line.getch()?; // length high byte: ignored
                let len = match self.line.getch()? {
                    0 => 256,
                    n => n as usize,
                };
                self.line.getch()?; // memory type: ignored (flash only)
                let data = self.line.getn(len)?;
                self.verify_space(&mut reply)?;
                self.self_program(self.here * 2, &data);
            }
            stk::READ_PAGE => {
                self.line.getch()?;
                let len = match self.line.getch()? {
                    0 => 256,
                    n => n as usize,
                };
                self.line.getch()?;
                self.verify_space(&mut reply)?;
                let t = self.target();
                let flash = t.flash();
                let start = (self.here * 2) as usize;
                for i in 0..len {
                    reply.push(flash.get((start + i) % flash.len().max(1)).copied().unwrap_or(0xFF));
                }
                drop(t);
                self.here += (len as u32).div_ceil(2);
            }
            stk::READ_SIGN => {
                self.verify_space(&mut reply)?;
                reply.extend_from_slice(&self.signature());
            }
            stk::LEAVE_PROGMODE => {
                self.verify_space(&mut reply)?;
            }
            _ => {
                self.verify_space(&mut reply)?;
            }
        }
        reply.push(stk::OK);
        self.line.caught_up();
        self.opti_put(reply)?;
        Ok(())
    }

    /// Optiboot's page erase + page write through SPM. The boot section is write-protected by
    /// the lock bits an Arduino ships with, so writes there do nothing.
    fn self_program(&mut self, addr: u32, data: &[u8]) {
        self.line.caught_up();
        let (part, timing, boot_start, unplug_after): (&'static Part, bool, u32, Option<u32>) = {
            let t = self.target();
            let part = t.part();
            let unplug = match t.fault() {
                Fault::Unplug { after_pages } => Some(*after_pages),
                _ => None,
            };
            (part, t.timing(), part.boot_start(t.fuse(FuseKind::High)), unplug)
        };
        let page = part.flash_page_size;
        let page_addr = addr - addr % page;
        if page_addr < boot_start && page_addr + page <= part.flash_size {
            let mut buf = vec![0xFFu8; page as usize];
            let off = (addr - page_addr) as usize;
            let n = data.len().min(buf.len() - off);
            buf[off..off + n].copy_from_slice(&data[..n]);
            self.target().preload_flash(page_addr, &buf);
        }
        if timing {
            // Page erase, then page write: each a datasheet page-write time.
            std::thread::sleep(Duration::from_micros(2 * part.delays.flash_page_us as u64));
        }
        self.self_writes += 1;
        if let Some(n) = unplug_after {
            if self.self_writes >= n as u64 {
                self.gone = true;
            }
        }
    }
}

enum OptiErr {
    Halt(Halt),
    /// Optiboot's watchdog reset after a framing error.
    Reset,
}

impl From<Halt> for OptiErr {
    fn from(h: Halt) -> Self {
        OptiErr::Halt(h)
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        tracing::debug!(fd = self.master.as_raw_fd(), "closing pty master");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use crate::part;
    use crate::sim::SimOptions;

    /// Send one frame and read exactly `n` reply bytes (bounded by a read timeout).
    fn xfer(host: &mut File, frame: &[u8], n: usize) -> Vec<u8> {
        host.write_all(frame).unwrap();
        let mut out = vec![0u8; n];
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = 0;
        while got < n {
            assert!(Instant::now() < deadline, "no reply to {frame:02X?}");
            let mut pfd = nix::libc::pollfd { fd: host.as_raw_fd(), events: nix::libc::POLLIN, revents: 0 };
            if unsafe { nix::libc::poll(&mut pfd, 1, 100) } > 0 {
                got += host.read(&mut out[got..]).unwrap();
            }
        }
        out
    }

    fn open(emu: &Stk500Emulator) -> File {
        use nix::sys::termios::{cfsetspeed, tcgetattr, tcsetattr, BaudRate, SetArg};
        let f = std::fs::OpenOptions::new().read(true).write(true).open(emu.path()).unwrap();
        let mut t = tcgetattr(&f).unwrap();
        cfsetspeed(&mut t, BaudRate::B115200).unwrap();
        tcsetattr(&f, SetArg::TCSANOW, &t).unwrap();
        f
    }

    #[test]
    fn wrong_baud_is_garbage() {
        let t = SimTarget::new(part::find("m32u4").unwrap(), SimOptions::default());
        let emu = Stk500Emulator::spawn(t, EmulatorOptions::new(Stk500Mode::Avrisp).baud(19200)).unwrap();
        let mut h = open(&emu);
        h.write_all(&[0x30, 0x20]).unwrap();
        let mut pfd = nix::libc::pollfd { fd: h.as_raw_fd(), events: nix::libc::POLLIN, revents: 0 };
        assert_eq!(unsafe { nix::libc::poll(&mut pfd, 1, 300) }, 0, "no answer at the wrong baud");
    }

    #[test]
    fn arduinoisp_sync_signature_and_framing() {
        let t = SimTarget::new(part::find("m32u4").unwrap(), SimOptions::default());
        let emu = Stk500Emulator::spawn(t, EmulatorOptions::new(Stk500Mode::Avrisp)).unwrap();
        let mut h = open(&emu);
        assert_eq!(xfer(&mut h, &[0x30, 0x20], 2), [0x14, 0x10]);
        assert_eq!(xfer(&mut h, &[0x41, 0x81, 0x20], 3), [0x14, 1, 0x10]);
        assert_eq!(xfer(&mut h, &[0x41, 0x82, 0x20], 3), [0x14, 18, 0x10]);
        assert_eq!(xfer(&mut h, &[0x50, 0x20], 2), [0x14, 0x10]);
        assert!(emu.target().in_prog_mode());
        assert_eq!(xfer(&mut h, &[0x75, 0x20], 5), [0x14, 0x1E, 0x95, 0x87, 0x10]);
        // UNIVERSAL read of the high fuse returns the factory value.
        assert_eq!(xfer(&mut h, &[0x56, 0x58, 0x08, 0x00, 0x00, 0x20], 3), [0x14, 0x99, 0x10]);
        // A frame without CRC_EOP.
        assert_eq!(xfer(&mut h, &[0x30, 0x30], 1), [0x15]);
        assert_eq!(xfer(&mut h, &[0x20], 1), [0x15]);
        assert_eq!(xfer(&mut h, &[0x99, 0x20], 1), [0x12]);
        assert_eq!(xfer(&mut h, &[0x51, 0x20], 2), [0x14, 0x10]);
        assert!(!emu.target().reset_asserted());
    }

    #[test]
    fn optiboot_preloaded_and_protects_itself() {
        let t = SimTarget::new(part::find("atmega328p").unwrap(), SimOptions::default());
        let emu = Stk500Emulator::spawn(t, EmulatorOptions::new(Stk500Mode::Arduino)).unwrap();
        assert_eq!(&emu.target().flash()[0x7E00..0x7E04], &[0x11, 0x24, 0x84, 0xB7]);
        let mut h = open(&emu);
        assert_eq!(xfer(&mut h, &[0x41, 0x81, 0x20], 3), [0x14, 4, 0x10]);
        assert_eq!(xfer(&mut h, &[0x75, 0x20], 5), [0x14, 0x1E, 0x95, 0x0F, 0x10]);
        assert_eq!(xfer(&mut h, &[0x56, 0x50, 0x00, 0x00, 0x00, 0x20], 3), [0x14, 0x00, 0x10]);
        // Write a page in the boot section (word 0x3F00): ignored.
        let mut frame = vec![0x55, 0x00, 0x3F, 0x20];
        assert_eq!(xfer(&mut h, &frame, 2), [0x14, 0x10]);
        frame = vec![0x64, 0x00, 0x80, b'F'];
        frame.extend(std::iter::repeat_n(0u8, 128));
        frame.push(0x20);
        assert_eq!(xfer(&mut h, &frame, 2), [0x14, 0x10]);
        assert_eq!(emu.target().flash()[0x7E00], 0x11);
        // The application section takes it.
        assert_eq!(xfer(&mut h, &[0x55, 0x40, 0x00, 0x20], 2), [0x14, 0x10]);
        assert_eq!(xfer(&mut h, &frame, 2), [0x14, 0x10]);
        assert!(emu.target().flash()[0x80..0x100].iter().all(|b| *b == 0));
    }
}
