//! The frame loop of one board: take a T-message from the board, carry it to
//! the 9P server, carry the R-message back — one request in flight, exactly
//! as the board's transport works.
//!
//! When the server cannot answer (unreachable, died mid-session, sent
//! garbage or a reply that does not answer the request, missed the
//! request's deadline) the loop answers the board itself with an error reply
//! carrying the same tag, so the board's syscall fails (EIO, or ETIMEDOUT
//! past the deadline) instead of waiting forever.
//! After a lost server session every request fails fast until the board starts
//! a new one with Tversion (umount + mount), which opens a fresh connection.
//!
//! It must never decide policy — which server, when to retry, what to log
//! about connection attempts: it asks [`BackendPolicy`] and reports to it. It must
//! never allocate per message: both buffers are allocated once per worker,
//! and the in-place transfer memory (usbfs's mapped buffers, which spare a
//! copy and a kernel allocation per transfer) once per session, sized to the
//! session's msize.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::counters::{Activity, Counters, IN_FLIGHT};
use crate::ninep::backend::{Backend, BackendError};
use crate::ninep::confine::{self, After, Confine, Policy, Verdict};
use crate::ninep::fids;
use crate::ninep::frame::{self, Decoded, Dialect, FrameError, ERROR_REPLY_MAX, TVERSION};
use crate::ninep::recover::{self, Gate};
use crate::ninep::track::Tracker;
use crate::usb::pipe::{self, RecvError, TransferMem, UsbError, UsbPipe};

/// Size limits of one board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Hard ceiling for any frame, before and regardless of msize.
    pub max_frame: u32,
    /// The board's usb9pfs `buflen` (its receive request size) as the config
    /// says; the session raises it to the board's Tversion msize.
    pub board_buflen: u32,
    /// How long one request may wait for its reply, from its send; past it
    /// the board gets ETIMEDOUT and the session is lost. None: no limit.
    pub request_timeout: Option<std::time::Duration>,
    /// How long a lost server session may take to be rebuilt on a new
    /// connection (`recover.rs`) while the board's request waits; zero: no
    /// recovery (and no tracking of the session).
    pub recover_window: std::time::Duration,
}

/// A refused or failed connection attempt: the errno the board will see and
/// a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    pub errno: u32,
    pub message: String,
}

impl ConnectError {
    pub fn from_io(e: &io::Error, what: String) -> ConnectError {
        let timed_out = (e.kind() == io::ErrorKind::TimedOut).then_some(libc::ETIMEDOUT);
        let errno = e.raw_os_error().filter(|n| *n > 0).or(timed_out).unwrap_or(libc::EIO) as u32;
        ConnectError { errno, message: format!("{what}: {e}") }
    }
}

/// The supervisor's side of a board's backend, as the frame loop sees it:
/// where to connect, whether to try now, and what to do about failures.
/// `board_backend::BoardBackend` is the daemon's; tests bring their own.
pub trait BackendPolicy: Send + Sync {
    /// A fresh connection for a new 9P session.
    fn connect(&self) -> Result<Backend, ConnectError>;
    /// The live session's connection failed.
    fn lost(&self, err: &BackendError);
    /// A connection to rebuild a lost session on (recovery, `recover.rs`):
    /// to the server the session began with (never a reload's next one),
    /// outside the session rate limit. `attempt` counts this recovery's
    /// earlier attempts: from the second on it first waits a backoff, never
    /// past `until`, and a stop request (board removed, daemon stopping)
    /// ends the wait and the attempt.
    fn reconnect(&self, attempt: u32, until: Instant) -> Result<Backend, ConnectError> {
        let _ = (attempt, until);
        self.connect()
    }
    /// A recovery gave up (already logged by the loop): status's last error.
    fn recovery_failed(&self, _message: &str) {}
    /// The supervisor is letting go of the board (removed, released, daemon
    /// stopping): a lost session is not recovered.
    fn stopping(&self) -> bool {
        false
    }
    /// A live connection handed over by a predecessor now serves the board.
    fn took_over(&self, _backend: &Backend) {}
    /// What the board's next 9P session is confined to (None: nothing). Asked
    /// at each Tversion, so a reload applies from the board's next mount.
    fn policy(&self) -> Option<Arc<Policy>> {
        None
    }
}

/// Why a frame loop ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exit {
    #[error("board disconnected")]
    BoardGone,
    #[error("USB error: {0}")]
    Usb(UsbError),
    #[error("protocol violation by the board: {0}")]
    Violation(FrameError),
    /// A stop was requested and the loop stopped at a message boundary: the
    /// board owes nothing and is owed nothing; the session is intact.
    #[error("stopped at a message boundary")]
    Stopped,
}

/// Where one board's 9P session stands. It outlives a loop that stopped at a
/// message boundary, so a successor can carry on with it.
pub struct Session {
    pub backend: Option<Backend>,
    pub dialect: Dialect,
    /// Ceiling for any frame: max_frame, lowered by T/Rversion msize.
    pub ceiling: u32,
    /// True while the board has a session the server knows about.
    pub live: bool,
    /// The board's receive request size as far as we know: the larger of
    /// the configured buflen and its Tversion msize (which its kernel caps at
    /// its buflen). It decides when an R-message needs a ZLP.
    pub board_rx: u32,
    /// When the live session began (ms since the epoch; 0: not known), so
    /// that a successor's status still says when the board mounted.
    pub began_ms: u64,
    /// The session's confinement and fid table; None for a board whose
    /// entry confines nothing (it costs such a board nothing per message).
    pub confine: Option<Box<Confine>>,
    /// A predecessor's fid table for this live session (hand-over), until
    /// the loop knows the board's policy and makes it `confine` or `track`.
    pub handed_fids: Option<fids::TableRecord>,
    /// The fid table of a session confinement keeps none for (no export),
    /// for recovery; None when recovery is off or confinement keeps it.
    pub track: Option<Box<Tracker>>,
}

impl Session {
    /// No session yet: every request before a Tversion fails fast.
    pub fn new(limits: Limits) -> Session {
        Session {
            backend: None,
            dialect: Dialect::Linux,
            ceiling: limits.max_frame,
            live: false,
            board_rx: limits.board_buflen,
            began_ms: 0,
            confine: None,
            handed_fids: None,
            track: None,
        }
    }

    /// The session's one fid table: confinement's when it keeps one, else
    /// the tracker's; None when neither knows the session's fids.
    pub fn table(&self) -> Option<&fids::FidTable> {
        match self.confine.as_ref().and_then(|c| c.tracked_table()) {
            Some(t) => Some(t),
            None => self.track.as_ref().filter(|t| t.broken().is_none()).map(|t| t.table()),
        }
    }

    fn table_mut(&mut self) -> Option<&mut fids::FidTable> {
        match self.confine.as_mut().and_then(|c| c.tracked_table_mut()) {
            Some(t) => Some(t),
            None => self.track.as_mut().filter(|t| t.broken().is_none()).map(|t| t.table_mut()),
        }
    }

