//! The operator console (issue 16): the real `flashline run` binary in a real pseudo-terminal,
//! a sim station on a temp SQLite file, keys typed into the pty, and the screen read back
//! through a terminal emulator model (`vt100`). Nothing here waits on a clock to decide a
//! result: every wait polls for a state with a generous upper bound and fails with the screen.

mod support;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::libc;
use nix::pty::{openpty, Winsize};
use nix::sys::termios::{self, LocalFlags};

const ROWS: u16 = 40;
const COLS: u16 = 140;
const LIMIT: Duration = Duration::from_secs(30);

const STATION: &str = "\
station: console-t
slots:
  - { name: S1, programmer: sim, timing: true }
  - { name: S2, programmer: sim }
  - { name: S3, programmer: sim, fault: no-target, fault_rate: 1.0 }
";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the reader thread has seen: every byte the program wrote, and the emulated screen.
struct Seen {
    raw: Vec<u8>,
    parser: vt100::Parser,
}

struct Console {
    master: File,
    _slave: OwnedFd,
    child: Child,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
    db: PathBuf,
    _dir: tempfile::TempDir,
}

impl Console {
    fn start() -> Console {
        Console::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Console {
        let dir = tempfile::tempdir().unwrap();
        let station = dir.path().join("station.yaml");
        std::fs::write(&station, STATION).unwrap();
        let db = dir.path().join("records.db");
        let ws = Winsize { ws_row: ROWS, ws_col: COLS, ws_xpixel: 0, ws_ypixel: 0 };
        let pair = openpty(Some(&ws), None).unwrap();
        for fd in [pair.master.as_raw_fd(), pair.slave.as_raw_fd()] {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC)).unwrap();
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flashline"));
        cmd.current_dir(dir.path())
            .arg("run")
            .arg(repo().join("recipes/planck-rev4/recipe.yaml"))
            .arg("--station")
            .arg(&station)
            .arg("--db")
            .arg(&db)
            .arg("--operator")
            .arg("tester")
            .args(extra)
            .env("TERM", "xterm-256color")
            .env("RUST_LOG", "error")
            .env_remove("FLASHLINE_DB")
            .stdin(Stdio::from(pair.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pair.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pair.slave.try_clone().unwrap()));
        // SAFETY: only async-signal-safe calls between fork and exec: a new session whose
        // controlling terminal is the pty (so resizes deliver SIGWINCH, as in a real terminal).
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn flashline");
        let master = File::from(pair.master);
        let seen = Arc::new(Mutex::new(Seen { raw: Vec::new(), parser: vt100::Parser::new(nz(ROWS), nz(COLS), 0) }));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let mut m = master.try_clone().unwrap();
            let seen = seen.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while !stop.load(Ordering::SeqCst) {
                    let mut pfd = libc::pollfd { fd: m.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                    // SAFETY: one valid pollfd for an fd we own.
                    let rc = unsafe { libc::poll(&mut pfd, 1, 50) };
                    if rc <= 0 {
                        continue;
                    }
                    match m.read(&mut buf) {
                        Ok(0) | Err(_) => std::thread::sleep(Duration::from_millis(20)),
                        Ok(n) => {
                            let mut s = seen.lock().unwrap();
                            s.raw.extend_from_slice(&buf[..n]);
                            s.parser.process(&buf[..n]);
                        }
                    }
                }
            })
        };
        Console { master, _slave: pair.slave, child, seen, stop, reader: Some(reader), db, _dir: dir }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
        self.master.flush().unwrap();
    }

    fn screen(&self) -> vt100::Screen {
        self.seen.lock().unwrap().parser.screen().clone()
    }

    fn rows(&self) -> Vec<String> {
        let s = self.screen();
        let (_, cols) = s.size();
        s.rows(0, cols.get()).collect()
    }

    fn dump(&self) -> String {
        self.rows().join("\n")
    }

    /// Poll the screen until `pred` holds (bounded); fail with the screen otherwise.
    fn wait(&self, what: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
        let start = Instant::now();
        loop {
            let rows = self.rows();
            if pred(&rows) {
                return rows;
            }
            if start.elapsed() > LIMIT {
                panic!("timed out waiting for {what}; screen:\n{}", rows.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn row_of<'a>(rows: &'a [String], starts: &str) -> Option<&'a String> {
        rows.iter().find(|r| r.trim_start_matches(['│', ' ']).starts_with(starts))
    }

    /// The slot row of `slot` (inside the slots table).
    fn slot_row(rows: &[String], slot: &str) -> String {
        rows.iter().find(|r| r.starts_with(&format!("│{slot} "))).cloned().unwrap_or_default()
    }

    /// The totals as the records have them, in the words the console's totals line uses.
    fn db_totals(&self) -> String {
        let q = |sql: &str| support::sql(&self.db, sql);
        format!(
            "attempts {}  passed {}  failed {}  errors {}  units {}  units passed {}",
            q("select count(*) from attempts where result != 'running'"),
            q("select count(*) from attempts where result = 'pass'"),
            q("select count(*) from attempts where result = 'fail'"),
            q("select count(*) from attempts where result = 'error'"),
            q("select count(distinct unit_id) from attempts where result != 'running'"),
            q("select count(*) from attempts a where result = 'pass' and attempt_no = (select max(attempt_no) from attempts b where b.unit_id = a.unit_id and b.result != 'running')"),
        )
    }

    /// After a result: nothing is running, and the totals line says what the database says.
    fn totals_match_db(&self) {
        let start = Instant::now();
        while support::sql(&self.db, "select count(*) from attempts where result = 'running'") != "0" {
            assert!(start.elapsed() < LIMIT, "an attempt stayed running");
            std::thread::sleep(Duration::from_millis(30));
        }
        let want = self.db_totals();
        self.wait(&format!("totals line `{want}`"), |rows| Console::row_of(rows, "TOTALS").is_some_and(|r| r.contains(&want)));
    }

    /// Frames drawn so far that changed at least one cell: synchronized-update blocks with
    /// printable text left once escape sequences are taken out.
    fn changed_frames(&self) -> usize {
        let raw = self.seen.lock().unwrap().raw.clone();
        frames(&raw).filter(|f| printable_outside_escapes(f)).count()
    }

    fn termios_local(&self) -> LocalFlags {
        termios::tcgetattr(&self.master).unwrap().local_flags
    }

    /// Wait for the program to exit (bounded); its status.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // Let the reader take the last bytes.
                std::thread::sleep(Duration::from_millis(200));
                return st;
            }
            if start.elapsed() > LIMIT {
                let _ = self.child.kill();
                panic!("flashline did not exit; screen:\n{}", self.dump());
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// The terminal is as the program found it: main screen, cursor shown, raw mode off, and
    /// the sequences that undo the console's modes were the last word.
    fn assert_clean_terminal(&self) {
        let s = self.seen.lock().unwrap();
        let screen = s.parser.screen();
        assert!(!screen.alternate_screen(), "still on the alternate screen");
        assert!(!screen.hide_cursor(), "cursor left hidden");
        let raw = &s.raw;
        let entered = find_last(raw, b"\x1b[?1049h").expect("the console never entered the alternate screen");
        let tail = &raw[entered..];
        for (seq, what) in [(&b"\x1b[?1049l"[..], "leave alternate screen"), (b"\x1b[?25h", "show cursor"), (b"\x1b[?2004l", "bracketed paste off")] {
            assert!(find_last(tail, seq).is_some(), "no `{what}` after the console started");
        }
        drop(s);
        let lf = self.termios_local();
        assert!(lf.contains(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG), "raw mode left on: {lf:?}");
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The screen as a self-contained HTML page (cells with their colours), for the README's
/// screenshot (rendered with a headless browser).
fn screen_html(screen: &vt100::Screen) -> String {
    const XTERM: [&str; 16] = [
        "#000000", "#cd0000", "#00cd00", "#cdcd00", "#3b78ff", "#cd00cd", "#00cdcd", "#e5e5e5", "#7f7f7f", "#ff5555", "#55ff55", "#ffff55", "#5c5cff", "#ff55ff",
        "#55ffff", "#ffffff",
    ];
    let colour = |c: vt100::Color, default: &str| match c {
        vt100::Color::Default => default.to_string(),
        vt100::Color::Idx(i) if i < 16 => XTERM[i as usize].to_string(),
        vt100::Color::Idx(i) => format!("#{0:02x}{0:02x}{0:02x}", i),
        vt100::Color::Rgb(r, g, b) => format!("#{r:02x}{g:02x}{b:02x}"),
    };
    let (rows, cols) = screen.size();
    let mut out = String::from("<!doctype html><meta charset=utf-8><style>body{margin:0;background:#1e1e1e}pre{margin:8px;font:14px/1.25 'DejaVu Sans Mono',monospace;color:#e5e5e5}</style><pre>");
    for r in 0..rows.get() {
        for col in 0..cols.get() {
            let Some(cell) = screen.cell(r, col) else { continue };
            if cell.is_wide_continuation() {
                continue;
            }
            let (mut fg, mut bg) = (colour(cell.fgcolor(), "#e5e5e5"), colour(cell.bgcolor(), "#1e1e1e"));
            if cell.inverse() {
                std::mem::swap(&mut fg, &mut bg);
            }
            let text = match cell.contents() {
                "" => " ".to_string(),
                t => t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;"),
            };
            let weight = if cell.bold() { "font-weight:bold;" } else { "" };
            let under = if cell.underline() { "text-decoration:underline;" } else { "" };
            out.push_str(&format!("<span style=\"color:{fg};background:{bg};{weight}{under}\">{text}</span>"));
        }
        out.push('\n');
    }
    out.push_str("</pre>");
    out
}

fn nz(n: u16) -> std::num::NonZeroU16 {
    std::num::NonZeroU16::new(n).unwrap()
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// The bodies of `ESC [ ? 2026 h … ESC [ ? 2026 l` blocks.
fn frames(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    let begin = b"\x1b[?2026h";
    let end = b"\x1b[?2026l";
    let mut rest = raw;
    std::iter::from_fn(move || {
        let b = rest.windows(begin.len()).position(|w| w == begin)?;
        let after = &rest[b + begin.len()..];
        let e = after.windows(end.len()).position(|w| w == end)?;
        let body = &after[..e];
        rest = &after[e + end.len()..];
        Some(body)
    })
}

fn printable_outside_escapes(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        if b[i] == 0x1b {
            i += 1;
            if i < b.len() && b[i] == b'[' {
                i += 1;
                while i < b.len() && !(0x40..=0x7e).contains(&b[i]) {
                    i += 1;
                }
            }
            i += 1;
        } else if b[i] >= 0x20 {
            return true;
        } else {
            i += 1;
        }
    }
    false
}

fn is_raw(lf: LocalFlags) -> bool {
    !lf.intersects(LocalFlags::ICANON | LocalFlags::ECHO)
}

fn resize(c: &Console, rows: u16, cols: u16) {
    let ws = Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    c.seen.lock().unwrap().parser.set_size(nz(rows), nz(cols));
    // SAFETY: TIOCSWINSZ with a valid winsize on the pty master we own; the kernel sends
    // SIGWINCH to the program (its controlling terminal).
    assert_eq!(unsafe { libc::ioctl(c.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) }, 0);
}

#[test]
fn console_shows_slots_typed_scans_totals_and_escaped_hostile_text() {
    let mut c = Console::start();
    let rows = c.wait("the slot rows", |rows| ["S1", "S2", "S3"].iter().all(|s| Console::slot_row(rows, s).contains("IDLE")));
    assert!(Console::slot_row(&rows, "S1").contains("sim:S1"), "programmer named:\n{}", rows.join("\n"));
    assert!(rows.last().unwrap().starts_with("scan> "), "input line at the bottom:\n{}", rows.join("\n"));
    assert!(is_raw(c.termios_local()), "the console runs the terminal in raw mode");
    assert!(c.screen().alternate_screen());

    // A scanner types fast and sends Enter: before Enter the scan is on the input line, and
    // nothing was submitted.
    c.send(b"S2:PL4-000101");
    c.wait("the typed scan on the input line", |rows| rows.last().unwrap().starts_with("scan> S2:PL4-000101"));
    assert_eq!(support::sql(&c.db, "select count(*) from attempts"), "0");
    c.send(b"\r");
    c.wait("S2 PASS", |rows| Console::slot_row(rows, "S2").contains("PASS") && Console::slot_row(rows, "S2").contains("PL4-000101"));
    assert_eq!(c.rows().last().unwrap().trim_end(), "scan>", "the input line is cleared after Enter");
    c.totals_match_db();

    // A failing slot shows the class and what to check.
    c.send(b"S3:PL4-000102\r");
    c.wait("S3 FAIL", |rows| Console::slot_row(rows, "S3").contains("FAIL") && Console::slot_row(rows, "S3").contains("no_target"));
    c.totals_match_db();

    // Retest from the keyboard: the unit that failed in S3, again in S3 (attempt 2).
    c.send(b"r s3\r");
    c.wait("S3 retest", |rows| Console::slot_row(rows, "S3").contains("PL4-000102 #2") && Console::slot_row(rows, "S3").contains("FAIL"));
    assert_eq!(support::sql(&c.db, "select count(*) from attempts a join units u on u.id = a.unit_id where u.serial = 'PL4-000102'"), "2");
    c.totals_match_db();

    // A hostile serial (ESC sequence + bidi override) pasted in: escaped on the input line,
    // refused by the pattern, escaped on the refused line, recorded raw.
    c.send("\x1b[200~PL4-\x1b[2J\u{202E}666\x1b[201~".as_bytes());
    c.wait("the hostile scan escaped on the input line", |rows| rows.last().unwrap().starts_with("scan> PL4-\\e[2J\\u{202E}666"));
    c.send(b"\r");
    let rows = c.wait("the refused line", |rows| Console::row_of(rows, "REFUSED").is_some_and(|r| r.contains("'PL4-\\e[2J\\u{202E}666'")));
    assert!(!rows.iter().any(|r| r.contains('\u{202E}')), "a raw bidi override reached the screen");
    assert!(find_last(&c.seen.lock().unwrap().raw, "\u{202E}".as_bytes()).is_none(), "a raw U+202E was written to the terminal");
    assert_eq!(support::sql(&c.db, "select count(*) from rejected_scans where raw = 'PL4-' || char(27) || '[2J' || char(8238) || '666'"), "1");
    c.wait("refused count", |rows| Console::row_of(rows, "TOTALS").is_some_and(|r| r.contains("refused scans 1")));
    c.totals_match_db();

    // Resize: the layout follows, long lines are truncated, nothing wraps.
    resize(&c, 24, 80);
    let rows = c.wait("the 80x24 layout", |rows| rows.len() == 24 && rows[23].starts_with("scan>") && Console::slot_row(rows, "S3").contains("FAIL"));
    let screen = c.screen();
    for r in 0..24 {
        assert!(!screen.row_wrapped(r), "row {r} wrapped:\n{}", rows.join("\n"));
    }
    resize(&c, ROWS, COLS);
    c.wait("the 140x40 layout again", |rows| rows.len() == ROWS as usize && rows[ROWS as usize - 1].starts_with("scan>"));

    // Many redraws: boards with timing on (progress moves in many frames) while keys are typed.
    let mut n = 0;
    while c.changed_frames() < 220 {
        assert!(n < 10, "fewer than 220 changed frames after {n} boards");
        n += 1;
        let serial = format!("PL4-0002{n:02}");
        for ch in format!("S1:{serial}").bytes() {
            c.send(&[ch]);
            std::thread::sleep(Duration::from_millis(5));
        }
        c.send(b"\r");
        c.send(format!("S2:PL4-0003{n:02}\r").as_bytes());
        if n == 1 {
            if let Some(dir) = std::env::var_os("FLASHLINE_CONSOLE_SHOT") {
                // The README's screenshot: this very screen, mid-job.
                c.wait("S1 programming", |rows| {
                    let r = Console::slot_row(rows, "S1");
                    r.contains("BUSY") && r.contains("program") && r.contains('█') && Console::slot_row(rows, "S2").contains("PL4-000301")
                });
                let screen = c.screen();
                let dir = PathBuf::from(dir);
                std::fs::write(dir.join("console.txt"), c.rows().iter().map(|r| r.trim_end().to_string() + "\n").collect::<String>()).unwrap();
                std::fs::write(dir.join("console.html"), screen_html(&screen)).unwrap();
            }
        }
        c.wait("S1 PASS", |rows| {
            let r = Console::slot_row(rows, "S1");
            r.contains("PASS") && r.contains(&serial)
        });
        c.totals_match_db();
    }
    let rows = c.rows();
    for (slot, word) in [("S1", "PASS"), ("S2", "PASS"), ("S3", "FAIL")] {
        assert!(Console::slot_row(&rows, slot).contains(word), "{slot} {word}:\n{}", rows.join("\n"));
    }

    // No stale fragments: the screen built up from every incremental frame equals a full
    // repaint (Ctrl-L clears and redraws everything) read by a fresh emulator.
    let before = c.seen.lock().unwrap().raw.len();
    c.send(b"\x0c");
    let start = Instant::now();
    let (incremental, fresh) = loop {
        {
            let s = c.seen.lock().unwrap();
            if let Some(p) = find_last(&s.raw[before..], b"\x1b[2J") {
                let repaint = &s.raw[before + p..];
                // A complete frame after the clear.
                if find_last(repaint, b"\x1b[?2026l").is_some() {
                    let mut fresh = vt100::Parser::new(nz(ROWS), nz(COLS), 0);
                    fresh.process(repaint);
                    break (s.parser.screen().clone(), fresh.screen().clone());
                }
            }
        }
        assert!(start.elapsed() < LIMIT, "no repaint after Ctrl-L");
        std::thread::sleep(Duration::from_millis(30));
    };
    let a: Vec<String> = incremental.rows(0, COLS).collect();
    let b: Vec<String> = fresh.rows(0, COLS).collect();
    assert_eq!(a, b, "stale fragments: incremental screen differs from a full repaint");
    assert_eq!(incremental.contents_formatted(), fresh.contents_formatted(), "stale colours or attributes");

    // Stop needs two presses: the first only arms it.
    c.send(b"\x1b[21~");
    c.wait("the stop prompt", |rows| rows.iter().any(|r| r.contains("AGAIN TO STOP")));
    assert!(c.child.try_wait().unwrap().is_none(), "one press stopped the station");
    c.send(b"\x1b[21~");
    let st = c.wait_exit();
    assert!(st.success(), "exit status {st:?}");
    c.assert_clean_terminal();
    let attempts = support::sql(&c.db, "select count(*) from attempts");
    let rows = c.rows();
    assert!(rows.iter().any(|r| r.starts_with(&format!("{attempts} attempts: "))), "summary on the main screen:\n{}", rows.join("\n"));
}

#[test]
fn sigterm_finishes_the_board_and_restores_the_terminal() {
    let mut c = Console::start();
    c.wait("the slot rows", |rows| Console::slot_row(rows, "S1").contains("IDLE"));
    c.send(b"S1:PL4-000501\r");
    c.wait("S1 busy", |rows| Console::slot_row(rows, "S1").contains("BUSY"));
    assert!(is_raw(c.termios_local()));
    // SAFETY: signalling our own child by pid.
    assert_eq!(unsafe { libc::kill(c.child.id() as i32, libc::SIGTERM) }, 0);
    let st = c.wait_exit();
    assert!(st.success(), "exit status {st:?}");
    c.assert_clean_terminal();
    // The board in the fixture finished and was recorded, not left running.
    assert_eq!(support::sql(&c.db, "select result from attempts"), "pass");
}

#[test]
fn plain_keeps_the_line_output_on_a_terminal() {
    let mut c = Console::start_with(&["--plain"]);
    // Cooked terminal: the line discipline echoes and hands over whole lines.
    c.send(b"S2:PL4-000601\n");
    c.wait("the result line", |rows| rows.iter().any(|r| r.trim_start().starts_with("S2") && r.contains("PL4-000601") && r.contains("PASS")));
    c.send(b"quit\n");
    let st = c.wait_exit();
    assert!(st.success(), "exit status {st:?}");
    let s = c.seen.lock().unwrap();
    assert!(find_last(&s.raw, b"\x1b[?1049h").is_none(), "--plain entered the alternate screen");
    assert!(find_last(&s.raw, b"\x1b[").is_none(), "--plain wrote escape codes: {:?}", String::from_utf8_lossy(&s.raw));
}
