//! `flashline run`: the station's main job, with the operator's terminal view.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::broadcast;

use flashline::station::scan::is_quit;
use flashline::station::{Station, StationEvent, Supervisor};
use flashline::text::shown;

#[derive(Args)]
pub struct RunArgs {
    /// Recipe YAML for the SKU being produced.
    pub recipe: PathBuf,
    /// Station file: name and slots (see deploy/station.example.yaml).
    #[arg(long)]
    pub station: PathBuf,
    /// Database URL: a SQLite path or sqlite:// URL, or postgres://…
    #[arg(long, env = "FLASHLINE_DB", default_value = "flashline.db")]
    pub db: String,
    /// Read scans from FILE (one barcode per line), or `-` for stdin. Without it, an interactive
    /// terminal takes scans until `quit`.
    #[arg(long)]
    pub scans: Option<String>,
    /// Operator name recorded with every attempt.
    #[arg(long, env = "FLASHLINE_OPERATOR")]
    pub operator: Option<String>,
    /// Print events as JSON lines on stdout (for line software) instead of the live view.
    #[arg(long)]
    pub json: bool,
    /// Line output (one line per result, no escape codes) even on a terminal, instead of the
    /// full-screen operator console.
    #[arg(long)]
    pub plain: bool,
    /// Also write logs as JSON lines to this file.
    #[arg(long)]
    pub log_json: Option<PathBuf>,
    /// Serve the operator dashboard on ADDR (e.g. 127.0.0.1:8080). The station then keeps
    /// running after the scan input ends (scans come from the dashboard) until SIGINT/SIGTERM
    /// or Stop on the dashboard.
    #[arg(long, value_name = "ADDR")]
    pub serve: Option<std::net::SocketAddr>,
    /// Dashboard token; required beyond loopback (generated and printed when not given).
    #[arg(long, env = "FLASHLINE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Exit status when some results could not be recorded (the list is on stderr).
pub const RECORDS_INCOMPLETE: u8 = 4;

/// Why the scan input ended.
#[derive(PartialEq, Eq)]
enum IntakeEnd {
    /// End of file / stdin closed.
    Ended,
    /// `quit` scanned, Ctrl-C, SIGTERM, or Stop on the dashboard.
    Stop,
}

pub fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run_async(a))
}