    /// The fid table as it crosses a hand-over.
    pub fn table_record(&self) -> Option<fids::TableRecord> {
        match self.confine.as_ref().and_then(|c| c.table_record()) {
            Some(r) => Some(r),
            None => self.track.as_ref().and_then(|t| t.record()),
        }
    }

    /// Whether confinement keeps the fid table (it has an export).
    fn confine_tracks(&self) -> bool {
        self.confine.as_ref().is_some_and(|c| c.table().is_some())
    }

    /// Starts (or restarts) the tracker for a session confinement keeps no
    /// table for, when recovery is on and the dialect is 9P2000.L.
    fn start_tracking(&mut self, limits: &Limits, handed: Option<&fids::TableRecord>, resumed: bool) {
        if limits.recover_window.is_zero() || self.dialect != Dialect::Linux || self.confine_tracks() {
            self.track = None;
            return;
        }
        match (&mut self.track, resumed) {
            (Some(t), false) => t.reset(),
            (_, false) => self.track = Some(Box::new(Tracker::new(fids::Limits::default()))),
            (_, true) => self.track = Some(Box::new(Tracker::resumed(fids::Limits::default(), handed))),
        }
    }

    /// Why a lost session cannot be rebuilt (None: it can).
    fn unrecoverable(&self, limits: &Limits) -> Option<String> {
        if limits.recover_window.is_zero() {
            return Some("recovery is off for this board (recover_window = 0)".into());
        }
        if self.dialect != Dialect::Linux {
            return Some("recovery needs 9P2000.L".into());
        }
        if let Some(why) = self.track.as_ref().and_then(|t| t.broken()) {
            return Some(why.to_string());
        }
        if self.table().is_none() {
            return Some("usb9pfsd does not know this session's fids (it was handed over without them)".into());
        }
        None
    }
}

/// The most in-place transfer memory one buffer of a worker maps: enough for
/// 64 KiB frames, the largest msize boards are given in practice. usbfs
/// counts it against the host-wide `usbfs_memory_mb` (16 MiB by default,
/// shared with adb, fastboot and every other usbfs user), so it follows the
/// session's msize, not `max_frame`; larger frames use the heap buffers.
pub const TRANSFER_MEM_MAX: usize = pipe::IN_CHUNK_MAX;

/// Bytes of in-place memory a session with this ceiling needs: for its
/// T-messages and for its R-messages.
fn mem_need(ceiling: u32, max_packet: usize) -> (usize, usize) {
    (pipe::request_len(ceiling, max_packet), (ceiling as usize).max(ERROR_REPLY_MAX))
}

/// Gives a session with this ceiling in-place memory for its T- and
/// R-messages where it fits (at a session's start, never per message).
fn fit_session_mem<P: UsbPipe + ?Sized>(pipe: &mut P, tmem: &mut Option<TransferMem>, rmem: &mut Option<TransferMem>, ceiling: u32) {
    let (tn, rn) = mem_need(ceiling, pipe.max_packet_size());
    fit_mem(pipe, tmem, tn);
    fit_mem(pipe, rmem, rn);
}

/// Makes `mem` hold at least `need` bytes if that is within
/// [`TRANSFER_MEM_MAX`]; without it the frames go through the heap buffers.
fn fit_mem<P: UsbPipe + ?Sized>(pipe: &mut P, mem: &mut Option<TransferMem>, need: usize) {
    if need > TRANSFER_MEM_MAX || mem.as_ref().is_some_and(|m| m.len() >= need) {
        return;
    }
    // Unmapped before the larger one is asked for: both count against the
    // same limit.
    *mem = None;
    *mem = pipe.transfer_mem(need);
}

/// In-place memory if it holds `need` bytes, else the heap buffer.
fn pick<'a>(mem: &'a mut Option<TransferMem>, heap: &'a mut [u8], need: usize) -> &'a mut [u8] {
    match mem {
        Some(m) if m.len() >= need => m.bytes(),
        _ => heap,
    }
}

/// What every step of the loop consults: the board's backend policy, its
/// counters and its limits.
struct Ctx<'a> {
    board_backend: &'a dyn BackendPolicy,
    counters: &'a Counters,
    limits: Limits,
}

/// How one request ended for the board.
struct Answered {
    /// When its reply was handed to the board (the next message's wait
    /// starts here).
    at: Instant,
    /// The reply was the server's Rversion: a new session, whose msize the
    /// in-place memory must match.
    new_session: bool,
}

/// The board got an answer of the loop's own (or the answer's send failed).
fn answered_here(sent: Result<(), Exit>) -> Result<Answered, Exit> {
    sent.map(|()| Answered { at: Instant::now(), new_session: false })
}

/// Runs the loop until the board goes away, breaks the protocol, or the loop
/// is stopped at a message boundary (then `s` holds the live session).
pub fn run<P: UsbPipe + ?Sized>(
    pipe: &mut P,
    board_backend: &dyn BackendPolicy,
    counters: &Counters,
    limits: Limits,
    s: &mut Session,
) -> Exit {
    let cx = Ctx { board_backend, counters, limits };
    let mps = pipe.max_packet_size();
    let mut tbuf = vec![0u8; pipe::request_len(limits.max_frame, mps)];
    let mut rbuf = vec![0u8; (limits.max_frame as usize).max(ERROR_REPLY_MAX)];
    // In-place transfer memory for the T- and R-messages of a session whose
    // msize fits (a session handed over by a predecessor already has one).
    let (mut tmem, mut rmem) = (None, None);
    if s.live {
        fit_session_mem(pipe, &mut tmem, &mut rmem, s.ceiling);
        resume_handed(&cx, s);
    }
    // The per-message time budget: three monotonic clock reads per message
    // (vDSO, no system call).
    let mut mark = Instant::now();
    // Re-arms since the last T-message: a function that fails again right
    // after each is broken, not unmounted.
    let mut rearms_in_a_row = 0u32;
    loop {
        let tb = pick(&mut tmem, &mut tbuf, mem_need(s.ceiling, mps).0);
        let n = match pipe::recv_message(pipe, tb, s.ceiling) {
            Ok(n) => n,
            Err(RecvError::Usb(UsbError::Gone)) => return Exit::BoardGone,
            Err(RecvError::Usb(UsbError::Stopped)) => return Exit::Stopped,
            Err(RecvError::Usb(UsbError::FunctionOff(why))) => {
                if let Err(exit) = rearm(pipe, counters, s, &mut rearms_in_a_row, &why) {
                    return exit;
                }
                mark = Instant::now();
                continue;
            }
            Err(RecvError::Usb(e)) => return Exit::Usb(e),
            Err(RecvError::Frame(e)) => return Exit::Violation(e),
        };
        rearms_in_a_row = 0;
        // Until this iteration ends, the board is owed a reply.
        let _pending = IN_FLIGHT.enter();
        let _busy = counters.busy();
        let received = Instant::now();
        add_ns(&counters.time.board_ns, mark, received);
        match serve_request(pipe, &cx, s, tb, n, received, (&mut rmem, &mut rbuf)) {
            Ok(done) => {
                mark = done.at;
                if done.new_session {
                    fit_session_mem(pipe, &mut tmem, &mut rmem, s.ceiling);
                }
            }
            Err(exit) => return exit,
        }
    }
}

