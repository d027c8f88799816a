//! One board's programming job: connect → identify → read fuses → erase → program → verify →
//! EEPROM → fuses → lock → leave, on any [`Programmer`].
//!
//! Every step is timed, bounded by a timeout derived from its work size, and reported through
//! [`JobEvent`]s; the outcome is a [`JobReport`] (what `flash --json` prints and the station
//! records). The job never panics (a panicking driver becomes an `internal` error) and always
//! tries to leave programming mode and close the programmer.
//!
//! Retries happen only where they are safe: opening the programmer, and reading the signature
//! (avrdude's retry when it reads all 0x00/0xFF). A verify mismatch is re-read once, only to
//! tell a flaky contact (two reads disagree → `communication`) from a bad board (both reads
//! agree → `verify_flash`).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde::Serialize;

use crate::error::{FailureClass, ProgError, ProgResult};
use crate::image::Image;
use crate::part::{self, FuseKind, FuseSet, Part};
use crate::programmer::{Programmer, ProgrammerInfo};
use crate::verify::VerifyPolicy;

/// Attempts at opening the programmer before the connect step fails.
pub const CONNECT_ATTEMPTS: u32 = 3;
/// Signature reads before a blank (0x000000/0xFFFFFF) or unstable signature is final.
pub const SIGNATURE_ATTEMPTS: usize = 3;

/// Bound on one `Programmer::open` attempt.
const CONNECT_ATTEMPT_BOUND: Duration = Duration::from_secs(10);
/// Bound on steps whose work does not depend on the image (identify, fuses, lock, leave).
const FIXED_STEP_BOUND: Duration = Duration::from_secs(20);
/// Bound on the best-effort cleanup after a failure.
const CLEANUP_BOUND: Duration = Duration::from_secs(5);
/// Per-byte allowance in sized steps: one four-byte instruction at the slowest SCK (8 kHz) takes
/// 4 ms, a byte over a 19200-baud STK500 link well under 1 ms.
const PER_BYTE: Duration = Duration::from_millis(5);

/// What to do to one board.
#[derive(Debug, Clone)]
pub struct JobPlan {
    pub part: &'static Part,
    /// Flash contents (byte addresses).
    pub image: Image,
    /// Fuses to write (and verify under the part's masks).
    pub fuses: FuseSet,
    /// Lock byte to write last.
    pub lock: Option<u8>,
    pub verify: VerifyPolicy,
    /// EEPROM contents to write and verify.
    pub eeprom: Option<Image>,
    /// Skip flash pages that are all 0xFF after chip erase (they already read as 0xFF).
    pub skip_blank_pages: bool,
}

impl JobPlan {
    /// Program `image` into `part`: full verify, no fuses, no lock, no EEPROM, blank pages skipped.
    pub fn new(part: &'static Part, image: Image) -> Self {
        JobPlan {
            part,
            image,
            fuses: FuseSet::default(),
            lock: None,
            verify: VerifyPolicy::Full,
            eeprom: None,
            skip_blank_pages: true,
        }
    }

    /// Check the plan against the part before anything touches a board.
    pub fn validate(&self) -> ProgResult<()> {
        let part = self.part;
        if let Some(end) = self.image.end_addr() {
            if end > part.flash_size as u64 {
                return Err(ProgError::with_hint(
                    FailureClass::Config,
                    format!(
                        "the image reaches 0x{end:X} but {} has only 0x{:X} bytes of flash",
                        part.name, part.flash_size
                    ),
                ));
            }
        }
        if let Some(end) = self.eeprom.as_ref().and_then(Image::end_addr) {
            if end > part.eeprom_size as u64 {
                return Err(ProgError::with_hint(
                    FailureClass::Config,
                    format!("the EEPROM image reaches 0x{end:X} but {} has only {} bytes of EEPROM", part.name, part.eeprom_size),
                ));
            }
        }
        for k in FuseKind::ALL {
            if self.fuses.get(k).is_some() && part.fuse_masks.get(k).is_none() {
                return Err(ProgError::with_hint(FailureClass::Config, format!("{} has no {k} fuse", part.name)));
            }
        }
        Ok(())
    }
}

