//! Host integration for recovery after a server restart (issue 19): a real
//! diod on loopback is SIGKILLed and started again under a session from an
//! in-memory board; the session goes on with the same fids, the request in
//! flight is sent again when that is safe, a file replaced meanwhile is never
//! served through its old fid (ESTALE), and past the window the board gets
//! EIO and mounts again. Needs diod (Debian package diod).

mod common;

use std::time::{Duration, Instant};

use common::*;
use usb9pfsd::ninep::board_backend::BoardBackend;
use usb9pfsd::ninep::forward::Limits;

const RLERROR: u8 = 7;
const ESTALE: u32 = libc::ESTALE as u32;

fn limits(window: u64) -> Limits {
    Limits { max_frame: 1 << 20, board_buflen: 16384, request_timeout: None, recover_window: Duration::from_secs(window) }
}

fn ok(board: &usb9pfsd::usb::sim::Board, t: Vec<u8>) -> Vec<u8> {
    let kind = t[4];
    let r = rpc(board, t);
    assert_eq!(r[4], kind + 1, "T-type {kind} answered, not errno {}", errno_of(&r));
    r
}

fn walk(fid: u32, newfid: u32, names: &[&str]) -> Vec<u8> {
    let mut m = Msg::new(110, 10).u32(fid).u32(newfid).u16(names.len() as u16);
    for n in names {
        m = m.s(n);
    }
    m.done()
}

fn read(fid: u32, off: u64, count: u32) -> Vec<u8> {
    Msg::new(116, 11).u32(fid).u64(off).u32(count).done()
}

fn data_of(r: &[u8]) -> &[u8] {
    &r[11..]
}

fn mount(board: &usb9pfsd::usb::sim::Board, aname: &str) {
    ok(board, Msg::new(100, 0xffff).u32(16384).s("9P2000.L").done());
    ok(board, Msg::new(104, 1).u32(1).u32(NOFID).s("root").s(aname).u32(0).done());
}

/// Restarts diod on the same port after `after`, in the background, the way
/// systemd would after a crash.
fn restart_later(export: std::path::PathBuf, port: u16, after: Duration) -> std::thread::JoinHandle<Diod> {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        start_diod_on(&export, port)
    })
}

