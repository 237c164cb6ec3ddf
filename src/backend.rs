//! Connections to 9P servers (diod, nfs-ganesha): where a backend is
//! (`host:port` resolved at connect time, or `unix:/path`), how to reach it
//! (TCP_NODELAY, bounded connect), and moving whole frames over it.
//!
//! It must never retry, back off or log policy decisions (that is the
//! supervisor's), and never allocate per message: frames are read into the
//! caller's buffer after their size was checked.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::frame::{self, FrameError};

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
            // Brackets where the bare form would parse as something else.
            BackendAddr::Tcp { host, port } if host.contains(':') || host == "unix" => write!(f, "[{host}]:{port}"),
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
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// One open connection to a 9P server.
pub struct Backend {
    stream: Stream,
}

/// A second handle on a backend socket that can wake a worker blocked on it.
pub struct AbortHandle(Stream);

impl AbortHandle {
    /// Shuts the socket down; the worker's pending read returns at once.
    pub fn abort(&self) {
        let _ = match &self.0 {
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
                Stream::Tcp(s)
            }
        };
        Ok(Backend { stream })
    }

    /// A backend on an already connected unix socket: for tests and the fuzz
    /// targets, which play the server on the other end of a socket pair.
    #[doc(hidden)]
    pub fn from_unix(stream: UnixStream) -> Backend {
        Backend { stream: Stream::Unix(stream) }
    }

    /// A handle that can abort this connection from another thread.
    pub fn abort_handle(&self) -> io::Result<AbortHandle> {
        Ok(AbortHandle(match &self.stream {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        }))
    }

    /// Sends one T-message and reads its R-message into `buf`, returning its
    /// length. The reply's size is checked against `ceiling` before the rest
    /// is read, and its tag must match the request's.
    pub fn exchange(&mut self, t: &[u8], buf: &mut [u8], ceiling: u32) -> Result<usize, BackendError> {
        self.write_all(t)?;
        let n = self.recv(buf, ceiling)?;
        let want = frame::header(t).map(|h| h.tag);
        let got = frame::header(&buf[..n]).map(|h| h.tag);
        match (want, got) {
            (Some(want), Some(got)) if want != got => Err(BackendError::WrongTag { want, got }),
            _ => Ok(n),
        }
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
        match &mut self.stream {
            Stream::Tcp(s) => s.write_all(b),
            Stream::Unix(s) => s.write_all(b),
        }
    }

    fn read_exact(&mut self, b: &mut [u8]) -> Result<(), BackendError> {
        let r = match &mut self.stream {
            Stream::Tcp(s) => s.read_exact(b),
            Stream::Unix(s) => s.read_exact(b),
        };
        r.map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => BackendError::Closed,
            _ => BackendError::Io(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for bad in ["", "host", ":564", "host:", "host:x", "host:0", "::1:564", "unix:rel", "[::1:564", "[[a]:1", "a]:1", "[a]]:1"] {
            assert!(bad.parse::<BackendAddr>().is_err(), "{bad}");
        }
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
    fn exchange_checks_size_and_tag() {
        use std::os::unix::net::UnixStream;
        let (a, mut server) = UnixStream::pair().expect("pair");
        let mut b = Backend { stream: Stream::Unix(a) };
        let t = [7, 0, 0, 0, 120, 3, 0];
        let mut buf = [0u8; 64];
        server.write_all(&[7, 0, 0, 0, 121, 3, 0]).expect("w");
        assert_eq!(b.exchange(&t, &mut buf, 64).expect("ok"), 7);
        server.write_all(&[7, 0, 0, 0, 121, 4, 0]).expect("w");
        assert!(matches!(b.exchange(&t, &mut buf, 64), Err(BackendError::WrongTag { want: 3, got: 4 })));
        server.write_all(&[200, 0, 0, 0, 121, 3, 0]).expect("w");
        assert!(matches!(b.exchange(&t, &mut buf, 64), Err(BackendError::Frame(FrameError::TooLarge { .. }))));
        let (a, server) = UnixStream::pair().expect("pair");
        let mut b = Backend { stream: Stream::Unix(a) };
        drop(server);
        assert!(b.exchange(&t, &mut buf, 64).is_err());
    }
}