/// The steps of a job, in order. Names are stable (records and reports use them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Connect,
    Identify,
    ReadFuses,
    Erase,
    Program,
    Verify,
    Eeprom,
    Fuses,
    Lock,
    /// Read flash back (the `read` command).
    Read,
    Leave,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Identify => "identify",
            Step::ReadFuses => "read_fuses",
            Step::Erase => "erase",
            Step::Program => "program",
            Step::Verify => "verify",
            Step::Eeprom => "eeprom",
            Step::Fuses => "fuses",
            Step::Lock => "lock",
            Step::Read => "read",
            Step::Leave => "leave",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Progress of a job, as it happens.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    StepStarted { step: Step },
    StepFinished { step: Step, ms: u64 },
    StepFailed { step: Step, ms: u64, class: FailureClass, message: String },
    /// `done` of `total` bytes of the step's work.
    Progress { step: Step, done: u64, total: u64 },
    /// Something an operator may want to know that is not a failure ("lowered SCK to 93.75 kHz").
    Note { step: Step, message: String },
}

/// Outcome of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobResult {
    /// Everything written and verified.
    Pass,
    /// The board's fault (no target, wrong chip, verify mismatch, flaky contact…).
    Fail,
    /// The equipment's or configuration's fault (programmer gone, timeout, cannot open…).
    Error,
}

impl JobResult {
    pub fn as_str(self) -> &'static str {
        match self {
            JobResult::Pass => "pass",
            JobResult::Fail => "fail",
            JobResult::Error => "error",
        }
    }

    /// Whether a failure of this class is the board's (`fail`) or the equipment's (`error`).
    pub fn for_class(class: FailureClass) -> JobResult {
        match class {
            FailureClass::ProgrammerGone
            | FailureClass::Timeout
            | FailureClass::ProgrammerOpen
            | FailureClass::Config
            | FailureClass::Interrupted
            | FailureClass::Records
            | FailureClass::Internal => JobResult::Error,
            _ => JobResult::Fail,
        }
    }
}

/// How long one step took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepTiming {
    pub step: Step,
    pub ms: u64,
    pub ok: bool,
}

/// Everything a job found and did: `flash --json`'s output and the station's attempt record.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub programmer: ProgrammerInfo,
    /// Catalog id of the expected part.
    pub part: &'static str,
    /// Signature read, as six hex digits (`1E9587`), once identify got that far.
    pub signature: Option<String>,
    /// SPI clock the programmer settled on, when it reports one.
    pub sck_hz: Option<u32>,
    /// Raw fuse bytes read before anything was written (absent bits as the chip returns them).
    #[serde(serialize_with = "ser_fuses")]
    pub fuses_before: FuseSet,
    #[serde(serialize_with = "ser_opt_hex")]
    pub lock_before: Option<u8>,
    /// Fuse bytes read back after the fuse step.
    #[serde(serialize_with = "ser_fuses")]
    pub fuses_after: FuseSet,
    #[serde(serialize_with = "ser_opt_hex")]
    pub lock_after: Option<u8>,
    pub verify: VerifyPolicy,
    /// Flash bytes programmed (whole pages written).
    pub bytes_written: u64,
    pub pages_written: u32,
    /// Pages of the image left out because they are all 0xFF (already so after erase).
    pub pages_skipped: u32,
    /// Flash bytes read back and compared.
    pub bytes_verified: u64,
    pub eeprom_bytes_written: u64,
    pub steps: Vec<StepTiming>,
    pub total_ms: u64,
    pub result: JobResult,
    pub failure_class: Option<FailureClass>,
    /// Operator-facing: what happened and what to check.
    pub message: Option<String>,
    pub notes: Vec<String>,
}

