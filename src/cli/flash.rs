//! `flash` (program one board) and `read` (dump a board's flash to a hex file).
//!
//! Exit codes: 0 everything verified; 1 the board failed (no target, wrong chip, verify…);
//! 3 the equipment failed (programmer missing or gone, timeout); 2 bad arguments or input files.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use flashline::hex;
use flashline::image::Image;
use flashline::job::{self, JobEvent, JobPlan, JobReport, JobResult};
use flashline::part::{self, FuseKind, Part};
use flashline::programmer::{self, ProgrammerKind, ProgrammerSpec};
use flashline::sim::{Fault, SimOptions};
use flashline::verify::VerifyPolicy;

use super::build::parse_u8;

/// Which programmer, and which part behind it.
#[derive(Args)]
pub struct ProgrammerArgs {
    /// Programmer type: sim, avrisp (stk500v1), arduino, usbasp, usbtiny, buspirate, avrdude.
    #[arg(long, short = 'c', value_parser = parse_kind)]
    pub programmer: ProgrammerKind,
    /// Serial device of the programmer (avrisp, arduino, buspirate).
    #[arg(long, short = 'P')]
    pub port: Option<PathBuf>,
    /// Serial line rate (driver default when not given).
    #[arg(long, short = 'b', value_parser = clap::value_parser!(u32).range(1..=4_000_000))]
    pub baud: Option<u32>,
    /// USB selector for usbasp/usbtiny, e.g. `serial:0001A2` or a bus-port path.
    #[arg(long)]
    pub usb: Option<String>,
    /// avrdude's `-c` id when --programmer avrdude.
    #[arg(long)]
    pub avrdude_programmer: Option<String>,
    /// sim only: fault to inject (none, no-target, no-target-ff, wrong-chip, flaky[:RATE],
    /// stuck[:ADDR], slow[:HZ], unplug[:PAGES]).
    #[arg(long, value_parser = Fault::parse)]
    pub fault: Option<Fault>,
    /// sim only: model SPI time and the target's datasheet delays.
    #[arg(long)]
    pub timing: bool,
    /// sim with --timing only: a simulated ArduinoISP behind this USB bridge model (cdc,
    /// ftdi[:MS], ch340, 16u2, none), driven by the avrisp driver, instead of the in-process sim.
    #[arg(long, value_parser = flashline::sim::bridge::Bridge::parse)]
    pub bridge: Option<flashline::sim::bridge::Bridge>,
    /// Target part (catalog id, datasheet name or avrdude id: atmega32u4, ATmega32U4, m32u4).
    #[arg(long, short = 'p')]
    pub mcu: String,
    /// Programmer name in records (sim identity is `sim:NAME`).
    #[arg(long, default_value = "cli")]
    pub name: String,
}

#[derive(Args)]
pub struct FlashArgs {
    #[command(flatten)]
    pub prog: ProgrammerArgs,
    /// Intel HEX image to program (a production image: firmware + bootloader).
    pub image: PathBuf,
    /// Low fuse to write and verify, e.g. 0x5E.
    #[arg(long, value_parser = parse_u8)]
    pub lfuse: Option<u8>,
    /// High fuse, e.g. 0xD9.
    #[arg(long, value_parser = parse_u8)]
    pub hfuse: Option<u8>,
    /// Extended fuse, e.g. 0xF3 (bits the part lacks are not compared).
    #[arg(long, value_parser = parse_u8)]
    pub efuse: Option<u8>,
    /// Lock byte, written last, e.g. 0x2F.
    #[arg(long, value_parser = parse_u8)]
    pub lock: Option<u8>,
    /// Intel HEX image for the EEPROM (written and verified).
    #[arg(long)]
    pub eeprom: Option<PathBuf>,
    /// Flash read-back: full (every page the image covers), written (pages written), none.
    #[arg(long, default_value = "full", value_parser = parse_verify)]
    pub verify: VerifyPolicy,
    /// Write pages that are all 0xFF too (normally skipped: erased flash already reads 0xFF).
    #[arg(long)]
    pub write_blank_pages: bool,
    /// Print the job report as one JSON object on stdout (no progress bar).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub prog: ProgrammerArgs,
    /// Output Intel HEX file (trailing 0xFF bytes are left out).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_kind(s: &str) -> Result<ProgrammerKind, String> {
    ProgrammerKind::parse(s).ok_or_else(|| {
        format!("unknown programmer '{s}': expected sim, avrisp, stk500v1, arduino, usbasp, usbtiny, buspirate or avrdude")
    })
}