/// A live session this process did not see begin (handed over): its
/// predecessor's fid table if it came and fits the policy, else no table,
/// and its fids can only do what needs none.
fn resume_handed(cx: &Ctx, s: &mut Session) {
    let handed = s.handed_fids.take();
    if s.confine.is_none() {
        s.confine = cx.board_backend.policy().filter(|p| p.confines()).map(|p| {
            Box::new(match &handed {
                Some(record) => Confine::resumed(p, fids::Limits::default(), record),
                None => Confine::untracked(p, fids::Limits::default()),
            })
        });
    }
    if s.track.is_none() {
        s.start_tracking(&cx.limits, handed.as_ref(), true);
    }
    note_recoverable(s, &cx.limits, cx.counters);
}

/// One T-message, `n` bytes at the start of `tb`: answered by the server
/// (exchanged, recovered if need be) or by the loop itself (a refusal, a
/// lost fid, no session). `rbufs` are the in-place memory and the heap
/// buffer for the reply.
fn serve_request<P: UsbPipe + ?Sized>(
    pipe: &mut P,
    cx: &Ctx,
    s: &mut Session,
    tb: &mut [u8],
    n: usize,
    received: Instant,
    rbufs: (&mut Option<TransferMem>, &mut Vec<u8>),
) -> Result<Answered, Exit> {
    let (rmem, rbuf) = rbufs;
    let counters = cx.counters;
    let t = &tb[..n];
    tracing::trace!(target: "usb9pfsd::wire", "board → server {}", Decoded(t));
    counters.t_messages.fetch_add(1, Ordering::Relaxed);
    counters.t_bytes.fetch_add(n as u64, Ordering::Relaxed);
    let Some(h) = frame::header(t) else {
        return Err(Exit::Violation(FrameError::TooSmall { size: n as u32 }));
    };
    if h.kind == TVERSION {
        if let Some(answer) = begin_session(pipe, cx, s, t, h.tag, rbuf) {
            return answered_here(answer);
        }
    } else {
        // A fid the last recovery lost: answered here, never forwarded (one
        // branch on a counter while there is none).
        let gate = s.table().map_or(Gate::Pass, |tab| recover::gate(t, tab));
        if gate != Gate::Pass {
            return answered_here(answer_gate(pipe, rbuf, s, h.tag, h.kind, gate, counters));
        }
    }
    // A confined board's request: refused here, or rewritten in place.
    let mut t_len = n;
    if let (Some(c), true, false) = (s.confine.as_mut(), s.live, h.kind == TVERSION) {
        match c.request(tb, n, s.ceiling) {
            Verdict::Forward(len) => t_len = len,
            Verdict::Refuse(errno) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                return answered_here(reply_error(pipe, rbuf, s, h.tag, errno, counters));
            }
        }
    }
    let t = &tb[..t_len];
    if h.kind != TVERSION {
        if let Some(tr) = s.track.as_mut() {
            tr.request(t);
        }
    }
    if s.backend.is_none() || !s.live {
        // No Tversion since the worker started, or the server session was
        // lost: nothing the server could answer. Fail fast.
        return answered_here(reply_error(pipe, rbuf, s, h.tag, frame::EIO, counters));
    }
    let rb = pick(rmem, rbuf, mem_need(s.ceiling, pipe.max_packet_size()).1);
    let exchanged = exchange(cx, s, t, rb, h.kind);
    let answered = Instant::now();
    add_ns(&counters.time.server_ns, received, answered);
    match exchanged {
        Ok(r_len) => send_reply(pipe, cx, s, (h.tag, h.kind), t, rb, r_len, answered),
        Err(f) => answered_here(answer_failed(pipe, cx, s, rb, t, (h.tag, h.kind), f)),
    }
}

/// A Tversion: the board begins a new 9P session (mount, or umount + mount
/// without replug), and whatever the server knew of the old one is gone.
/// Sets the session up for it and connects; Some(the answer's send) when
/// the board was answered here (a dialect confinement cannot read, no
/// connection).
fn begin_session<P: UsbPipe + ?Sized>(
    pipe: &mut P,
    cx: &Ctx,
    s: &mut Session,
    t: &[u8],
    tag: u16,
    rbuf: &mut [u8],
) -> Option<Result<(), Exit>> {
    let (counters, limits) = (cx.counters, &cx.limits);
    s.backend = None;
    s.live = false;
    counters.session_ended();
    s.ceiling = limits.max_frame;
    s.board_rx = limits.board_buflen;
    if let Some(v) = frame::version(t) {
        s.dialect = v.dialect;
        s.ceiling = s.ceiling.min(v.msize.max(frame::HEADER_LEN as u32));
        s.board_rx = s.board_rx.max(v.msize);
    }
    match cx.board_backend.policy().filter(|p| p.confines()) {
        None => s.confine = None,
        Some(p) => match &mut s.confine {
            Some(c) if Arc::ptr_eq(c.policy(), &p) => c.reset(),
            _ => s.confine = Some(Box::new(Confine::new(p, fids::Limits::default()))),
        },
    }
    s.start_tracking(limits, None, false);
    if let Some(c) = s.confine.as_mut().filter(|_| !Confine::version_ok(t)) {
        // Confinement reads 9P2000.L only: another dialect is refused the
        // 9P way, without asking the server.
        c.dialect_refused();
        counters.refused.fetch_add(1, Ordering::Relaxed);
        let msize = frame::version(t).map_or(s.ceiling, |v| v.msize);
        let len = confine::rversion_unknown(rbuf, tag, msize);
        return Some(pipe::send_message(pipe, &rbuf[..len], s.board_rx).map_err(usb_exit));
    }
    counters.set_activity(Activity::Connecting);
    let connected = cx.board_backend.connect();
    counters.set_activity(Activity::Forwarding);
    match connected {
        Ok(b) => {
            s.backend = Some(b);
            s.live = true;
            counters.sessions.fetch_add(1, Ordering::Relaxed);
            s.began_ms = counters.session_began();
            note_recoverable(s, limits, counters);
            None
        }
        Err(e) => Some(reply_error(pipe, rbuf, s, tag, e.errno, counters)),
    }
}

