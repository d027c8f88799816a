//! The `avrdude` fallback: for programmer types flashline has no native driver for, run an
//! installed avrdude on the whole job and read its output into the same [`JobReport`] and
//! failure classes the native drivers produce.
//!
//! One avrdude call does the whole job, in this order (avrdude runs `-U` operations in order):
//! read fuses and lock (before), write flash (avrdude erases first unless the plan writes no
//! flash), EEPROM, fuses, lock, then read fuses and lock again (after). avrdude verifies every
//! write itself unless verification is off (`-V`). Fuse and lock reads go to stdout (`:r:-:h`),
//! everything else avrdude says goes to stderr and is classified line by line.
//!
//! The child is bounded by a timeout sized to the work, and killed when the serial port it
//! talks to vanishes (avrdude 7.1 spins instead of failing when a tty disappears mid-write).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use regex::Regex;
use tokio::io::AsyncReadExt;

use crate::error::{FailureClass, ProgError, ProgResult};
use crate::isp::Cmd;
use crate::hex;
use crate::job::{signature_hex, JobEvent, JobPlan, JobReport, JobResult, Step, StepTiming};
use crate::part::{FuseKind, FuseSet};
use crate::programmer::{Programmer, ProgrammerInfo, ProgrammerKind, ProgrammerSpec};
use crate::verify::VerifyPolicy;

/// How to run avrdude.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AvrdudeOptions {
    /// The avrdude binary (default `avrdude` from `PATH`).
    pub binary: PathBuf,
    /// An avrdude.conf to use instead of the installed one (`-C`).
    pub config: Option<PathBuf>,
    /// Fixed part of the time bound; a per-byte allowance is added (see [`job_timeout`]).
    pub base_timeout: Duration,
}

impl Default for AvrdudeOptions {
    fn default() -> Self {
        AvrdudeOptions { binary: PathBuf::from("avrdude"), config: None, base_timeout: Duration::from_secs(30) }
    }
}

/// Per byte of flash/EEPROM: written and read back over a 19200-baud line, with margin.
const PER_BYTE: Duration = Duration::from_millis(2);

/// Time bound for an avrdude run of `plan`.
pub fn job_timeout(opts: &AvrdudeOptions, plan: &JobPlan) -> Duration {
    let bytes = plan.image.len() + plan.eeprom.as_ref().map_or(0, |e| e.len());
    opts.base_timeout + PER_BYTE * bytes.min(u32::MAX as usize) as u32 * 2
}

/// Files the command line refers to (kept alive while avrdude runs).
pub struct JobFiles {
    _dir: tempfile::TempDir,
    pub flash: Option<PathBuf>,
    pub eeprom: Option<PathBuf>,
}

impl JobFiles {
    /// Write the plan's images as Intel HEX into a fresh temporary directory.
    pub fn write(plan: &JobPlan) -> std::io::Result<JobFiles> {
        let dir = tempfile::Builder::new().prefix("flashline-avrdude").tempdir()?;
        let flash = if plan.image.is_empty() {
            None
        } else {
            let p = dir.path().join("flash.hex");
            hex::write_file(&p, &plan.image, 32)?;
            Some(p)
        };
        let eeprom = match &plan.eeprom {
            Some(e) if !e.is_empty() => {
                let p = dir.path().join("eeprom.hex");
                hex::write_file(&p, e, 32)?;
                Some(p)
            }
            _ => None,
        };
        Ok(JobFiles { _dir: dir, flash, eeprom })
    }
}

/// The fuse/lock memories read before and after, in command-line order.
fn readable_memories(plan: &JobPlan) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = FuseKind::ALL.iter().filter(|k| plan.part.fuse_masks.get(**k).is_some()).map(|k| k.avrdude_name()).collect();
    v.push("lock");
    v
}

