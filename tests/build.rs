//! The production-image builder: real cases (Caterina-Micro split and merged back, QMK's 32U4
//! DFU keeping its start address, the AT90USB128 bootloader above 64 KiB), byte identity with
//! `srec_cat`, and every refusal with one malformed input each.

use std::path::{Path, PathBuf};
use std::process::Command;

use flashline::build::{self, BuildError, HighFuseOrigin, Role};
use flashline::fuse::FuseHazard;
use flashline::hex;
use flashline::image::{Image, StartAddress};
use flashline::part::{ClockClass, FuseSet};
use flashline::verify::VerifyPolicy;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

/// A scratch directory holding a recipe and its inputs.
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
    fn image(&self, rel: &str, im: &Image) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        hex::write_file(&p, im, 16).unwrap();
        p
    }
    fn copy(&self, fixture_name: &str, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::copy(fixture(fixture_name), &p).unwrap();
        p
    }
    fn text(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }
    fn recipe(&self, yaml: &str) -> PathBuf {
        self.text("recipe.yaml", yaml)
    }
}

/// A firmware-looking image: `len` bytes from 0.
fn firmware(len: usize) -> Image {
    let mut im = Image::new();
    let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    im.insert(0, &bytes).unwrap();
    im
}

fn err(recipe: &Path) -> BuildError {
    match build::prepare(recipe) {
        Ok(p) => panic!("prepared without error: {:?}", p.image.ranges()),
        Err(e) => e,
    }
}

fn sha256(bytes: &[u8]) -> String {
    build::sha256_hex(bytes)
}

/// srec_cat's merge of `inputs` as a flat binary of `size` bytes with gaps filled by `fill`.
fn srec_flat(inputs: &[&Path], size: u32, fill: u8) -> Vec<u8> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new("srec_cat");
    cmd.arg("(");
    for i in inputs {
        cmd.arg(i).arg("-Intel");
    }
    cmd.arg(")")
        .args(["-fill", &format!("0x{fill:02X}"), "0", &format!("0x{size:X}")])
        .arg("-o")
        .arg(out.path())
        .arg("-Binary");
    let o = cmd.output().expect("srec_cat (Debian package srecord) must be installed: .ci/run installs it");
    assert!(o.status.success(), "srec_cat failed: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out.path()).unwrap()
}

/// Same memory image as srec_cat: equal flats with two different fills means the same bytes
/// at the same addresses and the same gaps.
fn assert_same_as_srec_cat(inputs: &[&Path], image: &Image, size: u32) {
    for fill in [0xFF, 0x00] {
        let theirs = srec_flat(inputs, size, fill);
        let ours = image.to_flat(size, fill);
        assert_eq!(theirs.len(), ours.len());
        if let Some(i) = (0..ours.len()).find(|&i| ours[i] != theirs[i]) {
            panic!("differs from srec_cat at 0x{i:05X} (fill {fill:02X}): ours {:02X}, srec_cat {:02X}", ours[i], theirs[i]);
        }
    }
}

// ---- real cases ------------------------------------------------------------------------------

#[test]
fn caterina_micro_split_at_0x7000_merges_back_identically() {
    let original = hex::read_file(&fixture("Caterina-Micro.hex")).unwrap();
    assert_eq!(original.len(), 32730);
    let s = Scratch::new();
    let app = s.image("fw/app.hex", &original.slice(0..0x7000));
    let bl = s.image("bl/caterina.hex", &original.slice(0x7000..0x8000));
    let r = s.recipe("sku: MICRO\nmcu: atmega32u4\nfirmware: fw/app.hex\nbootloader: { catalog: caterina-micro, file: bl/caterina.hex }\n");
    let p = build::prepare(&r).unwrap();
    let a = p.avr().expect("an AVR production");
    assert_eq!(p.image, original, "merged image equals the original production image");
    assert_eq!(a.fuses, FuseSet { low: Some(0xFF), high: Some(0xD8), extended: Some(0xFB) });
    assert_eq!(a.clock, Some(ClockClass::Crystal), "clock inferred from the catalog's low fuse");
    assert_eq!(a.boot.origin, HighFuseOrigin::Catalog);
    assert!(a.boot.bootrst);
    // The written production hex means the same image, and its hash is the file's hash.
    let back = hex::parse(&p.hex, "out").unwrap();
    assert_eq!(back, original);
    assert_eq!(p.image_sha256, sha256(p.hex.as_bytes()));
    // Independent merger agrees, on the inputs and on our output.
    assert_same_as_srec_cat(&[&app, &bl], &p.image, 0x8000);
    let out = s.path("out.hex");
    p.write(&out).unwrap();
    assert_same_as_srec_cat(&[&out], &original, 0x8000);
    assert_same_as_srec_cat(&[&fixture("Caterina-Micro.hex")], &p.image, 0x8000);
}

