//! A Bus Pirate (v3 hardware, firmware v5/v6) on a pseudo-terminal, with a [`SimTarget`] wired
//! to its SPI header (CS → RESET, as avrdude and the seed guide wire it).
//!
//! It answers as the firmware does to the bytes avrdude's `buspirate.c` sends:
//! * **text mode** (the user terminal): echoes typed characters, answers each line with a
//!   `HiZ>` prompt, `#` resets and prints the banner; twenty `0x00` bytes enter binary mode;
//! * **binary bitbang** (`BBIO1`): `0x00` → `BBIO1`, `0x01` → SPI mode (`SPI1`), `0x0F` → reset
//!   to text mode (`0x01`, then the banner), `010xxxxx`/`1xxxxxxx` pin commands answer a byte;
//! * **binary SPI** (`SPI1`): `0x02`/`0x03` CS low/high, `0001xxxx` bulk transfer of 1–16 bytes
//!   (`0x01`, then one MISO byte per MOSI byte), `0x04`/`0x05` write-then-read (with / without
//!   CS; counts up to 4096, `0x01` then the read bytes, `0x00` if a count is too large),
//!   `0100wxyz` peripherals (power, pull-ups, AUX, CS), `01100xxx` speed (30 kHz … 8 MHz),
//!   `1000wxyz` SPI configuration, and — on firmware v6 — `0x06` AVR extended commands
//!   (`0x00` nop, `0x01` version, `0x02` bulk flash read by word address and byte count).
//!   Unknown commands answer `0x00`.
//!
//! SPI bytes go to the target four at a time (one ISP instruction). Bytes of an instruction
//! that is split across two commands get the in-sync echo as their MISO bytes (neither avrdude
//! nor flashline splits instructions).
//!
//! **Timing** ([`BusPirateOptions::line_timing`]): bytes cross the line at 10 bit times each at
//! the configured baud and every SPI byte takes 8 SCK periods plus the firmware's few µs.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::isp;
use crate::sim::pty::Pty;
use crate::sim::pty::{read_host, write_host, HostRead};
use crate::sim::serving::Serving;
use crate::sim::target::SimTarget;

/// SPI clock for each `01100xxx` speed code (Bus Pirate v3).
pub const SPI_SPEEDS_HZ: [u32; 8] = [30_000, 125_000, 250_000, 1_000_000, 2_000_000, 2_600_000, 4_000_000, 8_000_000];

/// Firmware generation to emulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusPirateFirmware {
    /// v5.10: binary SPI with write-then-read, no AVR extended commands.
    V5,
    /// v6.x: adds the AVR extended commands (`0x06`), i.e. bulk flash reads.
    V6,
}

/// Emulator options.
#[derive(Debug, Clone)]
pub struct BusPirateOptions {
    pub firmware: BusPirateFirmware,
    pub baud: u32,
    pub line_timing: bool,
}

impl Default for BusPirateOptions {
    fn default() -> Self {
        BusPirateOptions { firmware: BusPirateFirmware::V6, baud: 115_200, line_timing: false }
    }
}

/// Counters for tests and benchmarks.
#[derive(Debug, Default)]
pub struct BusPirateStats {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Binary-mode commands executed.
    pub commands: AtomicU64,
    /// Four-byte ISP instructions clocked into the target.
    pub instructions: AtomicU64,
}

const BANNER: &str = "RESET\r\n\r\nBus Pirate v3.b\r\nFirmware v6.1 r1676  Bootloader v4.4\r\nDEVID:0x0447 REVID:0x3046 (24FJ64GA002 B8)\r\nhttp://dangerousprototypes.com\r\nHiZ>";
const BANNER_V5: &str = "RESET\r\n\r\nBus Pirate v3.b\r\nFirmware v5.10 (r559)  Bootloader v4.4\r\nDEVID:0x0447 REVID:0x3046 (24FJ64GA002 B8)\r\nhttp://dangerousprototypes.com\r\nHiZ>";