/// avrdude's arguments for `plan` (without the binary).
pub fn command_line(spec: &ProgrammerSpec, opts: &AvrdudeOptions, plan: &JobPlan, files: &JobFiles) -> Result<Vec<String>, ProgError> {
    let programmer = spec.avrdude_programmer.as_deref().filter(|s| !s.trim().is_empty()).ok_or_else(|| {
        ProgError::with_hint(FailureClass::Config, format!("slot {}: the avrdude fallback needs avrdude's programmer id (-c), e.g. `avrisp`", spec.name))
    })?;
    let mut a: Vec<String> = Vec::new();
    if let Some(c) = &opts.config {
        a.push("-C".into());
        a.push(c.display().to_string());
    }
    a.extend(["-c".into(), programmer.to_string(), "-p".into(), plan.part.avrdude_id().to_string()]);
    if let Some(p) = &spec.port {
        a.push("-P".into());
        a.push(p.display().to_string());
    }
    if let Some(b) = spec.baud {
        a.push("-b".into());
        a.push(b.to_string());
    }
    if plan.verify == VerifyPolicy::None {
        a.push("-V".into());
    }
    let mems = readable_memories(plan);
    for m in &mems {
        a.push("-U".into());
        a.push(format!("{m}:r:-:h"));
    }
    if let Some(f) = &files.flash {
        a.push("-U".into());
        a.push(format!("flash:w:{}:i", f.display()));
    }
    if let Some(f) = &files.eeprom {
        a.push("-U".into());
        a.push(format!("eeprom:w:{}:i", f.display()));
    }
    for k in FuseKind::ALL {
        if let Some(v) = plan.fuses.get(k) {
            a.push("-U".into());
            a.push(format!("{}:w:0x{v:02X}:m", k.avrdude_name()));
        }
    }
    if let Some(l) = plan.lock {
        a.push("-U".into());
        a.push(format!("lock:w:0x{l:02X}:m"));
    }
    for m in &mems {
        a.push("-U".into());
        a.push(format!("{m}:r:-:h"));
    }
    Ok(a)
}

/// What avrdude's output says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AvrdudeOutcome {
    /// Last signature avrdude reported.
    pub signature: Option<[u8; 3]>,
    pub flash_written: u64,
    pub flash_verified: u64,
    pub eeprom_written: u64,
    /// Values read to stdout by `:r:-:h`, in order.
    pub reads: Vec<u8>,
    /// The first failure avrdude reported, classified.
    pub failure: Option<ProgError>,
}

