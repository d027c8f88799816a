//! The programmer factory: a [`ProgrammerSpec`] (from the command line or a station slot)
//! becomes a boxed [`Programmer`] driver.
//!
//! The factory only builds the driver; the job's connect step calls [`Programmer::open`]
//! (with bounded retries) to open the link.

use std::path::PathBuf;

use crate::error::{FailureClass, ProgError, ProgResult};
use crate::part::Part;
use crate::programmer::stk500::Stk500Programmer;
use crate::programmer::{Programmer, ProgrammerInfo, ProgrammerKind, SimProgrammer};
use crate::sim::SimOptions;

/// Everything needed to build one programmer driver.
#[derive(Debug, Clone)]
pub struct ProgrammerSpec {
    pub kind: ProgrammerKind,
    /// Serial device (`avrisp`, `arduino`, `buspirate`, `avrdude -P`).
    pub port: Option<PathBuf>,
    /// Serial line rate (driver default when `None`).
    pub baud: Option<u32>,
    /// USB selector (`serial:0001A2`, `bus-port:1-4.2`…) for `usbasp`/`usbtiny`.
    pub usb: Option<String>,
    /// avrdude's `-c` programmer id for the `avrdude` fallback.
    pub avrdude_programmer: Option<String>,
    /// Simulated target options for `sim`.
    pub sim: SimOptions,
    /// `sim` only: put a simulated ArduinoISP behind this USB bridge model (driven by the real
    /// avrisp driver, `crate::sim::stk500::EmulatedAvrisp`) instead of the in-process programmer.
    pub bridge: Option<crate::sim::bridge::Bridge>,
    /// Slot or user-given name; the `sim` identity is `sim:NAME`.
    pub name: String,
}

impl ProgrammerSpec {
    /// A spec of `kind` with nothing else set.
    pub fn new(kind: ProgrammerKind, name: impl Into<String>) -> Self {
        ProgrammerSpec {
            kind,
            port: None,
            baud: None,
            usb: None,
            avrdude_programmer: None,
            sim: SimOptions::default(),
            bridge: None,
            name: name.into(),
        }
    }

    /// An in-process simulated programmer.
    pub fn sim(name: impl Into<String>, opts: SimOptions) -> Self {
        ProgrammerSpec { sim: opts, ..Self::new(ProgrammerKind::Sim, name) }
    }

    /// Who this programmer will be, for records, before (or without) opening it: `sim:NAME`,
    /// the tty path, or the USB selector. Drivers may report a more precise identity once open.
    pub fn info(&self) -> ProgrammerInfo {
        let identity = match self.kind {
            ProgrammerKind::Sim => format!("sim:{}", self.name),
            _ => match (&self.port, &self.usb) {
                (Some(p), _) => p.display().to_string(),
                (None, Some(u)) => format!("usb:{u}"),
                (None, None) => self.name.clone(),
            },
        };
        ProgrammerInfo { kind: self.kind, identity }
    }
}

/// Build the driver for `spec`, for a target of type `part` (the simulated chip of a `sim`
/// programmer is a `part`).
pub async fn open(spec: &ProgrammerSpec, part: &'static Part) -> ProgResult<Box<dyn Programmer>> {
    match spec.kind {
        ProgrammerKind::Sim => match spec.bridge {
            None => Ok(Box::new(SimProgrammer::new(part, spec.sim.clone(), spec.name.clone()))),
            Some(b) => crate::sim::stk500::EmulatedAvrisp::spawn(part, spec.sim.clone(), b, spec.name.clone())
                .map(|p| Box::new(p) as Box<dyn Programmer>)
                .map_err(|e| ProgError::new(FailureClass::ProgrammerOpen, format!("sim:{}: cannot start the simulated ArduinoISP on a pty: {e}", spec.name))),
        },
        ProgrammerKind::Avrisp => Ok(Box::new(Stk500Programmer::avrisp(serial_port(spec)?, spec.baud))),
        ProgrammerKind::Arduino => Ok(Box::new(Stk500Programmer::arduino(serial_port(spec)?, spec.baud))),
        ProgrammerKind::Avrdude => Ok(Box::new(crate::programmer::avrdude::AvrdudeProgrammer::new(
            spec.clone(),
            crate::programmer::avrdude::AvrdudeOptions::default(),
        ))),
        ProgrammerKind::Usbasp | ProgrammerKind::Usbtiny => {
            let selector = usb_selector(spec)?;
            let usb = crate::programmer::usb::NusbTransport::open(spec.kind, selector.as_ref()).await?;
            Ok(if spec.kind == ProgrammerKind::Usbasp {
                Box::new(crate::programmer::usbasp::Usbasp::new(usb))
            } else {
                Box::new(crate::programmer::usbtiny::Usbtiny::new(usb))
            })
        }
        ProgrammerKind::Buspirate => {
            Ok(Box::new(crate::programmer::buspirate::BusPirate::new(serial_port(spec)?, spec.baud)))
        }
    }
}

/// The USB selector of a `usbasp`/`usbtiny` spec: `spec.usb`, else `--port` when it is a
/// selector (`serial:…`, `bus-port:…`, `vidpid:…`); `None` means "the only one attached".
fn usb_selector(spec: &ProgrammerSpec) -> ProgResult<Option<crate::programmer::list::Selector>> {
    let text = match (&spec.usb, &spec.port) {
        (Some(u), _) => u.clone(),
        (None, Some(p)) => p.display().to_string(),
        (None, None) => return Ok(None),
    };
    if text == "usb" {
        return Ok(None);
    }
    match crate::programmer::list::Selector::parse(&text) {
        Ok(crate::programmer::list::Selector::Tty(p)) => Err(ProgError::new(
            FailureClass::Config,
            format!("{} is a USB programmer; '{}' is a serial port — select it with serial:SERIAL, bus-port:1-1.4 or vidpid:VID:PID (see `flashline programmers`)", spec.kind, p.display()),
        )),
        Ok(sel) => Ok(Some(sel)),
        Err(e) => Err(ProgError::new(FailureClass::Config, e)),
    }
}

/// The serial port a serial programmer needs. `--port` may also be a USB selector
/// (`serial:A6008isP`, `bus-port:1-1.4`, `vidpid:…`) naming the USB-serial device behind it.
fn serial_port(spec: &ProgrammerSpec) -> ProgResult<PathBuf> {
    let port = spec.port.clone().ok_or_else(|| {
        ProgError::with_hint(FailureClass::Config, format!("programmer {} ({}) needs a serial port (--port /dev/ttyACM0)", spec.kind, spec.name))
    })?;
    crate::programmer::list::resolve_port(&port).map_err(|e| ProgError::with_hint(FailureClass::Config, format!("programmer {} ({}): {e}", spec.kind, spec.name)))
}
