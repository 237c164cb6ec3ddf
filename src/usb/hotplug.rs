//! Hotplug: turns the present gadgets (coldplug) and udev's usb_device events
//! (add, bind, change → present; remove, unbind → gone) into
//! [`HotplugEvent`]s for the supervisor.
//!
//! It listens to udev's monitor (events after udev rules ran, so device node
//! permissions are already set) on a tokio `AsyncFd`; the monitor is opened
//! before the coldplug scan so no board falls in between; after a socket
//! overflow (events lost) it rescans sysfs. It must never open devices or
//! make decisions about boards.

use std::io;

use tokio::io::unix::AsyncFd;

use crate::board::{BoardInfo, BoardKey, BusAddr};
use crate::usb::discover::{probe, Sysfs};

/// Reports coldplug, then follows udev until the supervisor goes away.
/// What the hotplug side reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HotplugEvent {
    /// A usb9pfs interface is present (coldplug, add, bind); one event per
    /// interface. Repeats are harmless.
    Present(BoardInfo),
    /// Whatever was at this bus address is gone (remove, unbind): every
    /// interface of the device.
    Gone(BusAddr),
    /// Every gadget present at start-up has been reported.
    ColdplugDone,
    /// After lost udev events: exactly these interfaces are present now
    /// (each is also reported `Present`); any other board is gone.
    Rescanned(Vec<BoardKey>),
}

pub async fn run(sysfs: Sysfs, tx: impl Fn(HotplugEvent) -> bool) -> io::Result<()> {
    let monitor =
        udev::MonitorBuilder::new().and_then(|m| m.match_subsystem_devtype("usb", "usb_device")).and_then(|m| m.listen()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen to udev for USB hotplug: {e} (is /run/udev present and the netlink socket allowed?)"),
            )
        })?;
    for g in sysfs.scan() {
        send(&tx, HotplugEvent::Present(g))?;
    }
    send(&tx, HotplugEvent::ColdplugDone)?;
    // SAFETY: the monitor owns its netlink socket for as long as the
    // AsyncFd owns the monitor, and as_raw_fd always returns that socket.
    let fd = unsafe { AsyncFd::register_with_interest(monitor, tokio::io::Interest::READABLE) }?;
    loop {
        let mut ready = fd.readable().await?;
        // Drain until the socket says EAGAIN: the fd is edge-triggered, so
        // an event left queued would never wake us. ENOBUFS means the kernel
        // dropped events (a burst overflowed the socket): what is plugged in
        // now is then read from sysfs again.
        let mut overflowed = false;
        let mut events = ready.get_inner().iter();
        loop {
            let Some(event) = events.next() else {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENOBUFS) {
                    overflowed = true;
                    continue;
                }
                break;
            };
            for ev in translate(&event) {
                match &ev {
                    HotplugEvent::Present(g) => tracing::debug!(
                        serial = %g.serial_or_none(), busaddr = %g.busaddr, iface = g.interface, action = %event.event_type(),
                        "usb9pfs interface present"
                    ),
                    HotplugEvent::Gone(at) => tracing::debug!(busaddr = %at, action = %event.event_type(), "USB device gone"),
                    _ => {}
                }
                send(&tx, ev)?;
            }
        }
        ready.clear_ready();
        if overflowed {
            tracing::warn!("udev events were lost (socket overflow); rescanning sysfs for usb9pfs boards");
            let present = sysfs.scan();
            send(&tx, HotplugEvent::Rescanned(present.iter().map(|g| g.key()).collect()))?;
            for g in present {
                send(&tx, HotplugEvent::Present(g))?;
            }
        }
    }
}

fn send(tx: &impl Fn(HotplugEvent) -> bool, ev: HotplugEvent) -> io::Result<()> {
    if tx(ev) {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::BrokenPipe, "supervisor stopped"))
    }
}

fn translate(event: &udev::Event) -> Vec<HotplugEvent> {
    use udev::EventType::*;
    match event.event_type() {
        Add | Bind | Change => probe(event.syspath()).into_iter().map(HotplugEvent::Present).collect(),
        Remove | Unbind => {
            let num = |key: &str| event.property_value(key)?.to_str()?.parse::<u8>().ok();
            match (num("BUSNUM"), num("DEVNUM")) {
                (Some(bus), Some(addr)) => vec![HotplugEvent::Gone(BusAddr { bus, addr })],
                _ => Vec::new(),
            }
        }
        Unknown => Vec::new(),
    }
}
