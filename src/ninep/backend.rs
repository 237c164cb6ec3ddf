//! Connections to 9P servers (diod, nfs-ganesha): where a backend is
//! (`host:port` resolved at connect time, or `unix:/path`), how to reach it
//! (TCP_NODELAY, keepalive and TCP_USER_TIMEOUT so a vanished server is
//! noticed, a connect bounded by its timeout — name resolution included —
//! that another thread can abandon), and moving whole frames over it, each
//! exchange checked (size, tag, type) and optionally bounded by a deadline.
//!
//! It must never retry, back off or log policy decisions (that is the
//! supervisor's), and never allocate per message: frames are read into the
//! caller's buffer after their size was checked.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::ninep::frame::{self, FrameError};
use crate::ninep::managed::{self, ManagedServer};

/// The longest unix socket path the kernel can connect to: `sun_path` is 108
/// bytes including the terminating NUL.
pub const SUN_PATH_MAX: usize = 107;

/// Where a board's 9P server listens.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum BackendAddr {
    /// `host:port`; the host is resolved at each connect.
    Tcp { host: String, port: u16 },
    /// `unix:/path/to/socket`.
    Unix(PathBuf),
    /// `managed`: a diod this daemon starts for each connection, exporting
    /// this directory (`ninep/managed.rs`). The config gives it the board's
    /// `export` (`Config::resolve`); empty until then.
    Managed(PathBuf),
}

impl BackendAddr {
    /// The word a config or `serve --backend` writes for a managed server.
    pub const MANAGED: &'static str = "managed";
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Brackets where the bare form would parse as something else.
            BackendAddr::Tcp { host, port } if host.contains(':') || host == "unix" => write!(f, "[{host}]:{port}"),
            BackendAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            BackendAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            BackendAddr::Managed(dir) if dir.as_os_str().is_empty() => f.write_str(BackendAddr::MANAGED),
            BackendAddr::Managed(dir) => write!(f, "{}:{}", BackendAddr::MANAGED, dir.display()),
        }
    }
}

impl FromStr for BackendAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == BackendAddr::MANAGED {
            return Ok(BackendAddr::Managed(PathBuf::new()));
        }
        if let Some(dir) = s.strip_prefix("managed:") {
            if !dir.starts_with('/') || dir.contains('\0') {
                return Err(format!("backend {s:?}: a managed export must be an absolute directory, like managed:/srv/rootfs"));
            }
            return Ok(BackendAddr::Managed(PathBuf::from(dir)));
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err(format!("backend {s:?}: a unix socket path must be absolute, like unix:/run/diod.sock"));
            }
            if path.len() > SUN_PATH_MAX {
                return Err(format!(
                    "backend {s:?}: the unix socket path is {} bytes, but the kernel cannot connect to a path longer than {SUN_PATH_MAX} bytes (sun_path); use a shorter path, e.g. under /run",
                    path.len()
                ));
            }
            if path.contains('\0') {
                return Err(format!("backend {s:?}: a unix socket path cannot contain a NUL byte"));
            }
            return Ok(BackendAddr::Unix(PathBuf::from(path)));
        }
        let bad = || format!("backend {s:?} is not host:port, [ipv6]:port or unix:/path");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let host = match host.strip_prefix('[') {
            Some(h) => h.strip_suffix(']').ok_or_else(bad)?,
            None if host.contains(':') => return Err(bad()),
            None => host,
        };
        // Brackets inside a host name could not be shown back in a form
        // that parses to the same address.
        if host.is_empty() || host.contains(['[', ']']) {
            return Err(bad());
        }
        let port: u16 = port.parse().map_err(|_| bad())?;
        if port == 0 {
            return Err(format!("backend {s:?}: port 0 cannot be connected to"));
        }
        Ok(BackendAddr::Tcp { host: host.to_string(), port })
    }
}

impl<'de> serde::Deserialize<'de> for BackendAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for BackendAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Backend failures while a session is live.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("9P server closed the connection")]
    Closed,
    #[error("9P server connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("9P server sent a bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("9P server answered tag {got} while tag {want} was pending")]
    WrongTag { want: u16, got: u16 },
    #[error("9P server answered a {} with a {}", frame::type_name(*sent), frame::type_name(*got))]
    WrongType { sent: u8, got: u8 },
    #[error("9P server did not answer a {} within {after:?} (request_timeout)", frame::type_name(*kind))]
    Timeout { after: Duration, kind: u8 },
    #[error("9P server sent {bytes} bytes nobody asked for after its previous reply (an extra reply?)")]
    Unsolicited { bytes: usize },
}