impl JobReport {
    /// An empty report (result `error` until a job fills it in).
    pub fn new(programmer: ProgrammerInfo, part: &'static Part, verify: VerifyPolicy) -> Self {
        JobReport {
            programmer,
            part: part.id,
            signature: None,
            sck_hz: None,
            fuses_before: FuseSet::default(),
            lock_before: None,
            fuses_after: FuseSet::default(),
            lock_after: None,
            verify,
            bytes_written: 0,
            pages_written: 0,
            pages_skipped: 0,
            bytes_verified: 0,
            eeprom_bytes_written: 0,
            steps: Vec::new(),
            total_ms: 0,
            result: JobResult::Error,
            failure_class: None,
            message: None,
            notes: Vec::new(),
        }
    }

    /// The report of a job that could not start because the programmer could not be built or
    /// opened (`err`, usually `programmer_open`): no step ran.
    pub fn not_started(programmer: ProgrammerInfo, part: &'static Part, verify: VerifyPolicy, err: ProgError) -> Self {
        let mut r = JobReport::new(programmer, part, verify);
        r.result = JobResult::for_class(err.class);
        r.failure_class = Some(err.class);
        r.message = Some(err.message);
        r
    }

    /// Milliseconds of a step, if it ran.
    pub fn step_ms(&self, step: Step) -> Option<u64> {
        self.steps.iter().find(|s| s.step == step).map(|s| s.ms)
    }

    pub fn passed(&self) -> bool {
        self.result == JobResult::Pass
    }
}

fn ser_opt_hex<S: serde::Serializer>(v: &Option<u8>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_str(&format!("0x{b:02X}")),
        None => s.serialize_none(),
    }
}

fn ser_fuses<S: serde::Serializer>(f: &FuseSet, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(3))?;
    for k in FuseKind::ALL {
        m.serialize_entry(k.name(), &f.get(k).map(|b| format!("0x{b:02X}")))?;
    }
    m.end()
}

/// Six hex digits: `1E9587`.
pub fn signature_hex(sig: [u8; 3]) -> String {
    format!("{:02X}{:02X}{:02X}", sig[0], sig[1], sig[2])
}

/// Job state shared by the steps: the event sink and the report being filled.
struct Ctx<'a> {
    on_event: &'a mut (dyn FnMut(JobEvent) + Send),
    report: JobReport,
}

impl Ctx<'_> {
    fn emit(&mut self, e: JobEvent) {
        (self.on_event)(e);
    }

    fn note(&mut self, step: Step, message: String) {
        tracing::info!(step = step.name(), "{message}");
        self.report.notes.push(message.clone());
        self.emit(JobEvent::Note { step, message });
    }

    fn begin(&mut self, step: Step) -> Instant {
        self.emit(JobEvent::StepStarted { step });
        Instant::now()
    }

    fn end<T>(&mut self, prog: &mut dyn Programmer, step: Step, t0: Instant, r: ProgResult<T>) -> ProgResult<T> {
        for n in prog.take_notes() {
            self.note(step, n);
        }
        let ms = t0.elapsed().as_millis() as u64;
        self.report.steps.push(StepTiming { step, ms, ok: r.is_ok() });
        match &r {
            Ok(_) => self.emit(JobEvent::StepFinished { step, ms }),
            Err(e) => {
                tracing::warn!(step = step.name(), class = e.class.as_str(), "{}", e.message);
                self.emit(JobEvent::StepFailed { step, ms, class: e.class, message: e.message.clone() })
            }
        }
        r
    }
}

/// Run `fut` under a timeout, turning a panic into an `internal` error.
async fn guarded<T>(step: Step, bound: Duration, fut: impl Future<Output = ProgResult<T>>) -> ProgResult<T> {
    match tokio::time::timeout(bound, AssertUnwindSafe(fut).catch_unwind()).await {
        Err(_) => Err(ProgError::timeout(format!("{step} step did not finish within {:.0} s", bound.as_secs_f64()))),
        Ok(Err(panic)) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            Err(ProgError::with_hint(FailureClass::Internal, format!("{step} step: driver failed unexpectedly ({what})")))
        }
        Ok(Ok(r)) => r,
    }
}

