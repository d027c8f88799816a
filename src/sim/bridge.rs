//! The USB side of a serial programmer: when bytes the host writes reach the programmer's
//! firmware, and when the firmware's reply bytes reach the host.
//!
//! A real ArduinoISP, Pro Micro or Teensy is never a bare UART on the host's side: every
//! command crosses USB, and the USB link, not the baud rate, sets the floor under each
//! command/reply round trip. [`BridgeClock`] turns "the host wrote n bytes at t" and "the firmware
//! sent n bytes at t" into per-byte delivery times for one [`Bridge`] model. It is a pure
//! calculator on durations since an epoch, so the timed emulators ([`crate::sim::stk500`]) and
//! the benchmark's lower bound ([`crate::bench::bound`]) use the same arithmetic.
//!
//! Figures and where they come from:
//!
//! * **USB full speed**: 1 ms frames (USB 2.0 specification §5.8 / §8.4.3: SOF every
//!   1.000 ms); bulk packets of at most 64 bytes, at most 19 of them per frame on an otherwise
//!   idle bus (USB 2.0 table 5-10, full-speed bulk: 19 × 64-byte transactions per frame). A
//!   bulk transfer the host submits goes out in the next frame the host controller schedules:
//!   modelled as the next frame boundary. (Measured: a 1-byte loopback through an FTDI port
//!   averages about 1.0 ms and stays under about 2.0 ms at every baud — heavydeck.net,
//!   "Measuring PC serial port latency" — whole 1 ms frames, not bit times.)
//! * **`cdc`**, native USB CDC (the 32U4 and Teensy 2.0 ISP firmwares, ArduinoISP on the
//!   Arduino AVR core): no UART at all, so the baud does not matter. The Arduino core's
//!   `USBCore.cpp` releases a full 64-byte IN bank at once and flushes a partly filled one from
//!   its start-of-frame interrupt ("Start of Frame - happens every millisecond …
//!   `USBD_Flush(CDC_TX)`"): a short reply leaves at the next frame boundary.
//! * **`ftdi[:MS]`** (FT232R and kin): the chip holds received UART bytes until it has a full
//!   64-byte packet (62 data bytes after its 2 modem-status bytes) or until its latency timer
//!   expires, and restarts the timer with every packet it sends (FTDI application note
//!   AN232B-04, "Data Throughput, Latency and Handshaking"). The timer's default is 16 ms:
//!   Linux's `ftdi_sio` reads it from the chip and falls back to `priv->latency = 16`; it is
//!   the `latency_timer` sysfs attribute (`/sys/bus/usb-serial/devices/ttyUSB0/latency_timer`).
//! * **`ch340`** (WCH CH340/CH341): bulk endpoints of 32 bytes (its USB descriptor,
//!   `wMaxPacketSize 0x0020`, as Linux's `ch341` driver sees it) and no latency timer to set;
//!   modelled as forwarding received bytes at the next frame. No datasheet figure exists for its
//!   forwarding delay; the model is taken from measurements: a firmware write + verify through a
//!   CH340G took 25.4 s where an FT232R took 46.8 s at 16 ms and 23.2 s at 1 ms latency (a
//!   comparison published on blog.goo.ne.jp/jh3kxm), i.e. the CH340 behaves like an FTDI chip
//!   at about 1 ms.
//! * **`16u2`**, the ATmega16U2 on an Arduino Uno/Mega running Arduino's `usbserial` firmware
//!   (LUFA): UART bytes go into a ring buffer that the main loop moves to the USB endpoint only
//!   when Timer0 overflows or when more than 96 bytes wait (`BUFFER_NEARLY_FULL`). Timer0 runs
//!   free at clk/256 (`TCCR0B = (1 << CS02)`, "Start the flush timer so that overflows occur
//!   rapidly"), 8 bits at 16 MHz: an overflow every 256 × 256 / 16 MHz = 4.096 ms.
//! * **`none`**: the bare UART, the emulator's older model (no USB at all): faster than any
//!   real setup, kept for comparison.
//!
//! UART bridges (`ftdi`, `ch340`, `16u2`, `none`) also pace the bytes at 10 bit times per byte
//! (start, 8 data, stop) at the baud, in each direction, between the bridge and the firmware.

