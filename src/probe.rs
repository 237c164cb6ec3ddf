//! `usb9pfsd probe`: what a board's mount will do with its 9P server, done
//! without the board — connect, Tversion, Tattach with the aname and user
//! the server will see (after the board's confinement rewrote them: the
//! export for its aname, the squashed uid) — and, when the server says no,
//! what that means and what to change. Usable before any board is plugged,
//! and from scripts (a [`Report`] per probe, as JSON if asked).
//!
//! It must never touch a board or the running daemon: one connection of its
//! own per probe, closed when the probe ends.

use std::io;

pub use crate::ninep::frame::errno_name;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::board::{BoardIdentity, BoardInfo};
use crate::config::{expand_export, Config, Decision, Match, Target};
use crate::ninep::backend::{Backend, BackendAddr};
use crate::ninep::confine::{After, Confine, Verdict, TATTACH};
use crate::ninep::fids;
use crate::ninep::frame::{self, HEADER_LEN, NOTAG, RLERROR, RVERSION, TVERSION};
use crate::ninep::wire::{Cursor, Writer};

/// How long a probe waits for the connection and for each reply.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

const NOFID: u32 = u32::MAX;
const RATTACH: u8 = TATTACH + 1;
const TCLUNK: u8 = 120;

/// What the board itself puts in its Tattach (its mount options), which
/// the host cannot know: the kernel's defaults unless told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardAttach {
    /// `mount -o aname=...`; None: the entry's export (a confined board may
    /// leave it out), else empty.
    pub aname: Option<String>,
    /// `mount -o uname=...` (the kernel's default: nobody).
    pub uname: String,
    /// The uid in the attach: None (n_uname ~0), as the board's kernel
    /// sends for its mount.
    pub uid: Option<u32>,
}

/// One probe's outcome. The field names are an interface (`probe --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Which config entry (or `--backend`) this is.
    pub entry: String,
    /// For a board plugged in now: serial, busaddr, interface, port_path,
    /// id, the board identity every JSON output shares (absent for a
    /// config entry probed without its board).
    #[serde(flatten)]
    pub board: Option<BoardIdentity>,
    pub backend: String,
    /// The aname the board sends, and the one the server is asked for
    /// (they differ for a confined board).
    pub board_aname: String,
    pub server_aname: Option<String>,
    /// The user the server is asked to attach as (uname, n_uname).
    pub uname: Option<String>,
    pub n_uname: Option<u32>,
    pub ok: bool,
    /// The last step tried: connect, version, confine, attach.
    pub step: &'static str,
    /// The session's msize, once the server answered Tversion.
    pub msize: Option<u32>,
    /// The errno the board's mount would fail with.
    pub errno: Option<u32>,
    /// What happened, and what it means and what to change.
    pub error: Option<String>,
    pub hint: Option<String>,
}

impl Report {
    fn new(entry: &str, backend: &BackendAddr, board_aname: &str) -> Report {
        Report {
            entry: entry.to_string(),
            board: None,
            backend: backend.to_string(),
            board_aname: board_aname.to_string(),
            server_aname: None,
            uname: None,
            n_uname: None,
            ok: false,
            step: "connect",
            msize: None,
            errno: None,
            error: None,
            hint: None,
        }
    }

    fn fail(mut self, step: &'static str, errno: Option<u32>, error: String, hint: String) -> Report {
        self.step = step;
        self.errno = errno;
        self.error = Some(error);
        self.hint = Some(hint);
        self
    }

    /// One paragraph for people.
    pub fn text(&self) -> String {
        let mut s = format!("{} -> {}: ", self.entry, self.backend);
        if self.ok {
            s.push_str(&format!(
                "OK: attached to {} as {} (msize {})",
                quoted(self.server_aname.as_deref().unwrap_or("")),
                self.user(),
                self.msize.unwrap_or(0)
            ));
            if self.server_aname.as_deref() != Some(self.board_aname.as_str()) {
                s.push_str(&format!("; the board's aname {} is confined to it", quoted(&self.board_aname)));
            }
            return s;
        }
        s.push_str(&format!("FAILED at {}: {}", self.step, self.error.as_deref().unwrap_or("?")));
        if let Some(h) = &self.hint {
            s.push_str(&format!("\n    {h}"));
        }
        s
    }

    fn user(&self) -> String {
        crate::counters::who(self.uname.as_deref().unwrap_or(""), self.n_uname.filter(|n| *n != NOFID))
    }
}

