//! The terminal while the console owns it: raw mode, the alternate screen, bracketed paste, and
//! stderr diverted into a pipe (log lines would otherwise land in the middle of the screen and
//! stay there as stale fragments). [`restore`] undoes all of it and is idempotent; it runs on
//! the guard's drop (quit, SIGTERM, errors) and from the panic hook.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Once};

use crossterm::event::{DisableBracketedPaste, EnableBracketedPaste};
use crossterm::terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{cursor, execute, style};

/// Whether the console currently owns the terminal.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Set by the panic hook: the console loop stops when it sees it.
pub static PANICKED: AtomicBool = AtomicBool::new(false);
/// The real stderr, saved while fd 2 points into the capture pipe (-1: not diverted).
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);
static HOOK: Once = Once::new();

/// Log lines written to stderr while the console is up, kept to be shown and replayed.
pub type Captured = Arc<Mutex<Vec<String>>>;

pub struct TermGuard {
    pub captured: Captured,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// Put the terminal back: leave the alternate screen, show the cursor, reset colours, turn
/// off bracketed paste and raw mode, point fd 2 back at the real stderr.
pub fn restore() {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut out = std::io::stdout();
    let _ = execute!(out, style::ResetColor, DisableBracketedPaste, LeaveAlternateScreen, cursor::Show);
    let _ = out.flush();
    let _ = disable_raw_mode();
    let saved = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    if saved >= 0 {
        // SAFETY: `saved` is the fd dup'ed from 2 in `enter`, owned by us until now.
        unsafe {
            nix::libc::dup2(saved, 2);
            nix::libc::close(saved);
        }
    }
}

fn divert_stderr(captured: Captured, wake: tokio::sync::mpsc::UnboundedSender<String>) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: a two-element array for pipe(2); fds are checked below.
    if unsafe { nix::libc::pipe2(fds.as_mut_ptr(), nix::libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created by pipe2 and are ours.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: duplicating fd 2 (always open in a process started from a terminal).
    let saved = unsafe { nix::libc::fcntl(2, nix::libc::F_DUPFD_CLOEXEC, 3) };
    if saved < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `w` is a valid fd; dup2 onto 2 replaces stderr for the process.
    if unsafe { nix::libc::dup2(w.as_raw_fd(), 2) } < 0 {
        let e = std::io::Error::last_os_error();
        unsafe { nix::libc::close(saved) };
        return Err(e);
    }
    drop(w);
    SAVED_STDERR.store(saved, Ordering::SeqCst);
    let reader = std::thread::Builder::new().name("console-stderr".into()).spawn(move || {
        let mut f = std::fs::File::from(r);
        let mut buf = [0u8; 4096];
        let mut pending = Vec::new();
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=i).collect();
                        let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                        let _ = wake.send(text.clone());
                        let mut c = captured.lock().unwrap();
                        c.push(text);
                        if c.len() > 1000 {
                            c.remove(0);
                        }
                    }
                }
            }
        }
        if !pending.is_empty() {
            captured.lock().unwrap().push(String::from_utf8_lossy(&pending).into_owned());
        }
    })?;
    Ok(Some(reader))
}

impl TermGuard {
    /// Take the terminal. Each log line written to stderr meanwhile is sent to `logs`.
    pub fn enter(logs: tokio::sync::mpsc::UnboundedSender<String>) -> std::io::Result<TermGuard> {
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                PANICKED.store(true, Ordering::SeqCst);
                restore();
                previous(info);
            }));
        });
        let captured: Captured = Arc::new(Mutex::new(Vec::new()));
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let mut out = std::io::stdout();
        if let Err(e) = execute!(out, EnterAlternateScreen, EnableBracketedPaste, crossterm::terminal::Clear(crossterm::terminal::ClearType::All)) {
            restore();
            return Err(e);
        }
        let reader = match divert_stderr(captured.clone(), logs) {
            Ok(r) => r,
            Err(e) => {
                restore();
                return Err(e);
            }
        };
        Ok(TermGuard { captured, reader })
    }
}

impl Drop for TermGuard {
    fn drop(&mut self) {
        restore();
        // fd 2 is the real stderr again, so the pipe's write end is closed and the reader ends.
        // A child process that inherited the pipe could keep it open: wait a moment, no more.
        if let Some(r) = self.reader.take() {
            let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
            while !r.is_finished() && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            if r.is_finished() {
                let _ = r.join();
            }
        }
    }
}
