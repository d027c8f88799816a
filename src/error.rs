//! Errors that reach the operator: every one carries a failure class (for records and yield
//! Pareto) and a message that says what happened and what to check.

use std::fmt;

/// Why a programming attempt failed. Stored in the database as [`FailureClass::as_str`]; the
/// strings are stable (reports group on them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureClass {
    /// Signature read all 0x00 or all 0xFF: nothing answered on MISO.
    NoTarget,
    /// A valid signature of a different part.
    WrongChip,
    /// Programming-enable echo never came back (target too slow for the SCK, in reset, or no clock).
    ProgEnable,
    /// Bytes on the wire were garbled: checksum/echo/framing errors (flaky contact, noise).
    Communication,
    /// Flash read back differs from what was written.
    VerifyFlash,
    /// EEPROM read back differs.
    VerifyEeprom,
    /// A fuse read back differs (in the bits that exist) from what was written.
    VerifyFuse,
    /// Lock byte read back differs.
    VerifyLock,
    /// The programmer went away (USB unplugged, tty vanished).
    ProgrammerGone,
    /// The programmer did not answer in time.
    Timeout,
    /// The programmer could not be opened (missing, busy, permissions).
    ProgrammerOpen,
    /// Configuration or recipe problem discovered at run time.
    Config,
    /// The station stopped (crash or kill) while the attempt ran.
    Interrupted,
    /// The result could not be written to the records (shown, never stored: the attempt row
    /// stays `running` until the station's next start marks it interrupted).
    Records,
    /// Anything else.
    Internal,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::NoTarget => "no_target",
            FailureClass::WrongChip => "wrong_chip",
            FailureClass::ProgEnable => "prog_enable",
            FailureClass::Communication => "communication",
            FailureClass::VerifyFlash => "verify_flash",
            FailureClass::VerifyEeprom => "verify_eeprom",
            FailureClass::VerifyFuse => "verify_fuse",
            FailureClass::VerifyLock => "verify_lock",
            FailureClass::ProgrammerGone => "programmer_gone",
            FailureClass::Timeout => "timeout",
            FailureClass::ProgrammerOpen => "programmer_open",
            FailureClass::Config => "config",
            FailureClass::Interrupted => "interrupted",
            FailureClass::Records => "records",
            FailureClass::Internal => "internal",
        }
    }

    /// What the operator should check, in one line.
    pub fn hint(self) -> &'static str {
        match self {
            FailureClass::NoTarget => "check the ISP cable orientation and that the board is powered",
            FailureClass::WrongChip => "this board carries a different MCU than the recipe: check the SKU and the board",
            FailureClass::ProgEnable => "re-seat the board; if it repeats, the target clock may be slow (lower the SCK) or RESET is not wired",
            FailureClass::Communication => "re-seat the board and the ISP cable: contacts are flaky",
            FailureClass::VerifyFlash => "flash did not read back as written: retest once, then reject the board",
            FailureClass::VerifyEeprom => "EEPROM did not read back as written: retest once, then reject the board",
            FailureClass::VerifyFuse => "fuses did not read back as written: retest once, then reject the board",
            FailureClass::VerifyLock => "lock bits did not read back as written: retest once, then reject the board",
            FailureClass::ProgrammerGone => "the programmer disconnected: check its USB cable and hub, then restart the slot",
            FailureClass::Timeout => "the programmer stopped answering: re-plug it and retest",
            FailureClass::ProgrammerOpen => "the programmer could not be opened: check it is plugged in, not used by another program, and the udev rules",
            FailureClass::Config => "fix the recipe or station configuration",
            FailureClass::Interrupted => "the station stopped during this attempt: retest the board",
            FailureClass::Records => "the result is not in the records: set the board aside with its serial and retest it once the records are back",
            FailureClass::Internal => "report this to the production engineer",
        }
    }

    /// Whether the whole slot (programmer) is unusable after this failure, as opposed to just
    /// the board in it.
    pub fn takes_slot_offline(self) -> bool {
        matches!(self, FailureClass::ProgrammerGone | FailureClass::ProgrammerOpen)
    }

    pub fn parse(s: &str) -> Option<FailureClass> {
        use FailureClass::*;
        [
            NoTarget, WrongChip, ProgEnable, Communication, VerifyFlash, VerifyEeprom, VerifyFuse,
            VerifyLock, ProgrammerGone, Timeout, ProgrammerOpen, Config, Interrupted, Records, Internal,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a programmer or a programming job.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct ProgError {
    pub class: FailureClass,
    /// What happened, specific: "signature 0x000000: no target answered — check the ISP cable and target power".
    pub message: String,
}

impl ProgError {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Self { class, message: message.into() }
    }

    /// `what` followed by the class's hint: "`what` — `hint`".
    pub fn with_hint(class: FailureClass, what: impl fmt::Display) -> Self {
        Self { class, message: format!("{what} — {}", class.hint()) }
    }

    pub fn timeout(what: impl fmt::Display) -> Self {
        Self::with_hint(FailureClass::Timeout, format!("{what}: no answer in time"))
    }

    pub fn gone(what: impl fmt::Display) -> Self {
        Self::with_hint(FailureClass::ProgrammerGone, what)
    }

    pub fn comm(what: impl fmt::Display) -> Self {
        Self::with_hint(FailureClass::Communication, what)
    }

    /// Map an I/O error from a transport: a vanished device is `ProgrammerGone`, others are
    /// communication errors.
    pub fn io(context: &str, e: &std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match e.kind() {
            TimedOut => Self::timeout(context),
            BrokenPipe | NotConnected | ConnectionReset | ConnectionAborted | UnexpectedEof => {
                Self::gone(format!("{context}: {e}"))
            }
            _ if e.raw_os_error() == Some(nix::libc::EIO) || e.raw_os_error() == Some(nix::libc::ENODEV) || e.raw_os_error() == Some(nix::libc::ENXIO) => {
                Self::gone(format!("{context}: {e}"))
            }
            _ => Self::comm(format!("{context}: {e}")),
        }
    }
}

pub type ProgResult<T> = Result<T, ProgError>;
