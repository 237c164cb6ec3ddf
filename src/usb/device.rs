//! A real usb9pfs interface, opened through its device's usbfs node and
//! presented as a [`UsbPipe`] on usbfs's asynchronous URBs.
//!
//! The node is opened by path (`/dev/bus/usb/BBB/DDD`) and handed to libusb
//! (`libusb_wrap_sys_device`) in a libusb context of the worker's own, with
//! libusb's device discovery off: the supervisor already knows which device it
//! means, permission errors name the exact node, and libusb runs no hotplug
//! thread. libusb (through rusb) opens, detaches, claims, selects the
//! alternate setting and clears halts; the interface is found by number in
//! the node's raw descriptors (the same parser discovery uses).
//!
//! The data path bypasses libusb and talks to usbfs itself: per transfer one
//! `USBDEVFS_SUBMITURB` and one blocking `USBDEVFS_REAPURB` — two system
//! calls, where libusb's event loop needs four (submit, poll, reap, and a
//! reap that finds nothing more). The URB struct is allocated once per
//! endpoint and reused; a ZLP is the URB's `USBDEVFS_URB_ZERO_PACKET` flag
//! (a transfer of its own only on a kernel without that capability); the
//! [`StopSwitch`] cancels with `USBDEVFS_DISCARDURB`, which usbfs allows from
//! any thread and which wakes the blocked reap. The rest of a begun message
//! is waited for in poll(2) with a timeout (a usbfs fd is writable when a URB
//! can be reaped), then reaped without blocking. Why not libusb's async API
//! or another crate: ARCHITECTURE.md, "The USB data path".
//!
//! Transfers go in place where they can: [`UsbPipe::transfer_mem`] maps
//! usbfs buffers (mmap of the node), and a transfer whose buffer lies in one
//! is neither copied nor given a kernel allocation of its own. Into any
//! other buffer usbfs copies an IN transfer's data only while the process
//! reaps it; into a mapping it writes the kernel's pages, which usbfs keeps
//! until the last URB using them is gone, even past munmap. Either way a URB
//! that is never reaped (the worker ended, the file closed) never writes to
//! freed memory. A node handed to a successor must carry no URB in flight
//! ([`Device::into_node`]).
//!
//! This module must never retry or decide anything.

use std::ffi::{c_int, c_void};
use std::fs::{File, OpenOptions};
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusb::constants::*;
use rusb::ffi;
use rusb::{Context, DeviceHandle, UsbContext};

use crate::board::BoardInfo;
use crate::usb::descriptors::{self, Usb9pfsInterface};
use crate::usb::pipe::{partial_frame_wait, StopSwitch, TransferMem, UsbError, UsbPipe, NOT_READY_RETRY};

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
    // Drop closes the handle first, then the fields go in order: the URBs
    // (usbfs never touches them unless we reap), the context, and last the
    // file descriptor the handle wrapped, whose close kills any URB still in
    // flight and releases the interface.
    rx: Box<usbfs::Urb>,
    tx: Box<usbfs::Urb>,
    /// Submitted and not reaped: [rx, tx].
    in_flight: [bool; 2],
    handle: ManuallyDrop<DeviceHandle<Context>>,
    /// False once [`Device::into_node`] closed the handle itself.
    handle_live: bool,
    _ctx: Context,
    node: Option<File>,
    /// The node's descriptor, for the URB ioctls.
    fd: RawFd,
    layout: Usb9pfsInterface,
    /// The kernel adds a ZLP to a transfer (USBDEVFS_CAP_ZERO_PACKET).
    zlp_flag: bool,
    stop: Arc<StopSwitch>,
    /// Storage interfaces detached from usb-storage on open, for the log.
    pub detached_storage: Vec<u8>,
    /// The board's function had its endpoints disabled when opened, and
    /// [`Device::open`] re-selected its alternate setting (for the log).
    pub rearmed_at_open: bool,
}

