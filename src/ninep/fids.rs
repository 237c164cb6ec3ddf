//! One board's fid table: what usb9pfsd knows about every fid the board holds
//! on its server, kept from the board's requests and the server's replies.
//!
//! # Design (shared by confinement, issue 18, and server-restart recovery, issue 19)
//!
//! Per fid ([`Fid`]):
//! - **its attach** ([`Attach`], shared by every fid walked from it): the
//!   aname, uname and n_uname *as sent to the server*, i.e. after
//!   confinement rewrote them (a confined board's aname is always its export;
//!   a directory below it is reached by walking), and the qid of the attach
//!   root. Recovery re-attaches with exactly these; confinement answers a
//!   `..` at the root with the root's qid.
//! - **its path from the attach point**, as components joined by `/` (a
//!   name can never contain `/` or NUL: confinement refuses those, so the
//!   join is unambiguous; the root is the empty path). It follows the
//!   board's own renames (`Trename`, `Trenameat`: every fid at or below the
//!   old path moves to the new one), so recovery re-walks the file where it
//!   now is. `depth` is its number of components: no path this table holds
//!   lies above its attach point.
//! - **qid** (type, version, path) as the server last gave it: recovery
//!   compares it with the re-walked file's; confinement reads the type
//!   (a symlink fid is never used as a directory or opened).
//! - **open flags** (9P2000.L `Tlopen`/`Tlcreate` flags) once opened:
//!   recovery re-opens with them minus O_CREAT/O_EXCL/O_TRUNC.
//! - **stale**: the server's idea of this fid's file is no longer what the
//!   path says. Set when the file, or a directory above it, was renamed by
//!   another fid (a path-based server such as diod keeps the old path for
//!   every fid but the one renamed, so that old path may meanwhile name
//!   something else, even a symlink leading out), unlinked, or replaced by a
//!   rename over it. Confinement lets a stale fid do only what works on its
//!   open file descriptor; recovery gives it ESTALE.
//! - **xattr**: a fid from `Txattrwalk`/`Txattrcreate` (reads or writes an
//!   attribute of the file at its path; not a file itself).
//! - **locks**: the POSIX locks the board holds through this fid
//!   ([`Lock`], at most [`MAX_LOCKS`]; a board past that loses only that
//!   fid's recoverability); recovery re-acquires them. No allocation while
//!   empty. The `client_id` of the board's Tlock (its host name) is kept once
//!   per table.
//! - **unreplayable**: recovery cannot rebuild this fid (an attribute fid,
//!   a name recovery cannot walk again, more locks than it keeps); after a
//!   server restart it is lost.
//! - **lost**: recovery (issue 19) could not give this fid back its file
//!   (gone, replaced, unreachable): the forwarder answers every request on
//!   it with ESTALE and its Tclunk itself; the server no longer has it.
//!
//! Bounds: at most [`Limits::fids`] live fids, [`Limits::path_bytes`] bytes
//! of paths in all, [`MAX_ATTACHES`] attaches. Past a cap a *new* fid is
//! refused ([`Full`]): the caller answers the board with an error and logs
//! it; the table never grows past its caps. Fids are stored in a slab whose
//! freed entries keep their path buffer for the next fid, and a `HashMap`
//! from fid number to slot, so a lookup, a clunk or anything on the
//! read/write path (Tread, Twrite, Tclunk of a known fid) never allocates.
//!
//! It must never do I/O or decide what a board may do: `confine.rs` decides,
//! this module only remembers.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// qid type bits (include/net/9p/9p.h).
pub const QTDIR: u8 = 0x80;
pub const QTSYMLINK: u8 = 0x02;

/// The most attaches one session may hold at a time (the Linux client makes
/// one per user with `access=user`).
pub const MAX_ATTACHES: usize = 64;
/// Longest path a fid may have below its attach point (PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// Locks recovery keeps per fid.
pub const MAX_LOCKS: usize = 16;
/// Freed path buffers larger than this are released, not kept for reuse.
const KEEP_BUFFER: usize = 256;

/// The server's identity of a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Qid {
    pub kind: u8,
    pub version: u32,
    pub path: u64,
}

impl Qid {
    /// Bytes of a qid on the wire.
    pub const LEN: usize = 13;