#[test]
fn qmk_32u4_dfu_merges_with_firmware_and_keeps_its_start_address() {
    let s = Scratch::new();
    let fw = s.image("fw/planck.hex", &firmware(0x5A30));
    let bl = s.copy("bootloader_atmega32u4_1_0_0.hex", "bl/dfu.hex");
    let r = s.recipe(
        "sku: PLANCK\nmcu: atmega32u4\nfirmware: fw/planck.hex\nbootloader: { catalog: atmel-dfu-atmega32u4, file: bl/dfu.hex }\n",
    );
    let p = build::prepare(&r).unwrap();
    let a = p.avr().expect("an AVR production");
    assert_eq!(p.image.start, Some(StartAddress::Segment { cs: 0, ip: 0x7000 }));
    assert!(p.hex.ends_with(":040000030000700089\n:00000001FF\n"), "start record written before EOF");
    assert_eq!(a.fuses, FuseSet { low: Some(0x5E), high: Some(0x99), extended: Some(0xF3) });
    assert!(!a.boot.bootrst && a.boot.hwbe, "Atmel DFU enters through HWB, not BOOTRST");
    assert_eq!(p.bootloader_entry.unwrap().name, "atmel-dfu-atmega32u4");
    assert_same_as_srec_cat(&[&fw, &bl], &p.image, 0x8000);
    let back = hex::parse(&p.hex, "out").unwrap();
    assert_eq!(back, p.image);
}

#[test]
fn at90usb128_bootloader_above_64k_round_trips_through_the_output() {
    let s = Scratch::new();
    let fw = s.image("fw/big.hex", &firmware(0x1B400));
    let bl = s.copy("bootloader_at90usb128_1.0.1.hex", "bl/dfu128.hex");
    let r = s.recipe(
        "sku: BIG\nmcu: at90usb1286\nfirmware: fw/big.hex\nbootloader: { catalog: atmel-dfu-at90usb128, file: bl/dfu128.hex }\nrecord_size: 32\n",
    );
    let p = build::prepare(&r).unwrap();
    let a = p.avr().expect("an AVR production");
    assert_eq!(a.boot.start, 0x1E000);
    assert_eq!(p.image.start, Some(StartAddress::Segment { cs: 0x1000, ip: 0xE000 }));
    assert!(p.hex.contains("\n:020000040001F9\n"), "extended linear address record for 0x1xxxx");
    let back = hex::parse(&p.hex, "out").unwrap();
    assert_eq!(back, p.image);
    let bl_image = hex::read_file(&bl).unwrap();
    assert_eq!(back.slice(0x1E000..0x20000), {
        let mut b = bl_image.clone();
        b.start = None;
        b
    });
    assert_same_as_srec_cat(&[&fw, &bl], &p.image, 0x20000);
    let out = s.path("out.hex");
    p.write(&out).unwrap();
    assert_same_as_srec_cat(&[&out], &p.image, 0x20000);
}

#[test]
fn shipped_example_recipes_build_and_match_srec_cat() {
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("recipes")).unwrap() {
        let r = entry.unwrap().path().join("recipe.yaml");
        if !r.exists() {
            continue;
        }
        n += 1;
        let p = build::prepare(&r).unwrap_or_else(|e| panic!("{}: {e}", r.display()));
        let Some(a) = p.avr() else {
            continue; // the Bluepill recipes (binary inputs at 0x08000000): tests/build_stm32.rs
        };
        let mut inputs = vec![p.firmware_path.clone()];
        inputs.extend(p.bootloader_path.clone());
        let refs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
        assert_same_as_srec_cat(&refs, &p.image, a.part.flash_size);
        assert_eq!(p.recipe_sha256, sha256(&std::fs::read(&r).unwrap()));
        assert!(p.hex.lines().all(|l| l.len() <= 11 + 2 * p.recipe.record_size));
    }
    assert!(n >= 3, "at least three example SKUs");
}

