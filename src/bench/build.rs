//! Table 4: `flashline build` on a 128 KiB image (the AT90USB1286 `kinesis-adv-1286` recipe).
//!
//! Measured twice: the library call the command makes ([`crate::build::prepare`] + writing the
//! production hex), and the whole `flashline build` process as a user runs it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{median, ms, spread, BenchError, BenchOptions, BenchResult, Table};

/// Table 4.
pub fn table(opts: &BenchOptions) -> BenchResult<Table> {
    let recipe = opts.root.join("recipes/kinesis-adv-1286/recipe.yaml");
    let out = opts.work.join("kinesis_adv_production.hex");
    let n_lib = if opts.quick { 3 } else { 30 };
    let n_proc = if opts.quick { 1 } else { 10 };
    let mut lib = Vec::new();
    let mut size = 0usize;
    let mut data = 0usize;
    for _ in 0..n_lib {
        let t0 = Instant::now();
        let p = crate::build::prepare(&recipe).map_err(|e| BenchError::new(format!("{}: {e}", recipe.display())))?;
        p.write(&out).map_err(|e| BenchError::new(format!("{}: {e}", out.display())))?;
        lib.push(t0.elapsed());
        size = p.hex.len();
        data = p.image.len();
    }
    let mut procs = Vec::new();
    for _ in 0..n_proc {
        let t0 = Instant::now();
        let st = Command::new(&opts.flashline)
            .arg("build")
            .arg(&recipe)
            .arg("-o")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| BenchError::new(format!("cannot run {} build: {e}", opts.flashline.display())))?;
        procs.push(t0.elapsed());
        if !st.success() {
            return Err(BenchError::new(format!("flashline build {} failed ({st})", recipe.display())));
        }
    }
    let mut t = Table::new("4. `flashline build` on a 128 KiB image (AT90USB1286, recipes/kinesis-adv-1286)", &["what", "runs", "median", "spread"]);
    let sp = |v: &[Duration]| {
        let (a, b) = (v.iter().min().copied().unwrap_or_default(), v.iter().max().copied().unwrap_or_default());
        format!("{}–{}", ms(a), ms(b))
    };
    t.row(vec!["build::prepare + write (in process)".into(), n_lib.to_string(), ms(median(&lib)), sp(&lib)]);
    t.row(vec!["`flashline build RECIPE -o OUT` (whole process)".into(), n_proc.to_string(), ms(median(&procs)), sp(&procs)]);
    let _ = spread;
    t.note(format!(
        "reads and checks both Intel HEX inputs (SHA-256 pinned), merges firmware + DFU bootloader at 0x1E000, checks fuses and the boot section, renders {} data bytes into {} bytes of hex and writes it",
        data, size
    ));
    Ok(t)
}
