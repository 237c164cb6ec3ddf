//! Confinement of one board: what its config entry lets it reach on the
//! server (`export`, `read_only`, `uid`/`gid`), enforced on every 9P2000.L
//! T-message before the server sees it, and on the server's replies.
//!
//! The forwarder asks [`Confine::request`] about each T-message: it is
//! forwarded (perhaps rewritten in place: squashed ids, an aname turned into
//! the export, `..` at the root taken out of a walk) or refused with an errno
//! the forwarder answers itself. [`Confine::reply`] then sees the server's
//! R-message: it updates the fid table (`fids.rs`) and may rewrite the reply
//! (the qids of the `..` it took out) or ask for one more exchange with the
//! server first ([`After::Send`]: the walk below the export that an attach
//! below it needs, or a clunk of a fid that must not stay).
//!
//! Rules, each one because of a way out (see issue 18):
//! - Tattach: an empty aname means the export; an aname equal to the export
//!   or below it by components is allowed, anything else (or with a `.` or
//!   `..` component, or relative) is EACCES. The server is always asked for
//!   the export itself; a directory below it is reached by walking (Twalk
//!   never follows a symlink at its last name), never by a longer aname the
//!   server would resolve. Squash: n_uname becomes `uid`, uname empty.
//! - Twalk: every fid's path from the export root is known (`fids.rs`); a
//!   `..` at the root is taken out of the walk and answered with the root's
//!   qid, so no walk the server is sent ends above the export, whatever the
//!   server does with `..` at its export root. A walk whose reply shows it
//!   went *through* a symlink (a path-based server resolves intermediate
//!   names with the host's symlinks) fails with ELOOP and its new fid is
//!   clunked. A symlink fid is never walked from, opened, or used as a
//!   directory (ELOOP).
//! - Names (walk, create, rename, unlink, link, xattr) with `/` or NUL are
//!   EINVAL; empty, `.` and `..` as names of new or removed files too.
//! - A stale fid (its file renamed from under it, unlinked or replaced: a
//!   path-based server may now resolve its old path to something else) may
//!   only do what its open file descriptor does; anything by path is ESTALE.
//! - read_only: the write-class types and write-mode opens are EROFS.
//!   A Tremove is turned into a Tclunk (9P clunks the fid even when a remove
//!   fails) and then answered with the error.
//! - Tauth is EACCES; types outside 9P2000.L are EOPNOTSUPP; a Tversion for
//!   another dialect is answered "unknown" (`version_ok`).
//! - Caps: a new fid past the table's caps is ENFILE.
//! - With an export, Tmknod of a block or character device is EPERM: the
//!   server would open the host's device. (A device node already in the
//!   export is beyond a forwarder that sees no file modes: export from a
//!   file system mounted `nodev`.)
//!
//! Each kind of refusal is logged once per 9P session (the worker's span
//! names the board), and at most once a minute across sessions, so a board
//! cannot flood the journal; status counts every refusal.
//!
//! It must never do I/O or allocate on the read/write path: Tread, Twrite,
//! Tclunk and the other fd-based types are classified by their type byte and
//! at most one table lookup. It must never trust a length: every field is
//! read through a bounds-checked cursor, and a frame that does not parse is
//! refused (EINVAL) rather than forwarded unchecked.

use std::sync::Arc;

use crate::ninep::fids::{Dest, FidTable, Full, Limits, Qid, TableRecord, MAX_PATH};
use crate::ninep::frame::{self, HEADER_LEN, RLERROR};
use crate::ninep::wire::{Cursor, Writer};

// The 9P2000.L message types and limits live in frame.rs; re-exported for
// the modules and tests that name them through confinement.
pub use crate::ninep::frame::{
    good_name, MAXWELEM, NOFID, NONUNAME, TATTACH, TAUTH, TCLUNK, TFLUSH, TFSYNC, TGETATTR, TGETLOCK, TLCREATE, TLINK, TLOCK, TLOPEN,
    TMKDIR, TMKNOD, TREAD, TREADDIR, TREADLINK, TREMOVE, TRENAME, TRENAMEAT, TSETATTR, TSTATFS, TSYMLINK, TUNLINKAT, TVERSION, TWALK,
    TWRITE, TXATTRCREATE, TXATTRWALK,
};

/// 9P2000.L open flags (P9_DOTL_*).
const O_ACCMODE: u32 = 3;
const O_CREAT: u32 = 0o100;
const O_TRUNC: u32 = 0o1000;
const O_APPEND: u32 = 0o2000;
/// Tsetattr valid bits that change the owner.
const ATTR_UID: u32 = 2;
const ATTR_GID: u32 = 4;

const EPERM: u32 = libc::EPERM as u32;
const ENOENT: u32 = libc::ENOENT as u32;
const EBADF: u32 = libc::EBADF as u32;
const EACCES: u32 = libc::EACCES as u32;
const EBUSY: u32 = libc::EBUSY as u32;
const EINVAL: u32 = libc::EINVAL as u32;
const ENFILE: u32 = libc::ENFILE as u32;
const EROFS: u32 = libc::EROFS as u32;
const ENAMETOOLONG: u32 = libc::ENAMETOOLONG as u32;
const ELOOP: u32 = libc::ELOOP as u32;
const EOPNOTSUPP: u32 = libc::EOPNOTSUPP as u32;
const ESTALE: u32 = libc::ESTALE as u32;

/// What a board's config entry confines it to. `Default` confines nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The only tree the board may attach to: absolute, normalised.
    pub export: Option<String>,
    pub read_only: bool,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Policy {
    /// Whether this policy confines anything (if not, no [`Confine`] is kept).
    pub fn confines(&self) -> bool {
        self.export.is_some() || self.read_only || self.uid.is_some() || self.gid.is_some()
    }
}

/// Why a request was refused: one log line per kind and session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    ReadOnly,
    Attach,
    Name,
    Auth,
    Owner,
    Full,
    Symlink,
    Stale,
    Unsupported,
    Malformed,
    Fid,
    Root,
    Dialect,
    Device,
}

