//! The job runner end to end on the in-process simulated programmer and real part definitions:
//! exact memory/fuse/lock contents on the simulated chip, one failure class per fault, no hangs.

use std::time::Duration;

use async_trait::async_trait;
use flashline::error::{FailureClass, ProgResult};
use flashline::image::Image;
use flashline::isp::Cmd;
use flashline::job::{run_job, run_read, JobEvent, JobPlan, JobReport, JobResult, Step};
use flashline::part::{self, FuseKind, FuseSet, Part};
use flashline::programmer::{Programmer, ProgrammerInfo, SimProgrammer};
use flashline::sim::{Fault, SimOptions};
use flashline::verify::VerifyPolicy;

fn m32u4() -> &'static Part {
    part::find("atmega32u4").unwrap()
}

/// A keyboard-like image: 3 KiB of "firmware" at 0, a blank (all 0xFF) page inside it, and a
/// 1 KiB "bootloader" at 0x7000.
fn keyboard_image() -> Image {
    let mut im = Image::new();
    let mut fw: Vec<u8> = (0..3072u32).map(|i| (i.wrapping_mul(7) ^ (i >> 8)) as u8 | 0x01).collect();
    // Page 0x400..0x480 holds only 0xFF: a blank page the job may skip.
    fw[0x400..0x480].fill(0xFF);
    im.insert(0, &fw).unwrap();
    let bl: Vec<u8> = (0..1024u32).map(|i| (i * 13 + 5) as u8).collect();
    im.insert(0x7000, &bl).unwrap();
    im
}

fn sim(part: &'static Part, timing: bool, fault: Fault) -> SimProgrammer {
    SimProgrammer::new(part, SimOptions::new(timing, fault), "T1")
}

async fn run(prog: &mut dyn Programmer, plan: &JobPlan) -> (JobReport, Vec<JobEvent>) {
    let mut events = Vec::new();
    let mut sink = |e: JobEvent| events.push(e);
    let report = tokio::time::timeout(Duration::from_secs(60), run_job(prog, plan, &mut sink))
        .await
        .expect("the job must finish within its own bounds");
    (report, events)
}

fn production_plan(part: &'static Part, image: Image) -> JobPlan {
    let mut plan = JobPlan::new(part, image);
    plan.fuses = FuseSet { low: Some(0x5E), high: Some(0xD9), extended: Some(0xF3) };
    plan.lock = Some(0x2F);
    plan
}

#[tokio::test]
async fn full_job_leaves_exact_contents_on_the_chip() {
    let part = m32u4();
    let image = keyboard_image();
    let mut plan = production_plan(part, image.clone());
    let mut ee = Image::new();
    ee.insert(0x10, b"SN-000123").unwrap();
    plan.eeprom = Some(ee);
    let mut p = sim(part, false, Fault::None);
    let (r, events) = run(&mut p, &plan).await;

    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    assert_eq!(r.failure_class, None);
    let t = p.target();
    assert_eq!(t.flash(), &image.to_flat(part.flash_size, 0xFF)[..], "flash holds exactly the image");
    assert_eq!(&t.eeprom()[0x10..0x19], b"SN-000123");
    assert_eq!(t.fuse(FuseKind::Low), 0x5E);
    assert_eq!(t.fuse(FuseKind::High), 0xD9);
    assert_eq!(t.fuse(FuseKind::Extended) & 0x0F, 0x03);
    assert_eq!(t.lock_bits() & part.lock_mask, 0x2F);
    assert!(!t.reset_asserted(), "RESET released: the board runs");
    assert_eq!(t.stats().chip_erases, 1);

    // 3 KiB firmware = 24 pages, one of them blank; 1 KiB bootloader = 8 pages.
    assert_eq!(r.pages_written, 31);
    assert_eq!(r.pages_skipped, 1);
    assert_eq!(t.stats().page_writes, 31);
    assert_eq!(r.bytes_written, 31 * 128);
    assert_eq!(r.bytes_verified, 32 * 128, "full verify reads the skipped page too");
    assert_eq!(r.signature.as_deref(), Some("1E9587"));
    // Raw reads: the extended fuse's four absent bits come back as the chip drives them.
    assert_eq!(r.fuses_before, FuseSet { low: Some(0x5E), high: Some(0x99), extended: Some(0xC3) });
    assert_eq!(r.fuses_after.high, Some(0xD9));
    assert_eq!(r.lock_before, Some(0xFF));
    assert_eq!(r.lock_after.map(|l| l & 0x3F), Some(0x2F));
    assert_eq!(r.programmer.identity, "sim:T1");
    let order: Vec<Step> = r.steps.iter().map(|s| s.step).collect();
    use Step::*;
    assert_eq!(order, [Connect, Identify, ReadFuses, Erase, Program, Verify, Eeprom, Fuses, Lock, Leave]);
    assert!(r.steps.iter().all(|s| s.ok));

    // Events: every started step finished, program progress reaches its total.
    let started = events.iter().filter(|e| matches!(e, JobEvent::StepStarted { .. })).count();
    let finished = events.iter().filter(|e| matches!(e, JobEvent::StepFinished { .. })).count();
    assert_eq!((started, finished), (10, 10));
    let last_prog = events
        .iter()
        .filter_map(|e| match e {
            JobEvent::Progress { step: Step::Program, done, total } => Some((*done, *total)),
            _ => None,
        })
        .next_back()
        .unwrap();
    assert_eq!(last_prog, (31 * 128, 31 * 128));

    // The report is the `flash --json` object.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["result"], "pass");
    assert_eq!(json["fuses_after"]["high"], "0xD9");
    assert_eq!(json["steps"][4]["step"], "program");
}