#[test]
fn a_board_keeps_its_session_across_server_restarts() {
    let dir = tempfile::tempdir().expect("tmp");
    let export = dir.path().canonicalize().expect("canon");
    let data = content(200_000);
    std::fs::write(export.join("data.bin"), &data).expect("write");
    std::fs::create_dir(export.join("sub")).expect("mkdir");
    std::fs::write(export.join("sub/deep.txt"), b"deep").expect("write");
    std::fs::write(export.join("gone.txt"), b"old content").expect("write");
    let port = free_port();
    let diod = start_diod_on(&export, port);
    let s = serve(BoardBackend::new(format!("127.0.0.1:{port}").parse().expect("addr")), limits(30));
    let b = &s.board;
    let aname = export.to_str().expect("utf8");
    mount(b, aname);
    ok(b, walk(1, 2, &["data.bin"]));
    ok(b, Msg::new(12, 3).u32(2).u32(0).done());
    assert_eq!(data_of(&ok(b, read(2, 0, 8000))), &data[..8000]);
    ok(b, walk(1, 3, &["sub"]));
    ok(b, walk(3, 7, &["..", "sub", "deep.txt"]));
    ok(b, walk(1, 4, &["gone.txt"]));
    ok(b, Msg::new(12, 3).u32(4).u32(0).done());
    ok(b, walk(1, 5, &[]));
    // Tlcreate w.bin O_WRONLY|O_CREAT|O_TRUNC 0644: fid 5 becomes the open new file.
    ok(b, Msg::new(14, 4).u32(5).s("w.bin").u32(0o1101).u32(0o644).u32(0).done());
    ok(b, Msg::new(118, 5).u32(5).u64(0).u32(5).done().into_iter().chain(*b"hello").collect::<Vec<u8>>().pipe(resize));
    // A read lock on data.bin (Tlock: fid type flags start length proc_id client_id).
    let r = ok(b, Msg::new(52, 6).u32(2).u8(0).u32(0).u64(0).u64(0).u32(42).s("board").done());
    assert_eq!(r[7], 0, "lock taken");
    assert_eq!(s.counters.snapshot().recoverable, Some(true));

    // The server dies; while it is down, gone.txt is replaced by another
    // file the way editors and package managers do it (a new file renamed
    // over it; see docs/reliability.md for a file deleted and re-created).
    drop(diod);
    std::fs::write(export.join("gone.txt.new"), b"NEW content").expect("write");
    std::fs::rename(export.join("gone.txt.new"), export.join("gone.txt")).expect("rename over");
    let back = restart_later(export.clone(), port, Duration::from_millis(700));
    // The board's next read meets the dead connection: it waits, and gets
    // the right bytes from the restarted server through the same fid.
    let t0 = Instant::now();
    assert_eq!(data_of(&ok(b, read(2, 8000, 8000))), &data[8000..16000]);
    let waited = t0.elapsed();
    let diod = back.join().expect("diod restarted");
    let c = s.counters.snapshot();
    assert_eq!((c.recoveries, c.recovery_failures), (1, 0), "{c:?}");
    assert_eq!((c.last_recovery_fids_replayed, c.last_recovery_fids_stale), (5, 1), "fids 1,2,3,5,7 back; 4 (replaced) stale");
    assert!(waited >= Duration::from_millis(600), "the request waited for the server ({waited:?})");

    // The replaced file's old fid never reads the new file.
    let r = rpc(b, read(4, 0, 100));
    assert_eq!((r[4], errno_of(&r)), (RLERROR, ESTALE));
    assert_eq!(rpc(b, Msg::new(120, 7).u32(4).done())[4], 121, "its clunk answered by usb9pfsd");
    // A fresh walk sees the new file; the other fids work as before.
    ok(b, walk(1, 4, &["gone.txt"]));
    ok(b, Msg::new(12, 3).u32(4).u32(0).done());
    assert_eq!(data_of(&ok(b, read(4, 0, 100))), b"NEW content");
    ok(b, Msg::new(12, 3).u32(7).u32(0).done());
    assert_eq!(data_of(&ok(b, read(7, 0, 100))), b"deep");
    ok(b, Msg::new(118, 5).u32(5).u64(5).u32(6).done().into_iter().chain(*b" world").collect::<Vec<u8>>().pipe(resize));
    assert_eq!(std::fs::read(export.join("w.bin")).expect("read"), b"hello world", "the re-opened fid writes at its offset, not truncated");

    // Again, with a request that may have taken effect in flight: EIO, and
    // the session goes on.
    drop(diod);
    let back = restart_later(export.clone(), port, Duration::from_millis(300));
    let r = rpc(b, Msg::new(72, 8).u32(1).s("newdir").u32(0o755).u32(0).done());
    assert_eq!((r[4], errno_of(&r)), (RLERROR, libc::EIO as u32), "Tmkdir is not sent twice");
    let _diod = back.join().expect("diod restarted");
    assert_eq!(data_of(&ok(b, read(2, 16000, 1000))), &data[16000..17000]);
    assert_eq!(s.counters.snapshot().recoveries, 2);

    drop(s.board);
    s.worker.join().expect("worker");
}

