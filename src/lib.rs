//! usb9pfsd: carries 9P between boards running the Linux usb9pfs gadget
//! (`mount -t 9p -o trans=usbg`) and 9P servers such as diod.
//!
//! The modules follow the data path; ARCHITECTURE.md has the map:
//! hotplug → supervisor → worker → pipe (USB) ⇄ frame ⇄ backend.

pub mod backend;
pub mod board;
pub mod cli;
pub mod config;
pub mod descriptors;
pub mod device;
pub mod discover;
pub mod forward;
pub mod frame;
pub mod handover;
pub mod hotplug;
pub mod logging;
pub mod notify;
pub mod pipe;
pub mod reconnect;
pub mod sim;
pub mod status;
pub mod succession;
pub mod supervisor;
pub mod worker;
