//! The production-image builder for STM32F103 (Bluepill): the shipped recipes against the
//! issue's own `srec_cat` command, st-flash's md5 and byte sum of the real STM32duino
//! bootloader, the catalog as `flashline parts` shows it, and every refusal with one wrong
//! input each (overlap, application address, beyond flash, vector tables, read-out protection
//! without the override, AVR-only keys, raw binaries without an address).

use std::path::{Path, PathBuf};
use std::process::Command;

use flashline::build::{self, BuildError, Role};
use flashline::hex;
use flashline::image::Image;
use flashline::mcu::{Family, Mcu};
use flashline::recipe::Protect;

const BASE: u32 = 0x0800_0000;
const APP: u32 = 0x0800_2000;
const SRAM_END: u32 = 0x2000_5000;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_flashline")
}

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch { dir: tempfile::tempdir().unwrap() }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn hex(&self, rel: &str, im: &Image) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        hex::write_file(&p, im, 16).unwrap();
        p
    }
    fn bin(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }
    fn bootloader(&self) -> PathBuf {
        self.bin("bl/boot.bin", &std::fs::read(fixture("generic_boot20_pc13.bin")).unwrap())
    }
    fn recipe(&self, yaml: &str) -> PathBuf {
        self.bin("recipe.yaml", yaml.as_bytes())
    }
}

/// A Cortex-M application linked for `linked_at`, `len` bytes: vector table (SP, reset into
/// its own code, Thumb), then filler.
fn cortex_app(linked_at: u32, len: usize, sp: u32, reset_offset: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&sp.to_le_bytes());
    v.extend_from_slice(&(linked_at + reset_offset).to_le_bytes());
    for i in 2..59u32 {
        v.extend_from_slice(&(linked_at + 0x100 + (i & 1) * 4 + 1).to_le_bytes());
    }
    while v.len() < len {
        v.push((v.len() * 13 + v.len() / 7) as u8);
    }
    v.truncate(len);
    v
}

fn app(linked_at: u32, len: usize) -> Vec<u8> {
    cortex_app(linked_at, len, SRAM_END, 0xED)
}

fn image_at(addr: u32, bytes: &[u8]) -> Image {
    let mut im = Image::new();
    im.insert(addr, bytes).unwrap();
    im
}

fn err(recipe: &Path) -> BuildError {
    match build::prepare(recipe) {
        Ok(p) => panic!("prepared without error: {:?}", p.image.ranges()),
        Err(e) => e,
    }
}

/// `srec_cat` over `args` (its own input syntax), cropped to flash and moved to 0, as a flat
/// binary of `size` bytes with `fill` in the gaps.
fn srec_flat(args: &[String], size: u32, fill: u8) -> Vec<u8> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let o = Command::new("srec_cat")
        .arg("(")
        .args(args)
        .arg(")")
        .args(["-crop", &format!("0x{BASE:X}"), &format!("0x{:X}", BASE + size)])
        .args(["-offset", &format!("-0x{BASE:X}")])
        .args(["-fill", &format!("0x{fill:02X}"), "0", &format!("0x{size:X}")])
        .arg("-o")
        .arg(out.path())
        .arg("-binary")
        .output()
        .expect("srec_cat (Debian package srecord) must be installed: tests/run.sh installs it");
    assert!(o.status.success(), "srec_cat failed: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out.path()).unwrap()
}

fn our_flat(image: &Image, size: u32, fill: u8) -> Vec<u8> {
    let mut v = vec![fill; size as usize];
    for (a, d) in image.segments() {
        assert!(a >= BASE && a + d.len() as u32 <= BASE + size, "data outside flash at 0x{a:08X}");
        let o = (a - BASE) as usize;
        v[o..o + d.len()].copy_from_slice(d);
    }
    v
}

