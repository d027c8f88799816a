//! USBasp and USBtinyISP firmware, emulated at the control-transfer level over a
//! [`SimTarget`].
//!
//! Each emulator implements [`UsbTransport`], so the real drivers
//! ([`crate::programmer::usbasp`], [`crate::programmer::usbtiny`]) talk to it exactly as to a
//! device on the bus. The firmware behaviour follows the published firmwares as avrdude drives
//! them (avrdude's `usbasp.c/h`, `usbtiny.c/h`):
//!
//! * **USBasp** (Fischl, 2011 firmware): CONNECT asserts RESET and applies the SCK option,
//!   ENABLEPROG retries Programming Enable with an SCK pulse between tries, READFLASH /
//!   READEEPROM stream bytes from the current address, WRITEFLASH carries a header
//!   (address, page size, FIRST/LAST flags) and flushes a page (`4C`) whenever a page's worth of
//!   bytes has arrived — waiting a fixed 4.8 ms when the last byte is 0xFF, otherwise polling the
//!   flash until it stops reading 0xFF. SETLONGADDRESS switches to 32-bit addresses that
//!   auto-increment across transfers. V-USB without long transfers truncates `wLength` to 8 bits.
//! * **USBtinyISP** (Fried/Streefland): POWERUP with the SCK period and the RESET level, SPI of
//!   one 4-byte instruction, FLASH_READ/EEPROM_READ/FLASH_WRITE/EEPROM_WRITE with a **16-bit**
//!   byte address in `wIndex` that wraps at 64 KiB — which is why flash above 0xFFFF on an
//!   AT90USB1286 cannot be read in chunks (the seed guide's "does not support" warning).
//!
//! **Time model** ([`UsbSimStats::modelled`]): both programmers are low-speed V-USB-class
//! devices. A control transfer costs its USB transactions (setup, one per 8 data bytes, status:
//! ≈133 µs each at 1.5 Mbit/s with token, handshake and gaps) plus the firmware's SPI time at
//! the programmer's SCK (32 SCK cycles and a few µs of firmware per ISP instruction) plus any
//! target busy time the firmware waits out; the total is rounded up to the 1 ms USB frame,
//! because the host schedules the next transfer in a later frame. Host-side waits
//! ([`UsbTransport::delay`]) are added as they are. With the target's `timing` on, the
//! emulator also *sleeps* that long, so a driver that does not wait long enough loses data as
//! on silicon; with timing off, busy waits are still modelled at the part's datasheet delay so
//! the figures stay meaningful, but nothing sleeps.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use crate::isp::{self, Cmd};
use crate::programmer::usb::{UsbError, UsbTransport};
use crate::sim::target::SimTarget;

/// USB low-speed transaction (8 data bytes + token + handshake + gaps) in µs.
const LS_TRANSACTION_US: f64 = 133.0;
/// Firmware overhead per SPI byte (call, store, loop) in µs.
const FW_BYTE_US: f64 = 3.0;

/// Counters and modelled time of one emulated USB programmer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsbSimStats {
    /// Control transfers completed (or failed) on the wire.
    pub transfers: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Modelled wall time: transfers (frame-rounded) plus host delays.
    pub modelled: Duration,
    /// Of which host-side delays.
    pub host_delays: Duration,
}

/// Shared clock/accounting for one transfer.
struct Meter {
    fw_us: f64,
    slept_us: f64,
    timing: bool,
}

