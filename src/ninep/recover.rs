//! Recovery of a board's 9P session after its server restarted (issue 19):
//! on a fresh connection, the session is rebuilt from the board's fid table
//! (`fids.rs`) the way Plan 9's recover(4) did it — Tversion with the
//! session's msize, every live attach again with the parameters the server
//! saw, every fid walked again from its attach by its path, re-opened with
//! its open flags (without O_CREAT, O_EXCL, O_TRUNC), its POSIX locks taken
//! again — and then the board's request in flight is sent again if repeating
//! it cannot change its result ([`repeatable`]).
//!
//! **A recovered fid's file is the one the board had**: the re-walked (and
//! re-opened) file's qid type and path must equal the ones the board was
//! given. A fid whose file is gone, replaced or unreachable, or whose lock
//! another client took meanwhile, is *lost*: it is clunked on the server and
//! the forwarder answers every later request on it with ESTALE (its Tclunk
//! itself), so it can never reach another file.
//!
//! A server that now offers a smaller msize or another dialect ends recovery
//! ([`ReplayError::Refused`]); a connection that breaks during the replay is
//! reported ([`ReplayError::Lost`]) so the caller can try again within its
//! window.
//!
//! It must never decide when to recover or for how long (the frame loop and
//! the board's `recover_window` do), never touch USB, and never let a fid
//! whose qid differs reach the board. It runs only after a lost session, so
//! it may allocate; the message path it guards ([`gate`]) must not.

use std::time::Duration;

use crate::ninep::backend::{Backend, BackendError};
use crate::ninep::confine::{
    NOFID, TATTACH, TAUTH, TCLUNK, TFLUSH, TFSYNC, TGETATTR, TGETLOCK, TLOCK, TLOPEN, TREAD, TREADDIR, TREADLINK, TREMOVE, TSETATTR,
    TSTATFS, TVERSION, TWALK, TWRITE, TXATTRWALK,
};
use crate::ninep::fids::{Attach, FidTable, Qid};
use crate::ninep::frame::{self, Dialect, HEADER_LEN, RLERROR};
use crate::ninep::wire::{Cursor, Writer};

/// 9P2000.L open flags recovery leaves out: the file exists already, and
/// opening it again must not change it.
const O_CREAT: u32 = 0o100;
const O_EXCL: u32 = 0o200;
const O_TRUNC: u32 = 0o1000;
const O_APPEND: u32 = 0o2000;

/// How long one exchange of the replay may take when the board has no
/// request_timeout: a server that accepts and then hangs must not hold the
/// board past its window forever.
pub const REPLAY_EXCHANGE_LIMIT: Duration = Duration::from_secs(30);

/// What a replay did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Fids given back their file on the new connection.
    pub replayed: usize,
    /// Fids lost (ESTALE from now on), this replay or an earlier one.
    pub lost: usize,
}

/// Why a replay did not finish.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The new connection broke too: try again while the window lasts.
    #[error("the new connection failed during the replay: {0}")]
    Lost(#[from] BackendError),
    /// The server cannot carry this session: recovery ends.
    #[error("{0}")]
    Refused(String),
}

/// Rebuilds the session of `table` on `b`, a fresh connection. `msize` is
/// the session's (the board's frames never exceed it).
pub fn replay(b: &mut Backend, table: &mut FidTable, msize: u32, timeout: Option<Duration>) -> Result<Outcome, ReplayError> {
    let mut x = Exchanger {
        b,
        t: vec![0u8; msize.max(8192) as usize],
        r: vec![0u8; msize.max(8192) as usize],
        msize,
        limit: Some(timeout.unwrap_or(REPLAY_EXCHANGE_LIMIT)),
    };
    x.version()?;
    // A fid number the board does not use, for each attach's root.
    let tmp = (0..u32::MAX - 1).rev().find(|n| table.get(*n).is_none()).unwrap_or(NOFID - 1);
    let mut by_attach: Vec<(u16, u32)> = table.iter().filter(|(_, f)| !f.lost).map(|(n, f)| (f.attach, n)).collect();
    by_attach.sort_unstable();
    // Copied out: the loop below changes the table.
    let attaches: Vec<(u16, Attach)> = table.live_attaches().map(|(i, a)| (i, a.clone())).collect();
    let mut replayed = 0;
    for (idx, Attach { aname, uname, n_uname, root, .. }) in attaches {
        let fids = by_attach.iter().filter(|(a, _)| *a == idx).map(|&(_, f)| f);
        match x.attach(tmp, &uname, &aname, n_uname)? {
            Some(q) if same(&q, &root) => {
                for fid in fids {
                    if x.fid(table, tmp, fid)? {
                        table.replayed(fid);
                        replayed += 1;
                    } else {
                        table.mark_lost(fid);
                    }
                }
                x.clunk(tmp)?;
            }
            answer => {
                tracing::warn!(
                    aname = %String::from_utf8_lossy(&aname).escape_debug(),
                    "the restarted server {} this attach: every fid under it is lost (ESTALE)",
                    if answer.is_some() { "gives another root for" } else { "refuses" }
                );
                if answer.is_some() {
                    x.clunk(tmp)?;
                }
                for fid in fids {
                    table.mark_lost(fid);
                }
            }
        }
    }
    Ok(Outcome { replayed, lost: table.lost() })
}

