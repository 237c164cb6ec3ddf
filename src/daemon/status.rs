//! What can be reported about a board and the daemon: live counters and the
//! activity flag the worker sets, and the snapshot the supervisor hands out
//! through the control socket (`usb9pfsd status`, a table or JSON). The JSON
//! field names are an interface: scripts read them, so they only grow (a
//! golden test holds them; README documents them).
//!
//! It must never hold anything a worker needs to forward frames: losing a
//! status reader never slows or stops a board.

use std::fmt::Write as _;
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
                    crate::probe::errno_name(e)
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
            error: errno.map(crate::probe::errno_name),
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

/// Where a board stands: the supervisor's slot, and for a board with a
/// worker, the worker's [`Activity`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum BoardState {
    /// Seen, but not ours to serve (no backend, not allowed); not claimed.
    Ignored { reason: String },
    /// A worker owns the board and is connecting to its 9P server.
    Connecting,
    /// A worker owns the board and a request is in flight.
    Forwarding,
    /// A worker owns the board; no request in flight.
    Idle,
    /// The board's server session was lost; a worker is rebuilding it on a
    /// new connection while the board's request waits (issue 19).
    Recovering,
    /// The last worker failed; the next starts after the delay.
    Backoff { retry_in_ms: u64 },
}

impl BoardState {
    /// The `state` word of the JSON and the table.
    pub fn word(&self) -> &'static str {
        match self {
            BoardState::Ignored { .. } => "ignored",
            BoardState::Connecting => "connecting",
            BoardState::Forwarding => "forwarding",
            BoardState::Idle => "idle",
            BoardState::Recovering => "recovering",
            BoardState::Backoff { .. } => "backoff",
        }
    }
}

/// One board as `usb9pfsd status` shows it. Times are RFC 3339 UTC strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardStatus {
    pub busaddr: String,
    /// bInterfaceNumber of this usb9pfs interface.
    pub interface: u8,
    pub port_path: String,
    pub id: String,
    pub serial: Option<String>,
    pub backend: Option<String>,
    /// A reload's new backend, used from the board's next mount (Tversion) on.
    pub backend_pending: Option<String>,
    /// A reload unmapped the board: its worker stops at the next message
    /// boundary and the board is then left alone.
    pub release_pending: bool,
    #[serde(flatten)]
    pub state: BoardState,
    /// With `backoff`: when the next worker starts.
    pub backoff_until: Option<String>,
    /// When the live 9P session with the server began (the board's mount).
    pub session_started_at: Option<String>,
    /// The live session was handed over by the previous usb9pfsd process
    /// (reexec, restart): the board kept its mount across it.
    #[serde(default)]
    pub session_handed_over: bool,
    /// Workers started for this board since it appeared.
    pub starts: u64,
    /// Workers started after a failure: `starts` - 1.
    pub restarts: u64,
    pub counters: CounterSnapshot,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// What the board's entry confines it to; null when nothing (and from
    /// an older daemon).
    #[serde(default)]
    pub confine: Option<ConfineStatus>,
    /// The board's mount: `mounted` only once the server answered its
    /// Tattach, `refused` with the server's errno and the aname; null
    /// before any attach (and from an older daemon).
    #[serde(default)]
    pub mount: Option<MountStatus>,
}

impl BoardStatus {
    /// The table's STATE: the worker's state, except that an idle board
    /// says whether it is mounted or its mount was refused.
    pub fn state_word(&self) -> &'static str {
        match (&self.state, self.mount.as_ref().map(|m| m.state.as_str())) {
            (BoardState::Idle, Some("mounted")) => "mounted",
            (BoardState::Idle, Some("refused")) => "refused",
            (s, _) => s.word(),
        }
    }
}

/// A board's confinement as status and list show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfineStatus {
    pub export: Option<String>,
    pub read_only: bool,
    /// The uid every attach is made as (squash); null: the board's own.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl ConfineStatus {
    /// None when `p` confines nothing.
    pub fn of(p: &crate::ninep::confine::Policy) -> Option<ConfineStatus> {
        p.confines().then(|| ConfineStatus { export: p.export.clone(), read_only: p.read_only, uid: p.uid, gid: p.gid })
    }
}