// SAFETY: the URBs are submitted and reaped only by the thread that owns the
// Device; the only cross-thread use is USBDEVFS_DISCARDURB through the
// StopSwitch, which usbfs allows from any thread, and which Drop disables
// before the URB and the descriptor go.
unsafe impl Send for Device {}

impl Device {
    /// Opens the node of `info`, finds its usb9pfs interface by number in
    /// the descriptors, detaches a kernel driver if one holds it (and
    /// usb-storage, as p9_fwd.py does), claims it, selects its alternate
    /// setting and clears any halt left on its endpoints.
    pub fn open(info: &BoardInfo, stop: Arc<StopSwitch>) -> Result<Device, OpenError> {
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
        let layout =
            read_layout(&node, config).map_err(|e| OpenError::Failed(format!("cannot read the descriptors of {}: {e}", path.display())))?;
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
            select_alt(&handle, intf, &stop).map_err(|e| select_err(e, &path))?;
        }
        let mut rearmed = false;
        if let Err(e) = clear_halts(&handle, intf) {
            if matches!(e, rusb::Error::NoDevice | rusb::Error::NotFound) {
                return Err(OpenError::Gone);
            }
            // A function that disabled its endpoints (a board kernel with
            // the 2026 usbg fixes, unmounted while nobody held the claim)
            // refuses CLEAR_FEATURE(HALT): selecting its alternate setting
            // enables it again. Only then: with enabled endpoints a
            // SET_INTERFACE is not needed.
            select_alt(&handle, intf, &stop).map_err(|e| select_err(e, &path))?;
            clear_halts(&handle, intf).map_err(|e| lib_err(e, "clear the halt on an endpoint of", &path))?;
            rearmed = true;
        }
        let mut dev = Device::wrap(handle, ctx, node, intf, stop, detached_storage)
            .map_err(|e| OpenError::Failed(format!("cannot set up transfers for {}: {e}", path.display())))?;
        dev.rearmed_at_open = rearmed;
        Ok(dev)
    }

    /// Takes over an interface a predecessor claimed on `node` (hand-over):
    /// no detach, no SET_INTERFACE, no clear-halt — the board's session is
    /// live and must not notice. Claiming again on the same file is a no-op
    /// for usbfs; it only tells libusb the interface is ours.
    pub fn take_over(info: &BoardInfo, node: File, stop: Arc<StopSwitch>) -> Result<Device, OpenError> {
        let path = info.busaddr.devnode();
        let ctx = context().map_err(|e| OpenError::Failed(format!("cannot initialise libusb: {e}")))?;
        // SAFETY: `node` outlives `handle` (field order in `Device`).
        let handle = unsafe { ctx.open_device_with_fd(node.as_raw_fd()) }.map_err(|e| lib_err(e, "open", &path))?;
        let config = handle.active_configuration().map_err(|e| lib_err(e, "read the configuration of", &path))?;
        let layout =
            read_layout(&node, config).map_err(|e| OpenError::Failed(format!("cannot read the descriptors of {}: {e}", path.display())))?;
        let intf = layout
            .usb9pfs
            .iter()
            .find(|i| i.number == info.interface)
            .copied()
            .ok_or_else(|| OpenError::Failed(format!("{} has no usb9pfs interface {} any more", path.display(), info.interface)))?;
        claim(&handle, intf.number).map_err(|e| lib_err(e, "claim", &path))?;
        Device::wrap(handle, ctx, node, intf, stop, Vec::new())
            .map_err(|e| OpenError::Failed(format!("cannot set up transfers for {}: {e}", path.display())))
    }

    /// Gives up the device *without* releasing the interface, for a
    /// successor: the claim belongs to the open file, which the caller now
    /// owns. Only between transfers (a worker that stopped at a message
    /// boundary): with a URB still in flight the successor would reap it
    /// into memory it does not own, so then the node is closed instead
    /// (None: the board's session is lost).
    pub fn into_node(mut self) -> Option<File> {
        self.stop.set_canceller(None);
        if self.in_flight.contains(&true) {
            return None;
        }
        if self.handle_live {
            self.handle_live = false;
            // SAFETY: taken once (handle_live guards Drop). rusb tracks no
            // claim (see `claim`), so into_raw is allowed; libusb_close
            // neither releases interfaces nor closes a wrapped descriptor.
            let handle = unsafe { ManuallyDrop::take(&mut self.handle) };
            unsafe { ffi::libusb_close(handle.into_raw()) };
        }
        self.node.take()
    }

    fn wrap(
        handle: DeviceHandle<Context>,
        ctx: Context,
        node: File,
        layout: Usb9pfsInterface,
        stop: Arc<StopSwitch>,
        detached_storage: Vec<u8>,
    ) -> Result<Device, String> {
        let fd = node.as_raw_fd();
        let mut caps: u32 = 0;
        // SAFETY: GET_CAPABILITIES writes one u32. A kernel without the
        // ioctl (before 3.6) leaves caps at 0: ZLPs then go as transfers.
        unsafe { usbfs::ioctl(fd, usbfs::GET_CAPABILITIES, (&mut caps as *mut u32).cast()) };
        let rx = urb(layout.ep_in);
        let tx = urb(layout.ep_out);
        let (raw, fd_) = (&*rx as *const usbfs::Urb as usize, fd);
        stop.set_canceller(Some(Box::new(move || {
            // SAFETY: the URB and the descriptor live until Device::drop or
            // into_node, which remove this canceller (under the switch's
            // lock) first. Discarding a URB not in flight is a harmless
            // EINVAL.
            unsafe { usbfs::ioctl(fd_, usbfs::DISCARDURB, raw as *mut c_void) };
        })));
        Ok(Device {
            rx,
            tx,
            in_flight: [false; 2],
            handle: ManuallyDrop::new(handle),
            handle_live: true,
            _ctx: ctx,
            node: Some(node),
            fd,
            layout,
            zlp_flag: caps & usbfs::CAP_ZERO_PACKET != 0,
            stop,
            detached_storage,
            rearmed_at_open: false,
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

    /// One transfer: submit, then reap. An IN transfer at a message boundary
    /// can be cancelled by the stop switch; the rest of a begun message
    /// (an IN transfer not at a boundary) is bounded by [`partial_frame_wait`],
    /// an OUT transfer (a reply) by [`reply_wait`].
    fn run(&mut self, which: Which, buf: *mut u8, len: usize, zlp: bool, at_boundary: bool) -> Result<usize, UsbError> {
        let i = which as usize;
        let urb: *mut usbfs::Urb = match which {
            Which::Rx => &mut *self.rx,
            Which::Tx => &mut *self.tx,
        };
        // SAFETY: our URB, not in flight (every submit below is reaped
        // before run returns, or the Device is never used for I/O again).
        unsafe {
            (*urb).status = 0;
            (*urb).flags = if zlp { usbfs::URB_ZERO_PACKET } else { 0 };
            (*urb).buffer = buf.cast();
            (*urb).buffer_length = len as c_int;
            (*urb).actual_length = 0;
        }
        // SAFETY: buf/len describe a live buffer of the caller's, which usbfs
        // reads at submit (OUT) or writes while we reap (IN), both before
        // run returns — or, for a buffer in our usbfs mapping, uses in place
        // until the URB completes, which is reaped before run returns too.
        if unsafe { usbfs::ioctl(self.fd, usbfs::SUBMITURB, urb.cast()) } < 0 {
            return Err(submit_err(io::Error::last_os_error(), len));
        }
        self.in_flight[i] = true;
        if at_boundary && self.stop.requested() {
            // The request came before the transfer was armed: honour it now.
            // SAFETY: our URB, in flight.
            unsafe { usbfs::ioctl(self.fd, usbfs::DISCARDURB, urb.cast()) };
        }
        let limit = match which {
            Which::Rx => (!at_boundary).then(partial_frame_wait),
            Which::Tx => Some(reply_wait(len)),
        };
        let timed_out = self.reap(urb, limit)?;
        self.in_flight[i] = false;
        // SAFETY: reaped: usbfs wrote status and length and is done with it.
        let (status, actual) = unsafe { ((*urb).status, (*urb).actual_length.max(0) as usize) };
        match -status {
            0 => Ok(actual),
            // Between messages the board's function disabled its endpoints
            // (its umount, on kernels with the 2026 usbg fixes): dummy_hcd
            // and xHCI report EPROTO, other controllers EILSEQ or ETIME.
            libc::EPROTO | libc::EILSEQ | libc::ETIME if at_boundary && actual == 0 && matches!(which, Which::Rx) => {
                Err(UsbError::FunctionOff(io::Error::from_raw_os_error(-status).to_string()))
            }
            libc::ENOENT | libc::ECONNRESET if timed_out && matches!(which, Which::Tx) => Err(UsbError::Transfer(format!(
                "the board did not take a {len}-byte reply within {} s (took {actual}): its 9P client no longer waits for one; reset the board or mount again",
                reply_wait(len).as_secs()
            ))),
            libc::ENOENT | libc::ECONNRESET if timed_out => Err(UsbError::PartialFrame),
            libc::ENOENT | libc::ECONNRESET if at_boundary && actual == 0 => Err(UsbError::Stopped),
            libc::ENOENT | libc::ECONNRESET if at_boundary => Ok(actual),
            libc::ENODEV | libc::ESHUTDOWN => Err(UsbError::Gone),
            libc::EPIPE => {
                self.clear_stall();
                Err(UsbError::Stall)
            }
            libc::EOVERFLOW => Err(UsbError::Overflow(len)),
            e => Err(UsbError::Transfer(format!("transfer ended with {}", io::Error::from_raw_os_error(e)))),
        }
    }

    /// Waits for `urb` to complete and reaps it: blocking in the kernel, or
    /// with a `limit` in poll(2) and then without blocking; past the limit
    /// the URB is discarded (and reaped). Returns whether the limit passed.
    fn reap(&self, urb: *mut usbfs::Urb, limit: Option<Duration>) -> Result<bool, UsbError> {
        let deadline = limit.map(|l| Instant::now() + l);
        let mut timed_out = false;
        loop {
            let request = match deadline {
                Some(at) if !timed_out => {
                    let left = at.saturating_duration_since(Instant::now());
                    let mut p = libc::pollfd { fd: self.fd, events: libc::POLLOUT, revents: 0 };
                    // SAFETY: one valid pollfd.
                    let n = unsafe { libc::poll(&mut p, 1, left.as_millis().min(i32::MAX as u128) as c_int) };
                    if n == 0 {
                        timed_out = true;
                        // SAFETY: our URB, in flight; it completes soon after.
                        unsafe { usbfs::ioctl(self.fd, usbfs::DISCARDURB, urb.cast()) };
                        continue;
                    }
                    usbfs::REAPURBNDELAY
                }
                _ => usbfs::REAPURB,
            };
            let mut reaped: *mut c_void = std::ptr::null_mut();
            // SAFETY: REAPURB(NDELAY) writes one pointer; the URB it returns
            // is one we submitted, its buffer still the caller's.
            if unsafe { usbfs::ioctl(self.fd, request, (&mut reaped as *mut *mut c_void).cast()) } < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR | libc::EAGAIN) => continue,
                    Some(libc::ENODEV) => return Err(UsbError::Gone),
                    _ => return Err(UsbError::Transfer(format!("cannot reap a transfer: {e}"))),
                }
            }
            if reaped != urb.cast() {
                // Only one URB of ours is ever in flight, and a predecessor
                // hands over none.
                return Err(UsbError::Transfer("usbfs returned a transfer usb9pfsd did not submit".into()));
            }
            return Ok(timed_out);
        }
    }
}