    /// Reads a qid from the first 13 bytes of `b`.
    pub fn parse(b: &[u8]) -> Option<Qid> {
        let b = b.get(..Qid::LEN)?;
        Some(Qid {
            kind: b[0],
            version: u32::from_le_bytes([b[1], b[2], b[3], b[4]]),
            path: u64::from_le_bytes([b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12]]),
        })
    }

    /// Writes the qid into the first 13 bytes of `out`.
    pub fn put(&self, out: &mut [u8]) {
        out[0] = self.kind;
        out[1..5].copy_from_slice(&self.version.to_le_bytes());
        out[5..13].copy_from_slice(&self.path.to_le_bytes());
    }

    pub fn is_symlink(&self) -> bool {
        self.kind & QTSYMLINK != 0
    }
}

/// One Tattach as the server saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attach {
    pub aname: Vec<u8>,
    pub uname: Vec<u8>,
    pub n_uname: u32,
    /// The qid of the attach root.
    pub root: Qid,
    /// Live fids walked from this attach.
    refs: u32,
}

/// Tlock types (P9_LOCK_TYPE_*).
pub const LOCK_RDLCK: u8 = 0;
pub const LOCK_WRLCK: u8 = 1;
pub const LOCK_UNLCK: u8 = 2;

/// A POSIX lock held through a fid (recovery re-acquires these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    pub kind: u8,
    pub start: u64,
    pub length: u64,
    pub proc_id: u32,
}

/// What the table knows of one fid.
#[derive(Clone, Debug, Default)]
pub struct Fid {
    pub attach: u16,
    path: Vec<u8>,
    pub depth: u16,
    pub qid: Qid,
    /// 9P2000.L open flags once `Tlopen`/`Tlcreate` succeeded.
    pub open: Option<u32>,
    pub stale: bool,
    pub xattr: bool,
    pub locks: Vec<Lock>,
    pub unreplayable: bool,
    pub lost: bool,
}

impl Fid {
    /// The path from the attach point: components joined by `/`, empty at
    /// the root.
    pub fn path(&self) -> &[u8] {
        &self.path
    }
}

/// Caps of one board's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub fids: usize,
    pub path_bytes: usize,
}

impl Default for Limits {
    /// A board with a root file system on 9P holds one fid per cached
    /// dentry: tens of thousands are normal. About 3 MiB per board at most.
    fn default() -> Limits {
        Limits { fids: 32768, path_bytes: 2 << 20 }
    }
}

/// The table is at a cap: a new fid (or a longer path) is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Full {
    #[error("the board holds {0} fids, the most usb9pfsd tracks for one board")]
    Fids(usize),
    #[error("the board's fids' paths take {0} bytes, the most usb9pfsd tracks for one board")]
    PathBytes(usize),
    #[error("a path below the attach point is longer than {MAX_PATH} bytes")]
    PathTooLong,
    #[error("the board holds {MAX_ATTACHES} attaches, the most usb9pfsd tracks")]
    Attaches,
}

/// Where a fid will be after a walk, create or attach: computed from the
/// request, committed from the reply.
#[derive(Clone, Debug, Default)]
pub struct Dest {
    pub path: Vec<u8>,
    pub depth: u16,
}

impl Dest {
    pub fn clear(&mut self) {
        self.path.clear();
        self.depth = 0;
    }

    /// Starts from an existing fid's path.
    pub fn start_at(&mut self, f: &Fid) {
        self.path.clear();
        self.path.extend_from_slice(&f.path);
        self.depth = f.depth;
    }

    /// Appends a component (already checked: no `/`, NUL, `.` or `..`).
    pub fn push(&mut self, name: &[u8]) {
        if !self.path.is_empty() {
            self.path.push(b'/');
        }
        self.path.extend_from_slice(name);
        self.depth += 1;
    }

    /// `..` for a board that may walk above its attach point (unconfined):
    /// one component up, or one more `..` at the root or after a `..`.
    pub fn up(&mut self) {
        let last = self.path.rsplit(|&b| b == b'/').next().unwrap_or(b"");
        if self.depth == 0 || last == b".." {
            self.push(b"..");
        } else {
            self.pop();
        }
    }

    /// Goes one component up; false (and no change) at the root.
    pub fn pop(&mut self) -> bool {
        if self.depth == 0 {
            return false;
        }
        let cut = self.path.iter().rposition(|&b| b == b'/').unwrap_or(0);
        self.path.truncate(cut);
        self.depth -= 1;
        true
    }
}