impl BackendError {
    /// The errno the board's pending request fails with.
    pub fn errno(&self) -> u32 {
        match self {
            BackendError::Timeout { .. } => libc::ETIMEDOUT as u32,
            _ => frame::EIO,
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// TCP keepalive: probe a connection idle this long, then every
/// [`KEEPALIVE_INTERVAL`], and give up after [`KEEPALIVE_PROBES`] unanswered
/// probes. A server whose host vanished (power loss, network gone, no RST)
/// while the board was idle is noticed within 10 + 3 × 5 = 25 s, so the
/// board's next request fails at once instead of stalling.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_PROBES: u32 = 3;
/// TCP_USER_TIMEOUT: a request the server's host has not acknowledged for
/// this long breaks the connection (instead of tcp_retries2, about 15
/// minutes), so a board whose server vanished mid-request gets EIO in 25 s.
/// Neither this nor keepalive can notice a server process that is alive
/// but silent (wedged, SIGSTOPped): its kernel still acknowledges. Only
/// `request_timeout` bounds that.
pub const USER_TIMEOUT: Duration = Duration::from_secs(25);

/// One open connection to a 9P server. Dropping it closes the socket: the
/// server's session (its fids, its locks) ends with it.
pub struct Backend {
    /// The only strong reference: [`AbortHandle`]s hold weak ones, so they
    /// never keep a connection open after its session ended.
    stream: Arc<Stream>,
    /// Bytes the server sent past the end of the last reply (read together
    /// with it): the next exchange fails instead of taking them as its answer.
    unsolicited: usize,
    /// The managed diod at the other end, if this daemon started it. Declared
    /// after `stream`, so the socket closes (diod sees EOF) before the server
    /// is reaped.
    server: Option<ManagedServer>,
}

/// A handle that can wake a worker blocked on its backend socket, without
/// keeping that socket open.
pub struct AbortHandle(Weak<Stream>);

impl AbortHandle {
    /// Shuts the socket down, if it is still open; the worker's pending read
    /// returns at once.
    pub fn abort(&self) {
        let Some(stream) = self.0.upgrade() else { return };
        let _ = match &*stream {
            Stream::Tcp(s) => s.shutdown(Shutdown::Both),
            Stream::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Backend {
    /// Connects on the calling thread. The connect calls together take at
    /// most `timeout` (each resolved address gets what is left; a unix
    /// listener that stopped accepting fails it with `TimedOut`), but name
    /// resolution is bounded only by the resolver: callers that must not
    /// wait longer than `timeout`, or must be able to give up, use [`Dial`].
    pub fn connect(addr: &BackendAddr, timeout: Duration) -> io::Result<Backend> {
        let deadline = Instant::now() + timeout;
        let stream = match addr {
            BackendAddr::Managed(dir) => {
                let (stream, server) = managed::spawn(dir)?;
                return Ok(Backend { stream: Arc::new(Stream::Unix(stream)), unsolicited: 0, server: Some(server) });
            }
            BackendAddr::Unix(path) => Stream::Unix(connect_unix(path, deadline)?),
            BackendAddr::Tcp { host, port } => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} resolved to no address"));
                let mut found = None;
                for sa in (host.as_str(), *port).to_socket_addrs()? {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        last = io::Error::new(io::ErrorKind::TimedOut, format!("no address of {host} answered within {timeout:?}"));
                        break;
                    }
                    match TcpStream::connect_timeout(&sa, left) {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                let s = found.ok_or(last)?;
                // One request in flight: every delayed segment is a stalled board.
                s.set_nodelay(true)?;
                notice_vanished_peer(s.as_raw_fd())?;
                Stream::Tcp(s)
            }
        };
        Ok(Backend { stream: Arc::new(stream), unsolicited: 0, server: None })
    }

    /// A live connection a predecessor handed over: a connected stream
    /// socket, TCP or unix by its address family.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> io::Result<Backend> {
        // SAFETY: getsockname into storage we own, with its size.
        let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if unsafe { libc::getsockname(fd.as_raw_fd(), (&mut ss as *mut libc::sockaddr_storage).cast(), &mut len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = match ss.ss_family as libc::c_int {
            libc::AF_UNIX => Stream::Unix(UnixStream::from(fd)),
            libc::AF_INET | libc::AF_INET6 => Stream::Tcp(TcpStream::from(fd)),
            f => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("socket of address family {f} is no 9P server connection")))
            }
        };
        Ok(Backend { stream: Arc::new(stream), unsolicited: 0, server: None })
    }

    /// Bytes the server sent past its last reply, already read (a session
    /// with any is not clean: it must not be handed over as live).
    pub fn unsolicited(&self) -> usize {
        self.unsolicited
    }

    /// The socket's descriptor (to hand it to a successor; it stays ours).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        match &*self.stream {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    /// A backend on an already connected unix socket: for tests and the fuzz
    /// targets, which play the server on the other end of a socket pair.
    #[doc(hidden)]
    pub fn from_unix(stream: UnixStream) -> Backend {
        Backend { stream: Arc::new(Stream::Unix(stream)), unsolicited: 0, server: None }
    }

    /// The managed diod's process id, if this daemon started the server.
    pub fn managed_pid(&self) -> Option<u32> {
        self.server.as_ref().map(ManagedServer::pid)
    }

    /// The managed diod at the other end of a handed-over connection, to
    /// be reaped with it.
    pub fn with_server(mut self, server: Option<ManagedServer>) -> Backend {
        self.server = server;
        self
    }

    /// A handle that can abort this connection from another thread.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle(Arc::downgrade(&self.stream))
    }

    /// Sends one T-message and reads its R-message into `buf`, returning its
    /// length. The reply's size is checked against `ceiling` before the rest
    /// is read; its tag must match the request's and its type must answer it
    /// (T+1, or Rlerror/Rerror), or a stray reply would reach the board as
    /// the answer to its next request with that tag.
    ///
    /// With `limit`, sending and the whole reply must fit in it, measured
    /// from the send: each read and write first waits in poll(2) for the
    /// time left, so no extra syscall is made without a limit.
    pub fn exchange(&mut self, t: &[u8], buf: &mut [u8], ceiling: u32, limit: Option<Duration>) -> Result<usize, BackendError> {
        if self.unsolicited > 0 {
            return Err(BackendError::Unsolicited { bytes: self.unsolicited });
        }
        let kind = frame::header(t).map_or(0, |h| h.kind);
        let deadline = limit.map(|after| Deadline { at: Instant::now() + after, after, kind });
        self.write_all(t, deadline)?;
        let n = self.recv(buf, ceiling, deadline)?;
        if let (Some(t), Some(r)) = (frame::header(t), frame::header(&buf[..n])) {
            if t.tag != r.tag {
                return Err(BackendError::WrongTag { want: t.tag, got: r.tag });
            }
            if !frame::answers(t.kind, r.kind) {
                return Err(BackendError::WrongType { sent: t.kind, got: r.kind });
            }
        }
        Ok(n)
    }

    /// Reads one reply. The first read takes the header and as much of the
    /// body as has arrived (usually all of it: one system call); only a
    /// reply that arrived in pieces needs more. Reads never go past
    /// `ceiling` bytes, and past the first one never past the declared size.
    fn recv(&mut self, buf: &mut [u8], ceiling: u32, deadline: Option<Deadline>) -> Result<usize, BackendError> {
        let ceiling = (ceiling as usize).min(buf.len());
        // At least the size field, never past the buffer.
        let first = ceiling.max(4).min(buf.len());
        let mut got = 0;
        let size = loop {
            if got >= first {
                return Err(FrameError::TooSmall { size: got as u32 }.into());
            }
            got += self.read_some(&mut buf[got..first], deadline)?;
            if let Some(size) = frame::peek_size(&buf[..got]) {
                break size;
            }
        };
        frame::check_size(size, ceiling as u32)?;
        let size = size as usize;
        while got < size {
            got += self.read_some(&mut buf[got..size], deadline)?;
        }
        // One request is in flight: nothing may follow its reply.
        self.unsolicited = got - size;
        Ok(size)
    }

    fn fd(&self) -> RawFd {
        match &*self.stream {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    fn write_all(&mut self, mut b: &[u8], deadline: Option<Deadline>) -> Result<(), BackendError> {
        let Some(deadline) = deadline else {
            return match &*self.stream {
                Stream::Tcp(s) => (&mut &*s).write_all(b),
                Stream::Unix(s) => (&mut &*s).write_all(b),
            }
            .map_err(BackendError::Io);
        };
        while !b.is_empty() {
            deadline.wait(self.fd(), libc::POLLOUT)?;
            // A blocking write would wait for room for all of b: write what
            // fits now, and wait again, bounded, for the rest.
            // SAFETY: b is valid for b.len() bytes.
            let n = unsafe { libc::send(self.fd(), b.as_ptr().cast(), b.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
            if n >= 0 {
                b = b.get(n as usize..).unwrap_or_default();
                continue;
            }
            let e = io::Error::last_os_error();
            if !matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock) {
                return Err(BackendError::Io(e));
            }
        }
        Ok(())
    }

    /// One read of at least one byte (waiting, bounded by the deadline if
    /// there is one); end of stream is [`BackendError::Closed`].
    fn read_some(&mut self, b: &mut [u8], deadline: Option<Deadline>) -> Result<usize, BackendError> {
        loop {
            if let Some(deadline) = deadline {
                deadline.wait(self.fd(), libc::POLLIN)?;
            }
            // Without a deadline this blocks; with one the socket is readable
            // (or at EOF) and it returns at once.
            let r = match &*self.stream {
                Stream::Tcp(s) => (&mut &*s).read(b),
                Stream::Unix(s) => (&mut &*s).read(b),
            };
            match r {
                Ok(0) => return Err(BackendError::Closed),
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BackendError::Io(e)),
            }
        }
    }
}

/// When the pending request's reply must be in (`request_timeout`).
#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    after: Duration,
    /// The request's type, for the error.
    kind: u8,
}

impl Deadline {
    /// Waits in poll(2) until `fd` is ready for `events` or the deadline
    /// passes. Readiness includes errors and hang-ups: the read or write
    /// that follows reports them.
    fn wait(&self, fd: RawFd, events: libc::c_short) -> Result<(), BackendError> {
        loop {
            let left = self.at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(BackendError::Timeout { after: self.after, kind: self.kind });
            }
            // Rounded up: poll must not return before the deadline and spin.
            let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
            let mut p = libc::pollfd { fd, events, revents: 0 };
            // SAFETY: one valid pollfd.
            match unsafe { libc::poll(&mut p, 1, ms) } {
                0 => {}
                n if n > 0 => return Ok(()),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(BackendError::Io(e));
                    }
                }
            }
        }
    }
}

