//! A confined board through the whole frame loop: the in-memory gadget on
//! one side, a scripted 9P server that records what it is sent on the other.

use super::*;
use crate::ninep::backend::BackendAddr;
use crate::ninep::confine::{TATTACH, TWALK, TWRITE};
use crate::ninep::fids::{Qid, QTDIR};
use crate::ninep::frame::{RLERROR, RVERSION};
use crate::usb::sim;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;

type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

struct Server {
    addr: BackendAddr,
    seen: Seen,
    connections: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

/// Answers Tversion with its msize, Tattach with qid path 1, Twalk with
/// qid path 999 for `..` (the parent of the server's export: what a server
/// with diod's behaviour gives) and 2 for any other name, the rest with an
/// empty R-message.
fn server() -> Server {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("9p.sock");
    let l = UnixListener::bind(&path).expect("bind");
    let seen: Seen = Arc::default();
    let connections = Arc::new(AtomicUsize::new(0));
    let (log, count) = (seen.clone(), connections.clone());
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let log = log.clone();
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
                log.lock().expect("log").push(t.clone());
                if c.write_all(&answer(&t)).is_err() {
                    return;
                }
            });
        }
    });
    Server { addr: BackendAddr::Unix(path), seen, connections, _dir: dir }
}

fn qid(path: u64) -> Vec<u8> {
    let mut b = vec![0u8; Qid::LEN];
    Qid { kind: QTDIR, version: 0, path }.put(&mut b);
    b
}

fn answer(t: &[u8]) -> Vec<u8> {
    let tag = u16::from_le_bytes([t[5], t[6]]);
    match t[4] {
        TVERSION => msg(RVERSION, tag, &t[7..]),
        TATTACH => msg(TATTACH + 1, tag, &qid(1)),
        TWALK => {
            let n = u16::from_le_bytes([t[15], t[16]]) as usize;
            let (mut at, mut b) = (17usize, (n as u16).to_le_bytes().to_vec());
            for _ in 0..n {
                let len = u16::from_le_bytes([t[at], t[at + 1]]) as usize;
                b.extend(qid(if &t[at + 2..at + 2 + len] == b".." { 999 } else { 2 }));
                at += 2 + len;
            }
            msg(TWALK + 1, tag, &b)
        }
        k => msg(k + 1, tag, &[]),
    }
}

fn msg(kind: u8, tag: u16, body: &[u8]) -> Vec<u8> {
    let mut m = ((7 + body.len()) as u32).to_le_bytes().to_vec();
    m.push(kind);
    m.extend_from_slice(&tag.to_le_bytes());
    m.extend_from_slice(body);
    m
}

fn s(v: &[u8]) -> Vec<u8> {
    [(v.len() as u16).to_le_bytes().to_vec(), v.to_vec()].concat()
}

fn tversion(name: &[u8]) -> Vec<u8> {
    msg(TVERSION, frame::NOTAG, &[8192u32.to_le_bytes().to_vec(), s(name)].concat())
}

fn tattach(fid: u32, aname: &[u8]) -> Vec<u8> {
    let body = [fid.to_le_bytes().to_vec(), (!0u32).to_le_bytes().to_vec(), s(b"root"), s(aname), 0u32.to_le_bytes().to_vec()].concat();
    msg(TATTACH, 1, &body)
}

fn twalk(fid: u32, newfid: u32, names: &[&[u8]]) -> Vec<u8> {
    let mut body = [fid.to_le_bytes(), newfid.to_le_bytes()].concat();
    body.extend((names.len() as u16).to_le_bytes());
    for n in names {
        body.extend(s(n));
    }
    msg(TWALK, 2, &body)
}

struct Confined(BackendAddr, Option<Arc<Policy>>);

impl BackendPolicy for Confined {
    fn connect(&self) -> Result<Backend, ConnectError> {
        Backend::connect(&self.0, std::time::Duration::from_secs(5)).map_err(|e| ConnectError::from_io(&e, "connect".into()))
    }
    fn lost(&self, _: &BackendError) {}
    fn policy(&self) -> Option<Arc<Policy>> {
        self.1.clone()
    }
}

