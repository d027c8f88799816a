//! USBasp and USBtinyISP drivers end to end through the control-transfer emulators: the job
//! runner programs real fixture images, verifies, writes fuses and lock; the simulated chip must
//! hold exactly the image afterwards. Faults: no target, slow target (SCK ladder), unplug.

use std::path::Path;
use std::time::Duration;

use flashline::error::FailureClass;
use flashline::image::Image;
use flashline::job::{run_job, JobEvent, JobPlan, JobReport, JobResult};
use flashline::part::{self, FuseKind, FuseSet, Part};
use flashline::programmer::usb::UsbTransport;
use flashline::programmer::usbasp::Usbasp;
use flashline::programmer::usbtiny::Usbtiny;
use flashline::programmer::Programmer;
use flashline::sim::usb::{usbtiny_req, UsbSimStats, UsbaspSim, UsbtinySim};
use flashline::sim::{Fault, SimOptions, SimTarget};
use flashline::verify::VerifyPolicy;

fn fixture(name: &str) -> Image {
    flashline::hex::read_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap()
}

fn target(part: &'static Part, timing: bool, fault: Fault) -> SimTarget {
    SimTarget::new(part, SimOptions::new(timing, fault))
}

async fn run(prog: &mut dyn Programmer, plan: &JobPlan) -> (JobReport, Vec<JobEvent>) {
    let mut events = Vec::new();
    let mut sink = |e: JobEvent| events.push(e);
    let r = tokio::time::timeout(Duration::from_secs(50), run_job(prog, plan, &mut sink)).await.expect("job finishes within its bounds");
    (r, events)
}

fn production_plan(part: &'static Part, image: Image) -> JobPlan {
    let mut plan = JobPlan::new(part, image);
    plan.fuses = FuseSet { low: Some(0x5E), high: Some(0xD9), extended: Some(0xF3) };
    plan.lock = Some(0x2F);
    plan
}

fn check_chip(t: &SimTarget, part: &'static Part, image: &Image) {
    assert_eq!(t.flash(), &image.to_flat(part.flash_size, 0xFF)[..], "flash holds exactly the image");
    assert_eq!(t.fuse(FuseKind::Low), 0x5E);
    assert_eq!(t.fuse(FuseKind::High), 0xD9);
    assert_eq!(t.fuse(FuseKind::Extended) & 0x0F, 0x03);
    assert_eq!(t.lock_bits() & part.lock_mask, 0x2F);
    assert!(!t.reset_asserted(), "RESET released at the end");
    assert_eq!(t.stats().busy_violations, 0);
}

/// Caterina-Micro: a real 32 KiB production image (sketch + bootloader) on an ATmega32U4.
#[tokio::test]
async fn usbasp_programs_verifies_and_sets_fuses_on_atmega32u4() {
    let part = part::find("atmega32u4").unwrap();
    let image = fixture("Caterina-Micro.hex");
    let sim = UsbaspSim::new(target(part, false, Fault::None));
    let mut prog = Usbasp::new(sim.clone());
    let (r, _) = run(&mut prog, &production_plan(part, image.clone())).await;
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    assert_eq!(r.signature.as_deref(), Some("1E9587"));
    assert_eq!(r.sck_hz, Some(375_000));
    assert_eq!(r.programmer.identity, "sim:usbasp");
    check_chip(&*sim.target().await, part, &image);
    let s = sim.stats().await;
    // One WRITEFLASH per written 128-byte page (the firmware's address auto-increments, so
    // SETLONGADDRESS only follows skipped pages), 254-byte reads for the full verify.
    let pages = r.pages_written as u64;
    let reads = r.bytes_verified.div_ceil(254);
    assert!(s.transfers >= pages + reads, "{s:?}");
    assert!(s.transfers < pages + 2 * reads + 60, "no redundant transfers: {s:?} for {pages} pages");
    assert!(s.modelled > Duration::from_millis(pages), "modelled time covers every transfer");
}

