//! The station: slots with programmers, scans in, attempts recorded, events out.
//!
//! - [`config`]: the station file (which programmer sits in which slot);
//! - [`scan`]: barcode lines → `SLOT:SERIAL` / `SERIAL`;
//! - [`supervisor`]: one task per slot, dispatch, events for displays;
//! - `unit`: one unit's way through a slot (attempt row, plan, job, record, totals);
//! - [`recorder`]: every records write, retried while the records are unavailable.

pub mod config;
pub mod recorder;
pub mod scan;
pub mod supervisor;
mod unit;

pub use config::{Slot, Station};
pub use recorder::{RecordsState, Unrecorded};
pub use supervisor::{SlotStatus, StationEvent, Submit, Supervisor, Totals, STOP_GRACE};