/// The fid table of one board's session.
#[derive(Debug, Default)]
pub struct FidTable {
    limits: Limits,
    slots: Vec<Fid>,
    free: Vec<u32>,
    by_fid: HashMap<u32, u32>,
    attaches: Vec<Attach>,
    path_bytes: usize,
    /// Fids marked lost by the last recovery and not clunked yet.
    lost: usize,
    /// The board's Tlock client_id (one per board).
    pub client_id: Vec<u8>,
}

impl FidTable {
    pub fn new(limits: Limits) -> FidTable {
        FidTable { limits, ..FidTable::default() }
    }

    /// Forgets everything (a new Tversion: the server forgot too).
    pub fn clear(&mut self) {
        for &slot in self.by_fid.values() {
            self.free.push(slot);
        }
        self.by_fid.clear();
        for s in &mut self.slots {
            s.path.clear();
            s.locks.clear();
        }
        self.attaches.clear();
        self.path_bytes = 0;
        self.lost = 0;
    }

    /// Fids lost by recovery and not clunked yet: while this is zero the
    /// forwarder never looks a request's fid up.
    pub fn lost(&self) -> usize {
        self.lost
    }

    /// Whether `fid` is one recovery lost.
    pub fn is_lost(&self, fid: u32) -> bool {
        self.lost > 0 && self.get(fid).is_some_and(|f| f.lost)
    }

    /// Recovery could not give `fid` its file back.
    pub fn mark_lost(&mut self, fid: u32) {
        let Some(f) = self.get_mut(fid) else { return };
        if !f.lost {
            f.lost = true;
            f.locks.clear();
            self.lost += 1;
        }
    }

    /// Recovery gave `fid` its file back on the new connection: the server
    /// knows it by its current path again, so it is no longer stale.
    pub fn replayed(&mut self, fid: u32) {
        if let Some(f) = self.get_mut(fid) {
            f.stale = false;
        }
    }

    /// Recovery cannot rebuild `fid` (see [`Fid::unreplayable`]).
    pub fn mark_unreplayable(&mut self, fid: u32) {
        if let Some(f) = self.get_mut(fid) {
            f.unreplayable = true;
            f.locks.clear();
        }
    }

    /// The board took (or, `kind` = unlock, released) a POSIX lock through
    /// `fid`. An unlock drops the fid's locks of that process that lie
    /// within its range; past [`MAX_LOCKS`] the fid becomes unreplayable.
    pub fn locked(&mut self, fid: u32, lock: Lock, client_id: &[u8]) {
        if self.client_id != client_id {
            self.client_id.clear();
            self.client_id.extend_from_slice(client_id);
        }
        let Some(f) = self.get_mut(fid) else { return };
        if f.unreplayable || f.lost {
            return;
        }
        if lock.kind == LOCK_UNLCK {
            let end = |start: u64, len: u64| if len == 0 { u64::MAX } else { start.saturating_add(len) };
            let (us, ue) = (lock.start, end(lock.start, lock.length));
            f.locks.retain(|l| !(l.proc_id == lock.proc_id && l.start >= us && end(l.start, l.length) <= ue));
            return;
        }
        if f.locks.len() >= MAX_LOCKS {
            f.unreplayable = true;
            f.locks.clear();
            return;
        }
        f.locks.push(lock);
    }

    pub fn len(&self) -> usize {
        self.by_fid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_fid.is_empty()
    }

    pub fn path_bytes(&self) -> usize {
        self.path_bytes
    }

    pub fn get(&self, fid: u32) -> Option<&Fid> {
        self.by_fid.get(&fid).map(|&s| &self.slots[s as usize])
    }

    fn get_mut(&mut self, fid: u32) -> Option<&mut Fid> {
        let s = *self.by_fid.get(&fid)?;
        Some(&mut self.slots[s as usize])
    }

    /// The attaches fids live under, with their index.
    pub fn live_attaches(&self) -> impl Iterator<Item = (u16, &Attach)> {
        self.attaches.iter().enumerate().filter(|(_, a)| a.refs > 0).map(|(i, a)| (i as u16, a))
    }