/// A qid names the same file: type and path (the version changes with
/// every write).
fn same(a: &Qid, b: &Qid) -> bool {
    a.kind == b.kind && a.path == b.path
}

struct Exchanger<'a> {
    b: &'a mut Backend,
    t: Vec<u8>,
    r: Vec<u8>,
    msize: u32,
    limit: Option<Duration>,
}

impl Exchanger<'_> {
    /// Sends `t[..len]`; the reply's body, or None for an error reply.
    fn send(&mut self, len: usize) -> Result<Option<&[u8]>, BackendError> {
        let n = self.b.exchange(&self.t[..len], &mut self.r, self.msize, self.limit)?;
        let r = &self.r[..n];
        Ok((r.get(4) != Some(&RLERROR) && r.get(4) != Some(&frame::RERROR)).then(|| &r[HEADER_LEN.min(n)..]))
    }

    fn version(&mut self) -> Result<(), ReplayError> {
        let name = b"9P2000.L";
        let len = HEADER_LEN + 4 + 2 + name.len();
        let mut w = Writer::new(&mut self.t);
        w.header(len, TVERSION, frame::NOTAG);
        w.u32(self.msize);
        w.string(name);
        let n = self.b.exchange(&self.t[..len], &mut self.r, self.msize, self.limit)?;
        match frame::version(&self.r[..n]) {
            Some(v) if v.dialect == Dialect::Linux && v.msize >= self.msize => Ok(()),
            Some(v) if v.dialect == Dialect::Linux => Err(ReplayError::Refused(format!(
                "the restarted server offers msize {}, smaller than the session's {}: the board must mount again",
                v.msize, self.msize
            ))),
            _ => Err(ReplayError::Refused("the restarted server does not speak 9P2000.L any more".into())),
        }
    }

    fn attach(&mut self, fid: u32, uname: &[u8], aname: &[u8], n_uname: u32) -> Result<Option<Qid>, BackendError> {
        let len = HEADER_LEN + 4 + 4 + 2 + uname.len() + 2 + aname.len() + 4;
        if len > self.t.len() {
            return Ok(None);
        }
        let mut w = Writer::new(&mut self.t);
        w.header(len, TATTACH, 0);
        w.u32(fid);
        w.u32(NOFID);
        w.string(uname);
        w.string(aname);
        w.u32(n_uname);
        Ok(self.send(len)?.and_then(Qid::parse))
    }

    fn clunk(&mut self, fid: u32) -> Result<(), BackendError> {
        let mut w = Writer::new(&mut self.t);
        w.header(HEADER_LEN + 4, TCLUNK, 0);
        w.u32(fid);
        self.send(HEADER_LEN + 4).map(|_| ())
    }

    /// Twalk `from` → `to` by `names`; the last qid if every name was
    /// walked (the new fid exists), None if not (it does not).
    fn walk(&mut self, from: u32, to: u32, names: &[&[u8]]) -> Result<Option<Option<Qid>>, BackendError> {
        let len = HEADER_LEN + 10 + names.iter().map(|n| 2 + n.len()).sum::<usize>();
        if len > self.t.len() {
            return Ok(None);
        }
        let mut w = Writer::new(&mut self.t);
        w.header(len, TWALK, 0);
        w.u32(from);
        w.u32(to);
        w.u16(names.len() as u16);
        for n in names {
            w.string(n);
        }
        let Some(body) = self.send(len)? else { return Ok(None) };
        let mut c = Cursor::new(body);
        let got = c.u16().unwrap_or(0) as usize;
        if got != names.len() {
            return Ok(None);
        }
        let last = got.checked_sub(1).and_then(|i| c.take(Qid::LEN * got).and_then(|q| Qid::parse(&q[Qid::LEN * i..])));
        Ok(Some(last))
    }

    /// Gives `fid` its file again: walk from the attach root `root_fid`, open,
    /// lock. False (and the fid clunked on the server if it was made) if the
    /// file is not the one the board had.
    fn fid(&mut self, table: &FidTable, root_fid: u32, fid: u32) -> Result<bool, BackendError> {
        let Some(f) = table.get(fid) else { return Ok(false) };
        if f.unreplayable || f.xattr {
            return Ok(false);
        }
        let root = table.attach_of(f).map(|a| a.root).unwrap_or_default();
        let comps: Vec<&[u8]> = if f.path().is_empty() { Vec::new() } else { f.path().split(|&b| b == b'/').collect() };
        let mut qid = root;
        let mut from = root_fid;
        let mut made = false;
        let mut chunks = comps.chunks(crate::ninep::confine::MAXWELEM).peekable();
        if chunks.peek().is_none() {
            // The attach root itself: a walk of no names clones it.
            match self.walk(root_fid, fid, &[])? {
                Some(_) => made = true,
                None => return Ok(false),
            }
        }
        for chunk in chunks {
            match self.walk(from, fid, chunk)? {
                Some(last) => {
                    made = true;
                    qid = last.unwrap_or(qid);
                }
                None => {
                    if made {
                        self.clunk(fid)?;
                    }
                    return Ok(false);
                }
            }
            from = fid;
        }
        if !same(&qid, &f.qid) {
            self.clunk(fid)?;
            return Ok(false);
        }
        if let Some(flags) = f.open {
            let mut w = Writer::new(&mut self.t);
            w.header(HEADER_LEN + 8, TLOPEN, 0);
            w.u32(fid);
            w.u32(flags & !(O_CREAT | O_EXCL | O_TRUNC));
            let opened = self.send(HEADER_LEN + 8)?.and_then(Qid::parse);
            if !opened.is_some_and(|q| same(&q, &f.qid)) {
                self.clunk(fid)?;
                return Ok(false);
            }
        }
        for l in &f.locks {
            let client = &table.client_id;
            let len = HEADER_LEN + 4 + 1 + 4 + 8 + 8 + 4 + 2 + client.len();
            if len > self.t.len() {
                self.clunk(fid)?;
                return Ok(false);
            }
            let mut w = Writer::new(&mut self.t);
            w.header(len, TLOCK, 0);
            w.u32(fid);
            w.u8(l.kind);
            w.u32(0); // never block: a lock someone else took meanwhile is lost
            w.u64(l.start);
            w.u64(l.length);
            w.u32(l.proc_id);
            w.string(client);
            if self.send(len)?.and_then(|b| b.first().copied()) != Some(0) {
                self.clunk(fid)?;
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Whether the board's request in flight when the session broke may be sent
/// again after recovery: repeating it cannot change its result. Reads and
/// lookups, opens (the file exists: the first try either opened it on the
/// dead server, whose descriptor is gone, or did not), clunks, attribute
/// changes that set absolute values (Tsetattr), and a Twrite at its offset
/// unless the fid was opened O_APPEND (a second append would write twice).
/// Creations, removals, renames, links, Txattrcreate and Tlock may have
/// taken effect: the board gets EIO for those.
pub fn repeatable(t: &[u8], table: Option<&FidTable>) -> bool {
    match t.get(4).copied().unwrap_or(0) {
        TREAD | TGETATTR | TWALK | TREADDIR | TSTATFS | TREADLINK | TXATTRWALK | TFSYNC | TLOPEN | TCLUNK | TGETLOCK | TATTACH
        | TSETATTR | TFLUSH => true,
        TWRITE => {
            let fid = Cursor::new(&t[HEADER_LEN.min(t.len())..]).u32();
            match (fid, table) {
                (Some(fid), Some(tb)) => tb.get(fid).and_then(|f| f.open).is_some_and(|fl| fl & O_APPEND == 0),
                _ => false,
            }
        }
        _ => false,
    }
}

/// What the forwarder does with a request on a fid recovery lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Forward it as usual.
    Pass,
    /// Answer it with ESTALE.
    Stale,
    /// The request ends the fid (Tclunk: answered Rclunk, the server no
    /// longer has it; Tremove: ESTALE): forget it.
    Forget { fid: u32, clunk: bool },
}

/// Looks at a request only while the table has lost fids (one branch on a
/// counter otherwise, no lookup): every request whose fid recovery lost is
/// answered here. Its first field is the fid for every 9P2000.L T-message
/// but Tversion, Tflush, Tauth and Tattach (whose fids are new).
pub fn gate(t: &[u8], table: &FidTable) -> Gate {
    if table.lost() == 0 {
        return Gate::Pass;
    }
    let kind = t.get(4).copied().unwrap_or(0);
    if matches!(kind, TVERSION | TFLUSH | TAUTH | TATTACH) {
        return Gate::Pass;
    }
    match Cursor::new(&t[HEADER_LEN.min(t.len())..]).u32() {
        Some(fid) if table.is_lost(fid) => match kind {
            TCLUNK => Gate::Forget { fid, clunk: true },
            TREMOVE => Gate::Forget { fid, clunk: false },
            _ => Gate::Stale,
        },
        _ => Gate::Pass,
    }
}
