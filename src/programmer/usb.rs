//! USB programmers' wire: vendor control transfers on endpoint 0.
//!
//! USBasp and USBtinyISP speak nothing but vendor-type, device-recipient control requests
//! (`bRequest`, `wValue`, `wIndex`, optional data stage). [`UsbTransport`] is exactly that and
//! no more, so the drivers ([`super::usbasp`], [`super::usbtiny`]) run unchanged against real
//! hardware ([`NusbTransport`]) and against the control-transfer emulators in
//! [`crate::sim::usb`].
//!
//! Error mapping follows nusb's error kinds: a disconnected device is
//! [`FailureClass::ProgrammerGone`], permission/busy/not-found at open time is
//! [`FailureClass::ProgrammerOpen`] with the udev hint, a transfer that does not complete in
//! time is [`FailureClass::Timeout`].

use std::time::Duration;

use async_trait::async_trait;

use crate::error::{FailureClass, ProgError, ProgResult};
use crate::programmer::list::{Selector, UsbDeviceRecord};
use crate::programmer::ProgrammerKind;

/// Where the udev rule lives (named in every permission error).
pub const UDEV_RULES: &str = "deploy/99-flashline-programmers.rules";

/// USBasp (Thomas Fischl's firmware, shared V-USB VID:PID).
pub const USBASP_VID_PID: (u16, u16) = (0x16C0, 0x05DC);
/// USBtinyISP / SparkFun PocketAVR (Adafruit VID:PID).
pub const USBTINY_VID_PID: (u16, u16) = (0x1781, 0x0C9F);

/// Known USB ISP programmers by VID:PID.
pub fn known_usb_programmer(vid: u16, pid: u16) -> Option<ProgrammerKind> {
    match (vid, pid) {
        USBASP_VID_PID => Some(ProgrammerKind::Usbasp),
        USBTINY_VID_PID => Some(ProgrammerKind::Usbtiny),
        _ => None,
    }
}

/// What went wrong on a control transfer, in the terms the supervisor needs (retry the board
/// vs take the slot offline).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsbError {
    #[error("device disconnected")]
    Disconnected,
    #[error("transfer timed out")]
    Timeout,
    /// The device refused the request (STALL): unknown request or firmware error.
    #[error("request stalled by the device")]
    Stall,
    #[error("permission denied")]
    PermissionDenied,
    #[error("device busy (claimed by another program or driver)")]
    Busy,
    #[error("device not found")]
    NotFound,
    #[error("{0}")]
    Other(String),
}

impl UsbError {
    /// Map to an operator-facing error; `what` names the programmer and the operation.
    pub fn into_prog(self, what: &str) -> ProgError {
        match self {
            UsbError::Disconnected => ProgError::gone(format!("{what}: USB device disconnected")),
            UsbError::Timeout => ProgError::timeout(what),
            UsbError::PermissionDenied => ProgError::new(
                FailureClass::ProgrammerOpen,
                format!("{what}: insufficient permissions on the USB device — install {UDEV_RULES} into /etc/udev/rules.d/ and re-plug the programmer"),
            ),
            UsbError::Busy => ProgError::with_hint(FailureClass::ProgrammerOpen, format!("{what}: USB device busy (another program has it open)")),
            UsbError::NotFound => ProgError::with_hint(FailureClass::ProgrammerOpen, format!("{what}: USB device not found")),
            UsbError::Stall => ProgError::comm(format!("{what}: the programmer refused the request (STALL)")),
            UsbError::Other(m) => ProgError::comm(format!("{what}: USB error: {m}")),
        }
    }
}

impl From<nusb::Error> for UsbError {
    fn from(e: nusb::Error) -> Self {
        match e.kind() {
            nusb::ErrorKind::Disconnected => UsbError::Disconnected,
            nusb::ErrorKind::PermissionDenied => UsbError::PermissionDenied,
            nusb::ErrorKind::Busy => UsbError::Busy,
            nusb::ErrorKind::NotFound => UsbError::NotFound,
            _ => UsbError::Other(e.to_string()),
        }
    }
}

impl From<nusb::transfer::TransferError> for UsbError {
    fn from(e: nusb::transfer::TransferError) -> Self {
        use nusb::transfer::TransferError as T;
        match e {
            // nusb reports an expired transfer timeout as a cancelled transfer.
            T::Cancelled => UsbError::Timeout,
            T::Stall => UsbError::Stall,
            T::Disconnected => UsbError::Disconnected,
            other => UsbError::Other(other.to_string()),
        }
    }
}

/// The narrow USB seam: vendor/device control transfers with timeouts, and the waits between
/// them.
#[async_trait]
pub trait UsbTransport: Send {
    /// Vendor control IN transfer: returns at most `length` bytes the device sent.
    async fn control_in(&mut self, request: u8, value: u16, index: u16, length: u16, timeout: Duration) -> Result<Vec<u8>, UsbError>;

    /// Vendor control OUT transfer with a data stage (possibly empty).
    async fn control_out(&mut self, request: u8, value: u16, index: u16, data: &[u8], timeout: Duration) -> Result<(), UsbError>;

    /// Wait between transfers (target write delays). Real hardware sleeps; emulators account
    /// the time in their model.
    async fn delay(&mut self, d: Duration) {
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    /// Stable identity for records: `usb:SERIAL`, `usb:BUS-PORT`, `sim:usbasp`…
    fn identity(&self) -> String;
}

/// [`UsbTransport`] over a real device, through nusb.
pub struct NusbTransport {
    device: nusb::Device,
    identity: String,
}

impl std::fmt::Debug for NusbTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NusbTransport").field("identity", &self.identity).finish()
    }
}

