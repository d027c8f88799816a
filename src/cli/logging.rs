//! Logging for long-running commands: readable lines on stderr filtered by `RUST_LOG`
//! (default `error`; plain, without colour codes, when stderr is not a terminal), plus an optional JSON-lines file for traceability.

use std::io::IsTerminal;
use std::path::Path;

use tracing_subscriber::prelude::*;
use tracing_subscriber::{fmt, EnvFilter};

/// Keeps the JSON log file's writer alive; drop at exit.
pub struct LogGuard(#[allow(dead_code)] Option<std::sync::Arc<std::fs::File>>);

/// Install the global subscriber. Safe to call once per process.
pub fn init_logging(json_file: Option<&Path>) -> anyhow::Result<LogGuard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("error"));
    // Colour codes only on a terminal: redirected to a file or the journal, logs are plain text.
    let stderr_layer = fmt::layer().with_writer(std::io::stderr).with_target(false).with_ansi(std::io::stderr().is_terminal());
    let (json_layer, guard) = match json_file {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| anyhow::anyhow!("cannot open log file {}: {e}", p.display()))?;
            let f = std::sync::Arc::new(f);
            let layer = fmt::layer().json().with_writer(f.clone()).with_filter(EnvFilter::new(
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            ));
            (Some(layer), Some(f))
        }
        None => (None, None),
    };
    let _ = tracing_subscriber::registry().with(stderr_layer.with_filter(filter)).with(json_layer).try_init();
    Ok(LogGuard(guard))
}