use std::fmt;
use std::time::Duration;

/// USB full-speed frame: 1 ms.
pub const FRAME: Duration = Duration::from_millis(1);
/// Largest full-speed bulk packet.
pub const FS_BULK_PACKET: usize = 64;
/// Full-speed bulk packets of 64 bytes that fit in one frame.
pub const FS_BULK_PACKETS_PER_FRAME: usize = 19;
/// FTDI latency timer default, ms (`ftdi_sio`'s fallback and the chips' factory value).
pub const FTDI_DEFAULT_LATENCY_MS: u32 = 16;
/// FTDI data bytes per 64-byte IN packet (2 bytes are modem status).
pub const FTDI_PACKET_DATA: usize = 62;
/// CH340/CH341 bulk endpoint size.
pub const CH340_PACKET: usize = 32;
/// Arduino `usbserial` (16U2) flush timer: Timer0 overflow at clk/256, 16 MHz.
pub const U2_FLUSH_PERIOD: Duration = Duration::from_micros(4_096);
/// Arduino `usbserial` flushes at once above this many buffered bytes (`BUFFER_NEARLY_FULL`).
pub const U2_NEARLY_FULL: usize = 96;

/// Which USB link sits between the host and the programmer's firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum Bridge {
    /// No USB: a bare UART at the baud (the emulator's original model).
    #[default]
    None,
    /// Native USB CDC (32U4 / Teensy ISP firmwares): 1 ms frames, 64-byte packets, no UART.
    Cdc,
    /// FTDI USB-serial chip with this latency timer (ms, 1..=255).
    Ftdi { latency_ms: u32 },
    /// WCH CH340 USB-serial chip.
    Ch340,
    /// ATmega16U2 running Arduino's `usbserial` firmware (Uno, Mega).
    U16u2,
}

impl Bridge {
    /// All models with their defaults, for benchmarks and tests.
    pub const ALL: [Bridge; 5] = [Bridge::None, Bridge::Cdc, Bridge::Ftdi { latency_ms: FTDI_DEFAULT_LATENCY_MS }, Bridge::Ch340, Bridge::U16u2];

    /// Parse `none`, `cdc`, `ftdi`, `ftdi:MS`, `ch340`, `16u2`.
    pub fn parse(s: &str) -> Result<Bridge, String> {
        let t = s.trim().to_ascii_lowercase();
        let (name, arg) = match t.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (t.as_str(), None),
        };
        let no_arg = |b: Bridge| match arg {
            None => Ok(b),
            Some(_) => Err(format!("bridge '{s}': only ftdi takes a value (ftdi:MS)")),
        };
        match name {
            "none" | "uart" => no_arg(Bridge::None),
            "cdc" => no_arg(Bridge::Cdc),
            "ch340" | "ch341" => no_arg(Bridge::Ch340),
            "16u2" | "atmega16u2" | "8u2" => no_arg(Bridge::U16u2),
            "ftdi" => {
                let latency_ms = match arg {
                    None => FTDI_DEFAULT_LATENCY_MS,
                    Some(a) => a.parse::<u32>().ok().filter(|v| (1..=255).contains(v)).ok_or_else(|| {
                        format!("bridge '{s}': the FTDI latency timer is 1..=255 ms (default {FTDI_DEFAULT_LATENCY_MS})")
                    })?,
                };
                Ok(Bridge::Ftdi { latency_ms })
            }
            _ => Err(format!("unknown bridge '{s}': expected none, cdc, ftdi[:MS], ch340 or 16u2")),
        }
    }

    /// Whether the firmware sits behind a UART (so the baud matters).
    pub fn has_uart(self) -> bool {
        !matches!(self, Bridge::Cdc)
    }

    /// A few words for tables and messages.
    pub fn describe(self) -> String {
        match self {
            Bridge::None => "bare UART (no USB)".into(),
            Bridge::Cdc => "native USB CDC (32U4 / Teensy ISP firmware)".into(),
            Bridge::Ftdi { latency_ms } => format!("FTDI, latency timer {latency_ms} ms"),
            Bridge::Ch340 => "CH340".into(),
            Bridge::U16u2 => "ATmega16U2 usbserial (Uno)".into(),
        }
    }
}

