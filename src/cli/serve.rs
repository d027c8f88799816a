//! `flashline serve`: the dashboard over an existing database, read-only (totals, yield, recent
//! attempts, refused scans, polled); plus what `run --serve` shares with it (announcing the
//! address and token, waiting for SIGINT/SIGTERM).

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;
use flashline::web::{Dashboard, WebOptions};

use super::report::{runtime, DbArg};

/// The dashboard's listen address unless told otherwise.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// Listen address. Loopback by default; any other address requires a token (one is
    /// generated and printed when none is given).
    #[arg(long, default_value = DEFAULT_BIND, value_name = "ADDR")]
    pub bind: SocketAddr,
    /// Token for the dashboard (at least 12 characters: letters, digits, - . _ ~).
    #[arg(long, env = "FLASHLINE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Only this station's records (default: every station in the database).
    #[arg(long)]
    pub station: Option<String>,
}

pub fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let _guard = super::init_logging(None)?;
        let db = a.db.open_existing().await?;
        let dash = Dashboard::records(db.clone(), a.station.clone(), WebOptions::new(a.bind, a.token.clone())).await?;
        announce(&dash, "read-only view of the records");
        shutdown_signal().await;
        eprintln!("dashboard stopping");
        dash.shutdown().await;
        db.close().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Tell whoever started the station where the dashboard is and, when a token was generated,
/// what it is (on stderr: stdout may carry `--json` events).
pub fn announce(d: &Dashboard, what: &str) {
    eprintln!("dashboard ({what}): {}", d.url());
    if let Some(t) = d.token() {
        if d.token_generated() {
            eprintln!("dashboard token (generated): {t}");
        }
        eprintln!("  open {}login?token=… once per browser; write actions need the token", d.url());
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM (systemd stop).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