#[test]
fn recipe_keys_reach_the_production() {
    let p = build::prepare(&root().join("recipes/uno-keypad/recipe.yaml")).unwrap();
    let a = p.avr().expect("an AVR production");
    assert_eq!(a.part.id, "atmega328p");
    assert_eq!(a.lock, Some(0x0F));
    assert_eq!(p.verify, VerifyPolicy::Written);
    let serial = p.serial.as_ref().unwrap();
    assert!(serial.matches("UK00042") && !serial.matches("UK0004"));
    assert_eq!(serial.render(1000).unwrap(), vec![0, 0, 0x03, 0xE8]);
    let p = build::prepare(&root().join("recipes/planck-rev4/recipe.yaml")).unwrap();
    assert_eq!(p.verify, VerifyPolicy::Full);
    assert_eq!(p.serial.as_ref().unwrap().render(7).unwrap(), b"00000007");
}

// ---- refusals, one malformed input each ------------------------------------------------------

const DFU_BL: &str = "bootloader: { catalog: atmel-dfu-atmega32u4, file: bl/dfu.hex }\n";

fn dfu_scratch(fw: &Image) -> Scratch {
    let s = Scratch::new();
    s.image("fw/fw.hex", fw);
    s.copy("bootloader_atmega32u4_1_0_0.hex", "bl/dfu.hex");
    s
}

#[test]
fn refuses_overlap_and_says_where() {
    let mut fw = firmware(0x100);
    fw.insert(0x7030, &[0xAA; 8]).unwrap(); // stray data inside the bootloader's code
    let s = dfu_scratch(&fw);
    let e = err(&s.recipe(&format!("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\n{DFU_BL}")));
    assert!(matches!(&e, BuildError::Overlap { ranges, .. } if ranges.len() == 1 && ranges[0] == (0x7030..0x7038)), "{e:?}");
    assert!(e.to_string().contains("overlap at 0x7030..0x7037"), "{e}");
}

#[test]
fn refuses_bytes_beyond_flash() {
    let mut fw = firmware(0x100);
    fw.insert(0x8000, &[1, 2]).unwrap();
    let s = dfu_scratch(&fw);
    let e = err(&s.recipe(&format!("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\n{DFU_BL}")));
    assert!(matches!(&e, BuildError::BeyondFlash { role: Role::Firmware, .. }), "{e:?}");
    assert!(e.to_string().contains("0x8000..0x8001 beyond the ATmega32U4's flash (0x0000..0x7FFF)"), "{e}");
    // A 128 KiB part's bootloader on a 32 KiB part is beyond flash too.
    let s = Scratch::new();
    s.image("fw/fw.hex", &firmware(0x100));
    s.copy("bootloader_at90usb128_1.0.1.hex", "bl/dfu.hex");
    let e = err(&s.recipe("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\nbootloader: bl/dfu.hex\n"));
    assert!(matches!(&e, BuildError::BeyondFlash { role: Role::Bootloader, .. }), "{e:?}");
}

#[test]
fn refuses_firmware_reaching_into_the_boot_section() {
    // DFU fuses: BOOTSZ=00, boot section 0x7000..0x7FFF. No bootloader, so no overlap.
    let s = Scratch::new();
    s.image("fw/fw.hex", &firmware(0x7008));
    let e = err(&s.recipe("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\nfuses: { low: 0x5E, high: 0x99, extended: 0xF3 }\nclock: crystal\n"));
    assert!(matches!(&e, BuildError::FirmwareInBootSection { ranges, .. } if ranges.len() == 1 && ranges[0] == (0x7000..0x7008)), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("boot section 0x7000..0x7FFF") && msg.contains("BOOTSZ=00") && msg.contains("0x99"), "{msg}");
    // The same firmware fits when BOOTSZ=11 (512 B at 0x7E00).
    let r = s.recipe("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\nfuses: { low: 0x5E, high: 0x9F, extended: 0xF3 }\nclock: crystal\n");
    build::prepare(&r).unwrap();
}

