//! STM32 targets: parts as data (memory map, identification registers, option bytes, flash
//! controller timings). The simulated chip lives in [`crate::sim::stm32`].

pub mod part;

pub use part::{find, ids, OptionBytes, Revision, Stm32Part, STM32_PARTS};
