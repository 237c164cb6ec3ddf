//! What an unconfined board's session holds on its server, learnt from its
//! 9P2000.L requests and the server's replies, so that recovery (`recover.rs`)
//! can rebuild the session on a fresh connection after a server restart.
//!
//! A board whose entry has an `export` is tracked by its confinement instead
//! (`confine.rs` keeps the same kind of [`FidTable`], with paths below the
//! export): a session has exactly one table. This module keeps the table for
//! every other board, in the same shape: per fid its attach as sent, its path
//! from the attach point (with leading `..` components where the board
//! walked above it), qid, open flags, locks.
//!
//! Unlike confinement it never refuses: whatever the board sends goes to the
//! server unchanged. What it cannot follow (a name with `/`, an attribute
//! fid, a walk from a fid it never saw) makes the fid, or past a cap the
//! whole session, unrecoverable (logged once) — never a larger table.
//!
//! It must never do I/O, change a message, or allocate or look anything up
//! on the read/write path (Tread, Twrite, Treaddir, Tfsync are classified by
//! their type byte alone).

use crate::ninep::fids::{Dest, FidTable, Full, Limits, Lock, Qid, TableRecord, MAX_PATH};
use crate::ninep::frame::{
    good_name, MAXWELEM, TATTACH, TCLUNK, TLCREATE, TLOCK, TLOPEN, TREMOVE, TRENAME, TRENAMEAT, TUNLINKAT, TWALK, TXATTRCREATE, TXATTRWALK,
};

pub use crate::ninep::frame::MAX_CLIENT_ID;
use crate::ninep::frame::{self, HEADER_LEN, RLERROR};
use crate::ninep::wire::Cursor;

/// What a request will do to the table once the server answers.
#[derive(Clone, Copy, Debug, Default)]
enum Pending {
    #[default]
    None,
    Attach {
        fid: u32,
    },
    Walk {
        fid: u32,
        newfid: u32,
        n: u8,
        weird: bool,
    },
    Open {
        fid: u32,
        flags: u32,
    },
    Create {
        fid: u32,
        flags: u32,
        weird: bool,
    },
    Clunk {
        fid: u32,
    },
    Remove {
        fid: u32,
    },
    /// `path_a` → `path_b` in `attach`; `keep` is the fid a Trename named.
    Rename {
        attach: u16,
        keep: Option<u32>,
        weird: bool,
    },
    /// `path_a` of `attach` is gone.
    Unlink {
        attach: u16,
        weird: bool,
    },
    XattrWalk {
        fid: u32,
        newfid: u32,
    },
    XattrCreate {
        fid: u32,
    },
    Lock {
        fid: u32,
        lock: LockReq,
    },
}

#[derive(Clone, Copy, Debug, Default)]
struct LockReq {
    kind: u8,
    start: u64,
    length: u64,
    proc_id: u32,
}

pub use crate::ninep::frame::{rlock_ok, tlock};

/// One unconfined board's session, as far as recovery needs it.
#[derive(Debug)]
pub struct Tracker {
    table: FidTable,
    pending: Pending,
    dest: Dest,
    path_a: Vec<u8>,
    path_b: Vec<u8>,
    att_aname: Vec<u8>,
    att_uname: Vec<u8>,
    att_n_uname: u32,
    lock_client: Vec<u8>,
    /// Why this session cannot be recovered; None while it can.
    broken: Option<String>,
}

impl Tracker {
    pub fn new(limits: Limits) -> Tracker {
        Tracker {
            table: FidTable::new(limits),
            pending: Pending::None,
            dest: Dest::default(),
            path_a: Vec::new(),
            path_b: Vec::new(),
            att_aname: Vec::new(),
            att_uname: Vec::new(),
            att_n_uname: !0,
            lock_client: Vec::new(),
            broken: None,
        }
    }

    /// A live session handed over with its predecessor's table (None: the
    /// predecessor kept none, so this session cannot be recovered).
    pub fn resumed(limits: Limits, record: Option<&TableRecord>) -> Tracker {
        let mut t = Tracker::new(limits);
        match record.map(|r| FidTable::from_record(r, limits, true)) {
            Some(Ok(table)) => t.table = table,
            Some(Err(why)) => t.give_up(format!("the handed-over fid table was refused ({why})")),
            None => t.give_up("the session was handed over without a fid table".into()),
        }
        t
    }

