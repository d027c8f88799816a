//! avrdude 7.1 (the real binary) against our STK500v1 emulators on pseudo-terminals, the
//! `avrdude` fallback driving it, and the `sim serve` command as external tools use it.
//! Every child process runs under a hard timeout.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flashline::error::FailureClass;
use flashline::hex;
use flashline::job::{JobPlan, JobResult};
use flashline::part::{self, FuseKind, Part};
use flashline::programmer::avrdude::{run_job, AvrdudeOptions};
use flashline::programmer::{ProgrammerKind, ProgrammerSpec};
use flashline::sim::bridge::Bridge;
use flashline::sim::stk500::{EmulatorOptions, Stk500Emulator, Stk500Mode};
use flashline::sim::{Fault, SimOptions, SimTarget};

mod support;
use support::run_child;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn part(id: &str) -> &'static Part {
    part::find(id).unwrap()
}

fn emulator(mcu: &str, mode: Stk500Mode, fault: Fault, baud: u32) -> Stk500Emulator {
    let t = SimTarget::new(part(mcu), SimOptions::new(false, fault));

    Stk500Emulator::spawn(t, EmulatorOptions::new(mode).baud(baud)).expect("pty")
}

fn avrdude(prog: &str, baud: u32, mcu: &str, port: &Path, ops: &[String]) -> (bool, String, String) {
    let mut c = Command::new("avrdude");
    c.args(["-c", prog, "-b", &baud.to_string(), "-p", mcu, "-P"]).arg(port);
    for op in ops {
        c.arg("-U").arg(op);
    }
    run_child(&mut c, Duration::from_secs(60))
}

fn bounded<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), f).await.expect("test exceeded 60 s") })
}

#[test]
fn avrdude_avrisp_writes_verifies_and_sets_fuses_on_the_emulator() {
    let m = part("atmega32u4");
    let emu = emulator("atmega32u4", Stk500Mode::Avrisp, Fault::None, 115_200);
    let image_path = Path::new(FIXTURES).join("Caterina-Micro.hex");
    let image = hex::read_file(&image_path).unwrap();
    // No EEPROM here: avrdude 7.1's `-c avrisp` sends byte addresses for the 32U4's EEPROM
    // while ArduinoISP takes word addresses (avrdude issues #967/#1337, `-c arduino_as_isp` in
    // 7.2), so the bytes land at twice their address on real hardware as on the emulator.
    let ops = [
        format!("flash:w:{}:i", image_path.display()),
        "lfuse:w:0xFF:m".into(),
        "hfuse:w:0xD8:m".into(),
        "efuse:w:0xCB:m".into(),
        "lock:w:0x2F:m".into(),
    ];
    let (ok, _, err) = avrdude("avrisp", 115_200, "m32u4", emu.path(), &ops);
    assert!(ok, "avrdude failed:\n{err}");
    assert!(err.contains("32730 bytes of flash verified"), "{err}");
    assert!(err.contains("1 byte of efuse verified"), "{err}");
    // The chip itself, not avrdude's word for it.
    let t = emu.target();
    assert_eq!(t.flash(), &image.to_flat(m.flash_size, 0xFF)[..]);
    assert_eq!((t.fuse(FuseKind::Low), t.fuse(FuseKind::High), t.fuse(FuseKind::Extended) & 0x0F), (0xFF, 0xD8, 0x0B));
    assert_eq!(t.lock_bits() & 0x3F, 0x2F);
    assert!(t.stats().chip_erases >= 1, "avrdude erased before writing");
}

