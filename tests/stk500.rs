//! The STK500v1 driver (`avrisp`, `arduino`) against the emulators on real pseudo-terminals,
//! with avrdude 7.1 as the referee where it applies.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use flashline::error::FailureClass;
use flashline::hex;
use flashline::part::{self, FuseKind, Part};
use flashline::programmer::stk500::Stk500Programmer;
use flashline::programmer::Programmer;
use flashline::sim::stk500::{EmulatorOptions, Stk500Emulator, Stk500Mode};
use flashline::sim::{Fault, SimOptions, SimTarget};

mod support;
use support::{rt, run_joined};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn part(id: &str) -> &'static Part {
    part::find(id).unwrap()
}

fn emulator(mcu: &str, mode: Stk500Mode, fault: Fault) -> Stk500Emulator {
    let t = SimTarget::new(part(mcu), SimOptions::new(false, fault));

    Stk500Emulator::spawn(t, EmulatorOptions::new(mode)).expect("pty")
}

/// Every test body runs under this bound: nothing may hang.
fn bounded<F: std::future::Future>(f: F) -> F::Output {
    rt().block_on(async { tokio::time::timeout(Duration::from_secs(30), f).await.expect("test exceeded 30 s") })
}

/// Program every page of `image` (padded to pages) through the driver.
async fn write_image(p: &mut dyn Programmer, part: &'static Part, image: &flashline::image::Image) {
    for (addr, data) in image.pages(part.flash_page_size) {
        p.write_flash_page(part, addr, &data).await.unwrap_or_else(|e| panic!("page 0x{addr:X}: {e}"));
    }
}

#[test]
fn avrisp_driver_programs_and_avrdude_verifies_byte_for_byte() {
    let m = part("atmega32u4");
    let emu = emulator("atmega32u4", Stk500Mode::Avrisp, Fault::None);
    let path = Path::new(FIXTURES).join("Caterina-Micro.hex");
    let image = hex::read_file(&path).unwrap();
    bounded(async {
        let mut p = Stk500Programmer::avrisp(emu.path(), None);
        p.open().await.unwrap();
        p.enter_progmode(m).await.unwrap();
        assert_eq!(p.read_signature().await.unwrap(), m.signature);
        // Dirty the chip first so the erase matters.
        p.write_flash_page(m, 0x100, &[0u8; 128]).await.unwrap();
        p.chip_erase(m).await.unwrap();
        write_image(&mut p, m, &image).await;
        p.write_fuse(m, FuseKind::High, 0xD8).await.unwrap();
        p.write_fuse(m, FuseKind::Extended, 0xCB).await.unwrap();
        assert_eq!(p.read_fuse(m, FuseKind::High).await.unwrap(), 0xD8);
        // Absent efuse bits read as the chip has them (0xC0 on the top) under the mask.
        assert_eq!(p.read_fuse(m, FuseKind::Extended).await.unwrap() & 0x0F, 0x0B);
        let back = p.read_flash(m, 0, m.flash_size as usize).await.unwrap();
        assert_eq!(back, image.to_flat(m.flash_size, 0xFF));
        // An odd, unaligned read is trimmed correctly.
        assert_eq!(p.read_flash(m, 0x123, 5).await.unwrap(), &back[0x123..0x128]);
        p.leave_progmode().await.unwrap();
        p.close().await.unwrap();
    });
    assert_eq!(emu.target().flash(), &image.to_flat(m.flash_size, 0xFF)[..], "target memory");
    assert_eq!(emu.target().fuse(FuseKind::High), 0xD8);
    assert_eq!(emu.target().stats().busy_violations, 0);

    // avrdude reads the chip back and compares with the file, byte for byte.
    let (ok, out) = run_joined(
        Command::new("avrdude").args(["-c", "avrisp", "-b", "115200", "-p", "m32u4", "-P"]).arg(emu.path()).arg("-U").arg(format!("flash:v:{}:i", path.display())),
        Duration::from_secs(60),
    );
    assert!(ok, "avrdude verify failed:\n{out}");
    assert!(out.contains("32730 bytes of flash verified"), "{out}");
}

