//! The station: slots with programmers, scans in, attempts recorded, events out.
//!
//! - [`config`]: the station file (which programmer sits in which slot);
//! - [`scan`]: barcode lines → `SLOT:SERIAL` / `SERIAL`;
//! - [`supervisor`]: one task per slot, dispatch, recording, events for displays.

pub mod config;
pub mod scan;
pub mod supervisor;

pub use config::{Slot, Station};
pub use supervisor::{SlotStatus, StationEvent, Submit, Supervisor, Totals};