fn quoted(s: &str) -> String {
    if s.is_empty() {
        "an empty aname".into()
    } else {
        format!("aname {s:?}")
    }
}

/// One probe to make: a config entry and its target, or why its export
/// cannot be known without the board.
#[derive(Debug, Clone)]
pub struct Plan {
    pub entry: String,
    /// The board plugged in now this plan is for (None: a config entry).
    pub board: Option<BoardIdentity>,
    pub target: Result<Target, String>,
}

impl Plan {
    pub fn run(&self, board: &BoardAttach) -> Report {
        let report = match &self.target {
            Ok(t) => probe(&self.entry, t, board, PROBE_TIMEOUT),
            Err(why) => Report {
                entry: self.entry.clone(),
                board: None,
                backend: "-".into(),
                board_aname: board.aname.clone().unwrap_or_default(),
                server_aname: None,
                uname: None,
                n_uname: None,
                ok: false,
                step: "config",
                msize: None,
                errno: None,
                error: Some(why.clone()),
                hint: Some("probe with --backend ADDR --export PATH (the export as it expands for the board)".into()),
            },
        };
        Report { board: self.board.clone(), ..report }
    }
}

/// A probe per entry of `c`: `[defaults]` (if it has a backend), then each
/// `[[board]]`, with export templates expanded from what the entry itself
/// says about its board (serial, path, interface).
pub fn plans(c: &Config) -> Vec<Plan> {
    let mut out = Vec::new();
    if let Some(t) = &c.default {
        out.push(Plan { entry: "[defaults]".into(), board: None, target: expanded(t, None, None, 0) });
    }
    for r in &c.boards {
        let (entry, serial, path) = match &r.matcher {
            Match::Serial(s) => (format!("[[board]] serial {s:?}"), Some(s.as_str()), None),
            Match::Path(p) => (format!("[[board]] path {p:?}"), None, Some(p.as_str())),
            Match::SerialAt { serial, path } => (format!("serial {serial:?} at path {path:?}"), Some(serial.as_str()), Some(path.as_str())),
        };
        let entry = match r.interface {
            Some(i) => format!("{entry} interface {i}"),
            None => entry,
        };
        out.push(Plan { entry, board: None, target: expanded(&r.target, serial, path, r.interface.unwrap_or(0)) });
    }
    out
}

/// A probe per usb9pfs interface plugged in now that `c` serves, with its
/// target exactly as the daemon would resolve it (templates expanded from
/// the board itself).
pub fn plugged_plans(c: &Config, gadgets: &[BoardInfo]) -> Vec<Plan> {
    gadgets
        .iter()
        .filter_map(|g| {
            let entry = format!("plugged board {} at {}#{}", g.serial_or_none(), g.busaddr, g.interface);
            let board = Some(g.identity());
            match c.resolve(g) {
                Decision::Serve { target, why } => Some(Plan { entry: format!("{entry} (by {why})"), board, target: Ok(target) }),
                Decision::Refused { why } => Some(Plan { entry, board, target: Err(format!("not served: {why}")) }),
                Decision::NoBackend | Decision::NotAllowed => None,
            }
        })
        .collect()
}

/// `t` with its export template expanded for a board with this serial,
/// port path and interface; Err if the template needs what is not known.
fn expanded(t: &Target, serial: Option<&str>, path: Option<&str>, interface: u8) -> Result<Target, String> {
    let Some(template) = &t.confine.export else { return Ok(t.clone()) };
    for (placeholder, known) in [("{serial}", serial.is_some()), ("{path}", path.is_some())] {
        if template.contains(placeholder) && !known {
            return Err(format!("its export {template:?} names {placeholder}, which only the board plugged in tells"));
        }
    }
    let g = BoardInfo { port_path: path.unwrap_or("0-0").to_string(), interface, ..BoardInfo::example(serial, 0, 0) };
    let mut t = t.clone();
    t.confine.export = Some(expand_export(template, &g)?);
    Ok(t)
}

/// Connects to `target`'s server and does what the board's mount does:
/// Tversion with the board's buflen as msize, Tattach as the board sends it
/// and the entry's confinement rewrites it. `entry` names the config entry.
pub fn probe(entry: &str, target: &Target, board: &BoardAttach, timeout: Duration) -> Report {
    let board_aname = board.aname.clone().or_else(|| target.confine.export.clone()).unwrap_or_default();
    let mut report = Report::new(entry, &target.backend, &board_aname);
    match mount_as_board(target, board, &board_aname, timeout, &mut report) {
        Ok(()) => {
            report.ok = true;
            report.step = "attach";
            report
        }
        Err(f) => report.fail(f.step, f.errno, f.error, f.hint),
    }
}

