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
    /// Where the time of each message goes, summed in nanoseconds (the
    /// per-message budget: divide by `t_messages`). Read off the monotonic
    /// clock (vDSO, no system call) at three points of the loop.
    pub time: MessageTime,
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
            b.state.word(),
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
                "confine": {"export": "/srv/boards/a", "read_only": true, "uid": 1000, "gid": null}
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
                "confine": {"export": "/srv/boards/a", "read_only": true, "uid": 1000, "gid": null}
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
                "confine": {"export": "/srv/boards/a", "read_only": true, "uid": 1000, "gid": null}
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
