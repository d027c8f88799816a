//! OpenOCD's `remote_bitbang` protocol over TCP, in front of the simulated board's JTAG chain.
//!
//! One ASCII byte per request (OpenOCD `src/jtag/drivers/remote_bitbang.c`): `'0'`..`'7'` set
//! TCK, TMS, TDI (bits 2, 1, 0), `'R'` samples TDO (answered `'0'` or `'1'`), `'r'`..`'u'` set
//! TRST and SRST (bits 1, 0; 1 = asserted), `'B'`/`'b'` the LED, `'Q'` ends the session. The
//! board stays powered between sessions, so a second OpenOCD run sees what the first left.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::sim::stm32::{Dap, JtagChain, Stm32Chip, Stm32Fault};

/// Wire-level counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WireStats {
    pub sessions: u64,
    pub tck_cycles: u64,
    pub samples: u64,
    pub unknown_bytes: u64,
}

/// The board on the wire: its JTAG chain and the wire state.
#[derive(Debug)]
pub struct Board {
    pub chain: JtagChain,
    pub wire: WireStats,
    tck: bool,
    srst: bool,
    no_target: bool,
}

impl Board {
    pub fn new(chip: Stm32Chip) -> Board {
        let no_target = *chip.fault() == Stm32Fault::NoTarget;
        Board { chain: JtagChain::new(Dap::new(chip)), wire: WireStats::default(), tck: false, srst: false, no_target }
    }

    pub fn chip(&self) -> &Stm32Chip {
        &self.chain.dap.chip
    }
    pub fn chip_mut(&mut self) -> &mut Stm32Chip {
        &mut self.chain.dap.chip
    }

    /// Handle request bytes, appending any answers to `out`. Returns false on `'Q'`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in bytes {
            match b {
                b'0'..=b'7' => {
                    let v = b - b'0';
                    let (tck, tms, tdi) = (v & 4 != 0, v & 2 != 0, v & 1 != 0);
                    if tck && !self.tck {
                        self.wire.tck_cycles += 1;
                        if !self.no_target {
                            self.chain.clock(tms, tdi);
                        }
                    }
                    self.tck = tck;
                }
                b'R' => {
                    self.wire.samples += 1;
                    // Nothing driving TDO: the pull-up reads 1.
                    let bit = self.no_target || self.chain.tdo();
                    out.push(if bit { b'1' } else { b'0' });
                }
                b'r'..=b'u' => {
                    let v = b - b'r';
                    let (trst, srst) = (v & 2 != 0, v & 1 != 0);
                    if trst {
                        self.chain.tap_reset();
                    }
                    if self.srst && !srst && !self.no_target {
                        // NRST released: the chip comes out of reset.
                        self.chip_mut().system_reset();
                    }
                    self.srst = srst;
                }
                b'B' | b'b' | b'\n' | b'\r' | b' ' => {}
                b'Q' => return false,
                _ => self.wire.unknown_bytes += 1,
            }
        }
        true
    }
}

/// A running `remote_bitbang` server. Dropping it stops the thread.
pub struct BitbangServer {
    addr: SocketAddr,
    board: Arc<Mutex<Board>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BitbangServer {
    /// Listen on `listen` (port 0 picks a free one) and serve `chip` until dropped.
    pub fn spawn(listen: SocketAddr, chip: Stm32Chip) -> io::Result<BitbangServer> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let board = Arc::new(Mutex::new(Board::new(chip)));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (board.clone(), stop.clone());
        let thread = std::thread::Builder::new().name(format!("remote-bitbang {addr}")).spawn(move || accept_loop(listener, b, s))?;
        Ok(BitbangServer { addr, board, stop, thread: Some(thread) })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The board, for inspection between sessions (hold the guard briefly).
    pub fn board(&self) -> MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for BitbangServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: TcpListener, board: Arc<Mutex<Board>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                tracing::debug!(%peer, "remote_bitbang session");
                if let Err(e) = session(stream, &board, &stop) {
                    tracing::debug!(%peer, "remote_bitbang session ended: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                tracing::warn!("remote_bitbang accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn session(mut stream: TcpStream, board: &Mutex<Board>, stop: &AtomicBool) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    board.lock().unwrap_or_else(|p| p.into_inner()).wire.sessions += 1;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::with_capacity(4096);
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.clear();
        let go_on = board.lock().unwrap_or_else(|p| p.into_inner()).feed(&buf[..n], &mut out);
        if !out.is_empty() {
            stream.write_all(&out)?;
        }
        if !go_on {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::stm32::ChipOptions;
    use crate::stm32::part;

    fn board(fault: Stm32Fault) -> Board {
        Board::new(Stm32Chip::new(part::find("stm32f103c8").unwrap(), ChipOptions::new(false, fault)))
    }

    /// Bytes for one TCK cycle with `tms`/`tdi`, sampling TDO first, as OpenOCD's bitbang does.
    fn cycle(tms: bool, tdi: bool, sample: bool) -> Vec<u8> {
        let v = (tms as u8) << 1 | tdi as u8;
        let mut b = vec![b'0' + v];
        if sample {
            b.push(b'R');
        }
        b.push(b'0' + (4 | v));
        b
    }

    fn read_idcodes(b: &mut Board) -> Vec<u8> {
        let mut req = Vec::new();
        for _ in 0..5 {
            req.extend(cycle(true, false, false));
        }
        for tms in [false, true, false, false] {
            req.extend(cycle(tms, false, false));
        }
        for i in 0..64 {
            req.extend(cycle(i == 63, true, true));
        }
        let mut out = Vec::new();
        assert!(b.feed(&req, &mut out));
        out
    }

    fn bits_to_u64(bits: &[u8]) -> u64 {
        bits.iter().enumerate().map(|(i, &c)| ((c == b'1') as u64) << i).sum()
    }

    #[test]
    fn idcodes_over_the_byte_protocol() {
        let mut b = board(Stm32Fault::None);
        let out = read_idcodes(&mut b);
        assert_eq!(out.len(), 64);
        assert_eq!(bits_to_u64(&out), 0x0641_0041_3BA0_0477);
        assert_eq!(b.wire.samples, 64);
        let mut out = Vec::new();
        assert!(!b.feed(b"BbQ", &mut out), "'Q' ends the session");
        assert!(out.is_empty());
    }

    #[test]
    fn no_target_reads_all_ones_and_srst_resets_the_chip() {
        let mut b = board(Stm32Fault::NoTarget);
        assert!(read_idcodes(&mut b).iter().all(|&c| c == b'1'));
        let mut ok = board(Stm32Fault::None);
        let before = ok.chip().stats().system_resets;
        let mut out = Vec::new();
        ok.feed(b"sr", &mut out);
        assert_eq!(ok.chip().stats().system_resets, before + 1, "NRST released: one reset");
    }
}
