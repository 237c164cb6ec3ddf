//! The supervisor: the one owner of per-board state. It hears hotplug events,
//! worker reports and commands on a single ordered input channel, decides
//! which board gets a worker and with which backend, restarts failed workers
//! with capped exponential backoff, answers status queries and applies
//! config reloads (the per-board diff is [`crate::daemon::reload`]'s; applying it is
//! in `supervisor/apply.rs`).
//!
//! A board is one usb9pfs interface, keyed by bus, address and interface
//! number ([`BoardKey`]): a reset or re-enumeration is a new key, hence a
//! fresh worker and a fresh backend connection; a gadget with two usb9pfs
//! functions is two boards. One board's failures never touch another board's
//! entry. The supervisor must never touch endpoints or sockets itself; it only
//! starts workers through [`Spawn`], stops them through their [`StopSwitch`]
//! and stops backends through [`BoardBackend::stop`].

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};

use crate::board::{BoardInfo, BoardKey, BusAddr};
use crate::config::serve::{BoardSel, Serve};
use crate::config::{Config, ConfigError, Decision, Target};
use crate::daemon::reload;
use crate::daemon::status::{self, Activity, BoardState, BoardStatus, Counters, DaemonStatus, Stamped, StatusReport};
use crate::ninep::board_backend::BoardBackend;
use crate::ninep::forward::Limits;
use crate::usb::pipe::{nudge_every, StopSwitch};
use crate::worker::{End, HandedSession, Job, Report, Reporter, WorkerEvent};
pub use apply::ServeAnswer;

pub mod handover;

/// First delay before restarting a failed worker; doubles per failure.
pub const FIRST_RESTART: Duration = Duration::from_millis(500);
/// The longest a failed board waits for its next worker.
pub const MAX_RESTART: Duration = Duration::from_secs(30);
/// Unserved boards remembered so each is logged once (bounded memory).
const MAX_NOTED: usize = 1024;

/// What the hotplug side reports (defined beside it, below the daemon).
pub use crate::usb::hotplug::HotplugEvent;

/// Everything the supervisor reacts to, in one ordered stream.
#[derive(Debug)]
pub enum Input {
    Hotplug(HotplugEvent),
    Worker(Report),
    Status(oneshot::Sender<StatusReport>),
    /// Apply a re-read config (or record why it could not be read): the
    /// reply says what changed, or the error with file:line:column.
    Reload(Result<Config, ConfigError>, oneshot::Sender<Result<reload::Summary, String>>),
    /// `usb9pfsd serve`: map one board over the config until unserved.
    Serve(Serve, oneshot::Sender<Result<ServeAnswer, String>>),
    /// `usb9pfsd unserve`: drop a board's runtime mapping.
    Unserve(BoardSel, oneshot::Sender<Result<ServeAnswer, String>>),
    /// Stop every served board at a message boundary and hand back what
    /// each handed back (see [`handover`]).
    HandOver(handover::HandOverReply, handover::Mode),
    /// Serve handed-over boards again (their successor could not start).
    Resume(Vec<handover::HandedBoard>),
    /// Stop every board's backend (waking blocked workers) and return.
    Shutdown,
}

impl From<Report> for Input {
    fn from(r: Report) -> Input {
        Input::Worker(r)
    }
}

/// Starts a worker for a job (a thread on real hardware, a recorder in tests).
pub trait Spawn: Send {
    fn spawn(&mut self, job: Job) -> Result<(), String>;
    /// Whether the device `info` describes is still on the bus (an unplug
    /// fails its transfers before udev reports the removal, and under load
    /// the report can trail the first restart). True when unsure.
    fn on_bus(&self, _info: &BoardInfo) -> bool {
        true
    }
}

/// Tells the service manager how things stand (sd_notify in production).
pub trait Notify: Send {
    fn ready(&mut self, served: usize);
    fn status(&mut self, served: usize, total: usize);
    /// A config reload begins; `ready` follows when it is done.
    fn reloading(&mut self) {}
}

/// A notifier that says nothing (foreground runs, tests).
pub struct Silent;

impl Notify for Silent {
    fn ready(&mut self, _: usize) {}
    fn status(&mut self, _: usize, _: usize) {}
}

enum Slot {
    Ignored(String),
    Running,
    Waiting(Instant),
    /// Stopped at a message boundary and handed to a successor.
    HandedOver,
    /// Due to start (with the session to carry on with, if any) while a
    /// hand-over is under way: starts if the hand-over is called off or its
    /// boards are given back, never before.
    Deferred(Option<HandedSession>),
}

