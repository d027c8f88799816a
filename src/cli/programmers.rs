//! `flashline programmers`: what is attached (USB programmers and serial ports), how to select
//! each one, and whether this user may open it.

use std::process::ExitCode;

use clap::Args;

use flashline::programmer::list::{list_programmers, Access, ListedProgrammer};

#[derive(Args)]
pub struct ProgrammersArgs {
    /// Print one JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: ProgrammersArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let listing = rt.block_on(list_programmers());
    if let Some(e) = &listing.usb_error {
        eprintln!("warning: USB devices could not be enumerated ({e}); only serial ports are listed");
    }
    let list = listing.programmers;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        println!("no USB programmers (USBasp 16C0:05DC, USBtinyISP 1781:0C9F) and no serial ports (/dev/ttyACM*, /dev/ttyUSB*) found");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", table(&list));
    if list.iter().any(|p| p.access == Access::InsufficientPermissions) {
        println!();
        println!("Some programmers are present but not accessible: install deploy/99-flashline-programmers.rules into /etc/udev/rules.d/, run `udevadm control --reload && udevadm trigger`, add the station user to the plugdev and dialout groups, and re-plug.");
    }
    Ok(ExitCode::SUCCESS)
}

fn table(list: &[ListedProgrammer]) -> String {
    let rows: Vec<[String; 5]> = list
        .iter()
        .map(|p| {
            [
                p.kind.map(|k| k.to_string()).unwrap_or_else(|| "serial".into()),
                p.selector.clone(),
                match (p.vid, p.pid) {
                    (Some(v), Some(d)) => format!("{v:04X}:{d:04X}"),
                    _ => "-".into(),
                },
                p.description.clone(),
                p.access.to_string(),
            ]
        })
        .collect();
    let head = ["TYPE", "SELECT WITH --port", "VID:PID", "DESCRIPTION", "ACCESS"];
    let mut w = head.map(|h| h.len());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: [&str; 5], out: &mut String| {
        for (i, c) in cells.iter().enumerate() {
            if i == 4 {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        out.push('\n');
    };
    line(head, &mut out);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4]], &mut out);
    }
    out
}
