//! Station configuration (YAML, strict): which programmers sit in which slots.
//!
//! ```yaml
//! station: line1-st3
//! operator_prompt: true
//! slots:
//!   - { name: A1, programmer: avrisp, port: /dev/ttyACM0, baud: 115200 }
//!   - { name: A2, programmer: usbasp, usb: "serial:0001A2" }
//!   - { name: S1, programmer: sim, fault: flaky }
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::programmer::ProgrammerKind;
use crate::sim::Fault;

/// A station file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StationConfig {
    /// Station name, recorded with every attempt (unique per line PC).
    #[serde(deserialize_with = "de_station_name")]
    pub station: String,
    /// Ask for the operator's name at start when `--operator` is not given.
    #[serde(default)]
    pub operator_prompt: bool,
    /// Simulated slots: keep each unit's chip in this directory between attempts (relative to
    /// the station file), so retests seat the same chip and chips can be read back after a run.
    pub sim_boards: Option<PathBuf>,
    pub slots: Vec<SlotConfig>,
}

/// One fixture with its programmer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotConfig {
    /// Slot name as operators say it and scans address it (`A1:SERIAL`).
    #[serde(deserialize_with = "de_slot_name")]
    pub name: String,
    /// `avrisp` (alias `stk500v1`), `arduino`, `usbasp`, `usbtiny`, `buspirate`, `avrdude`, `sim`.
    pub programmer: String,
    /// Serial port for avrisp / arduino / buspirate (and avrdude when it needs one).
    pub port: Option<PathBuf>,
    /// Line rate for serial programmers (default 115200).
    #[serde(default, deserialize_with = "de_baud")]
    pub baud: Option<u32>,
    /// USB selector for usbasp / usbtiny: `serial:0001A2`, `bus-port:1-1.4`, `vidpid:16C0:05DC`.
    #[serde(default, deserialize_with = "de_opt_word")]
    pub usb: Option<String>,
    /// avrdude `-c` id when `programmer: avrdude`.
    #[serde(default, deserialize_with = "de_opt_word")]
    pub avrdude_programmer: Option<String>,
    /// Simulated slots only: fault carried by the boards seated here
    /// (`no-target`, `wrong-chip`, `flaky`, `stuck`, `slow`, `unplug`… see `sim serve --help`).
    pub fault: Option<String>,
    /// Simulated slots only: share of seated boards that carry `fault` (0..=1, default 1).
    pub fault_rate: Option<f64>,
    /// Simulated slots only: model datasheet delays and SPI time (default false).
    #[serde(default)]
    pub timing: bool,
    /// Timed simulated slots only: a simulated ArduinoISP behind this USB bridge model (`cdc`,
    /// `ftdi[:MS]`, `ch340`, `16u2`, `none`) instead of the in-process programmer.
    pub bridge: Option<String>,
}

/// Longest station name, in characters.
pub const MAX_STATION_CHARS: usize = 64;
/// Longest slot name, in characters.
pub const MAX_SLOT_CHARS: usize = 16;
/// Most slots one station file may list.
pub const MAX_SLOTS: usize = 256;
/// Fastest line rate accepted (the fastest USB-serial bridges run 3 Mbaud).
pub const MAX_BAUD: u32 = 4_000_000;

fn de_station_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    crate::input::check_name(&s, MAX_STATION_CHARS).map_err(|e| serde::de::Error::custom(format!("station name {e}")))?;
    Ok(s)
}

/// Whether `name` can be a slot name, i.e. be addressed as `NAME:SERIAL` in a scan.
pub fn check_slot_name(name: &str) -> Result<(), String> {
    crate::input::check_name(name, MAX_SLOT_CHARS).map_err(|e| format!("slot name {e}"))?;
    if name.contains(':') || name.chars().any(char::is_whitespace) || name.starts_with('#') {
        return Err(format!(
            "slot name '{name}' cannot be addressed as {name}:SERIAL in a scan: no ':', no spaces, and no '#' in front (a scan starting with '#' is a comment)"
        ));
    }
    Ok(())
}

fn de_slot_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    // Slot names like `1` come as YAML integers.
    let v = serde_yaml::Value::deserialize(d)?;
    let s = match v {
        serde_yaml::Value::String(s) => s,
        serde_yaml::Value::Number(n) => n.to_string(),
        _ => return Err(serde::de::Error::custom("slot name: expected text such as A1")),
    };
    check_slot_name(&s).map_err(serde::de::Error::custom)?;
    Ok(s)
}

fn de_baud<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let b = u64::deserialize(d)?;
    if b == 0 || b > MAX_BAUD as u64 {
        return Err(serde::de::Error::custom(format!("baud {b} is out of range: give the programmer's line rate, 1..={MAX_BAUD} (e.g. 115200 or 19200)")));
    }
    Ok(Some(b as u32))
}