impl fmt::Display for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bridge::None => f.write_str("none"),
            Bridge::Cdc => f.write_str("cdc"),
            Bridge::Ftdi { latency_ms } if *latency_ms == FTDI_DEFAULT_LATENCY_MS => f.write_str("ftdi"),
            Bridge::Ftdi { latency_ms } => write!(f, "ftdi:{latency_ms}"),
            Bridge::Ch340 => f.write_str("ch340"),
            Bridge::U16u2 => f.write_str("16u2"),
        }
    }
}

/// The timing state of one link: times are durations since the link's epoch (the emulator's
/// start; frames and the 16U2's timer are counted from it).
#[derive(Debug, Clone)]
pub struct BridgeClock {
    bridge: Bridge,
    byte_time: Duration,
    /// When the last host byte reached the firmware (bytes arrive in order).
    rx_last: Duration,
    /// When the firmware's UART transmitter is free again.
    tx_free: Duration,
    /// When the host last received something (replies arrive in order).
    host_last: Duration,
    /// FTDI: when the chip last sent a packet (its latency timer restarts then).
    ftdi_last: Duration,
}

/// Append `c` bytes delivered at `t` (merged with a chunk at the same time).
fn push(t: Duration, c: usize, chunks: &mut Vec<(Duration, usize)>) {
    if c == 0 {
        return;
    }
    match chunks.last_mut() {
        Some((lt, lc)) if *lt == t => *lc += c,
        _ => chunks.push((t, c)),
    }
}

/// Round `t` up to the next frame boundary strictly after it.
fn next_frame(t: Duration) -> Duration {
    let f = FRAME.as_nanos();
    Duration::from_nanos(((t.as_nanos() / f + 1) * f) as u64)
}

/// The first tick of a `period` grid starting at `origin` that is at or after `t`.
fn next_tick(origin: Duration, period: Duration, t: Duration) -> Duration {
    if t <= origin {
        return origin;
    }
    let p = period.as_nanos();
    let k = (t - origin).as_nanos().div_ceil(p);
    origin + Duration::from_nanos((k * p) as u64)
}

impl BridgeClock {
    pub fn new(bridge: Bridge, baud: u32) -> BridgeClock {
        BridgeClock {
            bridge,
            byte_time: Duration::from_nanos(10_000_000_000 / baud.max(1) as u64),
            rx_last: Duration::ZERO,
            tx_free: Duration::ZERO,
            host_last: Duration::ZERO,
            ftdi_last: Duration::ZERO,
        }
    }

    pub fn bridge(&self) -> Bridge {
        self.bridge
    }

    /// 10 bit times at the baud.
    pub fn byte_time(&self) -> Duration {
        self.byte_time
    }

    /// The host wrote `n` bytes at `at`: when each reaches the firmware.
    pub fn host_to_device(&mut self, at: Duration, n: usize) -> Vec<Duration> {
        let mut out = Vec::with_capacity(n);
        if self.bridge == Bridge::None {
            let mut t = at.max(self.rx_last);
            for _ in 0..n {
                t += self.byte_time;
                out.push(t);
            }
        } else {
            // USB OUT: packets in the next frame, at most 19 per frame; then, behind a UART
            // bridge, the bridge's UART at the baud.
            let packet = if self.bridge == Bridge::Ch340 { CH340_PACKET } else { FS_BULK_PACKET };
            let first = next_frame(at);
            let mut t = self.rx_last;
            for i in 0..n {
                let frame = first + FRAME * ((i / packet) / FS_BULK_PACKETS_PER_FRAME) as u32;
                t = if self.bridge.has_uart() { t.max(frame) + self.byte_time } else { t.max(frame) };
                out.push(t);
            }
        }
        if let Some(l) = out.last() {
            self.rx_last = *l;
        }
        out
    }

