//! What a board's worker counts and says about itself while it forwards —
//! message and byte counters, the time each phase of a message takes, what
//! the worker is doing (activity), the mount it saw, recovery counts — and
//! the process-wide count of requests still owed a reply. Written by the data
//! path (`ninep/forward.rs`, `worker.rs`), read by the daemon's status
//! (`daemon/status.rs`), so it sits below both.
//!
//! It must never block or allocate on the message path (relaxed atomics; the
//! in-flight count takes a lock only to wake a waiter), and never know about
//! the supervisor or the control socket.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Per-board counters, shared between the supervisor (reader) and the
/// board's worker (writer). Relaxed atomics: they are statistics.
#[derive(Debug, Default)]
pub struct Counters {
    pub t_messages: AtomicU64,
    pub t_bytes: AtomicU64,
    pub r_messages: AtomicU64,
    pub r_bytes: AtomicU64,
    /// Server replies other than Rversion: the board got work done, not just
    /// a handshake (what the supervisor's restart backoff counts as served).
    pub served: AtomicU64,
    /// Error replies usb9pfsd wrote itself because the server could not answer.
    pub error_replies: AtomicU64,
    /// 9P sessions opened with the server (one per Tversion that connected).
    pub sessions: AtomicU64,
    /// Live server sessions that broke.
    pub backend_failures: AtomicU64,
    /// Times the worker re-selected the interface's alternate setting after
    /// the board's function disabled its endpoints (its umount, on board
    /// kernels with the 2026 usbg fixes).
    pub rearms: AtomicU64,
    /// Requests of a confined board that usb9pfsd refused itself (outside
    /// its export, a change on a read-only board, an owner change, ...).
    pub refused: AtomicU64,
    /// Server sessions recovered after the server restarted (issue 19), and
    /// recoveries given up (the window passed, the server refused).
    pub recoveries: AtomicU64,
    pub recovery_failures: AtomicU64,
    /// The last recovery: its duration, fids replayed and fids lost.
    pub last_recovery_ms: AtomicU64,
    pub last_replayed: AtomicU64,
    pub last_lost: AtomicU64,
    /// Whether the live session can be recovered: 0 no session, 1 yes, 2 no.
    pub recoverable: AtomicU8,
    /// What the worker is doing right now: an [`Activity`] as u8.
    pub activity: AtomicU8,
    /// When the live server session began, in Unix milliseconds; 0: none.
    pub session_started_ms: AtomicU64,
    /// What the board's last attach (its mount) got from the server.
    pub attach: AttachNote,
    /// Where the time of each message goes, summed in nanoseconds (the
    /// per-message budget: divide by `t_messages`). Read off the monotonic
    /// clock (vDSO, no system call) at three points of the loop.
    pub time: MessageTime,
}

/// The outcome of a board's last Tattach (its mount): a board is mounted
/// only once its server answered Rattach, and a refused attach stays
/// visible (errno, aname) until one succeeds. Written by the worker on each
/// Tattach (rare: one per mount), read by status.
#[derive(Debug, Default)]
pub struct AttachNote {
    /// 0 no attach in this session, 1 mounted, 2 refused.
    state: AtomicU8,
    errno: AtomicU64,
    uid: AtomicU64,
    at_ms: AtomicU64,
    /// The aname and uname as the server saw them (after confinement).
    names: std::sync::Mutex<(String, String)>,
}

const NOT_ATTACHED: u8 = 0;
const MOUNTED: u8 = 1;
const REFUSED: u8 = 2;
const TATTACH: u8 = 104;
const RATTACH: u8 = 105;
const RLERROR: u8 = 7;
const RERROR: u8 = 107;

/// A board's mount as `usb9pfsd status` shows it (null: no attach seen
/// since its session began, or a session handed over).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountStatus {
    /// `mounted` (the server answered Rattach) or `refused`.
    pub state: String,
    /// The aname the server was asked for, and the user: uid (n_uname;
    /// null for none, as a board's kernel sends for its mount) and uname.
    pub aname: String,
    pub uid: Option<u32>,
    #[serde(default)]
    pub uname: String,
    /// With `refused`: the server's errno, and its name.
    pub errno: Option<u32>,
    pub error: Option<String>,
    pub at: String,
}

/// The user of an attach, for people: `uid 1000`, `uname "nobody" (no uid)`.
pub fn who(uname: &str, uid: Option<u32>) -> String {
    match uid {
        Some(u) => format!("uid {u}"),
        None => format!("uname {uname:?} (no uid)"),
    }
}

/// Time spent per phase of the frame loop, summed over messages.
#[derive(Debug, Default)]
pub struct MessageTime {
    /// From the end of the previous reply until this T-message arrived whole:
    /// the board's own time (its application and 9P client, idle time
    /// included) plus the USB IN hop.
    pub board_ns: AtomicU64,
    /// Request written to the server until its reply was read whole (the
    /// server's work and the socket both ways).
    pub server_ns: AtomicU64,
    /// The reply's USB OUT transfer, ZLP included, until the board took it.
    pub reply_ns: AtomicU64,
}

