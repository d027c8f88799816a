//! Issue 11: hostile input. The corpus in `tests/corpus/` (described in its `manifest.txt`)
//! runs through the real binary; property tests feed arbitrary bytes and YAML-shaped text to
//! the hex reader, the recipe and station loaders and the scan parser.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flashline::part;
use flashline::sim::buspirate::{BusPirateEmulator, BusPirateOptions};
use flashline::sim::stk500::{EmulatorOptions, Stk500Emulator, Stk500Mode};
use flashline::sim::{Fault, SimOptions, SimTarget};
use proptest::prelude::*;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

/// Copy the corpus into `dst` (the cases create FIFOs and large files there).
fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

fn unescape(s: &str) -> String {
    s.replace("\\n", "\n").replace("\\s", " ")
}

fn setup(dir: &Path, line: &str) {
    let f: Vec<&str> = line.split_whitespace().collect();
    match f[0] {
        "@fifo" => nix::unistd::mkfifo(&dir.join(f[1]), nix::sys::stat::Mode::S_IRWXU).unwrap(),
        "@sparse" => std::fs::File::create(dir.join(f[1])).unwrap().set_len(f[2].parse().unwrap()).unwrap(),
        "@repeat" => {
            let text = unescape(f[2]) + &unescape(f[3]).repeat(f[4].parse().unwrap());
            std::fs::write(dir.join(f[1]), text).unwrap();
        }
        other => panic!("manifest: unknown setup {other}"),
    }
}

/// Whether a terminal would act on `c` (everything `text::shown` escapes, except newline).
fn unsafe_on_terminal(c: char) -> bool {
    c != '\n' && flashline::text::is_unsafe(c)
}

struct Emulator {
    _keep: Box<dyn std::any::Any>,
    path: String,
}

fn emulator(protocol: &str) -> Emulator {
    let target = SimTarget::new(part::find("atmega328p").unwrap(), SimOptions::new(false, Fault::None));
    match protocol {
        "buspirate" => {
            let e = BusPirateEmulator::spawn(target, BusPirateOptions::default()).unwrap();
            Emulator { path: e.path().display().to_string(), _keep: Box::new(e) }
        }
        p => {
            let mode = if p == "arduino" { Stk500Mode::Arduino } else { Stk500Mode::Avrisp };
            let e = Stk500Emulator::spawn(target, EmulatorOptions::new(mode)).unwrap();
            Emulator { path: e.path().display().to_string(), _keep: Box::new(e) }
        }
    }
}

#[test]
fn corpus_cases_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("corpus");
    copy_dir(&corpus(), &dir);
    let manifest = std::fs::read_to_string(corpus().join("manifest.txt")).unwrap();
    let mut cases = 0;
    let mut failures = Vec::new();
    for (n, line) in manifest.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('@') {
            setup(&dir, line);
            continue;
        }
        let f: Vec<&str> = line.splitn(4, " | ").collect();
        assert_eq!(f.len(), 4, "manifest line {}: KIND | PATH | OUTCOME | EXPECTED", n + 1);
        let (kind, path, outcome, expected) = (f[0], f[1], f[2], f[3]);
        cases += 1;
        let db = tmp.path().join(format!("case{n}.db"));
        let db = db.to_str().unwrap();
        let mut _emu = None;
        let mut expected = expected.replace("{}", path);
        let args: Vec<String> = match kind {
            "recipe" => vec!["check".into(), path.into()],
            "hex" => ["flash", "-c", "sim", "-p", "atmega32u4", path].map(String::from).to_vec(),
            "station" => ["run", "base/recipe.yaml", "--station", path, "--scans", "base/empty.txt", "--db", db].map(String::from).to_vec(),
            "scans" | "scans-pattern" => {
                let recipe = if kind == "scans" { "base/recipe.yaml" } else { "base/pattern.yaml" };
                ["run", recipe, "--station", "base/station.yaml", "--scans", path, "--db", db].map(String::from).to_vec()
            }
            "args" => path.split(' ').map(String::from).collect(),
            "emulator" => {
                let (emulated, driver) = path.split_once('>').unwrap();
                let e = emulator(emulated);
                expected = expected.replace("{port}", &e.path);
                let args = ["flash", "-c", driver, "-P", &e.path, "-p", "atmega328p", "base/ok.hex"].map(String::from).to_vec();
                _emu = Some(e);
                args
            }
            other => panic!("manifest line {}: unknown kind {other}", n + 1),
        };
        let out = assert_cmd::Command::cargo_bin("flashline")
            .unwrap()
            .current_dir(&dir)
            .args(&args)
            .env("RUST_BACKTRACE", "0")
            .env_remove("FLASHLINE_DB")
            .env_remove("RUST_LOG")
            .timeout(Duration::from_secs(60))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        let mut problems = Vec::new();
        let want_code = match outcome {
            "refused" => 2,
            "accepted" => 0,
            "equipment" => 3,
            o => panic!("manifest line {}: unknown outcome {o}", n + 1),
        };
        if code != Some(want_code) {
            problems.push(format!("exit {code:?}, expected {want_code} (None: killed by the timeout or a signal)"));
        }
        let (haystack, which) = if outcome == "refused" { (&stderr, "stderr") } else { (&stdout, "stdout") };
        let found = haystack.matches(expected.as_str()).count();
        if found == 0 || (outcome == "refused" && found > 1) {
            problems.push(format!("{which} holds `{expected}` {found} times"));
        }
        if outcome == "refused" && stderr.lines().filter(|l| l.starts_with("error:")).count() != 1 {
            problems.push("the error is not printed exactly once".into());
        }
        for (what, text) in [("stdout", &stdout), ("stderr", &stderr)] {
            if text.contains("panicked") || text.contains("RUST_BACKTRACE") {
                problems.push(format!("{what}: a panic"));
            }
            if let Some(c) = text.chars().find(|c| unsafe_on_terminal(*c)) {
                problems.push(format!("{what}: raw U+{:04X} reaches the terminal", c as u32));
            }
        }
        if !problems.is_empty() {
            failures.push(format!(
                "manifest line {}: {kind} {path}: {}\n  stdout: {}\n  stderr: {}",
                n + 1,
                problems.join("; "),
                stdout.chars().take(600).collect::<String>().escape_debug(),
                stderr.chars().take(600).collect::<String>().escape_debug()
            ));
        }
    }
    assert!(cases >= 60, "the corpus has {cases} cases; issue 11 asks for at least 60");
    assert!(failures.is_empty(), "{} of {cases} corpus cases failed:\n{}", failures.len(), failures.join("\n"));
}

