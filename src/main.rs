//! The `flashline` command: a thin clap layer over the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// Production-line batch flashing station for AVR keyboard controllers.
#[derive(Parser)]
#[command(name = "flashline", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Merge a recipe's firmware and bootloader into a production hex.
    Build(cli::build::BuildArgs),
    /// Validate a recipe (inputs, merge, fuses) without writing anything.
    Check(cli::build::CheckArgs),
    /// List the part catalog.
    Parts,
    /// List the bootloader catalog.
    Bootloaders,
    /// Fuse tools: decode fuse bytes into words.
    #[command(subcommand)]
    Fuses(cli::build::FusesCommand),
    /// List attached programmers (USB and serial) with how to select each and access status.
    Programmers(cli::programmers::ProgrammersArgs),
    /// Program one board: identify, erase, program, verify, fuses, lock. Exit 0 only when
    /// everything verified (1: the board failed, 3: the programmer failed, 2: bad input).
    Flash(cli::flash::FlashArgs),
    /// Read a board's flash back into an Intel HEX file.
    Read(cli::flash::ReadArgs),
    /// Simulation: emulated programmers with a simulated target.
    #[command(subcommand)]
    Sim(cli::sim::SimCommand),
    /// Show a unit's full history: every attempt on every station, every step.
    Unit(cli::unit::UnitArgs),
    /// Reports over the records: yield, unit CSV export.
    #[command(subcommand)]
    Report(cli::report::ReportCommand),
    /// Dashboard over an existing database: read-only live view of totals, yield and recent
    /// attempts (polls the records).
    Serve(cli::serve::ServeArgs),
    /// Run a recipe on a station: scan boards, flash them in parallel, record every attempt.
    Run(cli::run::RunArgs),
    /// Speed benchmarks: cycle vs bound, vs avrdude, USB transfers, scaling, build.
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(a) => cli::build::build(a),
        Command::Check(a) => cli::build::check(a),
        Command::Parts => cli::build::parts(),
        Command::Bootloaders => cli::build::bootloaders(),
        Command::Fuses(c) => cli::build::fuses(c),
        Command::Sim(c) => cli::sim::run(c),
        Command::Programmers(a) => cli::programmers::run(a),
        Command::Unit(a) => cli::unit::run(a),
        Command::Report(c) => cli::report::run(c),
        Command::Serve(a) => cli::serve::run(a),
        Command::Run(a) => cli::run::run(a),
        Command::Flash(a) => cli::flash::flash(a),
        Command::Read(a) => cli::flash::read(a),
        Command::Bench(a) => cli::bench::bench(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            cli::print_error(&e);
            ExitCode::from(2)
        }
    }
}
