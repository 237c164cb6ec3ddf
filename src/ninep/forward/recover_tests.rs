//! Recovery through the whole frame loop: the in-memory gadget on one side, a
//! scripted path-based 9P2000.L server on the other that can die at any
//! message it is sent (before reading it, after reading it, halfway through
//! its reply), replay messages included. Every run must give the board the
//! same replies as a run where the server never died.

use super::*;
use crate::ninep::backend::BackendAddr;
use crate::ninep::confine::{TATTACH, TCLUNK, TGETATTR, TLOCK, TLOPEN, TMKDIR, TREAD, TWALK};
use crate::ninep::fids::Qid;
use crate::ninep::frame::{RLERROR, RVERSION};
use crate::ninep::wire::Writer;
use crate::usb::sim;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::sync::Mutex;
use std::time::Duration;

/// How the server dies at its chosen message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Death {
    /// Closes the connection instead of answering the message, which has
    /// no effect.
    BeforeRead,
    /// Reads the message, then closes (the request may have taken effect).
    AfterRead,
    /// Sends half of its reply, then closes.
    MidReply,
}

#[derive(Default)]
struct World {
    /// Messages read over all connections.
    count: u64,
    /// Die at this message (counted from 1).
    die_at: Option<(u64, Death)>,
    /// Rversion msize from the next connection on.
    msize: Option<u32>,
    /// qid path offsets per file name, changed to "replace" a file.
    replaced: HashMap<String, u64>,
    /// Tmkdir calls that reached the server.
    mkdirs: u32,
    /// Drop the connection whenever a message has this tag (a request the
    /// server cannot take).
    poison_tag: Option<u16>,
}

struct Server {
    addr: BackendAddr,
    world: Arc<Mutex<World>>,
    _dir: tempfile::TempDir,
}

fn server() -> Server {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("9p.sock");
    let l = UnixListener::bind(&path).expect("bind");
    let world: Arc<Mutex<World>> = Arc::default();
    let w = world.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(c) = conn else { return };
            let w = w.clone();
            std::thread::spawn(move || connection(c, &w));
        }
    });
    Server { addr: BackendAddr::Unix(path), world, _dir: dir }
}

fn qid_of(world: &World, path: &[String]) -> Qid {
    let mut h: u64 = 1469598103934665603;
    for c in path {
        for b in c.bytes().chain([b'/']) {
            h = (h ^ b as u64).wrapping_mul(1099511628211);
        }
    }
    let bump = path.last().and_then(|n| world.replaced.get(n)).copied().unwrap_or(0);
    let dir = path.last().is_none_or(|n| !n.contains('.'));
    Qid { kind: if dir { fids::QTDIR } else { 0 }, version: 0, path: h.wrapping_add(bump) }
}

fn reply(kind: u8, tag: u16, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; frame::HEADER_LEN + body.len()];
    let mut w = Writer::new(&mut m);
    w.header(frame::HEADER_LEN + body.len(), kind, tag);
    w.put(body);
    m
}

fn qbytes(q: Qid) -> [u8; 13] {
    let mut b = [0u8; 13];
    q.put(&mut b);
    b
}

fn connection(mut c: std::os::unix::net::UnixStream, world: &Mutex<World>) {
    let mut fids: HashMap<u32, Vec<String>> = HashMap::new();
    loop {
        let mut size = [0u8; 4];
        if c.read_exact(&mut size).is_err() {
            return;
        }
        let mut t = size.to_vec();
        t.resize(u32::from_le_bytes(size) as usize, 0);
        if c.read_exact(&mut t[4..]).is_err() {
            return;
        }
        let death = {
            let mut w = world.lock().expect("world");
            w.count += 1;
            let n = w.count;
            w.die_at.filter(|(at, _)| *at == n).map(|(_, d)| d)
        };
        if death == Some(Death::BeforeRead) {
            return;
        }
        if world.lock().expect("world").poison_tag == Some(u16::from_le_bytes([t[5], t[6]])) {
            return;
        }
        let mut w = world.lock().expect("world");
        let r = answer(&t, &mut fids, &mut w);
        drop(w);
        match death {
            Some(Death::AfterRead) => return,
            Some(Death::MidReply) => {
                let _ = c.write_all(&r[..r.len() / 2]);
                return;
            }
            _ => {}
        }
        if c.write_all(&r).is_err() {
            return;
        }
    }
}