    /// The firmware sends `n` bytes starting at `at`: when the host receives them, as
    /// `(time, byte count)` chunks in order.
    pub fn device_to_host(&mut self, at: Duration, n: usize) -> Vec<(Duration, usize)> {
        if n == 0 {
            return Vec::new();
        }
        let mut chunks: Vec<(Duration, usize)> = Vec::new();
        // When each byte has left the firmware's UART (or, on CDC, its USB buffer).
        let uart_done: Vec<Duration> = if self.bridge.has_uart() {
            let start = at.max(self.tx_free);
            let v: Vec<Duration> = (1..=n as u32).map(|i| start + self.byte_time * i).collect();
            self.tx_free = *v.last().unwrap();
            v
        } else {
            vec![at; n]
        };
        match self.bridge {
            Bridge::None => push(uart_done[n - 1], n, &mut chunks),
            Bridge::Cdc => {
                // Full banks go at once; the rest at the next start of frame.
                let full = n / FS_BULK_PACKET * FS_BULK_PACKET;
                push(at, full, &mut chunks);
                push(next_frame(at), n - full, &mut chunks);
            }
            Bridge::Ftdi { latency_ms } => {
                let latency = Duration::from_millis(latency_ms as u64);
                let mut buffered = 0usize;
                for (i, t) in uart_done.iter().enumerate() {
                    buffered += 1;
                    if buffered == FTDI_PACKET_DATA {
                        // A full packet goes as soon as it is full (the timer restarts).
                        push(*t, buffered, &mut chunks);
                        self.ftdi_last = *t;
                        buffered = 0;
                    } else if i + 1 == n {
                        let when = next_tick(self.ftdi_last, latency, *t);
                        push(when, buffered, &mut chunks);
                        self.ftdi_last = when;
                    }
                }
            }
            Bridge::Ch340 => {
                for (i, t) in uart_done.iter().enumerate() {
                    // A full 32-byte packet goes at once, the rest at the next frame.
                    if (i + 1) % CH340_PACKET == 0 {
                        push(*t, CH340_PACKET, &mut chunks);
                    } else if i + 1 == n {
                        push(next_frame(*t), (i + 1) % CH340_PACKET, &mut chunks);
                    }
                }
            }
            Bridge::U16u2 => {
                let mut buffered = 0usize;
                for (i, t) in uart_done.iter().enumerate() {
                    buffered += 1;
                    if buffered > U2_NEARLY_FULL {
                        push(*t, buffered, &mut chunks);
                        buffered = 0;
                    } else if i + 1 == n {
                        push(next_tick(Duration::ZERO, U2_FLUSH_PERIOD, *t), buffered, &mut chunks);
                    }
                }
            }
        }
        // The host sees replies in order.
        for c in chunks.iter_mut() {
            c.0 = c.0.max(self.host_last);
            self.host_last = c.0;
        }
        chunks
    }