/// Same memory as srec_cat: equal flats with two different fills.
fn assert_same_as_srec_cat(args: &[String], image: &Image, size: u32) {
    for fill in [0xFF, 0x00] {
        let (theirs, ours) = (srec_flat(args, size, fill), our_flat(image, size, fill));
        if let Some(i) = (0..ours.len()).find(|&i| ours[i] != theirs[i]) {
            panic!("differs from srec_cat at 0x{:08X} (fill {fill:02X}): ours {:02X}, srec_cat {:02X}", BASE as usize + i, ours[i], theirs[i]);
        }
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

// ---- the shipped recipes ---------------------------------------------------------------------

#[test]
fn bluepill_stm32duino_recipe_equals_srec_cat_of_bootloader_and_firmware() {
    let dir = root().join("recipes/bluepill-stm32duino");
    let p = build::prepare(&dir.join("recipe.yaml")).unwrap();
    assert_eq!(p.mcu.id(), "stm32f103c8");
    assert_eq!(p.mcu.family(), Family::Stm32);
    let st = p.stm32().expect("an STM32 production");
    assert_eq!(st.app_start, APP);
    assert_eq!(st.app_vectors.table, APP);
    assert_eq!(st.bootloader_vectors.unwrap().table, BASE);
    assert_eq!(st.protect, None);
    assert_eq!(p.bootloader_entry.unwrap().name, "stm32duino-generic-pc13");
    // The command, exactly: `srec_cat bl.bin -binary -offset 0x08000000 fw.hex -intel`.
    let args = vec![
        s(&dir.join("bl/generic_boot20_pc13.bin")),
        "-binary".into(),
        "-offset".into(),
        "0x08000000".into(),
        s(&dir.join("fw/bluepill_macropad.hex")),
        "-intel".into(),
    ];
    assert_same_as_srec_cat(&args, &p.image, 0x10000);
    // The written production hex is the same memory too, and parses back to the image.
    let out = tempfile::tempdir().unwrap();
    let hex_out = out.path().join("out.hex");
    p.write(&hex_out).unwrap();
    assert_same_as_srec_cat(&[s(&hex_out), "-intel".into()], &p.image, 0x10000);
    assert_eq!(hex::read_file(&hex_out).unwrap(), p.image);
    // The bootloader bytes are the real file, unchanged, at 0x08000000.
    let bl = std::fs::read(fixture("generic_boot20_pc13.bin")).unwrap();
    assert_eq!(bl.len(), 7172);
    assert_eq!(p.image.slice(BASE as u64..BASE as u64 + 7172), image_at(BASE, &bl));
}

#[test]
fn bluepill_bare_recipe_places_the_binary_at_its_address_and_sets_readout_protection() {
    let dir = root().join("recipes/bluepill-bare");
    let p = build::prepare(&dir.join("recipe.yaml")).unwrap();
    let st = p.stm32().unwrap();
    assert_eq!(st.app_start, BASE, "no bootloader: the application is the reset image");
    assert!(st.bootloader_vectors.is_none());
    assert_eq!(st.protect, Some(Protect::Readout));
    let args = vec![s(&dir.join("fw/bluepill_bare.bin")), "-binary".into(), "-offset".into(), "0x08000000".into()];
    assert_same_as_srec_cat(&args, &p.image, 0x10000);
    let (start, flat) = p.flat_image();
    assert_eq!(start, BASE);
    assert_eq!(flat, std::fs::read(dir.join("fw/bluepill_bare.bin")).unwrap());
}

#[test]
fn check_prints_st_flash_md5_and_byte_sum_beside_the_sha256() {
    // st-flash 1.7's log in the seed guide, for generic_boot20_pc13.bin:
    //   md5 checksum: 333c30605e739ce9bedee5999fdaf81b, stlink checksum: 0x0008e534
    let bl = std::fs::read(fixture("generic_boot20_pc13.bin")).unwrap();
    assert_eq!(build::stflash_checksums(&bl), ("333c30605e739ce9bedee5999fdaf81b".to_string(), 0x0008_e534));
    let o = Command::new(bin()).args(["check"]).arg(root().join("recipes/bluepill-stm32duino/recipe.yaml")).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("md5 checksum: 333c30605e739ce9bedee5999fdaf81b, stlink checksum: 0x0008e534"), "{out}");
    assert!(out.contains("sha256 8738933a44363f2a3597c7bd6e13afb892b2a4ed304372c31e758745b23b903c"), "{out}");
    assert!(out.contains("STM32F103C8, STM32"), "{out}");
    assert!(out.contains("application at 0x08002000"), "{out}");
    // The whole image's line agrees with the library on the flat image.
    let p = build::prepare(&root().join("recipes/bluepill-stm32duino/recipe.yaml")).unwrap();
    let (md5, sum) = build::stflash_checksums(&p.flat_image().1);
    assert!(out.contains(&format!("md5 checksum: {md5}, stlink checksum: 0x{sum:08x}")), "{out}");
}

#[test]
fn build_writes_the_hex_that_srec_cat_agrees_with() {
    let s_ = Scratch::new();
    let out = s_.path("bp.hex");
    let o = Command::new(bin()).arg("build").arg(root().join("recipes/bluepill-stm32duino/recipe.yaml")).arg("-o").arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = root().join("recipes/bluepill-stm32duino");
    let p = build::prepare(&dir.join("recipe.yaml")).unwrap();
    assert_same_as_srec_cat(&[s(&out), "-intel".into()], &p.image, 0x10000);
}

#[test]
fn parts_and_bootloaders_list_the_bluepill_catalog() {
    let o = Command::new(bin()).arg("parts").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    for (id, size) in [("stm32f103c8", "65536"), ("stm32f103cb", "131072")] {
        let line = out.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("{id} missing:\n{out}"));
        for want in ["0x08000000", size, "1024", "20480", "0x410", "0x1FFFF7E0", "0x1FFFF7E8"] {
            assert!(line.contains(want), "{id}: {want} missing in {line}");
        }
    }
    let o = Command::new(bin()).arg("bootloaders").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().find(|l| l.contains("stm32duino-generic-pc13")).unwrap_or_else(|| panic!("{out}"));
    for want in ["stm32f103c8", "0x08002000", "1EAF:0003"] {
        assert!(line.contains(want), "{want} missing in {line}");
    }
    // Library side: both parts by name, the catalog row runs on both.
    for id in ["stm32f103c8", "stm32f103cb"] {
        let m = Mcu::find(id).unwrap();
        assert_eq!((m.family(), m.flash().start, m.page_size()), (Family::Stm32, BASE, 1024));
        assert!(flashline::bootloader::find("stm32duino-generic-pc13").unwrap().runs_on(id));
    }
}

