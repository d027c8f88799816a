//! What programmers are attached, and how to tell identical ones apart.
//!
//! Two USBasps (or two Pro Micro ISPs) look the same to avrdude (its issues #619/#973); a
//! station with 16 of them needs a stable name per slot. A [`Selector`] names one programmer:
//!
//! | selector | matches |
//! |---|---|
//! | `serial:0001A2` | USB serial number (the programmer's own, or the USB-serial chip's) |
//! | `bus-port:1-1.4` | physical USB port (bus 1, hub port 1, port 4) — stable while cabling stays |
//! | `vidpid:16C0:05DC` | any device with that VID:PID (only useful when there is one) |
//! | `/dev/ttyACM0`, `ttyUSB1`, `/dev/serial/by-path/…` | a serial port |
//!
//! Listing ([`list_programmers`]) reports every candidate with an access status; a device that
//! is present but cannot be opened shows as [`Access::InsufficientPermissions`] (fix: the udev
//! rule), never as absent.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::programmer::usb::{known_usb_programmer, UDEV_RULES};
use crate::programmer::ProgrammerKind;

/// A USB device as enumeration sees it (nusb on real machines, synthetic data in tests).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsbDeviceRecord {
    pub vid: u16,
    pub pid: u16,
    /// Linux sysfs name of the port path: `1-1.4`.
    pub bus_port: String,
    pub busnum: u8,
    pub address: u8,
    pub serial: Option<String>,
    pub product: Option<String>,
    pub manufacturer: Option<String>,
}

impl UsbDeviceRecord {
    /// The usbfs node through which the device is opened.
    pub fn dev_node(&self) -> PathBuf {
        PathBuf::from(format!("/dev/bus/usb/{:03}/{:03}", self.busnum, self.address))
    }
}

/// Names one programmer among several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// USB serial number (`serial:…`).
    Serial(String),
    /// USB port path (`bus-port:1-1.4`).
    BusPort(String),
    /// VID:PID (`vidpid:16C0:05DC`).
    VidPid(u16, u16),
    /// A serial device path.
    Tty(PathBuf),
}

impl Selector {
    /// Parse a `--port` value. Bare tty names (`ttyACM0`) mean `/dev/ttyACM0`.
    ///
    /// ```
    /// use flashline::programmer::list::Selector;
    /// assert_eq!(Selector::parse("vidpid:16c0:05dc").unwrap(), Selector::VidPid(0x16C0, 0x05DC));
    /// assert_eq!(Selector::parse("ttyACM0").unwrap(), Selector::Tty("/dev/ttyACM0".into()));
    /// ```
    pub fn parse(s: &str) -> Result<Selector, String> {
        let s = s.trim();
        let bad = |why: &str| {
            format!("programmer selector '{s}': {why} (use serial:SERIAL, bus-port:1-1.4, vidpid:16C0:05DC or a tty path like /dev/ttyACM0)")
        };
        if let Some(v) = s.strip_prefix("serial:") {
            if v.is_empty() {
                return Err(bad("empty serial number"));
            }
            return Ok(Selector::Serial(v.to_string()));
        }
        if let Some(v) = s.strip_prefix("bus-port:") {
            let ok = v.split_once('-').map(|(bus, ports)| {
                !bus.is_empty()
                    && bus.chars().all(|c| c.is_ascii_digit())
                    && !ports.is_empty()
                    && ports.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
            });
            if ok != Some(true) {
                return Err(bad("bus-port must look like 1-1.4 (bus, dash, dot-separated port numbers)"));
            }
            return Ok(Selector::BusPort(v.to_string()));
        }
        if let Some(v) = s.strip_prefix("vidpid:") {
            let (a, b) = v.split_once(':').ok_or_else(|| bad("vidpid needs VID:PID in hex"))?;
            let hex = |x: &str| u16::from_str_radix(x.trim_start_matches("0x"), 16).map_err(|_| bad("VID and PID are 4 hex digits"));
            return Ok(Selector::VidPid(hex(a)?, hex(b)?));
        }
        if s.starts_with('/') {
            return Ok(Selector::Tty(PathBuf::from(s)));
        }
        if s.starts_with("tty") && !s.contains('/') {
            return Ok(Selector::Tty(PathBuf::from(format!("/dev/{s}"))));
        }
        if s.is_empty() {
            return Err(bad("empty"));
        }
        Err(bad("not recognised"))
    }