fn answer(t: &[u8], fids: &mut HashMap<u32, Vec<String>>, w: &mut World) -> Vec<u8> {
    let tag = u16::from_le_bytes([t[5], t[6]]);
    let mut cur = crate::ninep::wire::Cursor::new(&t[frame::HEADER_LEN..]);
    let err = |e: i32| reply(RLERROR, tag, &(e as u32).to_le_bytes());
    match t[4] {
        TVERSION => {
            let msize = cur.u32().unwrap_or(0).min(w.msize.unwrap_or(u32::MAX));
            let mut b = msize.to_le_bytes().to_vec();
            b.extend_from_slice(&[8, 0]);
            b.extend_from_slice(b"9P2000.L");
            fids.clear();
            reply(RVERSION, tag, &b)
        }
        TATTACH => {
            let fid = cur.u32().unwrap_or(0);
            fids.insert(fid, Vec::new());
            reply(TATTACH + 1, tag, &qbytes(qid_of(w, &[])))
        }
        TWALK => {
            let (fid, newfid, n) = (cur.u32().unwrap_or(0), cur.u32().unwrap_or(0), cur.u16().unwrap_or(0));
            let Some(mut p) = fids.get(&fid).cloned() else { return err(libc::EBADF) };
            let mut qs = Vec::new();
            for i in 0..n {
                let name = String::from_utf8_lossy(cur.string().unwrap_or(b"")).into_owned();
                if name == "missing" || w.replaced.get(&name) == Some(&u64::MAX) {
                    if i == 0 {
                        return err(libc::ENOENT);
                    }
                    break;
                }
                if name == ".." {
                    p.pop();
                } else {
                    p.push(name);
                }
                qs.push(qid_of(w, &p));
            }
            if qs.len() == n as usize {
                fids.insert(newfid, p);
            }
            let mut b = (qs.len() as u16).to_le_bytes().to_vec();
            for q in qs {
                b.extend_from_slice(&qbytes(q));
            }
            reply(TWALK + 1, tag, &b)
        }
        TLOPEN => {
            let Some(p) = fids.get(&cur.u32().unwrap_or(0)) else { return err(libc::EBADF) };
            let mut b = qbytes(qid_of(w, p)).to_vec();
            b.extend_from_slice(&0u32.to_le_bytes());
            reply(TLOPEN + 1, tag, &b)
        }
        TREAD => {
            let (fid, off, count) = (cur.u32().unwrap_or(0), cur.u64().unwrap_or(0), cur.u32().unwrap_or(0));
            let Some(p) = fids.get(&fid) else { return err(libc::EBADF) };
            let seed = qid_of(w, p).path;
            let data: Vec<u8> = (0..count as u64).map(|i| (seed.wrapping_add(off + i) % 251) as u8).collect();
            let mut b = count.to_le_bytes().to_vec();
            b.extend_from_slice(&data);
            reply(TREAD + 1, tag, &b)
        }
        TGETATTR => {
            let Some(p) = fids.get(&cur.u32().unwrap_or(0)) else { return err(libc::EBADF) };
            let mut b = vec![0u8; 153];
            b[8..21].copy_from_slice(&qbytes(qid_of(w, p)));
            reply(TGETATTR + 1, tag, &b)
        }
        TLOCK => {
            if !fids.contains_key(&cur.u32().unwrap_or(0)) {
                return err(libc::EBADF);
            }
            reply(TLOCK + 1, tag, &[0])
        }
        TCLUNK => {
            if fids.remove(&cur.u32().unwrap_or(0)).is_none() {
                return err(libc::EBADF);
            }
            reply(TCLUNK + 1, tag, &[])
        }
        TMKDIR => {
            w.mkdirs += 1;
            reply(TMKDIR + 1, tag, &qbytes(qid_of(w, &["made".into()])))
        }
        _ => err(libc::EOPNOTSUPP),
    }
}