#[test]
fn avrisp_eeprom_and_lock() {
    let m = part("atmega32u4");
    let emu = emulator("atmega32u4", Stk500Mode::Avrisp, Fault::None);
    let data: Vec<u8> = (0..100u32).map(|i| (i * 7 + 3) as u8).collect();
    bounded(async {
        let mut p = Stk500Programmer::avrisp(emu.path(), Some(115_200));
        p.open().await.unwrap();
        p.enter_progmode(m).await.unwrap();
        p.write_eeprom(m, 0x11, &data).await.unwrap();
        assert_eq!(p.read_eeprom(m, 0x11, data.len()).await.unwrap(), data);
        p.write_lock(m, 0x3C).await.unwrap();
        assert_eq!(p.read_lock(m).await.unwrap(), 0xFC);
        // Lock mode 00: flash reads back as 0xFF.
        assert!(p.read_flash(m, 0, 16).await.unwrap().iter().all(|b| *b == 0xFF));
        p.leave_progmode().await.unwrap();
    });
    assert_eq!(&emu.target().eeprom()[0x11..0x11 + 100], &data[..]);
}

#[test]
fn arduino_driver_programs_emulated_optiboot() {
    let m = part("atmega328p");
    let emu = emulator("atmega328p", Stk500Mode::Arduino, Fault::None);
    let boot_before = emu.target().flash()[0x7E00..].to_vec();
    let mut app = flashline::image::Image::new();
    let code: Vec<u8> = (0..3000u32).map(|i| (i ^ (i >> 3)) as u8).collect();
    app.insert(0, &code).unwrap();
    bounded(async {
        let mut p = Stk500Programmer::arduino(emu.path(), None);
        // DTR/RTS cannot be pulsed on a pty: open must still sync.
        p.open().await.unwrap();
        p.enter_progmode(m).await.unwrap();
        assert_eq!(p.read_signature().await.unwrap(), [0x1E, 0x95, 0x0F]);
        p.chip_erase(m).await.unwrap();
        write_image(&mut p, m, &app).await;
        assert_eq!(p.read_flash(m, 0, code.len()).await.unwrap(), code);
        // What a bootloader cannot do is refused, with a reason.
        let e = p.write_fuse(m, FuseKind::Low, 0xFF).await.unwrap_err();
        assert_eq!(e.class, FailureClass::Config);
        assert!(e.message.contains("Optiboot"), "{e}");
        assert_eq!(p.write_eeprom(m, 0, &[1, 2]).await.unwrap_err().class, FailureClass::Config);
        p.leave_progmode().await.unwrap();
    });
    let t = emu.target();
    assert_eq!(&t.flash()[..code.len()], &code[..]);
    assert_eq!(&t.flash()[0x7E00..], &boot_before[..], "Optiboot is intact");
}