    /// Does this selector pick the USB device `rec`?
    pub fn matches_usb(&self, rec: &UsbDeviceRecord) -> bool {
        match self {
            Selector::Serial(s) => rec.serial.as_deref() == Some(s.as_str()),
            Selector::BusPort(p) => rec.bus_port == *p,
            Selector::VidPid(v, p) => rec.vid == *v && rec.pid == *p,
            Selector::Tty(_) => false,
        }
    }

    /// Does this selector pick the serial port `c`?
    pub fn matches_serial(&self, c: &SerialCandidate) -> bool {
        match self {
            Selector::Tty(p) => {
                let canon = |x: &Path| std::fs::canonicalize(x).unwrap_or_else(|_| x.to_path_buf());
                *p == c.path || canon(p) == canon(&c.path)
            }
            other => c.usb.as_ref().map(|u| other.matches_usb(u)).unwrap_or(false),
        }
    }

    /// The most specific selector for a USB device: its serial number when it has one,
    /// otherwise its port path.
    pub fn best_for_usb(rec: &UsbDeviceRecord) -> Selector {
        match &rec.serial {
            Some(s) if !s.trim().is_empty() => Selector::Serial(s.clone()),
            _ => Selector::BusPort(rec.bus_port.clone()),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Serial(s) => write!(f, "serial:{s}"),
            Selector::BusPort(p) => write!(f, "bus-port:{p}"),
            Selector::VidPid(v, p) => write!(f, "vidpid:{v:04X}:{p:04X}"),
            Selector::Tty(p) => write!(f, "{}", p.display()),
        }
    }
}

impl std::str::FromStr for Selector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Selector::parse(s)
    }
}

/// Pick the one serial port a selector names among the candidates.
pub fn resolve_serial<'a>(sel: &Selector, candidates: &'a [SerialCandidate]) -> Result<&'a SerialCandidate, String> {
    let hits: Vec<&SerialCandidate> = candidates.iter().filter(|c| sel.matches_serial(c)).collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(format!("no serial port matches '{sel}'")),
        many => Err(format!(
            "'{sel}' matches {} serial ports ({}); use a more specific selector",
            many.len(),
            many.iter().map(|c| c.path.display().to_string()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Resolve a `--port` value for a serial programmer: a path is taken as it is; a USB selector
/// (`serial:…`, `bus-port:…`, `vidpid:…`) is looked up among this machine's `/dev/ttyACM*` and
/// `/dev/ttyUSB*` ports through sysfs.
pub fn resolve_port(port: &Path) -> Result<PathBuf, String> {
    let text = port.to_string_lossy();
    let looks_like_selector = ["serial:", "bus-port:", "vidpid:"].iter().any(|p| text.starts_with(p));
    if !looks_like_selector {
        return Ok(port.to_path_buf());
    }
    let sel = Selector::parse(&text)?;
    let candidates = serial_candidates(Path::new("/dev"), Path::new("/sys"));
    resolve_serial(&sel, &candidates).map(|c| c.path.clone())
}

/// Whether this process can open a device node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Ok,
    /// Present, but the device node is not readable/writable by this user.
    InsufficientPermissions,
    /// The device node could not be checked (no usbfs node, e.g. in a container).
    Unknown,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Access::Ok => f.write_str("ok"),
            Access::InsufficientPermissions => write!(f, "insufficient permissions (see {UDEV_RULES})"),
            Access::Unknown => f.write_str("unknown (no device node visible)"),
        }
    }
}

/// Check read/write access to a device node with access(2).
pub fn node_access(path: &Path) -> Access {
    use nix::unistd::{access, AccessFlags};
    if !path.exists() {
        return Access::Unknown;
    }
    match access(path, AccessFlags::R_OK | AccessFlags::W_OK) {
        Ok(()) => Access::Ok,
        Err(_) => Access::InsufficientPermissions,
    }
}

/// A serial port that may have a programmer behind it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SerialCandidate {
    pub path: PathBuf,
    /// The USB device behind the port, when sysfs tells.
    pub usb: Option<UsbDeviceRecord>,
}

