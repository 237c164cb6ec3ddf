//! The supervisor's policy for one board's backend connections: which server
//! (the config's answer, swappable on reload), a connect bounded by
//! [`CONNECT_TIMEOUT`] (name resolution included), a capped exponential
//! backoff after failed attempts and a session rate limit (a burst, then one
//! per interval) so a board retrying its mount in a loop neither hammers the
//! server nor floods the log, and an abort switch that wakes the worker when
//! the board is removed or the daemon stops — whether it waits for a connect
//! in progress or for a reply on the live session.
//!
//! Runs on the worker's thread when the frame loop asks for a connection. It
//! must never touch USB.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::counters::Stamped;
use crate::ninep::backend::{AbortHandle, Backend, BackendAddr, BackendError, Dial};
use crate::ninep::confine::Policy;
use crate::ninep::forward::{BackendPolicy, ConnectError};

/// New server sessions a board may open in a row (each Tversion is one)…
pub const SESSION_BURST: u32 = 8;
/// …after which it gets at most one per interval; further Tversions get an
/// error reply (EAGAIN) without a connect, so a board looping on mount can
/// flood neither the shared server nor the journal.
pub const SESSION_INTERVAL: Duration = Duration::from_secs(2);

/// The session rate limit, a token bucket kept as one instant (GCRA): the
/// bucket is full again at `next`, and a session is allowed while `next`
/// lies less than a whole burst of intervals ahead.
#[derive(Default)]
struct SessionRate {
    next: Option<Instant>,
    /// Refused since the limit last started to apply (logged once per burst).
    refused: u64,
}

impl SessionRate {
    /// Takes one session at `now`; false if the board is over its rate.
    fn take(&mut self, now: Instant) -> bool {
        let next = self.next.map_or(now, |n| n.max(now));
        if next - now > SESSION_INTERVAL * (SESSION_BURST - 1) {
            return false;
        }
        self.next = Some(next + SESSION_INTERVAL);
        true
    }

    /// True when the board has been quiet long enough to have its burst back.
    fn rested(&self, now: Instant) -> bool {
        self.next.map_or(true, |n| n <= now)
    }
}

/// How long one connect attempt may take, name resolution included.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

enum Live {
    Idle,
    Dialing(std::sync::Arc<Dial>),
    Connected(AbortHandle),
}

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
    /// What stop() must break: the attempt in progress or the live session.
    live: Mutex<Live>,
    rate: Mutex<SessionRate>,
    stopped: AtomicBool,
    /// Wakes a recovery's backoff wait when stop() is called.
    wake: Condvar,
    connect_timeout: Duration,
    /// Connect attempts actually made (not refused by backoff).
    pub tries: AtomicU64,
    /// The last failure and when, for status and logs.
    pub last_error: Mutex<Option<Stamped>>,
    /// What the board's next session is confined to (None: nothing).
    policy: Mutex<Option<Arc<Policy>>>,
}

impl BoardBackend {
    pub fn new(addr: BackendAddr) -> BoardBackend {
        BoardBackend {
            addr: Mutex::new(addr),
            next: Mutex::new(None),
            attempts: Mutex::default(),
            live: Mutex::new(Live::Idle),
            rate: Mutex::default(),
            stopped: AtomicBool::new(false),
            wake: Condvar::new(),
            connect_timeout: CONNECT_TIMEOUT,
            tries: AtomicU64::new(0),
            last_error: Mutex::new(None),
            policy: Mutex::new(None),
        }
    }

    /// Confines the board's next 9P sessions as `p` says (config, reload).
    pub fn set_policy(&self, p: &Policy) {
        let mut cur = lock(&self.policy);
        if cur.as_deref() != Some(p).filter(|p| p.confines()) {
            *cur = p.confines().then(|| Arc::new(p.clone()));
        }
    }

    /// The same backend with another bound on each connect (tests).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> BoardBackend {
        self.connect_timeout = timeout;
        self
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

