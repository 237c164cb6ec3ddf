//! One board's worker: a thread that opens and claims the gadget, runs the
//! frame loop until the board goes away or fails, and tells the supervisor.
//!
//! Blocking USB and socket I/O on a dedicated thread keeps the hot path free
//! of executor hops; the thread sleeps in the kernel between frames. A worker
//! must never restart itself, read config or touch another board: that is the
//! supervisor's job.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::board::{BusAddr, GadgetInfo};
use crate::device::{Device, OpenError};
use crate::forward::{self, Backends, Exit, Limits};
use crate::pipe::UsbPipe;
use crate::status::Counters;

/// Everything a worker needs, prepared by the supervisor.
pub struct Job {
    pub info: GadgetInfo,
    pub backends: Arc<dyn Backends>,
    pub counters: Arc<Counters>,
    pub limits: Limits,
    pub reporter: Reporter,
    /// How the supervisor asks this worker to stop at a message boundary.
    pub stop: Arc<StopSwitch>,
}

/// The supervisor's request that a worker end at a message boundary (a
/// reload unmapped its board), without dropping a request in flight.
///
/// PLACEHOLDER until the USB side's stop switch is merged: today it only
/// records the request (the supervisor and its tests see it), and the worker
/// still ends only when the board goes away or fails. The real switch cancels
/// the pending IN transfer so `forward::run` returns `Exit::Stopped`, which
/// `serve` reports as [`End::Stopped`]; it replaces this type, keeping
/// `request()`.
#[derive(Debug, Default)]
pub struct StopSwitch {
    requested: AtomicBool,
}

impl StopSwitch {
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
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
    /// The supervisor's [`StopSwitch`] ended it at a message boundary.
    Stopped,
    /// Anything else: the reason, for people.
    Failed(String),
}

/// A worker's line to the supervisor, tagged with the board and generation so
/// that late reports from a replaced worker are recognised.
#[derive(Clone)]
pub struct Reporter {
    pub busaddr: BusAddr,
    pub generation: u64,
    pub sink: Arc<dyn Fn(Report) + Send + Sync>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub busaddr: BusAddr,
    pub generation: u64,
    pub event: WorkerEvent,
}

impl Reporter {
    pub fn send(&self, event: WorkerEvent) {
        (self.sink)(Report { busaddr: self.busaddr, generation: self.generation, event });
    }
}

/// Serves one board over any pipe until it ends; reports both edges.
pub fn serve<P: UsbPipe + ?Sized>(pipe: &mut P, job: &Job) -> End {
    job.reporter.send(WorkerEvent::Serving);
    let exit = forward::run(pipe, job.backends.as_ref(), &job.counters, job.limits);
    // The loop's server connection went with it.
    job.counters.session_ended();
    match exit {
        Exit::BoardGone => End::Gone,
        other => End::Failed(other.to_string()),
    }
}

/// Starts the thread for a real gadget.
pub fn spawn(ctx: rusb::Context, job: Job) -> std::io::Result<()> {
    let name = format!("board-{}", job.info.busaddr);
    std::thread::Builder::new().name(name).spawn(move || {
        let span = tracing::info_span!("board", serial = %job.info.serial_or_none(), busaddr = %job.info.busaddr);
        let _enter = span.enter();
        let end = match Device::open(&ctx, &job.info) {
            Ok(mut dev) => {
                tracing::info!(interface = dev.interface(), "claimed the usb9pfs interface; waiting for the board to mount");
                serve(&mut dev, &job)
            }
            Err(OpenError::Gone) => End::Gone,
            Err(OpenError::Failed(why)) => End::Failed(why),
        };
        job.reporter.send(WorkerEvent::Ended(end));
    })?;
    Ok(())
}