impl Meter {
    fn new(timing: bool) -> Self {
        Meter { fw_us: 0.0, slept_us: 0.0, timing }
    }
    fn spi_instruction(&mut self, sck_hz: u32) {
        self.fw_us += 32.0 * 1e6 / sck_hz.max(1) as f64 + 4.0 * FW_BYTE_US;
    }
    /// The firmware waits `us` (fixed delay or polling until the target is ready). With timing
    /// on, waits of a millisecond or more are slept now (the target's busy time runs in real
    /// time); shorter ones are settled with the transfer (timer granularity is ~1 ms).
    async fn wait(&mut self, us: f64) {
        self.fw_us += us;
        if self.timing {
            let owe = self.fw_us - self.slept_us;
            if owe >= 1000.0 {
                tokio::time::sleep(Duration::from_micros(owe as u64)).await;
                self.slept_us = self.fw_us;
            }
        }
    }
    /// Close the transfer: frame-rounded total, sleeping what is still owed.
    async fn finish(self, data_len: usize, stats: &mut UsbSimStats) {
        let usb_us = LS_TRANSACTION_US * (2.0 + (data_len as f64 / 8.0).ceil());
        let total_us = ((usb_us + self.fw_us) / 1000.0).ceil().max(1.0) * 1000.0;
        stats.transfers += 1;
        stats.modelled += Duration::from_micros(total_us as u64);
        if self.timing {
            let owe = total_us - self.slept_us;
            if owe > 0.0 {
                tokio::time::sleep(Duration::from_micros(owe as u64)).await;
            }
        }
    }
}

