//! The supervisor's policy for one board's backend connections: which server
//! (the config's answer, swappable on reload), a bounded connect, a capped
//! exponential backoff after failed attempts so a board retrying its mount in
//! a loop neither hammers the server nor floods the log, and an abort switch
//! that wakes the worker when the board is removed or the daemon stops.
//!
//! Runs on the worker's thread when the frame loop asks for a connection. It
//! must never touch USB.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::backend::{AbortHandle, Backend, BackendAddr, BackendError};
use crate::forward::{Backends, ConnectError};
use crate::status::Stamped;

/// How long one connect attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

#[derive(Default)]
struct Attempts {
    failures: u32,
    retry_at: Option<Instant>,
    last: Option<ConnectError>,
}

/// One board's backend, as the supervisor configured it.
pub struct BoardBackend {
    addr: Mutex<BackendAddr>,
    /// A reload's new address, waiting for the board's next session.
    next: Mutex<Option<BackendAddr>>,
    attempts: Mutex<Attempts>,
    abort: Mutex<Option<AbortHandle>>,
    stopped: AtomicBool,
    /// Connect attempts actually made (not refused by backoff).
    pub tries: AtomicU64,
    /// The last failure and when, for status and logs.
    pub last_error: Mutex<Option<Stamped>>,
}

impl BoardBackend {
    pub fn new(addr: BackendAddr) -> BoardBackend {
        BoardBackend {
            addr: Mutex::new(addr),
            next: Mutex::new(None),
            attempts: Mutex::default(),
            abort: Mutex::new(None),
            stopped: AtomicBool::new(false),
            tries: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    pub fn addr(&self) -> BackendAddr {
        lock(&self.addr).clone()
    }

    /// Points the board's next 9P session at `addr` (config reload). The live
    /// session, if any, stays on the server it began with: a 9P session's
    /// fids live in that server and cannot move. Asking for the address in
    /// use cancels a pending change.
    pub fn swap_for_next_session(&self, addr: BackendAddr) {
        // Lock order as in take_pending: addr, then next.
        let current = lock(&self.addr);
        *lock(&self.next) = if *current == addr { None } else { Some(addr) };
    }

    /// The address the next session will use, if a reload changed it.
    pub fn pending(&self) -> Option<BackendAddr> {
        lock(&self.next).clone()
    }

    /// Takes a pending address into use; the old server's backoff does not
    /// hold against the new one.
    fn take_pending(&self) -> BackendAddr {
        let mut addr = lock(&self.addr);
        if let Some(next) = lock(&self.next).take() {
            tracing::info!(backend = %next, "the board's new session goes to {next} (config reload; was {addr})");
            *addr = next;
            *lock(&self.attempts) = Attempts::default();
        }
        addr.clone()
    }

    /// Refuses new connections and breaks the live one, so a worker blocked
    /// on the server wakes up (board removed, daemon stopping).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(a) = lock(&self.abort).take() {
            a.abort();
        }
    }

    fn record(&self, message: &str) {
        *lock(&self.last_error) = Some(Stamped { message: message.to_string(), at: SystemTime::now() });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking holder cannot leave these plain values inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Backends for BoardBackend {
    fn connect(&self) -> Result<Backend, ConnectError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(ConnectError { errno: libc::EIO as u32, message: "usb9pfsd is letting go of this board".into() });
        }
        let now = Instant::now();
        let addr = self.take_pending();
        {
            let a = lock(&self.attempts);
            if let (Some(at), Some(last)) = (a.retry_at, &a.last) {
                if now < at {
                    tracing::debug!(backend = %addr, "refusing a mount during backoff ({:?} left): {}", at - now, last.message);
                    return Err(last.clone());
                }
            }
        }
        self.tries.fetch_add(1, Ordering::Relaxed);
        match Backend::connect(&addr, CONNECT_TIMEOUT) {
            Ok(b) => {
                *lock(&self.attempts) = Attempts::default();
                *lock(&self.abort) = b.abort_handle().ok();
                if self.stopped.load(Ordering::SeqCst) {
                    // Raced with stop(): do not leave a live connection behind.
                    self.stop();
                }
                tracing::info!(backend = %addr, "board mounted: new 9P session with the server");
                Ok(b)
            }
            Err(e) => {
                let err = ConnectError::from_io(&e, format!("cannot connect to 9P server {addr}"));
                let mut a = lock(&self.attempts);
                a.failures += 1;
                let delay = FIRST_BACKOFF.saturating_mul(1 << (a.failures - 1).min(16)).min(MAX_BACKOFF);
                a.retry_at = Some(now + delay);
                a.last = Some(err.clone());
                tracing::warn!(
                    backend = %addr,
                    "{}; the board's mount fails with errno {} (is the server running and reachable?); mounts in the next {delay:?} fail without retrying",
                    err.message,
                    err.errno
                );
                self.record(&err.message);
                Err(err)
            }
        }
    }