/// A running Bus Pirate emulator. Dropping it stops the thread and closes the pty.
pub struct BusPirateEmulator {
    path: PathBuf,
    stats: Arc<BusPirateStats>,
    serving: Serving,
}

impl BusPirateEmulator {
    /// Open a pty and serve `target` on it from a new thread.
    pub fn spawn(target: SimTarget, opts: BusPirateOptions) -> std::io::Result<BusPirateEmulator> {
        if opts.baud == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "baud must be above 0"));
        }
        let pty = Pty::open()?;
        let path = pty.path.clone();
        let stats = Arc::new(BusPirateStats::default());
        let wire_stats = stats.clone();
        let serving = Serving::spawn("buspirate".into(), target, move |t, stop| {
            let wire = Wire::new(pty, &opts, stop, wire_stats);
            let mut fw = Firmware::new(wire, t, opts.firmware);
            match fw.run() {
                Err(Halt::Stopped) | Ok(()) => tracing::debug!("bus pirate emulator stopped"),
                Err(Halt::Unplugged) => tracing::info!("bus pirate emulator: unplugged (fault)"),
                Err(Halt::Io(e)) => tracing::warn!("bus pirate emulator: pty error: {e}"),
            }
        })?;
        Ok(BusPirateEmulator { path, stats, serving })
    }

    /// The pty slave path the host opens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The simulated target; hold the guard briefly.
    pub fn target(&self) -> MutexGuard<'_, SimTarget> {
        self.serving.target()
    }

    pub fn stats(&self) -> &BusPirateStats {
        &self.stats
    }

    /// Whether the emulator still serves (false after an `unplug` fault fired).
    pub fn is_serving(&self) -> bool {
        self.serving.is_serving()
    }

    /// Stop serving and close the pty (the same as dropping it).
    pub fn stop(self) {
        drop(self)
    }
}

enum Halt {
    Stopped,
    Unplugged,
    Io(std::io::Error),
}

/// The emulator's end of the serial line.
struct Wire {
    master: File,
    _slave: OwnedFd,
    timing: bool,
    byte_time: Duration,
    stop: Arc<AtomicBool>,
    stats: Arc<BusPirateStats>,
    rx: VecDeque<(u8, Instant)>,
    last_arrival: Instant,
    tx_free: Instant,
    /// Firmware time (SPI clocking) not yet accounted: settled before the next reply goes out.
    owed: Duration,
    /// When the firmware's previous work finished (the UART sends while the firmware works on).
    work_free: Instant,
}

impl Wire {
    fn new(pty: Pty, opts: &BusPirateOptions, stop: Arc<AtomicBool>, stats: Arc<BusPirateStats>) -> Wire {
        let now = Instant::now();
        Wire {
            master: pty.master,
            _slave: pty.slave,
            timing: opts.line_timing,
            byte_time: Duration::from_nanos(10_000_000_000 / opts.baud as u64),
            stop,
            stats,
            rx: VecDeque::new(),
            last_arrival: now,
            tx_free: now,
            owed: Duration::ZERO,
            work_free: now,
        }
    }

    fn fill(&mut self) -> Result<(), Halt> {
        while !self.fill_for(Duration::from_secs(3600))? {}
        Ok(())
    }

    /// Wait up to `limit` for host bytes; returns whether any arrived.
    fn fill_for(&mut self, limit: Duration) -> Result<bool, Halt> {
        let mut buf = [0u8; 4096];
        let n = match read_host(&mut self.master, &mut buf, Instant::now() + limit, &self.stop).map_err(Halt::Io)? {
            HostRead::Bytes(n) => n,
            HostRead::TimedOut => return Ok(false),
            HostRead::Stopped => return Err(Halt::Stopped),
        };
        self.stats.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        let now = Instant::now();
        let mut t = now.max(self.rx.back().map(|b| b.1).unwrap_or(now));
        for &b in &buf[..n] {
            if self.timing {
                t += self.byte_time;
            }
            self.rx.push_back((b, t));
        }
        Ok(true)
    }

