//! Bus Pirate: avrdude 7.1 (`-c buspirate`) programs, verifies and sets fuses on the emulator on
//! a real pseudo-terminal; the native driver does the same job; faults give their classes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flashline::error::FailureClass;
use flashline::image::Image;
use flashline::job::{run_job, JobEvent, JobPlan, JobReport, JobResult};
use flashline::part::{self, FuseKind, FuseSet, Part};
use flashline::programmer::buspirate::BusPirate;
use flashline::programmer::Programmer;
use flashline::sim::buspirate::{BusPirateEmulator, BusPirateFirmware, BusPirateOptions};
use flashline::sim::{Fault, SimOptions, SimTarget};

mod support;
use support::{rt, run_joined};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn part(id: &str) -> &'static Part {
    part::find(id).unwrap()
}

fn emulator(mcu: &str, fault: Fault, firmware: BusPirateFirmware) -> BusPirateEmulator {
    let t = SimTarget::new(part(mcu), SimOptions::new(false, fault));

    BusPirateEmulator::spawn(t, BusPirateOptions { firmware, ..BusPirateOptions::default() }).expect("pty")
}

fn avrdude_flash(emu: &BusPirateEmulator, mcu: &str, hex: &Path, extra: &[&str]) -> (bool, String) {
    run_joined(
        Command::new("avrdude")
            .args(["-c", "buspirate", "-p", mcu, "-P"])
            .arg(emu.path())
            .args(extra)
            .arg("-U")
            .arg(format!("flash:w:{}:i", hex.display()))
            .args(["-U", "lfuse:w:0x5E:m", "-U", "hfuse:w:0xD9:m", "-U", "efuse:w:0xF3:m"]),
        Duration::from_secs(50),
    )
}

#[test]
fn avrdude_programs_verifies_and_sets_fuses_on_the_emulator() {
    let emu = emulator("atmega32u4", Fault::None, BusPirateFirmware::V6);
    let hex = Path::new(FIXTURES).join("Caterina-Micro.hex");
    let (ok, out) = avrdude_flash(&emu, "m32u4", &hex, &[]);
    assert!(ok, "avrdude -c buspirate failed:\n{out}");
    let image = flashline::hex::read_file(&hex).unwrap();
    let t = emu.target();
    assert_eq!(t.flash(), &image.to_flat(t.part().flash_size, 0xFF)[..]);
    assert_eq!(t.fuse(FuseKind::Low), 0x5E);
    assert_eq!(t.fuse(FuseKind::High), 0xD9);
    assert_eq!(t.fuse(FuseKind::Extended) & 0x0F, 0x03);
    assert!(!t.reset_asserted(), "avrdude left the Bus Pirate reset: RESET released");
    assert_eq!(t.stats().chip_erases, 1);
    assert_eq!(t.stats().busy_violations, 0);
    assert!(out.contains("32730 bytes of flash verified"), "{out}");
}

fn job(emu: &BusPirateEmulator, plan: &JobPlan) -> (JobReport, Vec<JobEvent>) {
    let mut events = Vec::new();
    let report = rt().block_on(async {
        let mut p = BusPirate::new(emu.path(), None);
        let mut sink = |e: JobEvent| events.push(e);
        tokio::time::timeout(Duration::from_secs(40), run_job(&mut p as &mut dyn Programmer, plan, &mut sink)).await.expect("job within its bounds")
    });
    (report, events)
}

fn plan(part: &'static Part, image: Image) -> JobPlan {
    let mut plan = JobPlan::new(part, image);
    plan.fuses = FuseSet { low: Some(0x5E), high: Some(0xD9), extended: Some(0xF3) };
    plan.lock = Some(0x2F);
    plan
}

