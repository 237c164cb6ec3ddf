//! Who a board is: its place on the bus right now ([`BusAddr`], the key of
//! its worker) and what it says about itself ([`GadgetInfo`]).
//!
//! Plain data only; it must never open a device or read sysfs.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

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
pub struct GadgetKey {
    pub busaddr: BusAddr,
    pub interface: u8,
}

impl fmt::Display for GadgetKey {
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

/// One usb9pfs interface of a USB device, with what the device says about
/// itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GadgetInfo {
    #[serde(skip)]
    pub busaddr: BusAddr,
    pub bus: u8,
    pub address: u8,
    /// Kernel port path, e.g. `1-1.2` (stable across resets on the same port).
    pub port_path: String,
    #[serde(skip)]
    pub vid: u16,
    #[serde(skip)]
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

impl GadgetInfo {
    pub fn key(&self) -> GadgetKey {
        GadgetKey { busaddr: self.busaddr, interface: self.interface }
    }

    pub fn serial_or_none(&self) -> &str {
        self.serial.as_deref().unwrap_or("(no serial)")
    }

    /// A board for tests: VID:PID 1d6b:0109 on port `<bus>-1`, interface 0.
    #[doc(hidden)]
    pub fn example(serial: Option<&str>, bus: u8, addr: u8) -> GadgetInfo {
        GadgetInfo {
            busaddr: BusAddr { bus, addr },
            bus,
            address: addr,
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