/// One timed, bounded step: `step!(ctx, prog, Step::X, bound, future)` → `T`, or returns the error.
macro_rules! step {
    ($ctx:expr, $prog:expr, $step:expr, $bound:expr, $fut:expr) => {{
        let t0 = $ctx.begin($step);
        let r = guarded($step, $bound, $fut).await;
        $ctx.end(&mut *$prog, $step, t0, r)?
    }};
}

fn sized_bound(bytes: u64) -> Duration {
    Duration::from_secs(10) + PER_BYTE * bytes.min(u32::MAX as u64) as u32
}

/// Run one board's job. Never panics; always tries to leave programming mode and close.
pub async fn run_job(prog: &mut dyn Programmer, plan: &JobPlan, on_event: &mut (dyn FnMut(JobEvent) + Send)) -> JobReport {
    let start = Instant::now();
    let mut ctx = Ctx { on_event, report: JobReport::new(prog.info(), plan.part, plan.verify) };
    let mut connected = false;
    let outcome = match plan.validate() {
        Err(e) => Err(e),
        Ok(()) => job_steps(prog, plan, &mut ctx, &mut connected).await,
    };
    finish(prog, ctx, outcome, connected, start).await
}

async fn finish(prog: &mut dyn Programmer, mut ctx: Ctx<'_>, outcome: ProgResult<()>, connected: bool, start: Instant) -> JobReport {
    if outcome.is_err() && connected {
        // Best effort: release RESET so the board is left as found. Errors here add nothing.
        let _ = guarded(Step::Leave, CLEANUP_BOUND, prog.leave_progmode()).await;
    }
    if connected {
        if let Err(e) = guarded(Step::Leave, CLEANUP_BOUND, prog.close()).await {
            tracing::warn!("closing {}: {}", prog.info(), e.message);
        }
    }
    for n in prog.take_notes() {
        ctx.note(Step::Leave, n);
    }
    let mut report = ctx.report;
    report.total_ms = start.elapsed().as_millis() as u64;
    match outcome {
        Ok(()) => report.result = JobResult::Pass,
        Err(e) => {
            report.result = JobResult::for_class(e.class);
            report.failure_class = Some(e.class);
            report.message = Some(e.message);
        }
    }
    report
}

async fn job_steps(prog: &mut dyn Programmer, plan: &JobPlan, ctx: &mut Ctx<'_>, connected: &mut bool) -> ProgResult<()> {
    let part = plan.part;
    step!(ctx, prog, Step::Connect, CONNECT_ATTEMPT_BOUND * (CONNECT_ATTEMPTS + 1), connect(prog, ctx));
    *connected = true;
    step!(ctx, prog, Step::Identify, FIXED_STEP_BOUND, identify(prog, part, ctx));
    step!(ctx, prog, Step::ReadFuses, FIXED_STEP_BOUND, read_fuses_before(prog, part, ctx));
    step!(ctx, prog, Step::Erase, FIXED_STEP_BOUND, prog.chip_erase(part));

    let ps = part.flash_page_size;
    let pages = plan.image.pages(ps);
    // Blank pages can be left out only when the erase really blanked the flash (a bootloader
    // erases page by page as it writes).
    let skip_blank = plan.skip_blank_pages && prog.erase_clears_flash();
    let written: Vec<bool> = pages.iter().map(|(_, d)| !(skip_blank && d.iter().all(|b| *b == 0xFF))).collect();
    let to_write = written.iter().filter(|w| **w).count() as u64 * ps as u64;
    step!(ctx, prog, Step::Program, sized_bound(to_write), program(prog, part, &pages, &written, ctx));

    if plan.verify != VerifyPolicy::None {
        let chosen: Vec<&(u32, Vec<u8>)> = match plan.verify {
            VerifyPolicy::Written => pages.iter().zip(&written).filter(|(_, w)| **w).map(|(p, _)| p).collect(),
            _ => pages.iter().collect(),
        };
        let bytes = chosen.len() as u64 * ps as u64;
        step!(ctx, prog, Step::Verify, sized_bound(bytes * 2), verify_flash(prog, part, &chosen, ctx));
    }
    if let Some(ee) = &plan.eeprom {
        let n = ee.len() as u64;
        let per = Duration::from_micros(part.delays.eeprom_us as u64) + PER_BYTE * 2;
        let bound = Duration::from_secs(10) + per * n.min(u32::MAX as u64) as u32;
        step!(ctx, prog, Step::Eeprom, bound, eeprom(prog, part, ee, ctx));
    }
    step!(ctx, prog, Step::Fuses, FIXED_STEP_BOUND, fuses(prog, part, &plan.fuses, ctx));
    step!(ctx, prog, Step::Lock, FIXED_STEP_BOUND, lock(prog, part, plan.lock, ctx));
    step!(ctx, prog, Step::Leave, FIXED_STEP_BOUND, prog.leave_progmode());
    Ok(())
}

