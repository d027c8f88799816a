//! The protocol's lower bound for one board's job over STK500v1.
//!
//! The bound is what no STK500v1 host can avoid for identify + erase + program + verify + fuses:
//! the necessary commands *and* their replies carried one after the other over the programmer's
//! link, plus the part's datasheet delays (RESET → Programming Enable settle, chip erase, one
//! page write per page written, one fuse write per fuse). On a bare UART (`Bridge::None`) the
//! link costs 10 bit times per byte; behind USB every exchange is replayed through the same
//! [`BridgeClock`] the timed emulator uses (frames, packet sizes, latency timers, the UART
//! behind a USB-serial chip), so the bound includes the bridge's per-transfer cost. The
//! conversation it counts is the least one the protocol allows:
//!
//! * session: `GET_SYNC`, `SET_DEVICE` (the firmware needs the page size), `SET_DEVICE_EXT`,
//!   `ENTER_PROGMODE`, `LEAVE_PROGMODE`;
//! * identify: `READ_SIGN`;
//! * erase: one `UNIVERSAL` chip erase;
//! * program: one `PROG_PAGE` per page that is not all 0xFF (erased flash already reads 0xFF),
//!   each after its own `LOAD_ADDRESS` (STK500v1 does not promise that a firmware advances its
//!   address over a page: ArduinoISP does, Optiboot does not);
//! * verify: `READ_PAGE` in the largest block the firmwares buffer (256 bytes) over the pages
//!   the policy reads back, each after its own `LOAD_ADDRESS`;
//! * fuses: one `UNIVERSAL` write and one `UNIVERSAL` read per fuse.
//!
//! Pipelining (sending the next command while a reply streams) is not assumed: ArduinoISP on a
//! UART has a small receive buffer and acts on one frame at a time.

use std::time::Duration;

use crate::image::Image;
use crate::part::{FuseKind, FuseSet, Part};
use crate::programmer::stk500::wire::MAX_BLOCK;
use crate::sim::bridge::{Bridge, BridgeClock};
use crate::verify::VerifyPolicy;

/// Datasheet: wait at least 20 ms after the RESET pulse before Programming Enable.
pub const RESET_SETTLE: Duration = Duration::from_millis(20);

/// One kind of exchange in the bound: `count` times `out` bytes to the programmer and `back`
/// bytes from it, plus `delay` of the part's own time per exchange.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Exchange {
    pub what: String,
    pub count: u64,
    pub out: u64,
    pub back: u64,
    pub delay_each: Duration,
}

impl Exchange {
    fn bytes(&self) -> u64 {
        self.count * (self.out + self.back)
    }
}

/// A lower bound: exchanges at a line rate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Bound {
    pub baud: u32,
    /// The programmer's link the exchanges cross.
    pub bridge: Bridge,
    pub exchanges: Vec<Exchange>,
    /// Pages written / pages in the image (blank ones skipped).
    pub pages_written: u64,
    pub pages_total: u64,
    /// Bytes read back.
    pub verify_bytes: u64,
}

impl Bound {
    /// Bytes that cross the wire, both directions.
    pub fn bytes(&self) -> u64 {
        self.exchanges.iter().map(Exchange::bytes).sum()
    }

    /// Time those bytes take at 10 bit times per byte.
    pub fn line_time(&self) -> Duration {
        Duration::from_nanos(self.bytes() * 10 * 1_000_000_000 / self.baud as u64)
    }

    /// The part's delays.
    pub fn delays(&self) -> Duration {
        self.exchanges.iter().map(|e| e.delay_each * e.count as u32).sum()
    }

    /// The whole bound: on a bare UART the line time plus the delays; behind USB the exchanges
    /// replayed one after the other through the bridge model.
    pub fn total(&self) -> Duration {
        match self.bridge {
            Bridge::None => self.line_time() + self.delays(),
            b => self.link_time(b) + self.delays(),
        }
    }

    /// Time the exchanges spend on the link (everything but the delays) behind `bridge`.
    fn link_time(&self, bridge: Bridge) -> Duration {
        let mut clock = BridgeClock::new(bridge, self.baud);
        let mut t = Duration::ZERO;
        for e in &self.exchanges {
            for _ in 0..e.count {
                t = clock.exchange(t, e.out as usize, e.delay_each, e.back as usize);
            }
        }
        t.saturating_sub(self.delays())
    }

    /// Exchanges (command + reply) in the conversation.
    pub fn exchange_count(&self) -> u64 {
        self.exchanges.iter().map(|e| e.count).sum()
    }