#[test]
fn past_the_window_the_board_gets_eio_and_mounts_again() {
    let dir = tempfile::tempdir().expect("tmp");
    let export = dir.path().canonicalize().expect("canon");
    std::fs::write(export.join("f"), b"x").expect("write");
    let port = free_port();
    let diod = start_diod_on(&export, port);
    let s = serve(BoardBackend::new(format!("127.0.0.1:{port}").parse().expect("addr")), limits(2));
    let b = &s.board;
    let aname = export.to_str().expect("utf8");
    mount(b, aname);
    ok(b, walk(1, 2, &["f"]));
    drop(diod);
    let t0 = Instant::now();
    let r = rpc(b, Msg::new(24, 9).u32(2).u64(0x3fff).done());
    assert_eq!((r[4], errno_of(&r)), (RLERROR, libc::EIO as u32));
    assert!(t0.elapsed() >= Duration::from_secs(2) && t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    let c = s.counters.snapshot();
    assert_eq!((c.recoveries, c.recovery_failures), (0, 1));
    assert!(s.backend.last_error.lock().expect("lock").as_ref().is_some_and(|e| e.message.contains("gave up recovering")));
    let _diod = start_diod_on(&export, port);
    let r = rpc(b, Msg::new(24, 9).u32(2).u64(0x3fff).done());
    assert_eq!(errno_of(&r), libc::EIO as u32, "the lost session stays lost");
    mount(b, aname);
    ok(b, walk(1, 2, &["f"]));
    drop(s.board);
    s.worker.join().expect("worker");
}

#[test]
fn with_recovery_off_a_restart_ends_the_session_as_before() {
    let dir = tempfile::tempdir().expect("tmp");
    let export = dir.path().canonicalize().expect("canon");
    let port = free_port();
    let diod = start_diod_on(&export, port);
    let s = serve(BoardBackend::new(format!("127.0.0.1:{port}").parse().expect("addr")), limits(0));
    let b = &s.board;
    mount(b, export.to_str().expect("utf8"));
    drop(diod);
    let _diod = start_diod_on(&export, port);
    let r = rpc(b, walk(1, 2, &[]));
    assert_eq!(errno_of(&r), libc::EIO as u32);
    let c = s.counters.snapshot();
    assert_eq!((c.recoveries, c.recovery_failures, c.backend_failures), (0, 0, 1));
    drop(s.board);
    s.worker.join().expect("worker");
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

/// Fixes the size field of a message whose payload was appended.
fn resize(mut m: Vec<u8>) -> Vec<u8> {
    let n = m.len() as u32;
    m[..4].copy_from_slice(&n.to_le_bytes());
    m
}

/// Recovery time against the number of live fids (issue 19): run with
/// `cargo test --release --test diod_recover -- --ignored --nocapture`;
/// the table goes to docs/reliability.md.
#[test]
#[ignore]
fn recovery_time_against_live_fids() {
    let dir = tempfile::tempdir().expect("tmp");
    let export = dir.path().canonicalize().expect("canon");
    for i in 0..100 {
        std::fs::create_dir_all(export.join(format!("d{}", i % 10))).expect("mkdir");
        std::fs::write(export.join(format!("d{}/f{i}", i % 10)), b"x").expect("write");
    }
    println!("| live fids | opened | recovery (ms) | fids replayed |");
    println!("|---:|---:|---:|---:|");
    for n in [10u32, 1000, 10000] {
        let port = free_port();
        let diod = start_diod_on(&export, port);
        let s = serve(BoardBackend::new(format!("127.0.0.1:{port}").parse().expect("addr")), limits(60));
        let b = &s.board;
        mount(b, export.to_str().expect("utf8"));
        let mut opened = 0;
        for fid in 2..n + 1 {
            let i = fid % 100;
            ok(b, walk(1, fid, &[&format!("d{}", i % 10), &format!("f{i}")]));
            if fid % 10 == 0 {
                ok(b, Msg::new(12, 3).u32(fid).u32(0).done());
                opened += 1;
            }
        }
        drop(diod);
        let _diod = start_diod_on(&export, port);
        ok(b, Msg::new(24, 9).u32(2.min(n)).u64(0x3fff).done());
        let c = s.counters.snapshot();
        assert_eq!(c.recoveries, 1);
        println!("| {n} | {opened} | {} | {} |", c.last_recovery_ms, c.last_recovery_fids_replayed);
        drop(s.board);
        s.worker.join().expect("worker");
    }
}
