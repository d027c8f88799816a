//! `report yield`, `report units` (and the shared `--db` argument).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use flashline::db::{Db, DEFAULT_DB};
use flashline::report::{self, Filters, GroupBy};

/// Where the records are.
#[derive(Args, Debug, Clone)]
pub struct DbArg {
    /// Records database: a SQLite file path or a postgres:// URL.
    #[arg(long = "db", env = "FLASHLINE_DB", default_value = DEFAULT_DB, value_name = "URL")]
    pub db: String,
}

impl DbArg {
    /// Open an existing database for reading (a missing SQLite file is an error here, not
    /// silently created empty).
    pub async fn open_existing(&self) -> anyhow::Result<Db> {
        let d = self.db.trim();
        if !d.contains("://") && !d.starts_with("sqlite:") && !Path::new(d).exists() {
            anyhow::bail!("no records database at {d}: run a batch first, or point --db / FLASHLINE_DB at the station's database");
        }
        Ok(Db::connect_reader(d).await?)
    }
}

/// Which attempts to look at.
#[derive(Args, Debug, Clone)]
pub struct FilterArgs {
    /// Only this SKU.
    #[arg(long)]
    pub sku: Option<String>,
    /// Only this station.
    #[arg(long)]
    pub station: Option<String>,
    /// Only attempts started on or after this UTC day (YYYY-MM-DD).
    #[arg(long, value_parser = report::parse_day)]
    pub since: Option<chrono::NaiveDate>,
    /// Only attempts started on or before this UTC day (YYYY-MM-DD, inclusive).
    #[arg(long, value_parser = report::parse_day)]
    pub until: Option<chrono::NaiveDate>,
}

impl FilterArgs {
    fn filters(&self) -> Filters {
        Filters { sku: self.sku.clone(), station: self.station.clone(), since: self.since, until: self.until }
    }
}

#[derive(Subcommand)]
pub enum ReportCommand {
    /// Yield per group: units, attempts, first-pass and final yield, retests, still failing,
    /// mean/p95 cycle time, failure Pareto (definitions in the README, "Reports").
    Yield(YieldArgs),
    /// Export attempt-level rows as CSV (RFC 4180, UTC ISO 8601, formula cells neutralised).
    Units(UnitsArgs),
    /// The serial-number pool: every number handed out, its state (used, void, reserved,
    /// free), owning attempt and unit. Void numbers may sit in a chip and are never reissued.
    Serials(SerialsArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum SerialFormat {
    Table,
    Csv,
    Json,
}

#[derive(Args)]
pub struct SerialsArgs {
    /// Only this SKU's pool.
    #[arg(long)]
    pub sku: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: SerialFormat,
    /// Write to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ByArg {
    Day,
    Sku,
    Station,
    Slot,
    Programmer,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum FormatArg {
    Table,
    Csv,
    Json,
    Html,
}

#[derive(Args)]
pub struct YieldArgs {
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Split into groups.
    #[arg(long, value_enum)]
    pub by: Option<ByArg>,
    /// Output format; html is a self-contained page with charts.
    #[arg(long, value_enum, default_value = "table")]
    pub format: FormatArg,
    /// Write to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write the charts (yield per day, failure Pareto) as one SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub chart: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbArg,
}

#[derive(Args)]
pub struct UnitsArgs {
    #[command(flatten)]
    pub filters: FilterArgs,
    /// Write to this file instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbArg,
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")
}

fn write_out(path: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match path {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display())),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes()).context("writing to standard output")
        }
    }
}

pub fn run(cmd: ReportCommand) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        match cmd {
            ReportCommand::Yield(a) => yield_cmd(a).await,
            ReportCommand::Units(a) => units_cmd(a).await,
            ReportCommand::Serials(a) => serials_cmd(a).await,
        }
    })
}

async fn yield_cmd(a: YieldArgs) -> anyhow::Result<ExitCode> {
    let db = a.db.open_existing().await?;
    let filters = a.filters.filters();
    let by = match a.by {
        None => GroupBy::None,
        Some(ByArg::Day) => GroupBy::Day,
        Some(ByArg::Sku) => GroupBy::Sku,
        Some(ByArg::Station) => GroupBy::Station,
        Some(ByArg::Slot) => GroupBy::Slot,
        Some(ByArg::Programmer) => GroupBy::Programmer,
    };
    let rep = report::yield_report(&db, &filters, by).await?;
    let needs_days = a.format == FormatArg::Html || a.chart.is_some();
    let by_day = if !needs_days {
        None
    } else if by == GroupBy::Day {
        Some(rep.clone())
    } else {
        Some(report::yield_report(&db, &filters, GroupBy::Day).await?)
    };
    let text = match a.format {
        FormatArg::Table => super::shown_lines(&report::render::table(&rep)),
        FormatArg::Csv => report::render::csv(&rep)?,
        FormatArg::Json => report::render::json(&rep)? + "\n",
        FormatArg::Html => {
            let generated = flashline::db::format_ts(chrono::Utc::now());
            report::html::page(&rep, by_day.as_ref().unwrap_or(&rep), &generated)
        }
    };
    write_out(a.output.as_deref(), &text)?;
    if let Some(svg) = &a.chart {
        let chart = report::html::charts_svg(by_day.as_ref().unwrap_or(&rep), &rep.total);
        std::fs::write(svg, chart).with_context(|| format!("writing {}", svg.display()))?;
    }
    if let Some(p) = &a.output {
        eprintln!("wrote {} ({} units, {} attempts)", p.display(), rep.total.units, rep.total.attempts);
    }
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn units_cmd(a: UnitsArgs) -> anyhow::Result<ExitCode> {
    let db = a.db.open_existing().await?;
    let filters = a.filters.filters();
    let n = match &a.output {
        Some(p) => {
            let f = std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
            let n = report::export_units(&db, &filters, std::io::BufWriter::new(f)).await?;
            eprintln!("wrote {n} attempts to {}", p.display());
            n
        }
        None => report::export_units(&db, &filters, std::io::BufWriter::new(std::io::stdout().lock())).await?,
    };
    let _ = n;
    db.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn serials_cmd(a: SerialsArgs) -> anyhow::Result<ExitCode> {
    let db = a.db.open_existing().await?;
    let rows = db.serial_pool(a.sku.as_deref()).await?;
    let text = match a.format {
        SerialFormat::Table => report::serials::table(&rows),
        SerialFormat::Csv => report::serials::csv(&rows)?,
        SerialFormat::Json => report::serials::json(&rows),
    };
    write_out(a.output.as_deref(), &text)?;
    db.close().await;
    Ok(ExitCode::SUCCESS)
}