/// Open the programmer, retried a bounded number of times (opening is always safe to repeat).
async fn connect(prog: &mut dyn Programmer, ctx: &mut Ctx<'_>) -> ProgResult<()> {
    let mut attempt = 1;
    loop {
        let e = match tokio::time::timeout(CONNECT_ATTEMPT_BOUND, prog.open()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(_) => ProgError::timeout(format!("opening {}", prog.info())),
        };
        let retryable = !matches!(e.class, FailureClass::Config | FailureClass::Internal);
        if attempt >= CONNECT_ATTEMPTS || !retryable {
            return Err(e);
        }
        ctx.note(Step::Connect, format!("connect attempt {attempt} failed ({}); retrying", e.message));
        tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
        attempt += 1;
    }
}

/// Enter programming mode and check the signature, re-reading as avrdude does.
async fn identify(prog: &mut dyn Programmer, part: &'static Part, ctx: &mut Ctx<'_>) -> ProgResult<()> {
    prog.enter_progmode(part).await?;
    ctx.report.sck_hz = prog.sck_hz();
    let mut reads: Vec<[u8; 3]> = Vec::new();
    for attempt in 0..SIGNATURE_ATTEMPTS {
        let sig = prog.read_signature().await?;
        ctx.report.signature = Some(signature_hex(sig));
        if sig == part.signature {
            if attempt > 0 {
                ctx.note(Step::Identify, format!("signature read {} time(s) before it came back right", attempt + 1));
            }
            return Ok(());
        }
        let blank = sig == [0; 3] || sig == [0xFF; 3];
        if !blank && reads.last() == Some(&sig) {
            return Err(wrong_chip(part, sig));
        }
        reads.push(sig);
    }
    let last = *reads.last().unwrap_or(&[0; 3]);
    if last == [0; 3] || last == [0xFF; 3] {
        let fixed_sck = if prog.info().kind.fixed_sck() {
            "; if cable and power are right, the chip may run from a slow clock (CKDIV8 on a fresh chip) that this programmer's fixed SCK cannot reach — use a USBasp, which lowers SCK"
        } else {
            ""
        };
        return Err(ProgError::new(
            FailureClass::NoTarget,
            format!(
                "signature 0x{}: no target answered — check the ISP cable and target power{fixed_sck}",
                signature_hex(last)
            ),
        ));
    }
    let all: Vec<String> = reads.iter().map(|s| format!("0x{}", signature_hex(*s))).collect();
    Err(ProgError::comm(format!("signature reads disagree ({})", all.join(", "))))
}