/// Classify avrdude's stderr (and collect its stdout reads).
pub fn parse_output(stdout: &str, stderr: &str, expected_sig: [u8; 3]) -> AvrdudeOutcome {
    let re_sig = Regex::new(r"(?i)device signature = 0x([0-9a-f]{6})").expect("static regex");
    let re_written = Regex::new(r"(\d+) bytes? of (flash|eeprom) written").expect("static regex");
    let re_verified = Regex::new(r"(\d+) bytes? of flash verified").expect("static regex");
    let re_verifying = Regex::new(r"verifying (\w+) memory").expect("static regex");
    let re_mismatch7 = Regex::new(r"device 0x([0-9a-f]{2}) != input 0x([0-9a-f]{2}) at addr 0x([0-9a-f]+)").expect("static regex");
    let re_mismatch6 = Regex::new(r"first mismatch at byte 0x([0-9a-f]+)").expect("static regex");
    let re_hexline = Regex::new(r"^0x([0-9a-fA-F]{1,2})$").expect("static regex");

    let mut o = AvrdudeOutcome::default();
    let mut verifying = String::from("flash");
    let fail = |o: &mut AvrdudeOutcome, e: ProgError| {
        if o.failure.is_none() {
            o.failure = Some(e);
        }
    };
    for line in stdout.lines() {
        if let Some(c) = re_hexline.captures(line.trim()) {
            if let Ok(v) = u8::from_str_radix(&c[1], 16) {
                o.reads.push(v);
            }
        }
    }
    let lines: Vec<&str> = stderr.lines().collect();
    for (i, raw) in lines.iter().enumerate() {
        let line = raw.trim();
        let lower = line.to_ascii_lowercase();
        if let Some(c) = re_sig.captures(line) {
            if let Ok(v) = u32::from_str_radix(&c[1], 16) {
                o.signature = Some([(v >> 16) as u8, (v >> 8) as u8, v as u8]);
            }
        }
        if let Some(c) = re_written.captures(line) {
            let n: u64 = c[1].parse().unwrap_or(0);
            if &c[2] == "flash" {
                o.flash_written = n;
            } else {
                o.eeprom_written = n;
            }
        }
        if let Some(c) = re_verified.captures(line) {
            o.flash_verified = c[1].parse().unwrap_or(0);
        }
        if let Some(c) = re_verifying.captures(line) {
            verifying = c[1].to_string();
        }
        let mismatch = re_mismatch7.captures(line).map(|c| format!("at 0x{}: read 0x{}, expected 0x{}", &c[3], &c[1], &c[2])).or_else(|| {
            re_mismatch6.captures(line).map(|c| {
                let detail = lines.get(i + 1).map(|l| l.trim().to_string()).unwrap_or_default();
                format!("at 0x{} ({detail})", &c[1])
            })
        });
        if let Some(m) = mismatch {
            let class = match verifying.as_str() {
                "flash" => FailureClass::VerifyFlash,
                "eeprom" => FailureClass::VerifyEeprom,
                "lock" => FailureClass::VerifyLock,
                _ => FailureClass::VerifyFuse,
            };
            fail(&mut o, ProgError::with_hint(class, format!("avrdude: {verifying} verification failed {m}")));
            continue;
        }
        if lower.contains("invalid device signature") || lower.contains("expected signature for") {
            let sig = o.signature.unwrap_or([0; 3]);
            let e = if sig == [0; 3] || sig == [0xFF; 3] {
                ProgError::new(FailureClass::NoTarget, format!("avrdude: signature 0x{}: no target answered — check the ISP cable and target power", signature_hex(sig)))
            } else if sig != expected_sig {
                ProgError::with_hint(FailureClass::WrongChip, format!("avrdude: signature 0x{}, expected 0x{}", signature_hex(sig), signature_hex(expected_sig)))
            } else {
                ProgError::comm(format!("avrdude: {line}"))
            };
            fail(&mut o, e);
        } else if lower.contains("initialization failed") || lower.contains("unable to enter programming mode") || lower.contains("program enable: target doesn't answer") {
            fail(&mut o, ProgError::with_hint(FailureClass::ProgEnable, format!("avrdude: {line}")));
        } else if lower.contains("cannot open port") || lower.contains("can't open device") || lower.contains("unable to open programmer") || lower.contains("cannot set attributes for port") {
            fail(&mut o, ProgError::with_hint(FailureClass::ProgrammerOpen, format!("avrdude: {line}")));
        } else if lower.contains("cannot find programmer id") || lower.contains("can't open config file") || lower.contains("not found in config") || (lower.contains("part") && lower.contains("not found")) {
            fail(&mut o, ProgError::with_hint(FailureClass::Config, format!("avrdude: {line}")));
        } else if lower.contains("read error") || lower.contains("write error") || lower.contains("input/output error") || lower.contains("no such device") {
            fail(&mut o, ProgError::gone(format!("avrdude: {line}")));
        } else if lower.contains("programmer is not responding") || lower.contains("not in sync") || lower.contains("timeout") {
            fail(&mut o, ProgError::with_hint(FailureClass::Timeout, format!("avrdude: {line}")));
        } else if lower.contains("out of sync") || lower.contains("protocol expects") || lower.contains("cannot get into sync") {
            fail(&mut o, ProgError::comm(format!("avrdude: {line}")));
        }
    }
    o
}