    pub fn attach_of(&self, f: &Fid) -> Option<&Attach> {
        self.attaches.get(f.attach as usize)
    }

    /// Every fid with its number (for recovery's replay, and tests).
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Fid)> {
        self.by_fid.iter().map(|(&n, &s)| (n, &self.slots[s as usize]))
    }

    /// Whether `fid` may become (or be replaced by) a fid with a path of
    /// `path_len` bytes without passing a cap.
    pub fn room_for(&self, fid: u32, path_len: usize) -> Result<(), Full> {
        if path_len > MAX_PATH {
            return Err(Full::PathTooLong);
        }
        let old = self.get(fid).map(|f| f.path.len());
        if old.is_none() && self.by_fid.len() >= self.limits.fids {
            return Err(Full::Fids(self.by_fid.len()));
        }
        let after = self.path_bytes - old.unwrap_or(0) + path_len;
        if after > self.limits.path_bytes {
            return Err(Full::PathBytes(self.path_bytes));
        }
        Ok(())
    }

    /// Registers an attach the server accepted; returns its index. An
    /// identical live one is shared.
    pub fn add_attach(&mut self, aname: &[u8], uname: &[u8], n_uname: u32, root: Qid) -> Result<u16, Full> {
        let same = |a: &Attach| a.refs > 0 && a.aname == aname && a.uname == uname && a.n_uname == n_uname && a.root == root;
        if let Some(i) = self.attaches.iter().position(same) {
            return Ok(i as u16);
        }
        let a = Attach { aname: aname.to_vec(), uname: uname.to_vec(), n_uname, root, refs: 0 };
        if let Some(i) = self.attaches.iter().position(|a| a.refs == 0) {
            self.attaches[i] = a;
            return Ok(i as u16);
        }
        if self.attaches.len() >= MAX_ATTACHES {
            return Err(Full::Attaches);
        }
        self.attaches.push(a);
        Ok((self.attaches.len() - 1) as u16)
    }

    /// Makes `fid` a fid of `attach` at `dest` with `qid`, replacing what it
    /// was (a walk in place, Tlcreate). The caller checked [`room_for`].
    ///
    /// [`room_for`]: FidTable::room_for
    pub fn set(&mut self, fid: u32, attach: u16, dest: &Dest, qid: Qid) {
        self.release(fid);
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Fid::default());
                // Room in the free list for every slot, so that a release
                // (Tclunk) never allocates.
                let want = self.slots.len() - self.free.len();
                self.free.reserve(want);
                (self.slots.len() - 1) as u32
            }
        };
        let f = &mut self.slots[slot as usize];
        f.attach = attach;
        f.path.clear();
        f.path.extend_from_slice(&dest.path);
        f.depth = dest.depth;
        f.qid = qid;
        f.open = None;
        f.stale = false;
        f.xattr = false;
        f.unreplayable = false;
        f.lost = false;
        f.locks.clear();
        self.path_bytes += dest.path.len();
        if let Some(a) = self.attaches.get_mut(attach as usize) {
            a.refs += 1;
        }
        self.by_fid.insert(fid, slot);
    }

    /// A copy of `from` as `to` (Txattrwalk's attribute fid, a walk of no
    /// names). The caller checked [`room_for`](FidTable::room_for).
    pub fn clone_fid(&mut self, from: u32, to: u32, xattr: bool) {
        let Some(f) = self.get(from) else { return };
        let (attach, qid, stale, unreplayable) = (f.attach, f.qid, f.stale, f.unreplayable);
        let mut dest = Dest::default();
        dest.start_at(f);
        self.set(to, attach, &dest, qid);
        if let Some(t) = self.get_mut(to) {
            t.stale = stale;
            t.xattr = xattr;
            t.unreplayable = unreplayable;
        }
    }

    /// The fid was opened with these 9P2000.L flags; the server's qid.
    pub fn opened(&mut self, fid: u32, flags: u32, qid: Qid) {
        if let Some(f) = self.get_mut(fid) {
            f.open = Some(flags);
            f.qid = qid;
        }
    }

    /// Marks a fid an attribute fid (Txattrcreate).
    pub fn set_xattr(&mut self, fid: u32) {
        if let Some(f) = self.get_mut(fid) {
            f.xattr = true;
        }
    }

    /// Forgets `fid` (Tclunk, Tremove). Never allocates.
    pub fn release(&mut self, fid: u32) {
        let Some(slot) = self.by_fid.remove(&fid) else { return };
        let f = &mut self.slots[slot as usize];
        self.path_bytes -= f.path.len();
        if f.lost {
            f.lost = false;
            self.lost -= 1;
        }
        if let Some(a) = self.attaches.get_mut(f.attach as usize) {
            a.refs = a.refs.saturating_sub(1);
        }
        f.path.clear();
        if f.path.capacity() > KEEP_BUFFER {
            f.path = Vec::new();
        }
        f.locks.clear();
        self.free.push(slot);
    }

    /// Calls `each` for every fid of `attach` at `path` or below it.
    fn for_under(&mut self, attach: u16, path: &[u8], mut each: impl FnMut(u32, &mut Fid)) {
        for (&n, &s) in &self.by_fid {
            let f = &mut self.slots[s as usize];
            if f.attach == attach && is_at_or_below(&f.path, path) {
                each(n, f);
            }
        }
    }

    /// The file at `path` (of `attach`) is gone or replaced: every fid at it
    /// or below becomes stale (Tunlinkat, a rename over it).
    pub fn unlinked(&mut self, attach: u16, path: &[u8]) {
        self.for_under(attach, path, |_, f| f.stale = true);
    }

    /// The board renamed `from` to `to` (both of `attach`): every fid at or
    /// below `from` moves below `to`, and is marked stale unless it is
    /// `keep` (the fid a Trename named: the server moved that one too). What
    /// was at `to` is replaced. The caller checked the result's length with
    /// [`rename_room`](FidTable::rename_room).
    pub fn renamed(&mut self, attach: u16, from: &[u8], to: &[u8], keep: Option<u32>) {
        if from == to {
            return;
        }
        // Replaced first, so the moved fids are not marked with them.
        self.unlinked(attach, to);
        let to_depth = depth_of(to);
        let from_depth = depth_of(from);
        let mut grown: isize = 0;
        self.for_under(attach, from, |n, f| {
            let mut p = Vec::with_capacity(to.len() + f.path.len() - from.len());
            p.extend_from_slice(to);
            p.extend_from_slice(&f.path[from.len()..]);
            grown += p.len() as isize - f.path.len() as isize;
            f.depth = f.depth - from_depth + to_depth;
            f.path = p;
            // A fid the rename did not name still has the old path on a
            // path-based server; its new path is what recovery walks.
            if Some(n) != keep {
                f.stale = true;
            }
        });
        self.path_bytes = (self.path_bytes as isize + grown) as usize;
    }

    /// Whether moving everything below `from` to `to` stays within the caps.
    pub fn rename_room(&self, attach: u16, from: &[u8], to: &[u8]) -> Result<(), Full> {
        let mut grown: isize = 0;
        for (_, f) in self.iter() {
            if f.attach == attach && is_at_or_below(&f.path, from) {
                let len = f.path.len() - from.len() + to.len();
                if len > MAX_PATH {
                    return Err(Full::PathTooLong);
                }
                grown += to.len() as isize - from.len() as isize;
            }
        }
        if (self.path_bytes as isize + grown) as usize > self.limits.path_bytes {
            return Err(Full::PathBytes(self.path_bytes));
        }
        Ok(())
    }
}