fn msg(kind: u8, tag: u16, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = Vec::new();
    f(&mut b);
    reply(kind, tag, &b)
}

fn s(b: &mut Vec<u8>, x: &str) {
    b.extend_from_slice(&(x.len() as u16).to_le_bytes());
    b.extend_from_slice(x.as_bytes());
}

fn walk(tag: u16, fid: u32, newfid: u32, names: &[&str]) -> Vec<u8> {
    msg(TWALK, tag, |b| {
        b.extend_from_slice(&fid.to_le_bytes());
        b.extend_from_slice(&newfid.to_le_bytes());
        b.extend_from_slice(&(names.len() as u16).to_le_bytes());
        for n in names {
            s(b, n);
        }
    })
}

fn fid_msg(kind: u8, tag: u16, fid: u32, rest: &[u8]) -> Vec<u8> {
    msg(kind, tag, |b| {
        b.extend_from_slice(&fid.to_le_bytes());
        b.extend_from_slice(rest);
    })
}

fn read(tag: u16, fid: u32, off: u64, count: u32) -> Vec<u8> {
    let mut r = off.to_le_bytes().to_vec();
    r.extend_from_slice(&count.to_le_bytes());
    fid_msg(TREAD, tag, fid, &r)
}

/// A board's session: mount, walks (above the attach point too), an open
/// file, a lock, reads, a directory fid, a clunk.
fn session() -> Vec<Vec<u8>> {
    let mut lock = vec![1u8];
    lock.extend_from_slice(&0u32.to_le_bytes());
    lock.extend_from_slice(&0u64.to_le_bytes());
    lock.extend_from_slice(&0u64.to_le_bytes());
    lock.extend_from_slice(&7u32.to_le_bytes());
    lock.extend_from_slice(&[3, 0]);
    lock.extend_from_slice(b"brd");
    vec![
        msg(TVERSION, frame::NOTAG, |b| {
            b.extend_from_slice(&8192u32.to_le_bytes());
            s(b, "9P2000.L");
        }),
        msg(TATTACH, 1, |b| {
            b.extend_from_slice(&1u32.to_le_bytes());
            b.extend_from_slice(&u32::MAX.to_le_bytes());
            s(b, "root");
            s(b, "/srv/a");
            b.extend_from_slice(&0u32.to_le_bytes());
        }),
        walk(2, 1, 2, &["usr", "lib", "data.bin"]),
        fid_msg(TLOPEN, 3, 2, &0u32.to_le_bytes()),
        read(4, 2, 0, 300),
        walk(5, 1, 3, &["..", "b", "etc"]),
        fid_msg(TLOCK, 6, 2, &lock),
        read(7, 2, 300, 1000),
        walk(8, 3, 4, &["..", "..", "a", "x.txt"]),
        fid_msg(TGETATTR, 9, 4, &0x3fffu64.to_le_bytes()),
        fid_msg(TCLUNK, 10, 4, &[]),
        read(11, 2, 1300, 500),
        fid_msg(TGETATTR, 12, 3, &0x3fffu64.to_le_bytes()),
        walk(13, 1, 5, &["missing"]),
        read(14, 2, 1800, 100),
    ]
}

struct Run {
    board: sim::Board,
    counters: Arc<Counters>,
    exit: std::thread::JoinHandle<Exit>,
}

struct Direct(BackendAddr);

impl BackendPolicy for Direct {
    fn connect(&self) -> Result<Backend, ConnectError> {
        Backend::connect(&self.0, Duration::from_secs(5)).map_err(|e| ConnectError::from_io(&e, "connect".into()))
    }
    fn lost(&self, _: &BackendError) {}
}

fn start(srv: &Server, window: Duration) -> Run {
    let (mut host, board) = sim::gadget(512, 16384);
    let counters = Arc::new(Counters::default());
    let c = counters.clone();
    let board_backend = Direct(srv.addr.clone());
    let limits = Limits { max_frame: 1 << 20, board_buflen: 16384, request_timeout: None, recover_window: window };
    let exit = std::thread::spawn(move || run(&mut host, &board_backend, &c, limits, &mut Session::new(limits)));
    Run { board, counters, exit }
}