struct Board {
    info: BoardInfo,
    target: Option<Target>,
    backend: Option<Arc<BoardBackend>>,
    counters: Arc<Counters>,
    /// The current worker's stop switch.
    stop: Arc<StopSwitch>,
    slot: Slot,
    generation: u64,
    starts: u64,
    failures: u32,
    /// `served` when the current worker started: did it serve anything
    /// beyond a handshake?
    served_at_start: u64,
    last_error: Option<Stamped>,
    /// A reload unmapped the board while its worker ran: why, for the
    /// `Ignored` state the board takes when the worker has stopped.
    releasing: Option<String>,
    /// The board carries on with a live session its predecessor process
    /// handed over: `counters.sessions` then (a new session ends it).
    handed_session: Option<u64>,
}

pub struct Supervisor<S: Spawn> {
    config: Config,
    spawner: S,
    notify: Box<dyn Notify>,
    inputs: mpsc::UnboundedSender<Input>,
    boards: BTreeMap<BoardKey, Board>,
    /// Workers of removed boards that have not reported their end yet.
    orphans: BTreeMap<BoardKey, u64>,
    /// Serials / port paths of unserved boards already logged once.
    noted: HashSet<String>,
    next_generation: u64,
    ready: bool,
    handing: Option<handover::Handing>,
    /// A hand-over was asked for and neither called off nor given back
    /// (`Resume`): no worker starts, no reload applies.
    hand_over_pending: bool,
    /// Boards the predecessor could not hand over (busy when it stopped):
    /// said in their status when they show up.
    lost: BTreeSet<BoardKey>,
    /// Sessions a predecessor handed over, taken over when their board shows up.
    handed_over: BTreeMap<BoardKey, HandedSession>,
    /// The serial each handed-over session was recorded with: a different
    /// board at the same address does not get it.
    handed_over_serials: BTreeMap<BoardKey, Option<String>>,
    /// The file a reload re-reads (None for `usb9pfsd forward`).
    config_path: Option<PathBuf>,
    config_loaded_at: SystemTime,
    last_reload_error: Option<Stamped>,
    started_at: SystemTime,
    started: Instant,
    /// When the running workers' waits are nudged next (`StopSwitch::nudge`).
    next_nudge: Instant,
}

impl<S: Spawn> Supervisor<S> {
    /// `inputs` is the sender half of the channel `run` will read; workers
    /// report through clones of it.
    pub fn new(config: Config, spawner: S, notify: Box<dyn Notify>, inputs: mpsc::UnboundedSender<Input>) -> Self {
        Supervisor {
            config,
            spawner,
            notify,
            inputs,
            boards: BTreeMap::new(),
            orphans: BTreeMap::new(),
            noted: HashSet::new(),
            next_generation: 1,
            ready: false,
            handing: None,
            hand_over_pending: false,
            lost: BTreeSet::new(),
            handed_over: BTreeMap::new(),
            handed_over_serials: BTreeMap::new(),
            config_path: None,
            config_loaded_at: SystemTime::now(),
            last_reload_error: None,
            started_at: SystemTime::now(),
            started: Instant::now(),
            next_nudge: Instant::now() + nudge_every(),
        }
    }

    /// Sessions handed over by a predecessor: each board carries on with its
    /// own when it is reported present (and still mapped); the rest are
    /// closed once coldplug is done.
    pub fn with_handed_over(mut self, sessions: BTreeMap<BoardKey, HandedSession>) -> Self {
        self.handed_over = sessions;
        self
    }

    /// The serial each handed-over session was recorded with (a board at
    /// that address with another serial starts afresh).
    pub fn with_handed_over_serials(mut self, serials: BTreeMap<BoardKey, Option<String>>) -> Self {
        self.handed_over_serials = serials;
        self
    }

    /// Boards whose sessions the predecessor could not hand over (their
    /// request was still waiting for its server when it stopped).
    pub fn with_lost(mut self, lost: impl IntoIterator<Item = BoardKey>) -> Self {
        self.lost = lost.into_iter().collect();
        self
    }

    /// Nudges every running worker's wait for its board's next message, so a
    /// message begun and never ended (a board stopped inside a run of full
    /// packets) is noticed and bounded: see `StopSwitch::nudge`.
    fn nudge_workers(&mut self) {
        for b in self.boards.values().filter(|b| matches!(b.slot, Slot::Running)) {
            b.stop.nudge();
        }
        self.next_nudge = Instant::now() + nudge_every();
    }

