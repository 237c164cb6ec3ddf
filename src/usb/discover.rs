//! Finding usb9pfs gadgets in sysfs: a USB device carries one when its active
//! configuration has an interface ff/ff/09 with exactly one bulk IN and one
//! bulk OUT endpoint in any alternate setting, whatever its VID:PID. Each such
//! interface is reported on its own (a gadget may carry several).
//!
//! The interfaces come from the device's raw `descriptors` attribute, parsed
//! by [`crate::usb::descriptors`] exactly as the worker parses the usbfs node, so
//! discovery and claiming agree by interface number and see every alternate
//! setting. Reading sysfs needs no privileges and no libusb, so `usb9pfsd
//! list` works as any user and on machines without USB (it finds nothing).
//! This module must never open a device node or claim anything.

use std::fs;
use std::path::{Path, PathBuf};

use crate::board::{usb_id, BoardInfo, BusAddr};
use crate::usb::descriptors;

/// The USB part of sysfs (`/sys/bus/usb/devices`), rooted elsewhere in tests.
#[derive(Clone, Debug)]
pub struct Sysfs {
    pub devices: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs { devices: PathBuf::from("/sys/bus/usb/devices") }
    }
}

impl Sysfs {
    /// Every usb9pfs interface present now, ordered by bus, address and
    /// interface number.
    pub fn scan(&self) -> Vec<BoardInfo> {
        let Ok(entries) = fs::read_dir(&self.devices) else {
            return Vec::new();
        };
        let mut found: Vec<BoardInfo> =
            entries.flatten().filter(|e| !e.file_name().to_string_lossy().contains(':')).flat_map(|e| probe(&e.path())).collect();
        found.sort_by_key(|g| g.key());
        found
    }

    /// False only when sysfs shows the device at `info`'s bus-address has
    /// left the bus (its directory gone, or another device on its port);
    /// true when it is there or sysfs cannot tell (no USB sysfs at all).
    pub fn on_bus(&self, info: &BoardInfo) -> bool {
        if !self.devices.is_dir() {
            return true;
        }
        let dev = self.devices.join(&info.port_path);
        let at = |name| attr(&dev, name).and_then(|v| v.parse::<u8>().ok());
        at("busnum") == Some(info.busaddr.bus) && at("devnum") == Some(info.busaddr.addr)
    }
}

/// Reads one usb_device directory: one entry per usb9pfs interface of its
/// active configuration (none for any other device).
pub fn probe(dev: &Path) -> Vec<BoardInfo> {
    probe_device(dev).unwrap_or_default()
}

fn probe_device(dev: &Path) -> Option<Vec<BoardInfo>> {
    let sysname = dev.file_name()?.to_string_lossy().into_owned();
    let bus: u8 = attr(dev, "busnum")?.parse().ok()?;
    let addr: u8 = attr(dev, "devnum")?.parse().ok()?;
    let vid = u16::from_str_radix(&attr(dev, "idVendor")?, 16).ok()?;
    let pid = u16::from_str_radix(&attr(dev, "idProduct")?, 16).ok()?;
    let config: u8 = attr(dev, "bConfigurationValue").filter(|c| !c.is_empty())?.parse().ok()?;
    // Descriptors are a few hundred bytes; a bounded read guards against an
    // odd file, not against the kernel.
    let raw = fs::read(dev.join("descriptors")).ok()?;
    let layout = descriptors::parse(raw.get(..raw.len().min(64 * 1024))?, config);
    let (serial, manufacturer, product) = (attr(dev, "serial"), attr(dev, "manufacturer"), attr(dev, "product"));
    Some(
        layout
            .usb9pfs
            .iter()
            .map(|i| BoardInfo {
                busaddr: BusAddr { bus, addr },
                port_path: sysname.clone(),
                vid,
                pid,
                id: usb_id(vid, pid),
                serial: serial.clone(),
                manufacturer: manufacturer.clone(),
                product: product.clone(),
                interface: i.number,
                alt: i.alt,
            })
            .collect(),
    )
}

fn attr(dir: &Path, name: &str) -> Option<String> {
    let raw = fs::read(dir.join(name)).ok()?;
    Some(String::from_utf8_lossy(&raw).trim().to_string())
}

/// Builds fake sysfs trees for tests of discovery, listing and hotplug.
#[doc(hidden)]
pub mod fake {
    use std::fs;
    use std::path::Path;

    use crate::usb::descriptors::build::{self, Alt};

    /// A usb_device dir `root/<port>` with one usb9pfs interface (or, with
    /// `triple`, one interface of another class), configured as configuration 1.
    pub fn device(root: &Path, port: &str, bus: u8, addr: u8, id: (u16, u16), serial: Option<&str>, triple: &str) {
        let hex = |i: usize| u8::from_str_radix(&triple[i..i + 2], 16).expect("hex triple");
        let alt = Alt { triple: (hex(0), hex(2), hex(4)), ..Alt::usb9pfs(0, 0, 1) };
        device_with(root, port, bus, addr, id, serial, &[alt]);
    }