fn replies(r: &Run, msgs: &[Vec<u8>]) -> Vec<Vec<u8>> {
    msgs.iter()
        .map(|m| {
            r.board.send(m);
            r.board.recv()
        })
        .collect()
}

fn finish(r: Run) {
    drop(r.board);
    assert_eq!(r.exit.join().expect("loop"), Exit::BoardGone);
}

#[test]
fn the_board_gets_the_same_replies_wherever_the_server_dies() {
    let msgs = session();
    let srv = server();
    let r = start(&srv, Duration::from_secs(20));
    let want = replies(&r, &msgs);
    finish(r);
    assert!(want.iter().take(msgs.len() - 2).all(|m| m[4] != RLERROR), "the undisturbed session works");
    let base = srv.world.lock().expect("world").count;
    let mut recovered = 0;
    for death in [Death::BeforeRead, Death::AfterRead, Death::MidReply] {
        // Past the session's own messages, the server dies during replays.
        for at in 2..=base + 40 {
            {
                let mut w = srv.world.lock().expect("world");
                w.count = 0;
                w.die_at = Some((at, death));
            }
            let r = start(&srv, Duration::from_secs(20));
            let got = replies(&r, &msgs);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // A Tlock in flight may have taken effect: EIO is its
                // answer then, never a second try.
                let eio = reply(RLERROR, u16::from_le_bytes([msgs[i][5], msgs[i][6]]), &(libc::EIO as u32).to_le_bytes());
                if msgs[i][4] == TLOCK && *g == eio {
                    continue;
                }
                assert_eq!(
                    g,
                    w,
                    "message {i} ({}) differs when the server dies {death:?} at its message {at}",
                    frame::type_name(msgs[i][4])
                );
            }
            recovered += r.counters.snapshot().recoveries;
            finish(r);
        }
    }
    assert!(recovered >= 3 * (base - 2), "every death after the Tversion was recovered ({recovered})");
}

