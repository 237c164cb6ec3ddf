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
use crate::status::{Activity, Counters, IN_FLIGHT};

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
        // Until this iteration ends, the board is owed a reply.
        let _pending = IN_FLIGHT.enter();
        let _busy = counters.busy();
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
            counters.session_ended();
            s.ceiling = limits.max_frame;
            if let Some(v) = frame::version(t) {
                s.dialect = v.dialect;
                s.ceiling = s.ceiling.min(v.msize.max(frame::HEADER_LEN as u32));
            }
            counters.set_activity(Activity::Connecting);
            let connected = backends.connect();
            counters.set_activity(Activity::Forwarding);
            match connected {
                Ok(b) => {
                    s.backend = Some(b);
                    s.live = true;
                    counters.sessions.fetch_add(1, Ordering::Relaxed);
                    counters.session_began();
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
                counters.session_ended();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendAddr;
    use crate::frame::{RLERROR, RVERSION};
    use crate::sim;
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

    impl Backends for Direct {
        fn connect(&self) -> Result<Backend, ConnectError> {
            Backend::connect(&self.0, std::time::Duration::from_secs(5))
                .map_err(|e| ConnectError::from_io(&e, "connect".into()))
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
    /// (116) with tag 99 gets an oversized reply header; tag 66 hangs up.
    fn echo(t: &[u8]) -> Option<Vec<u8>> {
        let tag = u16::from_le_bytes([t[5], t[6]]);
        match tag {
            66 => None,
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
        let server = server(echo);
        let (mut host, board) = sim::gadget(512, 16384);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let backends = Direct(server.addr.clone());
        let limits = Limits { max_frame: 1 << 20, board_buflen: 16384 };
        let exit = std::thread::spawn(move || run(&mut host, &backends, &c, limits));
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