#[test]
fn faults_reach_the_driver_as_what_they_are() {
    let m = part("atmega32u4");
    bounded(async {
        // No target: the signature reads all zeros / all ones (the job classifies it).
        for (fault, sig) in [(Fault::NoTarget { miso: 0 }, [0u8; 3]), (Fault::NoTarget { miso: 0xFF }, [0xFF; 3])] {
            let emu = emulator("atmega32u4", Stk500Mode::Avrisp, fault);
            let mut p = Stk500Programmer::avrisp(emu.path(), None);
            p.open().await.unwrap();
            p.enter_progmode(m).await.unwrap();
            assert_eq!(p.read_signature().await.unwrap(), sig);
        }
        // Wrong chip: a valid other signature.
        let emu = emulator("atmega32u4", Stk500Mode::Avrisp, Fault::parse("wrong-chip").unwrap());
        let mut p = Stk500Programmer::avrisp(emu.path(), None);
        p.open().await.unwrap();
        p.enter_progmode(m).await.unwrap();
        assert_eq!(p.read_signature().await.unwrap(), [0x1E, 0x94, 0x88]);
        drop(p);

        // Slow target: ArduinoISP's fixed 166 kHz SCK garbles every reply.
        let emu = emulator("atmega32u4", Stk500Mode::Avrisp, Fault::parse("slow:100000").unwrap());
        let mut p = Stk500Programmer::avrisp(emu.path(), None);
        p.open().await.unwrap();
        p.enter_progmode(m).await.unwrap();
        assert_eq!(p.read_signature().await.unwrap(), [0, 0, 0]);
        assert_eq!(p.read_fuse(m, FuseKind::High).await.unwrap(), 0);
        drop(p);

        // Stuck bits: the page writes, but the byte reads back wrong, the same on every read.
        let emu = emulator("atmega32u4", Stk500Mode::Avrisp, Fault::parse("stuck:0x105").unwrap());
        let mut p = Stk500Programmer::avrisp(emu.path(), None);
        p.open().await.unwrap();
        p.enter_progmode(m).await.unwrap();
        p.chip_erase(m).await.unwrap();
        p.write_flash_page(m, 0x100, &[0x55; 128]).await.unwrap();
        let a = p.read_flash(m, 0x100, 128).await.unwrap();
        let b = p.read_flash(m, 0x100, 128).await.unwrap();
        assert_eq!(a[5], 0x54);
        assert_eq!(a, b);
        drop(p);

        // Flaky contact: two reads of the same flash disagree.
        let emu = emulator("atmega32u4", Stk500Mode::Avrisp, Fault::parse("flaky:0.01").unwrap());
        let mut p = Stk500Programmer::avrisp(emu.path(), None);
        p.open().await.unwrap();
        p.enter_progmode(m).await.unwrap();
        let a = p.read_flash(m, 0, 1024).await.unwrap();
        let b = p.read_flash(m, 0, 1024).await.unwrap();
        assert_ne!(a, b);
        drop(p);

        // Unplugged mid-write: the tty vanishes, the driver says so.
        let emu = emulator("atmega32u4", Stk500Mode::Avrisp, Fault::parse("unplug:3").unwrap());
        let mut p = Stk500Programmer::avrisp(emu.path(), None);
        p.open().await.unwrap();
        p.enter_progmode(m).await.unwrap();
        let mut err = None;
        for page in 0..10u32 {
            if let Err(e) = p.write_flash_page(m, page * 128, &[0x12; 128]).await {
                err = Some((page, e));
                break;
            }
        }
        let (page, e) = err.expect("the unplug must surface");
        assert!(page >= 2, "failed too early, at page {page}: {e}");
        assert_eq!(e.class, FailureClass::ProgrammerGone, "{e}");
        // And reopening says the programmer is not there.
        let e = p.open().await.unwrap_err();
        assert_eq!(e.class, FailureClass::ProgrammerOpen, "{e}");
    });
}