impl Refusal {
    fn what(self) -> &'static str {
        match self {
            Refusal::ReadOnly => "a change on a read-only board (read_only = true)",
            Refusal::Attach => "an attach outside the board's export",
            Refusal::Name => "a name with '/' or NUL, or '.', '..' or empty where a file is named",
            Refusal::Auth => "Tauth (confined boards attach without authentication)",
            Refusal::Owner => "an owner or group change (uid/gid squash)",
            Refusal::Full => "a new fid past the board's fid table caps",
            Refusal::Symlink => "a symlink used as a directory or opened, or walked through",
            Refusal::Stale => "a path operation on a fid whose file was renamed, unlinked or replaced",
            Refusal::Unsupported => "a message type outside 9P2000.L",
            Refusal::Malformed => "a malformed message",
            Refusal::Fid => "a fid the board never got",
            Refusal::Root => "removing or renaming the export's root",
            Refusal::Device => "creating a device node (opened through the server, it would be the host's device)",
            Refusal::Dialect => {
                "a 9P session in a dialect other than 9P2000.L: confinement (export, read_only, uid or gid in this board's entry) \
                 understands 9P2000.L only; mount with -o version=9p2000.L"
            }
        }
    }
}

/// What to do with a T-message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the first `len` bytes of the buffer (rewritten in place if needed).
    Forward(usize),
    /// Answer the board with this errno; the server never sees the request.
    Refuse(u32),
}

/// What to do with the server's reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Give the board the first `len` bytes of the reply buffer.
    Reply(usize),
    /// Send [`Confine::out`] to the server, then call [`Confine::followed`]
    /// with its reply.
    Send,
    /// Answer the board with this errno: a refusal (counted).
    Refuse(u32),
    /// Answer the board with this errno: the server's failure, passed on.
    Fail(u32),
}

/// What a forwarded request will do to the table once the server answers.
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
        board_n: u8,
        server_n: u8,
        clamped: u16,
    },
    Open {
        fid: u32,
        flags: u32,
    },
    Create {
        fid: u32,
        flags: u32,
    },
    /// `path_a` → `path_b`.
    Rename {
        attach: u16,
        keep: Option<u32>,
    },
    /// `path_a` is gone.
    Unlink {
        attach: u16,
    },
    Remove {
        fid: u32,
        fail: Option<u32>,
    },
    Clunk {
        fid: u32,
    },
    XattrWalk {
        fid: u32,
        newfid: u32,
    },
    XattrCreate {
        fid: u32,
    },
    /// A Tlock (recovery takes the board's locks again); its client id is
    /// in `path_b`.
    Lock {
        fid: u32,
        lock: LockArgs,
    },
}

#[derive(Clone, Copy, Debug)]
struct LockArgs {
    kind: u8,
    start: u64,
    length: u64,
    proc_id: u32,
}

/// An exchange of our own before the board gets its answer.
#[derive(Clone, Copy, Debug, Default)]
enum Follow {
    #[default]
    None,
    /// Walking the attach's fid down `dest`, from component `done`.
    AttachWalk { fid: u32, attach: u16, done: u16, sent: u8 },
    /// A clunk of a fid that must not stay; then the board gets `errno`.
    ClunkThenFail { errno: u32, refusal: bool },
}

/// One board's confinement state for one 9P session.
#[derive(Debug)]
pub struct Confine {
    policy: Arc<Policy>,
    /// The export's components, joined by `/` without the leading one.
    export: Vec<u8>,
    /// The fid table; kept only when there is an export to confine walks to.
    table: Option<FidTable>,
    /// A session this process did not see begin (handed over): its fids
    /// are unknown, so any path operation on them is ESTALE.
    untracked: bool,
    pending: Pending,
    follow: Follow,
    tag: u16,
    /// Where the pending walk, create or attach puts its fid.
    dest: Dest,
    path_a: Vec<u8>,
    path_b: Vec<u8>,
    /// The attach being made: aname, uname, n_uname as sent.
    att_aname: Vec<u8>,
    att_uname: Vec<u8>,
    att_n_uname: u32,
    /// Our own T-message for [`After::Send`].
    out: Vec<u8>,
    /// Kinds of refusal logged this session.
    logged: u32,
    /// When `logged` was last cleared: a new session clears it only if a
    /// minute has passed, so a board that remounts in a loop (at most one
    /// session per 2 s past its burst) still cannot flood the journal.
    logged_since: Option<std::time::Instant>,
}

/// How often the per-kind refusal log may start afresh.
const LOG_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

impl Confine {
    /// Confinement for a new session under `policy`.
    pub fn new(policy: Arc<Policy>, limits: Limits) -> Confine {
        let export = policy.export.as_deref().map(|e| e.trim_start_matches('/').as_bytes().to_vec()).unwrap_or_default();
        let table = policy.export.is_some().then(|| FidTable::new(limits));
        Confine {
            policy,
            export,
            table,
            untracked: false,
            pending: Pending::None,
            follow: Follow::None,
            tag: 0,
            dest: Dest::default(),
            path_a: Vec::new(),
            path_b: Vec::new(),
            att_aname: Vec::new(),
            att_uname: Vec::new(),
            att_n_uname: NONUNAME,
            out: Vec::new(),
            logged: 0,
            logged_since: None,
        }
    }

    /// Confinement for a live session whose beginning this process did not
    /// see: fids it does not know get ESTALE for anything by path.
    pub fn untracked(policy: Arc<Policy>, limits: Limits) -> Confine {
        Confine { untracked: true, ..Confine::new(policy, limits) }
    }

    /// A live session handed over with its predecessor's fid table: tracked
    /// again if the table is sound and every attach in it is to this
    /// policy's export; untracked (and logged) otherwise.
    pub fn resumed(policy: Arc<Policy>, limits: Limits, record: &TableRecord) -> Confine {
        let mut c = Confine::new(policy, limits);
        let why = match (FidTable::from_record(record, limits, false), c.policy.export.as_deref()) {
            (Err(why), _) => why,
            (Ok(_), None) => "this board's entry has no export now".into(),
            (Ok(t), Some(export)) if t.anames().all(|a| a == export.as_bytes()) => {
                tracing::info!(fids = t.len(), "the confined session goes on with its predecessor's fid table");
                c.table = Some(t);
                return c;
            }
            (Ok(_), Some(_)) => "its fids were attached to another export".into(),
        };
        tracing::warn!(
            "the handed-over fid table cannot be used ({why}): the session goes on untracked, \
             so anything by path on its old fids fails with ESTALE until the board mounts again"
        );
        c.untracked = true;
        c
    }

