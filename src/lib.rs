//! flashline: production-line batch flashing for AVR keyboard controllers.
//!
//! The data path reads off the module tree:
//! recipe → image → job → programmer driver → transport → record → report.
//!
//! | module | what lives there |
//! |---|---|
//! | [`mcu`] | the target-family seam: one catalog lookup over AVR and STM32 parts |
//! | [`part`] | AVR parts as data: signatures, memories, boot sections, fuse fields, delays |
//! | [`image`] | sparse memory image |
//! | [`hex`] | Intel HEX reader/writer with file:line errors |
//! | [`input`] | bounded reads of regular files only, BOM dropped, YAML nesting pre-scan |
//! | [`bootloader`] | bootloader catalog (seed guide tables) |
//! | [`recipe`] | per-SKU YAML recipes |
//! | [`build`] | firmware + bootloader merge with checks |
//! | [`fuse`] | fuse decoding and safety checks |
//! | [`isp`] | AVR serial-programming instructions |
//! | [`programmer`] | the `Programmer` trait and native drivers |
//! | [`job`] | identify → erase → program → verify → fuses → lock, with events |
//! | [`station`] | station config, scan intake, slot supervisor, station events |
//! | [`sim`] | simulated AVR target and programmer emulators; simulated STM32F103 and its JTAG port |
//! | [`stm32`] | STM32F103 parts as data: memory map, ids, option bytes, flash timings |
//! | [`error`] | failure classes and operator-facing errors |
//! | [`db`] | records: attempts, steps, units in SQLite/PostgreSQL |
//! | [`report`] | yield reports, unit CSV export, charts |
//! | [`bench`] | speed benchmarks: cycle vs protocol bound, vs avrdude, scaling, build |
//! | [`text`] | untrusted text made safe to show (control characters, bidi overrides escaped) |
//! | [`web`] | operator dashboard in the browser: tiles, scan box, live events, token guard |

pub mod bench;
pub mod bootloader;
pub mod build;
pub mod db;
pub mod report;
pub mod error;
pub mod fuse;
pub mod hex;
pub mod image;
pub mod input;
pub mod isp;
pub mod job;
pub mod mcu;
pub mod part;
pub mod programmer;
pub mod recipe;
pub mod sim;
pub mod station;
pub mod stm32;
pub mod text;
pub mod verify;
pub mod web;