/// A fid table as it crosses a hand-over (`daemon/handover.rs`), so a
/// confined session stays confined, and recoverable, in the successor.
/// Byte strings (a board's names need not be UTF-8) travel as hex.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRecord {
    /// By index: a fid's `attach` names one.
    pub attaches: Vec<AttachRecord>,
    pub fids: Vec<FidRecord>,
    /// The board's Tlock client_id (hex); absent from older records.
    #[serde(default)]
    pub client_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRecord {
    pub aname: String,
    pub uname: String,
    pub n_uname: u32,
    /// kind, version, path.
    pub root: (u8, u32, u64),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FidRecord {
    pub fid: u32,
    pub attach: u16,
    pub path: String,
    pub qid: (u8, u32, u64),
    pub open: Option<u32>,
    pub stale: bool,
    pub xattr: bool,
    /// The fields below are absent from records older than recovery.
    #[serde(default)]
    pub unreplayable: bool,
    #[serde(default)]
    pub lost: bool,
    /// kind, start, length, proc_id.
    #[serde(default)]
    pub locks: Vec<(u8, u64, u64, u32)>,
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || s.len() > 2 * MAX_PATH {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn qid_of(q: (u8, u32, u64)) -> Qid {
    Qid { kind: q.0, version: q.1, path: q.2 }
}

impl FidTable {
    /// The table as it crosses a hand-over.
    pub fn record(&self) -> TableRecord {
        let q = |q: &Qid| (q.kind, q.version, q.path);
        let mut fids: Vec<FidRecord> = self
            .iter()
            .map(|(fid, f)| FidRecord {
                fid,
                attach: f.attach,
                path: hex(&f.path),
                qid: q(&f.qid),
                open: f.open,
                stale: f.stale,
                xattr: f.xattr,
                unreplayable: f.unreplayable,
                lost: f.lost,
                locks: f.locks.iter().map(|l| (l.kind, l.start, l.length, l.proc_id)).collect(),
            })
            .collect();
        // In fid order, so the same table always writes the same record.
        fids.sort_unstable_by_key(|f| f.fid);
        TableRecord {
            attaches: self
                .attaches
                .iter()
                .map(|a| AttachRecord { aname: hex(&a.aname), uname: hex(&a.uname), n_uname: a.n_uname, root: q(&a.root) })
                .collect(),
            fids,
            client_id: hex(&self.client_id),
        }
    }

    /// A table from a predecessor's record, checked as if a board had sent
    /// it: every path made of plain components, every attach index real,
    /// within the caps, no fid twice. Err says why it was refused.
    /// `up`: a path may begin with `..` components (an unconfined board's
    /// walk above its attach point; never for a confined one).
    pub fn from_record(r: &TableRecord, limits: Limits, up: bool) -> Result<FidTable, String> {
        if r.attaches.len() > MAX_ATTACHES || r.fids.len() > limits.fids {
            return Err(format!("{} attaches and {} fids are past the caps", r.attaches.len(), r.fids.len()));
        }
        let mut t = FidTable::new(limits);
        for a in &r.attaches {
            let (Some(aname), Some(uname)) = (unhex(&a.aname), unhex(&a.uname)) else {
                return Err("an attach's aname or uname is not hex".into());
            };
            t.attaches.push(Attach { aname, uname, n_uname: a.n_uname, root: qid_of(a.root), refs: 0 });
        }
        let mut dest = Dest::default();
        for f in &r.fids {
            let path = unhex(&f.path).ok_or("a fid's path is not hex")?;
            let plain = |c: &[u8]| !c.is_empty() && c != b"." && c != b".." && !c.contains(&0);
            let mut comps = path.split(|&b| b == b'/').skip_while(|c| up && *c == b"..");
            if !path.is_empty() && !comps.all(plain) {
                return Err(format!("fid {}'s path is not made of plain names", f.fid));
            }
            if f.locks.len() > MAX_LOCKS {
                return Err(format!("fid {} holds more than {MAX_LOCKS} locks", f.fid));
            }
            if f.attach as usize >= t.attaches.len() || t.get(f.fid).is_some() {
                return Err(format!("fid {} names no attach, or comes twice", f.fid));
            }
            t.room_for(f.fid, path.len()).map_err(|e| e.to_string())?;
            dest.path = path;
            dest.depth = depth_of(&dest.path);
            t.set(f.fid, f.attach, &dest, qid_of(f.qid));
            if let Some(x) = t.get_mut(f.fid) {
                x.open = f.open;
                x.stale = f.stale;
                x.xattr = f.xattr;
                x.unreplayable = f.unreplayable;
                x.locks = f.locks.iter().map(|&(kind, start, length, proc_id)| Lock { kind, start, length, proc_id }).collect();
            }
            if f.lost {
                t.mark_lost(f.fid);
            }
        }
        t.client_id = unhex(&r.client_id).ok_or("the lock client id is not hex")?;
        Ok(t)
    }

    /// Checks the table's own bookkeeping (for tests and the fuzz targets):
    /// the byte and lost counts, attach references, depths and the caps.
    #[doc(hidden)]
    pub fn check(&self) -> Result<(), String> {
        let (mut bytes, mut lost) = (0usize, 0usize);
        let mut refs = vec![0u32; self.attaches.len()];
        for (n, f) in self.iter() {
            bytes += f.path.len();
            lost += usize::from(f.lost);
            *refs.get_mut(f.attach as usize).ok_or(format!("fid {n} names attach {} of {}", f.attach, self.attaches.len()))? += 1;
            if f.depth != depth_of(&f.path) {
                return Err(format!("fid {n}: depth {} for path {:?}", f.depth, String::from_utf8_lossy(&f.path)));
            }
            if f.path.len() > MAX_PATH || f.locks.len() > MAX_LOCKS {
                return Err(format!("fid {n} past a per-fid cap"));
            }
        }
        if bytes != self.path_bytes || lost != self.lost {
            return Err(format!("counted {bytes} path bytes and {lost} lost, kept {} and {}", self.path_bytes, self.lost));
        }
        if self.len() > self.limits.fids || self.path_bytes > self.limits.path_bytes || self.attaches.len() > MAX_ATTACHES {
            return Err("past the table's caps".into());
        }
        for (i, a) in self.attaches.iter().enumerate() {
            if a.refs != refs[i] {
                return Err(format!("attach {i} counts {} fids, {} refer to it", a.refs, refs[i]));
            }
        }
        Ok(())
    }

    /// The anames of the attaches fids live under.
    pub fn anames(&self) -> impl Iterator<Item = &[u8]> {
        self.attaches.iter().filter(|a| a.refs > 0).map(|a| a.aname.as_slice())
    }
}

fn depth_of(path: &[u8]) -> u16 {
    if path.is_empty() {
        0
    } else {
        path.iter().filter(|&&b| b == b'/').count() as u16 + 1
    }
}

/// `path` is `base` or lies below it, by components.
pub fn is_at_or_below(path: &[u8], base: &[u8]) -> bool {
    if base.is_empty() {
        return true;
    }
    path.starts_with(base) && (path.len() == base.len() || path[base.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qid(path: u64, kind: u8) -> Qid {
        Qid { kind, version: 0, path }
    }

    fn dest(p: &str) -> Dest {
        let mut d = Dest::default();
        for c in p.split('/').filter(|c| !c.is_empty()) {
            d.push(c.as_bytes());
        }
        d
    }

    fn path_of(t: &FidTable, fid: u32) -> String {
        String::from_utf8_lossy(t.get(fid).expect("fid").path()).into_owned()
    }

    fn table() -> (FidTable, u16) {
        let mut t = FidTable::new(Limits { fids: 8, path_bytes: 64 });
        let a = t.add_attach(b"/srv/a", b"", 1000, qid(1, QTDIR)).expect("attach");
        t.set(0, a, &dest(""), qid(1, QTDIR));
        (t, a)
    }

    #[test]
    fn dest_push_and_pop_stop_at_the_root() {
        let mut d = dest("a/bb/c");
        assert_eq!((d.path.as_slice(), d.depth), (&b"a/bb/c"[..], 3));
        assert!(d.pop() && d.pop());
        assert_eq!((d.path.as_slice(), d.depth), (&b"a"[..], 1));
        assert!(d.pop());
        assert!(!d.pop(), "the root has no parent");
        assert_eq!((d.path.as_slice(), d.depth), (&b""[..], 0));
    }

    #[test]
    fn renames_move_every_fid_below_and_mark_the_unnamed_ones_stale() {
        let (mut t, a) = table();
        t.set(1, a, &dest("d"), qid(2, QTDIR));
        t.set(2, a, &dest("d/e/f"), qid(3, 0));
        t.set(3, a, &dest("dd"), qid(4, QTDIR)); // not below "d" by components
        t.set(4, a, &dest("x/y"), qid(5, 0)); // replaced by the rename
        let before = t.path_bytes();
        t.rename_room(a, b"d", b"x/y").expect("room");
        t.renamed(a, b"d", b"x/y", Some(1));
        assert_eq!(path_of(&t, 1), "x/y");
        assert_eq!(path_of(&t, 2), "x/y/e/f");
        assert_eq!(t.get(2).map(|f| (f.depth, f.stale)), Some((4, true)));
        assert_eq!(t.get(1).map(|f| (f.depth, f.stale)), Some((2, false)), "the renamed fid itself follows");
        assert_eq!(path_of(&t, 3), "dd");
        assert!(!t.get(3).expect("dd").stale);
        assert!(t.get(4).expect("replaced").stale, "what was at the target is gone");
        assert_eq!(t.path_bytes(), before + 2 * 2, "two fids, each 2 bytes longer");
    }

    #[test]
    fn unlink_marks_the_path_and_below_stale() {
        let (mut t, a) = table();
        t.set(1, a, &dest("d"), qid(2, QTDIR));
        t.set(2, a, &dest("d/f"), qid(3, 0));
        t.set(3, a, &dest("e"), qid(4, 0));
        t.unlinked(a, b"d");
        assert!(t.get(1).expect("d").stale && t.get(2).expect("f").stale);
        assert!(!t.get(3).expect("e").stale && !t.get(0).expect("root").stale);
    }

    #[test]
    fn caps_refuse_new_fids_and_long_paths_but_not_replacements() {
        let (mut t, a) = table();
        for n in 1..8 {
            t.room_for(n, 1).expect("room");
            t.set(n, a, &dest("f"), qid(9, 0));
        }
        assert_eq!(t.room_for(8, 1), Err(Full::Fids(8)));
        t.room_for(3, 10).expect("a walk in place needs no new fid");
        assert_eq!(t.room_for(3, 60), Err(Full::PathBytes(7)));
        assert_eq!(t.room_for(3, MAX_PATH + 1), Err(Full::PathTooLong));
        t.release(3);
        t.room_for(8, 1).expect("room after a clunk");
        assert_eq!(t.path_bytes(), 6);
    }

    #[test]
    fn clunk_and_reuse_keep_the_count_and_the_attach_refs() {
        let (mut t, a) = table();
        t.set(1, a, &dest("a/b"), qid(2, 0));
        t.clone_fid(1, 2, true);
        assert!(t.get(2).expect("xattr").xattr);
        assert_eq!(path_of(&t, 2), "a/b");
        t.set(1, a, &dest("c"), qid(3, 0)); // walk in place
        assert_eq!((t.len(), t.path_bytes()), (3, 4));
        t.release(1);
        t.release(2);
        t.release(0);
        assert!(t.is_empty());
        assert_eq!(t.path_bytes(), 0);
        // The attach is free again: a new one takes its place.
        let b = t.add_attach(b"/srv/a", b"", 0, qid(1, QTDIR)).expect("attach");
        assert_eq!(b, a);
        t.clear();
        assert!(t.is_empty());
    }

    #[test]
    fn a_table_crosses_as_a_record_and_a_bad_record_is_refused() {
        let (mut t, a) = table();
        t.set(1, a, &dest("d/\u{e9}"), qid(2, QTDIR));
        t.set(2, a, &dest("x"), qid(3, 0));
        t.opened(2, 2, qid(3, 0));
        t.unlinked(a, b"x");
        let r = t.record();
        let back = FidTable::from_record(&r, Limits::default(), false).expect("round trip");
        assert_eq!(back.record(), r);
        assert_eq!(back.get(2).map(|f| (f.open, f.stale, f.depth)), Some((Some(2), true, 1)));
        assert_eq!(back.anames().collect::<Vec<_>>(), vec![&b"/srv/a"[..]]);
        let refused = |f: &dyn Fn(&mut TableRecord)| {
            let mut bad = r.clone();
            f(&mut bad);
            FidTable::from_record(&bad, Limits::default(), false).expect_err("refused")
        };
        refused(&|b| b.fids[0].path = hex(b"a/../b"));
        refused(&|b| b.fids[0].path = hex(b"a//b"));
        refused(&|b| b.fids[0].path = "zz".into());
        refused(&|b| b.fids[0].attach = 9);
        refused(&|b| b.fids[1].fid = b.fids[0].fid);
        refused(&|b| b.fids[0].path = hex(&vec![b'n'; MAX_PATH + 1]));
        assert!(FidTable::from_record(&r, Limits { fids: 2, path_bytes: 64 }, false).is_err(), "past the caps");
    }

    #[test]
    fn at_or_below_is_by_components() {
        assert!(is_at_or_below(b"a/b", b"a"));
        assert!(is_at_or_below(b"a", b"a"));
        assert!(!is_at_or_below(b"ab", b"a"));
        assert!(is_at_or_below(b"anything", b""));
    }
}