#[test]
fn avrdude_reads_flash_back_as_the_target_holds_it() {
    let m = part("atmega32u4");
    let mut t = SimTarget::new(m, SimOptions::default());
    let pattern: Vec<u8> = (0..m.flash_size).map(|i| ((i * 7) ^ (i >> 9)) as u8).collect();
    t.preload_flash(0, &pattern);
    let emu = Stk500Emulator::spawn(t, EmulatorOptions::new(Stk500Mode::Avrisp)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump.hex");
    let (ok, _, err) = avrdude("avrisp", 115_200, "m32u4", emu.path(), &[format!("flash:r:{}:i", dump.display())]);
    assert!(ok, "{err}");
    let back = hex::read_file(&dump).unwrap().to_flat(m.flash_size, 0xFF);
    assert_eq!(back, pattern);
}

#[test]
fn stock_arduinoisp_rate_19200() {
    let emu = emulator("atmega32a", Stk500Mode::Avrisp, Fault::None, 19_200);
    let (ok, _, err) = avrdude("avrisp", 19_200, "m32a", emu.path(), &["hfuse:w:0xD9:m".into()]);
    assert!(ok, "{err}");
    assert_eq!(emu.target().fuse(FuseKind::High), 0xD9);
}

#[test]
fn avrdude_arduino_programs_the_emulated_optiboot() {
    let m = part("atmega328p");
    let emu = emulator("atmega328p", Stk500Mode::Arduino, Fault::None, 115_200);
    let boot = emu.target().flash()[0x7E00..].to_vec();
    let mut app = flashline::image::Image::new();
    let code: Vec<u8> = (0..6000u32).map(|i| (i * 3 + (i >> 7)) as u8).collect();
    app.insert(0, &code).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app_path = dir.path().join("app.hex");
    hex::write_file(&app_path, &app, 16).unwrap();
    // DTR/RTS ioctls fail on a pty; avrdude carries on, as the Optiboot emulator is always in
    // its bootloader.
    let (ok, _, err) = avrdude("arduino", 115_200, "m328p", emu.path(), &[format!("flash:w:{}:i", app_path.display())]);
    assert!(ok, "{err}");
    assert!(err.contains("6000 bytes of flash verified"), "{err}");
    let t = emu.target();
    assert_eq!(&t.flash()[..code.len()], &code[..]);
    assert_eq!(&t.flash()[0x7E00..], &boot[..], "Optiboot untouched");
    assert_eq!(t.part().id, m.id);
}

fn fallback_spec(port: &Path) -> ProgrammerSpec {
    let mut spec = ProgrammerSpec::new(ProgrammerKind::Avrdude, "slot7");
    spec.avrdude_programmer = Some("avrisp".into());
    spec.port = Some(port.to_path_buf());
    spec.baud = Some(115_200);
    spec
}

fn caterina_plan() -> JobPlan {
    let m = part("atmega32u4");
    let image = hex::read_file(&Path::new(FIXTURES).join("Caterina-Micro.hex")).unwrap();
    let mut plan = JobPlan::new(m, image);
    plan.fuses.low = Some(0xFF);
    plan.fuses.high = Some(0xD8);
    plan.fuses.extended = Some(0xCB);
    plan.lock = Some(0x2F);
    plan
}

#[test]
fn avrdude_fallback_runs_a_job_on_the_emulator() {
    let m = part("atmega32u4");
    let emu = emulator("atmega32u4", Stk500Mode::Avrisp, Fault::None, 115_200);
    let plan = caterina_plan();
    let mut events = Vec::new();
    let report = bounded(run_job(&fallback_spec(emu.path()), &AvrdudeOptions::default(), &plan, &mut |e| events.push(e)));
    assert_eq!(report.result, JobResult::Pass, "{:?}", report.message);
    assert_eq!(report.signature.as_deref(), Some("1E9587"));
    assert_eq!((report.bytes_written, report.bytes_verified), (32730, 32730));
    assert_eq!(report.fuses_before.high, Some(0x99), "factory high fuse read before");
    assert_eq!(report.fuses_after.high, Some(0xD8));
    assert_eq!(report.fuses_after.extended.map(|e| e & 0x0F), Some(0x0B));
    assert_eq!(report.lock_after.map(|l| l & 0x3F), Some(0x2F));
    assert!(!events.is_empty());
    let t = emu.target();
    assert_eq!(t.flash(), &plan.image.to_flat(m.flash_size, 0xFF)[..]);
    assert_eq!(t.fuse(FuseKind::High), 0xD8);
}

#[test]
fn avrdude_fallback_failure_classes() {
    let plan = caterina_plan();
    // A stuck bit only shows where the image has that bit set.
    let stuck_at = (0x100..0x7000u32).find(|a| plan.image.get(*a).is_some_and(|b| b & 1 == 1)).unwrap();
    let cases = [
        ("no-target".to_string(), FailureClass::NoTarget),
        ("no-target-ff".to_string(), FailureClass::NoTarget),
        ("wrong-chip".to_string(), FailureClass::WrongChip),
        (format!("stuck:0x{stuck_at:X}"), FailureClass::VerifyFlash),
        // avrdude 7.1 spins when the tty vanishes: the fallback sees the port go and stops it.
        ("unplug:20".to_string(), FailureClass::ProgrammerGone),
    ];
    for (fault, want) in cases {
        let emu = emulator("atmega32u4", Stk500Mode::Avrisp, Fault::parse(&fault).unwrap(), 115_200);
        let report = bounded(run_job(&fallback_spec(emu.path()), &AvrdudeOptions::default(), &plan, &mut |_| {}));
        assert_eq!(report.failure_class, Some(want), "fault {fault}: {:?}", report.message);
        assert!(report.message.as_deref().is_some_and(|m| !m.is_empty()));
    }
    // Equipment and configuration problems.
    let report = bounded(run_job(&fallback_spec(Path::new("/dev/does-not-exist-flashline")), &AvrdudeOptions::default(), &plan, &mut |_| {}));
    assert_eq!(report.failure_class, Some(FailureClass::ProgrammerOpen), "{:?}", report.message);
    let emu = emulator("atmega32u4", Stk500Mode::Avrisp, Fault::None, 115_200);
    let mut spec = fallback_spec(emu.path());
    spec.avrdude_programmer = Some("no-such-programmer".into());
    let report = bounded(run_job(&spec, &AvrdudeOptions::default(), &plan, &mut |_| {}));
    assert_eq!(report.failure_class, Some(FailureClass::Config), "{:?}", report.message);
    spec.avrdude_programmer = None;
    let report = bounded(run_job(&spec, &AvrdudeOptions::default(), &plan, &mut |_| {}));
    assert_eq!(report.failure_class, Some(FailureClass::Config), "{:?}", report.message);
    // Nothing answers at the baud asked for: avrdude would retry for ~50 s; the fallback's own
    // bound stops it and says the programmer did not answer.
    let emu = emulator("atmega32u4", Stk500Mode::Avrisp, Fault::None, 19_200);
    let mut opts = AvrdudeOptions::default();
    opts.base_timeout = Duration::from_secs(3);
    let mut small = flashline::image::Image::new();
    small.insert(0, &[0x0C, 0x94, 0x00, 0x00]).unwrap();
    let report = bounded(run_job(&fallback_spec(emu.path()), &opts, &JobPlan::new(plan.part, small), &mut |_| {}));
    assert_eq!(report.failure_class, Some(FailureClass::Timeout), "{:?}", report.message);
}

/// The external contract: first stdout line is the pty path, serve until SIGTERM, exit 0.
#[test]
fn sim_serve_contract() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flashline"))
        .args(["sim", "serve", "--protocol", "stk500v1", "--mcu", "atmega32u4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let guard = scopeguard(pid);
    let mut first = String::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let _ = r.read_line(&mut first);
        let _ = tx.send(first);
    });
    let path = rx.recv_timeout(Duration::from_secs(20)).expect("first line");
    let path = path.trim();
    assert!(path.starts_with("/dev/pts/"), "{path:?}");
    let (ok, _, err) = avrdude("stk500v1", 115_200, "m32u4", Path::new(path), &["lfuse:r:-:h".into()]);
    assert!(ok, "{err}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "sim serve ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(guard);
    assert!(status.success(), "{status}");
    assert!(!Path::new(path).exists(), "the pty is gone after exit");

    // A bad part name is refused with the name in the message.
    let out = Command::new(env!("CARGO_BIN_EXE_flashline")).args(["sim", "serve", "--protocol", "stk500v1", "--mcu", "nosuchchip"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuchchip"));
}

/// Kill the child if the test fails before it is stopped.
fn scopeguard(pid: i32) -> impl Drop {
    struct G(i32);
    impl Drop for G {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::Signal::SIGKILL);
        }
    }
    G(pid)
}

/// The fallback through `programmer::open`, driven step by step by the job runner like any
/// driver (what `flash --programmer avrdude` and the station use).
#[test]
fn avrdude_fallback_as_a_programmer_through_the_job() {
    use flashline::job::run_job as job;
    use flashline::programmer::open;
    let m = part("atmega32u4");
    let plan = caterina_plan();
    let emu = emulator("atmega32u4", Stk500Mode::Avrisp, Fault::None, 115_200);
    let spec = fallback_spec(emu.path());
    let report = bounded(async {
        let mut p = open(&spec, m).await.unwrap();
        job(p.as_mut(), &plan, &mut |_| {}).await
    });
    assert_eq!(report.result, JobResult::Pass, "{:?}", report.message);
    assert_eq!(report.signature.as_deref(), Some("1E9587"));
    assert_eq!(report.fuses_before.high, Some(0x99));
    assert_eq!(report.fuses_after.high, Some(0xD8));
    {
        let t = emu.target();
        assert_eq!(t.flash(), &plan.image.to_flat(m.flash_size, 0xFF)[..]);
        assert_eq!(t.fuse(FuseKind::High), 0xD8);
        assert_eq!(t.lock_bits() & 0x3F, 0x2F);
    }
    for (fault, want) in [("wrong-chip", FailureClass::WrongChip), ("no-target", FailureClass::NoTarget)] {
        let emu = emulator("atmega32u4", Stk500Mode::Avrisp, Fault::parse(fault).unwrap(), 115_200);
        let spec = fallback_spec(emu.path());
        let report = bounded(async {
            let mut p = open(&spec, m).await.unwrap();
            job(p.as_mut(), &plan, &mut |_| {}).await
        });
        assert_eq!(report.failure_class, Some(want), "{fault}: {:?}", report.message);
    }
}

/// The seed guide's own command line for a Caterina board, exactly (no `-b`: avrdude's default
/// 115200; fuses in the guide's order, low first), on a *timed* emulator behind `bridge`.
fn seed_command_on_timed_emulator(bridge: Bridge) {
    let m = part("atmega32u4");
    let t = SimTarget::new(m, SimOptions::new(true, Fault::None));
    let emu = Stk500Emulator::spawn(t, EmulatorOptions::new(Stk500Mode::Avrisp).line_timing(true).bridge(bridge)).expect("pty");
    let image_path = Path::new(FIXTURES).join("Caterina-Micro.hex");
    let image = hex::read_file(&image_path).unwrap();
    let mut c = Command::new("avrdude");
    c.args(["-c", "avrisp", "-P"]).arg(emu.path()).args(["-p", "atmega32u4", "-U"]).arg(format!("flash:w:{}:i", image_path.display()));
    c.args(["-U", "lfuse:w:0xFF:m", "-U", "hfuse:w:0xD8:m", "-U", "efuse:w:0xCB:m"]);
    let (ok, _, err) = run_child(&mut c, Duration::from_secs(150));
    assert!(ok, "bridge {bridge}: avrdude failed with the seed's command:\n{err}");
    assert!(err.contains("32730 bytes of flash verified"), "bridge {bridge}:\n{err}");
    let t = emu.target();
    assert_eq!(t.flash(), &image.to_flat(m.flash_size, 0xFF)[..], "bridge {bridge}: flash");
    assert_eq!((t.fuse(FuseKind::Low), t.fuse(FuseKind::High), t.fuse(FuseKind::Extended) & 0x0F), (0xFF, 0xD8, 0x0B), "bridge {bridge}: fuses");
}

#[test]
fn seed_command_passes_behind_native_cdc() {
    seed_command_on_timed_emulator(Bridge::Cdc);
}

#[test]
fn seed_command_passes_behind_ftdi() {
    seed_command_on_timed_emulator(Bridge::Ftdi { latency_ms: 16 });
}

#[test]
fn seed_command_passes_behind_ch340() {
    seed_command_on_timed_emulator(Bridge::Ch340);
}

#[test]
fn seed_command_passes_behind_16u2() {
    seed_command_on_timed_emulator(Bridge::U16u2);
}

/// avrdude sends LOAD_ADDRESS before every page, so it programs and verifies a firmware that
/// keeps its address after PROG_PAGE / READ_PAGE (the reference for our driver's test).
#[test]
fn avrdude_programs_a_programmer_without_autoincrement() {
    let m = part("atmega32u4");
    let t = SimTarget::new(m, SimOptions::new(false, Fault::None));
    let emu = Stk500Emulator::spawn(t, EmulatorOptions::new(Stk500Mode::Avrisp).no_autoinc(true)).expect("pty");
    let image_path = Path::new(FIXTURES).join("Caterina-Micro.hex");
    let image = hex::read_file(&image_path).unwrap();
    let (ok, _, err) = avrdude("avrisp", 115_200, "m32u4", emu.path(), &[format!("flash:w:{}:i", image_path.display())]);
    assert!(ok, "{err}");
    assert_eq!(emu.target().flash(), &image.to_flat(m.flash_size, 0xFF)[..]);
}

#[test]
fn sim_serve_bridge_options() {
    let bin = env!("CARGO_BIN_EXE_flashline");
    // Each of these is refused at once (bounded: a bug that served instead would be killed).
    let refused = |args: &[&str], want: &str| {
        let (ok, _, err) = run_child(Command::new(bin).args(["sim", "serve", "--mcu", "atmega32u4"]).args(args), Duration::from_secs(20));
        assert!(!ok && err.contains(want), "{args:?}: {err}");
    };
    refused(&["--protocol", "stk500v1", "--bridge", "ftdi"], "--timing");
    refused(&["--protocol", "stk500v1", "--timing", "--bridge", "pl2303"], "unknown bridge 'pl2303'");
    refused(&["--protocol", "stk500v1", "--timing", "--bridge", "ftdi:0"], "1..=255");
    refused(&["--protocol", "arduino", "--no-autoinc"], "--no-autoinc");
}