fn start(policy: Option<Policy>) -> (sim::Board, Arc<Counters>, std::thread::JoinHandle<Exit>, Server) {
    let server = server();
    let (mut host, board) = sim::gadget(512, 16384);
    let counters = Arc::new(Counters::default());
    let c = counters.clone();
    let board_backend = Confined(server.addr.clone(), policy.map(Arc::new));
    let limits = Limits { max_frame: 1 << 20, board_buflen: 16384, request_timeout: None, recover_window: std::time::Duration::ZERO };
    let exit = std::thread::spawn(move || run(&mut host, &board_backend, &c, limits, &mut Session::new(limits)));
    (board, counters, exit, server)
}

fn rlerror(tag: u16, errno: i32) -> Vec<u8> {
    msg(RLERROR, tag, &(errno as u32).to_le_bytes())
}

#[test]
fn a_confined_board_is_answered_by_usb9pfsd_and_the_server_sees_only_what_is_allowed() {
    let policy = Policy { export: Some("/srv/boards/a".into()), read_only: true, uid: Some(1000), gid: None };
    let (board, counters, exit, server) = start(Some(policy));
    // Another dialect: refused the 9P way, no server session at all.
    board.send(&tversion(b"9P2000.u"));
    assert_eq!(board.recv(), msg(RVERSION, frame::NOTAG, &[8192u32.to_le_bytes().to_vec(), s(b"unknown")].concat()));
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);
    board.send(&tversion(b"9P2000.L"));
    assert_eq!(board.recv()[4], RVERSION);
    // The neighbour's tree, and a trick with `..`: EACCES from usb9pfsd.
    board.send(&tattach(0, b"/srv/boards/b"));
    assert_eq!(board.recv(), rlerror(1, libc::EACCES));
    board.send(&tattach(0, b"/srv/boards/a/../b"));
    assert_eq!(board.recv(), rlerror(1, libc::EACCES));
    // An empty aname is the export, asked for as uid 1000.
    board.send(&tattach(0, b""));
    assert_eq!(board.recv(), msg(TATTACH + 1, 1, &qid(1)));
    // `..` at the root: the root, though this server would give its parent.
    board.send(&twalk(0, 1, &[b".."]));
    assert_eq!(board.recv(), msg(TWALK + 1, 2, &[1u16.to_le_bytes().to_vec(), qid(1)].concat()));
    // read_only: Twrite is EROFS.
    board.send(&msg(TWRITE, 3, &[&1u32.to_le_bytes()[..], &0u64.to_le_bytes(), &1u32.to_le_bytes(), b"x"].concat()));
    assert_eq!(board.recv(), rlerror(3, libc::EROFS));
    let seen = server.seen.lock().expect("seen").clone();
    let kinds: Vec<u8> = seen.iter().map(|t| t[4]).collect();
    assert_eq!(kinds, vec![TVERSION, TATTACH, TWALK], "only the allowed requests reached the server");
    let body =
        [0u32.to_le_bytes().to_vec(), (!0u32).to_le_bytes().to_vec(), s(b""), s(b"/srv/boards/a"), 1000u32.to_le_bytes().to_vec()].concat();
    assert_eq!(seen[1], msg(TATTACH, 1, &body), "attached to the export as uid 1000");
    assert_eq!(seen[2], twalk(0, 1, &[]), "the server was never asked for `..` at the root");
    assert_eq!(counters.snapshot().refused, 4);
    drop(board);
    assert_eq!(exit.join().expect("join"), Exit::BoardGone);
}