fn wrong_chip(part: &'static Part, sig: [u8; 3]) -> ProgError {
    let found = match part::by_signature(sig) {
        Some(p) => format!("signature 0x{} is an {}", signature_hex(sig), p.name),
        None => format!("signature 0x{} matches no known part", signature_hex(sig)),
    };
    ProgError::with_hint(
        FailureClass::WrongChip,
        format!("{found}, expected {} (0x{})", part.name, signature_hex(part.signature)),
    )
}

async fn read_fuses_before(prog: &mut dyn Programmer, part: &'static Part, ctx: &mut Ctx<'_>) -> ProgResult<()> {
    for k in FuseKind::ALL {
        if part.fuse_masks.get(k).is_some() {
            let v = prog.read_fuse(part, k).await?;
            ctx.report.fuses_before.set(k, v);
        }
    }
    ctx.report.lock_before = Some(prog.read_lock(part).await?);
    Ok(())
}

async fn program(
    prog: &mut dyn Programmer,
    part: &'static Part,
    pages: &[(u32, Vec<u8>)],
    written: &[bool],
    ctx: &mut Ctx<'_>,
) -> ProgResult<()> {
    let ps = part.flash_page_size as u64;
    let total = written.iter().filter(|w| **w).count() as u64 * ps;
    let mut done = 0;
    ctx.emit(JobEvent::Progress { step: Step::Program, done, total });
    for ((addr, data), w) in pages.iter().zip(written) {
        if !*w {
            ctx.report.pages_skipped += 1;
            continue;
        }
        prog.write_flash_page(part, *addr, data).await?;
        ctx.report.pages_written += 1;
        ctx.report.bytes_written += ps;
        done += ps;
        ctx.emit(JobEvent::Progress { step: Step::Program, done, total });
    }
    Ok(())
}

/// Merge page-aligned `(addr, bytes)` pages into contiguous runs.
fn runs(pages: &[&(u32, Vec<u8>)]) -> Vec<(u32, Vec<u8>)> {
    let mut out: Vec<(u32, Vec<u8>)> = Vec::new();
    for (addr, data) in pages.iter().map(|p| (p.0, &p.1)) {
        match out.last_mut() {
            Some((a, d)) if *a as u64 + d.len() as u64 == addr as u64 => d.extend_from_slice(data),
            _ => out.push((addr, data.clone())),
        }
    }
    out
}

async fn verify_flash(prog: &mut dyn Programmer, part: &'static Part, pages: &[&(u32, Vec<u8>)], ctx: &mut Ctx<'_>) -> ProgResult<()> {
    let block = prog.read_block_size().max(1);
    let total: u64 = pages.iter().map(|p| p.1.len() as u64).sum();
    let mut done = 0u64;
    ctx.emit(JobEvent::Progress { step: Step::Verify, done, total });
    for (start, expected) in runs(pages) {
        for (i, want) in expected.chunks(block).enumerate() {
            let addr = start + (i * block) as u32;
            let got = prog.read_flash(part, addr, want.len()).await?;
            if got != want {
                let again = prog.read_flash(part, addr, want.len()).await?;
                return Err(mismatch("flash", FailureClass::VerifyFlash, addr, want, &got, &again));
            }
            done += want.len() as u64;
            ctx.report.bytes_verified += want.len() as u64;
            ctx.emit(JobEvent::Progress { step: Step::Verify, done, total });
        }
    }
    Ok(())
}

/// Describe a read-back mismatch: unstable reads are a contact problem, stable ones the board's.
fn mismatch(memory: &str, class: FailureClass, addr: u32, want: &[u8], first: &[u8], second: &[u8]) -> ProgError {
    if first != second {
        let at = first.iter().zip(second).position(|(a, b)| a != b).unwrap_or(0);
        let (a, b) = (first.get(at).copied().unwrap_or(0), second.get(at).copied().unwrap_or(0));
        return ProgError::comm(format!(
            "{memory} read-back unstable at 0x{:04X}: read 0x{a:02X}, then 0x{b:02X}",
            addr as usize + at
        ));
    }
    let diffs: Vec<usize> = want.iter().zip(first).enumerate().filter(|(_, (w, g))| w != g).map(|(i, _)| i).collect();
    let at = diffs.first().copied().unwrap_or(want.len().min(first.len()));
    let shown_got = first.get(at).map(|b| format!("0x{b:02X}")).unwrap_or_else(|| "nothing".into());
    ProgError::with_hint(
        class,
        format!(
            "{memory} verify failed at 0x{:04X}: expected 0x{:02X}, read {shown_got} ({} byte(s) differ in the block at 0x{addr:04X}, same on re-read)",
            addr as usize + at,
            want.get(at).copied().unwrap_or(0xFF),
            diffs.len().max(1),
        ),
    )
}