/// Sends `t` to the server and reads its reply into `rb`. A lost session is
/// rebuilt (recover.rs) and the request sent again if that cannot change
/// its result.
fn exchange(cx: &Ctx, s: &mut Session, t: &[u8], rb: &mut [u8], kind: u8) -> Result<usize, Failed> {
    let mut attempt_since = None;
    let mut resent = false;
    loop {
        let Some(backend) = s.backend.as_mut() else { return Err(Failed::Answer(frame::EIO)) };
        let e = match backend.exchange(t, rb, s.ceiling, cx.limits.request_timeout) {
            Ok(m) => return Ok(m),
            Err(e) if kind == TVERSION => return Err(Failed::Lost(e)),
            Err(e) => e,
        };
        let since = *attempt_since.get_or_insert_with(Instant::now);
        match recover_session(cx.board_backend, cx.counters, s, &e, &cx.limits, since) {
            Recovery::Off => return Err(Failed::Lost(e)),
            Recovery::GaveUp => return Err(Failed::Answer(e.errno())),
            Recovery::Done => {}
        }
        let gate = s.table().map_or(Gate::Pass, |tab| recover::gate(t, tab));
        if gate != Gate::Pass {
            return Err(Failed::Gate(gate));
        }
        if !recover::repeatable(t, s.table()) {
            return Err(Failed::NotRepeated);
        }
        if resent {
            // The server broke the session on this very request again: it
            // is the request, not the server. The session goes on; the
            // request gets EIO.
            tracing::warn!(
                "the server broke the session again on the board's {} sent after recovery: answering it EIO instead of sending it a third time",
                frame::type_name(kind)
            );
            return Err(Failed::Answer(frame::EIO));
        }
        resent = true;
        tracing::debug!("sending the board's {} again on the recovered session", frame::type_name(kind));
    }
}

/// The board's answer when the exchange gave it no reply of the server's.
fn answer_failed<P: UsbPipe + ?Sized>(
    pipe: &mut P,
    cx: &Ctx,
    s: &mut Session,
    buf: &mut [u8],
    t: &[u8],
    (tag, kind): (u16, u8),
    f: Failed,
) -> Result<(), Exit> {
    match f {
        Failed::Lost(e) => {
            lose_session(cx.board_backend, cx.counters, s, &e);
            reply_error(pipe, buf, s, tag, e.errno(), cx.counters)
        }
        Failed::Answer(errno) => reply_error(pipe, buf, s, tag, errno, cx.counters),
        Failed::Gate(g) => answer_gate(pipe, buf, s, tag, kind, g, cx.counters),
        Failed::NotRepeated => {
            not_repeated(s, t, cx.limits.request_timeout);
            reply_error(pipe, buf, s, tag, frame::EIO, cx.counters)
        }
    }
}

/// The server's reply to `t`, `r_len` bytes in `rb`: shown to confinement
/// (which may rewrite it, or answer the board itself) and to the tracker,
/// counted, and sent to the board.
#[allow(clippy::too_many_arguments)]
fn send_reply<P: UsbPipe + ?Sized>(
    pipe: &mut P,
    cx: &Ctx,
    s: &mut Session,
    (tag, kind): (u16, u8),
    t: &[u8],
    rb: &mut [u8],
    r_len: usize,
    answered: Instant,
) -> Result<Answered, Exit> {
    let counters = cx.counters;
    let mut r_len = r_len;
    if let (Some(c), Some(backend), false) = (s.confine.as_mut(), s.backend.as_mut(), kind == TVERSION) {
        match confined_reply(c, backend, rb, r_len, s.ceiling, cx.limits.request_timeout, counters) {
            Ok(Some(len)) => r_len = len,
            Ok(None) => {}
            Err(Answer::Error(errno)) => return answered_here(reply_error(pipe, rb, s, tag, errno, counters)),
            Err(Answer::Lost(e)) => {
                lose_session(cx.board_backend, counters, s, &e);
                return answered_here(reply_error(pipe, rb, s, tag, e.errno(), counters));
            }
        }
    }
    let r = &rb[..r_len];
    if kind == TVERSION {
        if let Some(v) = frame::version(r) {
            s.ceiling = s.ceiling.min(v.msize.max(frame::HEADER_LEN as u32));
        }
    } else if let Some(tr) = s.track.as_mut() {
        tr.reply(r);
        if tr.broken().is_some() {
            counters.recoverable.store(2, Ordering::Relaxed);
        }
    }
    tracing::trace!(target: "usb9pfsd::wire", "server → board {}", Decoded(r));
    counters.attach_answered(t, r);
    // Counted before the transfer: once the board has the reply, anyone it
    // tells must already see the count.
    counters.r_messages.fetch_add(1, Ordering::Relaxed);
    counters.r_bytes.fetch_add(r_len as u64, Ordering::Relaxed);
    if kind != TVERSION {
        counters.served.fetch_add(1, Ordering::Relaxed);
    }
    pipe::send_message(pipe, r, s.board_rx).map_err(usb_exit)?;
    let at = Instant::now();
    add_ns(&counters.time.reply_ns, answered, at);
    Ok(Answered { at, new_session: kind == TVERSION })
}

/// Re-arms consecutive with no T-message between them before the board's
/// function counts as broken and the worker ends (the supervisor then
/// restarts it with backoff, and its status shows why).
pub const REARM_LIMIT: u32 = 3;

/// The board's function disabled its endpoints between messages (its
/// umount, on board kernels with the 2026 usbg fixes): its 9P client is
/// gone, so the server session ends too; re-select the interface so the
/// board's next mount finds its function enabled. Detected, never guessed: a
/// board kernel that keeps its endpoints after umount never fails the wait,
/// so it never gets a SET_INTERFACE that would reset a live session.
fn rearm<P: UsbPipe + ?Sized>(pipe: &mut P, counters: &Counters, s: &mut Session, in_a_row: &mut u32, why: &str) -> Result<(), Exit> {
    if s.backend.take().is_some() || s.live {
        s.live = false;
        counters.session_ended();
    }
    *in_a_row += 1;
    if *in_a_row > REARM_LIMIT {
        return Err(Exit::Usb(UsbError::FunctionOff(format!(
            "{why}, again right after each of {REARM_LIMIT} re-selections of the interface: the board's usb9pfs function looks broken; reset or replug the board"
        ))));
    }
    pipe.rearm().map_err(|e| match e {
        // Asked to stop while the board refused its alternate setting.
        UsbError::Stopped => Exit::Stopped,
        e => usb_exit(e),
    })?;
    counters.rearms.fetch_add(1, Ordering::Relaxed);
    if *in_a_row == 1 {
        tracing::info!(
            "board unmounted: its usb9pfs function disabled its endpoints ({why}); re-selected the interface, waiting for the next mount"
        );
    } else {
        tracing::warn!(
            "the board's usb9pfs function failed again right after it was re-armed ({why}); re-armed it once more ({} of {REARM_LIMIT})",
            *in_a_row
        );
    }
    Ok(())
}

/// Instead of the server's reply, the board gets an error reply.
enum Answer {
    /// With this errno (a refusal, or a failure of our own exchange).
    Error(u32),
    /// The server session broke during an exchange of our own.
    Lost(BackendError),
}

