//! The `flashline` binary: build, check, parts, bootloaders, fuses decode — exit codes,
//! stdout/stderr, and the files written.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn flashline() -> Command {
    let mut c = Command::cargo_bin("flashline").unwrap();
    c.timeout(std::time::Duration::from_secs(30));
    c
}

/// Copy a shipped example recipe directory into a scratch dir.
fn copy_recipe(name: &str, to: &Path) -> PathBuf {
    let src = root().join("recipes").join(name);
    let dst = to.join(name);
    for entry in walk(&src) {
        let rel = entry.strip_prefix(&src).unwrap();
        let d = dst.join(rel);
        std::fs::create_dir_all(d.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &d).unwrap();
    }
    dst.join("recipe.yaml")
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if !p.to_string_lossy().ends_with("_production.hex") {
            out.push(p);
        }
    }
    out
}

fn sha256_file(p: &Path) -> String {
    flashline::build::sha256_hex(&std::fs::read(p).unwrap())
}

#[test]
fn build_writes_default_output_next_to_the_recipe_and_prints_its_sha256() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = copy_recipe("planck-rev4", tmp.path());
    let out = recipe.parent().unwrap().join("planck_rev4_default_production.hex");
    let o = flashline().arg("build").arg(&recipe).assert().success();
    let stdout = String::from_utf8(o.get_output().stdout.clone()).unwrap();
    assert!(out.exists(), "{stdout}");
    let sha = sha256_file(&out);
    assert!(stdout.contains(&format!("sha256 {sha}")), "{stdout}");
    assert!(stdout.contains("0x0000..0x5A2F") && stdout.contains("0x7000..0x7003"), "ranges printed: {stdout}");
    assert!(stdout.contains("27036 bytes"), "byte count printed: {stdout}");
    // It is the same image the library prepares.
    let p = flashline::build::prepare(&recipe).unwrap();
    assert_eq!(p.image_sha256, sha);
    assert_eq!(flashline::hex::read_file(&out).unwrap(), p.image);
}

#[test]
fn build_with_output_option_on_a_128k_part() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = copy_recipe("kinesis-adv-1286", tmp.path());
    let out = tmp.path().join("kinesis.hex");
    flashline()
        .arg("build")
        .arg(&recipe)
        .arg("-o")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("start address 1000:E000"));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.lines().filter(|l| &l[7..9] == "00").all(|l| l.len() <= 11 + 64), "32-byte records");
    assert!(text.contains(":020000040001F9\n"));
    assert!(!recipe.parent().unwrap().join("kinesis_adv_default_production.hex").exists());
}

#[test]
fn check_validates_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = copy_recipe("uno-keypad", tmp.path());
    flashline()
        .arg("check")
        .arg(&recipe)
        .assert()
        .success()
        .stdout(predicate::str::contains("ok: UNO-KEYPAD passes every check"));
    let written: Vec<_> = walk(recipe.parent().unwrap());
    assert_eq!(written.len(), 3, "recipe + two inputs, nothing else: {written:?}");
    assert!(!recipe.parent().unwrap().join("uno_keypad_production.hex").exists());
}

#[test]
fn failures_exit_non_zero_with_the_message_on_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = copy_recipe("planck-rev4", tmp.path());
    // Corrupt one checksum in the firmware: the pin catches it first.
    let fw = recipe.parent().unwrap().join("fw/planck_rev4_default.hex");
    let text = std::fs::read_to_string(&fw).unwrap().replacen(":10000000", ":10000001", 1);
    std::fs::write(&fw, text).unwrap();
    for cmd in ["check", "build"] {
        flashline()
            .arg(cmd)
            .arg(&recipe)
            .assert()
            .failure()
            .stdout(predicate::str::is_empty())
            .stderr(predicate::str::contains("does not match the recipe's sha256 pin"))
            .stderr(predicate::str::contains("panicked").not());
    }
    // Without the pin, the hex error names file and line.
    let yaml = std::fs::read_to_string(&recipe).unwrap();
    let unpinned: String = yaml.lines().filter(|l| !l.contains("sha256") && !l.contains("  firmware:") && !l.contains("  bootloader: 9f")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&recipe, unpinned).unwrap();
    flashline()
        .arg("build")
        .arg(&recipe)
        .assert()
        .failure()
        .stderr(predicate::str::contains("planck_rev4_default.hex:1: bad checksum"));
    assert!(!recipe.parent().unwrap().join("planck_rev4_default_production.hex").exists(), "nothing written on failure");
    flashline()
        .arg("check")
        .arg(tmp.path().join("nope.yaml"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("nope.yaml: cannot read the recipe"));
}

#[test]
fn parts_and_bootloaders_list_the_catalogs() {
    let o = flashline().arg("parts").assert().success();
    let out = String::from_utf8(o.get_output().stdout.clone()).unwrap();
    for p in flashline::part::PARTS {
        assert!(out.contains(p.id), "{out}");
    }
    let o = flashline().arg("bootloaders").assert().success();
    let out = String::from_utf8(o.get_output().stdout.clone()).unwrap();
    for b in flashline::bootloader::CATALOG {
        assert!(out.lines().any(|l| l.starts_with(b.name)), "{}: {out}", b.name);
    }
    assert!(out.contains("caterina-promicro16") && out.contains("1B4F:9205") && out.contains("L:FF H:D8 E:FB"));
}

#[test]
fn fuses_decode_prints_each_field_in_words() {
    flashline()
        .args(["fuses", "decode", "--mcu", "atmega32u4", "--low", "0x5E", "--high", "0xD9", "--extended", "0xF3"])
        .assert()
        .success()
        .stdout(predicate::str::contains("CKSEL     = 1110 low power crystal oscillator"))
        .stdout(predicate::str::contains("BOOTSZ    = 00   boot section 4096 bytes (2048 words) at 0x7000..0x7FFF"))
        .stdout(predicate::str::contains("BOOTRST   = 1    reset jumps to 0x0000"))
        .stdout(predicate::str::contains("JTAGEN    = 1    JTAG interface enabled: no"))
        .stdout(predicate::str::contains("SPIEN     = 0    serial (ISP) programming enabled: yes"))
        .stdout(predicate::str::contains("EESAVE"))
        .stdout(predicate::str::contains("BODLEVEL  = 011  brown-out detection at 2.6 V"))
        .stdout(predicate::str::contains("extended fuse bits 11110000 do not exist"));
    flashline()
        .args(["fuses", "decode", "--mcu", "atmega328p", "--high", "0x5E"])
        .assert()
        .success()
        .stdout(predicate::str::contains("WARNING (rstdisbl)"));
    flashline()
        .args(["fuses", "decode", "--mcu", "atmega9999", "--low", "1"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("unknown mcu 'atmega9999'"));
    flashline()
        .args(["fuses", "decode", "--mcu", "atmega32a", "--extended", "0xFF"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no extended fuse byte"));
}