/// Run `plan` through avrdude with the programmer `spec` describes (`spec.avrdude_programmer`
/// is avrdude's `-c` id). Never panics; every outcome is a report.
pub async fn run_job(spec: &ProgrammerSpec, opts: &AvrdudeOptions, plan: &JobPlan, on_event: &mut (dyn FnMut(JobEvent) + Send)) -> JobReport {
    let start = Instant::now();
    let info = ProgrammerInfo {
        kind: ProgrammerKind::Avrdude,
        identity: match (&spec.avrdude_programmer, &spec.port) {
            (Some(c), Some(p)) => format!("{c}:{}", p.display()),
            (Some(c), None) => c.clone(),
            _ => spec.name.clone(),
        },
    };
    let mut report = JobReport::new(info, plan.part, plan.verify);
    on_event(JobEvent::StepStarted { step: Step::Program });
    let outcome = run(spec, opts, plan, &mut report).await;
    let ms = start.elapsed().as_millis() as u64;
    report.total_ms = ms;
    report.steps.push(StepTiming { step: Step::Program, ms, ok: outcome.is_ok() });
    match outcome {
        Ok(()) => {
            report.result = JobResult::Pass;
            on_event(JobEvent::StepFinished { step: Step::Program, ms });
        }
        Err(e) => {
            on_event(JobEvent::StepFailed { step: Step::Program, ms, class: e.class, message: e.message.clone() });
            report.result = JobResult::for_class(e.class);
            report.failure_class = Some(e.class);
            report.message = Some(e.message);
        }
    }
    report
}

async fn run(spec: &ProgrammerSpec, opts: &AvrdudeOptions, plan: &JobPlan, report: &mut JobReport) -> Result<(), ProgError> {
    plan.validate()?;
    let files = JobFiles::write(plan).map_err(|e| ProgError::new(FailureClass::Internal, format!("writing avrdude's input files: {e}")))?;
    let args = command_line(spec, opts, plan, &files)?;
    let (status, stdout, stderr) = run_avrdude(opts, &args, job_timeout(opts, plan), spec.port.as_deref()).await?;
    let o = parse_output(&stdout, &stderr, plan.part.signature);

    report.signature = o.signature.map(signature_hex);
    report.bytes_written = o.flash_written;
    report.bytes_verified = o.flash_verified;
    report.eeprom_bytes_written = o.eeprom_written;
    let mems = readable_memories(plan);
    for (i, v) in o.reads.iter().enumerate() {
        let (before, idx) = (i < mems.len(), i % mems.len().max(1));
        match (mems.get(idx).copied(), before) {
            (Some("lock"), true) => report.lock_before = Some(*v),
            (Some("lock"), false) => report.lock_after = Some(*v),
            (Some(m), b) => {
                if let Some(k) = FuseKind::ALL.into_iter().find(|k| k.avrdude_name() == m) {
                    if b { report.fuses_before.set(k, *v) } else { report.fuses_after.set(k, *v) }
                }
            }
            (None, _) => {}
        }
    }
    if let Some(e) = o.failure {
        return Err(e);
    }
    if !status.success() {
        let last = stderr.lines().rev().map(str::trim).find(|l| !l.is_empty() && !l.contains("Thank you")).unwrap_or("no message");
        return Err(ProgError::with_hint(FailureClass::Internal, format!("avrdude exited with {status}: {last}")));
    }
    if report.signature.is_none() {
        report.notes.push("avrdude did not report the device signature".into());
    }
    Ok(())
}