#[tokio::test]
async fn usbtiny_programs_verifies_and_sets_fuses_on_atmega32u4() {
    let part = part::find("atmega32u4").unwrap();
    let image = fixture("Caterina-Leonardo.hex");
    let sim = UsbtinySim::new(target(part, false, Fault::None));
    let mut prog = Usbtiny::new(sim.clone());
    let (r, _) = run(&mut prog, &production_plan(part, image.clone())).await;
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    assert_eq!(r.sck_hz, Some(100_000));
    check_chip(&*sim.target().await, part, &image);
    let s = sim.stats().await;
    // Per page: one FLASH_WRITE (128 bytes) + one SPI Write Page; reads in 128-byte chunks.
    let pages = r.pages_written as u64;
    assert!(s.transfers >= 2 * pages + r.bytes_verified / 128, "{s:?}");
    assert!(s.transfers < 2 * pages + r.bytes_verified / 128 + 60, "{s:?}");
}

/// AT90USB1286: 128 KiB, the Atmel DFU bootloader at 0x1E000 above 64 KiB.
fn big_image() -> Image {
    let mut im = fixture("bootloader_at90usb128_1.0.1.hex");
    let fw: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(31) >> 3) as u8 ^ 0x5A).collect();
    im.insert(0, &fw).unwrap();
    im
}

#[tokio::test]
async fn usbasp_at90usb1286_above_64k() {
    let part = part::find("at90usb1286").unwrap();
    let image = big_image();
    let sim = UsbaspSim::new(target(part, false, Fault::None));
    let mut prog = Usbasp::new(sim.clone());
    let mut plan = production_plan(part, image.clone());
    plan.verify = VerifyPolicy::Written;
    let (r, _) = run(&mut prog, &plan).await;
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    assert_eq!(r.signature.as_deref(), Some("1E9782"));
    let t = sim.target().await;
    check_chip(&t, part, &image);
    assert_ne!(&t.flash()[0x1E000..0x1E010], &[0xFF; 16][..], "bootloader landed above 64 KiB");
}

#[tokio::test]
async fn usbtiny_at90usb1286_above_64k() {
    let part = part::find("at90usb1286").unwrap();
    let image = big_image();
    let sim = UsbtinySim::new(target(part, false, Fault::None));
    let mut prog = Usbtiny::new(sim.clone());
    let mut plan = production_plan(part, image.clone());
    plan.verify = VerifyPolicy::Written;
    let (r, _) = run(&mut prog, &plan).await;
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    check_chip(&*sim.target().await, part, &image);
    // Every written page verified, the bootloader's above 0xFFFF with one SPI instruction per
    // byte.
    assert_eq!(r.bytes_verified, r.pages_written as u64 * 256);
    let above = r.bytes_verified - 5120;
    assert!(above >= 4096, "{above}");
    assert!(sim.stats().await.transfers > above, "one transfer per byte above 64 KiB");
}

/// Why the single-instruction reads matter: the firmware's chunked read cannot name an address
/// above 0xFFFF, so a chunked verify of the bootloader would compare against low flash.
#[tokio::test]
async fn usbtiny_chunked_read_cannot_reach_above_64k() {
    let part = part::find("at90usb1286").unwrap();
    let mut t = target(part, false, Fault::None);
    t.preload_flash(0x1E000, &[0xAB; 16]);
    t.preload_flash(0xE000, &[0x12; 16]);
    let mut sim = UsbtinySim::new(t);
    let to = Duration::from_secs(1);
    sim.control_in(usbtiny_req::POWERUP, 10, usbtiny_req::RESET_LOW, 0, to).await.unwrap();
    sim.control_in(usbtiny_req::SPI, 0x53AC, 0, 4, to).await.unwrap();
    // wIndex = 0x1E000 as u16 = 0xE000: the firmware reads low flash.
    let chunk = sim.control_in(usbtiny_req::FLASH_READ, 0, 0x1E000u32 as u16, 16, to).await.unwrap();
    assert_eq!(chunk, [0x12; 16]);
    // The driver reads the right bytes: chunks below 0x10000, single instructions above.
    {
        let mut t = sim.target().await;
        t.preload_flash(0xFFF8, &[0x34; 8]);
        t.preload_flash(0x10000, &[0xCD; 16]);
    }
    sim.control_in(usbtiny_req::POWERDOWN, 0, 0, 0, to).await.unwrap();
    let mut prog = Usbtiny::new(sim.clone());
    prog.enter_progmode(part).await.unwrap();
    let before = sim.stats().await.transfers;
    let got = prog.read_flash(part, 0xFFF8, 24).await.unwrap();
    assert_eq!(&got[..8], &[0x34; 8]);
    assert_eq!(&got[8..], &[0xCD; 16]);
    assert_eq!(sim.stats().await.transfers - before, 1 + 16, "one chunk below 64 KiB, one SPI per byte above");
    assert_eq!(prog.read_flash(part, 0x1E000, 16).await.unwrap(), [0xAB; 16]);
}