fn de_opt_word<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    crate::input::check_name(&s, 128).map_err(serde::de::Error::custom)?;
    Ok(Some(s))
}

/// A checked slot, ready for the supervisor.
#[derive(Debug, Clone)]
pub struct Slot {
    pub name: String,
    pub kind: ProgrammerKind,
    pub port: Option<PathBuf>,
    pub baud: Option<u32>,
    pub usb: Option<String>,
    pub avrdude_programmer: Option<String>,
    pub fault: Fault,
    pub fault_rate: f64,
    pub timing: bool,
    pub bridge: Option<crate::sim::bridge::Bridge>,
}

/// A checked station.
#[derive(Debug, Clone)]
pub struct Station {
    pub name: String,
    pub operator_prompt: bool,
    pub slots: Vec<Slot>,
    /// Simulated slots' board rack (resolved against the station file's folder).
    pub sim_boards: Option<PathBuf>,
    /// Where it was loaded from (for messages).
    pub path: PathBuf,
}

/// A station file that cannot be used, with the file and (where known) line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not a regular file, too large, not UTF-8, or an I/O error.
    #[error("station file {0}")]
    Read(crate::input::InputError),
    /// Syntax, an unknown key, or a value refused while parsing: with line and column.
    #[error("{}:{line}:{column}: {message}", .path.display())]
    At { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{}: {message}", .path.display())]
    Yaml { path: PathBuf, message: String },
    #[error("{}{}: slot {slot}: {message}", .path.display(), .line.map(|l| format!(":{l}")).unwrap_or_default())]
    Slot { path: PathBuf, line: Option<usize>, slot: String, message: String },
    #[error("{}: {message}", .path.display())]
    Station { path: PathBuf, message: String },
}

/// The line where slot `name` is declared (`name: A1`), for messages.
fn slot_line(text: &str, name: &str) -> Option<usize> {
    text.lines().position(|l| {
        l.split([',', '{', '}']).any(|part| {
            let part = part.trim().trim_start_matches("- ").trim();
            part.strip_prefix("name:").is_some_and(|v| v.trim().trim_matches(['"', '\'']) == name)
        })
    }).map(|i| i + 1)
}

impl Station {
    /// Load and check a station file.
    pub fn load(path: &Path) -> Result<Station, ConfigError> {
        let text = crate::input::read_text(path, crate::input::CONFIG_LIMIT).map_err(ConfigError::Read)?;
        Self::parse(&text, path)
    }