/// Our driver programs a real production image; avrdude then verifies it byte for byte.
#[test]
fn driver_programs_and_avrdude_verifies() {
    let emu = emulator("atmega32u4", Fault::None, BusPirateFirmware::V6);
    let hex = Path::new(FIXTURES).join("Caterina-Leonardo.hex");
    let image = flashline::hex::read_file(&hex).unwrap();
    let mut p = plan(part("atmega32u4"), image.clone());
    p.lock = None; // avrdude must still be able to read the flash back
    let (r, _) = job(&emu, &p);
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    assert_eq!(r.signature.as_deref(), Some("1E9587"));
    assert_eq!(r.sck_hz, Some(250_000));
    {
        let t = emu.target();
        assert_eq!(t.flash(), &image.to_flat(t.part().flash_size, 0xFF)[..]);
        assert_eq!(t.fuse(FuseKind::High), 0xD9);
        assert!(!t.reset_asserted());
        assert_eq!(t.stats().page_writes as u32, r.pages_written);
    }
    let (ok, out) = run_joined(
        Command::new("avrdude").args(["-c", "buspirate", "-p", "m32u4", "-P"]).arg(emu.path()).arg("-U").arg(format!("flash:v:{}:i", hex.display())),
        Duration::from_secs(50),
    );
    assert!(ok, "avrdude verify failed:\n{out}");
    // avrdude reset the Bus Pirate to its text terminal; our driver gets back into binary mode.
    let mut small = Image::new();
    small.insert(0, &[0x42; 300]).unwrap();
    let (r, _) = job(&emu, &plan(part("atmega32u4"), small));
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
}

/// Firmware v5.10 has no AVR extended commands: reads fall back to bulk SPI transfers.
#[test]
fn driver_on_v5_firmware_and_at90usb1286_above_64k() {
    let emu = emulator("at90usb1286", Fault::None, BusPirateFirmware::V5);
    let mut image = flashline::hex::read_file(&Path::new(FIXTURES).join("bootloader_at90usb128_1.0.1.hex")).unwrap();
    image.insert(0, &[0x11; 700]).unwrap();
    let mut p = plan(part("at90usb1286"), image.clone());
    p.verify = flashline::verify::VerifyPolicy::Written;
    let (r, _) = job(&emu, &p);
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    let t = emu.target();
    assert_eq!(t.flash(), &image.to_flat(t.part().flash_size, 0xFF)[..]);
    assert_eq!(t.lock_bits() & 0x3F, 0x2F);
}

#[test]
fn faults_through_the_bus_pirate() {
    let mut small = Image::new();
    small.insert(0, &(0..2048u32).map(|i| (i * 3) as u8).collect::<Vec<u8>>()).unwrap();
    let m = part("atmega32u4");

    let emu = emulator("atmega32u4", Fault::NoTarget { miso: 0 }, BusPirateFirmware::V6);
    let (r, _) = job(&emu, &plan(m, small.clone()));
    assert_eq!(r.failure_class, Some(FailureClass::NoTarget), "{:?}", r.message);

    // Target only follows SCK ≤ 100 kHz: 250 and 125 kHz fail, 30 kHz works.
    let emu = emulator("atmega32u4", Fault::SlowTarget { max_sck_hz: 100_000 }, BusPirateFirmware::V6);
    let (r, events) = job(&emu, &plan(m, small.clone()));
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    assert_eq!(r.sck_hz, Some(30_000));
    assert!(events.iter().any(|e| matches!(e, JobEvent::Note { message, .. } if message.contains("30 kHz"))), "{events:?}");
    assert_eq!(&emu.target().flash()[..2048], &small.to_flat(2048, 0xFF)[..]);

    let emu = emulator("atmega32u4", Fault::Unplug { after_pages: 4 }, BusPirateFirmware::V6);
    let (r, _) = job(&emu, &plan(m, small.clone()));
    assert_eq!(r.failure_class, Some(FailureClass::ProgrammerGone), "{:?}", r.message);
    let start = Instant::now();
    while emu.is_serving() {
        assert!(start.elapsed() < Duration::from_secs(5), "the unplugged emulator must stop serving");
        std::thread::sleep(Duration::from_millis(10));
    }

    // Nothing on the port answers binary mode: a clear open error, no hang.
    let pty = flashline::sim::pty::Pty::open().unwrap();
    let mut p = BusPirate::new(&pty.path, None);
    let e = rt().block_on(async { tokio::time::timeout(Duration::from_secs(10), p.open()).await.expect("bounded") }).unwrap_err();
    assert_eq!(e.class, FailureClass::ProgrammerOpen, "{}", e.message);
    assert!(e.message.contains("BBIO1"), "{}", e.message);
}

/// With line timing and datasheet delays on, the driver never addresses a busy target.
#[test]
fn timed_emulator_sees_no_busy_violations() {
    let t = SimTarget::new(part("atmega32u4"), SimOptions::new(true, Fault::None));
    let emu = BusPirateEmulator::spawn(t, BusPirateOptions { line_timing: true, ..BusPirateOptions::default() }).unwrap();
    let mut im = Image::new();
    im.insert(0, &[0x0C; 512]).unwrap();
    let (r, _) = job(&emu, &plan(part("atmega32u4"), im.clone()));
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    let t = emu.target();
    assert_eq!(t.stats().busy_violations, 0);
    assert_eq!(&t.flash()[..512], &[0x0C; 512][..]);
}