#[tokio::test]
async fn timed_job_never_addresses_a_busy_target() {
    let part = m32u4();
    let mut im = Image::new();
    im.insert(0, &[0x0C; 1024]).unwrap();
    let mut plan = production_plan(part, im.clone());
    let mut ee = Image::new();
    ee.insert(0, &[1, 2, 3]).unwrap();
    plan.eeprom = Some(ee);
    let mut p = sim(part, true, Fault::None);
    let (r, _) = run(&mut p, &plan).await;
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    let t = p.target();
    assert_eq!(t.stats().busy_violations, 0);
    assert_eq!(&t.flash()[..1024], &[0x0C; 1024][..]);
    assert_eq!(t.fuse(FuseKind::High), 0xD9);
    assert_eq!(&t.eeprom()[..3], &[1, 2, 3]);
}

#[tokio::test]
async fn large_part_above_64k() {
    let part = part::find("at90usb1286").unwrap();
    let mut im = Image::new();
    im.insert(0, &[0x11; 600]).unwrap();
    let bl: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    im.insert(0x1E000, &bl).unwrap();
    let mut p = sim(part, false, Fault::None);
    let (r, _) = run(&mut p, &production_plan(part, im.clone())).await;
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    assert_eq!(p.target().flash(), &im.to_flat(part.flash_size, 0xFF)[..]);
    assert_eq!(r.signature.as_deref(), Some("1E9782"));
}

/// One fault, one job: its class, its result kind, and words an operator can act on.
async fn expect_failure(fault: &str, class: FailureClass, result: JobResult, words: &[&str]) -> JobReport {
    let part = m32u4();
    let mut p = sim(part, false, Fault::parse(fault).unwrap());
    let (r, events) = run(&mut p, &production_plan(part, keyboard_image())).await;
    assert_eq!(r.failure_class, Some(class), "fault {fault}: {:?}", r.message);
    assert_eq!(r.result, result, "fault {fault}");
    let msg = r.message.clone().unwrap();
    for w in words {
        assert!(msg.contains(w), "fault {fault}: message {msg:?} should mention {w:?}");
    }
    assert!(events.iter().any(|e| matches!(e, JobEvent::StepFailed { class: c, .. } if *c == class)));
    if !class.takes_slot_offline() {
        assert!(!p.target().reset_asserted(), "fault {fault}: RESET released after the failure");
    }
    r
}

#[tokio::test]
async fn no_target_is_reported_with_a_wiring_hint() {
    expect_failure("no-target", FailureClass::NoTarget, JobResult::Fail, &["0x00", "ISP cable", "power"]).await;
    expect_failure("no-target-ff", FailureClass::NoTarget, JobResult::Fail, &["0xFF", "ISP cable"]).await;
}

#[tokio::test]
async fn wrong_chip_names_both_parts() {
    let r = expect_failure("wrong-chip", FailureClass::WrongChip, JobResult::Fail, &["ATmega16U4", "ATmega32U4", "1E9488"]).await;
    assert_eq!(r.signature.as_deref(), Some("1E9488"));
    let order: Vec<Step> = r.steps.iter().map(|s| s.step).collect();
    assert_eq!(order, [Step::Connect, Step::Identify], "nothing written to a wrong chip");
}

#[tokio::test]
async fn flaky_contact_is_a_communication_failure() {
    expect_failure("flaky:0.001", FailureClass::Communication, JobResult::Fail, &["unstable", "re-seat"]).await;
}

#[tokio::test]
async fn stuck_bits_fail_verification_with_address_and_values() {
    // 0x0100 holds (0x100*7 ^ 1) | 1 = 0x01: the stuck-at-0 bit 0 reads back 0x00.
    expect_failure("stuck:0x100", FailureClass::VerifyFlash, JobResult::Fail, &["0x0100", "expected 0x01", "read 0x00"]).await;
}