    /// Parse and check station YAML; `path` is used in messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Station, ConfigError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if let Err((line, column, _)) = crate::input::check_nesting(text, crate::input::MAX_NESTING) {
            return Err(ConfigError::At {
                path: path.to_owned(),
                line,
                column,
                message: format!("nested deeper than {} levels: not a station file", crate::input::MAX_NESTING),
            });
        }
        let raw: StationConfig = serde_yaml::from_str(text).map_err(|e| {
            let mut message = e.to_string();
            // serde_yaml appends " at line L column C"; the location goes in front instead.
            if let Some(i) = message.rfind(" at line ") {
                message.truncate(i);
            }
            // The parser quotes the file's text (keys, values): escape what a terminal would act on.
            let message = crate::text::shown(&message).into_owned();
            match e.location() {
                Some(l) => ConfigError::At { path: path.to_owned(), line: l.line(), column: l.column(), message },
                None => ConfigError::Yaml { path: path.to_owned(), message },
            }
        })?;
        let p = || path.to_owned();
        if raw.slots.len() > MAX_SLOTS {
            return Err(ConfigError::Station { path: p(), message: format!("{} slots: at most {MAX_SLOTS} per station", raw.slots.len()) });
        }
        if raw.station.trim().is_empty() {
            return Err(ConfigError::Station { path: p(), message: "`station` must name the station".into() });
        }
        if raw.slots.is_empty() {
            return Err(ConfigError::Station { path: p(), message: "no slots: list at least one programmer under `slots`".into() });
        }
        let mut seen = HashSet::new();
        let mut slots = Vec::new();
        for s in raw.slots {
            let line = slot_line(text, &s.name);
            let err = |m: String| ConfigError::Slot { path: p(), line, slot: s.name.clone(), message: m };
            if !seen.insert(s.name.to_ascii_lowercase()) {
                return Err(err("slot name used twice".into()));
            }
            let kind = ProgrammerKind::parse(&s.programmer).ok_or_else(|| {
                err(format!(
                    "unknown programmer '{}': expected avrisp, stk500v1, arduino, usbasp, usbtiny, buspirate, avrdude or sim",
                    s.programmer
                ))
            })?;
            match kind {
                ProgrammerKind::Avrisp | ProgrammerKind::Arduino | ProgrammerKind::Buspirate if s.port.is_none() => {
                    return Err(err(format!("programmer {kind} needs `port:` (e.g. /dev/ttyACM0)")));
                }
                ProgrammerKind::Avrdude if s.avrdude_programmer.is_none() => {
                    return Err(err("programmer avrdude needs `avrdude_programmer:` (avrdude's -c id)".into()));
                }
                _ => {}
            }
            if kind != ProgrammerKind::Sim && (s.fault.is_some() || s.fault_rate.is_some() || s.timing) {
                return Err(err("`fault`, `fault_rate` and `timing` apply to simulated slots only (programmer: sim)".into()));
            }
            let fault = match &s.fault {
                Some(f) => Fault::parse(f).map_err(&err)?,
                None => Fault::None,
            };
            let bridge = match &s.bridge {
                None => None,
                Some(_) if kind != ProgrammerKind::Sim || !s.timing => {
                    return Err(err("`bridge` models time: it applies to simulated slots with `timing: true`".into()));
                }
                Some(b) => Some(crate::sim::bridge::Bridge::parse(b).map_err(&err)?),
            };
            let fault_rate = s.fault_rate.unwrap_or(1.0);
            if !(0.0..=1.0).contains(&fault_rate) {
                return Err(err(format!("fault_rate {fault_rate} must be between 0 and 1")));
            }
            slots.push(Slot {
                name: s.name,
                kind,
                port: s.port,
                baud: s.baud,
                usb: s.usb,
                avrdude_programmer: s.avrdude_programmer,
                fault,
                fault_rate,
                timing: s.timing,
                bridge,
            });
        }
        let sim_boards = raw.sim_boards.map(|d| if d.is_relative() { path.parent().unwrap_or(Path::new(".")).join(d) } else { d });
        Ok(Station { name: raw.station, operator_prompt: raw.operator_prompt, slots, sim_boards, path: path.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Station, ConfigError> {
        Station::parse(s, Path::new("st.yaml"))
    }

    #[test]
    fn example_parses() {
        let st = parse(
            "station: line1-st3\noperator_prompt: true\nslots:\n  - { name: A1, programmer: avrisp, port: /dev/ttyACM0, baud: 115200 }\n  - { name: A2, programmer: usbasp, usb: \"serial:0001A2\" }\n  - { name: S1, programmer: sim, fault: flaky }\n",
        )
        .unwrap();
        assert_eq!(st.slots.len(), 3);
        assert_eq!(st.slots[0].kind, ProgrammerKind::Avrisp);
        assert_eq!(st.slots[2].fault.name(), "flaky");
    }

    #[test]
    fn strict_and_clear() {
        let e = parse("station: x\nslots:\n  - { name: A1, programer: sim }\n").unwrap_err().to_string();
        assert!(e.starts_with("st.yaml:3:") && e.contains("programer"), "{e}");
        let e = parse("station: x\nslots:\n  - { name: A1, programmer: avrisp }\n").unwrap_err().to_string();
        assert!(e.starts_with("st.yaml:3: slot A1") && e.contains("port"), "{e}");
        let e = parse("station: x\nslots:\n  - { name: A1, programmer: avrisp, port: /dev/x, baud: 0 }\n").unwrap_err().to_string();
        assert!(e.starts_with("st.yaml:3:") && e.contains("baud 0"), "{e}");
        let e = parse("station: x\nslots:\n  - name: '#1'\n    programmer: sim\n").unwrap_err().to_string();
        assert!(e.starts_with("st.yaml:3:") && e.contains("comment"), "{e}");
        let e = parse("station: \"a\\x1b[2Jb\"\nslots:\n  - { name: A1, programmer: sim }\n").unwrap_err().to_string();
        assert!(e.starts_with("st.yaml:1:") && e.contains("\\e[2J") && !e.contains('\x1b'), "{e}");
        let e = parse("station: x\nslots:\n  - { name: A1, programmer: sim }\n  - { name: a1, programmer: sim }\n").unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
        let e = parse("station: x\nslots:\n  - { name: A1, programmer: sim, fault: gremlins }\n").unwrap_err().to_string();
        assert!(e.contains("unknown fault"), "{e}");
        let e = parse("station: x\nslots:\n  - { name: A1, programmer: jtagice }\n").unwrap_err().to_string();
        assert!(e.contains("unknown programmer"), "{e}");
        let e = parse("station: x\nslots:\n  - { name: A1, programmer: sim, bridge: cdc }\n").unwrap_err().to_string();
        assert!(e.contains("slot A1") && e.contains("timing: true"), "{e}");
        let e = parse("station: x\nslots:\n  - { name: A1, programmer: sim, timing: true, bridge: usb3 }\n").unwrap_err().to_string();
        assert!(e.contains("unknown bridge 'usb3'"), "{e}");
        let st = parse("station: x\nslots:\n  - { name: A1, programmer: sim, timing: true, bridge: \"ftdi:4\" }\n").unwrap();
        assert_eq!(st.slots[0].bridge, Some(crate::sim::bridge::Bridge::Ftdi { latency_ms: 4 }));
    }
}