    /// A new 9P session (Tversion): the server forgets every fid, so do we.
    pub fn reset(&mut self) {
        self.table.clear();
        self.pending = Pending::None;
        self.broken = None;
    }

    pub fn table(&self) -> &FidTable {
        &self.table
    }

    pub fn table_mut(&mut self) -> &mut FidTable {
        &mut self.table
    }

    /// Why the session cannot be recovered, if it cannot.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// The table as it crosses a hand-over (None once unrecoverable).
    pub fn record(&self) -> Option<TableRecord> {
        self.broken.is_none().then(|| self.table.record())
    }

    /// Stops tracking this session: logged once, the table emptied.
    pub fn give_up(&mut self, why: String) {
        if self.broken.is_none() {
            tracing::warn!(
                "this 9P session can no longer be recovered if its server restarts: {why}; \
                 the board's next mount starts a recoverable one"
            );
            self.table.clear();
            self.broken = Some(why);
        }
    }

    fn full(&mut self, e: Full) {
        self.give_up(format!("{e}"));
    }

    /// Sees a T-message as it goes to the server.
    pub fn request(&mut self, t: &[u8]) {
        self.pending = Pending::None;
        let Some(kind) = t.get(4).copied() else { return };
        match kind {
            TWALK | TATTACH | TLOPEN | TLCREATE | TCLUNK | TREMOVE | TRENAME | TRENAMEAT | TUNLINKAT | TXATTRWALK | TXATTRCREATE
            | TLOCK
                if self.broken.is_none() =>
            {
                self.pending = self.classify(kind, t).unwrap_or_default();
            }
            _ => {}
        }
    }

    fn classify(&mut self, kind: u8, t: &[u8]) -> Option<Pending> {
        let mut c = Cursor::new(t.get(HEADER_LEN..)?);
        let fid = c.u32()?;
        Some(match kind {
            TCLUNK => Pending::Clunk { fid },
            TREMOVE => Pending::Remove { fid },
            TLOPEN => Pending::Open { fid, flags: c.u32()? },
            TATTACH => {
                let (_afid, uname, aname, n_uname) = (c.u32()?, c.string()?, c.string()?, c.u32()?);
                self.att_uname.clear();
                self.att_uname.extend_from_slice(uname);
                self.att_aname.clear();
                self.att_aname.extend_from_slice(aname);
                self.att_n_uname = n_uname;
                Pending::Attach { fid }
            }
            TWALK => {
                let (newfid, n) = (c.u32()?, c.u16()? as usize);
                if n > MAXWELEM {
                    return None;
                }
                self.start_at(fid);
                let mut weird = false;
                for _ in 0..n {
                    let name = c.string()?;
                    if name == b".." {
                        self.dest.up();
                    } else if good_name(name) {
                        self.dest.push(name);
                    } else {
                        weird = true;
                    }
                }
                Pending::Walk { fid, newfid, n: n as u8, weird }
            }
            TLCREATE => {
                let name = c.string()?;
                let weird = !good_name(name);
                self.start_at(fid);
                if !weird {
                    self.dest.push(name);
                }
                let flags = c.u32()?;
                Pending::Create { fid, flags, weird }
            }
            TRENAME => {
                let (dfid, name) = (c.u32()?, c.string()?);
                let (fa, da) = (self.path_into(false, fid, b"")?, self.path_into(true, dfid, name)?);
                if fa != da {
                    // Across attaches: the file left this attach's view.
                    return Some(Pending::Unlink { attach: fa, weird: !good_name(name) });
                }
                Pending::Rename { attach: fa, keep: Some(fid), weird: !good_name(name) }
            }
            TRENAMEAT => {
                let (oldname, newdir, newname) = (c.string()?, c.u32()?, c.string()?);
                let weird = !good_name(oldname) || !good_name(newname);
                let (oa, na) = (self.path_into(false, fid, oldname)?, self.path_into(true, newdir, newname)?);
                if oa != na {
                    return Some(Pending::Unlink { attach: oa, weird });
                }
                Pending::Rename { attach: oa, keep: None, weird }
            }
            TUNLINKAT => {
                let name = c.string()?;
                let attach = self.path_into(false, fid, name)?;
                Pending::Unlink { attach, weird: !good_name(name) }
            }
            TXATTRWALK => Pending::XattrWalk { fid, newfid: c.u32()? },
            TXATTRCREATE => Pending::XattrCreate { fid },
            TLOCK => {
                let (_, l, client) = tlock(t)?;
                self.lock_client.clear();
                self.lock_client.extend_from_slice(client);
                Pending::Lock { fid, lock: LockReq { kind: l.kind, start: l.start, length: l.length, proc_id: l.proc_id } }
            }
            _ => Pending::None,
        })
    }

