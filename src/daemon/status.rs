//! What can be reported about a board and the daemon: the snapshot of each
//! board's counters (`src/counters.rs`) and state that the supervisor hands out
//! through the control socket (`usb9pfsd status`, a table or JSON). The JSON
//! field names are an interface: scripts read them, so they only grow (a
//! golden test holds them; README documents them).
//!
//! It must never hold anything a worker needs to forward frames: losing a
//! status reader never slows or stops a board.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::board::BoardIdentity;
use crate::table::{Align, Table};

/// The counters live below the data path (`src/counters.rs`); the report
/// types here name them.
pub use crate::counters::{
    rfc3339, who, Activity, AttachNote, Busy, CounterSnapshot, Counters, InFlight, MessageTime, MountStatus, Pending, Stamped, IN_FLIGHT,
};

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
    /// serial, busaddr, interface, port_path, id: the board identity every
    /// JSON output shares.
    #[serde(flatten)]
    pub board: BoardIdentity,
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
    /// `usb9pfsd serve`'s runtime mappings: board, what, by which uid, since
    /// when (empty from an older daemon).
    #[serde(default)]
    pub serves: Vec<crate::config::serve::Serve>,
}

/// Everything `usb9pfsd status` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub daemon: DaemonStatus,
    pub boards: Vec<BoardStatus>,
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
    for s in &d.serves {
        let _ = writeln!(
            out,
            "usb9pfsd serve {}: {} (by uid {} at {}; usb9pfsd unserve {} undoes it)",
            s.board, s.spec, s.by_uid, s.since, s.board
        );
    }
    if r.boards.is_empty() {
        out.push_str("no usb9pfs gadgets present\n");
        return out;
    }
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let mut t = Table::new(&[
        ("SERIAL", Align::Left),
        ("BUSADDR", Align::Left),
        ("INTERFACE", Align::Right),
        ("PORT", Align::Left),
        ("STATE", Align::Left),
        ("BACKEND", Align::Left),
        ("SESSION SINCE", Align::Left),
        ("T/R MSGS", Align::Right),
        ("T/R BYTES", Align::Right),
        ("ERRS", Align::Right),
        ("RESTARTS", Align::Right),
    ]);
    for b in &r.boards {
        let c = &b.counters;
        t.row(vec![
            dash(&b.board.serial),
            b.board.busaddr.clone(),
            b.board.interface.to_string(),
            b.board.port_path.clone(),
            b.state_word().to_string(),
            dash(&b.backend),
            dash(&b.session_started_at),
            format!("{}/{}", c.t_messages, c.r_messages),
            format!("{}/{}", size(c.t_bytes), size(c.r_bytes)),
            c.error_replies.to_string(),
            b.restarts.to_string(),
        ])
        .extend(row_notes(b));
    }
    out.push_str(&t.render());
    out
}

/// The indented lines under a board's row: what needs explaining (why it
/// is not served, pending changes, recoveries, a refused mount, the last
/// error).
fn row_notes(b: &BoardStatus) -> Vec<String> {
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let c = &b.counters;
    let mut notes = Vec::new();
    let mut more = |line: String| notes.push(line);
    match &b.state {
        BoardState::Ignored { reason } => more(format!("ignored: {reason}")),
        BoardState::Backoff { retry_in_ms } => {
            more(format!("backing off until {} (in {})", dash(&b.backoff_until), span(retry_in_ms.div_ceil(1000))))
        }
        _ => {}
    }
    if let Some(next) = &b.backend_pending {
        more(format!("backend changes to {next} at the board's next mount (config reload)"));
    }
    if b.release_pending {
        more("no longer mapped (config reload): released once idle".into());
    }
    if b.session_handed_over {
        more("9P session kept across the last usb9pfsd restart (handed over)".into());
    }
    if c.rearms > 0 {
        more(format!("usb9pfs function re-armed {} time(s) after the board unmounted", c.rearms));
    }
    if let Some(c) = &b.confine {
        more(format!("confined: {c}; {} request(s) refused", b.counters.refused));
    }
    if c.recoveries + c.recovery_failures > 0 {
        more(format!(
            "server restarts survived: {} (last took {} ms: {} fid(s) replayed, {} stale); given up: {}",
            c.recoveries, c.last_recovery_ms, c.last_recovery_fids_replayed, c.last_recovery_fids_stale, c.recovery_failures
        ));
    }
    if c.recoverable == Some(false) {
        more("this session cannot be recovered if its server restarts (see the journal for why)".into());
    }
    if let Some(m) = b.mount.as_ref().filter(|m| m.state == "refused") {
        let uid = who(&m.uname, m.uid);
        more(format!(
            "mount refused at {}: the server answered the attach to aname {:?} as {uid} with {}; `usb9pfsd probe` says what it means",
            m.at,
            m.aname,
            m.error.as_deref().unwrap_or("an error")
        ));
    }
    if let Some(e) = &b.last_error {
        more(format!("last error at {}: {e}", dash(&b.last_error_at)));
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ninep::confine::TATTACH;
    use crate::ninep::frame::RLERROR;
    use std::time::{Duration, UNIX_EPOCH};
    const RATTACH: u8 = TATTACH + 1;

    fn board() -> BoardStatus {
        BoardStatus {
            board: BoardIdentity {
                serial: Some("0001-BOARD-A".into()),
                busaddr: "001-004".into(),
                interface: 1,
                port_path: "1-1.2".into(),
                id: "1d6b:0109".into(),
            },
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
                serves: vec![crate::config::serve::Serve {
                    board: "1-1.2".parse().expect("board"),
                    spec: crate::config::serve::ServeSpec { export: Some("/srv/rootfs".into()), ..Default::default() },
                    by_uid: 1000,
                    since: "2026-11-26T00:11:00Z".into(),
                }],
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
                "last_reload_error_at": "2026-11-26T00:12:00Z",
                "serves": [{"board": "1-1.2", "backend": null, "export": "/srv/rootfs", "read_only": false,
                            "uid": null, "gid": null, "by_uid": 1000, "since": "2026-11-26T00:11:00Z"}]
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
        assert_eq!(
            lines[2],
            "usb9pfsd serve 1-1.2: /srv/rootfs (managed diod) (by uid 1000 at 2026-11-26T00:11:00Z; usb9pfsd unserve 1-1.2 undoes it)"
        );
        assert!(lines[3].starts_with("SERIAL"), "{t}");
        let row: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "0001-BOARD-A",
                "001-004",
                "1",
                "1-1.2",
                "forwarding",
                "buildhost:5640",
                "2026-11-26T00:16:00Z",
                "10/9",
                "2.0K/3.0M",
                "1",
                "2"
            ]
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
