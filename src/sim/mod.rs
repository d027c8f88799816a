//! Simulation: an AVR target behind its ISP pins, and programmer emulators that put it on a
//! real wire (pseudo-terminal or USB control-transfer level).

pub mod boards;
pub mod bridge;
pub mod buspirate;
pub mod pty;
pub mod serving;
pub mod stk500;
pub mod stm32;
pub mod target;
pub mod usb;

pub use target::{Fault, SimOptions, SimStats, SimTarget};