#[test]
fn line_faults_and_missing_ports() {
    let m = part("atmega328p");
    bounded(async {
        // A port that does not exist.
        let mut p = Stk500Programmer::avrisp("/dev/does-not-exist-flashline", None);
        let e = p.open().await.unwrap_err();
        assert_eq!(e.class, FailureClass::ProgrammerOpen, "{e}");
        assert!(e.message.contains("/dev/does-not-exist-flashline"), "{e}");

        // Wrong baud: stock ArduinoISP runs at 19200, we ask 115200 → silence → timeout with a hint.
        let t = SimTarget::new(m, SimOptions::default());
        let emu = Stk500Emulator::spawn(t, EmulatorOptions::new(Stk500Mode::Avrisp).baud(19_200)).unwrap();
        let mut p = Stk500Programmer::avrisp(emu.path(), Some(115_200));
        let e = p.open().await.unwrap_err();
        assert_eq!(e.class, FailureClass::Timeout, "{e}");
        assert!(e.message.contains("19200"), "{e}");
        // The port is ours while the driver holds it.
        let mut other = Stk500Programmer::avrisp(emu.path(), Some(19_200));
        let busy = other.open().await.unwrap_err();
        assert_eq!(busy.class, FailureClass::ProgrammerOpen);
        assert!(busy.message.contains("in use"), "{busy}");
        drop(p);
        let mut p = Stk500Programmer::avrisp(emu.path(), Some(19_200));
        p.open().await.unwrap();
        drop(emu);

        // No board behind the serial port: no bootloader answers.
        let emu = emulator("atmega328p", Stk500Mode::Arduino, Fault::NoTarget { miso: 0 });
        let mut p = Stk500Programmer::arduino(emu.path(), None);
        let e = p.open().await.unwrap_err();
        assert_eq!(e.class, FailureClass::NoTarget, "{e}");

        // A board on the wrong clock answers garbage.
        let emu = emulator("atmega328p", Stk500Mode::Arduino, Fault::parse("slow").unwrap());
        let mut p = Stk500Programmer::arduino(emu.path(), None);
        let e = p.open().await.unwrap_err();
        assert_eq!(e.class, FailureClass::Communication, "{e}");

        // Bootloader wrong chip and unplug.
        let emu = emulator("atmega328p", Stk500Mode::Arduino, Fault::parse("wrong-chip:0x1E9587").unwrap());
        let mut p = Stk500Programmer::arduino(emu.path(), None);
        p.open().await.unwrap();
        assert_eq!(p.read_signature().await.unwrap(), [0x1E, 0x95, 0x87]);
        let emu = emulator("atmega328p", Stk500Mode::Arduino, Fault::parse("unplug:2").unwrap());
        let mut p = Stk500Programmer::arduino(emu.path(), None);
        p.open().await.unwrap();
        let mut last = Ok(());
        for page in 0..5u32 {
            last = p.write_flash_page(m, page * 128, &[0; 128]).await;
            if last.is_err() {
                break;
            }
        }
        assert_eq!(last.unwrap_err().class, FailureClass::ProgrammerGone);
    });
}

