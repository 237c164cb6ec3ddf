//! The frame loop of one board: take a T-message from the board, carry it to
//! the 9P server, carry the R-message back — one request in flight, exactly
//! as the board's transport works.
//!
//! When the server cannot answer (unreachable, died mid-session, sent
//! garbage) the loop answers the board itself with an error reply carrying the
//! same tag, so the board's syscall fails with EIO instead of waiting forever.
//! After a lost server session every request fails fast until the board starts
//! a new one with Tversion (umount + mount), which opens a fresh connection.
//!
//! It must never decide policy — which server, when to retry, what to log
//! about connection attempts: it asks [`Backends`] and reports to it. It must
//! never allocate per message: both buffers are allocated once per worker.

use std::io;
use std::sync::atomic::Ordering;

use crate::backend::{Backend, BackendError};
use crate::frame::{self, Decoded, Dialect, FrameError, ERROR_REPLY_MAX, TVERSION};
use crate::pipe::{self, RecvError, UsbError, UsbPipe};
use crate::status::Counters;

/// Size limits of one board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Hard ceiling for any frame, before and regardless of msize.
    pub max_frame: u32,
    /// The board's usb9pfs `buflen` (its receive request size).
    pub board_buflen: u32,
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
        let errno = e.raw_os_error().filter(|n| *n > 0).unwrap_or(libc::EIO) as u32;
        ConnectError { errno, message: format!("{what}: {e}") }
    }
}

/// The supervisor's side of a board's backend: where to connect, whether to
/// try now, and what to do about failures.
pub trait Backends: Send + Sync {
    /// A fresh connection for a new 9P session.
    fn connect(&self) -> Result<Backend, ConnectError>;
    /// The live session's connection failed.
    fn lost(&self, err: &BackendError);
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
}

/// Where the session with the server stands.
struct Session {
    backend: Option<Backend>,
    dialect: Dialect,
    ceiling: u32,
    /// True while the board has a session the server knows about.
    live: bool,
}

/// Runs the loop until the board goes away or breaks the protocol.
pub fn run<P: UsbPipe + ?Sized>(pipe: &mut P, backends: &dyn Backends, counters: &Counters, limits: Limits) -> Exit {
    let mut tbuf = vec![0u8; pipe::request_len(limits.max_frame, pipe.max_packet_size())];
    let mut rbuf = vec![0u8; (limits.max_frame as usize).max(ERROR_REPLY_MAX)];
    let mut s = Session { backend: None, dialect: Dialect::Linux, ceiling: limits.max_frame, live: false };
    loop {
        let n = match pipe::recv_message(pipe, &mut tbuf, s.ceiling) {
            Ok(n) => n,
            Err(RecvError::Usb(UsbError::Gone)) => return Exit::BoardGone,
            Err(RecvError::Usb(e)) => return Exit::Usb(e),
            Err(RecvError::Frame(e)) => return Exit::Violation(e),
        };
        let t = &tbuf[..n];
        tracing::trace!(target: "usb9pfsd::wire", "board → server {}", Decoded(t));
        counters.t_messages.fetch_add(1, Ordering::Relaxed);
        counters.t_bytes.fetch_add(n as u64, Ordering::Relaxed);
        let Some(h) = frame::header(t) else {
            return Exit::Violation(FrameError::TooSmall { size: n as u32 });
        };

        if h.kind == TVERSION {
            // A new 9P session (mount, or umount + mount without replug):
            // whatever the server knew of the old one is gone.
            s.backend = None;
            s.live = false;
            s.ceiling = limits.max_frame;
            if let Some(v) = frame::version(t) {
                s.dialect = v.dialect;
                s.ceiling = s.ceiling.min(v.msize.max(frame::HEADER_LEN as u32));
            }
            match backends.connect() {
                Ok(b) => {
                    s.backend = Some(b);
                    s.live = true;
                    counters.sessions.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    if let Err(exit) = reply_error(pipe, &mut rbuf, &s, h.tag, e.errno, counters, limits) {
                        return exit;
                    }
                    continue;
                }
            }
        }

        let Some(backend) = s.backend.as_mut().filter(|_| s.live) else {
            // No Tversion since the worker started, or the server session was
            // lost: nothing the server could answer. Fail fast.
            if let Err(exit) = reply_error(pipe, &mut rbuf, &s, h.tag, frame::EIO, counters, limits) {
                return exit;
            }
            continue;
        };

        let r_len = match backend.exchange(t, &mut rbuf, s.ceiling) {
            Ok(m) => m,
            Err(e) => {
                backends.lost(&e);
                counters.backend_failures.fetch_add(1, Ordering::Relaxed);
                s.backend = None;
                s.live = false;
                if let Err(exit) = reply_error(pipe, &mut rbuf, &s, h.tag, frame::EIO, counters, limits) {
                    return exit;
                }
                continue;
            }
        };
        let r = &rbuf[..r_len];
        if h.kind == TVERSION {
            if let Some(v) = frame::version(r) {
                s.ceiling = s.ceiling.min(v.msize.max(frame::HEADER_LEN as u32));
            }
        }
        tracing::trace!(target: "usb9pfsd::wire", "server → board {}", Decoded(r));
        // Counted before the transfer: once the board has the reply, anyone
        // it tells must already see the count.
        counters.r_messages.fetch_add(1, Ordering::Relaxed);
        counters.r_bytes.fetch_add(r_len as u64, Ordering::Relaxed);
        if let Err(e) = pipe::send_message(pipe, r, limits.board_buflen) {
            return usb_exit(e);
        }
    }
}

fn reply_error<P: UsbPipe + ?Sized>(
    pipe: &mut P,
    buf: &mut [u8],
    s: &Session,
    tag: u16,
    errno: u32,
    counters: &Counters,
    limits: Limits,
) -> Result<(), Exit> {
    let n = frame::error_reply(buf, s.dialect, tag, errno);
    tracing::trace!(target: "usb9pfsd::wire", "usb9pfsd → board {} errno={errno}", Decoded(&buf[..n]));
    counters.error_replies.fetch_add(1, Ordering::Relaxed);
    pipe::send_message(pipe, &buf[..n], limits.board_buflen).map_err(usb_exit)
}

fn usb_exit(e: UsbError) -> Exit {
    match e {
        UsbError::Gone => Exit::BoardGone,
        e => Exit::Usb(e),
    }
}
