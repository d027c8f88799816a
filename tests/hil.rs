//! Hardware in the loop: the full job (`flashline flash`, then `flashline read` back) on the
//! real programmers of a station, named by environment variables — the way serialport-rs and
//! probe-rs keep hardware tests in the suite. With none set, each test prints why it skipped
//! and passes; CI has no programmers.
//!
//! | variable | meaning |
//! |---|---|
//! | `FLASHLINE_HIL_MCU` | the part on the test board (`atmega32u4`, `at90usb1286`, …); required |
//! | `FLASHLINE_HIL_AVRISP` | serial port of an ArduinoISP / Pro Micro / Teensy ISP (`/dev/ttyACM0`, `/dev/serial/by-id/…`) |
//! | `FLASHLINE_HIL_AVRISP_BAUD` | its baud (default 115200; 19200 for the stock ArduinoISP sketch) |
//! | `FLASHLINE_HIL_USBASP` | USBasp selector (`serial:0001A2`, `bus-port:1-1.4`, `usb` for the only one) |
//! | `FLASHLINE_HIL_USBTINY` | USBtinyISP / PocketAVR selector |
//! | `FLASHLINE_HIL_BUSPIRATE` | Bus Pirate serial port |
//! | `FLASHLINE_HIL_HEX` | image to program (default for atmega32u4: `tests/fixtures/Caterina-Micro.hex`) |
//! | `FLASHLINE_HIL_FUSES` | fuses to write and verify, `L:0xFF,H:0xD8,E:0xCB` (default: none — fuses are left alone) |
//!
//! Run on a new station with one sacrificial board per programmer (it is erased and
//! reprogrammed):
//! `FLASHLINE_HIL_MCU=atmega32u4 FLASHLINE_HIL_AVRISP=/dev/ttyACM0 cargo test --release --test hil -- --nocapture`.
//! `hil_harness_on_the_emulator` runs the same code against the STK500v1 emulator every time, so
//! the harness itself is tested even where no hardware is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use flashline::hex;
use flashline::sim::bridge::Bridge;
use flashline::sim::stk500::{EmulatorOptions, Stk500Emulator, Stk500Mode};
use flashline::sim::{Fault, SimOptions, SimTarget};

mod support;
use support::run_child;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// How one HIL run reaches its programmer.
struct Hil {
    kind: &'static str,
    /// `-P PORT` or `--usb SELECTOR`.
    select: Vec<String>,
    mcu: String,
    hex: PathBuf,
    fuses: Vec<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// The run for programmer `kind` configured by `var`, or why it is skipped.
fn configured(kind: &'static str, var: &str, usb: bool) -> Result<Hil, String> {
    let Some(sel) = env(var) else {
        return Err(format!("{var} is not set (e.g. {var}={})", if usb { "serial:0001A2" } else if kind == "buspirate" { "/dev/ttyUSB0" } else { "/dev/ttyACM0" }));
    };
    let Some(mcu) = env("FLASHLINE_HIL_MCU") else {
        return Err(format!("{var} is set but FLASHLINE_HIL_MCU is not (the part on the test board, e.g. atmega32u4)"));
    };
    let hex = match env("FLASHLINE_HIL_HEX") {
        Some(h) => PathBuf::from(h),
        None if flashline::part::find(&mcu).map(|p| p.id) == Some("atmega32u4") => Path::new(FIXTURES).join("Caterina-Micro.hex"),
        None => return Err(format!("FLASHLINE_HIL_HEX is not set and there is no default image for {mcu}")),
    };
    let mut select = if usb { vec!["--usb".to_string(), sel] } else { vec!["-P".to_string(), sel] };
    if kind == "avrisp" {
        select.extend(["-b".to_string(), env("FLASHLINE_HIL_AVRISP_BAUD").unwrap_or_else(|| "115200".into())]);
    }
    Ok(Hil { kind, select, mcu, hex, fuses: fuses_from(env("FLASHLINE_HIL_FUSES").as_deref())? })
}

/// `L:0xFF,H:0xD8,E:0xCB` → `--lfuse 0xFF --hfuse 0xD8 --efuse 0xCB`.
fn fuses_from(spec: Option<&str>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in spec.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = item.split_once(':').ok_or_else(|| format!("FLASHLINE_HIL_FUSES: '{item}' is not KIND:VALUE"))?;
        let flag = match k.to_ascii_uppercase().as_str() {
            "L" => "--lfuse",
            "H" => "--hfuse",
            "E" => "--efuse",
            _ => return Err(format!("FLASHLINE_HIL_FUSES: '{k}' is not L, H or E")),
        };
        out.extend([flag.to_string(), v.to_string()]);
    }
    Ok(out)
}