/// A connection attempt on its own short-lived thread: the caller waits at
/// most the timeout even while the resolver hangs, and another thread can
/// give up on it ([`Dial::cancel`]), which no blocking connect allows. The
/// helper thread outlives an abandoned wait only until its own connect gives
/// up (the same timeout; name resolution: the resolver's own timeouts) and
/// then closes whatever it got.
pub struct Dial {
    state: Mutex<DialState>,
    changed: Condvar,
}

/// How much longer than the connect timeout [`Dial::wait`] waits: only a
/// hung name resolution needs it.
pub const DIAL_GRACE: Duration = Duration::from_millis(100);

enum DialState {
    Pending,
    Done(io::Result<Backend>),
    /// Nobody wants the result any more.
    Abandoned,
}

impl Dial {
    /// Starts connecting to `addr`, bounded by `timeout`.
    pub fn start(addr: &BackendAddr, timeout: Duration) -> io::Result<Arc<Dial>> {
        let dial = Arc::new(Dial { state: Mutex::new(DialState::Pending), changed: Condvar::new() });
        let (d, addr) = (dial.clone(), addr.clone());
        std::thread::Builder::new().name("backend-connect".into()).spawn(move || {
            let r = Backend::connect(&addr, timeout);
            let mut s = lock(&d.state);
            if matches!(*s, DialState::Pending) {
                *s = DialState::Done(r);
                d.changed.notify_all();
            }
            // Otherwise dropping r closes the connection nobody waits for.
        })?;
        Ok(dial)
    }