    /// The fid table as it crosses a hand-over; None for an untracked or
    /// export-less session.
    pub fn table_record(&self) -> Option<TableRecord> {
        self.table.as_ref().filter(|_| !self.untracked).map(FidTable::record)
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    pub fn table(&self) -> Option<&FidTable> {
        self.table.as_ref()
    }

    /// The table if it knows every fid of the session (recovery's source):
    /// None without an export or for a session handed over untracked.
    pub fn tracked_table_mut(&mut self) -> Option<&mut FidTable> {
        self.table.as_mut().filter(|_| !self.untracked)
    }

    pub fn tracked_table(&self) -> Option<&FidTable> {
        self.table.as_ref().filter(|_| !self.untracked)
    }

    /// A new 9P session (Tversion): the server forgets every fid, so do we.
    pub fn reset(&mut self) {
        if let Some(t) = &mut self.table {
            t.clear();
        }
        self.untracked = false;
        self.pending = Pending::None;
        self.follow = Follow::None;
        let now = std::time::Instant::now();
        let due = match self.logged_since {
            Some(t) => now.duration_since(t) >= LOG_AGAIN_AFTER,
            None => true,
        };
        if due {
            self.logged = 0;
            self.logged_since = Some(now);
        }
    }

    /// Whether a Tversion asks for the dialect confinement understands. If
    /// not, the forwarder answers with [`rversion_unknown`] and logs it.
    pub fn version_ok(t: &[u8]) -> bool {
        let Some(body) = t.get(HEADER_LEN..) else { return false };
        let mut c = Cursor::new(body);
        c.u32().is_some() && c.string() == Some(&b"9P2000.L"[..])
    }

    /// A Tversion for another dialect was answered "unknown": logged like
    /// any refusal.
    pub fn dialect_refused(&mut self) {
        self.refuse(Refusal::Dialect, 0, TVERSION, b"");
    }

    /// The T-message our own exchange sends ([`After::Send`]).
    pub fn out(&self) -> &[u8] {
        &self.out
    }

    fn refuse(&mut self, kind: Refusal, errno: u32, op: u8, detail: &[u8]) -> Verdict {
        let bit = 1u32 << (kind as u8);
        if self.logged & bit == 0 {
            self.logged |= bit;
            tracing::warn!(
                op = frame::type_name(op),
                asked = %String::from_utf8_lossy(&detail[..detail.len().min(256)]).escape_debug(),
                errno,
                "refused {} (logged once per 9P session and kind; status counts every refusal)",
                kind.what()
            );
        }
        Verdict::Refuse(errno)
    }

    /// Classifies the T-message in `buf[..n]` (a whole, size-checked frame),
    /// rewriting it in place if needed. `buf` may be longer than the frame:
    /// a rewritten Tattach may grow, never past `ceiling`.
    pub fn request(&mut self, buf: &mut [u8], n: usize, ceiling: u32) -> Verdict {
        self.pending = Pending::None;
        self.follow = Follow::None;
        let Some(h) = buf.get(..n).and_then(frame::header) else { return Verdict::Refuse(EINVAL) };
        self.tag = h.tag;
        let ro = self.policy.read_only;
        let kind = h.kind;
        match kind {
            // The read/write path: the type byte decides, no table lookup.
            TREAD | TREADDIR | TFSYNC | TGETLOCK | TFLUSH => Verdict::Forward(n),
            TLOCK => {
                if let (Some(_), Some((fid, l, client))) = (&self.table, crate::ninep::frame::tlock(&buf[..n])) {
                    self.path_b.clear();
                    self.path_b.extend_from_slice(client);
                    self.pending =
                        Pending::Lock { fid, lock: LockArgs { kind: l.kind, start: l.start, length: l.length, proc_id: l.proc_id } };
                }
                Verdict::Forward(n)
            }
            TWRITE if ro => self.refuse(Refusal::ReadOnly, EROFS, kind, b""),
            TWRITE => Verdict::Forward(n),
            TCLUNK => {
                if let Some(fid) = Cursor::new(&buf[HEADER_LEN..n]).u32() {
                    self.pending = Pending::Clunk { fid };
                }
                Verdict::Forward(n)
            }
            TAUTH => self.refuse(Refusal::Auth, EACCES, kind, b""),
            TATTACH => self.attach(buf, n, ceiling),
            TWALK => self.walk(buf, n, ceiling),
            TLOPEN => self.lopen(buf, n),
            TLCREATE | TSYMLINK | TMKNOD | TMKDIR | TRENAME | TRENAMEAT | TUNLINKAT | TLINK | TXATTRCREATE if ro => {
                self.refuse(Refusal::ReadOnly, EROFS, kind, b"")
            }
            TLCREATE | TSYMLINK | TMKNOD | TMKDIR => self.create(buf, n),
            TRENAME | TRENAMEAT => self.rename(buf, n),
            TUNLINKAT => self.unlinkat(buf, n),
            TLINK => self.link(buf, n),
            TREMOVE => self.remove(buf, n),
            TSETATTR => self.setattr(buf, n),
            TXATTRWALK | TXATTRCREATE => self.xattr(buf, n),
            TSTATFS | TREADLINK | TGETATTR => {
                let Some(fid) = Cursor::new(&buf[HEADER_LEN..n]).u32() else {
                    return self.refuse(Refusal::Malformed, EINVAL, kind, b"");
                };
                let need = match kind {
                    TREADLINK => Use::Link,
                    TGETATTR => Use::Stat,
                    _ => Use::Path,
                };
                match self.check_fid(fid, need) {
                    Ok(_) => Verdict::Forward(n),
                    Err((r, e)) => self.refuse(r, e, kind, b""),
                }
            }
            _ => self.refuse(Refusal::Unsupported, EOPNOTSUPP, kind, b""),
        }
    }

    /// Checks that `fid` may be used as `need` says. Without a table (no
    /// export) every fid may.
    fn check_fid(&self, fid: u32, need: Use) -> Result<Option<u16>, (Refusal, u32)> {
        let Some(t) = &self.table else { return Ok(None) };
        let Some(f) = t.get(fid) else {
            return Err(if self.untracked { (Refusal::Stale, ESTALE) } else { (Refusal::Fid, EBADF) });
        };
        let opened = f.open.is_some();
        match need {
            // What an open file descriptor does on a path-based server.
            Use::Stat | Use::Setattr if opened => return Ok(Some(f.attach)),
            _ => {}
        }
        if f.stale {
            return Err((Refusal::Stale, ESTALE));
        }
        if f.xattr && need != Use::Stat {
            return Err((Refusal::Fid, EBADF));
        }
        let symlink_ok = matches!(need, Use::Link | Use::Stat | Use::Source | Use::Clone);
        if f.qid.is_symlink() && !symlink_ok {
            return Err((Refusal::Symlink, ELOOP));
        }
        Ok(Some(f.attach))
    }

    fn attach(&mut self, buf: &mut [u8], n: usize, ceiling: u32) -> Verdict {
        let body = &buf[HEADER_LEN..n];
        let mut c = Cursor::new(body);
        let (Some(fid), Some(afid), Some(uname), Some(aname), Some(n_uname)) = (c.u32(), c.u32(), c.string(), c.string(), c.u32()) else {
            return self.refuse(Refusal::Malformed, EINVAL, TATTACH, b"");
        };
        if !c.done() {
            return self.refuse(Refusal::Malformed, EINVAL, TATTACH, b"");
        }
        self.dest.clear();
        // The aname as the server will see it, and what to walk below it.
        self.att_aname.clear();
        match &self.policy.export {
            None => self.att_aname.extend_from_slice(aname),
            Some(export) => {
                if !aname.is_empty() {
                    if let Err(()) = below(&self.export, aname, &mut self.dest) {
                        let asked = aname.to_vec();
                        return self.refuse(Refusal::Attach, EACCES, TATTACH, &asked);
                    }
                }
                self.att_aname.extend_from_slice(export.as_bytes());
                if let Some(t) = &self.table {
                    if let Err(e) = t.room_for(fid, self.dest.path.len()) {
                        return self.full(e, TATTACH);
                    }
                }
            }
        }
        self.att_uname.clear();
        match self.policy.uid {
            // Squash: the server is asked for uid N by number; an empty
            // uname makes a server that would use the name fail closed.
            Some(uid) => self.att_n_uname = uid,
            None => {
                self.att_uname.extend_from_slice(uname);
                self.att_n_uname = n_uname;
            }
        }
        // Rebuilt whole: its strings may change length.
        let len = HEADER_LEN + 4 + 4 + 2 + self.att_uname.len() + 2 + self.att_aname.len() + 4;
        if len > ceiling as usize || len > buf.len() || self.att_aname.len() > u16::MAX as usize {
            return self.refuse(Refusal::Attach, ENAMETOOLONG, TATTACH, b"");
        }
        let mut w = Writer::new(buf);
        w.header(len, TATTACH, self.tag);
        w.u32(fid);
        w.u32(afid);
        w.string(&self.att_uname);
        w.string(&self.att_aname);
        w.u32(self.att_n_uname);
        if self.table.is_some() {
            self.pending = Pending::Attach { fid };
        }
        Verdict::Forward(len)
    }

    fn full(&mut self, e: Full, op: u8) -> Verdict {
        let detail = e.to_string();
        // One path too long is the name's fault, not the table's.
        let errno = if e == Full::PathTooLong { ENAMETOOLONG } else { ENFILE };
        self.refuse(Refusal::Full, errno, op, detail.as_bytes())
    }

    fn walk(&mut self, buf: &mut [u8], n: usize, ceiling: u32) -> Verdict {
        let mut c = Cursor::new(&buf[HEADER_LEN..n]);
        let (Some(fid), Some(newfid), Some(nwname)) = (c.u32(), c.u32(), c.u16()) else {
            return self.refuse(Refusal::Malformed, EINVAL, TWALK, b"");
        };
        let nwname = nwname as usize;
        if nwname > MAXWELEM || 9 + Qid::LEN * nwname > ceiling as usize {
            return self.refuse(Refusal::Malformed, EINVAL, TWALK, b"");
        }
        // Offsets (in the frame) of each name's length field.
        let mut names = [(0usize, 0usize); MAXWELEM];
        for slot in names.iter_mut().take(nwname) {
            let at = HEADER_LEN + c.pos;
            let Some(name) = c.string() else {
                return self.refuse(Refusal::Malformed, EINVAL, TWALK, b"");
            };
            if name != b".." && !good_name(name) {
                let asked = name.to_vec();
                return self.refuse(Refusal::Name, EINVAL, TWALK, &asked);
            }
            *slot = (at, name.len());
        }
        if !c.done() {
            return self.refuse(Refusal::Malformed, EINVAL, TWALK, b"");
        }
        let Some(t) = &self.table else { return Verdict::Forward(n) };
        let need = if nwname == 0 { Use::Clone } else { Use::Dir };
        if let Err((r, e)) = self.check_fid(fid, need) {
            return self.refuse(r, e, TWALK, b"");
        }
        let Some(f) = t.get(fid) else { return Verdict::Refuse(EBADF) };
        self.dest.start_at(f);
        let mut clamped = 0u16;
        for (i, &(at, len)) in names.iter().enumerate().take(nwname) {
            let name = &buf[at + 2..at + 2 + len];
            if name == b".." {
                if !self.dest.pop() {
                    // `..` at the export's root is the root: never asked of
                    // the server, whose idea of `..` there is its own.
                    clamped |= 1 << i;
                }
            } else {
                self.dest.push(name);
            }
        }
        if let Err(e) = t.room_for(newfid, self.dest.path.len()) {
            return self.full(e, TWALK);
        }
        let server_n = nwname - clamped.count_ones() as usize;
        let mut len = n;
        if clamped != 0 {
            // Take the clamped names out, in place (the frame only shrinks).
            let mut to = HEADER_LEN + 10;
            for (i, &(at, nlen)) in names.iter().enumerate().take(nwname) {
                if clamped & (1 << i) == 0 {
                    buf.copy_within(at..at + 2 + nlen, to);
                    to += 2 + nlen;
                }
            }
            len = to;
            buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
            buf[HEADER_LEN + 8..HEADER_LEN + 10].copy_from_slice(&(server_n as u16).to_le_bytes());
        }
        self.pending = Pending::Walk { fid, newfid, board_n: nwname as u8, server_n: server_n as u8, clamped };
        Verdict::Forward(len)
    }

    fn lopen(&mut self, buf: &mut [u8], n: usize) -> Verdict {
        let mut c = Cursor::new(&buf[HEADER_LEN..n]);
        let (Some(fid), Some(flags)) = (c.u32(), c.u32()) else {
            return self.refuse(Refusal::Malformed, EINVAL, TLOPEN, b"");
        };
        if self.policy.read_only && writes(flags) {
            return self.refuse(Refusal::ReadOnly, EROFS, TLOPEN, b"");
        }
        if let Err((r, e)) = self.check_fid(fid, Use::Path) {
            return self.refuse(r, e, TLOPEN, b"");
        }
        if self.table.is_some() {
            self.pending = Pending::Open { fid, flags };
        }
        Verdict::Forward(n)
    }

    /// Tlcreate, Tsymlink, Tmknod, Tmkdir: a new name in a directory fid,
    /// and a gid to squash.
    fn create(&mut self, buf: &mut [u8], n: usize) -> Verdict {
        let kind = buf[4];
        let mut c = Cursor::new(&buf[HEADER_LEN..n]);
        let (Some(dfid), Some(name)) = (c.u32(), c.string()) else {
            return self.refuse(Refusal::Malformed, EINVAL, kind, b"");
        };
        if !good_name(name) {
            let asked = name.to_vec();
            return self.refuse(Refusal::Name, EINVAL, kind, &asked);
        }
        let name_at = HEADER_LEN + 4 + 2;
        let name_len = name.len();
        // The fields after the name, up to the gid.
        let mut flags = 0;
        match kind {
            TLCREATE => {
                let (Some(f), Some(_mode)) = (c.u32(), c.u32()) else {
                    return self.refuse(Refusal::Malformed, EINVAL, kind, b"");
                };
                flags = f;
            }
            TSYMLINK => {
                let Some(target) = c.string() else {
                    return self.refuse(Refusal::Malformed, EINVAL, kind, b"");
                };
                if target.contains(&0) || target.is_empty() {
                    return self.refuse(Refusal::Name, EINVAL, kind, b"");
                }
            }
            TMKNOD => {
                let (Some(mode), Some(_major), Some(_minor)) = (c.u32(), c.u32(), c.u32()) else {
                    return self.refuse(Refusal::Malformed, EINVAL, kind, b"");
                };
                // A device node in the export is the host's device once the
                // server opens it: FIFOs and sockets only.
                let fmt = mode & libc::S_IFMT;
                if self.table.is_some() && (fmt == libc::S_IFCHR || fmt == libc::S_IFBLK) {
                    let asked = buf[name_at..name_at + name_len].to_vec();
                    return self.refuse(Refusal::Device, EPERM, kind, &asked);
                }
            }
            _ => {
                if c.u32().is_none() {
                    return self.refuse(Refusal::Malformed, EINVAL, kind, b"");
                }
            }
        }
        let gid_at = HEADER_LEN + c.pos;
        if c.u32().is_none() || !c.done() {
            return self.refuse(Refusal::Malformed, EINVAL, kind, b"");
        }
        if let Err((r, e)) = self.check_fid(dfid, Use::Dir) {
            return self.refuse(r, e, kind, b"");
        }
        if let Some(t) = &self.table {
            if kind == TLCREATE {
                // The fid becomes the new file.
                let Some(f) = t.get(dfid) else { return Verdict::Refuse(EBADF) };
                self.dest.start_at(f);
                self.dest.push(&buf[name_at..name_at + name_len]);
                if let Err(e) = t.room_for(dfid, self.dest.path.len()) {
                    return self.full(e, kind);
                }
                self.pending = Pending::Create { fid: dfid, flags };
            }
        }
        if let Some(gid) = self.policy.gid {
            buf[gid_at..gid_at + 4].copy_from_slice(&gid.to_le_bytes());
        }
        Verdict::Forward(n)
    }

    /// `path_a`/`path_b` = the path of `dfid` plus `name`, for a rename or
    /// unlink's bookkeeping.
    fn path_in(&mut self, which_b: bool, dfid: u32, name_at: usize, name_len: usize, buf: &[u8]) -> Result<(), Full> {
        let Some(t) = &self.table else { return Ok(()) };
        let Some(f) = t.get(dfid) else { return Ok(()) };
        let p = if which_b { &mut self.path_b } else { &mut self.path_a };
        p.clear();
        p.extend_from_slice(f.path());
        if name_len > 0 {
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(&buf[name_at..name_at + name_len]);
        }
        if p.len() > MAX_PATH {
            return Err(Full::PathTooLong);
        }
        Ok(())
    }

    fn rename(&mut self, buf: &mut [u8], n: usize) -> Verdict {
        let kind = buf[4];
        let mut c = Cursor::new(&buf[HEADER_LEN..n]);
        // Trename: fid dfid name. Trenameat: olddirfid oldname newdirfid newname.
        let (from_fid, from_name, to_fid, to_name);
        if kind == TRENAME {
            let (Some(fid), Some(dfid)) = (c.u32(), c.u32()) else {
                return self.refuse(Refusal::Malformed, EINVAL, kind, b"");
            };
            let at = HEADER_LEN + c.pos;
            let Some(name) = c.string() else { return self.refuse(Refusal::Malformed, EINVAL, kind, b"") };
            (from_fid, from_name, to_fid, to_name) = (fid, (0, 0), dfid, (at + 2, name.len()));
        } else {
            let Some(ofid) = c.u32() else { return self.refuse(Refusal::Malformed, EINVAL, kind, b"") };
            let oat = HEADER_LEN + c.pos;
            let Some(oname) = c.string() else { return self.refuse(Refusal::Malformed, EINVAL, kind, b"") };
            let olen = oname.len();
            let Some(nfid) = c.u32() else { return self.refuse(Refusal::Malformed, EINVAL, kind, b"") };
            let nat = HEADER_LEN + c.pos;
            let Some(nname) = c.string() else { return self.refuse(Refusal::Malformed, EINVAL, kind, b"") };
            (from_fid, from_name, to_fid, to_name) = (ofid, (oat + 2, olen), nfid, (nat + 2, nname.len()));
        }
        if !c.done() {
            return self.refuse(Refusal::Malformed, EINVAL, kind, b"");
        }
        for (at, len) in [from_name, to_name] {
            if at != 0 && !good_name(&buf[at..at + len]) {
                let asked = buf[at..at + len].to_vec();
                return self.refuse(Refusal::Name, EINVAL, kind, &asked);
            }
        }
        let from_use = if kind == TRENAME { Use::Source } else { Use::Dir };
        let attach = match (self.check_fid(from_fid, from_use), self.check_fid(to_fid, Use::Dir)) {
            (Err((r, e)), _) | (_, Err((r, e))) => return self.refuse(r, e, kind, b""),
            (Ok(a), Ok(_)) => a,
        };
        let Some(attach) = attach else { return Verdict::Forward(n) };
        if kind == TRENAME && self.table.as_ref().and_then(|t| t.get(from_fid)).is_some_and(|f| f.depth == 0) {
            return self.refuse(Refusal::Root, EBUSY, kind, b"");
        }
        let room = self
            .path_in(false, from_fid, from_name.0, from_name.1, buf)
            .and_then(|()| self.path_in(true, to_fid, to_name.0, to_name.1, buf));
        let room = room.and_then(|()| match &self.table {
            Some(t) => t.rename_room(attach, &self.path_a, &self.path_b),
            None => Ok(()),
        });
        if let Err(e) = room {
            return self.full(e, kind);
        }
        let keep = (kind == TRENAME).then_some(from_fid);
        self.pending = Pending::Rename { attach, keep };
        Verdict::Forward(n)
    }

    fn unlinkat(&mut self, buf: &mut [u8], n: usize) -> Verdict {
        let mut c = Cursor::new(&buf[HEADER_LEN..n]);
        let Some(dfid) = c.u32() else { return self.refuse(Refusal::Malformed, EINVAL, TUNLINKAT, b"") };
        let at = HEADER_LEN + c.pos + 2;
        let (Some(name), Some(_flags)) = (c.string(), c.u32()) else {
            return self.refuse(Refusal::Malformed, EINVAL, TUNLINKAT, b"");
        };
        let len = name.len();
        if !good_name(name) {
            let asked = name.to_vec();
            return self.refuse(Refusal::Name, EINVAL, TUNLINKAT, &asked);
        }
        if !c.done() {
            return self.refuse(Refusal::Malformed, EINVAL, TUNLINKAT, b"");
        }
        match self.check_fid(dfid, Use::Dir) {
            Err((r, e)) => self.refuse(r, e, TUNLINKAT, b""),
            Ok(None) => Verdict::Forward(n),
            Ok(Some(attach)) => {
                if let Err(e) = self.path_in(false, dfid, at, len, buf) {
                    return self.full(e, TUNLINKAT);
                }
                self.pending = Pending::Unlink { attach };
                Verdict::Forward(n)
            }
        }
    }

    fn link(&mut self, buf: &mut [u8], n: usize) -> Verdict {
        let mut c = Cursor::new(&buf[HEADER_LEN..n]);
        let (Some(dfid), Some(fid), Some(name)) = (c.u32(), c.u32(), c.string()) else {
            return self.refuse(Refusal::Malformed, EINVAL, TLINK, b"");
        };
        if !good_name(name) {
            let asked = name.to_vec();
            return self.refuse(Refusal::Name, EINVAL, TLINK, &asked);
        }
        if !c.done() {
            return self.refuse(Refusal::Malformed, EINVAL, TLINK, b"");
        }
        match (self.check_fid(dfid, Use::Dir), self.check_fid(fid, Use::Source)) {
            (Err((r, e)), _) | (_, Err((r, e))) => self.refuse(r, e, TLINK, b""),
            _ => Verdict::Forward(n),
        }
    }

    fn remove(&mut self, buf: &mut [u8], n: usize) -> Verdict {
        let Some(fid) = Cursor::new(&buf[HEADER_LEN..n]).u32() else {
            return self.refuse(Refusal::Malformed, EINVAL, TREMOVE, b"");
        };
        let mut fail = None;
        if self.policy.read_only {
            fail = Some((Refusal::ReadOnly, EROFS));
        } else if let Some(t) = &self.table {
            match t.get(fid) {
                Some(f) if f.depth == 0 => fail = Some((Refusal::Root, EBUSY)),
                Some(_) => fail = self.check_fid(fid, Use::Source).err(),
                None => {}
            }
        }
        if let Some((r, e)) = fail {
            // 9P clunks the fid even when the remove fails: a Tclunk (the
            // same body) does that without touching the file.
            self.refuse(r, e, TREMOVE, b"");
            buf[4] = TCLUNK;
        }
        if self.table.is_some() || fail.is_some() {
            self.pending = Pending::Remove { fid, fail: fail.map(|(_, e)| e) };
        }
        Verdict::Forward(n)
    }

    fn setattr(&mut self, buf: &mut [u8], n: usize) -> Verdict {
        let mut c = Cursor::new(&buf[HEADER_LEN..n]);
        let (Some(fid), Some(valid)) = (c.u32(), c.u32()) else {
            return self.refuse(Refusal::Malformed, EINVAL, TSETATTR, b"");
        };
        if self.policy.read_only {
            return self.refuse(Refusal::ReadOnly, EROFS, TSETATTR, b"");
        }
        let squashed = self.policy.uid.is_some() || self.policy.gid.is_some();
        if squashed && valid & (ATTR_UID | ATTR_GID) != 0 {
            return self.refuse(Refusal::Owner, EPERM, TSETATTR, b"");
        }
        match self.check_fid(fid, Use::Setattr) {
            Err((r, e)) => self.refuse(r, e, TSETATTR, b""),
            Ok(_) => Verdict::Forward(n),
        }
    }

    fn xattr(&mut self, buf: &mut [u8], n: usize) -> Verdict {
        let kind = buf[4];
        let mut c = Cursor::new(&buf[HEADER_LEN..n]);
        let Some(fid) = c.u32() else { return self.refuse(Refusal::Malformed, EINVAL, kind, b"") };
        let newfid = if kind == TXATTRWALK { c.u32() } else { Some(fid) };
        let (Some(newfid), Some(name)) = (newfid, c.string()) else {
            return self.refuse(Refusal::Malformed, EINVAL, kind, b"");
        };
        // An attribute name is not a path component, but still no '/' or NUL.
        if name.contains(&b'/') || name.contains(&0) {
            let asked = name.to_vec();
            return self.refuse(Refusal::Name, EINVAL, kind, &asked);
        }
        if let Err((r, e)) = self.check_fid(fid, Use::Path) {
            return self.refuse(r, e, kind, b"");
        }
        if let Some(t) = &self.table {
            if kind == TXATTRWALK {
                let len = t.get(fid).map_or(0, |f| f.path().len());
                if let Err(e) = t.room_for(newfid, len) {
                    return self.full(e, kind);
                }
                self.pending = Pending::XattrWalk { fid, newfid };
            } else {
                self.pending = Pending::XattrCreate { fid };
            }
        }
        Verdict::Forward(n)
    }

    /// Sees the server's reply `r[..len]` to the request last classified.
    /// `r` may be longer than the reply: a rewritten Rwalk may grow, never
    /// past `ceiling`.
    pub fn reply(&mut self, r: &mut [u8], len: usize, ceiling: u32) -> After {
        let pending = std::mem::take(&mut self.pending);
        let Some(h) = r.get(..len).and_then(frame::header) else { return After::Reply(len) };
        let ok = h.kind != RLERROR && h.kind != frame::RERROR;
        let body = &r[HEADER_LEN..len];
        let Some(t) = &mut self.table else {
            return match pending {
                Pending::Remove { fail: Some(e), .. } => After::Refuse(e),
                _ => After::Reply(len),
            };
        };
        match pending {
            Pending::None => After::Reply(len),
            Pending::Clunk { fid } => {
                t.release(fid);
                After::Reply(len)
            }
            Pending::Remove { fid, fail } => {
                if ok && fail.is_none() {
                    if let Some(f) = t.get(fid) {
                        let attach = f.attach;
                        self.path_a.clear();
                        self.path_a.extend_from_slice(f.path());
                        t.unlinked(attach, &self.path_a);
                    }
                }
                t.release(fid);
                match fail {
                    Some(e) => After::Refuse(e),
                    None => After::Reply(len),
                }
            }
            _ if !ok => After::Reply(len),
            Pending::Attach { fid } => {
                let Some(root) = Qid::parse(body) else { return After::Reply(len) };
                let attach = match t.add_attach(&self.att_aname, &self.att_uname, self.att_n_uname, root) {
                    Ok(a) => a,
                    Err(e) => {
                        let detail = e.to_string();
                        self.refuse(Refusal::Full, ENFILE, TATTACH, detail.as_bytes());
                        return self.clunk_then(fid, ENFILE, true);
                    }
                };
                let below = std::mem::take(&mut self.dest);
                t.set(fid, attach, &Dest::default(), root);
                self.dest = below;
                if self.dest.depth == 0 {
                    return After::Reply(len);
                }
                self.follow = Follow::AttachWalk { fid, attach, done: 0, sent: 0 };
                self.next_attach_walk()
            }
            Pending::Walk { fid, newfid, board_n, server_n, clamped } => {
                self.walked(r, len, ceiling, fid, newfid, board_n, server_n, clamped)
            }
            Pending::Open { fid, flags } => {
                if let Some(qid) = Qid::parse(body) {
                    t.opened(fid, flags, qid);
                }
                After::Reply(len)
            }
            Pending::Create { fid, flags } => {
                if let Some(qid) = Qid::parse(body) {
                    let attach = t.get(fid).map_or(0, |f| f.attach);
                    t.set(fid, attach, &self.dest, qid);
                    t.opened(fid, flags, qid);
                }
                After::Reply(len)
            }
            Pending::Rename { attach, keep } => {
                t.renamed(attach, &self.path_a, &self.path_b, keep);
                After::Reply(len)
            }
            Pending::Unlink { attach } => {
                t.unlinked(attach, &self.path_a);
                After::Reply(len)
            }
            Pending::XattrWalk { fid, newfid } => {
                t.clone_fid(fid, newfid, true);
                After::Reply(len)
            }
            Pending::XattrCreate { fid } => {
                t.set_xattr(fid);
                After::Reply(len)
            }
            Pending::Lock { fid, .. } if self.path_b.len() > crate::ninep::frame::MAX_CLIENT_ID => {
                // A client id no board sends: this fid's locks cannot be
                // taken again after a server restart.
                t.mark_unreplayable(fid);
                After::Reply(len)
            }
            Pending::Lock { fid, lock } => {
                if crate::ninep::frame::rlock_ok(&r[..len]) {
                    let l = crate::ninep::fids::Lock { kind: lock.kind, start: lock.start, length: lock.length, proc_id: lock.proc_id };
                    t.locked(fid, l, &self.path_b);
                }
                After::Reply(len)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn walked(&mut self, r: &mut [u8], len: usize, ceiling: u32, fid: u32, newfid: u32, board_n: u8, server_n: u8, clamped: u16) -> After {
        let body = &r[HEADER_LEN..len];
        let mut c = Cursor::new(body);
        let Some(nwqid) = c.u16() else { return After::Reply(len) };
        let nwqid = nwqid as usize;
        let server_n = server_n as usize;
        if nwqid > server_n || body.len() < 2 + Qid::LEN * nwqid {
            // Not an answer to this walk: whatever the server meant, the
            // board must not get a fid we cannot place.
            return if nwqid == server_n { self.clunk_then(newfid, libc::EIO as u32, false) } else { After::Fail(libc::EIO as u32) };
        }
        let mut qids = [Qid::default(); MAXWELEM];
        for (i, q) in qids.iter_mut().enumerate().take(nwqid) {
            *q = Qid::parse(&body[2 + Qid::LEN * i..]).unwrap_or_default();
        }
        // A symlink before the last name: the server resolved a name
        // through it, possibly out of the export.
        if qids[..nwqid].iter().take(server_n.saturating_sub(1)).any(Qid::is_symlink) {
            self.refuse(Refusal::Symlink, ELOOP, TWALK, b"");
            if nwqid == server_n {
                // The new fid (or the fid itself, walked in place) is out
                // of bounds on the server: clunk it.
                return self.clunk_then(newfid, ELOOP, true);
            }
            return After::Refuse(ELOOP);
        }
        let Some(t) = &self.table else { return After::Reply(len) };
        let root = t.get(fid).and_then(|f| t.attach_of(f)).map(|a| a.root).unwrap_or_default();
        // The board's qids: the server's, with the root's for each `..`
        // taken out at the root; they end where the server's walk ended.
        let mut board = [Qid::default(); MAXWELEM];
        let (mut got, mut next) = (0usize, 0usize);
        for (i, slot) in board.iter_mut().enumerate().take(board_n as usize) {
            if clamped & (1 << i) != 0 {
                *slot = root;
            } else if next < nwqid {
                *slot = qids[next];
                next += 1;
            } else {
                break;
            }
            got += 1;
        }
        let complete = got == board_n as usize;
        if clamped != 0 {
            let out_len = HEADER_LEN + 2 + Qid::LEN * got;
            if out_len > ceiling as usize || out_len > r.len() {
                return if nwqid == server_n { self.clunk_then(newfid, libc::EIO as u32, false) } else { After::Fail(libc::EIO as u32) };
            }
            r[..4].copy_from_slice(&(out_len as u32).to_le_bytes());
            r[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&(got as u16).to_le_bytes());
            for (i, q) in board.iter().enumerate().take(got) {
                q.put(&mut r[HEADER_LEN + 2 + Qid::LEN * i..]);
            }
            if complete {
                self.commit_walk(fid, newfid, board_n, &board);
            }
            return After::Reply(out_len);
        }
        if complete {
            self.commit_walk(fid, newfid, board_n, &board);
        }
        After::Reply(len)
    }

    fn commit_walk(&mut self, fid: u32, newfid: u32, board_n: u8, board: &[Qid; MAXWELEM]) {
        let Some(t) = &mut self.table else { return };
        let Some(f) = t.get(fid) else { return };
        let attach = f.attach;
        let qid = if board_n == 0 { f.qid } else { board[board_n as usize - 1] };
        t.set(newfid, attach, &self.dest, qid);
    }

    /// Our exchange is a Tclunk of `fid`; the board then gets `errno`.
    fn clunk_then(&mut self, fid: u32, errno: u32, refusal: bool) -> After {
        if let Some(t) = &mut self.table {
            t.release(fid);
        }
        self.out.clear();
        self.out.resize(HEADER_LEN + 4, 0);
        let mut w = Writer::new(&mut self.out);
        w.header(HEADER_LEN + 4, TCLUNK, self.tag);
        w.u32(fid);
        self.follow = Follow::ClunkThenFail { errno, refusal };
        After::Send
    }

    /// The next Twalk (of at most MAXWELEM names) down from the export to
    /// the directory an attach asked for.
    fn next_attach_walk(&mut self) -> After {
        let Follow::AttachWalk { fid, attach, done, .. } = self.follow else { return After::Fail(libc::EIO as u32) };
        let comps = self.dest.path.split(|&b| b == b'/').skip(done as usize).take(MAXWELEM);
        let (mut count, mut names_len) = (0usize, 0usize);
        for c in comps.clone() {
            count += 1;
            names_len += 2 + c.len();
        }
        let len = HEADER_LEN + 10 + names_len;
        self.out.clear();
        self.out.resize(len, 0);
        let mut w = Writer::new(&mut self.out);
        w.header(len, TWALK, self.tag);
        w.u32(fid);
        w.u32(fid);
        w.u16(count as u16);
        for c in comps {
            w.string(c);
        }
        self.follow = Follow::AttachWalk { fid, attach, done, sent: count as u8 };
        After::Send
    }

    /// Sees the reply `r[..len]` to our own exchange ([`Confine::out`]).
    pub fn followed(&mut self, r: &mut [u8], len: usize, _ceiling: u32) -> After {
        let Some(h) = r.get(..len).and_then(frame::header) else { return After::Fail(libc::EIO as u32) };
        match std::mem::take(&mut self.follow) {
            Follow::None => After::Fail(libc::EIO as u32),
            Follow::ClunkThenFail { errno, refusal } => {
                if refusal {
                    After::Refuse(errno)
                } else {
                    After::Fail(errno)
                }
            }
            Follow::AttachWalk { fid, attach, done, sent } => {
                let body = &r[HEADER_LEN..len];
                let nwqid = Cursor::new(body).u16().unwrap_or(0) as usize;
                let rwalk = h.kind == TWALK + 1 && nwqid <= sent as usize && body.len() >= 2 + Qid::LEN * nwqid;
                let qid_at = |i: usize| Qid::parse(&body[2 + Qid::LEN * i..]).unwrap_or_default();
                let last_dir = done as usize + sent as usize >= self.dest.depth as usize;
                // No symlink may be walked through (even by a walk the
                // server then failed): only the very last name of the whole
                // path may be one.
                let avail = if rwalk { nwqid } else { 0 };
                let through = (0..avail).any(|i| qid_at(i).is_symlink() && !(last_dir && i + 1 == sent as usize));
                if through {
                    let asked = self.dest.path.clone();
                    self.refuse(Refusal::Symlink, ELOOP, TATTACH, &asked);
                    return self.clunk_then(fid, ELOOP, true);
                }
                if !(rwalk && nwqid == sent as usize) {
                    let errno = if h.kind == RLERROR { Cursor::new(body).u32().unwrap_or(ENOENT) } else { ENOENT };
                    return self.clunk_then(fid, errno, false);
                }
                let last = if nwqid > 0 { qid_at(nwqid - 1) } else { Qid::default() };
                let done = done + sent as u16;
                if !last_dir {
                    self.follow = Follow::AttachWalk { fid, attach, done, sent: 0 };
                    return self.next_attach_walk();
                }
                if let Some(t) = &mut self.table {
                    t.set(fid, attach, &self.dest, last);
                }
                // The board's Rattach, with the qid of where it attached.
                let out = HEADER_LEN + Qid::LEN;
                if r.len() < out {
                    return After::Fail(libc::EIO as u32);
                }
                let mut w = Writer::new(r);
                w.header(out, TATTACH + 1, self.tag);
                last.put(&mut r[HEADER_LEN..]);
                After::Reply(out)
            }
        }
    }
}

/// How a request uses a fid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Use {
    /// As a directory to walk from or to name a file in.
    Dir,
    /// Its own path (open, statfs, xattrs).
    Path,
    /// Treadlink: a symlink is what it reads.
    Link,
    /// Tgetattr (a symlink is lstat'ed; an open fid is fstat'ed).
    Stat,
    /// Tsetattr (an open fid is changed through its descriptor).
    Setattr,
    /// The file a Tlink, Trename or Tremove names (a symlink is itself).
    Source,
    /// A walk of no names.
    Clone,
}

/// Whether open flags may change the file.
fn writes(flags: u32) -> bool {
    flags & O_ACCMODE != 0 || flags & (O_TRUNC | O_APPEND | O_CREAT) != 0
}

/// Puts into `dest` the components of `aname` below `export` (its
/// components, joined by `/` without a leading one). Err: not absolute, a
/// `.`/`..`/NUL component, or not the export or below it.
fn below(export: &[u8], aname: &[u8], dest: &mut Dest) -> Result<(), ()> {
    if aname.first() != Some(&b'/') {
        return Err(());
    }
    let mut comps = aname.split(|&b| b == b'/').filter(|c| !c.is_empty());
    let mut want = export.split(|&b| b == b'/').filter(|c| !c.is_empty());
    for w in want.by_ref() {
        match comps.next() {
            Some(c) if c == w => {}
            _ => return Err(()),
        }
    }
    for c in comps {
        if !good_name(c) || dest.path.len() + 1 + c.len() > MAX_PATH {
            return Err(());
        }
        dest.push(c);
    }
    Ok(())
}

/// Writes `Rversion msize "unknown"` for `tag` into `out`; returns its length.
pub fn rversion_unknown(out: &mut [u8], tag: u16, msize: u32) -> usize {
    let len = HEADER_LEN + 4 + 2 + 7;
    let mut w = Writer::new(out);
    w.header(len, TVERSION + 1, tag);
    w.u32(msize);
    w.string(b"unknown");
    len
}

#[cfg(test)]
mod tests;