async fn eeprom(prog: &mut dyn Programmer, part: &'static Part, ee: &Image, ctx: &mut Ctx<'_>) -> ProgResult<()> {
    let total = ee.len() as u64 * 2;
    let mut done = 0;
    for (addr, data) in ee.segments() {
        prog.write_eeprom(part, addr, data).await?;
        ctx.report.eeprom_bytes_written += data.len() as u64;
        done += data.len() as u64;
        ctx.emit(JobEvent::Progress { step: Step::Eeprom, done, total });
    }
    for (addr, data) in ee.segments() {
        let got = prog.read_eeprom(part, addr, data.len()).await?;
        if got != data {
            let again = prog.read_eeprom(part, addr, data.len()).await?;
            return Err(mismatch("EEPROM", FailureClass::VerifyEeprom, addr, data, &got, &again));
        }
        done += data.len() as u64;
        ctx.emit(JobEvent::Progress { step: Step::Eeprom, done, total });
    }
    Ok(())
}

/// Write the requested fuses, then read every fuse back and verify the written ones under the
/// part's masks (bits that do not exist read back as anything).
async fn fuses(prog: &mut dyn Programmer, part: &'static Part, want: &FuseSet, ctx: &mut Ctx<'_>) -> ProgResult<()> {
    for k in FuseKind::ALL {
        if let Some(v) = want.get(k) {
            prog.write_fuse(part, k, v).await?;
        }
    }
    for k in FuseKind::ALL {
        let Some(mask) = part.fuse_masks.get(k) else { continue };
        let got = prog.read_fuse(part, k).await?;
        ctx.report.fuses_after.set(k, got);
        if let Some(v) = want.get(k) {
            if (got ^ v) & mask != 0 {
                let again = prog.read_fuse(part, k).await?;
                if again != got {
                    return Err(ProgError::comm(format!("{k} fuse read-back unstable: read 0x{got:02X}, then 0x{again:02X}")));
                }
                return Err(ProgError::with_hint(
                    FailureClass::VerifyFuse,
                    format!("{k} fuse: wrote 0x{v:02X}, read back 0x{got:02X} (bits that exist: 0x{mask:02X})"),
                ));
            }
        }
    }
    Ok(())
}

/// Write the lock byte (if any) and verify it under the part's lock mask; record the lock read.
async fn lock(prog: &mut dyn Programmer, part: &'static Part, want: Option<u8>, ctx: &mut Ctx<'_>) -> ProgResult<()> {
    if let Some(v) = want {
        prog.write_lock(part, v).await?;
    }
    let got = prog.read_lock(part).await?;
    ctx.report.lock_after = Some(got);
    if let Some(v) = want {
        if (got ^ v) & part.lock_mask != 0 {
            let again = prog.read_lock(part).await?;
            if again != got {
                return Err(ProgError::comm(format!("lock byte read-back unstable: read 0x{got:02X}, then 0x{again:02X}")));
            }
            return Err(ProgError::with_hint(
                FailureClass::VerifyLock,
                format!("lock byte: wrote 0x{v:02X}, read back 0x{got:02X} (bits that exist: 0x{:02X})", part.lock_mask),
            ));
        }
    }
    Ok(())
}