/// Run avrdude with `args` under `bound`, stopping it if `port` vanishes; returns its exit
/// status, stdout and stderr.
pub async fn run_avrdude(opts: &AvrdudeOptions, args: &[String], bound: Duration, port: Option<&Path>) -> Result<(std::process::ExitStatus, String, String), ProgError> {
    tracing::info!("running {} {}", opts.binary.display(), args.join(" "));
    let mut child = tokio::process::Command::new(&opts.binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ProgError::with_hint(FailureClass::Config, format!("cannot run {}: {e} (is avrdude installed?)", opts.binary.display())))?;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let read_out = tokio::spawn(async move {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s).await;
        s
    });
    let read_err = tokio::spawn(async move {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s).await;
        s
    });
    let status = tokio::select! {
        s = child.wait() => Some(s.map_err(|e| ProgError::new(FailureClass::Internal, format!("waiting for avrdude: {e}")))?),
        _ = tokio::time::sleep(bound) => None,
        _ = port_vanished(port) => {
            let _ = child.kill().await;
            let _ = child.wait().await;
            return Err(ProgError::gone(format!("the port {} vanished while avrdude ran", port.map(|p| p.display().to_string()).unwrap_or_default())));
        }
    };
    let Some(status) = status else {
        let _ = child.kill().await;
        let _ = child.wait().await;
        return Err(ProgError::timeout(format!("avrdude did not finish within {} s", bound.as_secs())));
    };
    let stdout = String::from_utf8_lossy(&read_out.await.unwrap_or_default()).to_string();
    let stderr = String::from_utf8_lossy(&read_err.await.unwrap_or_default()).to_string();
    Ok((status, stdout, stderr))
}

/// Resolves once `port` (a device path) no longer exists; never when there is no path.
async fn port_vanished(port: Option<&Path>) {
    match port.filter(|p| p.is_absolute()) {
        Some(p) if p.exists() => loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if !p.exists() {
                return;
            }
        },
        _ => std::future::pending().await,
    }
}

/// The fallback as a [`Programmer`], so the job runner and the station can drive it like any
/// driver. Each operation that must reach the chip is one avrdude call; flash and EEPROM page
/// writes are collected and written in one call (`-D -V`: the job erases and verifies) before
/// anything reads, flash is read once per write and served from that read, fuses and lock
/// are read together. About nine avrdude calls per job — slower than [`run_job`], which does
/// the job in one call, but the same steps, events and failure classes as a native driver.
pub struct AvrdudeProgrammer {
    spec: ProgrammerSpec,
    opts: AvrdudeOptions,
    part: Option<&'static crate::part::Part>,
    signature: Option<[u8; 3]>,
    pending_flash: crate::image::Image,
    pending_eeprom: crate::image::Image,
    flash: Option<Vec<u8>>,
    eeprom: Option<Vec<u8>>,
    fuses: Option<(FuseSet, u8)>,
}

impl AvrdudeProgrammer {
    pub fn new(spec: ProgrammerSpec, opts: AvrdudeOptions) -> Self {
        AvrdudeProgrammer {
            spec,
            opts,
            part: None,
            signature: None,
            pending_flash: crate::image::Image::new(),
            pending_eeprom: crate::image::Image::new(),
            flash: None,
            eeprom: None,
            fuses: None,
        }
    }