    /// Names the config file, for `status` (the caller re-reads it on reload).
    pub fn with_config_path(mut self, path: PathBuf) -> Self {
        self.config_path = Some(path);
        self
    }

    /// Runs until `Shutdown` or until every sender is gone.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Input>) {
        loop {
            let due = self.next_restart();
            let handing = self.handing.as_ref().map(|h| h.deadline);
            // Only while a worker waits for its board: an empty daemon sleeps.
            let nudge = self.boards.values().any(|b| matches!(b.slot, Slot::Running)).then_some(self.next_nudge);
            let input = tokio::select! {
                biased;
                input = rx.recv() => input,
                _ = sleep_until(nudge.unwrap_or_else(Instant::now)), if nudge.is_some() => {
                    self.nudge_workers();
                    continue;
                }
                _ = sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    self.restart_due();
                    continue;
                }
                _ = sleep_until(handing.unwrap_or_else(Instant::now)), if handing.is_some() => {
                    self.hand_over_overdue();
                    continue;
                }
            };
            // Restarts that fell due while the input waited come first, so
            // the input (a status query, say) sees them.
            if self.next_restart().is_some_and(|t| t <= Instant::now()) {
                self.restart_due();
            }
            match input {
                Some(Input::Hotplug(ev)) => self.on_hotplug(ev),
                Some(Input::Worker(r)) => self.on_report(r),
                Some(Input::Status(reply)) => {
                    let _ = reply.send(self.report());
                }
                Some(Input::Reload(config, reply)) => {
                    let _ = reply.send(self.reload(config));
                }
                Some(Input::Serve(serve, reply)) => {
                    let _ = reply.send(self.serve(serve));
                }
                Some(Input::Unserve(board, reply)) => {
                    let _ = reply.send(self.unserve(&board));
                }
                Some(Input::HandOver(reply, mode)) => self.on_hand_over(reply, mode),
                Some(Input::Resume(boards)) => self.resume(boards),
                Some(Input::Shutdown) | None => break,
            }
        }
        for b in self.boards.values() {
            if matches!(b.slot, Slot::HandedOver) {
                // Its server connection now belongs to a successor: a
                // shutdown() here would end the session for both.
                continue;
            }
            // Boards still busy: their server connection is broken, so the
            // request in flight is answered with EIO.
            if let Some(be) = &b.backend {
                be.stop();
            }
            b.stop.request();
        }
    }

    fn on_hotplug(&mut self, ev: HotplugEvent) {
        match ev {
            HotplugEvent::Present(info) => self.on_present(info),
            HotplugEvent::Gone(at) => self.on_gone(at),
            HotplugEvent::Rescanned(present) => {
                let gone: BTreeSet<BusAddr> = self.boards.keys().filter(|k| !present.contains(k)).map(|k| k.busaddr).collect();
                for at in gone {
                    self.on_gone(at);
                }
            }
            HotplugEvent::ColdplugDone => {
                self.handed_over_serials.clear();
                for (key, _) in std::mem::take(&mut self.handed_over) {
                    tracing::warn!(busaddr = %key.busaddr, iface = key.interface, "a handed-over board is gone; closing its session");
                }
                if !self.ready {
                    self.ready = true;
                    let served = self.served();
                    tracing::info!("{served} board(s) served, {} present", self.boards.len());
                    self.notify.ready(served);
                }
            }
        }
    }

    /// Every interface of the device at `at` is gone: wake and stop their
    /// workers (blocked on the server or the board) and remember each one
    /// until it reports its end, so the interface is known to be released.
    fn on_gone(&mut self, at: BusAddr) {
        let keys: Vec<BoardKey> = self
            .boards
            .range(BoardKey { busaddr: at, interface: 0 }..=BoardKey { busaddr: at, interface: u8::MAX })
            .map(|(k, _)| *k)
            .collect();
        if keys.is_empty() {
            return;
        }
        for key in keys {
            let Some(b) = self.boards.remove(&key) else {
                continue;
            };
            if let Some(be) = &b.backend {
                be.stop();
            }
            b.stop.request();
            if matches!(b.slot, Slot::Running) {
                self.orphans.insert(key, b.generation);
            }
            self.forget_handing(key);
            if b.target.is_some() {
                tracing::info!(serial = %b.info.serial_or_none(), busaddr = %at, iface = key.interface, "board removed");
            }
        }
        self.report_status();
    }

    fn on_present(&mut self, info: BoardInfo) {
        if self.boards.contains_key(&info.key()) {
            return;
        }
        let decision = self.config.resolve(&info);
        let (target, slot) = match decision {
            Decision::Serve { target, why } => {
                tracing::info!(
                    serial = %info.serial_or_none(), busaddr = %info.busaddr, iface = info.interface, port = %info.port_path,
                    id = %info.id, backend = %target.backend, matched_by = why, "board found"
                );
                (Some(target), Slot::Running)
            }
            Decision::NoBackend | Decision::NotAllowed | Decision::Refused { .. } => {
                let reason = match &decision {
                    Decision::NoBackend => "no backend configured for this board and no [defaults] backend".to_string(),
                    Decision::Refused { why } => format!("not served: {why}"),
                    _ => format!("VID:PID {} is not in [daemon] allow_ids", info.id),
                };
                let identity = format!("{}#{}", info.serial.clone().unwrap_or_else(|| format!("port {}", info.port_path)), info.interface);
                if self.noted.len() >= MAX_NOTED {
                    // Bounded memory whatever a board claims to be: forget
                    // the oldest notes (they are only log de-duplication).
                    self.noted.clear();
                }
                if self.noted.insert(identity) {
                    tracing::info!(
                        serial = %info.serial_or_none(), busaddr = %info.busaddr, iface = info.interface, port = %info.port_path, id = %info.id,
                        "{reason}; leaving it alone (not claimed). Add a [[board]] entry to serve it."
                    );
                }
                (None, Slot::Ignored(reason))
            }
        };
        let backend = target.as_ref().map(|t| {
            let b = BoardBackend::new(t.backend.clone());
            b.set_policy(&t.confine);
            Arc::new(b)
        });
        let at = info.key();
        self.boards.insert(
            at,
            Board {
                info,
                target,
                backend,
                counters: Arc::new(Counters::default()),
                stop: Arc::new(StopSwitch::default()),
                slot,
                generation: 0,
                starts: 0,
                failures: 0,
                served_at_start: 0,
                last_error: None,
                releasing: None,
                handed_session: None,
            },
        );
        if self.lost.remove(&at) {
            if let Some(b) = self.boards.get_mut(&at) {
                b.last_error = Some(Stamped {
                    message: "the previous usb9pfsd stopped while a request of this board waited for its server: the request got EIO \
                              and the 9P session was not handed over (the board must mount again)"
                        .into(),
                    at: SystemTime::now(),
                });
            }
        }
        let mut handed = self.handed_over.remove(&at);
        if let (Some(recorded), Some(b)) = (self.handed_over_serials.remove(&at), self.boards.get(&at)) {
            if handed.is_some() && recorded != b.info.serial {
                tracing::warn!(
                    serial = %b.info.serial_or_none(), busaddr = %at.busaddr, iface = at.interface,
                    "the session handed over for this address belongs to serial {}, not to the board there now; closing it, the board starts afresh",
                    recorded.as_deref().unwrap_or("(none)")
                );
                handed = None;
            }
        }
        if let (Some(c), Some(b)) = (&handed, self.boards.get_mut(&at)) {
            if c.session.live && b.target.is_some() {
                b.handed_session = Some(b.counters.snapshot().sessions);
            }
        }
        match self.boards.get(&at).map(|b| &b.slot) {
            Some(Slot::Running) => self.start_with(at, handed),
            _ if handed.is_some() => {
                tracing::info!(busaddr = %at.busaddr, iface = at.interface, "the config no longer maps this handed-over board; releasing it");
            }
            _ => {}
        }
        self.report_status();
    }

    /// Starts a worker for a board that has a target.
    fn start(&mut self, at: BoardKey) {
        self.start_with(at, None);
    }

    /// Starts a worker, carrying on with `handed` if given.
    fn start_with(&mut self, at: BoardKey, mut handed: Option<HandedSession>) {
        if let Some(c) = handed.as_mut().filter(|c| c.session.ceiling > self.config.max_frame) {
            // A session handed over from a process (or a config) with a
            // larger max_frame: the config in force bounds it too.
            tracing::info!(busaddr = %at.busaddr, iface = at.interface, "max_frame {} applies to the handed-over session (negotiated up to {})", self.config.max_frame, c.session.ceiling);
            c.session.ceiling = self.config.max_frame;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        let Some(b) = self.boards.get_mut(&at) else {
            return;
        };
        let (Some(target), Some(backend)) = (&b.target, &b.backend) else {
            return;
        };
        if self.hand_over_pending {
            // A worker started now would be neither handed over nor drained.
            tracing::debug!(busaddr = %at.busaddr, iface = at.interface, "a hand-over is under way; the worker starts if it is called off");
            // Reports of a worker before it are not for us any more.
            b.generation = generation;
            b.slot = Slot::Deferred(handed);
            return;
        }
        b.generation = generation;
        b.starts += 1;
        b.slot = Slot::Running;
        b.served_at_start = b.counters.snapshot().served;
        b.stop = Arc::new(StopSwitch::default());
        let job = Job {
            info: b.info.clone(),
            board_backend: backend.clone(),
            counters: b.counters.clone(),
            limits: Limits {
                max_frame: self.config.max_frame,
                board_buflen: target.buflen,
                request_timeout: target.request_timeout,
                recover_window: target.recover_window,
            },
            stop: b.stop.clone(),
            handed,
            reporter: Reporter {
                key: at,
                generation,
                sink: {
                    let tx = self.inputs.clone();
                    // The supervisor only goes away at shutdown; nothing to tell then.
                    Arc::new(move |r| {
                        let _ = tx.send(Input::Worker(r));
                    })
                },
            },
        };
        if let Err(why) = self.spawner.spawn(job) {
            self.on_report(Report { key: at, generation, event: WorkerEvent::Ended(End::Failed(why)) });
        }
    }

    fn on_report(&mut self, r: Report) {
        if let WorkerEvent::Ended(end) = &r.event {
            if self.orphans.get(&r.key) == Some(&r.generation) {
                self.orphans.remove(&r.key);
                tracing::debug!(busaddr = %r.key.busaddr, iface = r.key.interface, "worker of a removed board ended: {end:?}");
                return;
            }
        }
        let Some(b) = self.boards.get_mut(&r.key) else {
            return;
        };
        if b.generation != r.generation {
            return; // a replaced worker's last words
        }
        let end = match r.event {
            WorkerEvent::Serving => return,
            WorkerEvent::Handed(handed) => return self.on_handed(r.key, handed),
            WorkerEvent::Ended(end) => end,
        };
        if self.on_handing_end(r.key, &end) {
            self.report_status();
            return;
        }
        if self.after_stop(r.key, &end) {
            return; // released, or stopped and started afresh
        }
        let Some(b) = self.boards.get_mut(&r.key) else {
            return;
        };
        // A worker that served anything (a Tversion alone does not count)
        // starts the count afresh.
        if b.counters.snapshot().served > b.served_at_start {
            b.failures = 0;
        }
        b.failures += 1;
        let delay = FIRST_RESTART.saturating_mul(1 << (b.failures - 1).min(16)).min(MAX_RESTART);
        b.slot = Slot::Waiting(Instant::now() + delay);
        let (serial, at, iface) = (b.info.serial_or_none().to_string(), r.key.busaddr, r.key.interface);
        // An unplug usually fails the pending transfer a moment before udev
        // reports the removal: say why only if the board is still there when
        // its restart comes (see restart_due), not on every unplug.
        match end {
            End::Gone | End::Stopped => {
                tracing::debug!(serial = %serial, busaddr = %at, iface, "board stopped answering on USB; retrying in {delay:?} unless it is removed");
            }
            End::Failed(why) => {
                tracing::debug!(serial = %serial, busaddr = %at, iface, "worker stopped: {why}; restarting in {delay:?} unless the board is removed");
                b.last_error = Some(Stamped { message: why, at: SystemTime::now() });
            }
        }
        self.report_status();
    }

    fn next_restart(&self) -> Option<Instant> {
        self.boards
            .values()
            .filter_map(|b| match b.slot {
                Slot::Waiting(t) => Some(t),
                _ => None,
            })
            .min()
    }

    fn restart_due(&mut self) {
        let now = Instant::now();
        let due: Vec<BoardKey> =
            self.boards.iter().filter(|(_, b)| matches!(b.slot, Slot::Waiting(t) if t <= now)).map(|(at, _)| *at).collect();
        for at in due {
            // (a device's earlier interface may have been forgotten below)
            let Some(b) = self.boards.get(&at) else {
                continue;
            };
            if !self.spawner.on_bus(&b.info) {
                // Unplugged, and udev's removal has not arrived yet: it is a
                // removal, not a fault to restart and warn about.
                tracing::debug!(
                    serial = %b.info.serial_or_none(), busaddr = %at.busaddr, iface = at.interface,
                    "the board left the bus before its removal was reported; forgetting it"
                );
                self.on_gone(at.busaddr);
                continue;
            }
            tracing::warn!(
                serial = %b.info.serial_or_none(), busaddr = %at.busaddr, iface = at.interface,
                "restarting the worker (start {}) after: {}", b.starts + 1,
                b.last_error.as_ref().map_or("the board stopped answering on USB", |e| e.message.as_str())
            );
            self.start(at);
        }
        self.report_status();
    }

    fn served(&self) -> usize {
        self.boards.values().filter(|b| b.target.is_some()).count()
    }

    fn report_status(&mut self) {
        let (served, total) = (self.served(), self.boards.len());
        self.notify.status(served, total);
    }

    /// Every known board, ordered by bus address.
    pub fn status(&self) -> Vec<BoardStatus> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        self.boards
            .values()
            .map(|b| {
                let backend_error = b.backend.as_ref().and_then(|be| be.last_error.lock().ok().and_then(|e| e.clone()));
                // The later of the worker's and the backend's last failure.
                let last_error = match (b.last_error.clone(), backend_error) {
                    (Some(w), Some(be)) => Some(if be.at > w.at { be } else { w }),
                    (w, be) => w.or(be),
                };
                let (state, backoff_until) = match &b.slot {
                    Slot::Ignored(reason) => (BoardState::Ignored { reason: reason.clone() }, None),
                    // Starts when the hand-over is called off, at the latest
                    // at its deadline.
                    Slot::Deferred(_) => {
                        let left = self.handing.as_ref().map_or(Duration::ZERO, |h| h.deadline.saturating_duration_since(now));
                        (BoardState::Backoff { retry_in_ms: left.as_millis() as u64 }, Some(status::rfc3339(wall + left)))
                    }
                    Slot::Running | Slot::HandedOver => (
                        match b.counters.activity() {
                            Activity::Idle => BoardState::Idle,
                            Activity::Connecting => BoardState::Connecting,
                            Activity::Forwarding => BoardState::Forwarding,
                            Activity::Recovering => BoardState::Recovering,
                        },
                        None,
                    ),
                    Slot::Waiting(t) => {
                        let left = t.saturating_duration_since(now);
                        (BoardState::Backoff { retry_in_ms: left.as_millis() as u64 }, Some(status::rfc3339(wall + left)))
                    }
                };
                let running = matches!(b.slot, Slot::Running | Slot::HandedOver);
                let counters = b.counters.snapshot();
                let session_started_at = b.counters.session_started().filter(|_| running);
                BoardStatus {
                    board: b.info.identity(),
                    backend: b.target.as_ref().map(|t| t.backend.to_string()),
                    backend_pending: b.backend.as_ref().and_then(|be| be.pending()).map(|a| a.to_string()),
                    release_pending: b.releasing.is_some(),
                    state,
                    backoff_until,
                    session_handed_over: session_started_at.is_some() && b.handed_session == Some(counters.sessions),
                    session_started_at: session_started_at.map(status::rfc3339),
                    starts: b.starts,
                    restarts: b.starts.saturating_sub(1),
                    counters,
                    last_error: last_error.as_ref().map(|e| e.message.clone()),
                    last_error_at: last_error.as_ref().map(|e| status::rfc3339(e.at)),
                    confine: b.target.as_ref().and_then(|t| status::ConfineStatus::of(&t.confine)),
                    mount: b.counters.mount_status(),
                }
            })
            .collect()
    }

    /// The daemon and every board, for `usb9pfsd status`.
    pub fn report(&self) -> StatusReport {
        StatusReport {
            daemon: DaemonStatus {
                version: env!("CARGO_PKG_VERSION").to_string(),
                pid: std::process::id(),
                started_at: status::rfc3339(self.started_at),
                uptime_s: self.started.elapsed().as_secs(),
                config_path: self.config_path.as_ref().map(|p| p.display().to_string()),
                config_loaded_at: status::rfc3339(self.config_loaded_at),
                last_reload_error: self.last_reload_error.as_ref().map(|e| e.message.clone()),
                last_reload_error_at: self.last_reload_error.as_ref().map(|e| status::rfc3339(e.at)),
                serves: self.config.serves.clone(),
            },
            boards: self.status(),
        }
    }
}

mod apply;

#[cfg(test)]
pub(crate) mod tests;