async fn run_async(a: RunArgs) -> anyhow::Result<ExitCode> {
    let _guard = super::init_logging(a.log_json.as_deref())?;
    let production = flashline::build::prepare(&a.recipe).map_err(|e| anyhow::anyhow!("{e}"))?;
    let station = Station::load(&a.station).map_err(|e| anyhow::anyhow!("{e}"))?;
    let interactive = a.scans.is_none() && std::io::stdin().is_terminal();
    let operator = match a.operator.clone() {
        Some(o) => o,
        None if station.operator_prompt && interactive => prompt("Operator: ")?,
        None => std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
    };
    let db = flashline::db::Db::connect(&a.db).await.map_err(|e| anyhow::anyhow!("database {}: {e}", a.db))?;
    let sup_operator = operator.clone();
    let sup = Supervisor::start(station, Arc::new(production), db.clone(), operator).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let sup = Arc::new(sup);

    // The full-screen console when a person sits at a terminal; line output otherwise.
    let console = interactive && !a.json && !a.plain && std::io::stdout().is_terminal();
    let view = if console { tokio::spawn(async {}) } else { spawn_view(&sup, a.json, interactive, a.plain) };

    let dash = match a.serve {
        Some(bind) => {
            let operator = sup_operator.clone();
            match flashline::web::Dashboard::live(sup.clone(), db.clone(), operator, flashline::web::WebOptions::new(bind, a.token.clone())).await {
                Ok(d) => {
                    super::serve::announce(&d, "live station");
                    Some(d)
                }
                Err(e) => {
                    sup.finish().await;
                    let _ = tokio::time::timeout(Duration::from_secs(5), view).await;
                    return Err(e.into());
                }
            }
        }
        None => None,
    };
    // Stop requests: Ctrl-C and SIGTERM (systemd's stop) always; with the dashboard also its
    // Stop button. Every job already started finishes and is recorded before the process exits.
    let serving = dash.is_some();
    let stop_button = dash.as_ref().map(|d| d.stop_requested());
    let stop = async {
        match stop_button {
            Some(button) => tokio::select! {
                _ = super::serve::shutdown_signal() => {}
                _ = button => {}
            },
            None => super::serve::shutdown_signal().await,
        }
    };
    tokio::pin!(stop);

    // Scan intake: stdin, or a file / FIFO read as a stream of lines (bounded per line).
    // `quit` ends only a session typed at a terminal: in a scan file or a pipe it is data.
    let stdin_is_terminal = std::io::stdin().is_terminal();
    let intake = async {
        if console {
            super::console::run(sup.clone(), &sup_operator, &mut stop).await?;
            return anyhow::Ok(IntakeEnd::Stop);
        }
        let (mut input, terminal): (Box<dyn tokio::io::AsyncBufRead + Unpin + Send>, bool) = match a.scans.as_deref() {
            Some("-") | None => (Box::new(BufReader::new(tokio::io::stdin())), stdin_is_terminal),
            Some(path) => {
                let file = tokio::select! {
                    f = open_scans(path) => f?,
                    _ = &mut stop => return anyhow::Ok(IntakeEnd::Stop),
                };
                (Box::new(BufReader::new(file)), false)
            }
        };
        let mut n = 0usize;
        loop {
            tokio::select! {
                l = read_scan_line(&mut input) => match l {
                    Ok(Some(line)) => {
                        n += 1;
                        if terminal && is_quit(&line) {
                            return anyhow::Ok(IntakeEnd::Stop);
                        }
                        tokio::select! {
                            _ = sup.submit(&line) => {}
                            _ = &mut stop => return anyhow::Ok(IntakeEnd::Stop),
                        }
                    }
                    Ok(None) => break,
                    Err(e) => anyhow::bail!("scan input{}, line {}: {e}", a.scans.as_deref().filter(|p| *p != "-").map(|p| format!(" {}", shown(p))).unwrap_or_default(), n + 1),
                },
                _ = &mut stop => return anyhow::Ok(IntakeEnd::Stop),
            }
        }
        anyhow::Ok(IntakeEnd::Ended)
    };
    let intake_result = intake.await;
    // With the dashboard, the end of the scan input is not the end of the shift: scans keep
    // coming from the browser until a signal or Stop.
    if serving && matches!(intake_result, Ok(IntakeEnd::Ended)) {
        tracing::info!("scan input ended; the dashboard keeps the station running until SIGINT/SIGTERM or Stop");
        stop.await;
    }
    let totals = sup.finish().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), view).await;
    if let Some(d) = dash {
        d.shutdown().await;
    }
    let unrecorded = sup.unrecorded();
    db.close().await;
    intake_result?;
    if !a.json {
        let missing = if totals.unrecorded > 0 { format!("; {} NOT RECORDED", totals.unrecorded) } else { String::new() };
        println!(
            "{} attempts: {} passed, {} failed, {} errors; {} units, yield {:.1}%; {} scans refused{missing}. Records in {}",
            totals.attempts,
            totals.passed,
            totals.failed,
            totals.errors,
            totals.units,
            totals.yield_pct(),
            totals.rejected_scans,
            a.db
        );
    }
    if !unrecorded.is_empty() {
        // The one place an operator or a supervisor script learns which boards have no record.
        eprintln!("error: {} result(s) could not be recorded — set these boards aside and retest them:", unrecorded.len());
        for u in &unrecorded {
            eprintln!(
                "  {}{}  {}{}: {}",
                u.slot.as_deref().map(|s| format!("{}  ", flashline::text::shown(s))).unwrap_or_default(),
                flashline::text::shown(&u.serial),
                u.what,
                u.attempt_id.map(|id| format!(" (attempt id {id}, left running)")).unwrap_or_default(),
                flashline::text::shown(&u.error)
            );
        }
        return Ok(ExitCode::from(RECORDS_INCOMPLETE));
    }
    Ok(ExitCode::SUCCESS)
}