    /// Refuses new connections and breaks the one in progress or live, so a
    /// worker blocked on the server wakes up (board removed, daemon stopping).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let mut live = lock(&self.live);
        match std::mem::replace(&mut *live, Live::Idle) {
            Live::Idle => {}
            Live::Dialing(d) => d.cancel(),
            Live::Connected(a) => a.abort(),
        }
        // Under the same lock a recovery's backoff waits with.
        self.wake.notify_all();
    }

    /// Waits `d` unless stop() is called first; false if it was.
    fn pause(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        let mut live = lock(&self.live);
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            live = self.wake.wait_timeout(live, until - now).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn stopped_error() -> ConnectError {
        ConnectError { errno: libc::EIO as u32, message: "usb9pfsd is letting go of this board".into() }
    }

    /// One connect attempt, bounded by the timeout and woken by stop().
    fn dial(&self, addr: &BackendAddr) -> std::io::Result<Backend> {
        let dial = Dial::start(addr, self.connect_timeout)?;
        *lock(&self.live) = Live::Dialing(dial.clone());
        // stop() sets the flag before it looks at `live`: either it saw the
        // dial and cancelled it, or this sees the flag.
        if self.stopped.load(Ordering::SeqCst) {
            dial.cancel();
        }
        let b = dial.wait(self.connect_timeout)?;
        *lock(&self.live) = Live::Connected(b.abort_handle());
        if self.stopped.load(Ordering::SeqCst) {
            // Raced with stop(): do not leave a live connection behind.
            self.stop();
        }
        Ok(b)
    }

    /// The per-board session rate limit: refuses a new session beyond
    /// [`SESSION_BURST`] in a row, saying so once per burst.
    fn throttle(&self, now: Instant, addr: &BackendAddr) -> Result<(), ConnectError> {
        let mut rate = lock(&self.rate);
        if rate.refused > 0 && rate.rested(now) {
            tracing::info!(backend = %addr, "the board's mount rate is back to normal; {} new session(s) were refused", rate.refused);
            rate.refused = 0;
        }
        if rate.take(now) {
            return Ok(());
        }
        let err = ConnectError {
            errno: libc::EAGAIN as u32,
            message: format!(
                "refusing a new 9P session: the board opened {SESSION_BURST} in a row (is it looping on mount?); it gets at most one every {SESSION_INTERVAL:?} now"
            ),
        };
        rate.refused += 1;
        if rate.refused == 1 {
            tracing::warn!(
                backend = %addr,
                "{}; its mounts fail with EAGAIN until then. Check why the board keeps mounting (its kernel log, its init scripts)",
                err.message
            );
            self.record(&err.message);
        } else {
            tracing::debug!(backend = %addr, "{}", err.message);
        }
        Err(err)
    }

    fn record(&self, message: &str) {
        *lock(&self.last_error) = Some(Stamped { message: message.to_string(), at: SystemTime::now() });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking holder cannot leave these plain values inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BackendPolicy for BoardBackend {
    fn policy(&self) -> Option<Arc<Policy>> {
        lock(&self.policy).clone()
    }

    fn connect(&self) -> Result<Backend, ConnectError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(Self::stopped_error());
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
        self.throttle(now, &addr)?;
        self.tries.fetch_add(1, Ordering::Relaxed);
        match self.dial(&addr) {
            Err(_) if self.stopped.load(Ordering::SeqCst) => Err(Self::stopped_error()),
            Ok(b) => {
                *lock(&self.attempts) = Attempts::default();
                tracing::info!(backend = %addr, "new 9P session with the server (the board's Tversion)");
                Ok(b)
            }
            Err(e) => {
                *lock(&self.live) = Live::Idle;
                let err = ConnectError::from_io(&e, format!("cannot connect to 9P server {addr}"));
                let hint = if matches!(addr, BackendAddr::Managed(_)) {
                    "usb9pfsd starts that server itself: the error says what to change".to_string()
                } else if e.kind() == std::io::ErrorKind::TimedOut {
                    format!("the server did not accept within {:?}: check whether it is wedged, stopped (SIGSTOP) or overloaded, or its host unreachable", self.connect_timeout)
                } else {
                    "is the server running and reachable?".to_string()
                };
                let mut a = lock(&self.attempts);
                a.failures += 1;
                let delay = FIRST_BACKOFF.saturating_mul(1 << (a.failures - 1).min(16)).min(MAX_BACKOFF);
                a.retry_at = Some(now + delay);
                a.last = Some(err.clone());
                tracing::warn!(
                    backend = %addr,
                    "{}; the board's mount fails with errno {} ({hint}); mounts in the next {delay:?} fail without retrying",
                    err.message,
                    err.errno
                );
                self.record(&err.message);
                Err(err)
            }
        }
    }

    /// Registers a live connection a predecessor handed over, so stop()
    /// wakes a worker blocked on it like on one this backend made.
    fn took_over(&self, b: &Backend) {
        *lock(&self.live) = Live::Connected(b.abort_handle());
        if self.stopped.load(Ordering::SeqCst) {
            self.stop();
        }
    }

    fn reconnect(&self, attempt: u32, until: Instant) -> Result<Backend, ConnectError> {
        let addr = self.addr();
        if attempt > 0 {
            let backoff = FIRST_BACKOFF.saturating_mul(1 << (attempt - 1).min(16)).min(MAX_BACKOFF);
            if !self.pause(backoff.min(until.saturating_duration_since(Instant::now()))) {
                return Err(Self::stopped_error());
            }
        }
        if self.stopped.load(Ordering::SeqCst) {
            return Err(Self::stopped_error());
        }
        if Instant::now() >= until {
            return Err(ConnectError {
                errno: libc::EIO as u32,
                message: format!("9P server {addr} did not come back within the recover window"),
            });
        }
        self.tries.fetch_add(1, Ordering::Relaxed);
        match self.dial(&addr) {
            Err(_) if self.stopped.load(Ordering::SeqCst) => Err(Self::stopped_error()),
            Ok(b) => Ok(b),
            Err(e) => {
                *lock(&self.live) = Live::Idle;
                tracing::debug!(backend = %addr, "recovery: cannot connect yet: {e}");
                Err(ConnectError::from_io(&e, format!("cannot connect to 9P server {addr}")))
            }
        }
    }

    fn recovery_failed(&self, message: &str) {
        self.record(message);
    }

    fn stopping(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    fn lost(&self, err: &BackendError) {
        let addr = self.addr();
        let message = format!("lost the 9P server {addr} mid-session: {err}");
        if let BackendError::Timeout { .. } = err {
            tracing::error!(
                backend = %addr,
                "{message}: the server is wedged, stopped or overloaded. The request failed with ETIMEDOUT and the session is closed; \
                 the board's requests fail with EIO until it mounts again. Check the server, or raise request_timeout if such requests may take longer"
            );
        } else {
            tracing::error!(backend = %addr, "{message}; the board's requests now fail with EIO until it mounts again");
        }
        self.record(&message);
        *lock(&self.live) = Live::Idle;
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
    fn recovery_reconnects_to_the_sessions_server_past_backoff_and_rate_limit() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr: BackendAddr = l.local_addr().expect("a").to_string().parse().expect("addr");
        let b = BoardBackend::new(addr.clone());
        // A board over its session rate and in backoff: recovery is neither.
        for _ in 0..SESSION_BURST {
            let _ = b.connect();
        }
        assert!(b.connect().is_err(), "over the session rate");
        let other = TcpListener::bind("127.0.0.1:0").expect("bind");
        b.swap_for_next_session(other.local_addr().expect("a").to_string().parse().expect("addr"));
        let until = Instant::now() + Duration::from_secs(30);
        let _c = b.reconnect(0, until).expect("reconnect");
        assert_eq!(b.addr(), addr, "the session's server, not the reload's next one");
        assert!(b.pending().is_some(), "the reload's address still waits for the next mount");
    }

    #[test]
    fn a_recovery_waiting_out_its_backoff_stops_at_once_when_asked() {
        let b = std::sync::Arc::new(BoardBackend::new(format!("127.0.0.1:{}", closed_port()).parse().expect("addr")));
        let until = Instant::now() + Duration::from_secs(60);
        assert!(b.reconnect(0, until).is_err(), "nobody listens");
        let (tx, rx) = std::sync::mpsc::channel();
        let b2 = b.clone();
        // attempt 16: an 8 s backoff first
        std::thread::spawn(move || {
            let _ = tx.send((b2.reconnect(16, until), Instant::now()));
        });
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_millis(100)); // let it start waiting (not a synchronisation: either order passes)
        b.stop();
        let (r, at) = rx.recv_timeout(Duration::from_secs(20)).expect("bounded");
        assert!(r.is_err() && b.stopping());
        assert!(at.duration_since(t0) < Duration::from_secs(5), "woken by stop(), not by the backoff's end");
        let past = b.reconnect(0, Instant::now());
        assert!(past.is_err(), "a stopped backend never reconnects");
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
    fn a_session_that_ends_closes_its_server_connection() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let b = BoardBackend::new(l.local_addr().expect("a").to_string().parse().expect("addr"));
        let conn = b.connect().expect("connect");
        let (mut server_side, _) = l.accept().expect("accept");
        // Hang guard only: EOF must come at once.
        server_side.set_read_timeout(Some(std::time::Duration::from_secs(20))).expect("timeout");
        // forward drops the connection on a new Tversion, a lost session and
        // when the worker ends: the server must see the session end then,
        // not at the board's next mount.
        drop(conn);
        let mut byte = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut server_side, &mut byte).expect("EOF, not a timeout"), 0);
        b.stop();
    }

    /// Starts `b.connect()` on a thread, waits until the attempt is under
    /// way, stops the backend, and returns what connect() said.
    fn stop_during_connect(b: BoardBackend) -> Result<(), ConnectError> {
        let b = std::sync::Arc::new(b);
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = b.clone();
        std::thread::spawn(move || tx.send(worker.connect().map(|_| ())));
        // The attempt is counted just before it starts; stop() must wake it
        // whether it lands just before the socket call or inside it.
        let guard = Instant::now() + Duration::from_secs(20);
        while b.tries.load(Ordering::SeqCst) == 0 && Instant::now() < guard {
            std::thread::yield_now();
        }
        b.stop();
        rx.recv_timeout(Duration::from_secs(20)).expect("stop() must wake a connect in progress")
    }

    #[test]
    fn stop_wakes_a_connect_to_a_unix_server_that_stopped_accepting() {
        let hole = crate::ninep::backend::blackhole::unix();
        let b = BoardBackend::new(hole.addr.clone()).with_connect_timeout(Duration::from_secs(120));
        let e = stop_during_connect(b).expect_err("stopped");
        assert!(e.message.contains("letting go"), "{e:?}");
    }

    #[test]
    fn stop_wakes_a_connect_to_a_blackholed_tcp_server() {
        let hole = crate::ninep::backend::blackhole::tcp();
        let b = BoardBackend::new(hole.addr.clone()).with_connect_timeout(Duration::from_secs(120));
        let e = stop_during_connect(b).expect_err("stopped");
        assert!(e.message.contains("letting go"), "{e:?}");
    }

    #[test]
    fn a_connect_that_times_out_fails_the_mount_with_etimedout() {
        let hole = crate::ninep::backend::blackhole::unix();
        let b = BoardBackend::new(hole.addr.clone()).with_connect_timeout(Duration::from_millis(300));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(b.connect().map(|_| ())));
        let e = rx.recv_timeout(Duration::from_secs(20)).expect("bounded").expect_err("nobody accepts");
        assert_eq!(e.errno, libc::ETIMEDOUT as u32, "{e:?}");
    }

    #[test]
    fn a_board_looping_on_mount_is_throttled() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let b = BoardBackend::new(l.local_addr().expect("a").to_string().parse().expect("addr"));
        for i in 0..SESSION_BURST {
            assert!(b.connect().is_ok(), "session {i} of the burst");
        }
        let e = b.connect().err().expect("beyond the burst");
        assert_eq!(e.errno, libc::EAGAIN as u32, "{e:?}");
        assert!(e.message.contains("in a row"), "{e:?}");
        assert_eq!(b.tries.load(Ordering::Relaxed), SESSION_BURST as u64, "the refused mount must not reach the server");
    }

    #[test]
    fn session_rate_is_a_burst_then_one_per_interval() {
        let mut bucket = SessionRate::default();
        let t0 = Instant::now();
        for _ in 0..SESSION_BURST {
            assert!(bucket.take(t0));
        }
        assert!(!bucket.take(t0));
        assert!(!bucket.take(t0 + SESSION_INTERVAL / 2));
        assert!(bucket.take(t0 + SESSION_INTERVAL));
        assert!(!bucket.take(t0 + SESSION_INTERVAL));
        // Quiet for a whole burst's worth: the full burst is back.
        let later = t0 + SESSION_INTERVAL * (SESSION_BURST + 1);
        for _ in 0..SESSION_BURST {
            assert!(bucket.take(later));
        }
        assert!(!bucket.take(later));
    }

    #[test]
    fn connect_timeouts_and_missed_deadlines_are_logged_with_the_board_and_what_to_do() {
        let out = crate::daemon::supervisor::tests::captured_log();
        let hole = crate::ninep::backend::blackhole::unix();
        let b = BoardBackend::new(hole.addr.clone()).with_connect_timeout(Duration::from_millis(300));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // As worker.rs does for the board's thread.
            let span = tracing::info_span!("board", serial = %"log-timeout-1", busaddr = %"009-009");
            let _enter = span.enter();
            let _ = b.connect();
            b.lost(&BackendError::Timeout { after: Duration::from_secs(7), kind: 116 });
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(20)).expect("bounded");
        let text = String::from_utf8(lock(&out.0).clone()).expect("utf8");
        let ours: Vec<&str> = text.lines().filter(|l| l.contains("serial=log-timeout-1") && l.contains("busaddr=009-009")).collect();
        assert!(
            ours.iter()
                .any(|l| l.contains("backlog is full") && l.contains("errno 110") && l.contains("check whether it is wedged, stopped")),
            "{ours:#?}"
        );
        assert!(ours.iter().any(|l| l.contains("did not answer a Tread within 7s") && l.contains("raise request_timeout")), "{ours:#?}");
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