    /// One lock-step exchange starting at `at`: `out` bytes to the firmware, `work` of firmware
    /// and target time after the last arrives, `back` bytes of reply. Returns when the host has
    /// the whole reply.
    pub fn exchange(&mut self, at: Duration, out: usize, work: Duration, back: usize) -> Duration {
        let arrived = self.host_to_device(at, out).last().copied().unwrap_or(at);
        self.device_to_host(arrived + work, back).last().map(|c| c.0).unwrap_or(arrived + work)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn parse_and_show() {
        assert_eq!(Bridge::parse("cdc").unwrap(), Bridge::Cdc);
        assert_eq!(Bridge::parse("FTDI").unwrap(), Bridge::Ftdi { latency_ms: 16 });
        assert_eq!(Bridge::parse("ftdi:2").unwrap(), Bridge::Ftdi { latency_ms: 2 });
        assert_eq!(Bridge::parse("16u2").unwrap(), Bridge::U16u2);
        assert!(Bridge::parse("ftdi:0").unwrap_err().contains("1..=255"));
        assert!(Bridge::parse("cdc:3").is_err());
        assert!(Bridge::parse("pl2303").unwrap_err().contains("unknown bridge"));
        for b in Bridge::ALL {
            assert_eq!(Bridge::parse(&b.to_string()).unwrap(), b);
        }
        assert_eq!(Bridge::Ftdi { latency_ms: 4 }.to_string(), "ftdi:4");
    }

    #[test]
    fn cdc_round_trip_is_two_frames_and_ignores_the_baud() {
        let mut c = BridgeClock::new(Bridge::Cdc, 300);
        // Host writes 6 bytes at 0.2 ms: they arrive together at the 1 ms frame.
        let a = c.host_to_device(MS / 5, 6);
        assert!(a.iter().all(|t| *t == MS));
        // A 3-byte reply at 1.3 ms leaves at the 2 ms start of frame.
        assert_eq!(c.device_to_host(MS + MS * 3 / 10, 3), vec![(2 * MS, 3)]);
        // 258 bytes: four full banks at once, two bytes at the next frame.
        assert_eq!(c.device_to_host(5 * MS, 258), vec![(5 * MS, 256), (6 * MS, 2)]);
        let mut c = BridgeClock::new(Bridge::Cdc, 115_200);
        assert_eq!(c.exchange(Duration::ZERO, 6, Duration::ZERO, 3), 2 * MS);
    }

    #[test]
    fn ftdi_holds_short_replies_for_its_latency_timer() {
        let mut c = BridgeClock::new(Bridge::Ftdi { latency_ms: 16 }, 115_200);
        let t = c.exchange(Duration::ZERO, 6, Duration::ZERO, 3);
        assert_eq!(t, 16 * MS, "the first timer tick after the reply");
        // The next exchange, started at once, waits for the tick after that.
        assert_eq!(c.exchange(t, 6, Duration::ZERO, 3), 32 * MS);
        // 258 bytes: four full packets as they fill, the last 10 bytes at the timer.
        let mut c = BridgeClock::new(Bridge::Ftdi { latency_ms: 16 }, 115_200);
        let chunks = c.device_to_host(Duration::ZERO, 258);
        assert_eq!(chunks.iter().map(|c| c.1).collect::<Vec<_>>(), vec![62, 62, 62, 62, 10]);
        let full4 = chunks[3].0;
        assert_eq!(chunks[4].0, full4 + 16 * MS);
        let mut fast = BridgeClock::new(Bridge::Ftdi { latency_ms: 1 }, 115_200);
        assert!(fast.exchange(Duration::ZERO, 6, Duration::ZERO, 3) <= 3 * MS);
    }

    #[test]
    fn u2_flushes_on_its_timer_and_ch340_on_the_frame() {
        let mut c = BridgeClock::new(Bridge::U16u2, 115_200);
        let t = c.exchange(Duration::ZERO, 6, Duration::ZERO, 3);
        assert_eq!(t, U2_FLUSH_PERIOD, "first Timer0 overflow after the reply");
        let mut c = BridgeClock::new(Bridge::Ch340, 115_200);
        let t = c.exchange(Duration::ZERO, 6, Duration::ZERO, 3);
        assert!(t > MS && t <= 3 * MS, "{t:?}");
        // The bare UART: 9 bytes at 115200 baud, nothing else.
        let mut c = BridgeClock::new(Bridge::None, 115_200);
        let t = c.exchange(Duration::ZERO, 6, Duration::ZERO, 3);
        assert_eq!(t, c.byte_time() * 9);
    }
}
