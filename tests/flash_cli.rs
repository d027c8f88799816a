//! `flashline flash` / `flashline read` through the built binary, on the in-process simulated
//! programmer, with a real production image (tests/fixtures/Caterina-Micro.hex).

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn flashline(args: &[&str]) -> Output {
    assert_cmd::Command::new(env!("CARGO_BIN_EXE_flashline"))
        .args(args)
        .timeout(Duration::from_secs(60))
        .output()
        .expect("run flashline")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("stdout is not one JSON object ({e}):\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

#[test]
fn flash_json_prints_the_report() {
    let image = fixture("Caterina-Micro.hex");
    let out = flashline(&[
        "flash", "--programmer", "sim", "--mcu", "atmega32u4", image.to_str().unwrap(),
        "--lfuse", "0xFF", "--hfuse", "0xD8", "--efuse", "0xFB", "--lock", "0x2F", "--json",
    ]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_eq!(v["result"], "pass");
    assert_eq!(v["failure_class"], Value::Null);
    assert_eq!(v["signature"], "1E9587");
    assert_eq!(v["programmer"]["identity"], "sim:cli");
    assert_eq!(v["fuses_before"]["high"], "0x99");
    assert_eq!(v["fuses_after"]["low"], "0xFF");
    assert_eq!(v["fuses_after"]["high"], "0xD8");
    // E:FB written; the four bits the 32U4 lacks read back as the chip drives them (0xCB).
    assert_eq!(v["fuses_after"]["extended"], "0xCB");
    assert_eq!(v["lock_after"], "0xEF");
    // Caterina-Micro spans the whole 32 KiB; all-0xFF pages are skipped, every page verified.
    let written = v["pages_written"].as_u64().unwrap();
    let skipped = v["pages_skipped"].as_u64().unwrap();
    assert_eq!(written + skipped, 256);
    assert!(written > 0 && skipped > 0);
    assert_eq!(v["bytes_written"].as_u64(), Some(written * 128));
    assert_eq!(v["bytes_verified"], 32768);
    let steps: Vec<&str> = v["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["connect", "identify", "read_fuses", "erase", "program", "verify", "fuses", "lock", "leave"]);
    assert!(v["total_ms"].is_u64());
}

#[test]
fn flash_exit_codes_tell_board_from_equipment() {
    let image = fixture("Caterina-Micro.hex");
    let img = image.to_str().unwrap();

    let out = flashline(&["flash", "-c", "sim", "-p", "m32u4", img, "--fault", "wrong-chip", "--json"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(1), "board fault → 1");
    assert_eq!((v["result"].as_str(), v["failure_class"].as_str()), (Some("fail"), Some("wrong_chip")));
    assert!(v["message"].as_str().unwrap().contains("ATmega16U4"));

    let out = flashline(&["flash", "-c", "sim", "-p", "m32u4", img, "--fault", "unplug:3", "--json"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(3), "equipment fault → 3");
    assert_eq!((v["result"].as_str(), v["failure_class"].as_str()), (Some("error"), Some("programmer_gone")));

    let out = flashline(&["flash", "-c", "avrisp", "--port", "/nonexistent/ttyFL0", "-p", "m32u4", img, "--json"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(v["failure_class"], "programmer_open");
    assert!(v["steps"].as_array().map(Vec::len).unwrap_or(0) <= 1, "nothing ran on a board");
}

#[test]
fn flash_human_output_names_steps_and_reasons() {
    let image = fixture("Caterina-Micro.hex");
    let out = flashline(&["flash", "-c", "sim", "-p", "m32u4", image.to_str().unwrap(), "--fault", "slow", "--verify", "written"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("PASS"), "{stdout}");
    assert!(stderr.contains("lowered SCK to 93.75 kHz"), "{stderr}");
    assert!(stderr.contains("ok    program"), "{stderr}");

    let out = flashline(&["flash", "-c", "sim", "-p", "m32u4", image.to_str().unwrap(), "--fault", "stuck:0x6000"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.starts_with("FAIL") && stdout.contains("[verify_flash]") && stdout.contains("0x6000: expected 0xFF, read 0xFE"), "{stdout}");
}

#[test]
fn bad_input_is_a_clear_error_not_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.hex");
    std::fs::write(&bad, ":020000040000FA\n:10000000FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF01\n:00000001FF\n").unwrap();
    let out = flashline(&["flash", "-c", "sim", "-p", "m32u4", bad.to_str().unwrap(), "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("bad.hex:2") && stderr.contains("checksum"), "{stderr}");
    assert!(out.stdout.is_empty());

    let image = fixture("Caterina-Micro.hex");
    let out = flashline(&["flash", "-c", "sim", "-p", "atmega328", image.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("known parts are"));

    // The 32 KiB image does not fit a 16 KiB part: refused before any programmer is touched.
    let out = flashline(&["flash", "-c", "sim", "-p", "atmega16u4", image.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ATmega16U4 has only"));

    let out = flashline(&["flash", "-c", "usbasp", "-p", "m32u4", image.to_str().unwrap(), "--fault", "flaky"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only to --programmer sim"));
}

#[test]
fn read_writes_a_hex_dump() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump.hex");
    // A fresh simulated chip is erased: the dump trims every trailing 0xFF, leaving only EOF.
    let out = flashline(&["read", "-c", "sim", "-p", "m32u4", "-o", dump.to_str().unwrap(), "--json"]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_eq!(v["bytes_read"], 32768);
    assert_eq!(v["bytes_saved"], 0);
    assert_eq!(v["signature"], "1E9587");
    let image = flashline::hex::read_file(&dump).unwrap();
    assert!(image.is_empty());

    let out = flashline(&["read", "-c", "sim", "-p", "m32u4", "--fault", "no-target", "-o", dump.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("[no_target]"));
}

/// The real wire: `flash --programmer avrisp` on the STK500v1 emulator (a pty), then avrdude 7.1
/// verifies the chip byte for byte and `read` dumps exactly the image back.
#[test]
fn flash_over_avrisp_then_avrdude_verifies_and_read_matches() {
    use flashline::sim::stk500::{EmulatorOptions, Stk500Emulator, Stk500Mode};
    use flashline::sim::{Fault, SimOptions, SimTarget};

    let m = flashline::part::find("atmega32u4").unwrap();
    let emu = Stk500Emulator::spawn(SimTarget::new(m, SimOptions::new(false, Fault::None)), EmulatorOptions::new(Stk500Mode::Avrisp))
        .expect("pty");
    let port = emu.path().to_str().unwrap().to_string();
    let image = fixture("Caterina-Micro.hex");
    let out = flashline(&[
        "flash", "-c", "avrisp", "-P", &port, "-b", "115200", "-p", "m32u4", image.to_str().unwrap(),
        "--lfuse", "0xFF", "--hfuse", "0xD8", "--efuse", "0xFB", "--json",
    ]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_eq!(v["programmer"]["kind"], "avrisp");
    assert_eq!(v["fuses_after"]["high"], "0xD8");
    let expected = flashline::hex::read_file(&image).unwrap();
    assert_eq!(emu.target().flash(), &expected.to_flat(m.flash_size, 0xFF)[..]);

    let avrdude = assert_cmd::Command::new("avrdude")
        .args(["-c", "avrisp", "-b", "115200", "-p", "m32u4", "-P", &port, "-U"])
        .arg(format!("flash:v:{}:i", image.display()))
        .args(["-U", "hfuse:v:0xD8:m"])
        .timeout(Duration::from_secs(60))
        .output()
        .expect("run avrdude");
    let text = String::from_utf8_lossy(&avrdude.stderr).to_string() + &String::from_utf8_lossy(&avrdude.stdout);
    assert!(avrdude.status.success(), "{text}");
    assert!(text.contains("32730 bytes of flash verified"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump.hex");
    let out = flashline(&["read", "-c", "avrisp", "-P", &port, "-p", "m32u4", "-o", dump.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let back = flashline::hex::read_file(&dump).unwrap();
    let end = expected.end_addr().unwrap() as u32;
    // The dump trims trailing 0xFF only: it is the image's span, byte for byte.
    assert_eq!(back.to_flat(end, 0xFF), expected.to_flat(end, 0xFF));
    assert!(back.end_addr().unwrap() <= end as u64);
}

/// `flash --programmer avrdude` hands the whole job to the installed avrdude (here `-c avrisp`
/// on the STK500v1 emulator) and still prints one report; `read` refuses it with the avrdude
/// command to use instead.
#[test]
fn flash_through_the_avrdude_fallback() {
    use flashline::sim::stk500::{EmulatorOptions, Stk500Emulator, Stk500Mode};
    use flashline::sim::{Fault, SimOptions, SimTarget};

    let m = flashline::part::find("atmega32u4").unwrap();
    let emu = Stk500Emulator::spawn(SimTarget::new(m, SimOptions::new(false, Fault::None)), EmulatorOptions::new(Stk500Mode::Avrisp))
        .expect("pty");
    let port = emu.path().to_str().unwrap().to_string();
    let image = fixture("Caterina-Micro.hex");
    let out = flashline(&[
        "flash", "-c", "avrdude", "--avrdude-programmer", "avrisp", "-P", &port, "-b", "115200", "-p", "m32u4",
        image.to_str().unwrap(), "--hfuse", "0xD8", "--json",
    ]);
    let v = json(&out);
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_eq!(v["programmer"]["kind"], "avrdude");
    assert_eq!(v["result"], "pass");
    let expected = flashline::hex::read_file(&image).unwrap();
    assert_eq!(emu.target().flash(), &expected.to_flat(m.flash_size, 0xFF)[..]);
    assert_eq!(emu.target().fuse(flashline::part::FuseKind::High), 0xD8);

    let out = flashline(&["read", "-c", "avrdude", "--avrdude-programmer", "avrisp", "-P", &port, "-p", "m32u4", "-o", "/tmp/never.hex"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-U flash:r:/tmp/never.hex:i"));
}