fn small_plan(part: &'static Part) -> (JobPlan, Image) {
    let mut im = Image::new();
    let fw: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
    im.insert(0, &fw).unwrap();
    (production_plan(part, im.clone()), im)
}

#[tokio::test]
async fn faults_through_usbasp() {
    let part = part::find("atmega32u4").unwrap();
    let (plan, image) = small_plan(part);

    let sim = UsbaspSim::new(target(part, false, Fault::NoTarget { miso: 0 }));
    let (r, _) = run(&mut Usbasp::new(sim.clone()), &plan).await;
    assert_eq!(r.failure_class, Some(FailureClass::NoTarget), "{:?}", r.message);
    assert!(r.message.as_deref().unwrap().contains("MISO"), "{:?}", r.message);

    // A target that only follows SCK ≤ 100 kHz: the ladder settles on 93.75 kHz.
    let sim = UsbaspSim::new(target(part, false, Fault::SlowTarget { max_sck_hz: 100_000 }));
    let (r, events) = run(&mut Usbasp::new(sim.clone()), &plan).await;
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    assert_eq!(r.sck_hz, Some(93_750));
    assert_eq!(sim.sck_hz().await, 93_750);
    assert!(events.iter().any(|e| matches!(e, JobEvent::Note { message, .. } if message.contains("93.75 kHz"))), "{events:?}");
    check_chip(&*sim.target().await, part, &image);

    let sim = UsbaspSim::new(target(part, false, Fault::Unplug { after_pages: 5 }));
    let (r, _) = run(&mut Usbasp::new(sim.clone()), &plan).await;
    assert_eq!(r.failure_class, Some(FailureClass::ProgrammerGone), "{:?}", r.message);
    assert_eq!(r.result, JobResult::Error);

    let sim = UsbaspSim::new(target(part, false, Fault::StuckBits { addr: 0x0101, mask: 1, value: 0 }));
    let (r, _) = run(&mut Usbasp::new(sim.clone()), &plan).await;
    assert_eq!(r.failure_class, Some(FailureClass::VerifyFlash), "{:?}", r.message);

    let sim = UsbaspSim::new(target(part, false, Fault::WrongChip { signature: [0x1E, 0x94, 0x88] }));
    let (r, _) = run(&mut Usbasp::new(sim.clone()), &plan).await;
    assert_eq!(r.failure_class, Some(FailureClass::WrongChip), "{:?}", r.message);
}

#[tokio::test]
async fn faults_through_usbtiny() {
    let part = part::find("atmega32u4").unwrap();
    let (plan, image) = small_plan(part);

    let sim = UsbtinySim::new(target(part, false, Fault::NoTarget { miso: 0xFF }));
    let (r, _) = run(&mut Usbtiny::new(sim.clone()), &plan).await;
    assert_eq!(r.failure_class, Some(FailureClass::NoTarget), "{:?}", r.message);

    // 40 kHz max: 10 µs (100 kHz) and 20 µs (50 kHz) fail, 50 µs (20 kHz) works.
    let sim = UsbtinySim::new(target(part, false, Fault::SlowTarget { max_sck_hz: 40_000 }));
    let (r, events) = run(&mut Usbtiny::new(sim.clone()), &plan).await;
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    assert_eq!(sim.sck_period().await, 50);
    assert_eq!(r.sck_hz, Some(20_000));
    assert!(events.iter().any(|e| matches!(e, JobEvent::Note { message, .. } if message.contains("50 µs"))), "{events:?}");
    check_chip(&*sim.target().await, part, &image);

    let sim = UsbtinySim::new(target(part, false, Fault::Unplug { after_pages: 3 }));
    let (r, _) = run(&mut Usbtiny::new(sim.clone()), &plan).await;
    assert_eq!(r.failure_class, Some(FailureClass::ProgrammerGone), "{:?}", r.message);
    let msg = r.message.unwrap();
    assert!(msg.contains("disconnected"), "{msg}");
}