/// The CLI contract: `flashline sim serve --protocol buspirate` prints the pty path first, serves
/// avrdude, and stops cleanly on SIGTERM.
#[test]
fn sim_serve_buspirate_serves_avrdude() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashline"))
        .args(["sim", "serve", "--protocol", "buspirate", "--mcu", "atmega32u4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut path = String::new();
    stdout.read_line(&mut path).unwrap();
    let path = path.trim().to_string();
    assert!(path.starts_with("/dev/pts/"), "{path:?}");
    let hex = Path::new(FIXTURES).join("bootloader_atmega32u4_1_0_0.hex");
    let (ok, out) = run_joined(
        Command::new("avrdude").args(["-c", "buspirate", "-p", "m32u4", "-P", &path, "-U"]).arg(format!("flash:w:{}:i", hex.display())).args(["-U", "hfuse:w:0xD9:m"]),
        Duration::from_secs(50),
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "sim serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(ok, "avrdude against sim serve failed:\n{out}");
    assert!(status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("page writes"), "{err}");
    assert!(!err.contains(" 0 page writes"), "{err}");
}

/// Raw bytes on the pty, as the firmware answers them: text prompt, binary mode entry,
/// bulk transfers, write-then-read limits, unknown commands, reset back to text.
#[test]
fn emulator_speaks_the_firmware_bytes() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let emu = emulator("atmega32u4", Fault::None, BusPirateFirmware::V5);
    let mut h = std::fs::OpenOptions::new().read(true).write(true).open(emu.path()).unwrap();
    let fd = h.as_raw_fd();
    let mut raw = nix::sys::termios::tcgetattr(&h).unwrap();
    nix::sys::termios::cfmakeraw(&mut raw);
    nix::sys::termios::tcsetattr(&h, nix::sys::termios::SetArg::TCSANOW, &raw).unwrap();
    let mut read_n = |n: usize| -> Vec<u8> {
        let mut out = vec![0u8; n];
        let mut got = 0;
        let start = Instant::now();
        while got < n {
            assert!(start.elapsed() < Duration::from_secs(5), "no answer; got {:?}", &out[..got]);
            let mut pfd = nix::libc::pollfd { fd, events: nix::libc::POLLIN, revents: 0 };
            if unsafe { nix::libc::poll(&mut pfd, 1, 100) } > 0 {
                got += h.read(&mut out[got..]).unwrap();
            }
        }
        out
    };
    let mut w = std::fs::OpenOptions::new().write(true).open(emu.path()).unwrap();
    w.write_all(b"\n").unwrap();
    assert_eq!(read_n(6), b"\r\nHiZ>");
    w.write_all(&[0u8; 20]).unwrap();
    assert_eq!(read_n(5), b"BBIO1");
    w.write_all(&[0x00]).unwrap();
    assert_eq!(read_n(5), b"BBIO1", "each further zero answers BBIO1");
    w.write_all(&[0x01]).unwrap();
    assert_eq!(read_n(4), b"SPI1");
    w.write_all(&[0x48]).unwrap(); // power on, CS low: RESET asserted
    assert_eq!(read_n(1), [0x01]);
    assert!(emu.target().reset_asserted());
    w.write_all(&[0x13, 0xAC, 0x53, 0x00, 0x00]).unwrap(); // bulk: Programming Enable
    assert_eq!(read_n(5), [0x01, 0x00, 0xAC, 0x53, 0x00]);
    w.write_all(&[0x13, 0x30, 0x00, 0x01, 0x00]).unwrap(); // signature byte 1
    assert_eq!(read_n(5)[4], 0x95);
    w.write_all(&[0x05, 0x10, 0x01, 0x00, 0x00]).unwrap(); // write 4097 bytes: refused
    assert_eq!(read_n(1), [0x00]);
    w.write_all(&[0x06]).unwrap(); // AVR extended commands: not on v5
    assert_eq!(read_n(1), [0x00]);
    w.write_all(&[0x00, 0x0F]).unwrap(); // back to bitbang, then reset to the terminal
    assert_eq!(read_n(6), b"BBIO1\x01");
    let banner = read_n(20);
    assert!(String::from_utf8_lossy(&banner).contains("RESET"), "{banner:?}");
    assert!(!emu.target().reset_asserted(), "reset releases the pins: the target runs");
}