/// How long a reply (an OUT transfer of `len` bytes) may take to be taken.
/// A board queues its receive request as soon as its request is sent, so a
/// healthy one takes a reply at once; one that never does (its 9P client was
/// killed while the worker was restarting, say) would otherwise hold the
/// worker in the reap for ever: never restarted, never released, and every
/// hand-over waiting for it. 2 s, plus 1 s per MiB for slow (full-speed)
/// links: for replies up to 2 MiB below the supervisor's `HANDOVER_WAIT`,
/// so a stuck board's worker ends before a hand-over gives up on the rest.
fn reply_wait(len: usize) -> Duration {
    Duration::from_secs(2 + (len >> 20) as u64)
}

#[derive(Clone, Copy)]
enum Which {
    Rx = 0,
    Tx = 1,
}

fn urb(endpoint: u8) -> Box<usbfs::Urb> {
    Box::new(usbfs::Urb {
        kind: usbfs::URB_TYPE_BULK,
        endpoint,
        status: 0,
        flags: 0,
        buffer: std::ptr::null_mut(),
        buffer_length: 0,
        actual_length: 0,
        start_frame: 0,
        number_of_packets: 0,
        error_count: 0,
        signr: 0,
        usercontext: std::ptr::null_mut(),
    })
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

/// Why [`select_alt`] did not select the alternate setting.
enum Selected {
    /// A stop was requested while the board refused it.
    Stopped,
    Failed(rusb::Error),
}

/// SET_INTERFACE to the interface's usb9pfs alternate setting. A board that
/// keeps its endpoints on a non-zero alternate setting may refuse it (a
/// STALL) until its 9P client is ready, as the posted usbg series does
/// ("the host will then have to call set_alt(1) on this data interface";
/// the gadget refuses while no mount is ready): then it is asked again
/// every [`NOT_READY_RETRY`] until it accepts, the device goes away, or a
/// stop is requested; said once in the log.
fn select_alt(handle: &DeviceHandle<Context>, intf: Usb9pfsInterface, stop: &StopSwitch) -> Result<(), Selected> {
    let mut said = false;
    loop {
        match handle.set_alternate_setting(intf.number, intf.alt) {
            Ok(()) => return Ok(()),
            Err(rusb::Error::Pipe) if intf.alt != 0 => {
                if !said {
                    said = true;
                    tracing::info!(
                        alt = intf.alt,
                        "the board refuses alternate setting {} of interface {} until it mounts: asking again every {} s",
                        intf.alt,
                        intf.number,
                        NOT_READY_RETRY.as_secs()
                    );
                }
                if stop.pause(NOT_READY_RETRY) {
                    return Err(Selected::Stopped);
                }
            }
            Err(e) => return Err(Selected::Failed(e)),
        }
    }
}

fn select_err(e: Selected, path: &std::path::Path) -> OpenError {
    match e {
        Selected::Stopped => OpenError::Failed(format!("stopped while {} refused its alternate setting", path.display())),
        Selected::Failed(e) => lib_err(e, "select the alternate setting of", path),
    }
}

/// Clears a halt on both endpoints (host and board reset their data toggles).
fn clear_halts(handle: &DeviceHandle<Context>, intf: Usb9pfsInterface) -> rusb::Result<()> {
    for ep in [intf.ep_in, intf.ep_out] {
        handle.clear_halt(ep)?;
    }
    Ok(())
}

/// Claims an interface behind rusb's back: the claim belongs to the usbfs
/// file, whose close releases it, so rusb need not track it — and must not,
/// or it would release the claim when a worker hands its node to a successor
/// (and refuse `into_raw`).
fn claim(handle: &DeviceHandle<Context>, interface: u8) -> rusb::Result<()> {
    // SAFETY: a valid open handle.
    match unsafe { ffi::libusb_claim_interface(handle.as_raw(), interface as c_int) } {
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

fn submit_err(e: io::Error, len: usize) -> UsbError {
    match e.raw_os_error() {
        Some(libc::ENODEV | libc::ENOENT | libc::ESHUTDOWN) => UsbError::Gone,
        Some(libc::EPIPE) => UsbError::Stall,
        _ => UsbError::Transfer(format!("cannot submit a {len}-byte transfer: {e}")),
    }
}

impl UsbPipe for Device {
    fn max_packet_size(&self) -> usize {
        (self.layout.max_packet as usize).max(8)
    }

    fn read_transfer(&mut self, buf: &mut [u8], at_boundary: bool) -> Result<usize, UsbError> {
        self.stop.arm(at_boundary);
        let r = loop {
            match self.run(Which::Rx, buf.as_mut_ptr(), buf.len(), false, at_boundary) {
                // A nudge found the board idle: wait again.
                Err(UsbError::Stopped) if !self.stop.requested() => continue,
                r => break r,
            }
        };
        self.stop.arm(false);
        r
    }

    fn write_transfer(&mut self, data: &[u8], zlp: bool) -> Result<(), UsbError> {
        let flag = zlp && self.zlp_flag && !data.is_empty();
        // usbfs only reads an OUT transfer's buffer.
        let n = self.run(Which::Tx, data.as_ptr().cast_mut(), data.len(), flag, false)?;
        if n != data.len() {
            return Err(UsbError::Transfer(format!("board took {n} of {} bytes", data.len())));
        }
        if zlp && !flag && !data.is_empty() {
            // A kernel without URB_ZERO_PACKET: the ZLP is a transfer of its own.
            self.run(Which::Tx, data.as_ptr().cast_mut(), 0, false, false)?;
        }
        Ok(())
    }

    fn rearm(&mut self) -> Result<(), UsbError> {
        debug_assert!(!self.in_flight.contains(&true), "SET_INTERFACE kills the interface's URBs");
        let gone_or = |what: &str, e: rusb::Error| match e {
            rusb::Error::NoDevice | rusb::Error::NotFound => UsbError::Gone,
            e => UsbError::Transfer(format!("cannot {what}: {e}")),
        };
        select_alt(&self.handle, self.layout, &self.stop).map_err(|e| match e {
            Selected::Stopped => UsbError::Stopped,
            Selected::Failed(e) => {
                gone_or(&format!("re-select alternate setting {} of interface {}", self.layout.alt, self.layout.number), e)
            }
        })?;
        clear_halts(&self.handle, self.layout)
            .map_err(|e| gone_or("clear the endpoints' halts after re-selecting the alternate setting", e))
    }

    fn transfer_mem(&mut self, len: usize) -> Option<TransferMem> {
        // SAFETY: sysconf has no memory effects.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let len = len.max(1).div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of our own node; usbfs allocates
        // (zeroed) pages for it and frees them only after munmap and the
        // last URB using them.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, self.fd, 0) };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOMEM) {
                tracing::warn!(
                    "usbfs refused {len} bytes of transfer memory (its usbfs_memory_mb limit, shared by every USB program, or no free contiguous memory): this board's transfers are copied instead; if other USB programs (adb, fastboot) fail too, raise /sys/module/usbcore/parameters/usbfs_memory_mb"
                );
            } else {
                tracing::debug!("no in-place transfer memory from usbfs ({e}): transfers are copied");
            }
            return None;
        }
        tracing::debug!("{len} bytes of in-place transfer memory from usbfs");
        Some(TransferMem::new(Mapped { ptr: p.cast(), len }))
    }
}

/// A usbfs mapping: kernel pages that transfers use in place.
struct Mapped {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping belongs to this value alone; the kernel writes to it
// only while a URB using it is in flight, and its owner does not touch the
// bytes then (it waits in the reap).
unsafe impl Send for Mapped {}

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: mapped readable and writable for len bytes until drop.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl std::ops::DerefMut for Mapped {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self is the only way in.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: our mapping, unmapped once. A URB still using it keeps
        // the kernel's pages (not this address range) alive.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// usbfs's asynchronous URB interface (linux/usbdevice_fs.h), which the data
/// path uses directly: one `SUBMITURB` and one blocking `REAPURB` per
/// transfer, and `DISCARDURB` (from any thread) to cancel.
mod usbfs {
    use std::ffi::{c_int, c_uint, c_ulong, c_void};

    /// struct usbdevfs_urb, without the trailing isochronous descriptors.
    #[repr(C)]
    pub struct Urb {
        pub kind: u8,
        pub endpoint: u8,
        pub status: c_int,
        pub flags: c_uint,
        pub buffer: *mut c_void,
        pub buffer_length: c_int,
        pub actual_length: c_int,
        pub start_frame: c_int,
        pub number_of_packets: c_int,
        pub error_count: c_int,
        pub signr: c_uint,
        pub usercontext: *mut c_void,
    }
    const _: () = assert!(std::mem::size_of::<Urb>() == if cfg!(target_pointer_width = "64") { 56 } else { 44 });

    pub const URB_TYPE_BULK: u8 = 3;
    pub const URB_ZERO_PACKET: c_uint = 0x40;
    pub const CAP_ZERO_PACKET: u32 = 0x01;

    // _IOC encoding: asm-generic, except where the architecture differs.
    #[cfg(any(
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc",
        target_arch = "sparc64"
    ))]
    const DIRS: [c_ulong; 4] = [1, 4, 2, 29];
    #[cfg(not(any(
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc",
        target_arch = "sparc64"
    )))]
    const DIRS: [c_ulong; 4] = [0, 1, 2, 30];
    const NONE: c_ulong = DIRS[0];
    const WRITE: c_ulong = DIRS[1];
    const READ: c_ulong = DIRS[2];
    const DIR_SHIFT: c_ulong = DIRS[3];

    const fn ioc(dir: c_ulong, nr: c_ulong, size: usize) -> c_ulong {
        (dir << DIR_SHIFT) | ((size as c_ulong) << 16) | ((b'U' as c_ulong) << 8) | nr
    }
    pub const SUBMITURB: c_ulong = ioc(READ, 10, std::mem::size_of::<Urb>());
    pub const DISCARDURB: c_ulong = ioc(NONE, 11, 0);
    pub const REAPURB: c_ulong = ioc(WRITE, 12, std::mem::size_of::<*mut c_void>());
    pub const REAPURBNDELAY: c_ulong = ioc(WRITE, 13, std::mem::size_of::<*mut c_void>());
    pub const GET_CAPABILITIES: c_ulong = ioc(READ, 26, 4);

    /// ioctl(2) with an argument; -1 and errno on failure.
    ///
    /// # Safety
    /// `arg` must be what `request` expects.
    pub unsafe fn ioctl(fd: c_int, request: c_ulong, arg: *mut c_void) -> c_int {
        libc::ioctl(fd, request as libc::Ioctl, arg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_the_board_never_takes_ends_its_worker_before_a_hand_over_gives_up() {
        // The hand-over waits this long for every board to stop; a board that
        // stopped taking replies must have ended its worker by then, or it
        // would call off (reexec) or lose (restart) everyone's hand-over.
        let handover = crate::daemon::supervisor::handover::HANDOVER_WAIT;
        for len in [11, 16 << 10, 64 << 10, 1 << 20, 2 << 20] {
            assert!(reply_wait(len) < handover, "{len}: {:?}", reply_wait(len));
        }
        assert!(reply_wait(16 << 20) > reply_wait(64 << 10), "a slow link gets time for a large reply");
    }
}