#[test]
fn a_bootloader_without_catalog_row_puts_the_application_on_the_next_page() {
    let s_ = Scratch::new();
    s_.bootloader();
    // 7172 bytes end at 0x08001C03: the next 1 KiB page is 0x08002000.
    s_.hex("fw/app.hex", &image_at(APP, &app(APP, 0x800)));
    let p = build::prepare(&s_.recipe("sku: X\nmcu: stm32f103c8\nfirmware: fw/app.hex\nbootloader: { file: bl/boot.bin, address: 0x08000000 }\n")).unwrap();
    assert_eq!(p.stm32().unwrap().app_start, APP);
    // A raw-binary firmware with its address, on the 128 KiB part.
    s_.bin("fw/app.bin", &app(APP, 0x1_0000));
    let p = build::prepare(&s_.recipe(
        "sku: X\nmcu: stm32f103cb\nfirmware: { file: fw/app.bin, address: 0x08002000 }\nbootloader: { catalog: stm32duino-generic-pc13, file: bl/boot.bin }\n",
    ))
    .unwrap();
    assert_eq!(p.image.len(), 7172 + 0x1_0000);
}

// ---- refusals --------------------------------------------------------------------------------

const CATALOG: &str = "bootloader: { catalog: stm32duino-generic-pc13, file: bl/boot.bin }\n";

#[test]
fn refuses_firmware_overlapping_the_bootloader() {
    let s_ = Scratch::new();
    s_.bootloader();
    // An application that starts at 0x08002000 but also has data at 0x08001000 (inside the bootloader).
    let mut im = image_at(APP, &app(APP, 0x400));
    im.insert(0x0800_1000, &[0u8; 16]).unwrap();
    s_.hex("fw/app.hex", &im);
    let e = err(&s_.recipe(&format!("sku: X\nmcu: stm32f103c8\nfirmware: fw/app.hex\n{CATALOG}")));
    let m = e.to_string();
    assert!(matches!(e, BuildError::Overlap { .. }), "{e:?}");
    assert!(m.contains("0x8001000") || m.contains("0x08001000"), "{m}");
}