    /// Next byte if one arrives within `wait`.
    fn try_getch(&mut self, wait: Duration) -> Result<Option<u8>, Halt> {
        if self.rx.is_empty() && !self.fill_for(wait)? {
            return Ok(None);
        }
        Ok(self.getch().ok())
    }

    fn getch(&mut self) -> Result<u8, Halt> {
        loop {
            if let Some((b, t)) = self.rx.pop_front() {
                self.last_arrival = t;
                return Ok(b);
            }
            self.fill()?;
        }
    }

    fn getn(&mut self, n: usize) -> Result<Vec<u8>, Halt> {
        (0..n).map(|_| self.getch()).collect()
    }

    /// Firmware work that takes `d` (SPI clocking): with timing on, the next reply waits for it.
    fn busy(&mut self, d: Duration) {
        if self.timing {
            self.owed += d;
        }
    }

    /// Where the firmware is in modelled time (command arrival, previous work, work so far).
    fn model_now(&self) -> Instant {
        self.last_arrival.max(self.work_free) + self.owed
    }

    /// With timing on, let real time catch up with the model (before touching a busy target).
    fn catch_up(&self) {
        if self.timing {
            let t = self.model_now();
            let now = Instant::now();
            if t > now {
                std::thread::sleep(t - now);
            }
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), Halt> {
        if self.timing {
            // The firmware acts once the command has arrived and its previous work is done,
            // works, then hands the bytes to the UART (which transmits while it works on).
            let ready = self.last_arrival.max(self.work_free) + std::mem::take(&mut self.owed);
            self.work_free = ready;
            let start = ready.max(self.tx_free);
            self.tx_free = start + self.byte_time * bytes.len() as u32;
        }
        let done = self.timing.then_some(self.tx_free);
        write_host(&mut self.master, bytes, done, &self.stats.bytes_out).map_err(Halt::Io)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Text,
    Bitbang,
    Spi,
}

struct Firmware {
    wire: Wire,
    target: Arc<Mutex<SimTarget>>,
    firmware: BusPirateFirmware,
    mode: Mode,
    power: bool,
    /// CS pin level (true = high = RESET released).
    cs_high: bool,
    speed: u8,
    frame: Vec<u8>,
}

impl Firmware {
    fn new(wire: Wire, target: Arc<Mutex<SimTarget>>, firmware: BusPirateFirmware) -> Self {
        Firmware { wire, target, firmware, mode: Mode::Text, power: false, cs_high: true, speed: 0, frame: Vec::new() }
    }

    fn target(&self) -> MutexGuard<'_, SimTarget> {
        self.target.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sck_hz(&self) -> u32 {
        SPI_SPEEDS_HZ[self.speed as usize & 7]
    }

    fn spi_byte_time(&self) -> Duration {
        Duration::from_nanos(8_000_000_000 / self.sck_hz() as u64) + Duration::from_micros(4)
    }

    fn set_cs(&mut self, high: bool) {
        self.cs_high = high;
        self.frame.clear();
        // A powered-down target has no RESET to speak of; with power, CS drives RESET.
        let asserted = !high && self.power;
        self.target().set_reset(asserted);
    }

    fn set_power(&mut self, on: bool) {
        self.power = on;
        let asserted = on && !self.cs_high;
        self.target().set_reset(asserted);
    }

    /// Clock bytes through the target, four at a time (one ISP instruction each), and return
    /// the MISO bytes. Bytes of an instruction whose end is not in `data` read as the in-sync
    /// echo (they are sent before the target has the whole instruction).
    fn clock(&mut self, data: &[u8]) -> Result<Vec<u8>, Halt> {
        let mut out = Vec::with_capacity(data.len());
        // Bytes of the current frame already answered by an earlier command.
        let mut earlier = self.frame.len();
        for &x in data {
            self.wire.busy(self.spi_byte_time());
            if !self.power {
                out.push(0x00);
                continue;
            }
            self.frame.push(x);
            let i = self.frame.len() - 1;
            out.push(if i == 0 { 0x00 } else { self.frame[i - 1] });
            if self.frame.len() == 4 {
                let cmd = [self.frame[0], self.frame[1], self.frame[2], self.frame[3]];
                self.frame.clear();
                self.wire.stats.instructions.fetch_add(1, Ordering::Relaxed);
                let hz = self.sck_hz();
                if self.target().is_busy() {
                    // The instruction happens at its modelled time: a driver that waits long
                    // enough finds the target ready, one that does not is caught.
                    self.wire.catch_up();
                }
                let reply = {
                    let mut t = self.target();
                    let r = t.spi_at(cmd, hz);
                    if t.unplugged() {
                        return Err(Halt::Unplugged);
                    }
                    r
                };
                let here = 4 - earlier;
                let n = out.len();
                out[n - here..].copy_from_slice(&reply[earlier..]);
                earlier = 0;
            }
        }
        Ok(out)
    }

    /// Run one ISP instruction and return its four reply bytes (used by extended reads).
    fn instruction(&mut self, cmd: [u8; 4]) -> Result<[u8; 4], Halt> {
        self.frame.clear();
        let r = self.clock(&cmd)?;
        Ok([r[0], r[1], r[2], r[3]])
    }

    fn run(&mut self) -> Result<(), Halt> {
        let mut zeros = 0u32;
        let mut line: Vec<u8> = Vec::new();
        loop {
            let b = self.wire.getch()?;
            match self.mode {
                Mode::Text => {
                    if b == 0x00 {
                        zeros += 1;
                        if zeros >= 20 {
                            zeros = 0;
                            line.clear();
                            self.mode = Mode::Bitbang;
                            self.wire.put(b"BBIO1")?;
                        }
                        continue;
                    }
                    zeros = 0;
                    match b {
                        b'\r' | b'\n' => {
                            let cmd = String::from_utf8_lossy(&line).trim().to_string();
                            line.clear();
                            if cmd == "#" {
                                self.reset();
                                self.wire.put(b"\r\n")?;
                                let banner = self.banner();
                                self.wire.put(banner.as_bytes())?;
                            } else {
                                self.wire.put(b"\r\nHiZ>")?;
                            }
                        }
                        0x08 | 0x7F => {
                            line.pop();
                        }
                        _ => {
                            line.push(b);
                            self.wire.put(&[b])?;
                        }
                    }
                }
                Mode::Bitbang => self.bitbang(b)?,
                Mode::Spi => self.spi_mode(b)?,
            }
        }
    }

    fn banner(&self) -> &'static str {
        match self.firmware {
            BusPirateFirmware::V5 => BANNER_V5,
            BusPirateFirmware::V6 => BANNER,
        }
    }

    /// Hardware reset: peripherals off, pins high-impedance (RESET pulled up: the target runs).
    fn reset(&mut self) {
        self.mode = Mode::Text;
        self.speed = 0;
        self.cs_high = true;
        self.set_power(false);
        self.frame.clear();
    }

    fn bitbang(&mut self, b: u8) -> Result<(), Halt> {
        self.wire.stats.commands.fetch_add(1, Ordering::Relaxed);
        match b {
            0x00 => self.wire.put(b"BBIO1"),
            0x01 => {
                self.mode = Mode::Spi;
                self.wire.put(b"SPI1")
            }
            0x0F => {
                self.wire.put(&[0x01])?;
                self.reset();
                let banner = self.banner();
                self.wire.put(banner.as_bytes())
            }
            // 010xxxxx pin directions / 1xxxxxxx pin levels: answer the pin state byte.
            0x40..=0x5F => self.wire.put(&[0x40 | (b & 0x1F)]),
            0x80..=0xFF => self.wire.put(&[b & 0x7F]),
            // Other modes (I2C, UART, 1-wire, raw-wire…) are not emulated.
            _ => self.wire.put(&[0x00]),
        }
    }

    fn spi_mode(&mut self, b: u8) -> Result<(), Halt> {
        self.wire.stats.commands.fetch_add(1, Ordering::Relaxed);
        match b {
            0x00 => {
                self.mode = Mode::Bitbang;
                self.wire.put(b"BBIO1")
            }
            0x01 => self.wire.put(b"SPI1"),
            0x02 | 0x03 => {
                self.set_cs(b == 0x03);
                self.wire.put(&[0x01])
            }
            0x04 | 0x05 => {
                let c = self.wire.getn(4)?;
                let wlen = u16::from_be_bytes([c[0], c[1]]) as usize;
                let rlen = u16::from_be_bytes([c[2], c[3]]) as usize;
                if wlen > 4096 || rlen > 4096 {
                    return self.wire.put(&[0x00]);
                }
                let data = self.wire.getn(wlen)?;
                if b == 0x04 {
                    self.set_cs(false);
                }
                self.clock(&data)?;
                let mut out = vec![0x01];
                out.extend(self.clock(&vec![0xFF; rlen])?);
                if b == 0x04 {
                    self.set_cs(true);
                }
                self.wire.put(&out)
            }
            0x06 if self.firmware == BusPirateFirmware::V6 => {
                self.wire.put(&[0x01])?;
                match self.wire.getch()? {
                    0x00 => self.wire.put(&[0x01]),
                    0x01 => self.wire.put(&[0x01, 0x00, 0x01]),
                    0x02 => {
                        let c = self.wire.getn(8)?;
                        let word = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                        let n = u32::from_be_bytes([c[4], c[5], c[6], c[7]]);
                        let big = self.target().part().flash_size > 0x20000;
                        let start = word.wrapping_mul(2);
                        if (start as u64 + n as u64) > 0x100_0000 {
                            return self.wire.put(&[0x00]);
                        }
                        self.wire.put(&[0x01])?;
                        let mut ext = None;
                        // The firmware streams bytes as it reads them; send them in small bursts.
                        let mut burst = Vec::with_capacity(64);
                        for a in start..start + n {
                            if big && ext != Some(a >> 17) {
                                self.instruction(isp::load_extended_address(a))?;
                                ext = Some(a >> 17);
                            }
                            burst.push(self.instruction(isp::read_flash(a))?[3]);
                            if burst.len() == 64 {
                                self.wire.put(&burst)?;
                                burst.clear();
                            }
                        }
                        self.wire.put(&burst)
                    }
                    _ => self.wire.put(&[0x00]),
                }
            }
            0x10..=0x1F => {
                // Acknowledge, then one MISO byte per MOSI byte. Bytes the host sends together
                // are clocked together; a host that waits for each reply gets it after a pause.
                self.wire.put(&[0x01])?;
                let n = (b & 0x0F) as usize + 1;
                let mut pending = Vec::with_capacity(n);
                let mut done = 0;
                while done < n {
                    let x = if pending.is_empty() { Some(self.wire.getch()?) } else { self.wire.try_getch(Duration::from_millis(5))? };
                    if let Some(x) = x { pending.push(x) }
                    if x.is_none() || done + pending.len() == n {
                        let out = self.clock(&pending)?;
                        done += pending.len();
                        pending.clear();
                        self.wire.put(&out)?;
                    }
                }
                Ok(())
            }
            0x40..=0x4F => {
                self.set_power(b & 0x08 != 0);
                self.set_cs(b & 0x01 != 0);
                self.wire.put(&[0x01])
            }
            0x60..=0x67 => {
                self.speed = b & 0x07;
                self.wire.put(&[0x01])
            }
            0x80..=0x8F => self.wire.put(&[0x01]),
            _ => self.wire.put(&[0x00]),
        }
    }
}