#[test]
fn a_request_that_may_have_taken_effect_is_not_sent_twice() {
    let srv = server();
    let r = start(&srv, Duration::from_secs(20));
    let msgs = session();
    replies(&r, &msgs[..4]);
    let at = srv.world.lock().expect("world").count + 1;
    srv.world.lock().expect("world").die_at = Some((at, Death::AfterRead));
    let mkdir = msg(TMKDIR, 20, |b| {
        b.extend_from_slice(&1u32.to_le_bytes());
        s(b, "d");
        b.extend_from_slice(&0o755u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
    });
    let got = replies(&r, &[mkdir, read(21, 2, 0, 10)]);
    assert_eq!(got[0], reply(RLERROR, 20, &(libc::EIO as u32).to_le_bytes()), "EIO, not a second Tmkdir");
    assert_eq!(srv.world.lock().expect("world").mkdirs, 1);
    assert_eq!(got[1][4], TREAD + 1, "the session goes on");
    finish(r);
}

#[test]
fn a_replaced_file_is_stale_and_a_smaller_msize_ends_recovery() {
    let srv = server();
    let r = start(&srv, Duration::from_secs(20));
    let msgs = session();
    replies(&r, &msgs[..5]);
    // data.bin is another file after the restart; fid 2 must never read it.
    {
        let mut w = srv.world.lock().expect("world");
        w.replaced.insert("data.bin".into(), 1);
        let at = w.count + 1;
        w.die_at = Some((at, Death::BeforeRead));
    }
    let got = replies(&r, &[read(30, 2, 0, 10), fid_msg(TCLUNK, 31, 2, &[]), fid_msg(TGETATTR, 32, 1, &0x3fffu64.to_le_bytes())]);
    assert_eq!(got[0], reply(RLERROR, 30, &(libc::ESTALE as u32).to_le_bytes()));
    assert_eq!(got[1], reply(TCLUNK + 1, 31, &[]), "its clunk answered here");
    assert_eq!(got[2][4], TGETATTR + 1, "the other fids go on");
    let c = r.counters.snapshot();
    assert_eq!((c.recoveries, c.last_recovery_fids_stale), (1, 1));
    // Now the server comes back offering a smaller msize: recovery ends.
    {
        let mut w = srv.world.lock().expect("world");
        w.msize = Some(4096);
        let at = w.count + 1;
        w.die_at = Some((at, Death::BeforeRead));
    }
    let got = replies(&r, &[fid_msg(TGETATTR, 33, 1, &0x3fffu64.to_le_bytes())]);
    assert_eq!(got[0], reply(RLERROR, 33, &(libc::EIO as u32).to_le_bytes()));
    let c = r.counters.snapshot();
    assert_eq!((c.recoveries, c.recovery_failures, c.recoverable), (1, 1, None));
    finish(r);
}

#[test]
fn a_handed_over_session_stays_recoverable() {
    let srv = server();
    let (mut host, board) = sim::gadget(512, 16384);
    let counters = Arc::new(Counters::default());
    let board_backend = Direct(srv.addr.clone());
    let limits = Limits { max_frame: 1 << 20, board_buflen: 16384, request_timeout: None, recover_window: Duration::from_secs(20) };
    let stop = host.stop_switch();
    let c = counters.clone();
    let first = std::thread::spawn(move || {
        let mut s = Session::new(limits);
        let exit = run(&mut host, &board_backend, &c, limits, &mut s);
        (exit, s, host)
    });
    let msgs = session();
    for m in &msgs[..6] {
        board.send(m);
        board.recv();
    }
    stop.request();
    let (exit, old, mut host) = first.join().expect("first loop");
    assert_eq!(exit, Exit::Stopped);
    let record = old.table_record().expect("the table crosses");
    // The successor: the live connection and the table, as handover.rs
    // passes them.
    let mut s = Session::new(limits);
    s.backend = old.backend;
    s.live = true;
    s.ceiling = old.ceiling;
    s.handed_fids = Some(record);
    let counters = Arc::new(Counters::default());
    let c = counters.clone();
    let board_backend = Direct(srv.addr.clone());
    host.renew_stop_switch();
    let second = std::thread::spawn(move || run(&mut host, &board_backend, &c, limits, &mut s));
    {
        let mut w = srv.world.lock().expect("world");
        let at = w.count + 1;
        w.die_at = Some((at, Death::BeforeRead));
    }
    board.send(&read(40, 2, 0, 50));
    let r = board.recv();
    assert_eq!(r[4], TREAD + 1, "read through the handed-over fid after a server restart");
    assert_eq!(counters.snapshot().recoveries, 1);
    drop(board);
    assert_eq!(second.join().expect("second loop"), Exit::BoardGone);
}

/// What the fid bookkeeping costs per message, measured on the code itself
/// (no USB, no server: their noise is larger than the cost): the tracker of
/// an unconfined board, the confinement of a board with an export, and the
/// lost-fid gate, over a read/write stream and over a metadata stream.
/// `cargo test --release --lib -- --ignored bookkeeping --nocapture`; the
/// figures are in docs/reliability.md beside the benchmark.
#[test]
#[ignore]
fn bookkeeping_cost_per_message() {
    use crate::ninep::confine::{Confine, Policy};
    use crate::ninep::track::Tracker;
    use std::time::Instant;
    let attach = msgs_attach();
    let rattach = reply(TATTACH + 1, 1, &qbytes(Qid { kind: fids::QTDIR, version: 0, path: 1 }));
    let tread = read(5, 2, 4096, 16384);
    let rread = reply(TREAD + 1, 5, &[&16384u32.to_le_bytes()[..], &[7u8; 16384][..]].concat());
    let twalk = walk(6, 1, 3, &["usr", "lib", "libc.so.6"]);
    let q = qbytes(Qid { kind: 0, version: 0, path: 9 });
    let rwalk = reply(TWALK + 1, 6, &[&3u16.to_le_bytes()[..], &q, &q, &q].concat());
    let tget = fid_msg(TGETATTR, 7, 3, &0x3fffu64.to_le_bytes());
    let rget = reply(TGETATTR + 1, 7, &[0u8; 153]);
    let tclunk = fid_msg(TCLUNK, 8, 3, &[]);
    let rclunk = reply(TCLUNK + 1, 8, &[]);
    let walk2 = walk(9, 1, 2, &["data.bin"]);
    let rwalk2 = reply(TWALK + 1, 9, &[&1u16.to_le_bytes()[..], &q].concat());
    let rw: Vec<(&[u8], &[u8])> = vec![(&tread, &rread)];
    let meta: Vec<(&[u8], &[u8])> = vec![(&twalk, &rwalk), (&tget, &rget), (&tclunk, &rclunk)];
    const N: u32 = 200_000;
    let mut buf = vec![0u8; 32768];
    let mut rbuf = vec![0u8; 32768];
    println!("| stream | tracker (ns/msg) | confinement with export (ns/msg) | gate (ns/msg) |");
    println!("|---|---:|---:|---:|");
    for (name, mix) in [("Tread/Rread 16 KiB", &rw), ("walk, getattr, clunk", &meta)] {
        let mut t = Tracker::new(fids::Limits::default());
        t.request(&attach);
        t.reply(&rattach);
        t.request(&walk2);
        t.reply(&rwalk2);
        let t0 = Instant::now();
        for i in 0..N {
            let (tm, rm) = mix[i as usize % mix.len()];
            t.request(std::hint::black_box(tm));
            t.reply(std::hint::black_box(rm));
        }
        let tracker = t0.elapsed().as_nanos() as f64 / N as f64;
        let policy = Arc::new(Policy { export: Some("/srv/a".into()), ..Policy::default() });
        let mut c = Confine::new(policy, fids::Limits::default());
        let mut confine_step = |m: &[u8], r: &[u8], buf: &mut [u8], rbuf: &mut [u8]| {
            buf[..m.len()].copy_from_slice(m);
            let _ = c.request(buf, m.len(), 65536);
            rbuf[..r.len()].copy_from_slice(r);
            let _ = c.reply(rbuf, r.len(), 65536);
        };
        confine_step(&attach, &rattach, &mut buf, &mut rbuf);
        confine_step(&walk2, &rwalk2, &mut buf, &mut rbuf);
        // the copies are the loop's own cost, not confinement's: measured apart
        let t0 = Instant::now();
        for i in 0..N {
            let (tm, rm) = mix[i as usize % mix.len()];
            confine_step(std::hint::black_box(tm), std::hint::black_box(rm), &mut buf, &mut rbuf);
        }
        let confined = t0.elapsed().as_nanos() as f64 / N as f64;
        let t0 = Instant::now();
        for i in 0..N {
            let (tm, rm) = mix[i as usize % mix.len()];
            buf[..tm.len()].copy_from_slice(std::hint::black_box(tm));
            rbuf[..rm.len()].copy_from_slice(std::hint::black_box(rm));
        }
        let copies = t0.elapsed().as_nanos() as f64 / N as f64;
        let t0 = Instant::now();
        for i in 0..N {
            let (tm, _) = mix[i as usize % mix.len()];
            std::hint::black_box(crate::ninep::recover::gate(std::hint::black_box(tm), t.table()));
        }
        let gate = t0.elapsed().as_nanos() as f64 / N as f64;
        println!("| {name} | {tracker:.0} | {:.0} | {gate:.1} |", (confined - copies).max(0.0));
    }
}

fn msgs_attach() -> Vec<u8> {
    session().swap_remove(1)
}

#[test]
fn a_request_the_server_cannot_take_is_answered_eio_after_one_resend_and_the_session_goes_on() {
    let srv = server();
    let r = start(&srv, Duration::from_secs(20));
    let msgs = session();
    replies(&r, &msgs[..5]);
    srv.world.lock().expect("world").poison_tag = Some(50);
    let t0 = std::time::Instant::now();
    let got = replies(&r, &[read(50, 2, 0, 10), read(51, 2, 0, 10)]);
    assert_eq!(got[0], reply(RLERROR, 50, &(libc::EIO as u32).to_le_bytes()), "EIO, not a loop until the window ends");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(got[1][4], TREAD + 1, "the session goes on");
    assert_eq!(r.counters.snapshot().recoveries, 2, "recovered after the first and the second loss");
    finish(r);
}
