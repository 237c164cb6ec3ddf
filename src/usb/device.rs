//! A real usb9pfs interface, opened through its device's usbfs node with
//! libusb and presented as a [`UsbPipe`] built on libusb's *asynchronous*
//! transfers.
//!
//! The node is opened by path (`/dev/bus/usb/BBB/DDD`) and handed to libusb
//! (`libusb_wrap_sys_device`) in a libusb context of the worker's own, with
//! libusb's device discovery off: the supervisor already knows which device it
//! means, permission errors name the exact node, and libusb runs no hotplug
//! thread. The interface is found by number in the node's raw descriptors
//! (the same parser discovery uses), across alternate settings; a non-zero
//! alternate setting is selected before use.
//!
//! Why async transfers through `rusb::ffi` (libusb1-sys) rather than rusb's
//! blocking calls or another crate: a blocking libusb read cannot be
//! cancelled, so a worker could not be stopped while its board stays plugged;
//! rusb 0.9 wraps no async API, and the async crates (nusb, futures-based
//! wrappers) would replace libusb and the Debian package's dependency on it.
//! The few unsafe lines live here: one transfer per endpoint, allocated once
//! and reused for every message, a ZLP as `LIBUSB_TRANSFER_ADD_ZERO_PACKET`
//! (one transfer per R-message), and `libusb_cancel_transfer` from the
//! [`StopSwitch`] to end the wait for the next T-message. The worker thread
//! sleeps in `libusb_handle_events_completed` (poll on the usbfs fd) until a
//! transfer completes: no polling.
//!
//! This module must never retry or decide anything.

use std::ffi::c_int;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::Arc;

use rusb::constants::*;
use rusb::ffi;
use rusb::{Context, DeviceHandle, UsbContext};

use crate::board::GadgetInfo;
use crate::usb::descriptors::{self, Usb9pfsInterface};
use crate::usb::pipe::{StopSwitch, UsbError, UsbPipe, PARTIAL_FRAME_WAIT};

/// Why a gadget could not be opened; each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("board disconnected before it could be opened")]
    Gone,
    #[error("{0}")]
    Failed(String),
}

/// A libusb context with its own device discovery off (we open nodes
/// ourselves). Each worker has its own, so each handles only its own events.
pub fn context() -> rusb::Result<Context> {
    rusb::disable_device_discovery()?;
    Context::new()
}

/// One claimed usb9pfs interface.
pub struct Device {
    // Drop closes the handle first, then the fields go in order: the
    // transfers (never in flight between messages), the context, and last
    // the file descriptor the handle wrapped, whose close releases the
    // interface.
    rx: Transfer,
    tx: Transfer,
    handle: ManuallyDrop<DeviceHandle<Context>>,
    /// False once [`Device::into_node`] closed the handle itself.
    handle_live: bool,
    ctx: Context,
    node: Option<File>,
    layout: Usb9pfsInterface,
    /// False once the kernel refused URB_ZERO_PACKET: ZLPs go as transfers.
    zlp_flag: bool,
    stop: Arc<StopSwitch>,
    /// Storage interfaces detached from usb-storage on open, for the log.
    pub detached_storage: Vec<u8>,
}

// SAFETY: the raw transfers are submitted, waited for and freed only by the
// thread that owns the Device; the only cross-thread use is
// libusb_cancel_transfer through the StopSwitch, which libusb allows from any
// thread, and which Drop disables before freeing.
unsafe impl Send for Device {}

