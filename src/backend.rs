//! Connections to 9P servers (diod, nfs-ganesha): where a backend is
//! (`host:port` resolved at connect time, or `unix:/path`), how to reach it
//! (TCP_NODELAY, keepalive and TCP_USER_TIMEOUT so a vanished server is
//! noticed, bounded connect), and moving whole frames over it.
//!
//! It must never retry, back off or log policy decisions (that is the
//! supervisor's), and never allocate per message: frames are read into the
//! caller's buffer after their size was checked.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::frame::{self, FrameError};

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
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            BackendAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            BackendAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl FromStr for BackendAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
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
        if host.is_empty() {
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
    /// Connects, trying each resolved address in turn, each bounded by `timeout`.
    pub fn connect(addr: &BackendAddr, timeout: Duration) -> io::Result<Backend> {
        let stream = match addr {
            BackendAddr::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
            BackendAddr::Tcp { host, port } => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} resolved to no address"));
                let mut found = None;
                for sa in (host.as_str(), *port).to_socket_addrs()? {
                    match TcpStream::connect_timeout(&sa, timeout) {
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
        Ok(Backend { stream: Arc::new(stream) })
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
    pub fn exchange(&mut self, t: &[u8], buf: &mut [u8], ceiling: u32) -> Result<usize, BackendError> {
        self.write_all(t)?;
        let n = self.recv(buf, ceiling)?;
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

    fn recv(&mut self, buf: &mut [u8], ceiling: u32) -> Result<usize, BackendError> {
        let ceiling = ceiling.min(buf.len() as u32);
        self.read_exact(&mut buf[..4])?;
        let size = frame::peek_size(buf).unwrap_or(0);
        frame::check_size(size, ceiling)?;
        self.read_exact(&mut buf[4..size as usize])?;
        Ok(size as usize)
    }

    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match &*self.stream {
            Stream::Tcp(s) => (&mut &*s).write_all(b),
            Stream::Unix(s) => (&mut &*s).write_all(b),
        }
    }

    fn read_exact(&mut self, b: &mut [u8]) -> Result<(), BackendError> {
        let r = match &*self.stream {
            Stream::Tcp(s) => (&mut &*s).read_exact(b),
            Stream::Unix(s) => (&mut &*s).read_exact(b),
        };
        r.map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => BackendError::Closed,
            _ => BackendError::Io(e),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fd(b: &Backend) -> RawFd {
        match &*b.stream {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }

    fn int_option(b: &Backend, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut v: libc::c_int = -1;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: v and len are valid for writing and len holds v's size.
        let r = unsafe { libc::getsockopt(fd(b), level, name, (&mut v as *mut libc::c_int).cast(), &mut len) };
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
    fn parses_addresses() {
        assert_eq!(
            "127.0.0.1:564".parse(),
            Ok(BackendAddr::Tcp { host: "127.0.0.1".into(), port: 564 })
        );
        assert_eq!(
            "buildhost:5640".parse(),
            Ok(BackendAddr::Tcp { host: "buildhost".into(), port: 5640 })
        );
        assert_eq!("[::1]:564".parse(), Ok(BackendAddr::Tcp { host: "::1".into(), port: 564 }));
        assert_eq!("unix:/run/d.sock".parse(), Ok(BackendAddr::Unix("/run/d.sock".into())));
        for bad in ["", "host", ":564", "host:", "host:x", "host:0", "::1:564", "unix:rel", "[::1:564"] {
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
        for s in ["127.0.0.1:564", "[::1]:5640", "unix:/run/d.sock", "buildhost:1"] {
            let a: BackendAddr = s.parse().expect(s);
            assert_eq!(a.to_string(), s);
        }
    }

    #[test]
    fn exchange_checks_the_reply_type() {
        use std::os::unix::net::UnixStream;
        let (a, mut server) = UnixStream::pair().expect("pair");
        let mut b = Backend { stream: Arc::new(Stream::Unix(a)) };
        let tclunk = [7, 0, 0, 0, 120, 3, 0];
        let mut buf = [0u8; 64];
        // Rlerror and Rerror answer anything.
        server.write_all(&[11, 0, 0, 0, frame::RLERROR, 3, 0, 2, 0, 0, 0]).expect("w");
        assert_eq!(b.exchange(&tclunk, &mut buf, 64).expect("Rlerror"), 11);
        server.write_all(&[9, 0, 0, 0, frame::RERROR, 3, 0, 0, 0]).expect("w");
        assert_eq!(b.exchange(&tclunk, &mut buf, 64).expect("Rerror"), 9);
        // A stray Rread with the pending tag is not the answer to a Tclunk.
        server.write_all(&[11, 0, 0, 0, 117, 3, 0, 0, 0, 0, 0]).expect("w");
        assert!(matches!(
            b.exchange(&tclunk, &mut buf, 64),
            Err(BackendError::WrongType { sent: 120, got: 117 })
        ));
    }

    #[test]
    fn exchange_checks_size_and_tag() {
        use std::os::unix::net::UnixStream;
        let (a, mut server) = UnixStream::pair().expect("pair");
        let mut b = Backend { stream: Arc::new(Stream::Unix(a)) };
        let t = [7, 0, 0, 0, 120, 3, 0];
        let mut buf = [0u8; 64];
        server.write_all(&[7, 0, 0, 0, 121, 3, 0]).expect("w");
        assert_eq!(b.exchange(&t, &mut buf, 64).expect("ok"), 7);
        server.write_all(&[7, 0, 0, 0, 121, 4, 0]).expect("w");
        assert!(matches!(b.exchange(&t, &mut buf, 64), Err(BackendError::WrongTag { want: 3, got: 4 })));
        server.write_all(&[200, 0, 0, 0, 121, 3, 0]).expect("w");
        assert!(matches!(b.exchange(&t, &mut buf, 64), Err(BackendError::Frame(FrameError::TooLarge { .. }))));
        let (a, server) = UnixStream::pair().expect("pair");
        let mut b = Backend { stream: Arc::new(Stream::Unix(a)) };
        drop(server);
        assert!(b.exchange(&t, &mut buf, 64).is_err());
    }
}