async fn host_delay(stats: &mut UsbSimStats, timing: bool, d: Duration) {
    stats.modelled += d;
    stats.host_delays += d;
    if timing && !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// How long a firmware polling the target waits for a self-timed write: the real remaining busy
/// time when timing is on, the datasheet delay otherwise.
fn busy_wait_us(t: &SimTarget, datasheet_us: u32) -> f64 {
    if t.timing() {
        t.busy_remaining().as_micros() as f64
    } else {
        datasheet_us as f64
    }
}

fn setup_bytes(value: u16, index: u16) -> [u8; 4] {
    [value as u8, (value >> 8) as u8, index as u8, (index >> 8) as u8]
}

// ---------------------------------------------------------------------------------------------
// USBasp

/// USBasp vendor requests (avrdude `usbasp.h`).
pub mod usbasp_req {
    pub const CONNECT: u8 = 1;
    pub const DISCONNECT: u8 = 2;
    pub const TRANSMIT: u8 = 3;
    pub const READFLASH: u8 = 4;
    pub const ENABLEPROG: u8 = 5;
    pub const WRITEFLASH: u8 = 6;
    pub const READEEPROM: u8 = 7;
    pub const WRITEEEPROM: u8 = 8;
    pub const SETLONGADDRESS: u8 = 9;
    pub const SETISPSCK: u8 = 10;
    pub const GETCAPABILITIES: u8 = 127;
    /// WRITEFLASH header flag: first block of a page-write sequence.
    pub const BLOCKFLAG_FIRST: u8 = 1;
    /// WRITEFLASH header flag: last block; flush a partial page at its end.
    pub const BLOCKFLAG_LAST: u8 = 2;
    /// Capability bit: TPI supported.
    pub const CAP_TPI: u32 = 0x01;
}

/// USBasp SCK option ids and their frequencies (avrdude `usbasp.h`; 0 = auto = 375 kHz in the
/// firmware).
pub const USBASP_SCK_OPTIONS: &[(u8, u32)] = &[
    (1, 500),
    (2, 1_000),
    (3, 2_000),
    (4, 4_000),
    (5, 8_000),
    (6, 16_000),
    (7, 32_000),
    (8, 93_750),
    (9, 187_500),
    (10, 375_000),
    (11, 750_000),
    (12, 1_500_000),
];

/// SCK frequency the stock firmware uses for an option id.
pub fn usbasp_sck_hz(option: u8) -> u32 {
    USBASP_SCK_OPTIONS.iter().find(|(id, _)| *id == option).map(|(_, hz)| *hz).unwrap_or(375_000)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProgState {
    Idle,
    WriteFlash,
    WriteEeprom,
}

struct UsbaspState {
    target: SimTarget,
    stats: UsbSimStats,
    sck_option: u8,
    sck_hz: u32,
    newmode: bool,
    address: u32,
    page_size: u32,
    block_flags: u8,
    page_counter: u32,
    ext_addr: Option<u8>,
}

/// An emulated USBasp with a simulated target on its ISP header. Cheap to clone: clones share
/// the device (hand one to the driver, keep one to inspect the target).
#[derive(Clone)]
pub struct UsbaspSim {
    inner: Arc<Mutex<UsbaspState>>,
}

impl UsbaspSim {
    pub fn new(target: SimTarget) -> Self {
        UsbaspSim {
            inner: Arc::new(Mutex::new(UsbaspState {
                target,
                stats: UsbSimStats::default(),
                sck_option: 0,
                sck_hz: 375_000,
                newmode: false,
                address: 0,
                page_size: 0,
                block_flags: 0,
                page_counter: 0,
                ext_addr: None,
            })),
        }
    }

    /// The simulated target (flash, fuses, stats).
    pub async fn target(&self) -> MappedMutexGuard<'_, SimTarget> {
        MutexGuard::map(self.inner.lock().await, |s| &mut s.target)
    }

    pub async fn stats(&self) -> UsbSimStats {
        self.inner.lock().await.stats.clone()
    }

    /// SCK the firmware currently clocks the target with.
    pub async fn sck_hz(&self) -> u32 {
        self.inner.lock().await.sck_hz
    }
}

impl UsbaspState {
    fn spi(&mut self, m: &mut Meter, cmd: Cmd) -> Cmd {
        m.spi_instruction(self.sck_hz);
        self.target.spi_at(cmd, self.sck_hz)
    }

    /// The 2011 firmware sends Load Extended Address when a >128 KiB part crosses a 128 KiB
    /// boundary.
    fn ext(&mut self, m: &mut Meter, addr: u32) {
        if self.target.part().flash_size > 0x20000 {
            let e = (addr >> 17) as u8;
            if self.ext_addr != Some(e) {
                self.spi(m, isp::load_extended_address(addr));
                self.ext_addr = Some(e);
            }
        }
    }

    async fn flush_page(&mut self, m: &mut Meter, addr: u32, last: u8) {
        self.ext(m, addr);
        self.spi(m, isp::write_page(addr));
        let page_us = self.target.part().delays.flash_page_us;
        if last == 0xFF {
            // Fixed wait: 15 timer ticks of 320 µs.
            m.wait(4800.0).await;
        } else {
            // Data polling: read the byte until it stops reading 0xFF, 320 µs timer ticks.
            let w = busy_wait_us(&self.target, page_us);
            m.wait(w.max(0.0)).await;
            self.spi(m, isp::read_flash(addr));
        }
    }

    async fn in_request(&mut self, m: &mut Meter, req: u8, value: u16, index: u16, length: u16) -> Result<Vec<u8>, UsbError> {
        use usbasp_req::*;
        let d = setup_bytes(value, index);
        Ok(match req {
            CONNECT => {
                self.sck_hz = usbasp_sck_hz(self.sck_option);
                self.newmode = false;
                self.ext_addr = None;
                // ispConnect: RESET low, a positive reset pulse, RESET low again.
                self.target.set_reset(true);
                m.wait(2.0 * 320.0).await;
                vec![]
            }
            DISCONNECT => {
                self.target.set_reset(false);
                vec![]
            }
            TRANSMIT => self.spi(m, d).to_vec(),
            ENABLEPROG => {
                let mut ok = false;
                for _ in 0..32 {
                    let r = self.spi(m, isp::PROG_ENABLE);
                    if isp::prog_enable_ok(&r) {
                        ok = true;
                        break;
                    }
                    // Not in sync: pulse SCK (one software SCK period high, one low), try again.
                    m.wait(2.0 * 1e6 / self.sck_hz.max(1) as f64).await;
                }
                vec![if ok { 0 } else { 1 }]
            }
            READFLASH | READEEPROM => {
                if !self.newmode {
                    self.address = value as u32;
                }
                // V-USB without long transfers: wLength is an 8-bit count.
                let n = (length & 0xFF) as usize;
                let mut out = Vec::with_capacity(n);
                for _ in 0..n {
                    let a = self.address;
                    let b = if req == READFLASH {
                        self.ext(m, a);
                        self.spi(m, isp::read_flash(a))[3]
                    } else {
                        self.spi(m, isp::read_eeprom(a))[3]
                    };
                    out.push(b);
                    self.address = self.address.wrapping_add(1);
                }
                out
            }
            SETLONGADDRESS => {
                self.newmode = true;
                self.address = u32::from_le_bytes(d);
                vec![]
            }
            SETISPSCK => {
                self.sck_option = d[0];
                vec![0]
            }
            GETCAPABILITIES => CAP_TPI.to_le_bytes().to_vec(),
            // Unknown requests answer with no data.
            _ => vec![],
        })
    }

    async fn out_request(&mut self, m: &mut Meter, req: u8, value: u16, index: u16, data: &[u8]) -> Result<(), UsbError> {
        use usbasp_req::*;
        let d = setup_bytes(value, index);
        let state = match req {
            WRITEFLASH => {
                if !self.newmode {
                    self.address = value as u32;
                }
                self.page_size = d[2] as u32 | (((d[3] & 0xF0) as u32) << 4);
                self.block_flags = d[3] & 0x0F;
                if self.block_flags & BLOCKFLAG_FIRST != 0 {
                    self.page_counter = self.page_size;
                }
                ProgState::WriteFlash
            }
            WRITEEEPROM => {
                if !self.newmode {
                    self.address = value as u32;
                }
                self.page_size = 0;
                self.block_flags = 0;
                ProgState::WriteEeprom
            }
            _ => ProgState::Idle,
        };
        if state == ProgState::Idle {
            return Ok(());
        }
        let n = data.len().min(0xFF);
        for (i, &b) in data[..n].iter().enumerate() {
            let a = self.address;
            match state {
                ProgState::WriteFlash => {
                    if self.page_size == 0 {
                        // Non-paged flash: write and poll each byte.
                        self.spi(m, isp::load_page(a, b));
                        m.wait(busy_wait_us(&self.target, self.target.part().delays.flash_page_us)).await;
                    } else {
                        self.spi(m, isp::load_page(a, b));
                        self.page_counter = self.page_counter.saturating_sub(1);
                        if self.page_counter == 0 {
                            self.flush_page(m, a, b).await;
                            self.page_counter = self.page_size;
                        }
                    }
                    if i + 1 == n && self.block_flags & BLOCKFLAG_LAST != 0 && self.page_counter != self.page_size {
                        self.flush_page(m, a, b).await;
                    }
                }
                ProgState::WriteEeprom => {
                    self.spi(m, isp::write_eeprom(a, b));
                    // Fixed 30 timer ticks (9.6 ms).
                    m.wait(9600.0).await;
                }
                ProgState::Idle => {}
            }
            self.address = self.address.wrapping_add(1);
        }
        Ok(())
    }
}

#[async_trait]
impl UsbTransport for UsbaspSim {
    async fn control_in(&mut self, request: u8, value: u16, index: u16, length: u16, _timeout: Duration) -> Result<Vec<u8>, UsbError> {
        let mut st = self.inner.lock().await;
        if st.target.unplugged() {
            return Err(UsbError::Disconnected);
        }
        let mut m = Meter::new(st.target.timing());
        let r = st.in_request(&mut m, request, value, index, length).await;
        let mut out = r?;
        out.truncate(length as usize);
        let len = out.len();
        let st = &mut *st;
        st.stats.bytes_in += len as u64;
        m.finish(len, &mut st.stats).await;
        if st.target.unplugged() {
            return Err(UsbError::Disconnected);
        }
        Ok(out)
    }

    async fn control_out(&mut self, request: u8, value: u16, index: u16, data: &[u8], _timeout: Duration) -> Result<(), UsbError> {
        let mut st = self.inner.lock().await;
        if st.target.unplugged() {
            return Err(UsbError::Disconnected);
        }
        let mut m = Meter::new(st.target.timing());
        st.out_request(&mut m, request, value, index, data).await?;
        let st = &mut *st;
        st.stats.bytes_out += data.len() as u64;
        m.finish(data.len(), &mut st.stats).await;
        if st.target.unplugged() {
            return Err(UsbError::Disconnected);
        }
        Ok(())
    }

    async fn delay(&mut self, d: Duration) {
        let mut st = self.inner.lock().await;
        let timing = st.target.timing();
        host_delay(&mut st.stats, timing, d).await;
    }

    fn identity(&self) -> String {
        "sim:usbasp".to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// USBtinyISP

/// USBtinyISP vendor requests (avrdude `usbtiny.h`).
pub mod usbtiny_req {
    pub const POWERUP: u8 = 5;
    pub const POWERDOWN: u8 = 6;
    pub const SPI: u8 = 7;
    pub const POLL_BYTES: u8 = 8;
    pub const FLASH_READ: u8 = 9;
    pub const FLASH_WRITE: u8 = 10;
    pub const EEPROM_READ: u8 = 11;
    pub const EEPROM_WRITE: u8 = 12;
    /// POWERUP `wIndex`: hold RESET low (target in programming reset).
    pub const RESET_LOW: u16 = 0;
    /// POWERUP `wIndex`: release RESET high.
    pub const RESET_HIGH: u16 = 1;
}

struct UsbtinyState {
    target: SimTarget,
    stats: UsbSimStats,
    /// SCK period in µs (one SCK cycle).
    sck_period: u8,
    poll: [u8; 2],
}

impl UsbtinyState {
    fn sck_hz(&self) -> u32 {
        1_000_000 / self.sck_period.max(1) as u32
    }

    fn spi(&mut self, m: &mut Meter, cmd: Cmd) -> Cmd {
        let hz = self.sck_hz();
        m.spi_instruction(hz);
        self.target.spi_at(cmd, hz)
    }
}

/// An emulated USBtinyISP with a simulated target. Clones share the device.
#[derive(Clone)]
pub struct UsbtinySim {
    inner: Arc<Mutex<UsbtinyState>>,
}

impl UsbtinySim {
    pub fn new(target: SimTarget) -> Self {
        UsbtinySim { inner: Arc::new(Mutex::new(UsbtinyState { target, stats: UsbSimStats::default(), sck_period: 10, poll: [0xFF, 0xFF] })) }
    }

    pub async fn target(&self) -> MappedMutexGuard<'_, SimTarget> {
        MutexGuard::map(self.inner.lock().await, |s| &mut s.target)
    }

    pub async fn stats(&self) -> UsbSimStats {
        self.inner.lock().await.stats.clone()
    }

    /// Current SCK period in µs.
    pub async fn sck_period(&self) -> u8 {
        self.inner.lock().await.sck_period
    }
}

#[async_trait]
impl UsbTransport for UsbtinySim {
    async fn control_in(&mut self, request: u8, value: u16, index: u16, length: u16, _timeout: Duration) -> Result<Vec<u8>, UsbError> {
        use usbtiny_req::*;
        let mut st = self.inner.lock().await;
        if st.target.unplugged() {
            return Err(UsbError::Disconnected);
        }
        let mut m = Meter::new(st.target.timing());
        let out = match request {
            POWERUP => {
                st.sck_period = (value as u8).max(1);
                st.target.set_reset(index & 1 == RESET_LOW);
                vec![]
            }
            POWERDOWN => {
                st.target.set_reset(false);
                vec![]
            }
            SPI => st.spi(&mut m, setup_bytes(value, index)).to_vec(),
            POLL_BYTES => {
                st.poll = [value as u8, (value >> 8) as u8];
                vec![]
            }
            FLASH_READ | EEPROM_READ => {
                // The firmware's address is 16 bits: it wraps at 64 KiB.
                let mut addr: u16 = index;
                let mut out = Vec::with_capacity(length as usize);
                for _ in 0..length {
                    let cmd = if request == FLASH_READ { isp::read_flash(addr as u32) } else { isp::read_eeprom(addr as u32) };
                    out.push(st.spi(&mut m, cmd)[3]);
                    addr = addr.wrapping_add(1);
                }
                out
            }
            _ => return Err(UsbError::Stall),
        };
        let st = &mut *st;
        st.stats.bytes_in += out.len() as u64;
        m.finish(out.len(), &mut st.stats).await;
        if st.target.unplugged() {
            return Err(UsbError::Disconnected);
        }
        Ok(out)
    }

    async fn control_out(&mut self, request: u8, value: u16, index: u16, data: &[u8], _timeout: Duration) -> Result<(), UsbError> {
        use usbtiny_req::*;
        let mut st = self.inner.lock().await;
        if st.target.unplugged() {
            return Err(UsbError::Disconnected);
        }
        let mut m = Meter::new(st.target.timing());
        match request {
            FLASH_WRITE | EEPROM_WRITE => {
                let mut addr: u16 = index;
                let timeout_us = value as f64;
                for &b in data {
                    let cmd = if request == FLASH_WRITE { isp::load_page(addr as u32, b) } else { isp::write_eeprom(addr as u32, b) };
                    // The flash load command carries the (16-bit) address in bytes 2..3.
                    let cmd = if request == FLASH_WRITE {
                        let w = (addr >> 1) as u32;
                        [cmd[0], (w >> 8) as u8, w as u8, b]
                    } else {
                        cmd
                    };
                    st.spi(&mut m, cmd);
                    if timeout_us > 0.0 {
                        // Poll the byte until it differs from both poll bytes, at most `timeout` µs.
                        let datasheet = if request == FLASH_WRITE { st.target.part().delays.flash_page_us } else { st.target.part().delays.eeprom_us };
                        let w = busy_wait_us(&st.target, datasheet).min(timeout_us);
                        m.wait(w).await;
                    }
                    addr = addr.wrapping_add(1);
                }
            }
            _ => return Err(UsbError::Stall),
        }
        let st = &mut *st;
        st.stats.bytes_out += data.len() as u64;
        m.finish(data.len(), &mut st.stats).await;
        if st.target.unplugged() {
            return Err(UsbError::Disconnected);
        }
        Ok(())
    }

    async fn delay(&mut self, d: Duration) {
        let mut st = self.inner.lock().await;
        let timing = st.target.timing();
        host_delay(&mut st.stats, timing, d).await;
    }

    fn identity(&self) -> String {
        "sim:usbtiny".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::part;
    use crate::sim::target::{Fault, SimOptions};

    fn t(p: &str) -> SimTarget {
        SimTarget::new(part::find(p).unwrap(), SimOptions::new(false, Fault::None))
    }
    const TO: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn usbtiny_flash_read_wraps_at_64k() {
        let mut target = t("at90usb1286");
        target.preload_flash(0x0000, &[0x11, 0x22]);
        target.preload_flash(0x10000, &[0xAA, 0xBB]);
        let mut sim = UsbtinySim::new(target);
        sim.control_in(usbtiny_req::POWERUP, 10, usbtiny_req::RESET_LOW, 0, TO).await.unwrap();
        let pe = sim.control_in(usbtiny_req::SPI, 0x53AC, 0x0000, 4, TO).await.unwrap();
        assert_eq!(pe[2], 0x53);
        // wIndex is 16 bits: 0x10000 cannot be named; a chunk running past 0xFFFF wraps to 0.
        let r = sim.control_in(usbtiny_req::FLASH_READ, 0, 0xFFFF, 3, TO).await.unwrap();
        assert_eq!(r, [0xFF, 0x11, 0x22]);
        let s = sim.stats().await;
        assert_eq!(s.transfers, 3);
        assert!(s.modelled >= Duration::from_millis(3));
    }

    #[tokio::test]
    async fn usbasp_writeflash_header_and_page_flush() {
        let mut sim = UsbaspSim::new(t("atmega32u4"));
        sim.control_in(usbasp_req::CONNECT, 0, 0, 4, TO).await.unwrap();
        assert_eq!(sim.control_in(usbasp_req::ENABLEPROG, 0, 0, 4, TO).await.unwrap(), [0]);
        let page: Vec<u8> = (0..128u32).map(|i| i as u8).collect();
        // address 0x0100, page size 128, FIRST|LAST
        sim.control_out(usbasp_req::WRITEFLASH, 0x0100, 0x0380, &page, TO).await.unwrap();
        assert_eq!(&sim.target().await.flash()[0x100..0x180], &page[..]);
        let back = sim.control_in(usbasp_req::READFLASH, 0x0100, 0, 128, TO).await.unwrap();
        assert_eq!(back, page);
        // V-USB truncates wLength to 8 bits.
        assert_eq!(sim.control_in(usbasp_req::READFLASH, 0, 0, 256, TO).await.unwrap().len(), 0);
    }
}

/// avrdude 7.1's request sequence for `-U flash:w:FILE -U lfuse:w:… …` on these programmers,
/// replayed against the emulators, so benchmarks can compare transfer counts and modelled
/// time with flashline's drivers doing the same work (the real avrdude cannot reach an
/// emulated USB device).
///
/// The sequence follows avrdude's `usbasp.c` / `usbtiny.c` and its generic `avr.c` flow:
/// initialise (USBasp: GETCAPABILITIES, SETISPSCK, CONNECT, 100 ms, ENABLEPROG; USBtiny:
/// POWERUP, 50 ms, Programming Enable), three signature reads, chip erase followed by a full
/// re-initialise, every page the file covers written (USBasp: SETLONGADDRESS + WRITEFLASH in
/// 200-byte blocks; USBtiny: FLASH_WRITE in 128-byte chunks then Write Page and the part's page
/// delay), the same pages read back (USBasp: SETLONGADDRESS + READFLASH per 200 bytes; USBtiny:
/// FLASH_READ per 128 bytes below 64 KiB, one SPI instruction per byte above), then per fuse a
/// write, the fuse delay, a read-back, and the `-U` verify read; finally DISCONNECT/POWERDOWN.
pub mod avrdude_way {
    use super::*;
    use crate::image::Image;
    use crate::part::{FuseKind, FuseSet, Part};

    const TO: Duration = Duration::from_secs(5);

    async fn usbasp_init(t: &mut UsbaspSim) -> Result<(), UsbError> {
        t.control_in(usbasp_req::GETCAPABILITIES, 0, 0, 4, TO).await?;
        t.control_in(usbasp_req::SETISPSCK, 0, 0, 4, TO).await?;
        t.control_in(usbasp_req::CONNECT, 0, 0, 4, TO).await?;
        t.delay(Duration::from_millis(100)).await;
        t.control_in(usbasp_req::ENABLEPROG, 0, 0, 4, TO).await?;
        Ok(())
    }

    async fn usbasp_spi(t: &mut UsbaspSim, c: isp::Cmd) -> Result<Vec<u8>, UsbError> {
        t.control_in(usbasp_req::TRANSMIT, u16::from_le_bytes([c[0], c[1]]), u16::from_le_bytes([c[2], c[3]]), 4, TO).await
    }

    /// avrdude `-c usbasp` programming `image` and `fuses` (with its default verify).
    pub async fn usbasp_flash(t: &mut UsbaspSim, part: &'static Part, image: &Image, fuses: &FuseSet) -> Result<(), UsbError> {
        usbasp_init(t).await?;
        for i in 0..3 {
            usbasp_spi(t, isp::read_signature(i)).await?;
        }
        usbasp_spi(t, isp::CHIP_ERASE).await?;
        t.delay(Duration::from_micros(part.delays.chip_erase_us as u64)).await;
        usbasp_init(t).await?;
        let ps = part.flash_page_size as usize;
        let pages = image.pages(part.flash_page_size);
        for (addr, data) in &pages {
            let mut a = *addr;
            for (i, block) in data.chunks(200).enumerate() {
                t.control_in(usbasp_req::SETLONGADDRESS, a as u16, (a >> 16) as u16, 4, TO).await?;
                let flags = if i == 0 { usbasp_req::BLOCKFLAG_FIRST } else { 0 };
                let index = u16::from_le_bytes([ps as u8, flags | (((ps & 0xF00) >> 4) as u8)]);
                t.control_out(usbasp_req::WRITEFLASH, a as u16, index, block, TO).await?;
                a += block.len() as u32;
            }
        }
        for (addr, data) in &pages {
            let mut a = *addr;
            for block in data.chunks(200) {
                t.control_in(usbasp_req::SETLONGADDRESS, a as u16, (a >> 16) as u16, 4, TO).await?;
                t.control_in(usbasp_req::READFLASH, a as u16, 0, block.len() as u16, TO).await?;
                a += block.len() as u32;
            }
        }
        for k in FuseKind::ALL {
            if let Some(v) = fuses.get(k) {
                usbasp_spi(t, isp::write_fuse(k, v)).await?;
                t.delay(Duration::from_micros(part.delays.fuse_us as u64)).await;
                usbasp_spi(t, isp::read_fuse(k)).await?;
                usbasp_spi(t, isp::read_fuse(k)).await?;
            }
        }
        t.control_in(usbasp_req::DISCONNECT, 0, 0, 4, TO).await?;
        Ok(())
    }

    async fn usbtiny_spi(t: &mut UsbtinySim, c: isp::Cmd) -> Result<Vec<u8>, UsbError> {
        t.control_in(usbtiny_req::SPI, u16::from_le_bytes([c[0], c[1]]), u16::from_le_bytes([c[2], c[3]]), 4, TO).await
    }

    async fn usbtiny_init(t: &mut UsbtinySim) -> Result<(), UsbError> {
        t.control_in(usbtiny_req::POWERUP, 10, usbtiny_req::RESET_LOW, 0, TO).await?;
        t.delay(Duration::from_millis(50)).await;
        usbtiny_spi(t, isp::PROG_ENABLE).await?;
        Ok(())
    }

    /// avrdude `-c usbtiny` programming `image` and `fuses` (with its default verify).
    pub async fn usbtiny_flash(t: &mut UsbtinySim, part: &'static Part, image: &Image, fuses: &FuseSet) -> Result<(), UsbError> {
        usbtiny_init(t).await?;
        for i in 0..3 {
            usbtiny_spi(t, isp::read_signature(i)).await?;
        }
        usbtiny_spi(t, isp::CHIP_ERASE).await?;
        t.delay(Duration::from_micros(part.delays.chip_erase_us as u64)).await;
        usbtiny_init(t).await?;
        let pages = image.pages(part.flash_page_size);
        for (addr, data) in &pages {
            if part.flash_size > 0x20000 {
                usbtiny_spi(t, isp::load_extended_address(*addr)).await?;
            }
            for (i, chunk) in data.chunks(128).enumerate() {
                t.control_out(usbtiny_req::FLASH_WRITE, 0, (*addr as usize + i * 128) as u16, chunk, TO).await?;
            }
            usbtiny_spi(t, isp::write_page(*addr)).await?;
            t.delay(Duration::from_micros(part.delays.flash_page_us as u64)).await;
        }
        for (addr, data) in &pages {
            if *addr >= 0x10000 {
                for a in *addr..*addr + data.len() as u32 {
                    usbtiny_spi(t, isp::read_flash(a)).await?;
                }
            } else {
                for (i, chunk) in data.chunks(128).enumerate() {
                    t.control_in(usbtiny_req::FLASH_READ, 0, (*addr as usize + i * 128) as u16, chunk.len() as u16, TO).await?;
                }
            }
        }
        for k in FuseKind::ALL {
            if let Some(v) = fuses.get(k) {
                usbtiny_spi(t, isp::write_fuse(k, v)).await?;
                t.delay(Duration::from_micros(part.delays.fuse_us as u64)).await;
                usbtiny_spi(t, isp::read_fuse(k)).await?;
                usbtiny_spi(t, isp::read_fuse(k)).await?;
            }
        }
        t.control_in(usbtiny_req::POWERDOWN, 0, 0, 0, TO).await?;
        Ok(())
    }
}