impl Device {
    /// Opens the node of `info`, finds its usb9pfs interface by number in
    /// the descriptors, detaches a kernel driver if one holds it (and
    /// usb-storage, as p9_fwd.py does), claims it, selects its alternate
    /// setting and clears any halt left on its endpoints.
    pub fn open(info: &GadgetInfo, stop: Arc<StopSwitch>) -> Result<Device, OpenError> {
        let path = info.busaddr.devnode();
        let node = OpenOptions::new().read(true).write(true).open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => OpenError::Gone,
            io::ErrorKind::PermissionDenied => OpenError::Failed(format!(
                "permission denied opening {}: is the usb9pfsd udev rule installed (udevadm control --reload, then replug) and is this user in group usb9pfsd?",
                path.display()
            )),
            _ => OpenError::Failed(format!("cannot open {}: {e}", path.display())),
        })?;
        let ctx = context().map_err(|e| OpenError::Failed(format!("cannot initialise libusb: {e}")))?;
        // SAFETY: `node` outlives `handle` (field order in `Device`), as
        // open_device_with_fd requires.
        let handle = unsafe { ctx.open_device_with_fd(node.as_raw_fd()) }.map_err(|e| lib_err(e, "open", &path))?;
        let config = handle.active_configuration().map_err(|e| lib_err(e, "read the configuration of", &path))?;
        let layout = read_layout(&node, config).map_err(|e| OpenError::Failed(format!("cannot read the descriptors of {}: {e}", path.display())))?;
        let Some(intf) = layout.usb9pfs.iter().find(|i| i.number == info.interface).copied() else {
            return Err(OpenError::Failed(format!(
                "{} has no usb9pfs interface {} (ff/ff/09 with two bulk endpoints) any more",
                path.display(),
                info.interface
            )));
        };
        let mut detached_storage = Vec::new();
        for s in layout.storage {
            // Multi-function gadgets (g_multi) put usb-storage beside usb9pfs;
            // its stall handling causes port resets that kill our transfers.
            if handle.kernel_driver_active(s).unwrap_or(false) && handle.detach_kernel_driver(s).is_ok() {
                detached_storage.push(s);
            }
        }
        let n = intf.number;
        if handle.kernel_driver_active(n).unwrap_or(false) {
            handle.detach_kernel_driver(n).map_err(|e| lib_err(e, "detach the kernel driver from", &path))?;
        }
        claim(&handle, n).map_err(|e| match e {
            rusb::Error::Busy => OpenError::Failed(format!(
                "interface {n} of {} is claimed by another program (p9_fwd.py, a second usb9pfsd?)",
                path.display()
            )),
            e => lib_err(e, "claim", &path),
        })?;
        // After SET_CONFIGURATION every interface is in alternate setting 0;
        // SET_INTERFACE re-enables the gadget's endpoints (flushing anything
        // queued), so it is sent only when the endpoints live elsewhere.
        if intf.alt != 0 {
            handle.set_alternate_setting(n, intf.alt).map_err(|e| lib_err(e, "select the alternate setting of", &path))?;
        }
        for ep in [intf.ep_in, intf.ep_out] {
            handle.clear_halt(ep).map_err(|e| lib_err(e, "clear the halt on an endpoint of", &path))?;
        }
        Device::wrap(handle, ctx, node, intf, stop, detached_storage)
            .map_err(|e| OpenError::Failed(format!("cannot set up transfers for {}: {e}", path.display())))
    }

    /// Takes over an interface a predecessor claimed on `node` (hand-over):
    /// no detach, no SET_INTERFACE, no clear-halt — the board's session is
    /// live and must not notice. Claiming again on the same file is a no-op
    /// for usbfs; it only tells libusb the interface is ours.
    pub fn adopt(info: &GadgetInfo, node: File, stop: Arc<StopSwitch>) -> Result<Device, OpenError> {
        let path = info.busaddr.devnode();
        let ctx = context().map_err(|e| OpenError::Failed(format!("cannot initialise libusb: {e}")))?;
        // SAFETY: `node` outlives `handle` (field order in `Device`).
        let handle = unsafe { ctx.open_device_with_fd(node.as_raw_fd()) }.map_err(|e| lib_err(e, "open", &path))?;
        let config = handle.active_configuration().map_err(|e| lib_err(e, "read the configuration of", &path))?;
        let layout = read_layout(&node, config).map_err(|e| OpenError::Failed(format!("cannot read the descriptors of {}: {e}", path.display())))?;
        let intf = layout.usb9pfs.iter().find(|i| i.number == info.interface).copied().ok_or_else(|| {
            OpenError::Failed(format!("{} has no usb9pfs interface {} any more", path.display(), info.interface))
        })?;
        claim(&handle, intf.number).map_err(|e| lib_err(e, "claim", &path))?;
        Device::wrap(handle, ctx, node, intf, stop, Vec::new())
            .map_err(|e| OpenError::Failed(format!("cannot set up transfers for {}: {e}", path.display())))
    }

    /// Gives up the device *without* releasing the interface, for a
    /// successor: the claim belongs to the open file, which the caller now
    /// owns. Only valid between transfers (a worker that stopped at a
    /// message boundary).
    pub fn into_node(mut self) -> File {
        self.stop.set_canceller(None);
        if self.handle_live {
            self.handle_live = false;
            // SAFETY: taken once (handle_live guards Drop). rusb tracks no
            // claim (see `claim`), so into_raw is allowed; libusb_close
            // neither releases interfaces nor closes a wrapped descriptor.
            let handle = unsafe { ManuallyDrop::take(&mut self.handle) };
            unsafe { ffi::libusb_close(handle.into_raw()) };
        }
        // Some until now: only this method takes it.
        self.node.take().unwrap_or_else(|| unreachable!("node taken twice"))
    }

    fn wrap(
        handle: DeviceHandle<Context>,
        ctx: Context,
        node: File,
        layout: Usb9pfsInterface,
        stop: Arc<StopSwitch>,
        detached_storage: Vec<u8>,
    ) -> Result<Device, String> {
        let rx = Transfer::new(handle.as_raw(), layout.ep_in).ok_or("libusb_alloc_transfer failed")?;
        let tx = Transfer::new(handle.as_raw(), layout.ep_out).ok_or("libusb_alloc_transfer failed")?;
        let raw = rx.raw.as_ptr() as usize;
        stop.set_canceller(Some(Box::new(move || {
            // SAFETY: the transfer lives until Device::drop, which removes
            // this canceller (under the switch's lock) before freeing it.
            unsafe { ffi::libusb_cancel_transfer(raw as *mut ffi::libusb_transfer) };
        })));
        Ok(Device {
            rx,
            tx,
            handle: ManuallyDrop::new(handle),
            handle_live: true,
            ctx,
            node: Some(node),
            layout,
            zlp_flag: true,
            stop,
            detached_storage,
        })
    }

    pub fn interface(&self) -> u8 {
        self.layout.number
    }

    fn clear_stall(&self) {
        for ep in [self.layout.ep_in, self.layout.ep_out] {
            let _ = self.handle.clear_halt(ep);
        }
    }

    fn run(&mut self, which: Which, buf: *mut u8, len: usize, flags: u8, cancel_at_boundary: bool) -> Result<usize, UsbError> {
        let (t, timeout) = match which {
            // The rest of a begun message is bounded (libusb's timerfd, no
            // polling); the wait for a new one is not.
            Which::Rx if !cancel_at_boundary => (&mut self.rx, PARTIAL_FRAME_WAIT.as_millis() as u32),
            Which::Rx => (&mut self.rx, 0),
            Which::Tx => (&mut self.tx, 0),
        };
        // SAFETY: buf/len describe a live buffer of the caller's that is not
        // touched until wait() returns.
        let r = unsafe { t.submit(buf, len, flags, timeout) };
        if r == LIBUSB_ERROR_NOT_SUPPORTED && flags & LIBUSB_TRANSFER_ADD_ZERO_PACKET != 0 {
            // Refused before a byte moved: safe to send the ZLP another way.
            return Err(UsbError::Transfer(NO_ZLP_FLAG.into()));
        }
        if r != 0 {
            return Err(submit_err(r, len));
        }
        if cancel_at_boundary && self.stop.requested() {
            // The request came before the transfer was armed: honour it now.
            t.cancel();
        }
        let (status, actual) = t.wait(&self.ctx).map_err(|e| UsbError::Transfer(format!("libusb event handling failed: {e}")))?;
        match status {
            LIBUSB_TRANSFER_COMPLETED => Ok(actual),
            LIBUSB_TRANSFER_CANCELLED if cancel_at_boundary && actual == 0 => Err(UsbError::Stopped),
            LIBUSB_TRANSFER_CANCELLED if cancel_at_boundary => Ok(actual),
            LIBUSB_TRANSFER_NO_DEVICE => Err(UsbError::Gone),
            LIBUSB_TRANSFER_STALL => {
                self.clear_stall();
                Err(UsbError::Stall)
            }
            LIBUSB_TRANSFER_OVERFLOW => Err(UsbError::Overflow(len)),
            LIBUSB_TRANSFER_TIMED_OUT => Err(UsbError::PartialFrame),
            other => Err(UsbError::Transfer(format!("transfer ended with libusb status {other}"))),
        }
    }
}

