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

/// Print an error once, for an operator: the message, then each cause that adds something
/// (a cause whose text the message already holds — the usual `file:line: what` wrapped by
/// its context — is not printed again). Untrusted text in it is shown escaped.
pub fn print_error(e: &anyhow::Error) {
    eprint!("{}", error_text(e));
}

/// The text [`print_error`] prints.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = format!("error: {}\n", flashline::text::shown(&e.to_string()));
    let mut printed = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if printed.contains(&c) {
            continue;
        }
        out.push_str(&format!("  caused by: {}\n", flashline::text::shown(&c)));
        printed.push_str(&c);
    }
    out
}

/// Multi-line text for a terminal with each line's untrusted characters escaped (line breaks kept).
pub fn shown_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        out.push_str(&flashline::text::shown(body));
        out.push_str(end);
    }
    out
}
