//! Finding usb9pfs gadgets in sysfs: a USB device is one when its active
//! configuration has an interface ff/ff/09 with exactly one bulk IN and one
//! bulk OUT endpoint, whatever its VID:PID.
//!
//! Reading sysfs needs no privileges and no libusb, so `usb9pfsd list` works
//! as any user and on machines without USB (it finds nothing). This module
//! must never open a device node or claim anything.

use std::fs;
use std::path::{Path, PathBuf};

use crate::board::{usb_id, BusAddr, GadgetInfo};

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
    /// Every gadget present now, ordered by bus and address.
    pub fn scan(&self) -> Vec<GadgetInfo> {
        let Ok(entries) = fs::read_dir(&self.devices) else {
            return Vec::new();
        };
        let mut found: Vec<GadgetInfo> = entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().contains(':'))
            .filter_map(|e| probe(&e.path()))
            .collect();
        found.sort_by_key(|g| g.busaddr);
        found
    }
}

/// Reads one usb_device directory; `Some` if it is a usb9pfs gadget.
pub fn probe(dev: &Path) -> Option<GadgetInfo> {
    let sysname = dev.file_name()?.to_string_lossy().into_owned();
    let bus: u8 = attr(dev, "busnum")?.parse().ok()?;
    let addr: u8 = attr(dev, "devnum")?.parse().ok()?;
    let vid = u16::from_str_radix(&attr(dev, "idVendor")?, 16).ok()?;
    let pid = u16::from_str_radix(&attr(dev, "idProduct")?, 16).ok()?;
    let config = attr(dev, "bConfigurationValue").filter(|c| !c.is_empty())?;
    let interface = find_interface(dev, &sysname, &config)?;
    Some(GadgetInfo {
        busaddr: BusAddr { bus, addr },
        bus,
        address: addr,
        port_path: sysname,
        vid,
        pid,
        id: usb_id(vid, pid),
        serial: attr(dev, "serial"),
        manufacturer: attr(dev, "manufacturer"),
        product: attr(dev, "product"),
        interface,
    })
}

fn find_interface(dev: &Path, sysname: &str, config: &str) -> Option<u8> {
    let prefix = format!("{sysname}:{config}.");
    let mut entries: Vec<_> = fs::read_dir(dev).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    entries.into_iter().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.strip_prefix(&prefix)?;
        let intf = e.path();
        let triple = (attr(&intf, "bInterfaceClass")?, attr(&intf, "bInterfaceSubClass")?, attr(&intf, "bInterfaceProtocol")?);
        if triple != ("ff".into(), "ff".into(), "09".into()) || !has_bulk_pair(&intf) {
            return None;
        }
        u8::from_str_radix(&attr(&intf, "bInterfaceNumber")?, 16).ok()
    })
}

/// Exactly one bulk IN and one bulk OUT endpoint (`ep_XX/type`, `direction`).
fn has_bulk_pair(intf: &Path) -> bool {
    let Ok(entries) = fs::read_dir(intf) else { return false };
    let (mut ins, mut outs) = (0, 0);
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with("ep_") {
            continue;
        }
        let ep = e.path();
        if attr(&ep, "type").as_deref() != Some("Bulk") {
            continue;
        }
        match attr(&ep, "direction").as_deref() {
            Some("in") => ins += 1,
            Some("out") => outs += 1,
            _ => {}
        }
    }
    ins == 1 && outs == 1
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

    /// A usb_device dir `root/<port>` with a usb9pfs interface (or, with
    /// `triple`, any other interface), configured as configuration 1.
    pub fn device(root: &Path, port: &str, bus: u8, addr: u8, id: (u16, u16), serial: Option<&str>, triple: &str) {
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
        let intf = dev.join(format!("{port}:1.0"));
        w(&intf, "bInterfaceClass", &triple[0..2]);
        w(&intf, "bInterfaceSubClass", &triple[2..4]);
        w(&intf, "bInterfaceProtocol", &triple[4..6]);
        w(&intf, "bInterfaceNumber", "00");
        for (ep, dir) in [("ep_81", "in"), ("ep_01", "out")] {
            w(&intf.join(ep), "type", "Bulk");
            w(&intf.join(ep), "direction", dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(probe(&root.join("1-1")), None);
        fake::device(root, "1-2", 1, 3, (1, 2), None, "ffff09");
        fs::write(root.join("1-2/1-2:1.0/ep_81/type"), "Interrupt\n").expect("w");
        assert_eq!(probe(&root.join("1-2")), None);
        fake::device(root, "1-3", 1, 4, (1, 2), None, "ffff09");
        assert!(probe(&root.join("1-3")).is_some_and(|g| g.serial.is_none()));
    }

    #[test]
    fn no_usb_at_all_is_an_empty_list() {
        let s = Sysfs { devices: PathBuf::from("/nonexistent/sys/bus/usb/devices") };
        assert!(s.scan().is_empty());
    }
}