#[tokio::test]
async fn target_too_slow_for_every_sck() {
    expect_failure("slow:4000", FailureClass::ProgEnable, JobResult::Fail, &["8 kHz", "re-seat"]).await;
}

#[tokio::test]
async fn unplugged_programmer_takes_the_slot_offline() {
    let r = expect_failure("unplug:5", FailureClass::ProgrammerGone, JobResult::Error, &["sim:T1", "USB"]).await;
    assert!(r.failure_class.unwrap().takes_slot_offline());
    assert_eq!(r.steps.last().map(|s| (s.step, s.ok)), Some((Step::Program, false)));
}

#[tokio::test]
async fn slow_target_within_the_ladder_passes_with_a_note() {
    let part = m32u4();
    let mut p = sim(part, false, Fault::SlowTarget { max_sck_hz: 100_000 });
    let image = keyboard_image();
    let (r, events) = run(&mut p, &production_plan(part, image.clone())).await;
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    assert_eq!(r.sck_hz, Some(93_750));
    assert!(r.notes.iter().any(|n| n.contains("lowered SCK to 93.75 kHz")), "{:?}", r.notes);
    assert!(events.iter().any(|e| matches!(e, JobEvent::Note { step: Step::Identify, message } if message.contains("93.75 kHz"))));
    assert_eq!(p.target().flash(), &image.to_flat(part.flash_size, 0xFF)[..]);
}

#[tokio::test]
async fn written_policy_reads_only_written_pages() {
    let part = m32u4();
    // Bit 0 of 0x0400 is stuck at 0, inside the image's blank (skipped) page.
    let fault = Fault::StuckBits { addr: 0x400, mask: 0x01, value: 0x00 };
    let mut plan = production_plan(part, keyboard_image());

    plan.verify = VerifyPolicy::Written;
    let mut p = sim(part, false, fault.clone());
    let (r, _) = run(&mut p, &plan).await;
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    assert_eq!(r.bytes_verified, 31 * 128, "only written pages are read back");

    plan.verify = VerifyPolicy::Full;
    let mut p = sim(part, false, fault.clone());
    let (r, _) = run(&mut p, &plan).await;
    assert_eq!(r.failure_class, Some(FailureClass::VerifyFlash));
    assert!(r.message.unwrap().contains("0x0400: expected 0xFF, read 0xFE"));

    plan.verify = VerifyPolicy::None;
    let mut p = sim(part, false, fault);
    let (r, _) = run(&mut p, &plan).await;
    assert_eq!(r.result, JobResult::Pass);
    assert_eq!(r.bytes_verified, 0);
    assert!(r.step_ms(Step::Verify).is_none());
}

#[tokio::test]
async fn blank_pages_are_written_when_skipping_is_off() {
    let part = m32u4();
    let mut plan = JobPlan::new(part, keyboard_image());
    plan.skip_blank_pages = false;
    let mut p = sim(part, false, Fault::None);
    let (r, _) = run(&mut p, &plan).await;
    assert_eq!(r.result, JobResult::Pass);
    assert_eq!((r.pages_written, r.pages_skipped), (32, 0));
}

#[tokio::test]
async fn plan_errors_never_touch_the_board() {
    let part = m32u4();
    let mut im = Image::new();
    im.insert(0x8000, &[1]).unwrap();
    let mut p = sim(part, false, Fault::None);
    let (r, _) = run(&mut p, &JobPlan::new(part, im)).await;
    assert_eq!(r.failure_class, Some(FailureClass::Config));
    assert_eq!(r.result, JobResult::Error);
    assert!(r.message.unwrap().contains("0x8001"));
    assert!(r.steps.is_empty());
    assert_eq!(p.target().stats().spi_commands, 0);

    let m32a = part::find("atmega32a").unwrap();
    let mut plan = JobPlan::new(m32a, Image::new());
    plan.fuses.extended = Some(0xFF);
    let (r, _) = run(&mut sim(m32a, false, Fault::None), &plan).await;
    assert_eq!(r.failure_class, Some(FailureClass::Config));
    assert!(r.message.unwrap().contains("no extended fuse"));
}

/// A programmer like ArduinoISP: it does not check the Programming Enable echo, so a missing
/// target only shows in the signature, which the job must re-read and then reject.
struct NoEchoCheck(SimProgrammer);

