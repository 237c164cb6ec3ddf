//! Who a board is: its place on the bus right now ([`BusAddr`], the key of
//! its worker) and what it says about itself ([`BoardInfo`]).
//!
//! Plain data only; it must never open a device or read sysfs.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Bus number and device address: unique while the device stays plugged;
/// a reset or re-enumeration gives the board a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BusAddr {
    pub bus: u8,
    pub addr: u8,
}

impl fmt::Display for BusAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}-{:03}", self.bus, self.addr)
    }
}

/// One usb9pfs interface of one device: the key of a worker. A gadget may
/// carry several usb9pfs functions (one interface and mount tag each), and
/// each is an independent transport with its own 9P session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BoardKey {
    pub busaddr: BusAddr,
    pub interface: u8,
}

impl fmt::Display for BoardKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.busaddr, self.interface)
    }
}

impl BusAddr {
    /// The usbfs node of this device.
    pub fn devnode(&self) -> PathBuf {
        PathBuf::from(format!("/dev/bus/usb/{:03}/{:03}", self.bus, self.addr))
    }
}

/// Who a board is, in every JSON output that names one (`list --json`,
/// `status --json`, `probe --json` for a plugged board): these five fields,
/// flattened into the board's object (`#[serde(flatten)]`). The names and
/// formats are an interface, documented in usb9pfsd(8): scripts and other
/// programs (a labgrid driver) read them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardIdentity {
    /// The device's serial string; null when it has none.
    pub serial: Option<String>,
    /// `BBB-DDD`: bus number and device address, zero-padded as in
    /// `/dev/bus/usb/BBB/DDD` (a re-enumeration changes it).
    pub busaddr: String,
    /// bInterfaceNumber of the board's usb9pfs interface.
    pub interface: u8,
    /// The kernel's port path, e.g. `1-1.2` (stable on the same port).
    pub port_path: String,
    /// `vvvv:pppp`: VID:PID in lower-case hex.
    pub id: String,
}

/// One usb9pfs interface of a USB device, with what the device says about
/// itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoardInfo {
    pub busaddr: BusAddr,
    /// Kernel port path, e.g. `1-1.2` (stable across resets on the same port).
    pub port_path: String,
    pub vid: u16,
    pub pid: u16,
    /// `vid:pid` in hex.
    pub id: String,
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    /// bInterfaceNumber of the usb9pfs interface.
    pub interface: u8,
    /// The alternate setting that carries its two bulk endpoints.
    pub alt: u8,
}

impl BoardInfo {
    pub fn key(&self) -> BoardKey {
        BoardKey { busaddr: self.busaddr, interface: self.interface }
    }

    /// The board as every JSON output names it.
    pub fn identity(&self) -> BoardIdentity {
        BoardIdentity {
            serial: self.serial.clone(),
            busaddr: self.busaddr.to_string(),
            interface: self.interface,
            port_path: self.port_path.clone(),
            id: self.id.clone(),
        }
    }

    pub fn serial_or_none(&self) -> &str {
        self.serial.as_deref().unwrap_or("(no serial)")
    }

    /// A board for tests: VID:PID 1d6b:0109 on port `<bus>-1`, interface 0.
    #[doc(hidden)]
    pub fn example(serial: Option<&str>, bus: u8, addr: u8) -> BoardInfo {
        BoardInfo {
            busaddr: BusAddr { bus, addr },
            port_path: format!("{bus}-1"),
            vid: 0x1d6b,
            pid: 0x0109,
            id: usb_id(0x1d6b, 0x0109),
            serial: serial.map(Into::into),
            manufacturer: None,
            product: None,
            interface: 0,
            alt: 0,
        }
    }
}

/// `vid:pid` as lowercase hex.
pub fn usb_id(vid: u16, pid: u16) -> String {
    format!("{vid:04x}:{pid:04x}")
}