/// Longest scan line kept; the rest of a longer line is read and dropped (the supervisor
/// refuses the kept part as too long), so a line without end cannot fill memory.
const MAX_SCAN_LINE: usize = 4096;
/// A "line" longer than this is not a barcode list (`/dev/zero`, a binary file): stop.
const MAX_SCAN_RUN: usize = 1 << 20;

/// `--scans PATH`: a regular file, a FIFO or a device read as a stream; not a directory.
async fn open_scans(path: &str) -> anyhow::Result<tokio::fs::File> {
    let meta = tokio::fs::metadata(path).await.map_err(|e| anyhow::anyhow!("scan file {}: {e}", shown(path)))?;
    if meta.is_dir() {
        anyhow::bail!("scan file {}: is a directory, not a file of scans", shown(path));
    }
    tokio::fs::File::open(path).await.map_err(|e| anyhow::anyhow!("scan file {}: {e}", shown(path)))
}

/// One line from the scan input (without its line ending), bounded to [`MAX_SCAN_LINE`] bytes.
/// `None` at the end of the input.
async fn read_scan_line<R: tokio::io::AsyncBufRead + Unpin + ?Sized>(r: &mut R) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut run = 0usize;
    let mut any = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            break;
        }
        any = true;
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let room = MAX_SCAN_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = done.unwrap_or(buf.len());
        run += used;
        r.consume(used);
        if done.is_none() && run > MAX_SCAN_RUN {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("no line break in {} MiB: not a list of barcodes", MAX_SCAN_RUN >> 20)));
        }
        if done.is_some() {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

fn prompt(q: &str) -> anyhow::Result<String> {
    eprint!("{q}");
    std::io::stderr().flush()?;
    let mut s = String::new();
    std::io::stdin().read_line(&mut s)?;
    let s = s.trim().to_string();
    if s.is_empty() {
        anyhow::bail!("an operator name is required (station file sets operator_prompt: true)");
    }
    Ok(s)
}

/// Render station events: JSON lines, a live per-slot view on a terminal, or plain lines
/// (`--plain`, or stderr not a terminal). The full-screen console is `super::console`.
fn spawn_view(sup: &Supervisor, json: bool, interactive: bool, plain: bool) -> tokio::task::JoinHandle<()> {
    let mut rx = sup.subscribe();
    let slots: Vec<String> = sup.station().slots.iter().map(|s| s.name.clone()).collect();
    let live = !json && !plain && std::io::stderr().is_terminal();
    tokio::spawn(async move {
        let mp = MultiProgress::with_draw_target(if live { ProgressDrawTarget::stderr_with_hz(10) } else { ProgressDrawTarget::hidden() });
        let style = ProgressStyle::with_template("{prefix:>5} {bar:24.cyan/blue} {percent:>3}% {msg}").unwrap().progress_chars("█▉▊▋▌▍▎▏ ");
        let bars: Vec<ProgressBar> = slots
            .iter()
            .map(|s| {
                let b = mp.add(ProgressBar::new(100));
                b.set_style(style.clone());
                b.set_prefix(s.clone());
                b.set_message("idle — scan a board");
                b
            })
            .collect();
        let total = mp.add(ProgressBar::new_spinner());
        total.set_style(ProgressStyle::with_template("{msg}").unwrap());
        if interactive && live {
            total.set_message("scan a barcode (SLOT:SERIAL or SERIAL), `quit` to stop");
        }
        let idx = |name: &str| slots.iter().position(|s| s == name);
        loop {
            let ev = match rx.recv().await {
                Ok(ev) => ev,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "display fell behind; skipped events");
                    continue;
                }
                Err(_) => break,
            };
            if json {
                if let Ok(s) = serde_json::to_string(&ev) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{s}");
                }
                if matches!(ev, StationEvent::Stopped(_)) {
                    break;
                }
                continue;
            }
            match &ev {
                StationEvent::JobStarted { slot, serial, attempt, .. } => {
                    let serial = shown(serial);
                    if let Some(i) = idx(slot) {
                        bars[i].set_position(0);
                        bars[i].set_message(format!("{serial} (attempt {attempt}) starting"));
                    }
                }
                StationEvent::Step { slot, serial, step, .. } => {
                    let (serial, step) = (shown(serial), shown(step));
                    if let Some(i) = idx(slot) {
                        bars[i].set_message(format!("{serial} {step}"));
                    }
                }
                StationEvent::Progress { slot, done, total, .. } => {
                    if let Some(i) = idx(slot) {
                        bars[i].set_length((*total).max(1));
                        bars[i].set_position(*done);
                    }
                }
                StationEvent::JobFinished { slot, serial, result, failure_class, message, cycle_ms, .. } => {
                    let serial = shown(serial);
                    let message = message.as_deref().map(shown);
                    let failure_class = failure_class.as_deref().map(shown);
                    let line = if result == "pass" {
                        format!("{slot:>5}  {serial}  PASS  {:.2} s", *cycle_ms as f64 / 1000.0)
                    } else {
                        format!(
                            "{slot:>5}  {serial}  {}  {}: {}",
                            result.to_uppercase(),
                            failure_class.as_deref().unwrap_or("?"),
                            message.as_deref().unwrap_or("")
                        )
                    };
                    if let Some(i) = idx(slot) {
                        bars[i].set_position(bars[i].length().unwrap_or(100));
                        bars[i].set_message(if result == "pass" { format!("PASS {serial}") } else { format!("{} {serial} — {}", result.to_uppercase(), message.as_deref().unwrap_or("")) });
                    }
                    if live {
                        let _ = mp.println(line);
                    } else {
                        println!("{line}");
                    }
                }
                StationEvent::SlotOffline { slot, reason } => {
                    let reason = shown(reason);
                    let line = format!("{slot:>5}  OFFLINE  {reason}");
                    if let Some(i) = idx(slot) {
                        bars[i].set_message(format!("OFFLINE — {reason}"));
                    }
                    if live {
                        let _ = mp.println(line);
                    } else {
                        println!("{line}");
                    }
                }
                StationEvent::ScanRejected { raw, reason, .. } => {
                    let raw = shown(raw);
                    let raw = match raw.char_indices().nth(120) {
                        Some((i, _)) => format!("{}…", &raw[..i]),
                        None => raw.into_owned(),
                    };
                    let line = format!("SCAN REFUSED  {raw}: {}", shown(reason));
                    if live {
                        let _ = mp.println(line);
                    } else {
                        println!("{line}");
                    }
                }
                StationEvent::RecordsUnavailable { reason } => {
                    let line = format!("RECORDS  {reason}");
                    if live {
                        let _ = mp.println(line);
                    } else {
                        println!("{line}");
                    }
                }
                StationEvent::RecordsAvailable { after_ms } => {
                    let line = format!("RECORDS  writable again after {:.1} s: the station resumes", *after_ms as f64 / 1000.0);
                    if live {
                        let _ = mp.println(line);
                    } else {
                        println!("{line}");
                    }
                }
                StationEvent::Totals(t) => {
                    total.set_message(format!(
                        "passed {}  failed {}  errors {}  units {}  yield {:.1}%{}",
                        t.passed,
                        t.failed,
                        t.errors,
                        t.units,
                        t.yield_pct(),
                        if t.unrecorded > 0 { format!("  NOT RECORDED {}", t.unrecorded) } else { String::new() }
                    ));
                }
                StationEvent::Stopped(_) => break,
                _ => {}
            }
        }
        for b in bars {
            b.finish();
        }
        total.finish();
    })
}