/// Scan `dev_dir` (normally `/dev`) for `ttyACM*`/`ttyUSB*` and look each up under `sysfs`
/// (normally `/sys`) for its USB device (VID:PID, serial, port path).
pub fn serial_candidates(dev_dir: &Path, sysfs: &Path) -> Vec<SerialCandidate> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dev_dir) else { return out };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ttyACM") || n.starts_with("ttyUSB"))
        .collect();
    names.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    for n in names {
        let usb = usb_parent_of_tty(sysfs, &n);
        out.push(SerialCandidate { path: dev_dir.join(&n), usb });
    }
    out
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// `/sys/class/tty/NAME/device` points at the USB interface (`1-1.4:1.0`) or, for
/// USB-serial converters, at a port below it; the USB device is the nearest ancestor with an
/// `idVendor` file.
fn usb_parent_of_tty(sysfs: &Path, name: &str) -> Option<UsbDeviceRecord> {
    let dev = std::fs::canonicalize(sysfs.join("class/tty").join(name).join("device")).ok()?;
    let mut dir: &Path = &dev;
    for _ in 0..6 {
        if dir.join("idVendor").exists() {
            let hex = |f: &str| read_trim(&dir.join(f)).and_then(|s| u16::from_str_radix(&s, 16).ok());
            let num = |f: &str| read_trim(&dir.join(f)).and_then(|s| s.parse::<u8>().ok());
            return Some(UsbDeviceRecord {
                vid: hex("idVendor")?,
                pid: hex("idProduct")?,
                bus_port: dir.file_name()?.to_string_lossy().into_owned(),
                busnum: num("busnum").unwrap_or(0),
                address: num("devnum").unwrap_or(0),
                serial: read_trim(&dir.join("serial")),
                product: read_trim(&dir.join("product")),
                manufacturer: read_trim(&dir.join("manufacturer")),
            });
        }
        dir = dir.parent()?;
    }
    None
}

/// Best guess at what sits behind a USB-serial VID:PID (for the listing's description only).
pub fn serial_hint(vid: u16, pid: u16) -> Option<&'static str> {
    Some(match (vid, pid) {
        (0x04D8, 0xFB00) => "Bus Pirate v4 (buspirate)",
        (0x0403, 0x6001) => "FTDI FT232R (Bus Pirate v3, FTDI-based ArduinoISP…)",
        (0x1B4F, 0x9205) | (0x1B4F, 0x9206) => "SparkFun Pro Micro (avrisp firmware?)",
        (0x2341, _) | (0x2A03, _) => "Arduino (ArduinoISP: avrisp, or arduino bootloader)",
        (0x16C0, 0x0483) => "Teensy serial (avrisp firmware?)",
        (0x1A86, 0x7523) => "CH340 USB-serial (Arduino clone)",
        (0x10C4, 0xEA60) => "CP210x USB-serial",
        _ => return None,
    })
}

/// One line of `flashline programmers`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListedProgrammer {
    /// `usbasp`/`usbtiny` for known USB programmers; `None` for serial ports (the protocol
    /// behind a tty cannot be told without talking to it).
    pub kind: Option<ProgrammerKind>,
    /// What to pass as `--port` to select exactly this one.
    pub selector: String,
    /// Device node (usbfs node or tty).
    pub node: PathBuf,
    pub vid: Option<u16>,
    pub pid: Option<u16>,
    pub serial: Option<String>,
    pub bus_port: Option<String>,
    pub description: String,
    pub access: Access,
}

/// Build the listing from enumerated USB devices and serial candidates. `check` decides the
/// access status of a device node (normally [`node_access`]).
pub fn build_listing(usb: &[UsbDeviceRecord], serial: &[SerialCandidate], check: &dyn Fn(&Path) -> Access) -> Vec<ListedProgrammer> {
    let mut out = Vec::new();
    let programmers: Vec<&UsbDeviceRecord> = usb.iter().filter(|r| known_usb_programmer(r.vid, r.pid).is_some()).collect();
    for r in &programmers {
        let kind = known_usb_programmer(r.vid, r.pid);
        // A serial number only tells programmers apart if no other one shares it (cheap
        // USBasp clones all report the same one, or none).
        let serial_unique = r.serial.as_ref().map(|s| !s.trim().is_empty() && programmers.iter().filter(|o| o.serial == r.serial).count() == 1).unwrap_or(false);
        let selector = if serial_unique { Selector::best_for_usb(r) } else { Selector::BusPort(r.bus_port.clone()) };
        let node = r.dev_node();
        let name = kind.map(|k| k.name()).unwrap_or("usb");
        let description = match (&r.manufacturer, &r.product) {
            (Some(m), Some(p)) => format!("{name}: {m} {p}"),
            (None, Some(p)) => format!("{name}: {p}"),
            _ => name.to_string(),
        };
        out.push(ListedProgrammer {
            kind,
            selector: selector.to_string(),
            access: check(&node),
            node,
            vid: Some(r.vid),
            pid: Some(r.pid),
            serial: r.serial.clone(),
            bus_port: Some(r.bus_port.clone()),
            description,
        });
    }
    for c in serial {
        let (vid, pid) = c.usb.as_ref().map(|u| (Some(u.vid), Some(u.pid))).unwrap_or((None, None));
        let hint = c.usb.as_ref().and_then(|u| serial_hint(u.vid, u.pid));
        let product = c.usb.as_ref().and_then(|u| u.product.clone());
        let description = match (hint, product) {
            (Some(h), _) => format!("serial port: {h}"),
            (None, Some(p)) => format!("serial port: {p}"),
            (None, None) => "serial port".to_string(),
        };
        out.push(ListedProgrammer {
            kind: None,
            selector: c.path.display().to_string(),
            access: check(&c.path),
            node: c.path.clone(),
            vid,
            pid,
            serial: c.usb.as_ref().and_then(|u| u.serial.clone()),
            bus_port: c.usb.as_ref().map(|u| u.bus_port.clone()),
            description,
        });
    }
    out
}

