//! Host integration: a real diod on loopback, a worker carrying a real
//! 9P2000.L session from an in-memory board (Tversion, Tattach, Twalk, Tlopen,
//! Tread of a known file, Tclunk), then a remount, then the server dying.
//! Needs the `diod` binary (Debian package diod); fails loudly without it.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{content, gadget, start_diod, start_diod_on, Msg, NOFID};

use usb9pfsd::daemon::status::Counters;
use usb9pfsd::ninep::board_backend::BoardBackend;
use usb9pfsd::ninep::forward::Limits;
use usb9pfsd::usb::sim::{self, Board};
use usb9pfsd::worker::{self, End, Job, Reporter};

/// Sends a T-message and returns the reply after checking type and tag.
fn rpc(board: &Board, t: Vec<u8>, want_type: u8) -> Vec<u8> {
    board.send(&t);
    let r = board.recv();
    let size = u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize;
    assert_eq!(size, r.len(), "reply size field matches the transfer");
    assert_eq!(&r[5..7], &t[5..7], "reply carries the request's tag");
    assert_eq!(r[4], want_type, "reply type for T-type {} (Rlerror is 7): {:?}", t[4], &r[..r.len().min(16)]);
    r
}

fn errno_of(r: &[u8]) -> u32 {
    assert_eq!(r[4], 7, "an Rlerror");
    u32::from_le_bytes([r[7], r[8], r[9], r[10]])
}

fn mount(board: &Board, export: &Path, msize: u32) {
    let r = rpc(board, Msg::new(100, 0xffff).u32(msize).s("9P2000.L").done(), 101);
    let negotiated = u32::from_le_bytes([r[7], r[8], r[9], r[10]]);
    assert!(negotiated <= msize && negotiated >= 4096, "msize {negotiated}");
    let aname = export.to_str().expect("utf8 path");
    rpc(board, Msg::new(104, 1).u32(1).u32(NOFID).s("root").s(aname).u32(0).done(), 105);
}

#[test]
fn real_9p_session_through_a_worker_to_diod() {
    let dir = tempfile::tempdir().expect("tmp");
    let export = dir.path().canonicalize().expect("canon");
    let data = content(300_000);
    std::fs::write(export.join("data.bin"), &data).expect("write file");
    let diod = start_diod(&export);

    let (mut host, board) = sim::gadget(512, 16384);
    // In-place transfer memory, as usbfs's mappings give a real device.
    host.offer_transfer_mem(1 << 20);
    let counters = Arc::new(Counters::default());
    let backend = Arc::new(BoardBackend::new(format!("127.0.0.1:{}", diod.port).parse().expect("addr")));
    let (end_tx, end_rx) = std::sync::mpsc::channel();
    let job = Job {
        info: gadget(),
        board_backend: backend.clone(),
        counters: counters.clone(),
        limits: Limits { max_frame: 1 << 20, board_buflen: 16384, request_timeout: None, recover_window: std::time::Duration::ZERO },
        stop: host.stop_switch(),
        handed: None,
        reporter: Reporter { key: gadget().key(), generation: 1, sink: Arc::new(|_| {}) },
    };
    let worker = std::thread::spawn(move || {
        let mut host = host;
        let end = worker::serve(&mut host, &job);
        let _ = end_tx.send(end);
    });

    mount(&board, &export, 16384);
    rpc(&board, Msg::new(110, 2).u32(1).u32(2).u16(1).s("data.bin").done(), 111);
    rpc(&board, Msg::new(12, 3).u32(2).u32(0).done(), 13);
    // Reads whose replies (11-byte header + data) land on, just below and
    // just above packet multiples, then large ones up to msize.
    let counts = [501u32, 500, 502, 1013, 1012, 1014, 8181, 16384 - 24];
    let mut got = Vec::new();
    let mut i = 0;
    loop {
        let count = counts[i % counts.len()];
        i += 1;
        let r = rpc(&board, Msg::new(116, 4).u32(2).u64(got.len() as u64).u32(count).done(), 117);
        let n = u32::from_le_bytes([r[7], r[8], r[9], r[10]]) as usize;
        assert_eq!(r.len(), 11 + n);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&r[11..]);
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data, "file bytes read through the worker match the server's file");
    rpc(&board, Msg::new(120, 5).u32(2).done(), 121);
    assert_eq!(board.empty_receives(), 0, "no ZLP leaked into a later receive");
    let (in_place, copied) = board.transfers_in_place_and_copied();
    assert!(in_place > 2 * counts.len() && copied <= 2, "the session's transfers in place ({in_place}), only Tversion's copied ({copied})");

    // umount + mount without replug: a new Tversion, a fresh server session.
    mount(&board, &export, 8192);
    rpc(&board, Msg::new(110, 6).u32(1).u32(3).u16(1).s("data.bin").done(), 111);
    assert_eq!(counters.snapshot().sessions, 2);

    // The server dies mid-session: the pending request is answered with EIO
    // (same tag) instead of leaving the board waiting; so are later ones.
    drop(diod);
    let r = rpc(&board, Msg::new(12, 7).u32(3).u32(0).done(), 7);
    assert_eq!(errno_of(&r), 5);
    let r = rpc(&board, Msg::new(120, 8).u32(3).done(), 7);
    assert_eq!(errno_of(&r), 5);
    // A new mount while the server is down fails at once with ECONNREFUSED.
    let r = rpc(&board, Msg::new(100, 0xffff).u32(8192).s("9P2000.L").done(), 7);
    assert_eq!(errno_of(&r), libc::ECONNREFUSED as u32);
    let snap = counters.snapshot();
    assert_eq!((snap.backend_failures, snap.error_replies), (1, 3));
    assert!(backend.last_error.lock().expect("lock").as_ref().is_some_and(|e| e.message.contains("cannot connect")));

    // Unplug: the worker ends and says the board is gone.
    drop(board);
    assert_eq!(end_rx.recv_timeout(Duration::from_secs(20)).expect("worker ended"), End::Gone);
    worker.join().expect("worker thread");
}