/// The step a probe failed at, the errno the board's mount would see, what
/// happened and what to change.
struct StepFailed {
    step: &'static str,
    errno: Option<u32>,
    error: String,
    hint: String,
}

fn failed(step: &'static str, errno: Option<u32>, error: String, hint: String) -> StepFailed {
    StepFailed { step, errno, error, hint }
}

/// Connect, Tversion, Tattach: what the board's mount does; `report` learns
/// the msize and the attach as sent on the way.
fn mount_as_board(
    target: &Target,
    board: &BoardAttach,
    board_aname: &str,
    timeout: Duration,
    report: &mut Report,
) -> Result<(), StepFailed> {
    let mut backend = Backend::connect(&target.backend, timeout).map_err(|e| {
        let (error, hint) = connect_failed(&target.backend, &e);
        failed("connect", Some(e.raw_os_error().unwrap_or(libc::EIO) as u32), error, hint)
    })?;
    let msize = target.buflen;
    let mut t = vec![0u8; (msize as usize).max(8192)];
    let mut r = vec![0u8; (msize as usize).max(8192)];
    let ceiling = version(&mut backend, &mut t, &mut r, msize, timeout)?;
    report.msize = Some(ceiling);
    attach(&mut backend, (&mut t, &mut r), ceiling, target, board, board_aname, timeout, report)?;
    // Polite: the session ends with the connection anyway.
    let n = tclunk(&mut t, 0);
    let _ = backend.exchange(&t[..n], &mut r, ceiling, Some(timeout));
    Ok(())
}

/// Tversion, as the board's kernel sends it; the session's msize.
fn version(backend: &mut Backend, t: &mut [u8], r: &mut [u8], msize: u32, timeout: Duration) -> Result<u32, StepFailed> {
    let n = tversion(t, msize);
    let len = backend.exchange(&t[..n], r, msize, Some(timeout)).map_err(|e| {
        let hint = "the server took the connection but did not answer 9P: is it a 9P server (diod), and is this its port?".into();
        failed("version", Some(e.errno()), format!("no Rversion: {e}"), hint)
    })?;
    let reply = &r[..len];
    match reply[4] {
        RVERSION => {}
        RLERROR => {
            let errno = rlerror(reply);
            return Err(failed(
                "version",
                Some(errno),
                format!("the server refused Tversion: {}", errno_name(errno)),
                "the server does not take 9P2000.L sessions".into(),
            ));
        }
        other => {
            return Err(failed(
                "version",
                None,
                format!("the server answered Tversion with a {}", frame::type_name(other)),
                "is this a 9P server?".into(),
            ))
        }
    }
    let version = version_string(reply);
    if version != "9P2000.L" {
        return Err(failed(
            "version",
            None,
            format!("the server speaks {version:?}, not 9P2000.L"),
            "the board's kernel mounts with 9P2000.L (trans=usbg): use a server that speaks it, such as diod".into(),
        ));
    }
    Ok(frame::version(reply).map_or(msize, |v| v.msize.min(msize)))
}