/// What a board's worker is doing, as it tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Activity {
    /// Waiting for the board's next request.
    Idle = 0,
    /// Opening a connection to the 9P server for the board's Tversion.
    Connecting = 1,
    /// A request from the board is in flight (to the server or its reply back).
    Forwarding = 2,
    /// The server session was lost; rebuilding it on a new connection while
    /// the board's request waits.
    Recovering = 3,
}

/// A request in flight on one board; dropping it marks the board idle.
pub struct Busy<'a>(&'a Counters);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.set_activity(Activity::Idle);
    }
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    pub t_messages: u64,
    pub t_bytes: u64,
    pub r_messages: u64,
    pub r_bytes: u64,
    pub served: u64,
    pub error_replies: u64,
    pub sessions: u64,
    pub backend_failures: u64,
    /// Microseconds spent waiting for the board, the server and the reply's
    /// transfer (see [`MessageTime`]); absent from an older daemon's report.
    #[serde(default)]
    pub board_wait_us: u64,
    #[serde(default)]
    pub server_wait_us: u64,
    #[serde(default)]
    pub reply_send_us: u64,
    /// See [`Counters::rearms`]; absent from an older daemon's report.
    #[serde(default)]
    pub rearms: u64,
    /// Requests refused by the board's confinement; absent from an older
    /// daemon's report.
    #[serde(default)]
    pub refused: u64,
    /// Server-restart recovery (issue 19); absent from an older daemon's
    /// report. `recoverable`: null without a live session.
    #[serde(default)]
    pub recoveries: u64,
    #[serde(default)]
    pub recovery_failures: u64,
    #[serde(default)]
    pub last_recovery_ms: u64,
    #[serde(default)]
    pub last_recovery_fids_replayed: u64,
    #[serde(default)]
    pub last_recovery_fids_stale: u64,
    #[serde(default)]
    pub recoverable: Option<bool>,
}

impl Counters {
    pub fn snapshot(&self) -> CounterSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            t_messages: g(&self.t_messages),
            t_bytes: g(&self.t_bytes),
            r_messages: g(&self.r_messages),
            r_bytes: g(&self.r_bytes),
            served: g(&self.served),
            error_replies: g(&self.error_replies),
            sessions: g(&self.sessions),
            backend_failures: g(&self.backend_failures),
            board_wait_us: g(&self.time.board_ns) / 1000,
            server_wait_us: g(&self.time.server_ns) / 1000,
            reply_send_us: g(&self.time.reply_ns) / 1000,
            rearms: g(&self.rearms),
            refused: g(&self.refused),
            recoveries: g(&self.recoveries),
            recovery_failures: g(&self.recovery_failures),
            last_recovery_ms: g(&self.last_recovery_ms),
            last_recovery_fids_replayed: g(&self.last_replayed),
            last_recovery_fids_stale: g(&self.last_lost),
            recoverable: match self.recoverable.load(Ordering::Relaxed) {
                1 => Some(true),
                2 => Some(false),
                _ => None,
            },
        }
    }

    pub fn activity(&self) -> Activity {
        match self.activity.load(Ordering::Relaxed) {
            1 => Activity::Connecting,
            2 => Activity::Forwarding,
            3 => Activity::Recovering,
            _ => Activity::Idle,
        }
    }

    pub fn set_activity(&self, a: Activity) {
        self.activity.store(a as u8, Ordering::Relaxed);
    }

    /// Marks the board forwarding until the returned guard drops.
    pub fn busy(&self) -> Busy<'_> {
        self.set_activity(Activity::Forwarding);
        Busy(self)
    }

    /// A server session began now; returns when, in ms since the epoch
    /// (for the session to carry, see [`Counters::session_resumed`]).
    pub fn session_began(&self) -> u64 {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_millis().max(1) as u64);
        self.session_started_ms.store(ms, Ordering::Relaxed);
        self.not_mounted();
        ms
    }

    /// A server session that began at `ms` (a predecessor's, handed over)
    /// carries on here; 0: not known.
    pub fn session_resumed(&self, ms: u64) {
        self.session_started_ms.store(ms, Ordering::Relaxed);
    }

    /// The server session ended (lost, replaced, or the worker stopped).
    pub fn session_ended(&self) {
        self.session_started_ms.store(0, Ordering::Relaxed);
        self.not_mounted();
    }

    /// A new or ended session is not mounted until its attach succeeds; a
    /// refused attach stays on show until one does.
    fn not_mounted(&self) {
        let _ = self.attach.state.compare_exchange(MOUNTED, NOT_ATTACHED, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The frame loop's hook after each server reply `r` to the board's
    /// request `t` (as the server saw it): notes a Tattach's outcome. One
    /// comparison for every other message.
    #[inline]
    pub fn attach_answered(&self, t: &[u8], r: &[u8]) {
        if t.get(4) == Some(&TATTACH) {
            self.note_attach(t, r);
        }
    }

    #[cold]
    fn note_attach(&self, t: &[u8], r: &[u8]) {
        use crate::ninep::wire::Cursor;
        let mut c = Cursor::new(t.get(7..).unwrap_or_default());
        let (_fid, _afid) = (c.u32(), c.u32());
        let uname = String::from_utf8_lossy(c.string().unwrap_or_default()).into_owned();
        let aname = String::from_utf8_lossy(c.string().unwrap_or_default()).into_owned();
        let uid = c.u32().unwrap_or(u32::MAX);
        let errno = match r.get(4).copied() {
            Some(RATTACH) => None,
            // 9P2000.L: the errno; 9P2000.u: a string, then the errno.
            Some(RLERROR) => Some(Cursor::new(r.get(7..).unwrap_or_default()).u32().unwrap_or(crate::ninep::frame::EIO)),
            Some(RERROR) => {
                let mut c = Cursor::new(r.get(7..).unwrap_or_default());
                let _ = c.string();
                Some(c.u32().unwrap_or(crate::ninep::frame::EIO))
            }
            _ => return,
        };
        let a = &self.attach;
        let was = a.state.load(Ordering::Relaxed);
        let user = who(&uname, (uid != u32::MAX).then_some(uid));
        match errno {
            None => {
                if was != MOUNTED {
                    tracing::info!("board mounted: the 9P server accepted its attach to aname {aname:?} as {user}");
                }
                a.state.store(MOUNTED, Ordering::Relaxed);
            }
            Some(e) => {
                tracing::warn!(
                    errno = e,
                    "board's mount refused: the 9P server answered its attach to aname {aname:?} as {user} with {};                      `usb9pfsd probe` says what it means (with diod: is {aname:?} one of its exports?)",
                    crate::ninep::frame::errno_name(e)
                );
                a.state.store(REFUSED, Ordering::Relaxed);
            }
        }
        a.errno.store(errno.map_or(0, u64::from), Ordering::Relaxed);
        a.uid.store(u64::from(uid), Ordering::Relaxed);
        a.at_ms.store(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64), Ordering::Relaxed);
        let mut names = a.names.lock().unwrap_or_else(|p| p.into_inner());
        names.0.clear();
        names.0.push_str(&aname);
        names.1.clear();
        names.1.push_str(&uname);
    }

    /// The board's mount for status: None until an attach was answered.
    pub fn mount_status(&self) -> Option<MountStatus> {
        let a = &self.attach;
        let state = match a.state.load(Ordering::Relaxed) {
            MOUNTED => "mounted",
            REFUSED => "refused",
            _ => return None,
        };
        let errno = (state == "refused").then(|| a.errno.load(Ordering::Relaxed) as u32);
        let uid = u32::try_from(a.uid.load(Ordering::Relaxed)).ok().filter(|u| *u != u32::MAX);
        let (aname, uname) = a.names.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some(MountStatus {
            state: state.into(),
            aname,
            uid,
            uname,
            errno,
            error: errno.map(crate::ninep::frame::errno_name),
            at: rfc3339(UNIX_EPOCH + Duration::from_millis(a.at_ms.load(Ordering::Relaxed))),
        })
    }

    pub fn session_started(&self) -> Option<SystemTime> {
        match self.session_started_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }
}

