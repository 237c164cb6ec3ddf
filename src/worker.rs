//! One usb9pfs interface's worker: a thread that opens and claims the
//! interface, runs the frame loop until the board goes away, fails, or is
//! asked to stop at a message boundary, and tells the supervisor.
//!
//! Blocking socket I/O and libusb event handling on a dedicated thread keep
//! the hot path free of executor hops; the thread sleeps in the kernel
//! between frames. A worker must never restart itself, read config or touch
//! another interface: that is the supervisor's job.

use std::sync::Arc;

use crate::board::{GadgetInfo, GadgetKey};
use crate::device::{Device, OpenError};
use crate::forward::{self, Backends, Exit, Limits, Session};
use crate::pipe::{StopSwitch, UsbPipe};
use crate::status::Counters;

/// Everything a worker needs, prepared by the supervisor.
pub struct Job {
    pub info: GadgetInfo,
    pub backends: Arc<dyn Backends>,
    pub counters: Arc<Counters>,
    pub limits: Limits,
    /// Stops the worker at its next message boundary.
    pub stop: Arc<StopSwitch>,
    pub reporter: Reporter,
}

/// What a worker tells the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    /// The interface is claimed; the board is being served.
    Serving,
    /// The worker ended; it will not touch the device again.
    Ended(End),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The device went away (unplug, reset, re-enumeration).
    Gone,
    /// Stopped on request at a message boundary; the interface is released.
    Stopped,
    /// Anything else: the reason, for people.
    Failed(String),
}

/// A worker's line to the supervisor, tagged with the interface and
/// generation so that late reports from a replaced worker are recognised.
#[derive(Clone)]
pub struct Reporter {
    pub key: GadgetKey,
    pub generation: u64,
    pub sink: Arc<dyn Fn(Report) + Send + Sync>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub key: GadgetKey,
    pub generation: u64,
    pub event: WorkerEvent,
}

impl Reporter {
    pub fn send(&self, event: WorkerEvent) {
        (self.sink)(Report { key: self.key, generation: self.generation, event });
    }
}

/// Serves one interface over any pipe until it ends; reports both edges.
pub fn serve<P: UsbPipe + ?Sized>(pipe: &mut P, job: &Job) -> End {
    job.reporter.send(WorkerEvent::Serving);
    let mut session = Session::new(job.limits);
    match forward::run(pipe, job.backends.as_ref(), &job.counters, job.limits, &mut session) {
        Exit::BoardGone => End::Gone,
        Exit::Stopped => End::Stopped,
        other => End::Failed(other.to_string()),
    }
}

/// Starts the thread for a real gadget's interface.
pub fn spawn(job: Job) -> std::io::Result<()> {
    let name = format!("board-{}", job.info.key());
    std::thread::Builder::new().name(name).spawn(move || {
        let span = tracing::info_span!(
            "board",
            serial = %job.info.serial_or_none(),
            busaddr = %job.info.busaddr,
            iface = job.info.interface
        );
        let _enter = span.enter();
        // A bug must not leave the board listed as served forever: a panic
        // becomes a failure the supervisor restarts with backoff.
        let end = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| open_and_serve(&job)))
            .unwrap_or_else(|panic| End::Failed(format!("worker panicked: {}", panic_message(&panic))));
        job.reporter.send(WorkerEvent::Ended(end));
    })?;
    Ok(())
}

fn open_and_serve(job: &Job) -> End {
    match Device::open(&job.info, job.stop.clone()) {
        Ok(mut dev) => {
            for s in &dev.detached_storage {
                tracing::info!("detached usb-storage from interface {s} (its resets would break usb9pfs transfers)");
            }
            tracing::info!(alt = job.info.alt, "claimed the usb9pfs interface; waiting for the board to mount");
            serve(&mut dev, job)
        }
        Err(OpenError::Gone) => End::Gone,
        Err(OpenError::Failed(why)) => End::Failed(why),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>().copied().or_else(|| p.downcast_ref::<String>().map(String::as_str)).unwrap_or("(no message)")
}