    /// The same with any interfaces and alternate settings.
    pub fn device_with(root: &Path, port: &str, bus: u8, addr: u8, id: (u16, u16), serial: Option<&str>, alts: &[Alt]) {
        let dev = root.join(port);
        let w = |p: &Path, name: &str, v: &str| {
            fs::create_dir_all(p).expect("mkdir");
            fs::write(p.join(name), format!("{v}\n")).expect("write");
        };
        w(&dev, "busnum", &bus.to_string());
        w(&dev, "devnum", &addr.to_string());
        w(&dev, "idVendor", &format!("{:04x}", id.0));
        w(&dev, "idProduct", &format!("{:04x}", id.1));
        w(&dev, "bConfigurationValue", "1");
        w(&dev, "manufacturer", "Linux");
        w(&dev, "product", "usb9pfs board");
        if let Some(s) = serial {
            w(&dev, "serial", s);
        }
        fs::write(dev.join("descriptors"), build::device(1, alts)).expect("write descriptors");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usb::descriptors::build::Alt;

    #[test]
    fn finds_gadgets_by_interface_triple_not_vid_pid() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        fake::device(root, "1-1", 1, 2, (0x1d6b, 0x0109), Some("A"), "ffff09");
        fake::device(root, "2-1", 2, 3, (0x0525, 0xa4a0), Some("B"), "ffff09");
        fake::device(root, "3-1", 3, 4, (0x1d6b, 0x0109), Some("storage"), "080650");
        fs::create_dir_all(root.join("usb1")).expect("root hub dir");
        let found = Sysfs { devices: root.to_path_buf() }.scan();
        let got: Vec<_> = found.iter().map(|g| (g.busaddr.to_string(), g.id.clone(), g.serial.clone())).collect();
        assert_eq!(
            got,
            vec![
                ("001-002".to_string(), "1d6b:0109".to_string(), Some("A".to_string())),
                ("002-003".to_string(), "0525:a4a0".to_string(), Some("B".to_string())),
            ]
        );
        assert_eq!(found[0].port_path, "1-1");
        assert_eq!(found[0].interface, 0);
    }

    #[test]
    fn unconfigured_or_wrong_endpoints_are_not_gadgets() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        fake::device(root, "1-1", 1, 2, (1, 2), None, "ffff09");
        fs::write(root.join("1-1/bConfigurationValue"), "\n").expect("w");
        assert_eq!(probe(&root.join("1-1")), vec![]);
        let interrupt = Alt { endpoints: vec![(0x81, false), (0x01, true)], ..Alt::usb9pfs(0, 0, 1) };
        fake::device_with(root, "1-2", 1, 3, (1, 2), None, &[interrupt]);
        assert_eq!(probe(&root.join("1-2")), vec![]);
        fake::device(root, "1-3", 1, 4, (1, 2), None, "ffff09");
        assert!(probe(&root.join("1-3")).first().is_some_and(|g| g.serial.is_none()));
    }

    #[test]
    fn every_usb9pfs_interface_of_a_composite_gadget_by_number_and_alt() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        // ACM at 0, usb9pfs at 2 and 10 ("1-1:1.10" sorts before "1-1:1.2"
        // as a string), and one whose endpoints live in alternate setting 1.
        let alts = [
            Alt::empty(0, 0, (2, 2, 1)),
            Alt::usb9pfs(10, 0, 3),
            Alt::usb9pfs(2, 0, 2),
            Alt::empty(4, 0, (0xff, 0xff, 0x09)),
            Alt::usb9pfs(4, 1, 4),
        ];
        fake::device_with(root, "1-1", 1, 2, (0x1d6b, 0x0109), Some("A"), &alts);
        let found = Sysfs { devices: root.to_path_buf() }.scan();
        let got: Vec<_> = found.iter().map(|g| (g.key().to_string(), g.alt)).collect();
        assert_eq!(got, vec![("001-002#2".into(), 0), ("001-002#4".into(), 1), ("001-002#10".into(), 0)]);
        assert!(found.iter().all(|g| g.serial.as_deref() == Some("A")));
    }

    #[test]
    fn no_usb_at_all_is_an_empty_list() {
        let s = Sysfs { devices: PathBuf::from("/nonexistent/sys/bus/usb/devices") };
        assert!(s.scan().is_empty());
        // and cannot tell a board has gone
        assert!(s.on_bus(&BoardInfo::example(Some("A"), 1, 2)));
    }

    #[test]
    fn a_board_is_on_the_bus_while_its_port_holds_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let sysfs = Sysfs { devices: dir.path().to_path_buf() };
        let board = BoardInfo::example(Some("A"), 1, 2); // on port 1-1
        assert!(!sysfs.on_bus(&board), "nothing on its port");
        fake::device_with(dir.path(), "1-1", 1, 2, (0x1d6b, 0x0109), Some("A"), &[Alt::usb9pfs(0, 0, 1)]);
        assert!(sysfs.on_bus(&board));
        assert!(!sysfs.on_bus(&BoardInfo::example(Some("A"), 1, 3)), "another device on that port now");
    }
}