    fn part(&self) -> Result<&'static crate::part::Part, ProgError> {
        self.part.ok_or_else(|| ProgError::new(FailureClass::Internal, "avrdude fallback used before enter_progmode"))
    }

    fn base_args(&self) -> Result<Vec<String>, ProgError> {
        let part = self.part()?;
        let programmer = self.spec.avrdude_programmer.as_deref().filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            ProgError::with_hint(FailureClass::Config, format!("slot {}: the avrdude fallback needs avrdude's programmer id (-c), e.g. `avrisp`", self.spec.name))
        })?;
        let mut a: Vec<String> = Vec::new();
        if let Some(c) = &self.opts.config {
            a.extend(["-C".into(), c.display().to_string()]);
        }
        a.extend(["-c".into(), programmer.to_string(), "-p".into(), part.avrdude_id().to_string()]);
        if let Some(p) = &self.spec.port {
            a.extend(["-P".into(), p.display().to_string()]);
        }
        if let Some(b) = self.spec.baud {
            a.extend(["-b".into(), b.to_string()]);
        }
        Ok(a)
    }

    /// One avrdude call with `extra` arguments; `bytes` sizes its time bound.
    async fn call(&mut self, extra: &[String], bytes: usize) -> Result<AvrdudeOutcome, ProgError> {
        let part = self.part()?;
        let mut args = self.base_args()?;
        args.extend_from_slice(extra);
        let bound = self.opts.base_timeout + PER_BYTE * bytes.min(u32::MAX as usize) as u32 * 2;
        let (status, stdout, stderr) = run_avrdude(&self.opts, &args, bound, self.spec.port.as_deref()).await?;
        let o = parse_output(&stdout, &stderr, part.signature);
        if let Some(sig) = o.signature {
            self.signature = Some(sig);
        }
        if let Some(e) = o.failure.clone() {
            // A wrong or missing signature stops avrdude; the job classifies it from the
            // signature it reads, as with native drivers.
            if self.signature.is_some() && matches!(e.class, FailureClass::NoTarget | FailureClass::WrongChip) && extra.is_empty() {
                return Ok(o);
            }
            return Err(e);
        }
        if !status.success() {
            let last = stderr.lines().rev().map(str::trim).find(|l| !l.is_empty() && !l.contains("Thank you")).unwrap_or("no message");
            return Err(ProgError::with_hint(FailureClass::Internal, format!("avrdude exited with {status}: {last}")));
        }
        Ok(o)
    }

    /// Write collected flash/EEPROM pages in one call.
    async fn flush(&mut self) -> Result<(), ProgError> {
        if self.pending_flash.is_empty() && self.pending_eeprom.is_empty() {
            return Ok(());
        }
        let dir = tempfile::Builder::new().prefix("flashline-avrdude").tempdir().map_err(|e| ProgError::new(FailureClass::Internal, format!("temporary directory: {e}")))?;
        let mut extra = vec!["-D".to_string(), "-V".to_string()];
        let bytes = self.pending_flash.len() + self.pending_eeprom.len();
        for (name, im) in [("flash", &self.pending_flash), ("eeprom", &self.pending_eeprom)] {
            if !im.is_empty() {
                let f = dir.path().join(format!("{name}.hex"));
                hex::write_file(&f, im, 32).map_err(|e| ProgError::new(FailureClass::Internal, format!("writing {}: {e}", f.display())))?;
                extra.push("-U".into());
                extra.push(format!("{name}:w:{}:i", f.display()));
            }
        }
        self.call(&extra, bytes).await?;
        self.pending_flash = crate::image::Image::new();
        self.pending_eeprom = crate::image::Image::new();
        self.flash = None;
        self.eeprom = None;
        Ok(())
    }

    /// Read a whole memory (`flash`/`eeprom`) through a temporary hex file.
    async fn read_memory(&mut self, name: &str, size: u32) -> Result<Vec<u8>, ProgError> {
        let dir = tempfile::Builder::new().prefix("flashline-avrdude").tempdir().map_err(|e| ProgError::new(FailureClass::Internal, format!("temporary directory: {e}")))?;
        let f = dir.path().join(format!("{name}.hex"));
        self.call(&["-U".into(), format!("{name}:r:{}:i", f.display())], size as usize).await?;
        let image = hex::read_file(&f).map_err(|e| ProgError::new(FailureClass::Internal, format!("avrdude's {name} dump: {e}")))?;
        Ok(image.to_flat(size, 0xFF))
    }

    async fn fuses_and_lock(&mut self) -> Result<(FuseSet, u8), ProgError> {
        self.flush().await?;
        if let Some(f) = self.fuses {
            return Ok(f);
        }
        let part = self.part()?;
        let mut mems: Vec<&str> = FuseKind::ALL.iter().filter(|k| part.fuse_masks.get(**k).is_some()).map(|k| k.avrdude_name()).collect();
        mems.push("lock");
        let extra: Vec<String> = mems.iter().flat_map(|m| ["-U".to_string(), format!("{m}:r:-:h")]).collect();
        let o = self.call(&extra, 0).await?;
        if o.reads.len() != mems.len() {
            return Err(ProgError::comm(format!("avrdude printed {} fuse/lock values, expected {}", o.reads.len(), mems.len())));
        }
        let mut set = FuseSet::default();
        let mut lock = 0xFF;
        for (m, v) in mems.iter().zip(o.reads) {
            match FuseKind::ALL.into_iter().find(|k| k.avrdude_name() == *m) {
                Some(k) => set.set(k, v),
                None => lock = v,
            }
        }
        self.fuses = Some((set, lock));
        Ok((set, lock))
    }

    async fn write_byte_memory(&mut self, name: &str, value: u8) -> Result<(), ProgError> {
        self.flush().await?;
        self.fuses = None;
        self.call(&["-V".into(), "-U".into(), format!("{name}:w:0x{value:02X}:m")], 0).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Programmer for AvrdudeProgrammer {
    fn info(&self) -> ProgrammerInfo {
        ProgrammerInfo {
            kind: ProgrammerKind::Avrdude,
            identity: match (&self.spec.avrdude_programmer, &self.spec.port) {
                (Some(c), Some(p)) => format!("{c}:{}", p.display()),
                (Some(c), None) => c.clone(),
                _ => self.spec.name.clone(),
            },
        }
    }

    async fn open(&mut self) -> ProgResult<()> {
        if self.spec.avrdude_programmer.as_deref().is_none_or(|s| s.trim().is_empty()) {
            return Err(ProgError::with_hint(FailureClass::Config, format!("slot {}: the avrdude fallback needs avrdude's programmer id (-c), e.g. `avrisp`", self.spec.name)));
        }
        Ok(())
    }

    async fn enter_progmode(&mut self, part: &'static crate::part::Part) -> ProgResult<()> {
        self.part = Some(part);
        self.signature = None;
        self.flash = None;
        self.eeprom = None;
        self.fuses = None;
        // avrdude enters programming mode and reads the signature on every call.
        self.call(&[], 0).await?;
        Ok(())
    }

    async fn leave_progmode(&mut self) -> ProgResult<()> {
        self.flush().await
    }

    async fn spi(&mut self, _cmd: Cmd) -> ProgResult<Cmd> {
        Err(ProgError::with_hint(FailureClass::Config, "the avrdude fallback cannot send raw ISP instructions"))
    }

    async fn close(&mut self) -> ProgResult<()> {
        self.pending_flash = crate::image::Image::new();
        self.pending_eeprom = crate::image::Image::new();
        Ok(())
    }

    fn read_block_size(&self) -> usize {
        4096
    }

    async fn read_signature(&mut self) -> ProgResult<[u8; 3]> {
        match self.signature {
            Some(s) => Ok(s),
            None => {
                self.call(&[], 0).await?;
                self.signature.ok_or_else(|| ProgError::comm("avrdude did not report the device signature"))
            }
        }
    }

    async fn chip_erase(&mut self, _part: &'static crate::part::Part) -> ProgResult<()> {
        self.flush().await?;
        self.call(&["-e".into()], 0).await?;
        self.flash = None;
        self.eeprom = None;
        self.fuses = None;
        Ok(())
    }

    async fn write_flash_page(&mut self, _part: &'static crate::part::Part, addr: u32, data: &[u8]) -> ProgResult<()> {
        self.pending_flash.insert(addr, data).map_err(|e| ProgError::new(FailureClass::Internal, format!("flash page at 0x{addr:X}: {e:?}")))?;
        self.flash = None;
        Ok(())
    }

    async fn read_flash(&mut self, part: &'static crate::part::Part, addr: u32, len: usize) -> ProgResult<Vec<u8>> {
        self.flush().await?;
        if self.flash.is_none() {
            self.flash = Some(self.read_memory("flash", part.flash_size).await?);
        }
        let f = self.flash.as_ref().expect("just read");
        f.get(addr as usize..addr as usize + len).map(<[u8]>::to_vec).ok_or_else(|| ProgError::new(FailureClass::Config, format!("flash read 0x{addr:X}+{len} is beyond {}", part.name)))
    }

    async fn write_eeprom(&mut self, _part: &'static crate::part::Part, addr: u32, data: &[u8]) -> ProgResult<()> {
        self.pending_eeprom.insert(addr, data).map_err(|e| ProgError::new(FailureClass::Internal, format!("EEPROM at 0x{addr:X}: {e:?}")))?;
        self.eeprom = None;
        Ok(())
    }

    async fn read_eeprom(&mut self, part: &'static crate::part::Part, addr: u32, len: usize) -> ProgResult<Vec<u8>> {
        self.flush().await?;
        if self.eeprom.is_none() {
            self.eeprom = Some(self.read_memory("eeprom", part.eeprom_size).await?);
        }
        let e = self.eeprom.as_ref().expect("just read");
        e.get(addr as usize..addr as usize + len).map(<[u8]>::to_vec).ok_or_else(|| ProgError::new(FailureClass::Config, format!("EEPROM read 0x{addr:X}+{len} is beyond {}", part.name)))
    }

    async fn read_fuse(&mut self, part: &'static crate::part::Part, kind: FuseKind) -> ProgResult<u8> {
        if part.fuse_masks.get(kind).is_none() {
            return Err(ProgError::new(FailureClass::Config, format!("{} has no {kind} fuse", part.name)));
        }
        let (set, _) = self.fuses_and_lock().await?;
        set.get(kind).ok_or_else(|| ProgError::comm(format!("avrdude did not read the {kind} fuse")))
    }

    async fn write_fuse(&mut self, part: &'static crate::part::Part, kind: FuseKind, value: u8) -> ProgResult<()> {
        if part.fuse_masks.get(kind).is_none() {
            return Err(ProgError::new(FailureClass::Config, format!("{} has no {kind} fuse", part.name)));
        }
        self.write_byte_memory(kind.avrdude_name(), value).await
    }

    async fn read_lock(&mut self, _part: &'static crate::part::Part) -> ProgResult<u8> {
        Ok(self.fuses_and_lock().await?.1)
    }

    async fn write_lock(&mut self, _part: &'static crate::part::Part, value: u8) -> ProgResult<()> {
        self.write_byte_memory("lock", value).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_avrdude_7_messages() {
        let sig = [0x1E, 0x95, 0x87];
        let o = parse_output("", "avrdude: device signature = 0x000000\navrdude error: Yikes!  Invalid device signature.\n", sig);
        assert_eq!(o.failure.unwrap().class, FailureClass::NoTarget);
        let o = parse_output("", "avrdude: device signature = 0x1e9488 (probably m16u4)\navrdude error: expected signature for ATmega32U4 is 1E 95 87\n", sig);
        assert_eq!(o.failure.unwrap().class, FailureClass::WrongChip);
        let o = parse_output("", "avrdude: initialization failed, rc=-1\n", sig);
        assert_eq!(o.failure.unwrap().class, FailureClass::ProgEnable);
        let o = parse_output(
            "",
            "avrdude: verifying flash memory against x.hex\navrdude warning: verification mismatch\n        device 0x54 != input 0x55 at addr 0x0105 (error)\n",
            sig,
        );
        let e = o.failure.unwrap();
        assert_eq!(e.class, FailureClass::VerifyFlash);
        assert!(e.message.contains("0x0105"), "{e}");
        // avrdude 6's wording.
        let o = parse_output("", "avrdude: verifying hfuse memory against 0xd8:\navrdude: verification error, first mismatch at byte 0x0000\n         0x99 != 0xd8\n", sig);
        assert_eq!(o.failure.unwrap().class, FailureClass::VerifyFuse);
        let o = parse_output("0x5e\n0x99\n0xf3\n0xff\n", "avrdude: 32730 bytes of flash written\navrdude: 32730 bytes of flash verified\n", sig);
        assert_eq!((o.flash_written, o.flash_verified), (32730, 32730));
        assert_eq!(o.reads, [0x5E, 0x99, 0xF3, 0xFF]);
        assert!(o.failure.is_none());
    }
}