/// Flash, then read back and compare with the image, through the real binary.
fn run(h: &Hil) {
    let bin = env!("CARGO_BIN_EXE_flashline");
    let mut flash = Command::new(bin);
    flash.args(["flash", "-c", h.kind]).args(&h.select).args(["-p", &h.mcu]).arg(&h.hex).args(&h.fuses).arg("--json");
    let (ok, out, err) = run_child(&mut flash, Duration::from_secs(300));
    assert!(ok, "{} flash failed:\n{out}\n{err}", h.kind);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{}: flash --json printed no report ({e}): {out}", h.kind));
    assert_eq!(report["result"], "pass", "{}: {report}", h.kind);

    let dump = std::env::temp_dir().join(format!("flashline-hil-{}-{}.hex", h.kind, std::process::id()));
    let mut read = Command::new(bin);
    read.args(["read", "-c", h.kind]).args(&h.select).args(["-p", &h.mcu, "-o"]).arg(&dump);
    let (ok, out, err) = run_child(&mut read, Duration::from_secs(300));
    assert!(ok, "{} read failed:\n{out}\n{err}", h.kind);
    let image = hex::read_file(&h.hex).unwrap();
    let got = hex::read_file(&dump).unwrap();
    let _ = std::fs::remove_file(&dump);
    for (addr, data) in image.segments() {
        for (i, want) in data.iter().enumerate() {
            let a = addr + i as u32;
            // `read` leaves trailing 0xFF out.
            let have = got.get(a).unwrap_or(0xFF);
            assert_eq!(have, *want, "{}: read-back differs at 0x{a:04X}", h.kind);
        }
    }
    eprintln!("HIL {} ({}): programmed, verified and read back {} bytes", h.kind, h.select.join(" "), image.len());
}

fn hil(kind: &'static str, var: &str, usb: bool) {
    match configured(kind, var, usb) {
        Ok(h) => run(&h),
        Err(why) => eprintln!("skipped: HIL {kind}: {why}"),
    }
}

#[test]
fn hil_avrisp() {
    hil("avrisp", "FLASHLINE_HIL_AVRISP", false);
}

#[test]
fn hil_usbasp() {
    hil("usbasp", "FLASHLINE_HIL_USBASP", true);
}

#[test]
fn hil_usbtiny() {
    hil("usbtiny", "FLASHLINE_HIL_USBTINY", true);
}

#[test]
fn hil_buspirate() {
    hil("buspirate", "FLASHLINE_HIL_BUSPIRATE", false);
}

/// The harness itself, every time: the same flash + read-back against the timed STK500v1
/// emulator behind native CDC, as if it were a Pro Micro on /dev/ttyACM0.
#[test]
fn hil_harness_on_the_emulator() {
    let m = flashline::part::find("atmega32u4").unwrap();
    let emu = Stk500Emulator::spawn(SimTarget::new(m, SimOptions::new(true, Fault::None)), EmulatorOptions::new(Stk500Mode::Avrisp).line_timing(true).bridge(Bridge::Cdc)).expect("pty");
    let h = Hil {
        kind: "avrisp",
        select: vec!["-P".into(), emu.path().display().to_string()],
        mcu: "atmega32u4".into(),
        hex: Path::new(FIXTURES).join("Caterina-Micro.hex"),
        fuses: fuses_from(Some("L:0xFF,H:0xD8,E:0xCB")).unwrap(),
    };
    run(&h);
    assert_eq!(emu.target().fuse(flashline::part::FuseKind::High), 0xD8);
    assert!(fuses_from(Some("X:1")).is_err());
}