impl std::fmt::Display for ConfineStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(e) = &self.export {
            parts.push(format!("export {e}"));
        }
        if self.read_only {
            parts.push("read-only".to_string());
        }
        if let Some(u) = self.uid {
            parts.push(format!("uid {u}"));
        }
        if let Some(g) = self.gid {
            parts.push(format!("gid {g}"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// The daemon itself, as `usb9pfsd status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// usb9pfsd's version.
    pub version: String,
    pub pid: u32,
    pub started_at: String,
    pub uptime_s: u64,
    /// The file `reload` re-reads; null for `usb9pfsd forward`.
    pub config_path: Option<String>,
    /// When the config in force was loaded.
    pub config_loaded_at: String,
    /// The last reload's error (file:line:column: what), cleared by a good one.
    pub last_reload_error: Option<String>,
    pub last_reload_error_at: Option<String>,
}

/// Everything `usb9pfsd status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub daemon: DaemonStatus,
    pub boards: Vec<BoardStatus>,
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

/// `2h03m`, `4m10s`, `12s`.
fn span(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{:02}m", secs / 3600, secs / 60 % 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs / 3600 % 24),
    }
}

/// `512`, `12.3K`, `4.5M`, `1.2G` (powers of 1024).
fn size(n: u64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    if n < 1024 {
        return n.to_string();
    }
    let mut x = n as f64 / 1024.0;
    let mut unit = 0;
    while x >= 1024.0 && unit < UNITS.len() - 1 {
        x /= 1024.0;
        unit += 1;
    }
    format!("{x:.1}{}", UNITS[unit])
}

/// The table for people: a header about the daemon, one line per board, and
/// indented lines for what needs explaining (pending changes, errors).
pub fn table(r: &StatusReport) -> String {
    let d = &r.daemon;
    let mut out = format!("usb9pfsd {} (pid {}), up {}", d.version, d.pid, span(d.uptime_s));
    match &d.config_path {
        Some(p) => {
            let _ = write!(out, ", config {p} loaded {}", d.config_loaded_at);
        }
        None => out.push_str(", no config file (usb9pfsd forward)"),
    }
    out.push('\n');
    if let (Some(e), Some(at)) = (&d.last_reload_error, &d.last_reload_error_at) {
        let _ = writeln!(out, "last reload FAILED at {at}, the config above stays in force: {e}");
    }
    if r.boards.is_empty() {
        out.push_str("no usb9pfs gadgets present\n");
        return out;
    }
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "{:<20} {:<9} {:<3} {:<10} {:<11} {:<24} {:<20} {:>15} {:>15} {:>5} {:>8}",
        "SERIAL", "BUSADDR", "IF", "PORT", "STATE", "BACKEND", "SESSION SINCE", "T/R MSGS", "T/R BYTES", "ERRS", "RESTARTS"
    );
    for b in &r.boards {
        let c = &b.counters;
        let _ = writeln!(
            out,
            "{:<20} {:<9} {:<3} {:<10} {:<11} {:<24} {:<20} {:>15} {:>15} {:>5} {:>8}",
            dash(&b.serial),
            b.busaddr,
            b.interface,
            b.port_path,
            b.state_word(),
            dash(&b.backend),
            dash(&b.session_started_at),
            format!("{}/{}", c.t_messages, c.r_messages),
            format!("{}/{}", size(c.t_bytes), size(c.r_bytes)),
            c.error_replies,
            b.restarts
        );
        let more = |out: &mut String, line: String| {
            let _ = writeln!(out, "    {line}");
        };
        match &b.state {
            BoardState::Ignored { reason } => more(&mut out, format!("ignored: {reason}")),
            BoardState::Backoff { retry_in_ms } => more(
                &mut out,
                format!("backing off until {} (in {})", dash(&b.backoff_until), span(retry_in_ms.div_ceil(1000))),
            ),
            _ => {}
        }
        if let Some(next) = &b.backend_pending {
            more(&mut out, format!("backend changes to {next} at the board's next mount (config reload)"));
        }
        if b.release_pending {
            more(&mut out, "no longer mapped (config reload): released once idle".into());
        }
        if b.session_handed_over {
            more(&mut out, "9P session kept across the last usb9pfsd restart (handed over)".into());
        }
        if c.rearms > 0 {
            more(&mut out, format!("usb9pfs function re-armed {} time(s) after the board unmounted", c.rearms));
        }
        if let Some(c) = &b.confine {
            more(&mut out, format!("confined: {c}; {} request(s) refused", b.counters.refused));
        }
        if c.recoveries + c.recovery_failures > 0 {
            more(
                &mut out,
                format!(
                    "server restarts survived: {} (last took {} ms: {} fid(s) replayed, {} stale); given up: {}",
                    c.recoveries, c.last_recovery_ms, c.last_recovery_fids_replayed, c.last_recovery_fids_stale, c.recovery_failures
                ),
            );
        }
        if c.recoverable == Some(false) {
            more(&mut out, "this session cannot be recovered if its server restarts (see the journal for why)".into());
        }
        if let Some(m) = b.mount.as_ref().filter(|m| m.state == "refused") {
            let uid = who(&m.uname, m.uid);
            more(
                &mut out,
                format!(
                    "mount refused at {}: the server answered the attach to aname {:?} as {uid} with {}; `usb9pfsd probe` says what it means",
                    m.at,
                    m.aname,
                    m.error.as_deref().unwrap_or("an error")
                ),
            );
        }
        if let Some(e) = &b.last_error {
            more(&mut out, format!("last error at {}: {e}", dash(&b.last_error_at)));
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn board() -> BoardStatus {
        BoardStatus {
            busaddr: "001-004".into(),
            interface: 1,
            port_path: "1-1.2".into(),
            id: "1d6b:0109".into(),
            serial: Some("0001-BOARD-A".into()),
            backend: Some("buildhost:5640".into()),
            backend_pending: Some("buildhost:5641".into()),
            release_pending: false,
            state: BoardState::Forwarding,
            backoff_until: None,
            session_started_at: Some("2026-11-26T00:16:00Z".into()),
            session_handed_over: true,
            starts: 3,
            restarts: 2,
            counters: CounterSnapshot {
                t_messages: 10,
                t_bytes: 2000,
                r_messages: 9,
                r_bytes: 3 << 20,
                error_replies: 1,
                sessions: 2,
                backend_failures: 1,
                served: 8,
                board_wait_us: 900,
                server_wait_us: 400,
                reply_send_us: 200,
                rearms: 4,
                refused: 3,
                recoveries: 2,
                recovery_failures: 1,
                last_recovery_ms: 450,
                last_recovery_fids_replayed: 12,
                last_recovery_fids_stale: 1,
                recoverable: Some(true),
            },
            last_error: Some("lost the 9P server".into()),
            last_error_at: Some("2026-11-26T00:15:59Z".into()),
            confine: Some(ConfineStatus { export: Some("/srv/boards/a".into()), read_only: true, uid: Some(1000), gid: None }),
            mount: Some(MountStatus {
                state: "refused".into(),
                aname: "/srv/boards/a".into(),
                uid: Some(1000),
                uname: String::new(),
                errno: Some(1),
                error: Some("EPERM (Operation not permitted)".into()),
                at: "2026-11-26T00:15:58Z".into(),
            }),
        }
    }

    fn report() -> StatusReport {
        let mut ignored = board();
        ignored.state = BoardState::Ignored { reason: "no backend configured".into() };
        ignored.backend = None;
        ignored.backend_pending = None;
        ignored.session_started_at = None;
        ignored.session_handed_over = false;
        ignored.last_error = None;
        ignored.last_error_at = None;
        let mut waiting = board();
        waiting.state = BoardState::Backoff { retry_in_ms: 1500 };
        waiting.backoff_until = Some("2026-11-26T00:17:00Z".into());
        waiting.release_pending = true;
        StatusReport {
            daemon: DaemonStatus {
                version: "0.1.0".into(),
                pid: 42,
                started_at: "2026-11-26T00:00:00Z".into(),
                uptime_s: 3725,
                config_path: Some("/etc/usb9pfsd/config.toml".into()),
                config_loaded_at: "2026-11-26T00:10:00Z".into(),
                last_reload_error: Some("/etc/usb9pfsd/config.toml:3:11: bad".into()),
                last_reload_error_at: Some("2026-11-26T00:12:00Z".into()),
            },
            boards: vec![board(), ignored, waiting],
        }
    }

    /// The JSON field names are an interface (README documents them): this
    /// test changes only when a field is added, never renamed or removed.
    #[test]
    fn status_json_field_names_are_stable() {
        let report = report();
        let value = serde_json::to_value(&report).expect("json");
        let golden = serde_json::json!({
            "daemon": {
                "version": "0.1.0", "pid": 42, "started_at": "2026-11-26T00:00:00Z", "uptime_s": 3725,
                "config_path": "/etc/usb9pfsd/config.toml", "config_loaded_at": "2026-11-26T00:10:00Z",
                "last_reload_error": "/etc/usb9pfsd/config.toml:3:11: bad",
                "last_reload_error_at": "2026-11-26T00:12:00Z"
            },
            "boards": [{
                "busaddr": "001-004", "interface": 1, "port_path": "1-1.2", "id": "1d6b:0109",
                "serial": "0001-BOARD-A", "backend": "buildhost:5640", "backend_pending": "buildhost:5641",
                "release_pending": false, "state": "forwarding", "backoff_until": null,
                "session_started_at": "2026-11-26T00:16:00Z", "session_handed_over": true, "starts": 3, "restarts": 2,
                "counters": {
                    "t_messages": 10, "t_bytes": 2000, "r_messages": 9, "r_bytes": 3145728,
                    "error_replies": 1, "sessions": 2, "backend_failures": 1, "served": 8,
                    "board_wait_us": 900, "server_wait_us": 400, "reply_send_us": 200, "rearms": 4, "refused": 3,
                    "recoveries": 2, "recovery_failures": 1, "last_recovery_ms": 450,
                    "last_recovery_fids_replayed": 12, "last_recovery_fids_stale": 1, "recoverable": true
                },
                "last_error": "lost the 9P server", "last_error_at": "2026-11-26T00:15:59Z",
                "confine": {"export": "/srv/boards/a", "read_only": true, "uid": 1000, "gid": null},
                "mount": {"state": "refused", "aname": "/srv/boards/a", "uid": 1000, "uname": "", "errno": 1,
                          "error": "EPERM (Operation not permitted)", "at": "2026-11-26T00:15:58Z"}
            }, {
                "busaddr": "001-004", "interface": 1, "port_path": "1-1.2", "id": "1d6b:0109",
                "serial": "0001-BOARD-A", "backend": null, "backend_pending": null,
                "release_pending": false, "state": "ignored", "reason": "no backend configured",
                "backoff_until": null, "session_started_at": null, "session_handed_over": false, "starts": 3, "restarts": 2,
                "counters": {
                    "t_messages": 10, "t_bytes": 2000, "r_messages": 9, "r_bytes": 3145728,
                    "error_replies": 1, "sessions": 2, "backend_failures": 1, "served": 8,
                    "board_wait_us": 900, "server_wait_us": 400, "reply_send_us": 200, "rearms": 4, "refused": 3,
                    "recoveries": 2, "recovery_failures": 1, "last_recovery_ms": 450,
                    "last_recovery_fids_replayed": 12, "last_recovery_fids_stale": 1, "recoverable": true
                },
                "last_error": null, "last_error_at": null,
                "confine": {"export": "/srv/boards/a", "read_only": true, "uid": 1000, "gid": null},
                "mount": {"state": "refused", "aname": "/srv/boards/a", "uid": 1000, "uname": "", "errno": 1,
                          "error": "EPERM (Operation not permitted)", "at": "2026-11-26T00:15:58Z"}
            }, {
                "busaddr": "001-004", "interface": 1, "port_path": "1-1.2", "id": "1d6b:0109",
                "serial": "0001-BOARD-A", "backend": "buildhost:5640", "backend_pending": "buildhost:5641",
                "release_pending": true, "state": "backoff", "retry_in_ms": 1500,
                "backoff_until": "2026-11-26T00:17:00Z", "session_started_at": "2026-11-26T00:16:00Z",
                "session_handed_over": true, "starts": 3, "restarts": 2,
                "counters": {
                    "t_messages": 10, "t_bytes": 2000, "r_messages": 9, "r_bytes": 3145728,
                    "error_replies": 1, "sessions": 2, "backend_failures": 1, "served": 8,
                    "board_wait_us": 900, "server_wait_us": 400, "reply_send_us": 200, "rearms": 4, "refused": 3,
                    "recoveries": 2, "recovery_failures": 1, "last_recovery_ms": 450,
                    "last_recovery_fids_replayed": 12, "last_recovery_fids_stale": 1, "recoverable": true
                },
                "last_error": "lost the 9P server", "last_error_at": "2026-11-26T00:15:59Z",
                "confine": {"export": "/srv/boards/a", "read_only": true, "uid": 1000, "gid": null},
                "mount": {"state": "refused", "aname": "/srv/boards/a", "uid": 1000, "uname": "", "errno": 1,
                          "error": "EPERM (Operation not permitted)", "at": "2026-11-26T00:15:58Z"}
            }]
        });
        assert_eq!(value, golden);
        // The client reads what the daemon writes.
        let back: StatusReport = serde_json::from_value(value).expect("parse back");
        assert_eq!(back, report);
        for (state, word) in [(BoardState::Idle, "idle"), (BoardState::Connecting, "connecting")] {
            let mut b = board();
            b.state = state;
            assert_eq!(serde_json::to_value(&b).expect("json")["state"], word);
        }
    }

    #[test]
    fn table_shows_states_pending_changes_and_errors() {
        let t = table(&report());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "usb9pfsd 0.1.0 (pid 42), up 1h02m, config /etc/usb9pfsd/config.toml loaded 2026-11-26T00:10:00Z");
        assert!(lines[1].starts_with("last reload FAILED at 2026-11-26T00:12:00Z") && lines[1].ends_with(":3:11: bad"), "{t}");
        assert!(lines[2].starts_with("SERIAL"), "{t}");
        let row: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            row,
            ["0001-BOARD-A", "001-004", "1", "1-1.2", "forwarding", "buildhost:5640", "2026-11-26T00:16:00Z", "10/9", "2.0K/3.0M", "1", "2"]
        );
        for want in [
            "backend changes to buildhost:5641 at the board's next mount",
            "last error at 2026-11-26T00:15:59Z: lost the 9P server",
            "ignored: no backend configured",
            "backing off until 2026-11-26T00:17:00Z (in 2s)",
            "released once idle",
            "mount refused at 2026-11-26T00:15:58Z: the server answered the attach to aname \"/srv/boards/a\" as uid 1000 with EPERM (Operation not permitted)",
        ] {
            assert!(t.contains(want), "{want} missing from\n{t}");
        }
    }

    #[test]
    fn times_and_sizes_read_well() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_652_103)), "2026-11-26T00:15:03Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!((span(12), span(250), span(7380), span(90_000)), ("12s".into(), "4m10s".into(), "2h03m".into(), "1d01h".into()));
        assert_eq!((size(512), size(1536), size(5 << 30)), ("512".into(), "1.5K".into(), "5.0G".into()));
    }

    #[test]
    fn activity_follows_the_worker() {
        let c = Counters::default();
        assert_eq!(c.activity(), Activity::Idle);
        {
            let _busy = c.busy();
            assert_eq!(c.activity(), Activity::Forwarding);
            c.set_activity(Activity::Connecting);
            assert_eq!(c.activity(), Activity::Connecting);
        }
        assert_eq!(c.activity(), Activity::Idle);
        assert_eq!(c.session_started(), None);
        c.session_began();
        assert!(c.session_started().is_some());
        c.session_ended();
        assert_eq!(c.session_started(), None);
    }

    fn attach(aname: &str, uid: u32) -> Vec<u8> {
        let mut t = vec![0, 0, 0, 0, TATTACH, 1, 0];
        t.extend_from_slice(&0u32.to_le_bytes());
        t.extend_from_slice(&u32::MAX.to_le_bytes());
        t.extend_from_slice(&6u16.to_le_bytes());
        t.extend_from_slice(b"nobody");
        t.extend_from_slice(&(aname.len() as u16).to_le_bytes());
        t.extend_from_slice(aname.as_bytes());
        t.extend_from_slice(&uid.to_le_bytes());
        let n = t.len() as u32;
        t[..4].copy_from_slice(&n.to_le_bytes());
        t
    }

    /// Mounted means the server answered Rattach; a refused attach stays
    /// on show, with errno and aname, until one succeeds.
    #[test]
    fn a_board_is_mounted_only_after_its_server_answered_rattach() {
        let c = Counters::default();
        let rattach = [20, 0, 0, 0, RATTACH, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let rlerror = |e: u32| {
            let mut r = vec![11, 0, 0, 0, RLERROR, 1, 0];
            r.extend_from_slice(&e.to_le_bytes());
            r
        };
        c.session_began();
        assert_eq!(c.mount_status(), None, "a session is not a mount");
        // Other messages, even an Rlerror to them, are not about the mount.
        c.attach_answered(&[11, 0, 0, 0, 110, 1, 0, 0, 0, 0, 0], &rlerror(2));
        assert_eq!(c.mount_status(), None);
        c.attach_answered(&attach("/srv/x", 0), &rlerror(1));
        let m = c.mount_status().expect("refused");
        assert_eq!((m.state.as_str(), m.aname.as_str(), m.uid, m.errno), ("refused", "/srv/x", Some(0), Some(1)));
        assert_eq!(m.error.as_deref(), Some("EPERM (Operation not permitted)"));
        // The board's next mount: still refused until an attach succeeds.
        c.session_ended();
        c.session_began();
        assert_eq!(c.mount_status().map(|m| m.state), Some("refused".into()));
        c.attach_answered(&attach("/srv/a", 1000), &rattach);
        let m = c.mount_status().expect("mounted");
        assert_eq!((m.state.as_str(), m.aname.as_str(), m.uid, m.errno), ("mounted", "/srv/a", Some(1000), None));
        // A board's kernel mounts with no uid (n_uname ~0) and a uname.
        c.attach_answered(&attach("/srv/a", u32::MAX), &rattach);
        let m = c.mount_status().expect("mounted");
        assert_eq!((m.uid, who(&m.uname, m.uid)), (None, "uname \"nobody\" (no uid)".into()));
        c.session_ended();
        assert_eq!(c.mount_status(), None, "no session, no mount");
        let mut b = board();
        b.state = BoardState::Idle;
        assert_eq!(b.state_word(), "refused");
        b.mount = None;
        assert_eq!(b.state_word(), "idle");
    }

    #[test]
    fn waits_for_pending_replies() {
        let f = InFlight::new();
        assert!(f.wait_idle(Duration::ZERO));
        let p = f.enter();
        assert!(!f.wait_idle(Duration::from_millis(1)));
        std::thread::scope(|s| {
            s.spawn(move || drop(p));
            assert!(f.wait_idle(Duration::from_secs(20)));
        });
    }
}