// ---- property tests: no panic and (by construction: bounded inputs, linear pre-scan) no hang

/// YAML-shaped text: keys, flow and block collections, quotes, anchors, comments, BOMs.
fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("sku: ".to_string()),
        Just("mcu: atmega32u4\n".to_string()),
        Just("firmware: ok.hex\n".to_string()),
        Just("station: s\n".to_string()),
        Just("slots:\n".to_string()),
        Just("  - { name: A1, programmer: sim }\n".to_string()),
        Just("serial:\n  write: { memory: eeprom, address: 0x10, format: ascii, length: ".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("- ".to_string()),
        Just("? ".to_string()),
        Just(": ".to_string()),
        Just(", ".to_string()),
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("&a ".to_string()),
        Just("*a".to_string()),
        Just("!!binary ".to_string()),
        Just("# c\n".to_string()),
        Just("\n".to_string()),
        Just("  ".to_string()),
        Just("\t".to_string()),
        Just("\u{feff}".to_string()),
        Just("\u{1b}[2J".to_string()),
        "[a-z0-9]{1,6}",
        any::<u64>().prop_map(|n| n.to_string()),
    ];
    prop::collection::vec(token, 0..200).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn hex_reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = flashline::hex::parse(&text, "fuzz.hex");
    }

    #[test]
    fn hex_reader_on_record_shaped_lines(lines in prop::collection::vec("(:[0-9A-F]{0,48}|:0[0-6][0-9A-F]{4}0[0-6][0-9A-F]{0,40})(\r?\n)", 0..40)) {
        let _ = flashline::hex::parse(&lines.concat(), "fuzz.hex");
    }

    #[test]
    fn recipe_loader_never_panics(text in yamlish()) {
        if let Err(e) = flashline::recipe::Recipe::parse(&text, "fuzz.yaml") {
            prop_assert!(!e.to_string().chars().any(unsafe_on_terminal), "{e}");
        }
    }

    #[test]
    fn station_loader_never_panics(text in yamlish()) {
        if let Err(e) = flashline::station::Station::parse(&text, Path::new("fuzz.yaml")) {
            prop_assert!(!e.to_string().chars().any(unsafe_on_terminal), "{e}");
        }
    }

    #[test]
    fn recipe_and_station_loaders_on_arbitrary_text(text in any::<String>()) {
        let _ = flashline::recipe::Recipe::parse(&text, "fuzz.yaml");
        let _ = flashline::station::Station::parse(&text, Path::new("fuzz.yaml"));
    }

    #[test]
    fn scan_parser_never_panics(line in any::<String>(), slot in "[A-Z][0-9]") {
        let slots = vec![slot, "A1".to_string()];
        let parsed = flashline::station::scan::parse_line(&line, &slots);
        // A scan line is never `quit` outside a terminal session.
        prop_assert!(!matches!(parsed, Some(flashline::station::scan::Scan::Quit)));
        if let Some(flashline::station::scan::Scan::Any { serial } | flashline::station::scan::Scan::Slot { serial, .. }) = parsed {
            match flashline::station::scan::check_serial(&serial) {
                Ok(()) => prop_assert!(!serial.chars().any(flashline::text::is_unsafe) && serial.chars().count() <= 128),
                Err(reason) => prop_assert!(!reason.chars().any(unsafe_on_terminal), "{reason}"),
            }
        }
    }

    #[test]
    fn nesting_prescan_is_linear_and_total(text in yamlish(), depth in 1usize..64) {
        let _ = flashline::input::check_nesting(&text, depth);
    }
}

/// Interactive `quit` still works: only [`parse_interactive`] produces it.
#[test]
fn quit_only_interactively() {
    use flashline::station::scan::{parse_interactive, parse_line, Scan};
    let slots = vec!["A1".to_string()];
    for w in ["quit", "EXIT", " q\r"] {
        assert_eq!(parse_interactive(w, &slots), Some(Scan::Quit));
        assert!(matches!(parse_line(w, &slots), Some(Scan::Any { .. })));
    }
}