    /// The arithmetic, one line per exchange kind, then the sums.
    pub fn arithmetic(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.exchanges {
            let mut l = format!("{}: {} × ({} + {}) B = {} B", e.what, e.count, e.out, e.back, e.bytes());
            if !e.delay_each.is_zero() {
                l += &format!(", + {} × {} µs = {:.1} ms", e.count, e.delay_each.as_micros(), (e.delay_each * e.count as u32).as_secs_f64() * 1e3);
            }
            out.push(l);
        }
        match self.bridge {
            Bridge::None => out.push(format!(
                "bytes {} × 10 bit / {} baud = {:.1} ms; + delays {:.1} ms = **{:.1} ms**",
                self.bytes(),
                self.baud,
                self.line_time().as_secs_f64() * 1e3,
                self.delays().as_secs_f64() * 1e3,
                self.total().as_secs_f64() * 1e3
            )),
            b => out.push(format!(
                "{} exchanges ({} B) one after the other through the {} model{}: link {:.1} ms; + delays {:.1} ms = **{:.1} ms**",
                self.exchange_count(),
                self.bytes(),
                b.describe(),
                if b.has_uart() { format!(" with its UART at {} baud", self.baud) } else { String::new() },
                self.link_time(b).as_secs_f64() * 1e3,
                self.delays().as_secs_f64() * 1e3,
                self.total().as_secs_f64() * 1e3
            )),
        }
        out
    }
}

/// The flash pages of `image` (padded with 0xFF) and which of them a job writes after a chip
/// erase (those not entirely 0xFF) — the same rule as the job runner's.
pub fn pages(part: &'static Part, image: &Image) -> (Vec<(u32, Vec<u8>)>, Vec<bool>) {
    let pages = image.pages(part.flash_page_size);
    let written = pages.iter().map(|(_, d)| !d.iter().all(|b| *b == 0xFF)).collect();
    (pages, written)
}

/// Contiguous runs of the selected pages: `(start, bytes)`.
fn runs(part: &'static Part, pages: &[(u32, Vec<u8>)], pick: &[bool]) -> Vec<(u32, u64)> {
    let mut out: Vec<(u32, u64)> = Vec::new();
    for ((addr, _), p) in pages.iter().zip(pick) {
        if !*p {
            continue;
        }
        match out.last_mut() {
            Some((a, n)) if *a as u64 + *n == *addr as u64 => *n += part.flash_page_size as u64,
            _ => out.push((*addr, part.flash_page_size as u64)),
        }
    }
    out
}