/// Tattach, as the board sends it, then as confinement rewrites it (and
/// the walks below the export confinement makes of its own).
#[allow(clippy::too_many_arguments)]
fn attach(
    backend: &mut Backend,
    (t, r): (&mut [u8], &mut [u8]),
    ceiling: u32,
    target: &Target,
    board: &BoardAttach,
    board_aname: &str,
    timeout: Duration,
    report: &mut Report,
) -> Result<(), StepFailed> {
    let need = HEADER_LEN + 4 + 4 + 2 + board.uname.len() + 2 + board_aname.len() + 4;
    if need > ceiling as usize || board.uname.len() > usize::from(u16::MAX) || board_aname.len() > usize::from(u16::MAX) {
        return Err(failed(
            "attach",
            Some(libc::ENAMETOOLONG as u32),
            format!("a Tattach with this aname and uname is {need} bytes, more than the session's msize {ceiling}"),
            "the board's kernel could not send it either: use a shorter aname".into(),
        ));
    }
    let n = tattach(t, &board.uname, board_aname, board.uid.unwrap_or(NOFID));
    let policy = target.confine.confines().then(|| Arc::new(target.confine.clone()));
    let mut confine = policy.map(|p| Confine::new(p, fids::Limits::default()));
    let n = match confine.as_mut().map(|c| c.request(t, n, ceiling)) {
        None => n,
        Some(Verdict::Forward(len)) => len,
        Some(Verdict::Refuse(errno)) => {
            let export = target.confine.export.as_deref().unwrap_or("/");
            return Err(failed(
                "confine",
                Some(errno),
                format!("usb9pfsd itself refuses the board's aname {board_aname:?}: {}", errno_name(errno)),
                format!("this entry confines the board to export {export:?}: mount with no aname, aname={export}, or a directory below it"),
            ));
        }
    };
    let (uname, server_aname, n_uname) = attach_fields(&t[..n]);
    report.server_aname = Some(server_aname.clone());
    report.uname = Some(uname);
    report.n_uname = Some(n_uname);
    let len = backend.exchange(&t[..n], r, ceiling, Some(timeout)).map_err(|e| {
        failed("attach", Some(e.errno()), format!("no Rattach: {e}"), "the server broke the connection at the attach: see its log".into())
    })?;
    let len = match confine.as_mut() {
        Some(c) => below_export(c, backend, r, len, ceiling, board_aname, timeout)?,
        None => len,
    };
    let reply = &r[..len];
    match reply[4] {
        RATTACH => Ok(()),
        RLERROR => {
            let errno = rlerror(reply);
            let (error, hint) = attach_refused(errno, &server_aname, &report.user(), target);
            Err(failed("attach", Some(errno), error, hint))
        }
        other => Err(failed("attach", None, format!("the server answered Tattach with a {}", frame::type_name(other)), String::new())),
    }
}

/// A confined attach below the export needs walks of its own: the reply's
/// length once confinement has what it needs.
fn below_export(
    c: &mut Confine,
    backend: &mut Backend,
    r: &mut [u8],
    len: usize,
    ceiling: u32,
    board_aname: &str,
    timeout: Duration,
) -> Result<usize, StepFailed> {
    let mut after = c.reply(r, len, ceiling);
    loop {
        match after {
            After::Reply(l) => return Ok(l),
            After::Refuse(errno) | After::Fail(errno) => {
                return Err(failed(
                    "confine",
                    Some(errno),
                    format!("the walk below the export to {board_aname:?} failed: {}", errno_name(errno)),
                    "the board's aname names a directory below the export that does not exist or is not a plain directory".into(),
                ))
            }
            After::Send => match backend.exchange(c.out(), r, ceiling, Some(timeout)) {
                Ok(l) => after = c.followed(r, l, ceiling),
                Err(e) => return Err(failed("attach", Some(e.errno()), format!("the server broke the connection: {e}"), String::new())),
            },
        }
    }
}

/// Why a connect failed, for people: what happened, and what to check.
fn connect_failed(addr: &BackendAddr, e: &io::Error) -> (String, String) {
    let error = format!("cannot connect to {addr}: {e}");
    let hint = match (addr, e.raw_os_error()) {
        (_, Some(libc::ECONNREFUSED)) => format!(
            "nothing listens at {addr}: is the 9P server running (systemctl status diod; Debian installs diod disabled), and does it listen there (diod -l)?"
        ),
        (BackendAddr::Unix(p), Some(libc::ENOENT)) => format!("no socket at {}: is the 9P server running, and does it listen there?", p.display()),
        (_, Some(libc::EACCES)) => "permission denied: the socket must be writable by the user usb9pfsd runs as (usb9pfsd)".into(),
        (_, Some(libc::ETIMEDOUT)) | (_, Some(libc::EHOSTUNREACH)) | (_, Some(libc::ENETUNREACH)) => {
            "no answer: a wrong address, a host that is down, or a firewall in the way".into()
        }
        _ if e.kind() == io::ErrorKind::TimedOut => "no answer: a wrong address, a host that is down, or a firewall in the way".into(),
        (BackendAddr::Tcp { host, .. }, _) if e.raw_os_error().is_none() => {
            format!("is {host:?} a host name this machine can resolve (getent hosts {host})?")
        }
        (BackendAddr::Managed(_), _) => "usb9pfsd starts this server itself: the error says what to change (docs/serve.md)".into(),
        _ => "check the backend address".into(),
    };
    (error, hint)
}