/// Enumerate USB devices as plain records (for listing and selection).
pub async fn usb_devices() -> Result<Vec<UsbDeviceRecord>, UsbError> {
    let list = nusb::list_devices().await?;
    Ok(list.map(|d| record_of(&d)).collect())
}

fn record_of(d: &nusb::DeviceInfo) -> UsbDeviceRecord {
    let ports: Vec<String> = d.port_chain().iter().map(|p| p.to_string()).collect();
    let bus_port = if ports.is_empty() { d.bus_id().to_string() } else { format!("{}-{}", d.busnum(), ports.join(".")) };
    UsbDeviceRecord {
        vid: d.vendor_id(),
        pid: d.product_id(),
        bus_port,
        busnum: d.busnum(),
        address: d.device_address(),
        serial: d.serial_number().map(str::to_string),
        product: d.product_string().map(str::to_string),
        manufacturer: d.manufacturer_string().map(str::to_string),
    }
}

impl NusbTransport {
    /// Find and open the `kind` programmer chosen by `selector` (or the only one attached).
    pub async fn open(kind: ProgrammerKind, selector: Option<&Selector>) -> ProgResult<NusbTransport> {
        let (vid, pid) = match kind {
            ProgrammerKind::Usbasp => USBASP_VID_PID,
            ProgrammerKind::Usbtiny => USBTINY_VID_PID,
            other => return Err(ProgError::new(FailureClass::Config, format!("{other} is not a USB programmer"))),
        };
        let what = format!("{kind} ({vid:04X}:{pid:04X})");
        let list = nusb::list_devices().await.map_err(|e| {
            ProgError::with_hint(FailureClass::ProgrammerOpen, format!("{what}: cannot enumerate USB devices ({e}); is USB visible to this machine or container?"))
        })?;
        let infos: Vec<nusb::DeviceInfo> = list
            .filter(|d| d.vendor_id() == vid && d.product_id() == pid)
            .filter(|d| selector.map(|s| s.matches_usb(&record_of(d))).unwrap_or(true))
            .collect();
        let info = match infos.len() {
            0 => {
                let sel = selector.map(|s| format!(" matching '{s}'")).unwrap_or_default();
                return Err(ProgError::with_hint(FailureClass::ProgrammerOpen, format!("no {what}{sel} is attached")));
            }
            1 => &infos[0],
            _ => {
                let ids: Vec<String> = infos.iter().map(|d| Selector::best_for_usb(&record_of(d)).to_string()).collect();
                return Err(ProgError::new(
                    FailureClass::Config,
                    format!("{} {what} programmers are attached; choose one with --port {}", infos.len(), ids.join(" or --port ")),
                ));
            }
        };
        let rec = record_of(info);
        let identity = match &rec.serial {
            Some(s) if !s.is_empty() => format!("usb:{s}"),
            _ => format!("usb:{}", rec.bus_port),
        };
        let device = info.open().await.map_err(|e| UsbError::from(e).into_prog(&format!("{what} at {}", rec.bus_port)))?;
        Ok(NusbTransport { device, identity })
    }
}

fn vendor() -> (nusb::transfer::ControlType, nusb::transfer::Recipient) {
    (nusb::transfer::ControlType::Vendor, nusb::transfer::Recipient::Device)
}

#[async_trait]
impl UsbTransport for NusbTransport {
    async fn control_in(&mut self, request: u8, value: u16, index: u16, length: u16, timeout: Duration) -> Result<Vec<u8>, UsbError> {
        let (control_type, recipient) = vendor();
        let fut = self.device.control_in(nusb::transfer::ControlIn { control_type, recipient, request, value, index, length }, timeout);
        // nusb enforces the timeout; the outer bound only guards against a stuck host stack.
        match tokio::time::timeout(timeout + Duration::from_millis(500), fut.into_future()).await {
            Ok(r) => r.map_err(UsbError::from),
            Err(_) => Err(UsbError::Timeout),
        }
    }

    async fn control_out(&mut self, request: u8, value: u16, index: u16, data: &[u8], timeout: Duration) -> Result<(), UsbError> {
        let (control_type, recipient) = vendor();
        let fut = self.device.control_out(nusb::transfer::ControlOut { control_type, recipient, request, value, index, data }, timeout);
        match tokio::time::timeout(timeout + Duration::from_millis(500), fut.into_future()).await {
            Ok(r) => r.map_err(UsbError::from),
            Err(_) => Err(UsbError::Timeout),
        }
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }
}

use std::future::IntoFuture;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classes() {
        assert_eq!(UsbError::Disconnected.into_prog("usbasp").class, FailureClass::ProgrammerGone);
        assert_eq!(UsbError::Timeout.into_prog("usbasp").class, FailureClass::Timeout);
        let e = UsbError::PermissionDenied.into_prog("usbasp");
        assert_eq!(e.class, FailureClass::ProgrammerOpen);
        assert!(e.message.contains(UDEV_RULES), "{}", e.message);
        assert_eq!(UsbError::Busy.into_prog("x").class, FailureClass::ProgrammerOpen);
        assert_eq!(UsbError::NotFound.into_prog("x").class, FailureClass::ProgrammerOpen);
        assert_eq!(UsbError::from(nusb::transfer::TransferError::Disconnected), UsbError::Disconnected);
        assert_eq!(UsbError::from(nusb::transfer::TransferError::Cancelled), UsbError::Timeout);
        assert_eq!(known_usb_programmer(0x16C0, 0x05DC), Some(ProgrammerKind::Usbasp));
        assert_eq!(known_usb_programmer(0x1781, 0x0C9F), Some(ProgrammerKind::Usbtiny));
    }
}