/// An error message and when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    pub message: String,
    pub at: SystemTime,
}

/// Requests taken from a board whose reply has not been handed back yet, over
/// all boards. At shutdown the daemon breaks every server connection (so
/// pending requests are answered with EIO) and waits here, bounded, for those
/// replies to reach their boards before the process exits — a board left
/// without a reply would wait forever.
///
/// Entering and leaving are two atomic operations: no lock and no system
/// call per message (a condvar's notify is a futex call even with nobody
/// waiting); only a leave that empties the count while someone waits takes
/// the lock and wakes them.
pub struct InFlight {
    count: AtomicUsize,
    /// Set by [`InFlight::wait_idle`] before it looks at the count.
    waiting: AtomicBool,
    lock: std::sync::Mutex<()>,
    idle: std::sync::Condvar,
}

/// The process-wide in-flight count.
pub static IN_FLIGHT: InFlight = InFlight::new();

/// One request in flight; dropping it marks the reply delivered (or given up).
pub struct Pending<'a>(&'a InFlight);

impl InFlight {
    pub const fn new() -> InFlight {
        InFlight {
            count: AtomicUsize::new(0),
            waiting: AtomicBool::new(false),
            lock: std::sync::Mutex::new(()),
            idle: std::sync::Condvar::new(),
        }
    }

    pub fn enter(&self) -> Pending<'_> {
        self.count.fetch_add(1, Ordering::SeqCst);
        Pending(self)
    }

    /// Waits until no request is in flight or `limit` passes; true if idle.
    pub fn wait_idle(&self, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let mut guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        // Announced before the count is read: a leave that empties the count
        // after this either sees it and wakes us (it needs the lock, which
        // we hold until we sleep), or we see its zero.
        self.waiting.store(true, Ordering::SeqCst);
        while self.count.load(Ordering::SeqCst) > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            guard = match self.idle.wait_timeout(guard, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }
}

impl Default for InFlight {
    fn default() -> InFlight {
        InFlight::new()
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 && self.0.waiting.load(Ordering::SeqCst) {
            let _guard = self.0.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.0.idle.notify_all();
        }
    }
}

/// `2026-11-26T00:15:03Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}