#[test]
fn refuses_bootloader_not_at_the_boot_section_when_bootrst_points_there() {
    // A 2 KiB bootloader at 0x7800 with Caterina fuses (H 0xD8: BOOTSZ=00 → 0x7000, BOOTRST on).
    let s = Scratch::new();
    s.image("fw/fw.hex", &firmware(0x100));
    let mut bl = Image::new();
    bl.insert(0x7800, &[0x0C, 0x94, 0x00, 0x3C]).unwrap();
    s.image("bl/small.hex", &bl);
    let e = err(&s.recipe("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\nbootloader: { catalog: caterina-promicro16, file: bl/small.hex }\n"));
    assert!(matches!(&e, BuildError::BootloaderStart { start: 0x7800, entry, .. } if entry.starts_with("BOOTRST")), "{e:?}");
    assert!(e.to_string().contains("starts at 0x7800") && e.to_string().contains("at 0x7000"), "{e}");
    // With BOOTSZ=01 (2 KiB at 0x7800) the same bootloader is right.
    let r = s.recipe("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\nbootloader: { catalog: caterina-promicro16, file: bl/small.hex }\nfuses: { high: 0xDA }\n");
    let p = build::prepare(&r).unwrap();
    let a = p.avr().expect("an AVR production");
    assert_eq!(a.fuses, FuseSet { low: Some(0xFF), high: Some(0xDA), extended: Some(0xFB) });
    assert_eq!(a.boot.origin, HighFuseOrigin::Recipe);
}

#[test]
fn refuses_bootloader_below_the_boot_section() {
    // Caterina at 0x7000 but the recipe's high fuse selects 2 KiB (0x7800).
    let s = Scratch::new();
    s.image("fw/fw.hex", &firmware(0x100));
    s.image("bl/cat.hex", &hex::read_file(&fixture("Caterina-Micro.hex")).unwrap().slice(0x7000..0x8000));
    let e = err(&s.recipe("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\nbootloader: { catalog: caterina-micro, file: bl/cat.hex }\nfuses: { high: 0xDA }\n"));
    assert!(matches!(&e, BuildError::BootloaderBelowBootSection { start: 0x7000, .. }), "{e:?}");
    assert!(e.to_string().contains("below the boot section 0x7800..0x7FFF"), "{e}");
}

#[test]
fn refuses_bootrst_into_an_empty_boot_section() {
    let s = Scratch::new();
    s.image("fw/fw.hex", &firmware(0x100));
    let e = err(&s.recipe("sku: X\nmcu: atmega328p\nfirmware: fw/fw.hex\nfuses: { low: 0xFF, high: 0xDE }\nclock: crystal\n"));
    assert!(matches!(&e, BuildError::ResetIntoNothing { .. }), "{e:?}");
}

#[test]
fn refuses_pinned_hash_mismatch() {
    let s = dfu_scratch(&firmware(0x100));
    let good_fw = sha256(&std::fs::read(s.path("fw/fw.hex")).unwrap());
    let good_bl = sha256(&std::fs::read(s.path("bl/dfu.hex")).unwrap());
    let wrong = "0".repeat(64);
    let base = format!("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\n{DFU_BL}");
    let e = err(&s.recipe(&format!("{base}sha256: {{ firmware: {wrong}, bootloader: {good_bl} }}\n")));
    assert!(matches!(&e, BuildError::HashMismatch { role: Role::Firmware, actual, .. } if actual == &good_fw), "{e:?}");
    assert!(e.to_string().contains(&good_fw) && e.to_string().contains(&wrong), "{e}");
    let e = err(&s.recipe(&format!("{base}sha256: {{ firmware: {good_fw}, bootloader: {wrong} }}\n")));
    assert!(matches!(&e, BuildError::HashMismatch { role: Role::Bootloader, .. }), "{e:?}");
    // Upper-case pins are the same pins.
    let p = build::prepare(&s.recipe(&format!("{base}sha256: {{ firmware: {}, bootloader: {good_bl} }}\n", good_fw.to_uppercase()))).unwrap();
    assert_eq!(p.firmware_sha256, good_fw);
}