/// The submit error that means "this kernel has no URB_ZERO_PACKET": only
/// this one makes a ZLP a transfer of its own (any other error may come after
/// part of the message went out, and must not be retried).
const NO_ZLP_FLAG: &str = "the kernel cannot add a zero-length packet to a transfer";

#[derive(Clone, Copy)]
enum Which {
    Rx,
    Tx,
}

impl Drop for Device {
    fn drop(&mut self) {
        // No cancel may reach a freed transfer.
        self.stop.set_canceller(None);
        if self.handle_live {
            // SAFETY: dropped once; into_node clears handle_live when it
            // took the handle instead.
            unsafe { ManuallyDrop::drop(&mut self.handle) };
        }
    }
}

/// Claims an interface behind rusb's back: the claim belongs to the usbfs
/// file, whose close releases it, so rusb need not track it — and must not,
/// or it would release the claim when a worker hands its node to a successor
/// (and refuse `into_raw`).
fn claim(handle: &DeviceHandle<Context>, iface: u8) -> rusb::Result<()> {
    // SAFETY: a valid open handle.
    match unsafe { ffi::libusb_claim_interface(handle.as_raw(), iface as c_int) } {
        0 => Ok(()),
        LIBUSB_ERROR_BUSY => Err(rusb::Error::Busy),
        LIBUSB_ERROR_NO_DEVICE => Err(rusb::Error::NoDevice),
        LIBUSB_ERROR_NOT_FOUND => Err(rusb::Error::NotFound),
        LIBUSB_ERROR_ACCESS => Err(rusb::Error::Access),
        _ => Err(rusb::Error::Other),
    }
}