/// The STK500v1 bound for programming `image` into `part` with `fuses`, reading back per
/// `verify`, over `bridge` with the firmware's UART (if any) at `baud`.
pub fn stk500v1(part: &'static Part, image: &Image, fuses: &FuseSet, verify: VerifyPolicy, baud: u32, bridge: Bridge) -> Bound {
    let ps = part.flash_page_size as u64;
    let (pages, written) = pages(part, image);
    let n_written = written.iter().filter(|w| **w).count() as u64;
    let all = vec![true; pages.len()];
    let verify_pick: &[bool] = match verify {
        VerifyPolicy::Full => &all,
        VerifyPolicy::Written => &written,
        VerifyPolicy::None => &[],
    };
    let verify_runs = if verify == VerifyPolicy::None { Vec::new() } else { runs(part, &pages, verify_pick) };
    let verify_bytes: u64 = verify_runs.iter().map(|r| r.1).sum();
    let n_fuses = FuseKind::ALL.iter().filter(|k| fuses.get(**k).is_some()).count() as u64;

    let ex = |what: &str, count: u64, out: u64, back: u64, delay_each: Duration| Exchange { what: what.into(), count, out, back, delay_each };
    let mut e = vec![
        ex("GET_SYNC", 1, 2, 2, Duration::ZERO),
        ex("SET_DEVICE", 1, 22, 2, Duration::ZERO),
        ex("SET_DEVICE_EXT", 1, 7, 2, Duration::ZERO),
        ex("ENTER_PROGMODE (+ RESET settle)", 1, 2, 2, RESET_SETTLE),
        ex("READ_SIGN", 1, 2, 5, Duration::ZERO),
        ex("chip erase (UNIVERSAL)", 1, 6, 3, Duration::from_micros(part.delays.chip_erase_us as u64)),
        ex("LOAD_ADDRESS (program, one per page)", n_written, 4, 2, Duration::ZERO),
        ex(&format!("PROG_PAGE {ps} B (+ page write)"), n_written, 4 + ps + 1, 2, Duration::from_micros(part.delays.flash_page_us as u64)),
    ];
    if !verify_runs.is_empty() {
        // Each run in blocks of MAX_BLOCK; count full blocks and the remainders separately.
        let mut full = 0u64;
        let mut rest: Vec<u64> = Vec::new();
        for (_, n) in &verify_runs {
            full += n / MAX_BLOCK as u64;
            if n % MAX_BLOCK as u64 != 0 {
                rest.push(n % MAX_BLOCK as u64);
            }
        }
        e.push(ex("LOAD_ADDRESS (verify, one per block)", full + rest.len() as u64, 4, 2, Duration::ZERO));
        if full > 0 {
            e.push(ex(&format!("READ_PAGE {MAX_BLOCK} B"), full, 5, MAX_BLOCK as u64 + 2, Duration::ZERO));
        }
        for r in rest {
            e.push(ex(&format!("READ_PAGE {r} B"), 1, 5, r + 2, Duration::ZERO));
        }
    }
    if n_fuses > 0 {
        e.push(ex("fuse write (UNIVERSAL)", n_fuses, 6, 3, Duration::from_micros(part.delays.fuse_us as u64)));
        e.push(ex("fuse read (UNIVERSAL)", n_fuses, 6, 3, Duration::ZERO));
    }
    e.push(ex("LEAVE_PROGMODE", 1, 2, 2, Duration::ZERO));
    e.retain(|x| x.count > 0);
    Bound { baud, bridge, exchanges: e, pages_written: n_written, pages_total: pages.len() as u64, verify_bytes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::part;

    #[test]
    fn bound_counts_pages_runs_and_blocks() {
        let p = part::find("atmega32u4").unwrap();
        let mut img = Image::new();
        // Two written pages at 0 and 0x80, a blank page at 0x100, one at 0x7000.
        img.insert(0, &[0x0C; 256]).unwrap();
        img.insert(0x100, &[0xFF; 128]).unwrap();
        img.insert(0x7000, &[0x11; 2]).unwrap();
        let mut fuses = FuseSet::default();
        fuses.set(FuseKind::Low, 0xFF);
        let b = stk500v1(p, &img, &fuses, VerifyPolicy::Full, 115_200, Bridge::None);
        assert_eq!((b.pages_written, b.pages_total), (3, 4));
        let find = |w: &str| b.exchanges.iter().find(|e| e.what.starts_with(w)).unwrap().count;
        assert_eq!(find("LOAD_ADDRESS (program"), 3);
        assert_eq!(find("PROG_PAGE"), 3);
        // Verify: run 0..0x180 (384 B = 256 + 128) and 0x7000 (128 B).
        assert_eq!(b.verify_bytes, 512);
        assert_eq!(find("READ_PAGE 256"), 1);
        assert_eq!(find("LOAD_ADDRESS (verify"), 3, "blocks 0..0x100, 0x100..0x180, 0x7000..0x7080");
        let w = stk500v1(p, &img, &fuses, VerifyPolicy::Written, 115_200, Bridge::None);
        assert_eq!(w.verify_bytes, 384);
        assert!(w.total() < b.total());
        // Delays: settle + erase + 3 pages + 1 fuse.
        let d = RESET_SETTLE + Duration::from_micros((p.delays.chip_erase_us + 3 * p.delays.flash_page_us + p.delays.fuse_us) as u64);
        assert_eq!(b.delays(), d);
        assert_eq!(b.total(), b.line_time() + d);
        // Behind USB each exchange costs at least its frames: on CDC the OUT goes in the next
        // frame and the reply at the next start of frame (a delay in between may end inside a
        // frame), two frames when there is none; FTDI's 16 ms timer far more.
        let cdc = stk500v1(p, &img, &fuses, VerifyPolicy::Full, 115_200, Bridge::Cdc);
        let no_delay = cdc.exchanges.iter().filter(|e| e.delay_each.is_zero()).map(|e| e.count).sum::<u64>() as u32;
        let ms = Duration::from_millis(1);
        assert!(cdc.total() >= d + ms * cdc.exchange_count() as u32 + ms * no_delay, "{:?}", cdc.arithmetic());
        let ftdi = stk500v1(p, &img, &fuses, VerifyPolicy::Full, 115_200, Bridge::Ftdi { latency_ms: 16 });
        assert!(ftdi.total() > b.total() + Duration::from_millis(10) * ftdi.exchange_count() as u32, "{:?}", ftdi.arithmetic());
    }
}