/// Read a part's whole flash (the `read` command): connect → identify → read → leave.
/// Returns the report (steps, signature, result) and, on success, the flash contents.
pub async fn run_read(
    prog: &mut dyn Programmer,
    part: &'static Part,
    on_event: &mut (dyn FnMut(JobEvent) + Send),
) -> (JobReport, Option<Vec<u8>>) {
    let start = Instant::now();
    let mut ctx = Ctx { on_event, report: JobReport::new(prog.info(), part, VerifyPolicy::None) };
    let mut connected = false;
    let mut data = None;
    let outcome = read_steps(prog, part, &mut ctx, &mut connected, &mut data).await;
    let report = finish(prog, ctx, outcome, connected, start).await;
    let data = if report.passed() { data } else { None };
    (report, data)
}

async fn read_steps(
    prog: &mut dyn Programmer,
    part: &'static Part,
    ctx: &mut Ctx<'_>,
    connected: &mut bool,
    out: &mut Option<Vec<u8>>,
) -> ProgResult<()> {
    step!(ctx, prog, Step::Connect, CONNECT_ATTEMPT_BOUND * (CONNECT_ATTEMPTS + 1), connect(prog, ctx));
    *connected = true;
    step!(ctx, prog, Step::Identify, FIXED_STEP_BOUND, identify(prog, part, ctx));
    let data = step!(ctx, prog, Step::Read, sized_bound(part.flash_size as u64), read_all(prog, part, ctx));
    *out = Some(data);
    step!(ctx, prog, Step::Leave, FIXED_STEP_BOUND, prog.leave_progmode());
    Ok(())
}

async fn read_all(prog: &mut dyn Programmer, part: &'static Part, ctx: &mut Ctx<'_>) -> ProgResult<Vec<u8>> {
    let block = prog.read_block_size().max(1) as u32;
    let total = part.flash_size as u64;
    let mut out = Vec::with_capacity(part.flash_size as usize);
    let mut addr = 0u32;
    while addr < part.flash_size {
        let n = block.min(part.flash_size - addr);
        let got = prog.read_flash(part, addr, n as usize).await?;
        if got.len() != n as usize {
            return Err(ProgError::comm(format!("flash read at 0x{addr:04X}: asked for {n} bytes, got {}", got.len())));
        }
        out.extend_from_slice(&got);
        addr += n;
        ctx.emit(JobEvent::Progress { step: Step::Read, done: addr as u64, total });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: T) {}

    /// The station spawns jobs on tokio tasks: the job future must be `Send`.
    #[test]
    fn job_future_is_send() {
        let part = part::find("atmega32u4").unwrap();
        let mut p = crate::programmer::SimProgrammer::new(part, crate::sim::SimOptions::default(), "s");
        let plan = JobPlan::new(part, Image::new());
        let mut sink = |_e: JobEvent| {};
        assert_send(run_job(&mut p, &plan, &mut sink));
    }

    #[test]
    fn mismatch_tells_flaky_from_stable() {
        let e = mismatch("flash", FailureClass::VerifyFlash, 0x100, &[1, 2, 3], &[1, 0, 3], &[1, 0, 3]);
        assert_eq!(e.class, FailureClass::VerifyFlash);
        assert!(e.message.contains("0x0101") && e.message.contains("expected 0x02, read 0x00"), "{e}");
        let e = mismatch("flash", FailureClass::VerifyFlash, 0x100, &[1, 2, 3], &[1, 0, 3], &[1, 2, 3]);
        assert_eq!(e.class, FailureClass::Communication);
    }

    #[test]
    fn results_split_board_from_equipment() {
        assert_eq!(JobResult::for_class(FailureClass::VerifyFlash), JobResult::Fail);
        assert_eq!(JobResult::for_class(FailureClass::Communication), JobResult::Fail);
        assert_eq!(JobResult::for_class(FailureClass::ProgrammerGone), JobResult::Error);
        assert_eq!(JobResult::for_class(FailureClass::Timeout), JobResult::Error);
    }
}