#[test]
fn server_coming_back_serves_a_new_mount() {
    let dir = tempfile::tempdir().expect("tmp");
    let export = dir.path().canonicalize().expect("canon");
    std::fs::write(export.join("marker"), b"back").expect("write");
    // Reserve a port, leave it closed: the first mount is refused.
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("a").port();
    let (host, board) = sim::gadget(512, 16384);
    let backend = Arc::new(BoardBackend::new(format!("127.0.0.1:{port}").parse().expect("addr")));
    let job = Job {
        info: gadget(),
        board_backend: backend,
        counters: Arc::new(Counters::default()),
        limits: Limits { max_frame: 1 << 20, board_buflen: 16384, request_timeout: None, recover_window: std::time::Duration::ZERO },
        stop: host.stop_switch(),
        handed: None,
        reporter: Reporter { key: gadget().key(), generation: 1, sink: Arc::new(|_| {}) },
    };
    let worker = std::thread::spawn(move || {
        let mut host = host;
        worker::serve(&mut host, &job)
    });
    let r = rpc(&board, Msg::new(100, 0xffff).u32(16384).s("9P2000.L").done(), 7);
    assert_eq!(errno_of(&r), libc::ECONNREFUSED as u32);

    let _diod = start_diod_on(&export, port);
    // Mount retries, as a person or a boot script would, bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        board.send(&Msg::new(100, 0xffff).u32(16384).s("9P2000.L").done());
        let r = board.recv();
        if r[4] == 101 {
            break;
        }
        assert!(Instant::now() < deadline, "server back but mounts still fail");
        std::thread::sleep(Duration::from_millis(100));
    }
    let aname = export.to_str().expect("utf8");
    rpc(&board, Msg::new(104, 1).u32(1).u32(NOFID).s("root").s(aname).u32(0).done(), 105);
    rpc(&board, Msg::new(110, 2).u32(1).u32(2).u16(1).s("marker").done(), 111);
    rpc(&board, Msg::new(12, 3).u32(2).u32(0).done(), 13);
    let r = rpc(&board, Msg::new(116, 4).u32(2).u64(0).u32(100).done(), 117);
    assert_eq!(&r[11..], b"back");
    drop(board);
    assert_eq!(worker.join().expect("join"), End::Gone);
}