    /// `dest` = the path of `fid` (empty if unknown).
    fn start_at(&mut self, fid: u32) {
        match self.table.get(fid) {
            Some(f) => self.dest.start_at(f),
            None => self.dest.clear(),
        }
    }

    /// `path_a` (or `path_b`) = the path of `dfid` plus `name`; the fid's
    /// attach. None for a fid the table does not know.
    fn path_into(&mut self, b: bool, dfid: u32, name: &[u8]) -> Option<u16> {
        let f = self.table.get(dfid)?;
        let p = if b { &mut self.path_b } else { &mut self.path_a };
        p.clear();
        p.extend_from_slice(f.path());
        if !name.is_empty() {
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(name);
        }
        Some(f.attach)
    }

    /// Sees the server's reply to the request last seen.
    pub fn reply(&mut self, r: &[u8]) {
        let pending = std::mem::take(&mut self.pending);
        if self.broken.is_some() {
            return;
        }
        let Some(h) = frame::header(r) else { return };
        let ok = h.kind != RLERROR && h.kind != frame::RERROR;
        let body = &r[HEADER_LEN..];
        match pending {
            Pending::None => {}
            Pending::Clunk { fid } => self.table.release(fid),
            Pending::Remove { fid } => {
                if let (true, Some(f)) = (ok, self.table.get(fid)) {
                    let attach = f.attach;
                    self.path_a.clear();
                    self.path_a.extend_from_slice(f.path());
                    self.table.unlinked(attach, &self.path_a);
                }
                self.table.release(fid);
            }
            _ if !ok => {}
            Pending::Attach { .. } if self.att_aname.len() > MAX_PATH || self.att_uname.len() > MAX_PATH => {
                self.give_up(format!("an attach's aname or uname is longer than {MAX_PATH} bytes"))
            }
            Pending::Attach { fid } => {
                let Some(root) = Qid::parse(body) else { return };
                if let Err(e) = self.table.room_for(fid, 0) {
                    return self.full(e);
                }
                match self.table.add_attach(&self.att_aname, &self.att_uname, self.att_n_uname, root) {
                    Ok(a) => self.table.set(fid, a, &Dest::default(), root),
                    Err(e) => self.full(e),
                }
            }
            Pending::Walk { fid, newfid, n, weird } => {
                let mut c = Cursor::new(body);
                let Some(nwqid) = c.u16() else { return };
                if nwqid as usize != n as usize {
                    return; // a partial walk makes no fid
                }
                let Some(f) = self.table.get(fid) else {
                    return self.give_up(format!("the board walked from fid {fid}, which usb9pfsd never saw"));
                };
                let (attach, mut qid, unreplayable) = (f.attach, f.qid, f.unreplayable);
                if n > 0 {
                    let Some(q) = c.take(Qid::LEN * n as usize).and_then(|qs| Qid::parse(&qs[Qid::LEN * (n as usize - 1)..])) else {
                        return;
                    };
                    qid = q;
                }
                if let Err(e) = self.table.room_for(newfid, self.dest.path.len()) {
                    return self.full(e);
                }
                self.table.set(newfid, attach, &self.dest, qid);
                if weird || unreplayable {
                    self.table.mark_unreplayable(newfid);
                }
            }
            Pending::Open { fid, flags } => {
                if let Some(qid) = Qid::parse(body) {
                    self.table.opened(fid, flags, qid);
                }
            }
            Pending::Create { fid, flags, weird } => {
                let Some(qid) = Qid::parse(body) else { return };
                let Some(f) = self.table.get(fid) else { return };
                let (attach, unreplayable) = (f.attach, f.unreplayable);
                if let Err(e) = self.table.room_for(fid, self.dest.path.len()) {
                    return self.full(e);
                }
                self.table.set(fid, attach, &self.dest, qid);
                self.table.opened(fid, flags, qid);
                if weird || unreplayable {
                    self.table.mark_unreplayable(fid);
                }
            }
            Pending::Rename { weird: true, .. } | Pending::Unlink { weird: true, .. } => {
                self.give_up("the board renamed or removed a file by a name with '/' or NUL, which usb9pfsd cannot follow".into())
            }
            Pending::Rename { .. } if self.path_a.is_empty() || self.path_b.is_empty() => {
                self.give_up("the board renamed its attach point, or a file onto it".into())
            }
            Pending::Rename { attach, keep, weird: false } => {
                if let Err(e) = self.table.rename_room(attach, &self.path_a, &self.path_b) {
                    return self.full(e);
                }
                self.table.renamed(attach, &self.path_a, &self.path_b, keep);
            }
            Pending::Unlink { attach, weird: false } => self.table.unlinked(attach, &self.path_a),
            Pending::XattrWalk { fid, newfid } => {
                if let Err(e) = self.table.room_for(newfid, self.table.get(fid).map_or(0, |f| f.path().len())) {
                    return self.full(e);
                }
                self.table.clone_fid(fid, newfid, true);
            }
            Pending::XattrCreate { fid } => self.table.set_xattr(fid),
            Pending::Lock { .. } if self.lock_client.len() > MAX_CLIENT_ID => {
                self.give_up(format!("a lock's client id is longer than {MAX_CLIENT_ID} bytes"))
            }
            Pending::Lock { fid, lock } => {
                if rlock_ok(r) {
                    let l = Lock { kind: lock.kind, start: lock.start, length: lock.length, proc_id: lock.proc_id };
                    self.table.locked(fid, l, &self.lock_client);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ninep::fids::QTDIR;
    use crate::ninep::wire::Writer;

    fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; HEADER_LEN + body.len()];
        let mut w = Writer::new(&mut m);
        w.header(HEADER_LEN + body.len(), kind, 1);
        w.put(body);
        m
    }

    fn walk(fid: u32, newfid: u32, names: &[&str]) -> Vec<u8> {
        let mut b = fid.to_le_bytes().to_vec();
        b.extend_from_slice(&newfid.to_le_bytes());
        b.extend_from_slice(&(names.len() as u16).to_le_bytes());
        for n in names {
            b.extend_from_slice(&(n.len() as u16).to_le_bytes());
            b.extend_from_slice(n.as_bytes());
        }
        msg(TWALK, &b)
    }

    fn rwalk(qids: &[u64]) -> Vec<u8> {
        let mut b = (qids.len() as u16).to_le_bytes().to_vec();
        for &q in qids {
            let mut x = [0u8; Qid::LEN];
            Qid { kind: 0, version: 0, path: q }.put(&mut x);
            b.extend_from_slice(&x);
        }
        msg(TWALK + 1, &b)
    }

    fn attached(t: &mut Tracker, fid: u32) {
        let mut b = fid.to_le_bytes().to_vec();
        b.extend_from_slice(&(!0u32).to_le_bytes());
        b.extend_from_slice(&[4, 0]);
        b.extend_from_slice(b"root");
        b.extend_from_slice(&[6, 0]);
        b.extend_from_slice(b"/srv/a");
        b.extend_from_slice(&0u32.to_le_bytes());
        t.request(&msg(TATTACH, &b));
        let mut q = [0u8; Qid::LEN];
        Qid { kind: QTDIR, version: 0, path: 1 }.put(&mut q);
        t.reply(&msg(TATTACH + 1, &q));
    }

    fn path(t: &Tracker, fid: u32) -> String {
        String::from_utf8_lossy(t.table().get(fid).expect("fid").path()).into_owned()
    }

    #[test]
    fn follows_walks_above_the_attach_point_and_back() {
        let mut t = Tracker::new(Limits::default());
        attached(&mut t, 0);
        t.request(&walk(0, 1, &["..", "..", "b"]));
        t.reply(&rwalk(&[2, 3, 4]));
        assert_eq!(path(&t, 1), "../../b");
        t.request(&walk(1, 2, &["..", "c", ".."]));
        t.reply(&rwalk(&[3, 5, 3]));
        assert_eq!(path(&t, 2), "../..");
        t.request(&walk(0, 3, &["x", "..", "y"]));
        t.reply(&rwalk(&[6, 1, 7]));
        assert_eq!(path(&t, 3), "y");
        assert_eq!(t.table().get(3).expect("fid").qid.path, 7);
    }

    #[test]
    fn partial_walks_and_errors_make_no_fid() {
        let mut t = Tracker::new(Limits::default());
        attached(&mut t, 0);
        t.request(&walk(0, 1, &["a", "b"]));
        t.reply(&rwalk(&[2]));
        assert!(t.table().get(1).is_none());
        t.request(&walk(0, 1, &["a"]));
        t.reply(&msg(RLERROR, &2u32.to_le_bytes()));
        assert!(t.table().get(1).is_none());
    }

    #[test]
    fn odd_names_make_the_fid_unreplayable_and_a_walk_from_an_unknown_fid_breaks_the_session() {
        let mut t = Tracker::new(Limits::default());
        attached(&mut t, 0);
        t.request(&walk(0, 1, &["a/b"]));
        t.reply(&rwalk(&[2]));
        assert!(t.table().get(1).expect("fid").unreplayable);
        t.request(&walk(1, 2, &["c"]));
        t.reply(&rwalk(&[3]));
        assert!(t.table().get(2).expect("fid").unreplayable, "inherited");
        t.request(&walk(9, 3, &["c"]));
        t.reply(&rwalk(&[3]));
        assert!(t.broken().is_some_and(|w| w.contains("never saw")));
        assert!(t.table().is_empty() && t.record().is_none());
        t.reset();
        assert!(t.broken().is_none(), "a new session is tracked again");
    }

    #[test]
    fn past_the_cap_the_session_is_unrecoverable_not_larger() {
        let mut t = Tracker::new(Limits { fids: 3, path_bytes: 1 << 10 });
        attached(&mut t, 0);
        for i in 1..3 {
            t.request(&walk(0, i, &["f"]));
            t.reply(&rwalk(&[2]));
        }
        assert_eq!(t.table().len(), 3);
        t.request(&walk(0, 7, &["f"]));
        t.reply(&rwalk(&[2]));
        assert!(t.broken().is_some_and(|w| w.contains("fids")), "{:?}", t.broken());
        assert!(t.table().is_empty());
    }

    #[test]
    fn locks_are_kept_and_released() {
        let mut t = Tracker::new(Limits::default());
        attached(&mut t, 0);
        let lock = |kind: u8, start: u64, len: u64| {
            let mut b = 0u32.to_le_bytes().to_vec();
            b.push(kind);
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(&start.to_le_bytes());
            b.extend_from_slice(&len.to_le_bytes());
            b.extend_from_slice(&42u32.to_le_bytes());
            b.extend_from_slice(&[3, 0]);
            b.extend_from_slice(b"brd");
            msg(TLOCK, &b)
        };
        t.request(&lock(1, 0, 10));
        t.reply(&msg(TLOCK + 1, &[0]));
        t.request(&lock(0, 100, 0));
        t.reply(&msg(TLOCK + 1, &[1])); // blocked: not taken
        assert_eq!(t.table().get(0).expect("fid").locks.len(), 1);
        assert_eq!(t.table().client_id, b"brd");
        t.request(&lock(2, 0, 0));
        t.reply(&msg(TLOCK + 1, &[0]));
        assert!(t.table().get(0).expect("fid").locks.is_empty(), "unlock of the whole file");
    }
}