#[test]
fn avrdude_reads_what_the_arduino_driver_wrote() {
    let m = part("atmega328p");
    let emu = emulator("atmega328p", Stk500Mode::Arduino, Fault::None);
    let mut app = flashline::image::Image::new();
    let code: Vec<u8> = (0..1000u32).map(|i| (i * 13) as u8).collect();
    app.insert(0, &code).unwrap();
    bounded(async {
        let mut p = Stk500Programmer::arduino(emu.path(), None);
        p.open().await.unwrap();
        write_image(&mut p, m, &app).await;
        p.leave_progmode().await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let out_hex = dir.path().join("app.hex");
    hex::write_file(&out_hex, &app, 16).unwrap();
    let (ok, out) = run_joined(
        Command::new("avrdude").args(["-c", "arduino", "-b", "115200", "-p", "m328p", "-P"]).arg(emu.path()).arg("-U").arg(format!("flash:v:{}:i", out_hex.display())),
        Duration::from_secs(60),
    );
    assert!(ok, "avrdude -c arduino verify failed:\n{out}");
    assert!(out.contains("1000 bytes of flash verified"), "{out}");
}

/// The whole job (identify → erase → program → verify → fuses → lock) through `programmer::open`
/// and the STK500v1 driver: one failure class per fault, none hangs.
#[test]
fn each_fault_gives_its_own_class_through_the_job() {
    use flashline::job::{run_job, JobPlan, JobResult};
    use flashline::programmer::{open, ProgrammerKind, ProgrammerSpec};

    let m = part("atmega32u4");
    let image = hex::read_file(&Path::new(FIXTURES).join("Caterina-Micro.hex")).unwrap();
    // A stuck bit only shows where the image has that bit set.
    let stuck_at = (0x100..0x7000u32).find(|a| image.get(*a).is_some_and(|b| b & 1 == 1)).unwrap();
    let cases: Vec<(String, Option<FailureClass>)> = vec![
        ("none".into(), None),
        ("no-target".into(), Some(FailureClass::NoTarget)),
        ("no-target-ff".into(), Some(FailureClass::NoTarget)),
        ("wrong-chip".into(), Some(FailureClass::WrongChip)),
        ("flaky:0.001".into(), Some(FailureClass::Communication)),
        (format!("stuck:0x{stuck_at:X}"), Some(FailureClass::VerifyFlash)),
        // ArduinoISP does not check the Programming Enable echo, so a target too slow for its
        // fixed SCK looks like no target at all (signature 0x000000) — as on the real thing.
        ("slow".into(), Some(FailureClass::NoTarget)),
        ("unplug:10".into(), Some(FailureClass::ProgrammerGone)),
    ];
    for (fault, want) in cases {
        let emu = emulator("atmega32u4", Stk500Mode::Avrisp, Fault::parse(&fault).unwrap());
        let mut spec = ProgrammerSpec::new(ProgrammerKind::Avrisp, "slot1");
        spec.port = Some(emu.path().to_path_buf());
        let mut plan = JobPlan::new(m, image.clone());
        plan.fuses.high = Some(0xD8);
        plan.fuses.extended = Some(0xCB);
        plan.lock = Some(0x2F);
        let report = bounded(async {
            let mut prog = open(&spec, m).await.unwrap();
            run_job(prog.as_mut(), &plan, &mut |_| {}).await
        });
        assert_eq!(report.failure_class, want, "fault {fault}: {:?}", report.message);
        if want.is_none() {
            assert_eq!(report.result, JobResult::Pass);
            let t = emu.target();
            assert_eq!(t.flash(), &image.to_flat(m.flash_size, 0xFF)[..]);
            assert_eq!(t.fuse(FuseKind::High), 0xD8);
            assert_eq!(t.lock_bits() & 0x3F, 0x2F);
            assert_eq!(t.stats().busy_violations, 0);
        } else {
            let msg = report.message.unwrap_or_default();
            assert!(!msg.is_empty(), "fault {fault}: a message for the operator");
            if want == Some(FailureClass::NoTarget) {
                // On a fixed-SCK programmer the operator is told a slow clock looks the same.
                assert!(msg.contains("check the ISP cable and target power") && msg.contains("slow clock"), "{fault}: {msg}");
            }
        }
    }
}

#[test]
fn arduino_job_through_open() {
    use flashline::job::{run_job, JobPlan, JobResult};
    use flashline::programmer::{open, ProgrammerKind, ProgrammerSpec};

    let m = part("atmega328p");
    let emu = emulator("atmega328p", Stk500Mode::Arduino, Fault::None);
    let mut app = flashline::image::Image::new();
    let code: Vec<u8> = (0..5000u32).map(|i| (i * 31 + 7) as u8).collect();
    app.insert(0, &code).unwrap();
    let mut spec = ProgrammerSpec::new(ProgrammerKind::Arduino, "uno");
    spec.port = Some(emu.path().to_path_buf());
    let report = bounded(async {
        let mut prog = open(&spec, m).await.unwrap();
        assert!(!prog.erase_clears_flash());
        run_job(prog.as_mut(), &JobPlan::new(m, app.clone()), &mut |_| {}).await
    });
    assert_eq!(report.result, JobResult::Pass, "{:?}", report.message);
    assert_eq!(report.signature.as_deref(), Some("1E950F"));
    assert!(report.notes.iter().any(|n| n.contains("not readable through the bootloader")), "{:?}", report.notes);
    assert_eq!(&emu.target().flash()[..code.len()], &code[..]);
}

/// An STK500v1 firmware that keeps its address after PROG_PAGE / READ_PAGE (`--no-autoinc`,
/// like Optiboot): the avrisp driver programs and verifies it through the whole job.
#[test]
fn avrisp_job_on_a_programmer_without_autoincrement() {
    use flashline::job::{run_job, JobPlan, JobResult};
    use flashline::verify::VerifyPolicy;

    let m = part("atmega32u4");
    let image = hex::read_file(&Path::new(FIXTURES).join("Caterina-Micro.hex")).unwrap();
    for verify in [VerifyPolicy::Full, VerifyPolicy::Written] {
        let t = SimTarget::new(m, SimOptions::new(false, Fault::None));
        let emu = Stk500Emulator::spawn(t, EmulatorOptions::new(Stk500Mode::Avrisp).no_autoinc(true)).expect("pty");
        let mut plan = JobPlan::new(m, image.clone());
        plan.fuses.high = Some(0xD8);
        plan.verify = verify;
        let report = bounded(async {
            let mut p = Stk500Programmer::avrisp(emu.path(), None);
            run_job(&mut p, &plan, &mut |_| {}).await
        });
        assert_eq!(report.result, JobResult::Pass, "verify {}: {:?}", verify.name(), report.message);
        assert_eq!(emu.target().flash(), &image.to_flat(m.flash_size, 0xFF)[..], "verify {}", verify.name());
    }
}

/// The driver's whole job on the timed emulator behind each USB bridge model: it passes and
/// never addresses the chip while it is busy (no timing asserted).
#[test]
fn avrisp_job_on_every_timed_bridge() {
    use flashline::job::{run_job, JobPlan, JobResult};
    use flashline::sim::bridge::Bridge;

    let m = part("atmega32u4");
    let image = hex::read_file(&Path::new(FIXTURES).join("Caterina-Micro.hex")).unwrap();
    let threads: Vec<_> = Bridge::ALL
        .into_iter()
        .map(|bridge| {
            let image = image.clone();
            std::thread::spawn(move || {
                let t = SimTarget::new(m, SimOptions::new(true, Fault::None));
                let emu = Stk500Emulator::spawn(t, EmulatorOptions::new(Stk500Mode::Avrisp).line_timing(true).bridge(bridge).no_autoinc(bridge == Bridge::Ch340)).expect("pty");
                let mut plan = JobPlan::new(m, image.clone());
                plan.fuses.low = Some(0xFF);
                plan.fuses.high = Some(0xD8);
                plan.fuses.extended = Some(0xCB);
                let report = rt().block_on(async {
                    let mut p = Stk500Programmer::avrisp(emu.path(), None);
                    tokio::time::timeout(Duration::from_secs(90), run_job(&mut p, &plan, &mut |_| {})).await.expect("job exceeded 90 s")
                });
                assert_eq!(report.result, JobResult::Pass, "bridge {bridge}: {:?}", report.message);
                let t = emu.target();
                assert_eq!(t.flash(), &image.to_flat(m.flash_size, 0xFF)[..], "bridge {bridge}");
                assert_eq!(t.stats().busy_violations, 0, "bridge {bridge}");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// A `sim` programmer with a bridge (what `flash --programmer sim --timing --bridge B` and a
/// station's `sim` slot with `bridge:` open): a simulated ArduinoISP behind that link, driven
/// by the avrisp driver, with the `sim:NAME` identity.
#[test]
fn sim_with_a_bridge_runs_the_avrisp_path() {
    use flashline::job::{run_job, JobPlan, JobResult};
    use flashline::programmer::{open, ProgrammerSpec};
    use flashline::sim::bridge::Bridge;

    let m = part("atmega32u4");
    let image = hex::read_file(&Path::new(FIXTURES).join("Caterina-Micro.hex")).unwrap();
    let mut spec = ProgrammerSpec::sim("S1", SimOptions::new(true, Fault::None));
    spec.bridge = Some(Bridge::Cdc);
    let report = bounded(async {
        let mut prog = open(&spec, m).await.unwrap();
        assert_eq!(prog.info().identity, "sim:S1");
        run_job(prog.as_mut(), &JobPlan::new(m, image.clone()), &mut |_| {}).await
    });
    assert_eq!(report.result, JobResult::Pass, "{:?}", report.message);

    // The same through the command line; a bridge without --timing is refused.
    let bin = env!("CARGO_BIN_EXE_flashline");
    let hexfile = Path::new(FIXTURES).join("Caterina-Micro.hex");
    let (ok, out) = run_joined(Command::new(bin).args(["flash", "-c", "sim", "--timing", "--bridge", "ftdi:2", "-p", "m32u4"]).arg(&hexfile).arg("--json"), Duration::from_secs(60));
    assert!(ok && out.contains("\"result\": \"pass\""), "{out}");
    let (ok, out) = run_joined(Command::new(bin).args(["flash", "-c", "sim", "--bridge", "cdc", "-p", "m32u4"]).arg(&hexfile), Duration::from_secs(60));
    assert!(!ok && out.contains("--timing"), "{out}");
}
