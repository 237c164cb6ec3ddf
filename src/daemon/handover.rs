//! Handing live board sessions to a successor process, so a re-executed or
//! restarted daemon carries on where this one stopped and no board notices.
//!
//! What crosses, per usb9pfs interface, once its worker has stopped at a
//! message boundary (nothing owed either way): the claimed usbfs file
//! descriptor, the server connection if the 9P session is live, and a small
//! record of the session (dialect, msize ceiling, the board's receive size).
//! The records travel as versioned JSON in a sealed memfd named
//! [`STATE_NAME`]; every descriptor travels under a name derived from its
//! board's key. Both ways of crossing use systemd's naming: `usb9pfsd
//! reexec` renumbers the descriptors to 3… and sets `LISTEN_FDS`,
//! `LISTEN_FDNAMES` and `LISTEN_PID` before `execv` (same PID), and a stop
//! under systemd puts them in the unit's file descriptor store (`FDSTORE=1`,
//! `FDNAME=`), which hands them to the next start the same way. So one
//! reader serves both.
//!
//! The successor trusts nothing handed to it: a record must parse, carry the
//! known version and name descriptors that exist; a usbfs descriptor must be
//! the character device of the bus and address it claims to be; anything
//! else is closed and the board starts clean. This module must never talk to
//! a board or a server and never decide which board is served.
//!
//! What systemd 252 (Debian 12) does with the store, read in its source: a
//! `systemctl restart` and an automatic restart after a crash keep the stored
//! descriptors and pass them to the next start; `stop` then `start` closes
//! them; a stored usbfs node of an unplugged device is dropped (POLLHUP);
//! systemd keeps its own copy while the service runs, so a successor removes
//! every name it was passed from the store (`FDSTOREREMOVE=1`) once it holds
//! them, or closing a server connection would not end its session.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use serde::{Deserialize, Serialize};

use crate::board::{BoardKey, BusAddr};
use crate::config::serve::Serve;
use crate::daemon::supervisor::handover::HandedBoard;
use crate::ninep::backend::Backend;
use crate::ninep::fids::TableRecord;
use crate::ninep::forward::Session;
use crate::ninep::frame::Dialect;
use crate::ninep::managed::ManagedServer;
use crate::worker::HandedSession;

/// Format of the state record; a successor refuses any other.
pub const VERSION: u32 = 1;
/// The descriptor name of the state memfd.
pub const STATE_NAME: &str = "usb9pfsd-state";
/// A state record larger than this is refused unread (a few hundred bytes
/// per board is the norm).
pub const MAX_STATE: u64 = 1 << 20;
/// Major number of usbfs device nodes (`/dev/bus/usb/BBB/DDD`).
const USB_DEVICE_MAJOR: u32 = 189;

/// The 9P session of one board as it crosses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// "9P2000.L", "9P2000.u" or "9P2000".
    pub dialect: String,
    pub ceiling: u32,
    pub live: bool,
    pub board_rx: u32,
    /// The server address the live session talks to (for logs and status).
    pub backend: Option<String>,
    /// When the live session began, ms since the epoch (0: not known, as
    /// from a predecessor that did not record it).
    #[serde(default)]
    pub began_ms: u64,
    /// A confined session's fid table (absent: none, or too large to cross;
    /// the successor then goes on untracked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fids: Option<TableRecord>,
    /// The managed diod serving the live session (`ninep/managed.rs`),
    /// reaped by the successor when the session ends if it is its child
    /// (an in-place re-exec). Absent: a server of the user's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_pid: Option<u32>,
}

/// One board as it crosses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardRecord {
    pub bus: u8,
    pub addr: u8,
    /// Named `iface` in the state, as every earlier version wrote it.
    #[serde(rename = "iface")]
    pub interface: u8,
    pub serial: Option<String>,
    pub session: SessionRecord,
}