/// A live 9P session with diod survives its worker being stopped at a
/// message boundary and its server socket crossing to a successor as a
/// descriptor (what reexec and systemd's store carry), mid-file.
#[test]
fn a_live_diod_session_crosses_a_hand_over_mid_file() {
    use std::os::fd::{AsRawFd, BorrowedFd};
    use usb9pfsd::ninep::backend::Backend;
    use usb9pfsd::ninep::forward::Session;

    let dir = tempfile::tempdir().expect("tmp");
    let export = dir.path().canonicalize().expect("canon");
    let data = content(200_000);
    std::fs::write(export.join("data.bin"), &data).expect("write file");
    let diod = start_diod(&export);

    let (host, board) = sim::gadget(512, 16384);
    let counters = Arc::new(Counters::default());
    let backend = Arc::new(BoardBackend::new(format!("127.0.0.1:{}", diod.port).parse().expect("addr")));
    let job = |stop, handed| Job {
        info: gadget(),
        board_backend: backend.clone(),
        counters: counters.clone(),
        limits: Limits { max_frame: 1 << 20, board_buflen: 16384, request_timeout: None, recover_window: std::time::Duration::ZERO },
        stop,
        handed,
        reporter: Reporter { key: gadget().key(), generation: 1, sink: Arc::new(|_| {}) },
    };
    let first = job(host.stop_switch(), None);
    let stop = first.stop.clone();
    let worker = std::thread::spawn(move || {
        let mut host = host;
        let mut session = Session::new(first.limits);
        let end = worker::serve_session(&mut host, &first, &mut session);
        (end, session, host)
    });
    mount(&board, &export, 16384);
    rpc(&board, Msg::new(110, 2).u32(1).u32(2).u16(1).s("data.bin").done(), 111);
    rpc(&board, Msg::new(12, 3).u32(2).u32(0).done(), 13);
    let mut got = Vec::new();
    let read = |got: &mut Vec<u8>, count: u32| {
        let r = rpc(&board, Msg::new(116, 4).u32(2).u64(got.len() as u64).u32(count).done(), 117);
        let n = u32::from_le_bytes([r[7], r[8], r[9], r[10]]) as usize;
        got.extend_from_slice(&r[11..11 + n]);
        n
    };
    for _ in 0..5 {
        read(&mut got, 8000);
    }
    // Stop at the boundary; the server socket crosses as a new descriptor
    // and the old one is closed, as across an exec.
    stop.request();
    let (end, mut session, mut host) = worker.join().expect("join");
    assert_eq!(end, End::Stopped);
    assert!(session.live);
    let old = session.backend.take().expect("live session keeps its socket");
    // SAFETY: `old` is open until dropped below.
    let dup = unsafe { BorrowedFd::borrow_raw(old.raw_fd()) }.try_clone_to_owned().expect("dup");
    assert_ne!(dup.as_raw_fd(), old.raw_fd());
    drop(old);
    session.backend = Some(Backend::from_fd(dup).expect("take the socket"));
    let began = counters.session_started().expect("the live session's start");
    // A successor process starts with fresh counters.
    counters.session_ended();
    let second = job(host.renew_stop_switch(), None);
    let worker = std::thread::spawn(move || worker::serve_session(&mut host, &second, &mut session));
    // The board never noticed: same fid, same offset, same session.
    while read(&mut got, 16384 - 24) > 0 {}
    assert!(got == data, "the file read across the hand-over matches the server's file");
    assert_eq!(counters.snapshot().sessions, 1, "no second server session");
    assert_eq!(counters.snapshot().error_replies, 0, "the board saw no error");
    assert_eq!(counters.session_started(), Some(began), "status still says when the board mounted");
    drop(board);
    assert_eq!(worker.join().expect("join"), End::Gone);
    drop(diod);
}
