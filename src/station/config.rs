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
    pub name: String,
    /// `avrisp` (alias `stk500v1`), `arduino`, `usbasp`, `usbtiny`, `buspirate`, `avrdude`, `sim`.
    pub programmer: String,
    /// Serial port for avrisp / arduino / buspirate (and avrdude when it needs one).
    pub port: Option<PathBuf>,
    /// Line rate for serial programmers (default 115200).
    pub baud: Option<u32>,
    /// USB selector for usbasp / usbtiny: `serial:0001A2`, `bus-port:1-1.4`, `vidpid:16C0:05DC`.
    pub usb: Option<String>,
    /// avrdude `-c` id when `programmer: avrdude`.
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
    #[error("cannot read station file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("{path}: slot {slot}: {message}")]
    Slot { path: PathBuf, slot: String, message: String },
    #[error("{path}: {message}")]
    Station { path: PathBuf, message: String },
}

impl Station {
    /// Load and check a station file.
    pub fn load(path: &Path) -> Result<Station, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Parse and check station YAML; `path` is used in messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Station, ConfigError> {
        let raw: StationConfig = serde_yaml::from_str(text).map_err(|e| {
            let at = e.location().map(|l| format!("line {}, column {}: ", l.line(), l.column())).unwrap_or_default();
            ConfigError::Yaml { path: path.to_owned(), message: format!("{at}{e}") }
        })?;
        let p = || path.to_owned();
        if raw.station.trim().is_empty() {
            return Err(ConfigError::Station { path: p(), message: "`station` must name the station".into() });
        }
        if raw.slots.is_empty() {
            return Err(ConfigError::Station { path: p(), message: "no slots: list at least one programmer under `slots`".into() });
        }
        let mut seen = HashSet::new();
        let mut slots = Vec::new();
        for s in raw.slots {
            let err = |m: String| ConfigError::Slot { path: p(), slot: s.name.clone(), message: m };
            if s.name.is_empty() || s.name.contains(':') || s.name.chars().any(char::is_whitespace) {
                return Err(err("slot names must be non-empty, without ':' or spaces (scans address slots as NAME:SERIAL)".into()));
            }
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
        assert!(e.contains("st.yaml") && e.contains("line 3") && e.contains("programer"), "{e}");
        let e = parse("station: x\nslots:\n  - { name: A1, programmer: avrisp }\n").unwrap_err().to_string();
        assert!(e.contains("slot A1") && e.contains("port"), "{e}");
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
