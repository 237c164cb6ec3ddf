//! A real usb9pfs gadget, opened through its usbfs node with libusb (rusb)
//! and presented as a [`UsbPipe`].
//!
//! The node is opened by path (`/dev/bus/usb/BBB/DDD`) and handed to libusb
//! (`libusb_wrap_sys_device`), with libusb's own device discovery off: the
//! supervisor already knows which device it means, permission errors name the
//! exact node, and libusb runs no hotplug thread of its own. Only the usb9pfs
//! interface is claimed. This module must never retry or decide anything.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use rusb::{Context, DeviceHandle, Direction, TransferType, UsbContext};

use crate::board::GadgetInfo;
use crate::pipe::{UsbError, UsbPipe};

/// Why a gadget could not be opened; each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("board disconnected before it could be opened")]
    Gone,
    #[error("{0}")]
    Failed(String),
}

/// libusb with its own device discovery off (we open nodes ourselves).
pub fn context() -> rusb::Result<Context> {
    rusb::disable_device_discovery()?;
    Context::new()
}

/// The claimed interface of one gadget.
pub struct Device {
    // Field order is drop order: the handle (which releases the interface)
    // must go before the file descriptor it wraps.
    handle: DeviceHandle<Context>,
    _node: File,
    iface: u8,
    ep_in: u8,
    ep_out: u8,
    mps: usize,
}

impl Device {
    /// Opens the node of `info`, checks its descriptors and claims the
    /// usb9pfs interface.
    pub fn open(ctx: &Context, info: &GadgetInfo) -> Result<Device, OpenError> {
        let path = info.busaddr.devnode();
        let node = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => OpenError::Gone,
            io::ErrorKind::PermissionDenied => OpenError::Failed(format!(
                "permission denied opening {}: is the usb9pfsd udev rule installed (udevadm control --reload, then replug) and is this user in group usb9pfsd?",
                path.display()
            )),
            _ => OpenError::Failed(format!("cannot open {}: {e}", path.display())),
        })?;
        // SAFETY: `node` outlives `handle` (field order in `Device`), as
        // open_device_with_fd requires.
        let handle = unsafe { ctx.open_device_with_fd(node.as_raw_fd()) }.map_err(|e| lib_err(e, "open", &path))?;
        let (iface, ep_in, ep_out, mps, storage) = describe(&handle).map_err(|e| lib_err(e, "read descriptors of", &path))?;
        let iface = iface.ok_or_else(|| {
            OpenError::Failed(format!("{} has no usb9pfs interface (ff/ff/09 with two bulk endpoints) any more", path.display()))
        })?;
        // Multi-function gadgets (g_multi) put usb-storage beside usb9pfs;
        // its stall handling causes spontaneous port resets that kill our
        // transfers, so p9_fwd.py detaches it and so do we.
        for s in storage {
            if handle.kernel_driver_active(s).unwrap_or(false) {
                let _ = handle.detach_kernel_driver(s);
            }
        }
        if handle.kernel_driver_active(iface).unwrap_or(false) {
            handle.detach_kernel_driver(iface).map_err(|e| lib_err(e, "detach the kernel driver from", &path))?;
        }
        handle.claim_interface(iface).map_err(|e| match e {
            rusb::Error::Busy => OpenError::Failed(format!(
                "interface {iface} of {} is claimed by another program (p9_fwd.py, a second usb9pfsd?)",
                path.display()
            )),
            e => lib_err(e, "claim", &path),
        })?;
        Ok(Device { handle, _node: node, iface, ep_in, ep_out, mps })
    }

    pub fn interface(&self) -> u8 {
        self.iface
    }
}

type Layout = (Option<u8>, u8, u8, usize, Vec<u8>);

/// The usb9pfs interface, its endpoints and packet size, and any
/// usb-storage interfaces, from the active configuration.
fn describe(handle: &DeviceHandle<Context>) -> rusb::Result<Layout> {
    let config = handle.device().active_config_descriptor()?;
    let mut found = (None, 0, 0, 0, Vec::new());
    for intf in config.interfaces() {
        for alt in intf.descriptors() {
            if alt.class_code() == 0x08 {
                found.4.push(alt.interface_number());
            }
            if (alt.class_code(), alt.sub_class_code(), alt.protocol_code()) != (0xff, 0xff, 0x09) {
                continue;
            }
            let bulk: Vec<_> = alt.endpoint_descriptors().filter(|e| e.transfer_type() == TransferType::Bulk).collect();
            let ep_in = bulk.iter().find(|e| e.direction() == Direction::In);
            let ep_out = bulk.iter().find(|e| e.direction() == Direction::Out);
            if let (Some(i), Some(o)) = (ep_in, ep_out) {
                found.0 = Some(alt.interface_number());
                found.1 = i.address();
                found.2 = o.address();
                found.3 = i.max_packet_size().min(o.max_packet_size()) as usize & 0x7ff;
            }
        }
    }
    Ok(found)
}

fn lib_err(e: rusb::Error, what: &str, path: &std::path::Path) -> OpenError {
    match e {
        rusb::Error::NoDevice | rusb::Error::NotFound => OpenError::Gone,
        rusb::Error::Access => OpenError::Failed(format!(
            "permission denied to {what} {}: is the usb9pfsd udev rule installed and is this user in group usb9pfsd?",
            path.display()
        )),
        e => OpenError::Failed(format!("cannot {what} {}: {e}", path.display())),
    }
}

fn usb_err(e: rusb::Error, len: usize) -> UsbError {
    match e {
        rusb::Error::NoDevice | rusb::Error::NotFound => UsbError::Gone,
        rusb::Error::Overflow => UsbError::Overflow(len),
        rusb::Error::Pipe => UsbError::Stall,
        e => UsbError::Transfer(e.to_string()),
    }
}

/// Blocking transfers without timeout: a worker sleeps in the kernel until
/// the board sends or disappears — no polling.
const FOREVER: Duration = Duration::ZERO;

impl UsbPipe for Device {
    fn max_packet_size(&self) -> usize {
        self.mps.max(8)
    }

    fn read_transfer(&mut self, buf: &mut [u8]) -> Result<usize, UsbError> {
        self.handle.read_bulk(self.ep_in, buf, FOREVER).map_err(|e| usb_err(e, buf.len()))
    }

    fn write_transfer(&mut self, data: &[u8]) -> Result<(), UsbError> {
        let n = self.handle.write_bulk(self.ep_out, data, FOREVER).map_err(|e| usb_err(e, data.len()))?;
        if n != data.len() {
            return Err(UsbError::Transfer(format!("board took {n} of {} bytes", data.len())));
        }
        Ok(())
    }
}