impl BoardRecord {
    pub fn key(&self) -> BoardKey {
        BoardKey { busaddr: BusAddr { bus: self.bus, addr: self.addr }, interface: self.interface }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// The daemon version that wrote it (for logs).
    pub writer: String,
    pub boards: Vec<BoardRecord>,
    /// Boards that were still busy at the deadline of a stop and were not
    /// handed over (their request got EIO): for the successor's log and
    /// status. Absent from a predecessor that did not record them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost: Vec<LostRecord>,
    /// `usb9pfsd serve`'s runtime mappings, kept by the successor. Absent
    /// from a predecessor without them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serves: Vec<Serve>,
}

/// A board whose session did not cross.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostRecord {
    pub bus: u8,
    pub addr: u8,
    /// Named `iface` in the state, as every earlier version wrote it.
    #[serde(rename = "iface")]
    pub interface: u8,
}

impl State {
    pub fn new(boards: Vec<BoardRecord>) -> State {
        State { version: VERSION, writer: env!("CARGO_PKG_VERSION").to_string(), boards, lost: Vec::new(), serves: Vec::new() }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain structs of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and checks a record; the error says why it was refused.
    pub fn decode(raw: &[u8]) -> Result<State, String> {
        let state: State = serde_json::from_slice(raw).map_err(|e| format!("unreadable hand-over state: {e}"))?;
        if state.version != VERSION {
            return Err(format!(
                "hand-over state version {} from usb9pfsd {}, this usb9pfsd reads version {VERSION}",
                state.version, state.writer
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for b in &state.boards {
            if b.bus == 0 || b.addr == 0 || b.addr > 127 || !seen.insert(b.key()) {
                return Err(format!("hand-over state names an impossible or repeated board {}", b.key()));
            }
            let s = &b.session;
            if s.ceiling < crate::ninep::frame::HEADER_LEN as u32 || s.board_rx == 0 || dialect_from(&s.dialect).is_none() {
                return Err(format!("hand-over state for board {} has an impossible session", b.key()));
            }
        }
        Ok(state)
    }
}

pub fn dialect_name(d: Dialect) -> &'static str {
    match d {
        Dialect::Linux => "9P2000.L",
        Dialect::Unix => "9P2000.u",
        Dialect::Plain => "9P2000",
    }
}

pub fn dialect_from(s: &str) -> Option<Dialect> {
    match s {
        "9P2000.L" => Some(Dialect::Linux),
        "9P2000.u" => Some(Dialect::Unix),
        "9P2000" => Some(Dialect::Plain),
        _ => None,
    }
}

/// Descriptor name of a board's usbfs node.
pub fn usb_name(key: BoardKey) -> String {
    format!("usb-{:03}-{:03}-{}", key.busaddr.bus, key.busaddr.addr, key.interface)
}

/// Descriptor name of a board's server connection.
pub fn server_name(key: BoardKey) -> String {
    format!("srv-{:03}-{:03}-{}", key.busaddr.bus, key.busaddr.addr, key.interface)
}

/// The state as a sealed memfd: the successor can read it but nobody can
/// change it underneath.
pub fn state_memfd(state: &State) -> io::Result<OwnedFd> {
    let name = CString::new(STATE_NAME).map_err(io::Error::other)?;
    // SAFETY: a valid C string; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(&state.encode())?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our own descriptor.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file.into())
}

/// Reads a state memfd, bounded.
pub fn read_state(fd: OwnedFd) -> Result<State, String> {
    let mut file = File::from(fd);
    let len = file.metadata().map_err(|e| format!("cannot stat the hand-over state: {e}"))?.len();
    if len > MAX_STATE {
        return Err(format!("hand-over state of {len} bytes is larger than {MAX_STATE}"));
    }
    file.rewind().map_err(|e| format!("cannot read the hand-over state: {e}"))?;
    let mut raw = Vec::with_capacity(len as usize);
    file.take(MAX_STATE).read_to_end(&mut raw).map_err(|e| format!("cannot read the hand-over state: {e}"))?;
    State::decode(&raw)
}

/// Is `fd` the usbfs node of the device at `at`?
pub fn is_usbfs_node_of(fd: &impl AsFd, at: BusAddr) -> bool {
    // SAFETY: fstat into a zeroed struct we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_fd().as_raw_fd(), &mut st) } != 0 || at.bus == 0 || at.addr == 0 {
        return false;
    }
    let (major, minor) = (libc::major(st.st_rdev), libc::minor(st.st_rdev));
    // usbfs numbers devices (bus-1)*128 + (address-1).
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && major == USB_DEVICE_MAJOR && minor == (at.bus as u32 - 1) * 128 + (at.addr as u32 - 1)
}

/// Is `fd` a connected stream socket?
pub fn is_stream_socket(fd: &impl AsFd) -> bool {
    let mut kind: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a c_int we own.
    let r = unsafe {
        libc::getsockopt(fd.as_fd().as_raw_fd(), libc::SOL_SOCKET, libc::SO_TYPE, (&mut kind as *mut libc::c_int).cast(), &mut len)
    };
    r == 0 && kind == libc::SOCK_STREAM
}

/// What a successor found waiting for it.
#[derive(Default)]
pub struct Unpacked {
    /// Boards to take over, with their descriptors, checked.
    pub boards: BTreeMap<BoardKey, UnpackedBoard>,
    /// Why something passed was refused (logged; its descriptors closed).
    pub refused: Vec<String>,
    /// Every descriptor name seen (to remove them from systemd's store).
    pub names: Vec<String>,
    /// Boards the predecessor could not hand over (busy at its deadline).
    pub lost: Vec<BoardKey>,
    /// The predecessor's `usb9pfsd serve` mappings.
    pub serves: Vec<Serve>,
}

pub struct UnpackedBoard {
    pub record: BoardRecord,
    pub node: OwnedFd,
    pub server: Option<OwnedFd>,
}

/// Sorts named descriptors (from `LISTEN_FDS`/`LISTEN_FDNAMES`) into boards
/// to take over. Descriptors that no valid record claims are closed.
pub fn unpack(named: Vec<(String, OwnedFd)>) -> Unpacked {
    let mut out = Unpacked { names: named.iter().map(|(n, _)| n.clone()).collect(), ..Unpacked::default() };
    let mut fds: BTreeMap<String, OwnedFd> = BTreeMap::new();
    for (name, fd) in named {
        if fds.insert(name.clone(), fd).is_some() {
            out.refused.push(format!("descriptor name {name} passed twice; keeping the last"));
        }
    }
    let Some(state_fd) = fds.remove(STATE_NAME) else {
        if !fds.is_empty() {
            out.refused.push(format!("{} passed descriptors without a hand-over state; closing them", fds.len()));
        }
        return out;
    };
    let state = match read_state(state_fd) {
        Ok(s) => s,
        Err(why) => {
            out.refused.push(format!("{why}; starting every board afresh"));
            return out;
        }
    };
    out.lost = state
        .lost
        .iter()
        .filter(|l| l.bus != 0 && l.addr != 0 && l.addr <= 127)
        .map(|l| BoardKey { busaddr: BusAddr { bus: l.bus, addr: l.addr }, interface: l.interface })
        .take(1024)
        .collect();
    out.serves = state.serves;
    for record in state.boards {
        let key = record.key();
        let Some(node) = fds.remove(&usb_name(key)) else {
            out.refused.push(format!("board {key}: its usbfs descriptor was not passed"));
            continue;
        };
        if !is_usbfs_node_of(&node, key.busaddr) {
            out.refused.push(format!("board {key}: the descriptor passed is not its usbfs node"));
            continue;
        }
        let server = fds.remove(&server_name(key));
        let server = match server {
            Some(s) if record.session.live && is_stream_socket(&s) => Some(s),
            Some(_) if record.session.live => {
                out.refused.push(format!("board {key}: its server descriptor is not a stream socket; the session is lost"));
                None
            }
            _ => None,
        };
        out.boards.insert(key, UnpackedBoard { record, node, server });
    }
    for name in fds.keys() {
        out.refused.push(format!("descriptor {name} belongs to no board in the hand-over state; closing it"));
    }
    out
}

/// The environment variable naming the descriptors `reexec` passes:
/// `name=fd` pairs separated by `:` (systemd's store uses `LISTEN_FDS`).
pub const FDS_ENV: &str = "USB9PFSD_FDS";

/// The environment for the new image: this process's, with [`FDS_ENV`]
/// naming `fds`. Built for execve, because setting a variable in this
/// process while other threads may read the environment is undefined
/// behaviour.
pub fn exec_env(vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>, fds: &[(String, RawFd)]) -> Vec<CString> {
    use std::os::unix::ffi::OsStrExt;
    let listed: Vec<String> = fds.iter().map(|(n, fd)| format!("{n}={fd}")).collect();
    vars.filter(|(k, _)| k != FDS_ENV)
        .filter_map(|(k, v)| CString::new([k.as_bytes(), b"=", v.as_bytes()].concat()).ok())
        .chain(CString::new(format!("{FDS_ENV}={}", listed.join(":"))).ok())
        .collect()
}

/// Re-executes `exe` with `args` in this process (same PID), passing `fds`
/// under their names in [`FDS_ENV`]. The descriptors keep their numbers
/// (only close-on-exec is cleared), so a failed exec leaves this process as
/// it was. Returns only if the exec failed.
pub fn reexec(exe: &std::path::Path, args: &[std::ffi::OsString], fds: &[(String, RawFd)]) -> io::Error {
    use std::os::unix::ffi::OsStrExt;
    let cstr = |b: &[u8]| CString::new(b).map_err(io::Error::other);
    let path = match cstr(exe.as_os_str().as_bytes()) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut argv = Vec::new();
    for a in args {
        match cstr(a.as_bytes()) {
            Ok(c) => argv.push(c),
            Err(e) => return e,
        }
    }
    let set_cloexec = |on: bool| {
        for (_, fd) in fds {
            // SAFETY: fcntl on descriptors the caller holds open.
            unsafe { libc::fcntl(*fd, libc::F_SETFD, if on { libc::FD_CLOEXEC } else { 0 }) };
        }
    };
    let env = exec_env(std::env::vars_os(), fds);
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    set_cloexec(false);
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: NUL-terminated strings and NULL-terminated arrays that
    // outlive the call; execve only returns on failure.
    unsafe { libc::execve(path.as_ptr(), ptrs.as_ptr(), envp.as_ptr()) };
    let err = io::Error::last_os_error();
    set_cloexec(true);
    err
}

/// Parses [`FDS_ENV`]: `name=fd` pairs. Malformed entries are skipped.
pub fn parse_fds_env(v: &str) -> Vec<(String, RawFd)> {
    v.split(':')
        .filter_map(|pair| {
            let (name, fd) = pair.rsplit_once('=')?;
            let fd: RawFd = fd.parse().ok().filter(|fd| *fd > 2)?;
            Some((name.to_string(), fd))
        })
        .collect()
}

/// What crosses for `boards`: the state memfd (keep it open until the
/// successor has it) and every descriptor by name, the state first.
pub fn pack(boards: &[HandedBoard], lost: &[BoardKey], serves: &[Serve]) -> io::Result<(OwnedFd, Vec<(String, RawFd)>)> {
    let live: Vec<bool> = boards.iter().map(clean_live).collect();
    let records = boards
        .iter()
        .zip(&live)
        .map(|(hb, &live)| {
            let s = &hb.handed.session;
            BoardRecord {
                bus: hb.info.busaddr.bus,
                addr: hb.info.busaddr.addr,
                interface: hb.info.interface,
                serial: hb.info.serial.clone(),
                session: SessionRecord {
                    dialect: dialect_name(s.dialect).to_string(),
                    ceiling: s.ceiling,
                    live,
                    board_rx: s.board_rx,
                    backend: hb.backend.clone(),
                    began_ms: s.began_ms,
                    fids: s.table_record(),
                    server_pid: s.backend.as_ref().and_then(Backend::managed_pid),
                },
            }
        })
        .collect();
    let mut state = fit_state(records);
    state.serves = serves.to_vec();
    state.lost = lost.iter().map(|k| LostRecord { bus: k.busaddr.bus, addr: k.busaddr.addr, interface: k.interface }).collect();
    let state = state_memfd(&state)?;
    let mut fds = vec![(STATE_NAME.to_string(), state.as_raw_fd())];
    for (hb, live) in boards.iter().zip(live) {
        let key = hb.info.key();
        if let Some(node) = &hb.handed.node {
            fds.push((usb_name(key), node.as_raw_fd()));
        }
        if let (true, Some(b)) = (live, &hb.handed.session.backend) {
            fds.push((server_name(key), b.raw_fd()));
        }
    }
    Ok((state, fds))
}

/// Whether a board's session crosses as live: it is, and its server has
/// sent nothing nobody asked for (at a message boundary no request is out,
/// so any byte from the server is unsolicited, and a successor reading it
/// as the next reply would be out of step with the server).
fn clean_live(hb: &HandedBoard) -> bool {
    let s = &hb.handed.session;
    let Some(b) = s.backend.as_ref().filter(|_| s.live) else { return false };
    let extra = b.unsolicited() + unread(b.raw_fd());
    if extra > 0 {
        tracing::warn!(
            serial = %hb.info.serial_or_none(), busaddr = %hb.info.busaddr, iface = hb.info.interface,
            "the server sent {extra} byte(s) nobody asked for; its session is not handed over (the board's next request gets EIO until it mounts again)"
        );
        return false;
    }
    true
}

/// Bytes waiting to be read on a socket (FIONREAD); a socket that cannot
/// say counts as having some.
fn unread(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int we own.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } != 0 {
        return usize::MAX / 2;
    }
    n.max(0) as usize
}

/// Turns checked boards into sessions to carry on with. A server
/// descriptor that is no usable socket loses the session (the board's next
/// request fails with EIO until it mounts again), never the board.
pub fn sessions(boards: BTreeMap<BoardKey, UnpackedBoard>) -> BTreeMap<BoardKey, HandedSession> {
    boards
        .into_iter()
        .map(|(key, inh)| {
            let r = &inh.record.session;
            let server = inh.server.filter(|fd| match unread(fd.as_raw_fd()) {
                0 => true,
                n => {
                    tracing::warn!(busaddr = %key.busaddr, iface = key.interface, "the handed-over server connection holds {n} byte(s) nobody asked for; the session is lost");
                    false
                }
            });
            let backend = server.and_then(|fd| match Backend::from_fd(fd) {
                Ok(b) => Some(b.with_server(r.server_pid.and_then(ManagedServer::taken_over))),
                Err(e) => {
                    tracing::warn!(busaddr = %key.busaddr, iface = key.interface, "the handed-over server connection is unusable ({e}); the session is lost");
                    None
                }
            });
            let session = Session {
                live: r.live && backend.is_some(),
                backend,
                dialect: dialect_from(&r.dialect).unwrap_or_default(),
                ceiling: r.ceiling,
                board_rx: r.board_rx,
                began_ms: r.began_ms,
                // Made from `handed_fids` once the loop knows the policy.
                confine: None,
                handed_fids: r.fids.clone(),
                track: None,
            };
            (key, HandedSession { node: Some(File::from(inh.node)), session })
        })
        .collect()
}

/// The state for `records`, within half of [`MAX_STATE`]: the largest fid
/// tables are left behind (logged; those sessions go on untracked) until it
/// fits, so the successor never refuses the whole state for their size.
fn fit_state(mut records: Vec<BoardRecord>) -> State {
    loop {
        let state = State::new(records);
        if state.encode().len() as u64 <= MAX_STATE / 2 {
            return state;
        }
        records = state.boards;
        let Some(big) =
            records.iter_mut().filter(|r| r.session.fids.is_some()).max_by_key(|r| r.session.fids.as_ref().map_or(0, |f| f.fids.len()))
        else {
            return State::new(records);
        };
        tracing::warn!(
            board = %big.key(),
            fids = big.session.fids.as_ref().map_or(0, |f| f.fids.len()),
            "this board's fid table is too large to hand over: its confined session goes on untracked (ESTALE by path until it mounts again)"
        );
        big.session.fids = None;
    }
}

/// The path to re-execute: this binary's path as it was started, so an
/// upgraded file at the same path takes effect.
pub fn own_path() -> io::Result<std::path::PathBuf> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let s = exe.to_string_lossy();
    Ok(match s.strip_suffix(" (deleted)") {
        Some(p) => std::path::PathBuf::from(p),
        None => exe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(bus: u8, addr: u8, interface: u8) -> BoardRecord {
        BoardRecord {
            bus,
            addr,
            interface,
            serial: Some("A".into()),
            session: SessionRecord {
                dialect: "9P2000.L".into(),
                ceiling: 16384,
                live: true,
                board_rx: 65536,
                backend: Some("127.0.0.1:564".into()),
                began_ms: 1_764_115_200_000,
                fids: None,
                server_pid: None,
            },
        }
    }

    #[test]
    fn fid_tables_cross_in_the_state_and_the_largest_are_left_behind_to_fit() {
        use crate::ninep::fids::{FidRecord, TableRecord};
        let table = |n: u32| TableRecord {
            attaches: vec![],
            fids: (0..n)
                .map(|fid| FidRecord {
                    fid,
                    attach: 0,
                    path: "61".repeat(100),
                    qid: (0, 0, 0),
                    open: None,
                    stale: false,
                    xattr: false,
                    unreplayable: false,
                    lost: false,
                    locks: Vec::new(),
                })
                .collect(),
            client_id: String::new(),
        };
        let mut small = record(1, 4, 0);
        small.session.fids = Some(table(10));
        let mut big = record(1, 5, 0);
        big.session.fids = Some(table(3000));
        let state = fit_state(vec![small.clone(), big.clone()]);
        assert!(state.encode().len() as u64 <= MAX_STATE / 2);
        assert_eq!(state.boards[0], small, "the small table crosses");
        assert_eq!(state.boards[1].session.fids, None, "the big one is left behind");
        assert_eq!(State::decode(&state.encode()).expect("decode"), state);
        // An older record (no fids) still reads.
        let old = serde_json::to_vec(&State::new(vec![record(1, 4, 0)])).expect("json");
        assert_eq!(State::decode(&old).expect("decode").boards[0].session.fids, None);
    }

    #[test]
    fn state_round_trips_through_a_sealed_memfd() {
        let state = State::new(vec![record(1, 4, 0), record(1, 4, 2)]);
        let fd = state_memfd(&state).expect("memfd");
        // Sealed: nobody can change what the successor will read.
        let mut f = File::from(fd.try_clone().expect("dup"));
        assert!(f.write_all(b"x").is_err());
        assert_eq!(read_state(fd).expect("read"), state);
    }

    #[test]
    fn a_predecessor_that_did_not_record_when_the_session_began_is_still_read() {
        let text = String::from_utf8(State::new(vec![record(1, 4, 0)]).encode()).expect("utf8");
        let old = text.replace(",\"began_ms\":1764115200000", "");
        assert_ne!(old, text);
        let state = State::decode(old.as_bytes()).expect("decodes");
        assert_eq!(state.boards[0].session.began_ms, 0, "not known");
    }

    /// A predecessor of another version wrote this; the field names are the
    /// hand-over's interface between versions (Rust names may change).
    #[test]
    fn the_state_a_predecessor_wrote_is_read_and_written_the_same() {
        let text = r#"{"version":1,"writer":"0.1.0","boards":[{"bus":1,"addr":4,"iface":2,"serial":"A","session":{"dialect":"9P2000.L","ceiling":16384,"live":true,"board_rx":65536,"backend":"127.0.0.1:564","began_ms":1764115200000}}],"lost":[{"bus":3,"addr":17,"iface":10}]}"#;
        let state = State::decode(text.as_bytes()).expect("decodes");
        assert_eq!(state.boards, vec![record(1, 4, 2)]);
        assert_eq!(state.lost, vec![LostRecord { bus: 3, addr: 17, interface: 10 }]);
        let again: serde_json::Value = serde_json::from_slice(&state.encode()).expect("json");
        let text: serde_json::Value = serde_json::from_str(text).expect("json");
        assert_eq!(again["boards"], text["boards"]);
        assert_eq!(again["lost"], text["lost"]);
    }

    #[test]
    fn malformed_truncated_or_foreign_state_is_refused_not_trusted() {
        let good = State::new(vec![record(1, 4, 0)]).encode();
        for cut in 0..good.len() {
            assert!(State::decode(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut other = State::new(vec![]);
        other.version = 2;
        assert!(State::decode(&other.encode()).unwrap_err().contains("version 2"));
        for bad in [record(0, 4, 0), record(1, 0, 0), record(1, 200, 0)] {
            assert!(State::decode(&State::new(vec![bad]).encode()).is_err());
        }
        assert!(State::decode(&State::new(vec![record(1, 4, 0), record(1, 4, 0)]).encode()).is_err(), "repeated board");
        let mut odd = record(1, 4, 0);
        odd.session.dialect = "9P3000".into();
        assert!(State::decode(&State::new(vec![odd]).encode()).is_err());
        let mut tiny = record(1, 4, 0);
        tiny.session.ceiling = 3;
        assert!(State::decode(&State::new(vec![tiny]).encode()).is_err());
        assert!(State::decode(b"\xff\xfe garbage").is_err());
    }

    #[test]
    fn serves_cross_a_hand_over_even_with_no_board_and_an_older_state_has_none() {
        let serve = Serve {
            board: "1-1.2".parse().expect("board"),
            spec: crate::config::serve::ServeSpec { export: Some("/srv/rootfs".into()), read_only: true, ..Default::default() },
            by_uid: 1000,
            since: "2026-12-06T05:00:00Z".into(),
        };
        let (state, fds) = pack(&[], &[], std::slice::from_ref(&serve)).expect("pack");
        assert_eq!(fds.len(), 1, "the state alone");
        let got = unpack(vec![(STATE_NAME.into(), state)]);
        assert_eq!(got.serves, vec![serve]);
        assert!(got.refused.is_empty(), "{:?}", got.refused);
        // A predecessor that knew no serves: none, and the state is good.
        let old = serde_json::to_vec(&serde_json::json!({"version": VERSION, "writer": "0.0.9", "boards": []})).expect("json");
        assert_eq!(State::decode(&old).expect("older state").serves, vec![]);
    }

    #[test]
    fn a_successor_closes_what_it_cannot_use_and_starts_clean() {
        // No state: passed descriptors are closed, nothing taken over.
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let got = unpack(vec![("usb-001-004-0".into(), a.into())]);
        assert!(got.boards.is_empty());
        assert_eq!(got.refused.len(), 1);
        // A record whose "usbfs node" is a socket: refused, not taken over.
        let state = state_memfd(&State::new(vec![record(1, 4, 0)])).expect("memfd");
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let got = unpack(vec![(STATE_NAME.into(), state), ("usb-001-004-0".into(), a.into()), ("srv-001-004-0".into(), b.into())]);
        assert!(got.boards.is_empty());
        assert!(got.refused.iter().any(|r| r.contains("not its usbfs node")), "{:?}", got.refused);
        assert!(got.refused.iter().any(|r| r.contains("srv-001-004-0")), "{:?}", got.refused);
        // Garbage state: refused as a whole.
        let junk = state_memfd(&State::new(vec![])).expect("memfd");
        let mut f = File::from(junk);
        f.rewind().expect("rewind");
        let got = unpack(vec![(STATE_NAME.into(), {
            let mut raw = Vec::new();
            f.read_to_end(&mut raw).expect("read");
            // A memfd with a future version in it.
            let mut s: State = serde_json::from_slice(&raw).expect("json");
            s.version = 99;
            state_memfd(&s).expect("memfd")
        })]);
        assert!(got.refused.iter().any(|r| r.contains("version 99")), "{:?}", got.refused);
    }

    #[test]
    fn usbfs_nodes_are_recognised_by_major_and_minor_only() {
        let f = File::open("/dev/null").expect("null");
        assert!(!is_usbfs_node_of(&f, BusAddr { bus: 1, addr: 1 }));
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        assert!(is_stream_socket(&a));
        assert!(!is_stream_socket(&f));
    }

    #[test]
    fn the_reexec_descriptor_list_parses_and_skips_junk() {
        assert_eq!(
            parse_fds_env("usb9pfsd-state=5:usb-001-004-0=6:srv-001-004-0=9"),
            vec![("usb9pfsd-state".into(), 5), ("usb-001-004-0".into(), 6), ("srv-001-004-0".into(), 9)]
        );
        assert_eq!(parse_fds_env("x=1:y=abc:z:=7:w=-3"), vec![("".into(), 7)]);
        assert!(parse_fds_env("").is_empty());
    }

    #[test]
    fn the_exec_environment_names_the_descriptors_and_keeps_the_rest() {
        let vars = [("PATH", "/usr/bin"), (FDS_ENV, "stale=9"), ("NOTIFY_SOCKET", "/run/systemd/notify")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()));
        let env = exec_env(vars, &[(STATE_NAME.into(), 5), ("usb-001-004-0".into(), 6)]);
        let env: Vec<&str> = env.iter().map(|e| e.to_str().expect("utf8")).collect();
        assert_eq!(env, ["PATH=/usr/bin", "NOTIFY_SOCKET=/run/systemd/notify", "USB9PFSD_FDS=usb9pfsd-state=5:usb-001-004-0=6"]);
        // This process's own environment is never touched.
        assert_eq!(std::env::var_os(FDS_ENV), None);
    }

    fn handed(session: Session) -> HandedBoard {
        HandedBoard {
            info: crate::board::BoardInfo::example(Some("A"), 1, 4),
            backend: None,
            handed: HandedSession { node: None, session },
        }
    }

    fn live_session(server: std::os::unix::net::UnixStream) -> Session {
        let limits = crate::ninep::forward::Limits {
            max_frame: 1 << 20,
            board_buflen: 16384,
            request_timeout: None,
            recover_window: std::time::Duration::ZERO,
        };
        let mut s = Session::new(limits);
        s.backend = Some(Backend::from_unix(server));
        s.live = true;
        s
    }

    #[test]
    fn a_session_whose_server_sent_unasked_bytes_does_not_cross_as_live() {
        let (ours, mut server) = std::os::unix::net::UnixStream::pair().expect("pair");
        let clean = handed(live_session(ours));
        let (_state, fds) = pack(std::slice::from_ref(&clean), &[], &[]).expect("pack");
        assert!(fds.iter().any(|(n, _)| n.starts_with("srv-")), "a clean live session crosses with its server: {fds:?}");
        // The server speaks out of turn (no request is out at a boundary).
        server.write_all(b"\x0b\x00\x00\x00\x07\x01\x00\x05\x00\x00\x00").expect("write");
        let (state, fds) = pack(std::slice::from_ref(&clean), &[], &[]).expect("pack");
        assert!(!fds.iter().any(|(n, _)| n.starts_with("srv-")), "{fds:?}");
        assert!(!read_state(state).expect("state").boards[0].session.live);
        // The successor checks too (bytes that came after the pack).
        let (ours, mut server) = std::os::unix::net::UnixStream::pair().expect("pair");
        server.write_all(b"late").expect("write");
        let node: OwnedFd = File::open("/dev/null").expect("null").into();
        let unpacked = UnpackedBoard { record: record(1, 4, 0), node, server: Some(ours.into()) };
        let key = unpacked.record.key();
        let handed = sessions([(key, unpacked)].into_iter().collect());
        assert!(!handed[&key].session.live && handed[&key].session.backend.is_none());
    }

    #[test]
    fn names_are_stable() {
        let k = BoardKey { busaddr: BusAddr { bus: 3, addr: 17 }, interface: 10 };
        assert_eq!((usb_name(k), server_name(k)), ("usb-003-017-10".to_string(), "srv-003-017-10".to_string()));
    }
}
