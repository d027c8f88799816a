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
