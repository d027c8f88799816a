//! Command implementations. Each file owns its clap argument structs and prints for humans;
//! the library underneath never touches the terminal.

pub mod bench;
pub mod build;
pub mod console;
pub mod programmers;
pub mod report;
pub mod logging;
pub mod run;
pub mod serve;
pub mod flash;
pub mod sim;
pub mod unit;

pub use logging::init_logging;

/// Print an error chain once, for an operator: the message, then each cause on its own line.
pub fn print_error(e: &anyhow::Error) {
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}