/// Shows a confined board's reply to its confinement, which learns from it,
/// may rewrite it (Ok(Some(new length))) or need exchanges of its own first.
fn confined_reply(
    c: &mut Confine,
    backend: &mut Backend,
    rb: &mut [u8],
    r_len: usize,
    ceiling: u32,
    timeout: Option<std::time::Duration>,
    counters: &Counters,
) -> Result<Option<usize>, Answer> {
    let mut after = c.reply(rb, r_len, ceiling);
    loop {
        match after {
            After::Reply(len) => return Ok((len != r_len).then_some(len)),
            After::Refuse(errno) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                return Err(Answer::Error(errno));
            }
            After::Fail(errno) => return Err(Answer::Error(errno)),
            After::Send => match backend.exchange(c.out(), rb, ceiling, timeout) {
                Ok(len) => after = c.followed(rb, len, ceiling),
                Err(e) => return Err(Answer::Lost(e)),
            },
        }
    }
}

/// The live server session broke: tell the policy, count it, and drop the
/// connection, so every request fails fast until the board's next Tversion.
fn lose_session(board_backend: &dyn BackendPolicy, counters: &Counters, s: &mut Session, e: &BackendError) {
    board_backend.lost(e);
    counters.backend_failures.fetch_add(1, Ordering::Relaxed);
    counters.session_ended();
    s.backend = None;
    s.live = false;
}

/// Why an exchange gave the board no reply of the server's.
enum Failed {
    /// The session broke and is not recovered (recovery off or impossible).
    Lost(BackendError),
    /// Answer with this errno (recovery gave up; no session).
    Answer(u32),
    /// Recovered, but the request's fid was lost.
    Gate(Gate),
    /// Recovered, but the request may have taken effect: EIO.
    NotRepeated,
}

enum Recovery {
    /// Not attempted: today's behaviour (the session is lost).
    Off,
    /// Attempted and given up: the session is lost (already counted).
    GaveUp,
    /// The session lives on a new connection.
    Done,
}

/// The board's live server session broke on `e`: rebuild it on a new
/// connection within the board's recover window, counted from `since`
/// (the first loss of this request), while the board's request waits.
fn recover_session(
    board_backend: &dyn BackendPolicy,
    counters: &Counters,
    s: &mut Session,
    e: &BackendError,
    limits: &Limits,
    since: Instant,
) -> Recovery {
    if board_backend.stopping() {
        return Recovery::Off;
    }
    if let Some(why) = s.unrecoverable(limits) {
        if !limits.recover_window.is_zero() {
            tracing::warn!("the 9P server session cannot be recovered: {why}");
        }
        return Recovery::Off;
    }
    let until = since + limits.recover_window;
    let fids = s.table().map_or(0, |t| t.len());
    tracing::warn!(
        fids,
        "lost the 9P server session ({e}); recovering it on a new connection for up to {}s while the board's request waits",
        until.saturating_duration_since(Instant::now()).as_secs()
    );
    counters.set_activity(Activity::Recovering);
    // The old connection is gone with the server's idea of the session.
    s.backend = None;
    let started = Instant::now();
    let mut attempt = 0;
    let result = loop {
        let b = match board_backend.reconnect(attempt, until) {
            Ok(b) => b,
            Err(c) if Instant::now() >= until || board_backend.stopping() => break Err(c.message),
            Err(_) => {
                attempt += 1;
                continue;
            }
        };
        attempt += 1;
        let mut b = b;
        let msize = s.ceiling;
        let Some(table) = s.table_mut() else { break Err("the session's fid table is gone".into()) };
        match recover::replay(&mut b, table, msize, limits.request_timeout) {
            Ok(o) => break Ok((b, o)),
            Err(recover::ReplayError::Refused(why)) => break Err(why),
            Err(recover::ReplayError::Lost(e)) if Instant::now() < until => {
                tracing::debug!("recovery: the new connection failed during the replay ({e}); trying again");
            }
            Err(recover::ReplayError::Lost(e)) => break Err(format!("the new connection failed during the replay: {e}")),
        }
    };
    counters.set_activity(Activity::Forwarding);
    let took = started.elapsed();
    match result {
        Ok((b, o)) => {
            board_backend.took_over(&b);
            s.backend = Some(b);
            counters.recoveries.fetch_add(1, Ordering::Relaxed);
            counters.last_recovery_ms.store(took.as_millis() as u64, Ordering::Relaxed);
            counters.last_replayed.store(o.replayed as u64, Ordering::Relaxed);
            counters.last_lost.store(o.lost as u64, Ordering::Relaxed);
            tracing::info!(
                fids_replayed = o.replayed,
                fids_stale = o.lost,
                ms = took.as_millis() as u64,
                "recovered the 9P server session in {} ms: {} fid(s) replayed, {} stale (ESTALE from now on); the board's mount goes on",
                took.as_millis(),
                o.replayed,
                o.lost
            );
            Recovery::Done
        }
        Err(why) => {
            let message = format!("gave up recovering the 9P server session after {:.1}s: {why}", took.as_secs_f64());
            tracing::error!(
                "{message}; the board's requests fail with EIO until it mounts again (umount + mount, or a reboot for a root file system)"
            );
            board_backend.recovery_failed(&message);
            counters.recovery_failures.fetch_add(1, Ordering::Relaxed);
            counters.backend_failures.fetch_add(1, Ordering::Relaxed);
            counters.session_ended();
            counters.recoverable.store(0, Ordering::Relaxed);
            s.backend = None;
            s.live = false;
            Recovery::GaveUp
        }
    }
}

/// After a recovery, the request in flight was not sent again (it may have
/// taken effect). A Tremove ends its fid whatever the outcome: clunk it on
/// the new connection too, and forget it.
fn not_repeated(s: &mut Session, t: &[u8], timeout: Option<std::time::Duration>) {
    if t.get(4) != Some(&confine::TREMOVE) {
        return;
    }
    let Some(fid) = t.get(frame::HEADER_LEN..frame::HEADER_LEN + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])) else { return };
    let mut clunk = [0u8; frame::HEADER_LEN + 4];
    let mut w = crate::ninep::wire::Writer::new(&mut clunk);
    w.header(frame::HEADER_LEN + 4, confine::TCLUNK, 0);
    w.u32(fid);
    let mut r = [0u8; ERROR_REPLY_MAX];
    let ceiling = s.ceiling;
    if let Some(b) = s.backend.as_mut() {
        let _ = b.exchange(&clunk, &mut r, ceiling.max(ERROR_REPLY_MAX as u32), timeout);
    }
    if let Some(tab) = s.table_mut() {
        tab.release(fid);
    }
}