/// What an Rlerror to the attach means with diod, and what to change.
fn attach_refused(errno: u32, aname: &str, user: &str, target: &Target) -> (String, String) {
    let error = format!("the server refused to attach {} as {user}: {}", quoted(aname), errno_name(errno));
    let change = if target.confine.export.is_some() { "the entry's `export`" } else { "the board's mount option aname=" };
    let hint = match errno as i32 {
        libc::EPERM if aname.is_empty() => "diod says this for an empty aname (it is never one of diod's exports): mount the board with aname=EXPORT, or set the entry's `export` (then an empty aname means it); diod also says it when it requires authentication (run it with -n, or auth_required = 0)".into(),
        libc::EPERM => format!(
            "diod says this when the aname is not one of its exports (diod -e PATH, or exports in /etc/diod.conf) or when it requires authentication (run diod with -n, or auth_required = 0): make {change} name an export, or add {aname:?} to the server's exports"
        ),
        libc::ENOENT => format!("{aname:?} does not exist on the server's host: create it, or fix {change}"),
        libc::EACCES => format!(
            "the server does not let {user} in: check the export's permissions, diod's squash options (-S, allsquash), or set `uid` in the entry to a user that may"
        ),
        libc::ENOTDIR => format!(
            "{aname:?} is not a directory on the server's host (diod also says this for every path of an export on overlayfs: export a directory on a real file system or a tmpfs)"
        ),
        libc::ECONNREFUSED | libc::EIO => "the server failed the attach: see its log (journalctl -u diod)".into(),
        _ => format!("see the server's log; check {change}"),
    };
    (error, hint)
}

fn tversion(buf: &mut [u8], msize: u32) -> usize {
    let version = b"9P2000.L";
    let len = HEADER_LEN + 4 + 2 + version.len();
    let mut w = Writer::new(buf);
    w.header(len, TVERSION, NOTAG);
    w.u32(msize);
    w.string(version);
    len
}

fn tattach(buf: &mut [u8], uname: &str, aname: &str, uid: u32) -> usize {
    let len = HEADER_LEN + 4 + 4 + 2 + uname.len() + 2 + aname.len() + 4;
    let mut w = Writer::new(buf);
    w.header(len, TATTACH, 1);
    w.u32(0);
    w.u32(NOFID);
    w.string(uname.as_bytes());
    w.string(aname.as_bytes());
    w.u32(uid);
    len
}

fn tclunk(buf: &mut [u8], fid: u32) -> usize {
    let len = HEADER_LEN + 4;
    let mut w = Writer::new(buf);
    w.header(len, TCLUNK, 2);
    w.u32(fid);
    len
}

/// uname, aname and n_uname of a Tattach.
fn attach_fields(t: &[u8]) -> (String, String, u32) {
    let mut c = Cursor::new(t.get(HEADER_LEN..).unwrap_or_default());
    let (_, _) = (c.u32(), c.u32());
    let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
    let uname = text(c.string());
    let aname = text(c.string());
    (uname, aname, c.u32().unwrap_or(NOFID))
}

fn rlerror(r: &[u8]) -> u32 {
    Cursor::new(r.get(HEADER_LEN..).unwrap_or_default()).u32().unwrap_or(frame::EIO)
}