#[test]
fn refuses_overlap_of_bootloader_and_application_at_one_address() {
    let s_ = Scratch::new();
    // A bootloader file that runs past its 8 KiB slot into the application's first bytes.
    let mut big = std::fs::read(fixture("generic_boot20_pc13.bin")).unwrap();
    big.resize(0x2010, 0x00);
    s_.bin("bl/boot.bin", &big);
    s_.hex("fw/app.hex", &image_at(APP, &app(APP, 0x400)));
    let e = err(&s_.recipe(&format!("sku: X\nmcu: stm32f103c8\nfirmware: fw/app.hex\n{CATALOG}")));
    assert!(matches!(e, BuildError::Overlap { .. }), "{e:?}");
    let m = e.to_string();
    assert!(m.contains("overlap") && m.contains("0x8002000"), "{m}");
}

#[test]
fn refuses_an_application_not_at_the_bootloaders_application_address() {
    let s_ = Scratch::new();
    s_.bootloader();
    let at = 0x0800_4000;
    s_.hex("fw/app.hex", &image_at(at, &app(at, 0x400)));
    let e = err(&s_.recipe(&format!("sku: X\nmcu: stm32f103c8\nfirmware: fw/app.hex\n{CATALOG}")));
    assert!(matches!(e, BuildError::ApplicationAddress { start: 0x0800_4000, expected: APP, .. }), "{e:?}");
    let m = e.to_string();
    assert!(m.contains("0x08004000") && m.contains("0x08002000") && m.contains("stm32duino-generic-pc13"), "{m}");
}

#[test]
fn refuses_a_bootloaderless_application_not_at_the_start_of_flash() {
    let s_ = Scratch::new();
    s_.hex("fw/app.hex", &image_at(APP, &app(APP, 0x400)));
    let e = err(&s_.recipe("sku: X\nmcu: stm32f103c8\nfirmware: fw/app.hex\n"));
    assert!(matches!(e, BuildError::ApplicationAddress { start: APP, expected: BASE, .. }), "{e:?}");
    assert!(e.to_string().contains("BOOTLOADER = none"), "{e}");
}