/// The descriptors as the usbfs node returns them (device descriptor, then
/// every configuration), parsed for the active configuration.
fn read_layout(node: &File, config: u8) -> io::Result<descriptors::Layout> {
    let mut raw = vec![0u8; 64 * 1024];
    let mut got = 0;
    loop {
        let n = node.read_at(&mut raw[got..], got as u64)?;
        if n == 0 || got + n == raw.len() {
            got += n;
            break;
        }
        got += n;
    }
    Ok(descriptors::parse(&raw[..got], config))
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

fn submit_err(r: c_int, len: usize) -> UsbError {
    match r {
        LIBUSB_ERROR_NO_DEVICE | LIBUSB_ERROR_NOT_FOUND => UsbError::Gone,
        LIBUSB_ERROR_PIPE => UsbError::Stall,
        LIBUSB_ERROR_OVERFLOW => UsbError::Overflow(len),
        r => UsbError::Transfer(format!("cannot submit a transfer: libusb error {r}")),
    }
}

impl UsbPipe for Device {
    fn max_packet_size(&self) -> usize {
        (self.layout.max_packet as usize).max(8)
    }

    fn read_transfer(&mut self, buf: &mut [u8], at_boundary: bool) -> Result<usize, UsbError> {
        self.stop.arm(at_boundary);
        let r = self.run(Which::Rx, buf.as_mut_ptr(), buf.len(), 0, at_boundary);
        self.stop.arm(false);
        r
    }

    fn write_transfer(&mut self, data: &[u8], zlp: bool) -> Result<(), UsbError> {
        let flags = if zlp && self.zlp_flag && !data.is_empty() { LIBUSB_TRANSFER_ADD_ZERO_PACKET } else { 0 };
        // libusb only reads an OUT transfer's buffer.
        let n = match self.run(Which::Tx, data.as_ptr().cast_mut(), data.len(), flags, false) {
            Err(UsbError::Transfer(m)) if m == NO_ZLP_FLAG => {
                // A kernel or host controller without URB_ZERO_PACKET: from
                // now on the ZLP is a transfer of its own.
                self.zlp_flag = false;
                return self.write_transfer(data, zlp);
            }
            r => r?,
        };
        if n != data.len() {
            return Err(UsbError::Transfer(format!("board took {n} of {} bytes", data.len())));
        }
        if zlp && flags == 0 && !data.is_empty() {
            self.run(Which::Tx, data.as_ptr().cast_mut(), 0, 0, false)?;
        }
        Ok(())
    }
}

/// One libusb transfer, allocated once and reused for every message on its
/// endpoint.
struct Transfer {
    raw: NonNull<ffi::libusb_transfer>,
    /// Set by the completion callback; libusb_handle_events_completed
    /// watches it. Boxed so its address stays put.
    done: Box<c_int>,
    /// Submitted and not yet seen complete.
    busy: bool,
}

extern "system" fn on_complete(t: *mut ffi::libusb_transfer) {
    // SAFETY: user_data is the `done` flag of the Transfer that owns `t`,
    // alive while `t` is submitted; the callback runs on the worker's thread
    // inside libusb_handle_events_completed.
    unsafe {
        let done = (*t).user_data as *mut c_int;
        *done = 1;
    }
}

impl Transfer {
    fn new(handle: *mut ffi::libusb_device_handle, endpoint: u8) -> Option<Transfer> {
        // SAFETY: plain allocation; checked for NULL.
        let raw = NonNull::new(unsafe { ffi::libusb_alloc_transfer(0) })?;
        let mut done = Box::new(1);
        // SAFETY: `raw` is a fresh transfer we own.
        unsafe {
            let t = raw.as_ptr();
            (*t).dev_handle = handle;
            (*t).endpoint = endpoint;
            (*t).transfer_type = LIBUSB_TRANSFER_TYPE_BULK;
            (*t).timeout = 0; // set per submission
            (*t).callback = on_complete;
            (*t).user_data = (&mut *done as *mut c_int).cast();
        }
        Some(Transfer { raw, done, busy: false })
    }

    /// # Safety
    /// `buf` must stay valid and untouched until [`wait`](Self::wait) returns.
    unsafe fn submit(&mut self, buf: *mut u8, len: usize, flags: u8, timeout_ms: u32) -> c_int {
        let t = self.raw.as_ptr();
        *self.done = 0;
        (*t).timeout = timeout_ms;
        (*t).buffer = buf;
        (*t).length = len as c_int;
        (*t).flags = flags;
        (*t).actual_length = 0;
        let r = ffi::libusb_submit_transfer(t);
        self.busy = r == 0;
        if r != 0 {
            *self.done = 1;
        }
        r
    }

    fn cancel(&self) {
        // SAFETY: a valid transfer; cancelling one that is not in flight is a
        // harmless LIBUSB_ERROR_NOT_FOUND.
        unsafe { ffi::libusb_cancel_transfer(self.raw.as_ptr()) };
    }

    /// Sleeps in libusb's event handling until the transfer completes;
    /// returns its status and length.
    fn wait(&mut self, ctx: &Context) -> Result<(c_int, usize), c_int> {
        let mut failures = 0;
        while *self.done == 0 {
            // SAFETY: `done` outlives the call; the context is ours.
            let r = unsafe { ffi::libusb_handle_events_completed(ctx.as_raw(), &mut *self.done) };
            if r < 0 && r != LIBUSB_ERROR_INTERRUPTED {
                failures += 1;
                self.cancel();
                if failures > 3 {
                    return Err(r);
                }
            }
        }
        self.busy = false;
        // SAFETY: completed, so libusb no longer writes the transfer.
        let t = unsafe { &*self.raw.as_ptr() };
        Ok((t.status, t.actual_length.max(0) as usize))
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if self.busy {
            // Only after a failed event loop: freeing a transfer libusb may
            // still complete would be a use-after-free, so leak it instead.
            return;
        }
        // SAFETY: not in flight; allocated by libusb_alloc_transfer.
        unsafe { ffi::libusb_free_transfer(self.raw.as_ptr()) };
    }
}