#[test]
fn refuses_dangerous_fuses_unless_overridden() {
    let s = dfu_scratch(&firmware(0x100));
    let base = format!("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\n{DFU_BL}");
    // SPIEN unprogrammed (bit 5 of 0xF9 is 1).
    let e = err(&s.recipe(&format!("{base}fuses: {{ high: 0xF9 }}\n")));
    assert!(matches!(&e, BuildError::Fuses(f) if f.problems[0].hazard == FuseHazard::SpienDisabled), "{e:?}");
    assert!(e.to_string().contains("allow_dangerous_fuses: [spien-disabled]"), "{e}");
    build::prepare(&s.recipe(&format!("{base}fuses: {{ high: 0xF9 }}\nallow_dangerous_fuses: [spien-disabled]\n"))).unwrap();
    // Internal RC selected while the catalog (and so the board) says crystal.
    let e = err(&s.recipe(&format!("{base}fuses: {{ low: 0x52 }}\n")));
    assert!(matches!(&e, BuildError::Fuses(f) if f.problems[0].hazard == FuseHazard::Clock), "{e:?}");
    assert!(e.to_string().contains("internal-rc") && e.to_string().contains("clock: crystal"), "{e}");
    // Declaring the clock makes the same fuse fine.
    build::prepare(&s.recipe(&format!("{base}fuses: {{ low: 0x52 }}\nclock: internal-rc\n"))).unwrap();
    // A declared clock that the catalog's fuses contradict is refused.
    let e = err(&s.recipe(&format!("{base}clock: external-clock\n")));
    assert!(matches!(&e, BuildError::Fuses(_)), "{e:?}");
    // RSTDISBL on the 328P.
    let s = Scratch::new();
    s.image("fw/fw.hex", &firmware(0x100));
    s.copy("optiboot_atmega328.hex", "bl/opti.hex");
    let e = err(&s.recipe("sku: X\nmcu: atmega328p\nfirmware: fw/fw.hex\nbootloader: { catalog: optiboot-atmega328p, file: bl/opti.hex }\nfuses: { high: 0x5E }\n"));
    assert!(matches!(&e, BuildError::Fuses(f) if f.problems[0].hazard == FuseHazard::Rstdisbl), "{e:?}");
    // Low fuse with no declared clock and no catalog to infer it from.
    let e = err(&s.recipe("sku: X\nmcu: atmega328p\nfirmware: fw/fw.hex\nbootloader: bl/opti.hex\nfuses: { low: 0xFF, high: 0xDE }\n"));
    assert!(e.to_string().contains("declares no clock"), "{e}");
}

#[test]
fn hex_errors_in_inputs_name_role_file_and_line() {
    let s = Scratch::new();
    s.text("fw/fw.hex", ":0400000001020304F2\n:0400040001020304FF\n:00000001FF\n");
    let e = err(&s.recipe("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\n"));
    let msg = e.to_string();
    assert!(msg.starts_with("firmware: ") && msg.contains("fw/fw.hex:2: bad checksum"), "{msg}");
    let e = err(&s.recipe("sku: X\nmcu: atmega32u4\nfirmware: fw/missing.hex\n"));
    assert!(e.to_string().contains("fw/missing.hex: cannot read"), "{e}");
    s.text("fw/empty.hex", ":00000001FF\n");
    let e = err(&s.recipe("sku: X\nmcu: atmega32u4\nfirmware: fw/empty.hex\n"));
    assert!(matches!(e, BuildError::Empty { role: Role::Firmware, .. }), "{e:?}");
}