/// With the datasheet timing on, the drivers wait long enough: the busy target never sees an
/// instruction it would ignore.
#[tokio::test]
async fn timed_targets_are_never_addressed_while_busy() {
    let part = part::find("atmega32u4").unwrap();
    let mut im = Image::new();
    im.insert(0, &[0x0C; 512]).unwrap();
    im.insert(0x7000, &[0xA5; 256]).unwrap();
    let plan = production_plan(part, im.clone());

    let sim = UsbaspSim::new(target(part, true, Fault::None));
    let (r, _) = run(&mut Usbasp::new(sim.clone()), &plan).await;
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    check_chip(&*sim.target().await, part, &im);

    let sim = UsbtinySim::new(target(part, true, Fault::None));
    let (r, _) = run(&mut Usbtiny::new(sim.clone()), &plan).await;
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    check_chip(&*sim.target().await, part, &im);
    let s: UsbSimStats = sim.stats().await;
    assert!(s.host_delays >= Duration::from_micros(6 * 4500), "page waits are modelled: {s:?}");
}

/// The same work done avrdude's way (its request sequence replayed against the emulator) and
/// flashline's way: identical chip contents, fewer transfers for flashline. (Modelled time is
/// for the benchmarks; here only the deterministic transfer counts are compared.)
#[tokio::test]
async fn fewer_transfers_than_avrdude_for_the_same_work() {
    use flashline::sim::usb::avrdude_way;
    let part = part::find("atmega32u4").unwrap();
    let image = fixture("Caterina-Micro.hex");
    let fuses = FuseSet { low: Some(0x5E), high: Some(0xD9), extended: Some(0xF3) };
    let mut plan = JobPlan::new(part, image.clone());
    plan.fuses = fuses;

    let mut a = UsbaspSim::new(target(part, false, Fault::None));
    avrdude_way::usbasp_flash(&mut a, part, &image, &fuses).await.unwrap();
    let ours = UsbaspSim::new(target(part, false, Fault::None));
    let (r, _) = run(&mut Usbasp::new(ours.clone()), &plan).await;
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    assert_eq!(a.target().await.flash(), ours.target().await.flash());
    let (sa, so) = (a.stats().await, ours.stats().await);
    assert!(so.transfers < sa.transfers, "usbasp: flashline {} vs avrdude {} transfers", so.transfers, sa.transfers);
    eprintln!("usbasp: flashline {:?} vs avrdude {:?}", so, sa);

    let mut a = UsbtinySim::new(target(part, false, Fault::None));
    avrdude_way::usbtiny_flash(&mut a, part, &image, &fuses).await.unwrap();
    let ours = UsbtinySim::new(target(part, false, Fault::None));
    let (r, _) = run(&mut Usbtiny::new(ours.clone()), &plan).await;
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    assert_eq!(a.target().await.flash(), ours.target().await.flash());
    let (sa, so) = (a.stats().await, ours.stats().await);
    assert!(so.transfers <= sa.transfers, "usbtiny: flashline {} vs avrdude {} transfers", so.transfers, sa.transfers);
    eprintln!("usbtiny: flashline {:?} vs avrdude {:?}", so, sa);
}

/// `flashline programmers --json` runs on a machine without programmers and prints a JSON array.
#[test]
fn programmers_command_lists_as_json() {
    let out = assert_cmd::Command::cargo_bin("flashline").unwrap().args(["programmers", "--json"]).timeout(Duration::from_secs(20)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.is_array());
    for p in v.as_array().unwrap() {
        assert!(p["selector"].is_string() && p["access"].is_string(), "{p}");
    }
}