/// Answers a request on a fid the last recovery lost.
fn answer_gate<P: UsbPipe + ?Sized>(
    pipe: &mut P,
    buf: &mut [u8],
    s: &mut Session,
    tag: u16,
    kind: u8,
    g: Gate,
    counters: &Counters,
) -> Result<(), Exit> {
    match g {
        Gate::Pass => reply_error(pipe, buf, s, tag, frame::EIO, counters),
        Gate::Stale => reply_error(pipe, buf, s, tag, libc::ESTALE as u32, counters),
        Gate::Forget { fid, clunk } => {
            if let Some(tab) = s.table_mut() {
                tab.release(fid);
            }
            if !clunk {
                return reply_error(pipe, buf, s, tag, libc::ESTALE as u32, counters);
            }
            let n = frame::HEADER_LEN;
            let mut w = crate::ninep::wire::Writer::new(buf);
            w.header(n, kind + 1, tag);
            counters.r_messages.fetch_add(1, Ordering::Relaxed);
            pipe::send_message(pipe, &buf[..n], s.board_rx).map_err(usb_exit)
        }
    }
}

/// Tells status whether the live session could be recovered.
fn note_recoverable(s: &Session, limits: &Limits, counters: &Counters) {
    let v = if !s.live {
        0
    } else if s.unrecoverable(limits).is_none() {
        1
    } else {
        2
    };
    counters.recoverable.store(v, Ordering::Relaxed);
}

fn add_ns(total: &AtomicU64, from: Instant, to: Instant) {
    total.fetch_add(to.saturating_duration_since(from).as_nanos() as u64, Ordering::Relaxed);
}

fn reply_error<P: UsbPipe + ?Sized>(
    pipe: &mut P,
    buf: &mut [u8],
    s: &Session,
    tag: u16,
    errno: u32,
    counters: &Counters,
) -> Result<(), Exit> {
    let n = frame::error_reply(buf, s.dialect, tag, errno);
    tracing::trace!(target: "usb9pfsd::wire", "usb9pfsd → board {} errno={errno}", Decoded(&buf[..n]));
    counters.error_replies.fetch_add(1, Ordering::Relaxed);
    pipe::send_message(pipe, &buf[..n], s.board_rx).map_err(usb_exit)
}

fn usb_exit(e: UsbError) -> Exit {
    match e {
        UsbError::Gone => Exit::BoardGone,
        e => Exit::Usb(e),
    }
}

