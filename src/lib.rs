//! usb9pfsd: carries 9P between boards running the Linux usb9pfs gadget
//! (`mount -t 9p -o trans=usbg`) and 9P servers such as diod.
//!
//! The folders follow the data path; ARCHITECTURE.md has the map:
//! `usb` (hotplug, the board's endpoints) → `daemon` (supervisor, control,
//! hand-over) → `worker` → `ninep` (frame loop ⇄ server connection).

pub mod board;
pub mod cli;
pub mod config;
pub mod counters;
pub mod daemon;
pub mod list;
pub mod ninep;
pub mod probe;
pub mod table;
pub mod usb;
pub mod worker;