fn version_string(r: &[u8]) -> String {
    let mut c = Cursor::new(r.get(HEADER_LEN..).unwrap_or_default());
    let _ = c.u32();
    String::from_utf8_lossy(c.string().unwrap_or_default()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_is_built_as_the_board_sends_it_and_read_back() {
        let mut b = [0u8; 128];
        let n = tattach(&mut b, "nobody", "/srv/a", 0);
        assert_eq!(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, n);
        assert_eq!(attach_fields(&b[..n]), ("nobody".into(), "/srv/a".into(), 0));
        let n = tversion(&mut b, 16384);
        let v = frame::version(&b[..n]).expect("tversion");
        assert_eq!(v.msize, 16384);
    }

    #[test]
    fn entries_and_plugged_boards_are_planned_with_their_exports_expanded() {
        let c = Config::parse(
            "[defaults]\nbackend = \"h:1\"\nexport = \"/srv/{path}\"\n[[board]]\nserial = \"A\"\nbackend = \"h:2\"\nexport = \"/srv/s/{serial}\"\n",
            std::path::Path::new("t.toml"),
        )
        .expect("config");
        let p = plans(&c);
        assert_eq!(p.len(), 2);
        assert!(p[0].target.as_ref().is_err_and(|e| e.contains("{path}")), "{:?}", p[0]);
        assert_eq!(p[1].entry, "[[board]] serial \"A\"");
        assert_eq!(p[1].target.as_ref().expect("A").confine.export.as_deref(), Some("/srv/s/A"));
        let plugged = plugged_plans(&c, &[BoardInfo::example(Some("B"), 3, 7)]);
        assert_eq!(plugged.len(), 1);
        assert_eq!(plugged[0].entry, "plugged board B at 003-007#0 (by defaults)");
        assert_eq!(plugged[0].target.as_ref().expect("B").confine.export.as_deref(), Some("/srv/3-1"));
    }

    /// `probe --json` names a plugged board as `list --json` and `status
    /// --json` do; a config entry without its board has no identity.
    #[test]
    fn a_plugged_boards_report_carries_the_shared_board_identity() {
        let c = Config::parse("[defaults]\nbackend = \"h:1\"\nexport = \"/srv/{path}\"\n", std::path::Path::new("t.toml")).expect("config");
        let attach = BoardAttach { aname: None, uname: "nobody".into(), uid: None };
        let entry = serde_json::to_value(plans(&c)[0].run(&attach)).expect("json");
        assert!(entry.get("busaddr").is_none() && entry.get("serial").is_none(), "{entry}");
        // The board's export template cannot expand safely: the plan fails
        // without a connection, and still names the board.
        let g = BoardInfo { port_path: "3-1.9".into(), ..BoardInfo::example(Some("../B"), 3, 7) };
        let c =
            Config::parse("[defaults]\nbackend = \"h:1\"\nexport = \"/srv/{serial}\"\n", std::path::Path::new("t.toml")).expect("config");
        let plugged = plugged_plans(&c, &[g]);
        let report = serde_json::to_value(plugged[0].run(&attach)).expect("json");
        let identity: serde_json::Map<String, serde_json::Value> =
            ["serial", "busaddr", "interface", "port_path", "id"].iter().map(|k| (k.to_string(), report[*k].clone())).collect();
        assert_eq!(
            serde_json::Value::Object(identity),
            serde_json::json!({"serial": "../B", "busaddr": "003-007", "interface": 0, "port_path": "3-1.9", "id": "1d6b:0109"}),
            "{report}"
        );
        assert_eq!(report["ok"], false, "{report}");
    }

    #[test]
    fn errnos_read_as_people_know_them() {
        assert_eq!(errno_name(1), "EPERM (Operation not permitted)");
        assert_eq!(errno_name(2), "ENOENT (No such file or directory)");
    }

    /// A user's aname longer than any frame: a report, never a panic (the
    /// server is never asked).
    #[test]
    fn an_aname_longer_than_the_msize_is_reported_not_written() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr: BackendAddr = l.local_addr().expect("addr").to_string().parse().expect("addr");
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = l.accept().expect("accept");
            let mut t = [0u8; 64];
            let n = s.read(&mut t).expect("tversion");
            assert_eq!(t[4], TVERSION, "{n}");
            let mut r = [0u8; 64];
            let len = {
                let mut w = Writer::new(&mut r);
                w.header(21, RVERSION, NOTAG);
                w.u32(8192);
                w.string(b"9P2000.L");
                21
            };
            s.write_all(&r[..len]).expect("rversion");
            // Nothing more comes: the probe gives up before sending.
            assert_eq!(s.read(&mut t).unwrap_or(0), 0);
        });
        let target =
            Target { backend: addr, buflen: 8192, request_timeout: None, recover_window: Duration::ZERO, confine: Default::default() };
        let board = BoardAttach { aname: Some("/a".repeat(70_000)), uname: "nobody".into(), uid: None };
        let r = probe("t", &target, &board, Duration::from_secs(5));
        assert_eq!((r.ok, r.step, r.errno), (false, "attach", Some(libc::ENAMETOOLONG as u32)), "{:?}", r.error);
        server.join().expect("server");
    }

    #[test]
    fn a_refused_connect_says_to_start_the_server() {
        let addr: BackendAddr = "127.0.0.1:1".parse().expect("addr");
        let (_, hint) = connect_failed(&addr, &io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert!(hint.contains("nothing listens at 127.0.0.1:1") && hint.contains("diod"), "{hint}");
    }
}