#[test]
fn refuses_firmware_built_for_the_wrong_bootloader() {
    // The classic: QMK built with BOOTLOADER = none (linked at 0x08000000), placed at 0x08002000
    // for the STM32duino bootloader. Its reset vector points into the bootloader's slot.
    let s_ = Scratch::new();
    s_.bootloader();
    s_.bin("fw/app.bin", &app(BASE, 0x800));
    let e = err(&s_.recipe(&format!("sku: X\nmcu: stm32f103c8\nfirmware: {{ file: fw/app.bin, address: 0x08002000 }}\n{CATALOG}")));
    match &e {
        BuildError::VectorTable { role: Role::Firmware, table: APP, problem, advice, .. } => {
            assert!(problem.contains("reset vector 0x080000ED") && problem.contains("outside the firmware"), "{problem}");
            assert!(advice.contains("wrong BOOTLOADER"), "{advice}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn refuses_a_stack_pointer_outside_sram_and_a_reset_vector_that_is_not_thumb() {
    let s_ = Scratch::new();
    for (sp, why) in [(0x2000_5004u32, "initial stack pointer 0x20005004 is outside SRAM"), (0x0800_1000, "initial stack pointer 0x08001000")] {
        s_.bin("fw/app.bin", &cortex_app(BASE, 0x400, sp, 0xED));
        let e = err(&s_.recipe("sku: X\nmcu: stm32f103c8\nfirmware: { file: fw/app.bin, address: 0x08000000 }\n"));
        assert!(matches!(e, BuildError::VectorTable { role: Role::Firmware, .. }), "{e:?}");
        assert!(e.to_string().contains(why) && e.to_string().contains("0x20000000..0x20005000"), "{e}");
    }
    // SP exactly at the end of SRAM is right (the stack grows down).
    s_.bin("fw/app.bin", &cortex_app(BASE, 0x400, SRAM_END, 0xED));
    build::prepare(&s_.recipe("sku: X\nmcu: stm32f103c8\nfirmware: { file: fw/app.bin, address: 0x08000000 }\n")).unwrap();
    // An even reset vector: ARM state, which a Cortex-M3 cannot run.
    s_.bin("fw/app.bin", &cortex_app(BASE, 0x400, SRAM_END, 0xEC));
    let e = err(&s_.recipe("sku: X\nmcu: stm32f103c8\nfirmware: { file: fw/app.bin, address: 0x08000000 }\n"));
    assert!(e.to_string().contains("reset vector 0x080000EC is not a Thumb address"), "{e}");
    // Too short to hold a vector table at all.
    s_.bin("fw/app.bin", &[0x00, 0x50, 0x00]);
    let e = err(&s_.recipe("sku: X\nmcu: stm32f103c8\nfirmware: { file: fw/app.bin, address: 0x08000000 }\n"));
    assert!(e.to_string().contains("no complete vector table"), "{e}");
}

#[test]
fn refuses_an_image_beyond_flash() {
    let s_ = Scratch::new();
    // 64 KiB + 1 KiB from 0x08000000: fits the CB (128 KiB), not the C8 (64 KiB).
    s_.bin("fw/app.bin", &app(BASE, 0x1_0400));
    let yaml = |mcu: &str| format!("sku: X\nmcu: {mcu}\nfirmware: {{ file: fw/app.bin, address: 0x08000000 }}\n");
    let e = err(&s_.recipe(&yaml("stm32f103c8")));
    assert!(matches!(e, BuildError::BeyondFlash { role: Role::Firmware, .. }), "{e:?}");
    let m = e.to_string();
    assert!(m.contains("beyond the STM32F103C8's flash") && m.contains("0x8010000"), "{m}");
    build::prepare(&s_.recipe(&yaml("stm32f103cb"))).unwrap();
    // Below flash: a binary at SRAM's address.
    s_.bin("fw/app.bin", &app(0x2000_0000, 0x400));
    let e = err(&s_.recipe("sku: X\nmcu: stm32f103c8\nfirmware: { file: fw/app.bin, address: 0x20000000 }\n"));
    assert!(matches!(e, BuildError::BeyondFlash { .. }), "{e:?}");
}

#[test]
fn refuses_a_bootloader_not_at_the_start_of_flash() {
    let s_ = Scratch::new();
    s_.bootloader();
    s_.hex("fw/app.hex", &image_at(0x0800_4000, &app(0x0800_4000, 0x400)));
    let e = err(&s_.recipe("sku: X\nmcu: stm32f103c8\nfirmware: fw/app.hex\nbootloader: { file: bl/boot.bin, address: 0x08001000 }\n"));
    assert!(matches!(e, BuildError::VectorTable { role: Role::Bootloader, .. }), "{e:?}");
    assert!(e.to_string().contains("not at the start of flash"), "{e}");
}

fn recipe_err(s_: &Scratch, yaml: &str) -> String {
    let e = err(&s_.recipe(yaml));
    assert!(matches!(e, BuildError::Recipe(_)), "{e:?}");
    e.to_string()
}

#[test]
fn readout_protection_needs_the_explicit_override() {
    let s_ = Scratch::new();
    s_.bin("fw/app.bin", &app(BASE, 0x400));
    let base = "sku: X\nmcu: stm32f103c8\nfirmware: { file: fw/app.bin, address: 0x08000000 }\nprotect: readout\n";
    let m = recipe_err(&s_, base);
    assert!(m.contains("allow_dangerous: [readout-protection]") && m.contains("mass-erases"), "{m}");
    assert!(m.contains("recipe.yaml"), "names the file: {m}");
    let p = build::prepare(&s_.recipe(&format!("{base}allow_dangerous: [readout-protection]\n"))).unwrap();
    assert_eq!(p.stm32().unwrap().protect, Some(Protect::Readout));
    // The long spelling is the same key.
    build::prepare(&s_.recipe(&format!("{base}allow_dangerous_fuses: [readout-protection]\n"))).unwrap();
    // An unknown protection is a YAML error with its line.
    let m = recipe_err(&s_, "sku: X\nmcu: stm32f103c8\nfirmware: { file: fw/app.bin, address: 0x08000000 }\nprotect: level2\n");
    assert!(m.contains("line 4") || m.contains(":4:"), "{m}");
}

#[test]
fn avr_keys_are_refused_on_stm32_and_protect_on_avr() {
    let s_ = Scratch::new();
    s_.bin("fw/app.bin", &app(BASE, 0x400));
    let base = "sku: X\nmcu: stm32f103c8\nfirmware: { file: fw/app.bin, address: 0x08000000 }\n";
    for (extra, key) in [("fuses: { low: 0xFF }\n", "fuses"), ("lock: 0x0F\n", "lock"), ("clock: crystal\n", "clock")] {
        let m = recipe_err(&s_, &format!("{base}{extra}"));
        assert!(m.contains(key) && m.contains("STM32"), "{key}: {m}");
    }
    let m = recipe_err(
        &s_,
        &format!("{base}serial: {{ pattern: 'BP-[0-9]{{6}}', write: {{ memory: eeprom, address: 0x10, format: ascii, length: 9 }} }}\n"),
    );
    assert!(m.contains("EEPROM") || m.contains("eeprom"), "{m}");
    // An AVR catalog row on an STM32 part.
    s_.hex("bl/cat.hex", &image_at(0x7000, &[0x0C, 0x94, 0, 0]));
    let m = recipe_err(&s_, &format!("{base}bootloader: {{ catalog: caterina-micro, file: bl/cat.hex }}\n"));
    assert!(m.contains("caterina-micro") && m.contains("STM32F103C8") && m.contains("flashline bootloaders"), "{m}");
    // protect: on an AVR.
    let mut avr = Image::new();
    avr.insert(0, &[0x0C, 0x94, 0, 0]).unwrap();
    s_.hex("fw/avr.hex", &avr);
    let m = recipe_err(&s_, "sku: X\nmcu: atmega32u4\nfirmware: fw/avr.hex\nprotect: readout\n");
    assert!(m.contains("lock"), "{m}");
}

#[test]
fn raw_binaries_need_an_address_and_hex_files_refuse_one() {
    let s_ = Scratch::new();
    s_.bin("fw/app.bin", &app(BASE, 0x400));
    let m = recipe_err(&s_, "sku: X\nmcu: stm32f103c8\nfirmware: fw/app.bin\n");
    assert!(m.contains("raw binary") && m.contains("address: 0x08000000"), "{m}");
    s_.hex("fw/app.hex", &image_at(BASE, &app(BASE, 0x400)));
    let m = recipe_err(&s_, "sku: X\nmcu: stm32f103c8\nfirmware: { file: fw/app.hex, address: 0x08000000 }\n");
    assert!(m.contains("Intel HEX"), "{m}");
    s_.bootloader();
    s_.hex("fw/app.hex", &image_at(APP, &app(APP, 0x400)));
    let m = recipe_err(&s_, "sku: X\nmcu: stm32f103c8\nfirmware: fw/app.hex\nbootloader: bl/boot.bin\n");
    assert!(m.contains("raw binary") && m.contains("address"), "{m}");
}

#[test]
fn the_station_refuses_an_stm32_recipe_until_it_has_stm32_programmers() {
    let db = tempfile::tempdir().unwrap();
    let o = Command::new(bin())
        .args(["run", "--plain", "--scans", "/dev/null", "--station"])
        .arg(root().join("deploy/station.demo.yaml"))
        .arg(root().join("recipes/bluepill-stm32duino/recipe.yaml"))
        .env("FLASHLINE_DB", db.path().join("r.sqlite"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("STM32F103C8 (STM32)") && err.contains("station.demo.yaml") && err.contains("none of its slots"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