/// What [`list_programmers`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listing {
    pub programmers: Vec<ListedProgrammer>,
    /// Why USB devices could not be enumerated (serial ports are still listed).
    pub usb_error: Option<String>,
}

/// List what is attached on this machine: USB programmers through nusb, serial ports through
/// `/dev` and `/sys`.
pub async fn list_programmers() -> Listing {
    let (usb, usb_error) = match crate::programmer::usb::usb_devices().await {
        Ok(v) => (v, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let serial = serial_candidates(Path::new("/dev"), Path::new("/sys"));
    Listing { programmers: build_listing(&usb, &serial, &node_access), usb_error }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(vid: u16, pid: u16, bus_port: &str, serial: Option<&str>) -> UsbDeviceRecord {
        UsbDeviceRecord {
            vid,
            pid,
            bus_port: bus_port.into(),
            busnum: 1,
            address: 7,
            serial: serial.map(Into::into),
            product: Some("USBasp".into()),
            manufacturer: Some("www.fischl.de".into()),
        }
    }

    #[test]
    fn parse_selectors() {
        assert_eq!(Selector::parse("serial:0001A2").unwrap(), Selector::Serial("0001A2".into()));
        assert_eq!(Selector::parse("bus-port:1-1.4").unwrap(), Selector::BusPort("1-1.4".into()));
        assert_eq!(Selector::parse("bus-port:3-2").unwrap(), Selector::BusPort("3-2".into()));
        assert_eq!(Selector::parse("vidpid:16C0:05DC").unwrap(), Selector::VidPid(0x16C0, 0x05DC));
        assert_eq!(Selector::parse("/dev/ttyACM3").unwrap(), Selector::Tty("/dev/ttyACM3".into()));
        assert_eq!(Selector::parse("ttyUSB0").unwrap(), Selector::Tty("/dev/ttyUSB0".into()));
        for bad in ["", "serial:", "bus-port:1", "bus-port:a-1", "bus-port:1-1..4", "vidpid:16C0", "vidpid:zz:05DC", "usbasp"] {
            let e = Selector::parse(bad).unwrap_err();
            assert!(e.contains("serial:SERIAL"), "{bad}: {e}");
        }
        for s in ["serial:0001A2", "bus-port:1-1.4", "vidpid:16C0:05DC", "/dev/ttyACM0"] {
            assert_eq!(Selector::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn selectors_tell_identical_programmers_apart() {
        let a = rec(0x16C0, 0x05DC, "1-1.4", Some("0001A2"));
        let b = rec(0x16C0, 0x05DC, "1-1.5", Some("0001A3"));
        let s = Selector::parse("serial:0001A2").unwrap();
        assert!(s.matches_usb(&a) && !s.matches_usb(&b));
        let p = Selector::parse("bus-port:1-1.5").unwrap();
        assert!(!p.matches_usb(&a) && p.matches_usb(&b));
        let v = Selector::parse("vidpid:16C0:05DC").unwrap();
        assert!(v.matches_usb(&a) && v.matches_usb(&b));
        assert!(!Selector::parse("/dev/ttyACM0").unwrap().matches_usb(&a));
    }

    #[test]
    fn listing_uses_bus_port_when_serials_collide_and_reports_permissions() {
        let usb = vec![
            rec(0x16C0, 0x05DC, "1-1.4", Some("0000")),
            rec(0x16C0, 0x05DC, "1-1.5", Some("0000")),
            rec(0x1781, 0x0C9F, "2-3", Some("TINY42")),
            rec(0x046D, 0xC52B, "1-2", None), // a mouse: not listed
        ];
        let denied = PathBuf::from("/dev/bus/usb/001/007");
        let l = build_listing(&usb, &[], &|p: &Path| if p == denied { Access::InsufficientPermissions } else { Access::Ok });
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].selector, "bus-port:1-1.4");
        assert_eq!(l[1].selector, "bus-port:1-1.5");
        assert_eq!(l[2].selector, "serial:TINY42");
        assert_eq!(l[2].kind, Some(ProgrammerKind::Usbtiny));
        assert_eq!(l[0].access, Access::InsufficientPermissions);
        assert_eq!(l[0].access.to_string(), "insufficient permissions (see deploy/99-flashline-programmers.rules)");
    }

    /// Build a synthetic /sys and /dev as Linux lays them out for a CDC-ACM device and an
    /// FTDI converter, and check the listing finds VID:PID, serial and port path.
    #[test]
    fn serial_candidates_from_synthetic_sysfs() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("sys");
        let dev = root.path().join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        let mk_usb = |port: &str, vid: &str, pid: &str, serial: Option<&str>, iface_tail: &str| -> PathBuf {
            let d = sys.join("devices/pci0000:00/0000:00:14.0/usb1/1-1").join(port);
            let iface = d.join(iface_tail);
            std::fs::create_dir_all(&iface).unwrap();
            std::fs::write(d.join("idVendor"), format!("{vid}\n")).unwrap();
            std::fs::write(d.join("idProduct"), format!("{pid}\n")).unwrap();
            std::fs::write(d.join("busnum"), "1\n").unwrap();
            std::fs::write(d.join("devnum"), "9\n").unwrap();
            if let Some(s) = serial {
                std::fs::write(d.join("serial"), format!("{s}\n")).unwrap();
            }
            iface
        };
        let acm_iface = mk_usb("1-1.4", "1b4f", "9206", Some("PM1"), "1-1.4:1.0");
        let ftdi_port = mk_usb("1-1.2", "0403", "6001", Some("A6008isP"), "1-1.2:1.0/ttyUSB0");
        std::fs::create_dir_all(sys.join("class/tty/ttyACM0")).unwrap();
        std::fs::create_dir_all(sys.join("class/tty/ttyUSB0")).unwrap();
        std::os::unix::fs::symlink(&acm_iface, sys.join("class/tty/ttyACM0/device")).unwrap();
        std::os::unix::fs::symlink(&ftdi_port, sys.join("class/tty/ttyUSB0/device")).unwrap();
        for n in ["ttyACM0", "ttyUSB0", "ttyS0", "ttyACM10"] {
            std::fs::write(dev.join(n), "").unwrap();
        }
        let c = serial_candidates(&dev, &sys);
        let names: Vec<String> = c.iter().map(|c| c.path.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["ttyACM0", "ttyUSB0", "ttyACM10"]);
        let acm = c[0].usb.as_ref().unwrap();
        assert_eq!((acm.vid, acm.pid, acm.bus_port.as_str(), acm.serial.as_deref()), (0x1B4F, 0x9206, "1-1.4", Some("PM1")));
        let ftdi = c[1].usb.as_ref().unwrap();
        assert_eq!((ftdi.vid, ftdi.bus_port.as_str()), (0x0403, "1-1.2"));
        assert!(c[2].usb.is_none(), "no sysfs entry: still listed, without USB details");
        // Selection by USB serial or port resolves to the tty.
        let by_serial = resolve_serial(&Selector::parse("serial:A6008isP").unwrap(), &c).unwrap();
        assert_eq!(by_serial.path, dev.join("ttyUSB0"));
        let by_port = resolve_serial(&Selector::parse("bus-port:1-1.4").unwrap(), &c).unwrap();
        assert_eq!(by_port.path, dev.join("ttyACM0"));
        assert!(resolve_serial(&Selector::parse("serial:nope").unwrap(), &c).is_err());
        // Listing: a tty we may not open shows as present with insufficient permissions.
        let locked = dev.join("ttyACM0");
        let l = build_listing(&[], &c, &|p: &Path| if p == locked { Access::InsufficientPermissions } else { Access::Ok });
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].access, Access::InsufficientPermissions);
        assert!(l[0].description.contains("Pro Micro"), "{}", l[0].description);
        assert_eq!(l[1].serial.as_deref(), Some("A6008isP"));
    }
}