    /// Waits for the attempt: at most its timeout plus [`DIAL_GRACE`], so that
    /// a connect that gives up on its own says why. After [`Dial::cancel`] it
    /// returns `Interrupted`.
    pub fn wait(&self, timeout: Duration) -> io::Result<Backend> {
        let s = lock(&self.state);
        let mut s = match self.changed.wait_timeout_while(s, timeout + DIAL_GRACE, |s| matches!(s, DialState::Pending)) {
            Ok((s, _)) => s,
            Err(p) => p.into_inner().0,
        };
        match std::mem::replace(&mut *s, DialState::Abandoned) {
            DialState::Done(r) => r,
            DialState::Pending => {
                Err(io::Error::new(io::ErrorKind::TimedOut, format!("no connection within {timeout:?} (name resolution or connect hung)")))
            }
            DialState::Abandoned => Err(io::Error::new(io::ErrorKind::Interrupted, "connect cancelled")),
        }
    }

    /// Wakes the waiter and drops the result, now or when it comes.
    pub fn cancel(&self) {
        *lock(&self.state) = DialState::Abandoned;
        self.changed.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking holder cannot leave these plain values inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A blocking unix connect bounded by SO_SNDTIMEO, which Linux honours while
/// the listener's backlog is full (the connect then fails with EAGAIN). A
/// non-blocking connect would fail at once with EAGAIN and leave nothing to
/// wait on.
fn connect_unix(path: &Path, deadline: Instant) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() > SUN_PATH_MAX || bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a usable unix socket path", path.display())));
    }
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_un is valid; the path (≤ 107 bytes, no
    // NUL) fits sun_path with its terminating NUL.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, b) in sa.sun_path.iter_mut().zip(bytes) {
        *d = *b as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(backlog_full());
        }
        set_send_timeout(fd, left)?;
        // SAFETY: sa is a valid sockaddr_un of at least len bytes.
        let r = unsafe { libc::connect(fd, (&sa as *const libc::sockaddr_un).cast(), len) };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Err(backlog_full()),
            _ => return Err(e),
        }
    }
    // Writes block as before; request_timeout bounds them where set.
    set_send_timeout(fd, Duration::ZERO)?;
    Ok(UnixStream::from(sock))
}