#[test]
fn recipe_errors_carry_line_and_column() {
    let s = Scratch::new();
    s.image("fw/fw.hex", &firmware(0x100));
    let cases: &[(&str, &str)] = &[
        ("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\nfuse: { low: 0x5E }\n", "recipe.yaml:4:1: unknown field `fuse`"),
        ("sku: X\nmcu: atmega2560\nfirmware: fw/fw.hex\n", "recipe.yaml:2:6: mcu: unknown part 'atmega2560'"),
        ("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\nbootloader: { catalog: catarina, file: b.hex }\n", "recipe.yaml:4:24: bootloader.catalog: unknown bootloader catalog entry 'catarina'"),
        ("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\nfuses: { low: 0x15E }\n", "recipe.yaml:4:15: fuses.low: 350 (0x15E) is larger than 0xFF"),
        ("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\nrecord_size: 64\n", "recipe.yaml:4:14: record_size: must be 16 or 32, not 64"),
        ("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\nverify: some\n", "recipe.yaml:4:9: verify: unknown variant `some`"),
        ("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\nclock: quartz\n", "recipe.yaml:4:8: clock: unknown variant `quartz`"),
        ("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\nsha256: { firmware: abc }\n", "recipe.yaml:4:21: sha256.firmware: 'abc' is not a SHA-256"),
        ("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\nserial: { pattern: '[' }\n", "recipe.yaml:4:20: serial.pattern: not a valid regex"),
        ("mcu: atmega32u4\nfirmware: fw/fw.hex\n", "missing field `sku`"),
    ];
    for (yaml, want) in cases {
        let e = err(&s.recipe(yaml));
        let msg = e.to_string();
        let rel = msg.replace(&format!("{}/", s.dir.path().display()), "");
        assert!(rel.contains(want), "want {want:?}, got {rel:?}");
    }
}

#[test]
fn recipe_cross_checks() {
    let s = Scratch::new();
    s.image("fw/fw.hex", &firmware(0x100));
    s.copy("optiboot_atmega328.hex", "bl/opti.hex");
    let e = err(&s.recipe("sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\nbootloader: { catalog: optiboot-atmega328p, file: bl/opti.hex }\n"));
    assert!(e.to_string().contains("optiboot-atmega328p is for the ATmega328P, but mcu is ATmega32U4"), "{e}");
    let e = err(&s.recipe("sku: X\nmcu: atmega32a\nfirmware: fw/fw.hex\nfuses: { low: 0x1F, extended: 0xFF }\nclock: crystal\n"));
    assert!(e.to_string().contains("has no extended fuse byte"), "{e}");
}

#[test]
fn serial_write_regions_are_checked() {
    let s = Scratch::new();
    s.image("fw/fw.hex", &firmware(0x200));
    let base = "sku: X\nmcu: atmega32u4\nfirmware: fw/fw.hex\n";
    let e = err(&s.recipe(&format!("{base}serial: {{ write: {{ memory: eeprom, address: 0x3FE, format: u32le }} }}\n")));
    assert!(matches!(&e, BuildError::Serial(m) if m.contains("run past the ATmega32U4's 1024-byte EEPROM")), "{e}");
    let e = err(&s.recipe(&format!("{base}serial: {{ write: {{ memory: flash, address: 0x1F0, format: ascii, length: 12 }} }}\n")));
    assert!(matches!(&e, BuildError::Serial(m) if m.contains("holds image data")), "{e}");
    let e = err(&s.recipe(&format!("{base}serial: {{ write: {{ memory: eeprom, address: 0, format: ascii }} }}\n")));
    assert!(e.to_string().contains("length is required"), "{e}");
    let e = err(&s.recipe(&format!("{base}serial: {{ write: {{ memory: eeprom, address: 0, format: u32be, length: 2 }} }}\n")));
    assert!(e.to_string().contains("take 4 bytes"), "{e}");
    let e = err(&s.recipe(&format!("{base}serial: {{ write: {{ memory: eeprom, address: 0, format: ascii, length: 2, start: 100 }} }}\n")));
    assert!(e.to_string().contains("needs 3 digits"), "{e}");
    let p = build::prepare(&s.recipe(&format!("{base}serial: {{ write: {{ memory: flash, address: 0x6FF0, format: ascii, length: 16 }} }}\n"))).unwrap();
    assert_eq!(p.serial.unwrap().render(123).unwrap(), b"0000000000000123");
}