fn parse_verify(s: &str) -> Result<VerifyPolicy, String> {
    match s {
        "full" => Ok(VerifyPolicy::Full),
        "written" => Ok(VerifyPolicy::Written),
        "none" => Ok(VerifyPolicy::None),
        _ => Err(format!("unknown verify policy '{s}': expected full, written or none")),
    }
}

impl ProgrammerArgs {
    fn part(&self) -> anyhow::Result<&'static Part> {
        part::find(&self.mcu).ok_or_else(|| anyhow!("unknown part '{}': known parts are {}", self.mcu, part::ids().join(", ")))
    }

    fn spec(&self) -> anyhow::Result<ProgrammerSpec> {
        if self.programmer != ProgrammerKind::Sim && (self.fault.is_some() || self.timing) {
            bail!("--fault and --timing apply only to --programmer sim");
        }
        if self.bridge.is_some() && !(self.programmer == ProgrammerKind::Sim && self.timing) {
            bail!("--bridge models time: it applies to --programmer sim with --timing");
        }
        let mut spec = ProgrammerSpec::new(self.programmer, self.name.clone());
        spec.bridge = self.bridge;
        spec.port = self.port.clone();
        spec.baud = self.baud;
        spec.usb = self.usb.clone();
        spec.avrdude_programmer = self.avrdude_programmer.clone();
        spec.sim = SimOptions::new(self.timing, self.fault.clone().unwrap_or_default());
        Ok(spec)
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

/// Renders job events for a person: one line per step on stderr, a progress bar for the long ones.
struct HumanProgress {
    bar: ProgressBar,
}

impl HumanProgress {
    fn new(enabled: bool) -> Self {
        let bar = if enabled { ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()) } else { ProgressBar::hidden() };
        bar.set_style(
            ProgressStyle::with_template("{msg:>9} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        HumanProgress { bar }
    }

    fn line(&self, s: String) {
        // Programmer and avrdude messages are untrusted text.
        let s = flashline::text::shown(&s).into_owned();
        if self.bar.is_hidden() {
            eprintln!("{s}");
        } else {
            self.bar.println(s);
        }
    }

    fn event(&self, e: JobEvent) {
        match e {
            JobEvent::StepStarted { step } => {
                self.bar.set_message(step.name());
                self.bar.set_position(0);
                self.bar.set_length(0);
            }
            JobEvent::Progress { done, total, .. } => {
                self.bar.set_length(total);
                self.bar.set_position(done);
            }
            JobEvent::StepFinished { step, ms } => self.line(format!("  ok    {:<10} {ms:>6} ms", step.name())),
            JobEvent::StepFailed { step, ms, class, message } => {
                self.line(format!("  FAIL  {:<10} {ms:>6} ms  [{class}] {message}", step.name()))
            }
            JobEvent::Note { step, message } => self.line(format!("  note  {:<10} {message}", step.name())),
        }
    }

    fn done(&self) {
        self.bar.finish_and_clear();
    }
}

fn exit_code(r: &JobReport) -> ExitCode {
    match r.result {
        JobResult::Pass => ExitCode::SUCCESS,
        JobResult::Fail => ExitCode::from(1),
        JobResult::Error => ExitCode::from(3),
    }
}

fn fmt_fuses(r: &JobReport) -> String {
    let mut s = r.fuses_after.to_string();
    if let Some(l) = r.lock_after {
        s.push_str(&format!(" lock:{l:02X}"));
    }
    s
}

fn print_outcome(r: &JobReport) {
    match r.result {
        JobResult::Pass => println!(
            "PASS  {} on {}  sig {}  {} page(s) written, {} blank skipped, {} bytes verified ({})  fuses {}  {} ms",
            r.part,
            r.programmer,
            r.signature.as_deref().unwrap_or("-"),
            r.pages_written,
            r.pages_skipped,
            r.bytes_verified,
            r.verify.name(),
            fmt_fuses(r),
            r.total_ms
        ),
        res => println!(
            "{}  {} on {}  [{}] {}",
            if res == JobResult::Fail { "FAIL " } else { "ERROR" },
            r.part,
            r.programmer,
            r.failure_class.map(|c| c.as_str()).unwrap_or("-"),
            flashline::text::shown(r.message.as_deref().unwrap_or(""))
        ),
    }
}

/// `flashline flash`.
pub fn flash(a: FlashArgs) -> anyhow::Result<ExitCode> {
    let _log = super::init_logging(None)?;
    let part = a.prog.part()?;
    let spec = a.prog.spec()?;
    let image = hex::read_file(&a.image).map_err(|e| anyhow!("{e}"))?;
    if image.is_empty() {
        bail!("{}: the image holds no data", a.image.display());
    }
    let mut plan = JobPlan::new(part, image);
    for (k, v) in [(FuseKind::Low, a.lfuse), (FuseKind::High, a.hfuse), (FuseKind::Extended, a.efuse)] {
        if let Some(v) = v {
            plan.fuses.set(k, v);
        }
    }
    plan.lock = a.lock;
    plan.verify = a.verify;
    plan.skip_blank_pages = !a.write_blank_pages;
    if let Some(p) = &a.eeprom {
        plan.eeprom = Some(hex::read_file(p).map_err(|e| anyhow!("{e}"))?);
    }
    plan.validate().map_err(|e| anyhow!("{}: {}", a.image.display(), e.message))?;

    let human = HumanProgress::new(!a.json);
    let report = runtime()?.block_on(async {
        let mut sink = |e: JobEvent| {
            if !a.json {
                human.event(e)
            }
        };
        if spec.kind == ProgrammerKind::Avrdude {
            // The fallback runs the whole job in one avrdude call.
            let opts = programmer::avrdude::AvrdudeOptions::default();
            return programmer::avrdude::run_job(&spec, &opts, &plan, &mut sink).await;
        }
        match programmer::open(&spec, part).await {
            Err(e) => JobReport::not_started(spec.info(), part, plan.verify, e),
            Ok(mut prog) => job::run_job(prog.as_mut(), &plan, &mut sink).await,
        }
    });
    human.done();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_outcome(&report);
    }
    Ok(exit_code(&report))
}

/// `flashline read`.
pub fn read(a: ReadArgs) -> anyhow::Result<ExitCode> {
    let _log = super::init_logging(None)?;
    let part = a.prog.part()?;
    let spec = a.prog.spec()?;
    if spec.kind == ProgrammerKind::Avrdude {
        bail!(
            "read does not go through the avrdude fallback; run avrdude -c {} -p {} -U flash:r:{}:i directly",
            spec.avrdude_programmer.as_deref().unwrap_or("PROGRAMMER"),
            part.avrdude_id(),
            a.output.display()
        );
    }
    let human = HumanProgress::new(!a.json);
    let (report, data) = runtime()?.block_on(async {
        match programmer::open(&spec, part).await {
            Err(e) => (JobReport::not_started(spec.info(), part, VerifyPolicy::None, e), None),
            Ok(mut prog) => {
                let mut sink = |e: JobEvent| {
                    if !a.json {
                        human.event(e)
                    }
                };
                job::run_read(prog.as_mut(), part, &mut sink).await
            }
        }
    });
    human.done();
    let mut kept = 0usize;
    if let Some(data) = &data {
        kept = data.iter().rposition(|b| *b != 0xFF).map_or(0, |i| i + 1);
        let mut image = Image::new();
        image.insert(0, &data[..kept]).map_err(|c| anyhow!("internal: conflict at 0x{:X}", c.addr))?;
        hex::write_file(&a.output, &image, 16).with_context(|| format!("writing {}", a.output.display()))?;
    }
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("output".into(), serde_json::json!(data.as_ref().map(|_| a.output.display().to_string())));
            o.insert("bytes_read".into(), serde_json::json!(data.as_ref().map_or(0, Vec::len)));
            o.insert("bytes_saved".into(), serde_json::json!(kept));
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if report.passed() {
        println!(
            "READ  {} on {}  sig {}  {} bytes read, {} bytes up to the last non-0xFF byte written to {}  {} ms",
            report.part,
            report.programmer,
            report.signature.as_deref().unwrap_or("-"),
            data.as_ref().map_or(0, Vec::len),
            kept,
            a.output.display(),
            report.total_ms
        );
    } else {
        print_outcome(&report);
    }
    Ok(exit_code(&report))
}