#[async_trait]
impl Programmer for NoEchoCheck {
    fn info(&self) -> ProgrammerInfo {
        self.0.info()
    }
    async fn open(&mut self) -> ProgResult<()> {
        self.0.open().await
    }
    async fn enter_progmode(&mut self, part: &'static Part) -> ProgResult<()> {
        if self.0.enter_progmode(part).await.is_err() {
            self.0.target().set_reset(true);
        }
        Ok(())
    }
    async fn leave_progmode(&mut self) -> ProgResult<()> {
        self.0.leave_progmode().await
    }
    async fn spi(&mut self, cmd: Cmd) -> ProgResult<Cmd> {
        self.0.spi(cmd).await
    }
}

#[tokio::test]
async fn blank_signature_is_retried_then_no_target() {
    let part = m32u4();
    for (fault, shown) in [("no-target", "0x000000"), ("no-target-ff", "0xFFFFFF")] {
        let mut p = NoEchoCheck(sim(part, false, Fault::parse(fault).unwrap()));
        let (r, _) = run(&mut p, &JobPlan::new(part, keyboard_image())).await;
        assert_eq!(r.failure_class, Some(FailureClass::NoTarget));
        let msg = r.message.unwrap();
        assert!(msg.contains(&format!("signature {shown}")) && msg.contains("ISP cable"), "{msg}");
        // Three reads of three bytes each before giving up.
        assert!(p.0.target().stats().spi_commands >= 9);
    }
}

/// A driver that stops answering mid-verify: the step's own bound ends the job, as `timeout`.
struct HangsOnRead(SimProgrammer);

#[async_trait]
impl Programmer for HangsOnRead {
    fn info(&self) -> ProgrammerInfo {
        self.0.info()
    }
    async fn open(&mut self) -> ProgResult<()> {
        self.0.open().await
    }
    async fn enter_progmode(&mut self, part: &'static Part) -> ProgResult<()> {
        self.0.enter_progmode(part).await
    }
    async fn leave_progmode(&mut self) -> ProgResult<()> {
        self.0.leave_progmode().await
    }
    async fn spi(&mut self, cmd: Cmd) -> ProgResult<Cmd> {
        self.0.spi(cmd).await
    }
    async fn read_flash(&mut self, _part: &'static Part, _addr: u32, _len: usize) -> ProgResult<Vec<u8>> {
        futures::future::pending().await
    }
}

#[tokio::test]
async fn a_hung_driver_times_out() {
    let part = m32u4();
    let mut im = Image::new();
    im.insert(0, &[0x12; 16]).unwrap();
    let mut p = HangsOnRead(sim(part, false, Fault::None));
    let (r, _) = run(&mut p, &JobPlan::new(part, im)).await;
    assert_eq!(r.failure_class, Some(FailureClass::Timeout));
    assert_eq!(r.result, JobResult::Error);
    assert!(r.message.unwrap().contains("verify step"));
    assert!(!p.0.target().reset_asserted(), "cleanup still released RESET");
}

#[tokio::test]
async fn read_returns_the_whole_flash() {
    let part = m32u4();
    let image = keyboard_image();
    let mut p = sim(part, false, Fault::None);
    let (r, _) = run(&mut p, &JobPlan::new(part, image.clone())).await;
    assert!(r.passed());
    let mut sink = |_e: JobEvent| {};
    let (rr, data) = run_read(&mut p, part, &mut sink).await;
    assert!(rr.passed(), "{:?}", rr.message);
    assert_eq!(data.unwrap(), image.to_flat(part.flash_size, 0xFF));

    let mut p = sim(part, false, Fault::parse("wrong-chip").unwrap());
    let (rr, data) = run_read(&mut p, part, &mut sink).await;
    assert_eq!(rr.failure_class, Some(FailureClass::WrongChip));
    assert!(data.is_none());
}

/// A programmer whose erase does not blank the flash (a bootloader erases page by page as it
/// writes): the job must write blank pages too.
struct EraseKeepsFlash(SimProgrammer);

#[async_trait]
impl Programmer for EraseKeepsFlash {
    fn info(&self) -> ProgrammerInfo {
        self.0.info()
    }
    async fn open(&mut self) -> ProgResult<()> {
        self.0.open().await
    }
    async fn enter_progmode(&mut self, part: &'static Part) -> ProgResult<()> {
        self.0.enter_progmode(part).await
    }
    async fn leave_progmode(&mut self) -> ProgResult<()> {
        self.0.leave_progmode().await
    }
    async fn spi(&mut self, cmd: Cmd) -> ProgResult<Cmd> {
        self.0.spi(cmd).await
    }
    fn erase_clears_flash(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn blank_pages_are_written_when_erase_does_not_blank() {
    let part = m32u4();
    let mut p = EraseKeepsFlash(sim(part, false, Fault::None));
    let (r, _) = run(&mut p, &JobPlan::new(part, keyboard_image())).await;
    assert_eq!(r.result, JobResult::Pass, "{:?}", r.message);
    assert_eq!((r.pages_written, r.pages_skipped), (32, 0));
}
