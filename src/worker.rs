//! One usb9pfs interface's worker: a thread that opens and claims the
//! interface, runs the frame loop until the board goes away, fails, or is
//! asked to stop at a message boundary, and tells the supervisor.
//!
//! Blocking socket I/O and blocking usbfs reaps (`usb/device.rs`) on a
//! dedicated thread keep the hot path free of executor hops; the thread
//! sleeps in the kernel between frames. A worker must never restart itself, read config or touch
//! another interface: that is the supervisor's job.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use crate::board::{BoardInfo, BoardKey};
use crate::counters::Counters;
use crate::ninep::forward::{self, BackendPolicy, Exit, Limits, Session};
use crate::usb::device::{Device, OpenError};
use crate::usb::pipe::{StopSwitch, UsbPipe};

/// Everything a worker needs, prepared by the supervisor.
pub struct Job {
    pub info: BoardInfo,
    pub board_backend: Arc<dyn BackendPolicy>,
    pub counters: Arc<Counters>,
    pub limits: Limits,
    /// Stops the worker at its next message boundary.
    pub stop: Arc<StopSwitch>,
    /// A session to carry on with (hand-over from a predecessor, or a
    /// hand-over that was called off), instead of opening afresh.
    pub handed: Option<HandedSession>,
    pub reporter: Reporter,
}

/// What a worker stopped at a message boundary leaves behind: the usbfs
/// file that holds the interface's claim (None for in-memory gadgets) and the
/// 9P session with its server connection.
pub struct HandedSession {
    pub node: Option<File>,
    pub session: Session,
}

impl std::fmt::Debug for HandedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandedSession")
            .field("node", &self.node.as_ref().map(|n| n.as_raw_fd()))
            .field("live", &self.session.live)
            .field("server", &self.session.backend.as_ref().map(|b| b.raw_fd()))
            .finish()
    }
}

/// What a worker tells the supervisor.
#[derive(Debug)]
pub enum WorkerEvent {
    /// The interface is claimed; the board is being served.
    Serving,
    /// Stopped on request at a message boundary; here is what it held
    /// (followed by `Ended(End::Stopped)`).
    Handed(HandedSession),
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
    pub key: BoardKey,
    pub generation: u64,
    pub sink: Arc<dyn Fn(Report) + Send + Sync>,
}

#[derive(Debug)]
pub struct Report {
    pub key: BoardKey,
    pub generation: u64,
    pub event: WorkerEvent,
}

impl Reporter {
    pub fn send(&self, event: WorkerEvent) {
        (self.sink)(Report { key: self.key, generation: self.generation, event });
    }
}

/// Serves one interface over any pipe with a fresh session until it ends;
/// reports both edges.
pub fn serve<P: UsbPipe + ?Sized>(pipe: &mut P, job: &Job) -> End {
    serve_session(pipe, job, &mut Session::new(job.limits))
}

/// The same, carrying on with `session`; after `End::Stopped` it holds the
/// live session for a successor.
pub fn serve_session<P: UsbPipe + ?Sized>(pipe: &mut P, job: &Job, session: &mut Session) -> End {
    job.reporter.send(WorkerEvent::Serving);
    if session.live {
        // A session handed over (from a predecessor process, too): status
        // keeps saying when the board mounted.
        job.counters.session_resumed(session.began_ms);
    }
    let exit = forward::run(pipe, job.board_backend.as_ref(), &job.counters, job.limits, session);
    if exit != Exit::Stopped {
        // The loop's server connection went with it (a stopped loop's
        // session lives on for its successor).
        job.counters.session_ended();
    }
    match exit {
        Exit::BoardGone => End::Gone,
        Exit::Stopped => End::Stopped,
        other => End::Failed(other.to_string()),
    }
}

/// Starts the thread for a real gadget's interface.
pub fn spawn(mut job: Job) -> std::io::Result<()> {
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
        let end = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| open_and_serve(&mut job)))
            .unwrap_or_else(|panic| End::Failed(format!("worker panicked: {}", panic_message(&panic))));
        job.reporter.send(WorkerEvent::Ended(end));
    })?;
    Ok(())
}

fn open_and_serve(job: &mut Job) -> End {
    let (opened, mut session) = match job.handed.take() {
        Some(HandedSession { node: Some(node), session }) => {
            if let Some(b) = &session.backend {
                job.board_backend.took_over(b);
            }

            let live = if session.live { "a live 9P session" } else { "no live 9P session" };
            tracing::info!(alt = job.info.alt, "took over the claimed usb9pfs interface with {live}");
            (Device::take_over(&job.info, node, job.stop.clone()), session)
        }
        _ => {
            let opened = Device::open(&job.info, job.stop.clone());
            if let Ok(dev) = &opened {
                for s in &dev.detached_storage {
                    tracing::info!("detached usb-storage from interface {s} (its resets would break usb9pfs transfers)");
                }
                if dev.rearmed_at_open {
                    job.counters.rearms.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::info!(
                        alt = job.info.alt,
                        "claimed the usb9pfs interface; its function had disabled its endpoints (the board unmounted while no forwarder held it), re-selected the interface; waiting for the board to mount"
                    );
                } else {
                    tracing::info!(alt = job.info.alt, "claimed the usb9pfs interface; waiting for the board to mount");
                }
            }
            (opened, Session::new(job.limits))
        }
    };
    match opened {
        Ok(mut dev) => {
            let end = serve_session(&mut dev, job, &mut session);
            if end == End::Stopped {
                job.reporter.send(WorkerEvent::Handed(HandedSession { node: dev.into_node(), session }));
            }
            end
        }
        Err(OpenError::Gone) => End::Gone,
        Err(OpenError::Failed(why)) => End::Failed(why),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>().copied().or_else(|| p.downcast_ref::<String>().map(String::as_str)).unwrap_or("(no message)")
}