fn backlog_full() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the server accepted no connection in time: its listen backlog is full")
}

/// SO_SNDTIMEO; zero means none.
fn set_send_timeout(fd: RawFd, t: Duration) -> io::Result<()> {
    let mut tv = libc::timeval { tv_sec: t.as_secs() as libc::time_t, tv_usec: t.subsec_micros() as libc::suseconds_t };
    if !t.is_zero() && tv.tv_sec == 0 && tv.tv_usec == 0 {
        tv.tv_usec = 1; // below a microsecond: still a timeout, not "none"
    }
    let len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: tv lives across the call and len is its size.
    let r = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDTIMEO, (&tv as *const libc::timeval).cast(), len) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Keepalive and TCP_USER_TIMEOUT (see [`KEEPALIVE_IDLE`], [`USER_TIMEOUT`]).
fn notice_vanished_peer(fd: RawFd) -> io::Result<()> {
    set_int(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE.as_secs() as libc::c_int)?;
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, KEEPALIVE_INTERVAL.as_secs() as libc::c_int)?;
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_PROBES as libc::c_int)?;
    set_int(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, USER_TIMEOUT.as_millis() as libc::c_int)
}

fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value lives across the call and len is its size.
    let r = unsafe { libc::setsockopt(fd, level, name, (&value as *const libc::c_int).cast(), len) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Servers that accept no connection, on loopback: a listener whose backlog
/// of one is taken and which never accepts.
#[cfg(test)]
pub(crate) mod blackhole {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::{UnixListener, UnixStream};

    use super::BackendAddr;

    /// Keeps the listener, the connection filling its backlog, and its directory.
    pub struct Blackhole {
        pub addr: BackendAddr,
        _keep: Box<dyn Send + Sync>,
    }

    fn backlog_zero(fd: i32) {
        // SAFETY: listen(2) on a socket we own; re-listening changes the backlog.
        assert_eq!(unsafe { libc::listen(fd, 0) }, 0, "listen: {}", std::io::Error::last_os_error());
    }

    pub fn unix() -> Blackhole {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("full.sock");
        let l = UnixListener::bind(&path).expect("bind");
        backlog_zero(l.as_raw_fd());
        let filler = UnixStream::connect(&path).expect("the one slot");
        Blackhole { addr: BackendAddr::Unix(path), _keep: Box::new((dir, l, filler)) }
    }

    pub fn tcp() -> Blackhole {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        backlog_zero(l.as_raw_fd());
        let at = l.local_addr().expect("addr");
        let filler = std::net::TcpStream::connect(at).expect("the one slot");
        let addr = at.to_string().parse().expect("addr");
        Blackhole { addr, _keep: Box::new((l, filler)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int_option(b: &Backend, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: v and len are valid for writing and len holds v's size.
        let r = unsafe { libc::getsockopt(b.fd(), level, name, (&mut v as *mut libc::c_int).cast(), &mut len) };
        assert_eq!(r, 0, "getsockopt {level}/{name}: {}", io::Error::last_os_error());
        v
    }

    #[test]
    fn tcp_backends_notice_a_vanished_server() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr: BackendAddr = l.local_addr().expect("addr").to_string().parse().expect("parse");
        let b = Backend::connect(&addr, Duration::from_secs(5)).expect("connect");
        assert_eq!(int_option(&b, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(int_option(&b, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) as u64, KEEPALIVE_IDLE.as_secs());
        assert_eq!(int_option(&b, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) as u64, KEEPALIVE_INTERVAL.as_secs());
        assert_eq!(int_option(&b, libc::IPPROTO_TCP, libc::TCP_KEEPCNT) as u32, KEEPALIVE_PROBES);
        assert_eq!(int_option(&b, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT) as u128, USER_TIMEOUT.as_millis());
        assert_eq!(int_option(&b, libc::IPPROTO_TCP, libc::TCP_NODELAY), 1);
    }

    #[test]
    fn a_unix_server_that_stopped_accepting_fails_the_connect_in_time() {
        let hole = blackhole::unix();
        let (tx, rx) = std::sync::mpsc::channel();
        let addr = hole.addr.clone();
        std::thread::spawn(move || tx.send(Backend::connect(&addr, Duration::from_millis(300)).map(|_| ())));
        // Hang guard only; the connect must give up after 300 ms.
        let r = rx.recv_timeout(Duration::from_secs(20)).expect("connect() must be bounded by its timeout");
        let e = r.expect_err("nobody accepts");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("backlog"), "{e}");
    }

    #[test]
    fn parses_addresses() {
        assert_eq!("127.0.0.1:564".parse(), Ok(BackendAddr::Tcp { host: "127.0.0.1".into(), port: 564 }));
        assert_eq!("buildhost:5640".parse(), Ok(BackendAddr::Tcp { host: "buildhost".into(), port: 5640 }));
        assert_eq!("[::1]:564".parse(), Ok(BackendAddr::Tcp { host: "::1".into(), port: 564 }));
        assert_eq!("unix:/run/d.sock".parse(), Ok(BackendAddr::Unix("/run/d.sock".into())));
        for bad in ["", "host", ":564", "host:", "host:x", "host:0", "::1:564", "unix:rel", "[::1:564", "[[a]:1", "a]:1", "[a]]:1"] {
            assert!(bad.parse::<BackendAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn unix_paths_longer_than_sun_path_are_refused() {
        let fits = format!("unix:/{}", "a".repeat(SUN_PATH_MAX - 1));
        assert!(fits.parse::<BackendAddr>().is_ok());
        let long = format!("unix:/{}", "a".repeat(SUN_PATH_MAX));
        let e = long.parse::<BackendAddr>().expect_err("108 bytes cannot be connected to");
        assert!(e.contains("108 bytes") && e.contains("107"), "{e}");
        assert!("unix:/run/a\0b".parse::<BackendAddr>().is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in ["127.0.0.1:564", "[::1]:5640", "unix:/run/d.sock", "buildhost:1", "[unix]:564"] {
            let a: BackendAddr = s.parse().expect(s);
            assert_eq!(a.to_string(), s);
        }
        // Found by fuzz/ (config target): a TCP host named "unix" printed as
        // "unix:564", which parses as a (relative, refused) socket path.
        let a = BackendAddr::Tcp { host: "unix".into(), port: 564 };
        assert_eq!(a.to_string().parse(), Ok(a));
    }

    #[test]
    fn a_request_deadline_bounds_the_send_and_the_reply() {
        use std::os::unix::net::UnixStream;
        // A server that reads nothing: a 4 MiB Twrite cannot all be sent.
        let (a, server) = UnixStream::pair().expect("pair");
        let mut t = vec![0u8; 4 << 20];
        t[..4].copy_from_slice(&(4u32 << 20).to_le_bytes());
        t[4] = 118;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut b = Backend::from_unix(a);
            let mut buf = [0u8; 64];
            let send = b.exchange(&t, &mut buf, 64, Some(Duration::from_millis(200))).map(|_| ());
            // A server that takes the request but never answers.
            let (a, _silent) = UnixStream::pair().expect("pair");
            let mut b = Backend::from_unix(a);
            let reply = b.exchange(&[7, 0, 0, 0, 120, 1, 0], &mut buf, 64, Some(Duration::from_millis(200))).map(|_| ());
            let _ = tx.send((send, reply));
        });
        let (send, reply) = rx.recv_timeout(Duration::from_secs(20)).expect("the deadline must bound the exchange");
        assert!(matches!(send, Err(BackendError::Timeout { kind: 118, .. })), "{send:?}");
        assert!(matches!(reply, Err(BackendError::Timeout { kind: 120, .. })), "{reply:?}");
        drop(server);
    }

    #[test]
    fn exchange_checks_the_reply_type() {
        use std::os::unix::net::UnixStream;
        let (a, mut server) = UnixStream::pair().expect("pair");
        let mut b = Backend::from_unix(a);
        let tclunk = [7, 0, 0, 0, 120, 3, 0];
        let mut buf = [0u8; 64];
        // Rlerror and Rerror answer anything.
        server.write_all(&[11, 0, 0, 0, frame::RLERROR, 3, 0, 2, 0, 0, 0]).expect("w");
        assert_eq!(b.exchange(&tclunk, &mut buf, 64, None).expect("Rlerror"), 11);
        server.write_all(&[9, 0, 0, 0, frame::RERROR, 3, 0, 0, 0]).expect("w");
        assert_eq!(b.exchange(&tclunk, &mut buf, 64, None).expect("Rerror"), 9);
        // A stray Rread with the pending tag is not the answer to a Tclunk.
        server.write_all(&[11, 0, 0, 0, 117, 3, 0, 0, 0, 0, 0]).expect("w");
        assert!(matches!(b.exchange(&tclunk, &mut buf, 64, None), Err(BackendError::WrongType { sent: 120, got: 117 })));
    }

    #[test]
    fn exchange_checks_size_and_tag() {
        use std::os::unix::net::UnixStream;
        let (a, mut server) = UnixStream::pair().expect("pair");
        let mut b = Backend::from_unix(a);
        let t = [7, 0, 0, 0, 120, 3, 0];
        let mut buf = [0u8; 64];
        server.write_all(&[7, 0, 0, 0, 121, 3, 0]).expect("w");
        assert_eq!(b.exchange(&t, &mut buf, 64, None).expect("ok"), 7);
        server.write_all(&[7, 0, 0, 0, 121, 4, 0]).expect("w");
        assert!(matches!(b.exchange(&t, &mut buf, 64, None), Err(BackendError::WrongTag { want: 3, got: 4 })));
        server.write_all(&[200, 0, 0, 0, 121, 3, 0]).expect("w");
        assert!(matches!(b.exchange(&t, &mut buf, 64, None), Err(BackendError::Frame(FrameError::TooLarge { .. }))));
        let (a, server) = UnixStream::pair().expect("pair");
        let mut b = Backend::from_unix(a);
        drop(server);
        assert!(b.exchange(&t, &mut buf, 64, None).is_err());
    }

    #[test]
    fn a_reply_in_pieces_is_joined_and_bytes_past_it_fail_the_next_exchange() {
        use std::os::unix::net::UnixStream;
        let (a, mut server) = UnixStream::pair().expect("pair");
        let mut b = Backend::from_unix(a);
        let t = [7, 0, 0, 0, 120, 3, 0];
        let mut buf = [0u8; 64];
        // Header split across writes, body later: the reader waits for all.
        let srv = std::thread::spawn(move || {
            for piece in [&[11u8, 0][..], &[0, 0, 121, 3], &[0, 9, 9, 9, 9]] {
                server.write_all(piece).expect("w");
                server.flush().expect("flush");
                std::thread::yield_now();
            }
            server
        });
        assert_eq!(b.exchange(&t, &mut buf, 64, None).expect("joined"), 11);
        assert_eq!(&buf[..11], &[11, 0, 0, 0, 121, 3, 0, 9, 9, 9, 9]);
        let mut server = srv.join().expect("server thread");
        // A reply and a copy of it, both waiting before the read (a unix
        // socket hands them over in one read): the first is the answer, the
        // copy must not become the answer to the next request.
        server.write_all(&[7, 0, 0, 0, 121, 3, 0, 7, 0, 0, 0, 121, 3, 0]).expect("w");
        assert_eq!(b.exchange(&t, &mut buf, 64, None).expect("first"), 7);
        assert!(matches!(b.exchange(&t, &mut buf, 64, None), Err(BackendError::Unsolicited { bytes: 7 })));
    }
}