#[cfg(test)]
mod confine_tests;
#[cfg(test)]
mod recover_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ninep::backend::BackendAddr;
    use crate::ninep::frame::{Dialect, RLERROR, RVERSION};
    use crate::usb::sim;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// A scripted 9P server on a unix socket: answers each T with `reply`.
    struct Server {
        addr: BackendAddr,
        connections: Arc<AtomicUsize>,
        _dir: tempfile::TempDir,
    }

    fn server(reply: fn(&[u8]) -> Option<Vec<u8>>) -> Server {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("9p.sock");
        let l = UnixListener::bind(&path).expect("bind");
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { return };
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || loop {
                    let mut size = [0u8; 4];
                    if c.read_exact(&mut size).is_err() {
                        return;
                    }
                    let mut t = size.to_vec();
                    t.resize(u32::from_le_bytes(size) as usize, 0);
                    if c.read_exact(&mut t[4..]).is_err() {
                        return;
                    }
                    match reply(&t) {
                        Some(r) => {
                            if c.write_all(&r).is_err() {
                                return;
                            }
                        }
                        None => return, // hang up mid-request
                    }
                });
            }
        });
        Server { addr: BackendAddr::Unix(path), connections, _dir: dir }
    }

    struct Direct(BackendAddr);

    impl BackendPolicy for Direct {
        fn connect(&self) -> Result<Backend, ConnectError> {
            Backend::connect(&self.0, std::time::Duration::from_secs(5)).map_err(|e| ConnectError::from_io(&e, "connect".into()))
        }
        fn lost(&self, _: &BackendError) {}
    }

    fn msg(kind: u8, tag: u16, body: &[u8]) -> Vec<u8> {
        let mut m = ((7 + body.len()) as u32).to_le_bytes().to_vec();
        m.push(kind);
        m.extend_from_slice(&tag.to_le_bytes());
        m.extend_from_slice(body);
        m
    }

    fn tversion(msize: u32, name: &str) -> Vec<u8> {
        let mut body = msize.to_le_bytes().to_vec();
        body.extend_from_slice(&(name.len() as u16).to_le_bytes());
        body.extend_from_slice(name.as_bytes());
        msg(TVERSION, frame::NOTAG, &body)
    }

    /// Echo server: R = T with type + 1; Rversion keeps the msize; a Tread
    /// (116) with tag 99 gets an oversized reply header; tag 66 hangs up;
    /// tag 77 is answered twice; tag 44 is never answered.
    fn echo(t: &[u8]) -> Option<Vec<u8>> {
        let tag = u16::from_le_bytes([t[5], t[6]]);
        match tag {
            66 => None,
            44 => Some(Vec::new()), // never answered
            // The answer, then a stray Rclunk for tag 78.
            77 => Some([msg(t[4] + 1, tag, &[]), msg(121, 78, &[])].concat()),
            99 => Some(msg(t[4] + 1, tag, &[0; 64]).into_iter().enumerate().map(|(i, b)| if i == 2 { 0x7f } else { b }).collect()),
            _ => Some(msg(t[4] + 1, tag, &t[7..])),
        }
    }

    struct Running {
        board: sim::Board,
        counters: Arc<Counters>,
        exit: std::thread::JoinHandle<Exit>,
        connections: Arc<AtomicUsize>,
        _server: Server,
    }

    fn start() -> Running {
        start_with(None)
    }

    fn start_with(request_timeout: Option<std::time::Duration>) -> Running {
        let server = server(echo);
        let (mut host, board) = sim::gadget(512, 16384);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let board_backend = Direct(server.addr.clone());
        let limits = Limits { max_frame: 1 << 20, board_buflen: 16384, request_timeout, recover_window: std::time::Duration::ZERO };
        let exit = std::thread::spawn(move || run(&mut host, &board_backend, &c, limits, &mut Session::new(limits)));
        Running { board, counters, exit, connections: server.connections.clone(), _server: server }
    }

    #[test]
    fn requests_before_any_tversion_fail_fast_with_eio() {
        let r = start();
        r.board.send(&msg(120, 5, &[1, 0, 0, 0]));
        assert_eq!(r.board.recv(), vec![11, 0, 0, 0, RLERROR, 5, 0, 5, 0, 0, 0]);
        assert_eq!(r.connections.load(Ordering::SeqCst), 0, "no server session to ask");
        drop(r.board);
        assert_eq!(r.exit.join().expect("join"), Exit::BoardGone);
    }

    #[test]
    fn msize_caps_frames_and_each_tversion_opens_a_new_connection() {
        let r = start();
        r.board.send(&tversion(8192, "9P2000.L"));
        assert_eq!(r.board.recv()[4], RVERSION);
        r.board.send(&tversion(8192, "9P2000.L"));
        assert_eq!(r.board.recv()[4], RVERSION);
        assert_eq!(r.connections.load(Ordering::SeqCst), 2);
        assert_eq!(r.counters.snapshot().sessions, 2);
        // A frame above the negotiated msize is a protocol violation.
        let mut big = msg(118, 1, &vec![0; 8200 - 7]);
        big[..4].copy_from_slice(&8200u32.to_le_bytes());
        r.board.send(&big);
        assert_eq!(r.exit.join().expect("join"), Exit::Violation(FrameError::TooLarge { size: 8200, ceiling: 8192 }));
    }

    #[test]
    fn a_function_disabled_at_umount_is_rearmed_and_the_next_mount_is_served() {
        let r = start();
        for round in 1..=3u64 {
            r.board.send(&tversion(8192, "9P2000.L"));
            assert_eq!(r.board.recv()[4], RVERSION);
            r.board.send(&msg(120, 1, &[1, 0, 0, 0]));
            assert_eq!(r.board.recv()[4], 121, "round {round}: Rclunk");
            assert!(r.counters.session_started().is_some());
            r.board.unmount_disabling();
            // The next mount: the host re-armed the function in between.
            r.board.send(&tversion(8192, "9P2000.L"));
            assert_eq!(r.board.recv()[4], RVERSION, "round {round}: remount served");
            assert_eq!(r.board.rearms(), (round as usize, 0), "one SET_INTERFACE per umount, none needless");
            assert_eq!(r.counters.snapshot().rearms, round);
            r.board.send(&msg(120, 2, &[1, 0, 0, 0]));
            assert_eq!(r.board.recv()[4], 121);
        }
        // Every mount got its own server session; the re-arm ended each one.
        assert_eq!(r.connections.load(Ordering::SeqCst), 6);
        drop(r.board);
        assert_eq!(r.exit.join().expect("join"), Exit::BoardGone);
    }

    #[test]
    fn a_board_that_keeps_its_endpoints_after_umount_is_never_rearmed() {
        let r = start();
        for _ in 0..3 {
            r.board.send(&tversion(8192, "9P2000.L"));
            assert_eq!(r.board.recv()[4], RVERSION);
            r.board.send(&msg(120, 1, &[1, 0, 0, 0]));
            assert_eq!(r.board.recv()[4], 121);
        }
        assert_eq!(r.board.rearms(), (0, 0), "no SET_INTERFACE for a board whose function never went away");
        assert_eq!(r.counters.snapshot().rearms, 0);
        drop(r.board);
        assert_eq!(r.exit.join().expect("join"), Exit::BoardGone);
    }

    #[test]
    fn a_function_that_fails_right_after_each_rearm_ends_the_worker() {
        let r = start();
        r.board.send(&tversion(8192, "9P2000.L"));
        assert_eq!(r.board.recv()[4], RVERSION);
        r.board.set_rearm_fails(true);
        r.board.unmount_disabling();
        match r.exit.join().expect("join") {
            Exit::Usb(UsbError::FunctionOff(why)) => assert!(why.contains("looks broken"), "{why}"),
            other => panic!("expected a broken-function exit, got {other:?}"),
        }
        assert_eq!(r.board.rearms().0, REARM_LIMIT as usize, "bounded: {REARM_LIMIT} tries, then the worker ends");
        assert!(r.counters.session_started().is_none(), "the server session ended with the board's");
    }

    #[test]
    fn bad_server_frames_and_hangups_become_error_replies_with_the_tag() {
        let r = start();
        r.board.send(&tversion(16384, "9P2000.L"));
        assert_eq!(r.board.recv()[4], RVERSION);
        r.board.send(&msg(116, 99, &[0; 16]));
        assert_eq!(r.board.recv(), vec![11, 0, 0, 0, RLERROR, 99, 0, 5, 0, 0, 0]);
        // Session lost: later requests fail fast, no new connection.
        r.board.send(&msg(120, 3, &[0; 4]));
        assert_eq!(r.board.recv()[..7], [11, 0, 0, 0, RLERROR, 3, 0]);
        // Remount, then the server hangs up mid-request.
        r.board.send(&tversion(16384, "9P2000.u"));
        assert_eq!(r.board.recv()[4], RVERSION);
        r.board.send(&msg(116, 66, &[0; 16]));
        let reply = r.board.recv();
        assert_eq!((reply[4], &reply[5..7]), (frame::RERROR, &[66u8, 0][..]), "9P2000.u gets Rerror");
        assert_eq!(r.counters.snapshot().backend_failures, 2);
        assert_eq!(r.counters.snapshot().error_replies, 3);
        drop(r.board);
        assert_eq!(r.exit.join().expect("join"), Exit::BoardGone);
    }

    #[test]
    fn a_stopped_loop_keeps_the_live_session_for_its_successor() {
        let server = server(echo);
        let (mut host, board) = sim::gadget(512, 16384);
        let stop = host.stop_switch();
        let counters = Arc::new(Counters::default());
        let limits = Limits { max_frame: 1 << 20, board_buflen: 16384, request_timeout: None, recover_window: std::time::Duration::ZERO };
        let board_backend = Arc::new(Direct(server.addr.clone()));
        let (b, c) = (board_backend.clone(), counters.clone());
        let first = std::thread::spawn(move || {
            let mut s = Session::new(limits);
            let exit = run(&mut host, b.as_ref(), &c, limits, &mut s);
            (exit, s, host)
        });
        board.send(&tversion(8192, "9P2000.u"));
        assert_eq!(board.recv()[4], RVERSION);
        board.send(&msg(120, 4, &[1, 0, 0, 0]));
        assert_eq!(board.recv(), msg(121, 4, &[1, 0, 0, 0]));
        stop.request();
        let (exit, mut session, mut host) = first.join().expect("join");
        assert_eq!(exit, Exit::Stopped);
        assert!(session.live && session.backend.is_some());
        assert_eq!((session.dialect, session.ceiling), (Dialect::Unix, 8192));
        // The successor carries on with the same server connection: the
        // board sees nothing happen, and the server sees no new session.
        host.renew_stop_switch();
        let c = counters.clone();
        let second = std::thread::spawn(move || run(&mut host, board_backend.as_ref(), &c, limits, &mut session));
        board.send(&msg(110, 5, &[9; 20]));
        assert_eq!(board.recv(), msg(111, 5, &[9; 20]));
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
        assert_eq!(counters.snapshot().error_replies, 0);
        drop(board);
        assert_eq!(second.join().expect("join"), Exit::BoardGone);
    }

    #[test]
    fn a_board_with_a_raised_buflen_gets_its_zlps_whatever_the_config_says() {
        let server = server(echo);
        // The board's receive request is 64 KiB; the config still says 16 KiB.
        let (mut host, board) = sim::gadget(512, 65536);
        let limits = Limits { max_frame: 1 << 20, board_buflen: 16384, request_timeout: None, recover_window: std::time::Duration::ZERO };
        let board_backend = Direct(server.addr.clone());
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let worker = std::thread::spawn(move || run(&mut host, &board_backend, &c, limits, &mut Session::new(limits)));
        board.send(&tversion(65536, "9P2000.L"));
        assert_eq!(board.recv()[4], RVERSION);
        for len in [16384usize, 16384 + 512, 32768, 49152, 65536 - 512, 65536, 4096, 511, 513] {
            let m = msg(116, 7, &vec![(len % 251) as u8; len - 7]);
            board.send(&m);
            let mut want = m.clone();
            want[4] = 117;
            assert_eq!(board.recv(), want, "R-message of {len} bytes");
        }
        assert_eq!(board.empty_receives(), 0, "no ZLP leaked into a later request");
        drop(board);
        assert_eq!(worker.join().expect("join"), Exit::BoardGone);
    }

    /// A worker on a board with a 1 MiB buflen whose host end offers
    /// in-place transfer memory of at most `limit` bytes live.
    fn start_with_mem(limit: usize) -> (sim::Board, std::thread::JoinHandle<Exit>, Server) {
        let server = server(echo);
        let (mut host, board) = sim::gadget(512, 1 << 20);
        host.offer_transfer_mem(limit);
        let limits = Limits { max_frame: 1 << 20, board_buflen: 1 << 20, request_timeout: None, recover_window: std::time::Duration::ZERO };
        let board_backend = Direct(server.addr.clone());
        let worker = std::thread::spawn(move || run(&mut host, &board_backend, &Counters::default(), limits, &mut Session::new(limits)));
        (board, worker, server)
    }

    fn echoed(board: &sim::Board, len: usize, tag: u16) {
        let m = msg(116, tag, &vec![(len % 251) as u8; len - 7]);
        board.send(&m);
        let mut want = m;
        want[4] = 117;
        assert!(board.recv() == want, "R-message of {len} bytes differs");
    }

    #[test]
    fn a_session_whose_msize_fits_moves_its_frames_in_place_and_a_larger_one_through_the_heap() {
        let (board, worker, _server) = start_with_mem(1 << 20);
        // Before any Tversion the ceiling is max_frame: nothing is mapped.
        // (Counts may include the worker's next read, already asked for.)
        board.send(&tversion(65536, "9P2000.L"));
        assert_eq!(board.recv()[4], RVERSION);
        assert_eq!(board.transfers_in_place_and_copied().1, 2, "the Tversion exchange is copied");
        for (i, len) in [65536usize, 65536 - 512, 16384, 513, 11].into_iter().enumerate() {
            echoed(&board, len, i as u16);
        }
        let (in_place, copied) = board.transfers_in_place_and_copied();
        assert_eq!(copied, 2, "every transfer of the session in place");
        assert!(in_place >= 10);
        // A session above TRANSFER_MEM_MAX: its frames go through the heap.
        board.send(&tversion(1 << 20, "9P2000.L"));
        assert_eq!(board.recv()[4], RVERSION);
        let (_, copied) = board.transfers_in_place_and_copied();
        echoed(&board, 200_000, 9);
        assert!(board.transfers_in_place_and_copied().1 > copied, "the large session is copied");
        // Back to a small session: in place again, and the frames intact.
        board.send(&tversion(8192, "9P2000.L"));
        assert_eq!(board.recv()[4], RVERSION);
        let (in_place, copied) = board.transfers_in_place_and_copied();
        echoed(&board, 8192, 10);
        let after = board.transfers_in_place_and_copied();
        assert!(after.0 > in_place && after.1 == copied, "in place again: {after:?}");
        drop(board);
        assert_eq!(worker.join().expect("join"), Exit::BoardGone);
    }

    #[test]
    fn without_enough_usbfs_memory_a_session_is_copied_and_served_the_same() {
        // Room for the T-message memory but not the R-message's too.
        let (board, worker, _server) = start_with_mem(70_000);
        board.send(&tversion(65536, "9P2000.L"));
        assert_eq!(board.recv()[4], RVERSION);
        let before = board.transfers_in_place_and_copied();
        echoed(&board, 65536, 1);
        echoed(&board, 100, 2);
        let after = board.transfers_in_place_and_copied();
        assert!(after.0 > before.0 && after.1 - before.1 == 2, "T-messages in place, R-messages copied: {before:?} → {after:?}");
        drop(board);
        assert_eq!(worker.join().expect("join"), Exit::BoardGone);
    }

    #[test]
    fn a_stray_reply_is_not_the_answer_to_the_next_request() {
        let r = start();
        r.board.send(&tversion(16384, "9P2000.L"));
        assert_eq!(r.board.recv()[4], RVERSION);
        r.board.send(&msg(120, 77, &[0; 4]));
        assert_eq!(r.board.recv()[4..7], [121, 77, 0]);
        assert_eq!((r.counters.snapshot().r_messages, r.counters.snapshot().served), (2, 1), "Rversion is not service");
        // The stray Rclunk tag 78 waits in the socket; a Tread tag 78 must
        // not get it: the session ends and the board gets an error reply.
        r.board.send(&msg(116, 78, &[0; 16]));
        assert_eq!(r.board.recv(), vec![11, 0, 0, 0, RLERROR, 78, 0, 5, 0, 0, 0]);
        assert_eq!(r.counters.snapshot().backend_failures, 1);
        drop(r.board);
        assert_eq!(r.exit.join().expect("join"), Exit::BoardGone);
    }

    #[test]
    fn a_request_past_its_deadline_fails_with_etimedout_and_ends_the_session() {
        let r = start_with(Some(std::time::Duration::from_millis(300)));
        r.board.send(&tversion(16384, "9P2000.L"));
        assert_eq!(r.board.recv()[4], RVERSION);
        r.board.send(&msg(116, 44, &[0; 16]));
        let etimedout = (libc::ETIMEDOUT as u32).to_le_bytes();
        assert_eq!(r.board.recv(), [&[11, 0, 0, 0, RLERROR, 44, 0][..], &etimedout].concat());
        // The session is lost: later requests fail fast with EIO.
        r.board.send(&msg(120, 3, &[0; 4]));
        assert_eq!(r.board.recv(), vec![11, 0, 0, 0, RLERROR, 3, 0, 5, 0, 0, 0]);
        assert_eq!(r.counters.snapshot().backend_failures, 1);
        // A request answered in time is untouched by the deadline.
        r.board.send(&tversion(16384, "9P2000.L"));
        assert_eq!(r.board.recv()[4], RVERSION);
        r.board.send(&msg(120, 4, &[0; 4]));
        assert_eq!(r.board.recv()[4..7], [121, 4, 0]);
        drop(r.board);
        assert_eq!(r.exit.join().expect("join"), Exit::BoardGone);
    }

    #[test]
    fn malformed_board_frames_end_the_session() {
        for bad in [0u32, 6, 0x7fff_ffff] {
            let r = start();
            let mut m = msg(120, 1, &[0; 9]);
            m[..4].copy_from_slice(&bad.to_le_bytes());
            r.board.send(&m);
            assert!(matches!(r.exit.join().expect("join"), Exit::Violation(_)), "size {bad}");
        }
    }
}