#[test]
fn an_unconfined_board_is_carried_as_before() {
    let (board, counters, exit, server) = start(None);
    board.send(&tversion(b"9P2000.u"));
    assert_eq!(board.recv()[4], RVERSION, "any dialect");
    board.send(&tattach(0, b"/srv/boards/b"));
    assert_eq!(board.recv()[4], TATTACH + 1);
    board.send(&twalk(0, 1, &[b".."]));
    assert_eq!(board.recv(), msg(TWALK + 1, 2, &[1u16.to_le_bytes().to_vec(), qid(999)].concat()));
    let seen = server.seen.lock().expect("seen").clone();
    assert_eq!(seen[1], tattach(0, b"/srv/boards/b"), "untouched");
    assert_eq!(seen[2], twalk(0, 1, &[b".."]), "untouched");
    assert_eq!(counters.snapshot().refused, 0);
    drop(board);
    assert_eq!(exit.join().expect("join"), Exit::BoardGone);
}

/// Runs a loop over `host` with `session` on another thread.
fn resume(
    mut host: sim::HostEnd,
    board_backend: Arc<Confined>,
    mut session: Session,
) -> std::thread::JoinHandle<(Exit, Session, sim::HostEnd)> {
    let limits = Limits { max_frame: 1 << 20, board_buflen: 16384, request_timeout: None, recover_window: std::time::Duration::ZERO };
    std::thread::spawn(move || {
        let exit = run(&mut host, board_backend.as_ref(), &Counters::default(), limits, &mut session);
        (exit, session, host)
    })
}

#[test]
fn a_confined_session_crosses_a_hand_over_with_its_fid_table() {
    let server = server();
    let policy = Arc::new(Policy { export: Some("/srv/boards/a".into()), ..Policy::default() });
    let board_backend = Arc::new(Confined(server.addr.clone(), Some(policy)));
    let limits = Limits { max_frame: 1 << 20, board_buflen: 16384, request_timeout: None, recover_window: std::time::Duration::ZERO };
    let (host, board) = sim::gadget(512, 16384);
    let stop = host.stop_switch();
    let first = resume(host, board_backend.clone(), Session::new(limits));
    board.send(&tversion(b"9P2000.L"));
    assert_eq!(board.recv()[4], RVERSION);
    board.send(&tattach(0, b""));
    assert_eq!(board.recv()[4], TATTACH + 1);
    board.send(&twalk(0, 1, &[b"d"]));
    assert_eq!(board.recv()[4], TWALK + 1);
    stop.request();
    let (exit, session, mut host) = first.join().expect("join");
    assert_eq!(exit, Exit::Stopped);
    let record = session.confine.as_ref().and_then(|c| c.table_record()).expect("a table to hand over");
    assert_eq!(record.fids.len(), 2);
    // What a successor builds from the hand-over state: the same socket,
    // no confinement yet, the predecessor's table.
    let successor = |host, record| {
        let mut s = Session::new(limits);
        s.live = true;
        s.dialect = session.dialect;
        s.ceiling = session.ceiling;
        s.backend = Some(Backend::connect(&server.addr, std::time::Duration::from_secs(5)).expect("connect"));
        s.handed_fids = record;
        resume(host, board_backend.clone(), s)
    };
    host.renew_stop_switch();
    let stop = host.stop_switch();
    let second = successor(host, Some(record));
    // Still confined, and still tracking: `..` from d is the root, `..`
    // from the root is the root, and nothing is stale.
    board.send(&twalk(1, 2, &[b"..", b".."]));
    assert_eq!(board.recv(), msg(TWALK + 1, 2, &[2u16.to_le_bytes().to_vec(), qid(999), qid(1)].concat()));
    assert_eq!(server.seen.lock().expect("seen").last(), Some(&twalk(1, 2, &[b".."])));
    stop.request();
    let (exit, _, mut host) = second.join().expect("join");
    assert_eq!(exit, Exit::Stopped);
    // Without the table the session goes on untracked: ESTALE by path.
    host.renew_stop_switch();
    let third = successor(host, None);
    board.send(&twalk(1, 3, &[b"x"]));
    assert_eq!(board.recv(), rlerror(2, libc::ESTALE));
    drop(board);
    assert_eq!(third.join().expect("join").0, Exit::BoardGone);
}
