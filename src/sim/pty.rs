//! Pseudo-terminals for serial programmer emulators: the emulator holds the master side and
//! hands the slave path (`/dev/pts/N`) to whoever plays the host (avrdude, our drivers).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::pty::openpty;
use nix::sys::termios::{self, SetArg};

/// An open pseudo-terminal pair.
pub struct Pty {
    /// Master side: what the emulator reads host bytes from and writes replies to.
    pub master: File,
    /// Slave side, kept open by the emulator so the master never sees EIO/hang-up between
    /// host sessions (avrdude opens and closes the port on every run).
    pub slave: OwnedFd,
    /// Path of the slave device, e.g. `/dev/pts/7`.
    pub path: PathBuf,
}

impl Pty {
    /// Open a pty pair with the slave in raw mode (no echo, no line discipline), as a USB CDC
    /// serial port behaves.
    pub fn open() -> std::io::Result<Pty> {
        let pair = openpty(None, None).map_err(std::io::Error::from)?;
        // openpty(3) does not set close-on-exec: without it every child process (avrdude run
        // by a test or the fallback) would inherit the master and keep a "vanished" pty alive.
        for fd in [pair.master.as_raw_fd(), pair.slave.as_raw_fd()] {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).map_err(std::io::Error::from)?;
        }
        let mut t = termios::tcgetattr(&pair.slave).map_err(std::io::Error::from)?;
        termios::cfmakeraw(&mut t);
        termios::tcsetattr(&pair.slave, SetArg::TCSANOW, &t).map_err(std::io::Error::from)?;
        let path = std::fs::read_link(format!("/proc/self/fd/{}", pair.slave.as_raw_fd()))?;
        Ok(Pty { master: File::from(pair.master), slave: pair.slave, path })
    }
}

/// What [`read_host`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRead {
    /// This many bytes were read into the buffer.
    Bytes(usize),
    /// Nothing arrived before the deadline.
    TimedOut,
    /// The stop flag was raised.
    Stopped,
}

/// Read whatever the host sends on the master side of a pty, waiting until `deadline` (in
/// slices of at most 100 ms so `stop` is noticed). A moment with no host holding the tty open
/// (hang-up, EIO, zero-length read) is not an error: the emulator keeps serving the next host.
pub fn read_host(
    master: &mut File,
    buf: &mut [u8],
    deadline: std::time::Instant,
    stop: &std::sync::atomic::AtomicBool,
) -> std::io::Result<HostRead> {
    use std::io::{ErrorKind, Read};
    use std::time::{Duration, Instant};
    let idle = || std::thread::sleep(Duration::from_millis(10));
    loop {
        if stop.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(HostRead::Stopped);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(HostRead::TimedOut);
        }
        let mut pfd = nix::libc::pollfd { fd: master.as_raw_fd(), events: nix::libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for an fd we own, for the duration of the call.
        let rc = unsafe { nix::libc::poll(&mut pfd, 1, left.as_millis().clamp(1, 100) as i32) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if rc == 0 {
            continue;
        }
        if pfd.revents & nix::libc::POLLIN == 0 {
            // POLLHUP without data: no host has the tty open right now.
            idle();
            continue;
        }
        match master.read(buf) {
            Ok(0) => idle(),
            Ok(n) => return Ok(HostRead::Bytes(n)),
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => idle(),
            Err(e) => return Err(e),
        }
    }
}

/// Hand reply bytes to the host: sleep until `tx_done` (when a paced UART would have sent the
/// last of them), count them, write them. Nobody holding the tty open (EIO) is not an error:
/// a real UART transmits into the void.
pub fn write_host(
    master: &mut File,
    bytes: &[u8],
    tx_done: Option<std::time::Instant>,
    bytes_out: &std::sync::atomic::AtomicU64,
) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(t) = tx_done {
        let now = std::time::Instant::now();
        if t > now {
            std::thread::sleep(t - now);
        }
    }
    bytes_out.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
    match master.write_all(bytes) {
        Err(e) if e.raw_os_error() != Some(nix::libc::EIO) => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn bytes_cross_raw() {
        let mut p = Pty::open().unwrap();
        assert!(p.path.to_string_lossy().starts_with("/dev/pts/"));
        let mut host = std::fs::OpenOptions::new().read(true).write(true).open(&p.path).unwrap();
        host.write_all(&[0x30, 0x20, 0x0A, 0x0D]).unwrap();
        let mut buf = [0u8; 4];
        p.master.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [0x30, 0x20, 0x0A, 0x0D], "raw mode: no CR/LF translation");
    }
}
