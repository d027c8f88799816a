//! deploy/: the udev rules are well-formed and cover the programmers flashline drives, the
//! systemd unit runs the station with the dashboard using flags the binary accepts (and passes
//! `systemd-analyze verify`), the station files load.

mod web_support;

use std::process::Command;

use web_support::*;

fn read(p: &str) -> String {
    std::fs::read_to_string(repo().join(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Split one rule line into (key, op, value), checking the grammar udev(7) describes.
fn parse_rule(line: &str, n: usize) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let key_end = rest.find(['=', '!', '+', ':']).unwrap_or_else(|| panic!("line {n}: no operator in {rest:?}"));
        let key = rest[..key_end].trim().to_string();
        let after = &rest[key_end..];
        let op = ["==", "!=", "+=", ":=", "="].into_iter().find(|o| after.starts_with(o)).unwrap_or_else(|| panic!("line {n}: bad operator in {after:?}"));
        let after = &after[op.len()..];
        assert!(after.starts_with('"'), "line {n}: value of {key} must be quoted");
        let close = after[1..].find('"').unwrap_or_else(|| panic!("line {n}: unterminated value of {key}"));
        let value = after[1..1 + close].to_string();
        out.push((key, op.to_string(), value));
        rest = after[close + 2..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else {
            assert!(rest.is_empty(), "line {n}: expected ',' before {rest:?}");
        }
    }
    out
}

#[test]
fn udev_rules_are_well_formed_and_cover_the_programmers() {
    let text = read("deploy/99-flashline-programmers.rules");
    let mut usb = Vec::new();
    let mut tty = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let kv = parse_rule(t, i + 1);
        let get = |k: &str| kv.iter().find(|(key, _, _)| key == k).map(|(_, op, v)| (op.as_str(), v.as_str()));
        for (k, op, v) in &kv {
            let matching = ["SUBSYSTEM", "ATTR{idVendor}", "ATTR{idProduct}", "ATTRS{idVendor}", "ATTRS{idProduct}"].contains(&k.as_str());
            let assigning = ["MODE", "GROUP", "TAG", "ENV{ID_MM_DEVICE_IGNORE}"].contains(&k.as_str());
            assert!(matching || assigning, "line {}: unexpected key {k}", i + 1);
            if matching {
                assert_eq!(op, "==", "line {}: {k} is a match", i + 1);
            } else {
                assert!(op == "=" || op == "+=", "line {}: {k} is an assignment", i + 1);
            }
            if k.contains("idVendor") || k.contains("idProduct") {
                assert!(v.split('|').all(|h| h.len() == 4 && h.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())), "line {}: {k}={v}: lower-case 4-digit hex", i + 1);
            }
        }
        if let Some(("=", mode)) = get("MODE") {
            assert_eq!(mode, "0660", "line {}: no world access", i + 1);
            assert!(get("GROUP").is_some(), "line {}: MODE without GROUP", i + 1);
        }
        let vid = get("ATTR{idVendor}").or(get("ATTRS{idVendor}")).map(|x| x.1.to_string()).unwrap_or_default();
        let pid = get("ATTR{idProduct}").or(get("ATTRS{idProduct}")).map(|x| x.1.to_string()).unwrap_or_default();
        match get("SUBSYSTEM") {
            Some((_, "usb")) => {
                assert_eq!(get("GROUP").map(|g| g.1), Some("plugdev"));
                usb.push(format!("{vid}:{pid}"));
            }
            Some((_, "tty")) => {
                if let Some(g) = get("GROUP") {
                    assert_eq!(g.1, "dialout");
                }
                tty.push(format!("{vid}:{pid}"));
            }
            other => panic!("line {}: SUBSYSTEM usb or tty, got {other:?}", i + 1),
        }
    }
    // USBasp, USBtinyISP: raw USB; Bus Pirate v4/v3 and common ArduinoISP boards: tty.
    for want in ["16c0:05dc", "1781:0c9f"] {
        assert!(usb.contains(&want.to_string()), "no rule for USB {want}: {usb:?}");
    }
    for want in ["04d8:fb00", "0403:6001", "2341:", "1a86:7523", "10c4:ea60"] {
        assert!(tty.iter().any(|t| t.starts_with(want)), "no rule for tty {want}: {tty:?}");
    }
}

#[test]
fn the_systemd_unit_runs_the_station_with_the_dashboard() {
    let unit = read("deploy/flashline-station.service");
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let args: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(args[1], "run");
    assert!(args.contains(&"--serve"), "the unit serves the dashboard");
    assert!(unit.contains("Restart=on-failure"));
    assert!(unit.contains("StandardInput=null"));
    // Every flag it uses is one `flashline run` takes; the env file names its env variables.
    let help = Command::new(bin()).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for a in args.iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(&format!("{a} ")) || help.contains(&format!("{a}\n")), "`flashline run` has no {a}:\n{help}");
    }
    for env in ["FLASHLINE_DB", "FLASHLINE_TOKEN"] {
        assert!(help.contains(env), "`flashline run` does not read {env}");
    }
    // systemd's own check, with the binary path pointing at the one under test.
    if Command::new("systemd-analyze").arg("--version").output().map(|o| o.status.success()).unwrap_or(false) {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join("station.env");
        std::fs::write(&env, "FLASHLINE_RECIPE=/dev/null\n").unwrap();
        let copy = unit.replace("/usr/local/bin/flashline", bin()).replace("/etc/flashline/station.env", env.to_str().unwrap());
        let p = dir.path().join("flashline-station.service");
        std::fs::write(&p, copy).unwrap();
        let out = Command::new("systemd-analyze").arg("verify").arg(&p).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !err.contains("flashline-station.service:"), "systemd-analyze verify: {err}");
    } else {
        eprintln!("systemd-analyze not installed: unit syntax not checked by systemd");
    }
}

#[test]
fn the_station_files_load() {
    for f in ["deploy/station.example.yaml", "deploy/station.demo.yaml"] {
        flashline::station::Station::load(&repo().join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}
