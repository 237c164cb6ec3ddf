//! Shared by the host integration tests: a real diod on loopback, 9P
//! messages built the way a board's kernel builds them, and an in-memory
//! board served by a real worker.
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use usb9pfsd::board::BoardInfo;
use usb9pfsd::daemon::status::Counters;
use usb9pfsd::ninep::board_backend::BoardBackend;
use usb9pfsd::ninep::forward::Limits;
use usb9pfsd::usb::sim::{self, Board};
use usb9pfsd::worker::{self, End, Job, Reporter};

pub const NOFID: u32 = u32::MAX;

/// A diod process; killed (SIGKILL) when dropped.
pub struct Diod {
    pub child: Child,
    pub port: u16,
}

impl Drop for Diod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn diod_binary() -> PathBuf {
    for p in ["/usr/sbin/diod", "/usr/bin/diod"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("diod is not installed: apt-get install diod (the test command installs it)");
}

/// A free loopback port (closed again: a diod may listen on it later).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Starts diod exporting `export` on `port` and waits (bounded) until it
/// listens.
pub fn start_diod_on(export: &Path, port: u16) -> Diod {
    let child = Command::new(diod_binary())
        .args(["-f", "-n", "-d", "0", "-L", "stderr", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-e")
        .arg(export)
        .stdin(Stdio::null())
        .spawn()
        .expect("start diod");
    let diod = Diod { child, port };
    // Readiness of an external process: probe its port, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "diod did not listen on port {port} within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    diod
}

pub fn start_diod(export: &Path) -> Diod {
    start_diod_on(export, free_port())
}

/// Builds 9P messages the way a board's kernel would.
pub struct Msg(pub Vec<u8>);

impl Msg {
    pub fn new(kind: u8, tag: u16) -> Msg {
        let mut v = vec![0, 0, 0, 0, kind];
        v.extend_from_slice(&tag.to_le_bytes());
        Msg(v)
    }
    pub fn u8(mut self, x: u8) -> Msg {
        self.0.push(x);
        self
    }
    pub fn u16(mut self, x: u16) -> Msg {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    pub fn u32(mut self, x: u32) -> Msg {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    pub fn u64(mut self, x: u64) -> Msg {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    pub fn s(self, s: &str) -> Msg {
        let mut m = self.u16(s.len() as u16);
        m.0.extend_from_slice(s.as_bytes());
        m
    }
    pub fn done(mut self) -> Vec<u8> {
        let n = self.0.len() as u32;
        self.0[..4].copy_from_slice(&n.to_le_bytes());
        self.0
    }
}

/// Sends a T-message; the reply, checked for size and tag.
pub fn rpc(board: &Board, t: Vec<u8>) -> Vec<u8> {
    board.send(&t);
    let r = board.recv();
    let size = u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize;
    assert_eq!(size, r.len(), "reply size field matches the transfer");
    assert_eq!(&r[5..7], &t[5..7], "reply carries the request's tag");
    r
}

/// The errno of an Rlerror, or 0 for any other reply.
pub fn errno_of(r: &[u8]) -> u32 {
    if r[4] != 7 {
        return 0;
    }
    u32::from_le_bytes([r[7], r[8], r[9], r[10]])
}

/// Deterministic file content (xorshift), so failures are reproducible.
pub fn content(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn gadget() -> BoardInfo {
    BoardInfo::example(Some("ITEST"), 1, 2)
}

/// An in-memory board served by a real worker whose backend is `backend`.
pub struct Served {
    pub board: Board,
    pub counters: Arc<Counters>,
    pub backend: Arc<BoardBackend>,
    pub end: std::sync::mpsc::Receiver<End>,
    pub worker: std::thread::JoinHandle<()>,
}

pub fn serve(backend: BoardBackend, limits: Limits) -> Served {
    let (host, board) = sim::gadget(512, 16384);
    let counters = Arc::new(Counters::default());
    let backend = Arc::new(backend);
    let (end_tx, end) = std::sync::mpsc::channel();
    let job = Job {
        info: gadget(),
        board_backend: backend.clone(),
        counters: counters.clone(),
        limits,
        stop: host.stop_switch(),
        handed: None,
        reporter: Reporter { key: gadget().key(), generation: 1, sink: Arc::new(|_| {}) },
    };
    let worker = std::thread::spawn(move || {
        let mut host = host;
        let e = worker::serve(&mut host, &job);
        let _ = end_tx.send(e);
    });
    Served { board, counters, backend, end, worker }
}