    fn lost(&self, err: &BackendError) {
        let addr = self.addr();
        let message = format!("lost the 9P server {addr} mid-session: {err}");
        tracing::error!(backend = %addr, "{message}; the board's requests now fail with EIO until it mounts again");
        self.record(&message);
        *lock(&self.abort) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn closed_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    }

    #[test]
    fn refused_connect_backs_off_without_retrying() {
        let port = closed_port();
        let b = BoardBackend::new(format!("127.0.0.1:{port}").parse().expect("addr"));
        let first = b.connect().err().expect("refused");
        assert_eq!(first.errno, libc::ECONNREFUSED as u32);
        let second = b.connect().err().expect("still refused");
        assert_eq!(second, first);
        assert_eq!(b.tries.load(Ordering::Relaxed), 1, "the second mount must not hit the server");
        assert!(lock(&b.last_error).as_ref().is_some_and(|e| e.message.contains(&port.to_string())));
    }

    #[test]
    fn a_swapped_address_is_used_from_the_next_connect_on() {
        let old = TcpListener::bind("127.0.0.1:0").expect("bind");
        let new = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = |l: &TcpListener| -> BackendAddr { l.local_addr().expect("a").to_string().parse().expect("addr") };
        let b = BoardBackend::new(addr(&old));
        let live = b.connect().expect("old server");
        let (mut on_old, _) = old.accept().expect("accept");
        b.swap_for_next_session(addr(&old));
        assert_eq!(b.pending(), None, "the address in use is no change");
        b.swap_for_next_session(addr(&new));
        assert_eq!(b.pending(), Some(addr(&new)));
        assert_eq!(b.addr(), addr(&old), "the live session keeps its server");
        let _second = b.connect().expect("new server");
        new.accept().expect("the next session goes to the new server");
        assert_eq!((b.pending(), b.addr()), (None, addr(&new)));
        // The first session's connection was not touched by the swap.
        on_old.set_nonblocking(true).expect("nonblocking");
        let mut byte = [0u8; 1];
        let still_open = matches!(std::io::Read::read(&mut on_old, &mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(still_open);
        drop(live);
    }

    #[test]
    fn a_swap_escapes_the_old_servers_backoff() {
        let b = BoardBackend::new(format!("127.0.0.1:{}", closed_port()).parse().expect("addr"));
        assert!(b.connect().is_err());
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        b.swap_for_next_session(l.local_addr().expect("a").to_string().parse().expect("addr"));
        assert!(b.connect().is_ok(), "no waiting out the old server's backoff");
    }

    #[test]
    fn stop_refuses_and_wakes() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let b = BoardBackend::new(l.local_addr().expect("a").to_string().parse().expect("addr"));
        let conn = b.connect();
        assert!(conn.is_ok());
        let (mut server_side, _) = l.accept().expect("accept");
        b.stop();
        // The worker's socket is shut down: the server sees EOF.
        let mut byte = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut server_side, &mut byte).expect("read"), 0);
        assert!(b.connect().is_err());
    }
}
