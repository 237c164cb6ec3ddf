//! Host integration: a confined board against a real diod that exports the
//! parent of two boards' directories (the shared-server layout issue 18 is
//! about). The board may not attach or walk into its neighbour's tree, `..`
//! at its root stays at its root (diod itself would give the parent), a
//! symlink it makes leads nowhere, files it creates belong to the squashed
//! uid/gid, and read_only gives EROFS and leaves the tree as it was.
//! Needs the `diod` binary (Debian package diod); fails loudly without it.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use usb9pfsd::board::BoardInfo;
use usb9pfsd::daemon::status::Counters;
use usb9pfsd::ninep::board_backend::BoardBackend;
use usb9pfsd::ninep::confine::Policy;
use usb9pfsd::ninep::forward::Limits;
use usb9pfsd::usb::sim::{self, Board};
use usb9pfsd::worker::{self, End, Job, Reporter};

const NOFID: u32 = u32::MAX;
const NOBODY: u32 = 65534;

struct Diod(Child);

impl Drop for Diod {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_diod(export: &Path) -> (Diod, u16) {
    let bin = ["/usr/sbin/diod", "/usr/bin/diod"].into_iter().find(|p| Path::new(p).exists());
    let bin = bin.expect("diod is not installed: apt-get install diod (the test command installs it)");
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let child = Command::new(bin)
        .args(["-f", "-n", "-d", "0", "-L", "stderr", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-e")
        .arg(export)
        .stdin(Stdio::null())
        .spawn()
        .expect("start diod");
    let diod = Diod(child);
    // Readiness of an external process: probe its port, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "diod did not listen on port {port} within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    (diod, port)
}

struct Msg(Vec<u8>);

impl Msg {
    fn new(kind: u8, tag: u16) -> Msg {
        let mut v = vec![0, 0, 0, 0, kind];
        v.extend_from_slice(&tag.to_le_bytes());
        Msg(v)
    }
    fn u16(mut self, x: u16) -> Msg {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn u32(mut self, x: u32) -> Msg {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn u64(mut self, x: u64) -> Msg {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn s(self, s: &str) -> Msg {
        let mut m = self.u16(s.len() as u16);
        m.0.extend_from_slice(s.as_bytes());
        m
    }
    fn done(mut self) -> Vec<u8> {
        let n = self.0.len() as u32;
        self.0[..4].copy_from_slice(&n.to_le_bytes());
        self.0
    }
}

/// Sends a T-message; returns the reply after checking its tag.
fn rpc(board: &Board, t: Vec<u8>) -> Vec<u8> {
    board.send(&t);
    let r = board.recv();
    assert_eq!(u32::from_le_bytes([r[0], r[1], r[2], r[3]]) as usize, r.len());
    assert_eq!(&r[5..7], &t[5..7], "reply carries the request's tag");
    r
}

fn ok(board: &Board, t: Vec<u8>) -> Vec<u8> {
    let kind = t[4];
    let r = rpc(board, t);
    assert_eq!(r[4], kind + 1, "T-type {kind} failed: {:?}", &r[..r.len().min(16)]);
    r
}

fn errno(board: &Board, t: Vec<u8>) -> i32 {
    let r = rpc(board, t);
    assert_eq!(r[4], 7, "expected an Rlerror, got type {}", r[4]);
    u32::from_le_bytes([r[7], r[8], r[9], r[10]]) as i32
}

fn walk(fid: u32, newfid: u32, names: &[&str]) -> Vec<u8> {
    let mut m = Msg::new(110, 2).u32(fid).u32(newfid).u16(names.len() as u16);
    for n in names {
        m = m.s(n);
    }
    m.done()
}

/// The qid path of each qid in an Rwalk, or of an Rattach's qid.
fn qid_paths(r: &[u8]) -> Vec<u64> {
    let at = |o: usize| u64::from_le_bytes(r[o + 5..o + 13].try_into().expect("8 bytes"));
    match r[4] {
        105 => vec![at(7)],
        111 => (0..u16::from_le_bytes([r[7], r[8]]) as usize).map(|i| at(9 + 13 * i)).collect(),
        t => panic!("no qids in type {t}"),
    }
}

/// Every path below `root` with its content (files) or nothing (dirs,
/// symlinks as their target), to compare a tree before and after.
fn snapshot(root: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d).expect("read_dir").map(|e| e.expect("entry").path()).collect();
        entries.sort();
        for p in entries {
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let content = if m.file_type().is_symlink() {
                std::fs::read_link(&p).expect("readlink").into_os_string().into_encoded_bytes()
            } else if m.is_dir() {
                stack.push(p.clone());
                Vec::new()
            } else {
                std::fs::read(&p).expect("read")
            };
            out.push((p, content, m.mode()));
        }
    }
    out
}

struct Rig {
    board: Board,
    backend: Arc<BoardBackend>,
    counters: Arc<Counters>,
    worker: std::thread::JoinHandle<End>,
}

fn rig(port: u16, policy: &Policy) -> Rig {
    let gadget = BoardInfo::example(Some("CONFINED"), 1, 2);
    let (host, board) = sim::gadget(512, 16384);
    let counters = Arc::new(Counters::default());
    let backend = Arc::new(BoardBackend::new(format!("127.0.0.1:{port}").parse().expect("addr")));
    backend.set_policy(policy);
    let job = Job {
        info: gadget.clone(),
        board_backend: backend.clone(),
        counters: counters.clone(),
        limits: Limits { max_frame: 1 << 20, board_buflen: 16384, request_timeout: None, recover_window: std::time::Duration::ZERO },
        stop: host.stop_switch(),
        handed: None,
        reporter: Reporter { key: gadget.key(), generation: 1, sink: Arc::new(|_| {}) },
    };
    let worker = std::thread::spawn(move || {
        let mut host = host;
        worker::serve(&mut host, &job)
    });
    Rig { board, backend, counters, worker }
}

fn mount(board: &Board, aname: &str) -> Vec<u8> {
    ok(board, Msg::new(100, 0xffff).u32(16384).s("9P2000.L").done());
    rpc(board, Msg::new(104, 1).u32(1).u32(NOFID).s("root").s(aname).u32(0).done())
}

#[test]
fn a_confined_board_reaches_only_its_own_tree_on_a_shared_diod() {
    let dir = tempfile::tempdir().expect("tmp");
    let parent = dir.path().canonicalize().expect("canon");
    let (a, b) = (parent.join("boards/a"), parent.join("boards/b"));
    std::fs::create_dir_all(a.join("sub")).expect("mkdir a/sub");
    std::fs::create_dir_all(&b).expect("mkdir b");
    std::fs::write(b.join("secret"), b"b's").expect("write secret");
    std::fs::write(a.join("mine"), b"a's").expect("write mine");
    // The squashed user must be able to create in its own tree.
    std::fs::set_permissions(&a, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    let (_diod, port) = start_diod(&parent);
    let export = a.to_str().expect("utf8").to_string();
    let policy = Policy { export: Some(export.clone()), read_only: false, uid: Some(NOBODY), gid: Some(NOBODY) };
    let r = rig(port, &policy);
    let board = &r.board;

    // The neighbour's tree, the shared parent, and tricks: EACCES.
    ok(board, Msg::new(100, 0xffff).u32(16384).s("9P2000.L").done());
    for aname in
        [b.to_str().expect("utf8").to_string(), parent.to_str().expect("utf8").into(), format!("{export}/../b"), format!("{export}b")]
    {
        let e = errno(board, Msg::new(104, 1).u32(1).u32(NOFID).s("root").s(&aname).u32(0).done());
        assert_eq!(e, libc::EACCES, "aname {aname}");
    }
    let root = ok(board, Msg::new(104, 1).u32(1).u32(NOFID).s("root").s("").u32(0).done());
    let root_qid = qid_paths(&root)[0];
    // `..` from the root, once and repeatedly: the root (diod alone would
    // give the parent, from which b is one walk away).
    assert_eq!(qid_paths(&ok(board, walk(1, 2, &[".."]))), vec![root_qid]);
    assert_eq!(qid_paths(&ok(board, walk(2, 2, &["..", "..", ".."]))), vec![root_qid; 3]);
    assert_eq!(errno(board, walk(1, 3, &["..", "b", "secret"])), libc::ENOENT, "no b in a");
    // Stepwise: down into sub, then up twice: still the root.
    ok(board, walk(1, 4, &["sub"]));
    let up = qid_paths(&ok(board, walk(4, 5, &["..", ".."])));
    assert_eq!(up, vec![root_qid, root_qid]);
    // A name with '/' is EINVAL, never resolved by the server.
    assert_eq!(errno(board, walk(1, 6, &["../b"])), libc::EINVAL);
    // Below the export by aname: attached to the export, then walked.
    let sub = rpc(board, Msg::new(104, 1).u32(7).u32(NOFID).s("root").s(&format!("{export}/sub")).u32(0).done());
    assert_eq!(qid_paths(&sub), qid_paths(&ok(board, walk(1, 8, &["sub"]))));
    // A symlink out: made, but never a way through.
    ok(board, Msg::new(16, 9).u32(1).s("esc").s("../b").u32(0).done());
    assert_eq!(errno(board, walk(1, 9, &["esc", "secret"])), libc::ELOOP);
    ok(board, walk(1, 10, &["esc"]));
    assert_eq!(errno(board, walk(10, 11, &["secret"])), libc::ELOOP);
    assert_eq!(errno(board, Msg::new(12, 9).u32(10).u32(0).done()), libc::ELOOP, "Tlopen of the symlink");
    let via = rpc(board, Msg::new(104, 1).u32(12).u32(NOFID).s("root").s(&format!("{export}/esc/secret")).u32(0).done());
    assert_eq!(via[4], 7, "attach through the symlink refused");
    // Squash: a file the board creates as root belongs to the configured
    // uid/gid on the server.
    ok(board, walk(1, 13, &[]));
    ok(board, Msg::new(14, 9).u32(13).s("created").u32(0o102).u32(0o644).u32(0).done());
    let mut write = Msg::new(118, 9).u32(13).u64(0).u32(2).done();
    write.extend_from_slice(b"hi");
    ok(board, resized(write));
    let m = std::fs::metadata(a.join("created")).expect("created on the server");
    assert_eq!((m.uid(), m.gid()), (NOBODY, NOBODY), "owned by the squashed ids");
    assert_eq!(std::fs::read(a.join("created")).expect("read"), b"hi");
    assert_eq!(errno(board, Msg::new(26, 9).u32(13).u32(2).u32(0).u32(0).u32(0).u64(0).u64(0).u64(0).u64(0).u64(0).done()), libc::EPERM);
    assert_eq!(std::fs::read(b.join("secret")).expect("secret"), b"b's", "the neighbour's file untouched");
    assert_eq!(r.counters.snapshot().refused, 10, "4 anames, a name, 3 symlink uses, an attach through one, an owner change");

    // read_only from the next mount on: every write-class request is EROFS
    // and the tree does not change.
    r.backend.set_policy(&Policy { read_only: true, ..policy.clone() });
    let before = snapshot(&parent);
    mount(board, "");
    ok(board, walk(1, 2, &["mine"]));
    ok(board, walk(1, 3, &[]));
    let refused = [
        Msg::new(12, 5).u32(2).u32(2).done(),      // Tlopen O_RDWR
        Msg::new(12, 5).u32(2).u32(0o1000).done(), // Tlopen O_TRUNC
        Msg::new(14, 5).u32(3).s("new").u32(0o102).u32(0o644).u32(0).done(),
        Msg::new(72, 5).u32(1).s("dir").u32(0o755).u32(0).done(),
        Msg::new(16, 5).u32(1).s("l").s("x").u32(0).done(),
        Msg::new(70, 5).u32(1).u32(2).s("hard").done(),
        Msg::new(74, 5).u32(1).s("mine").u32(1).s("theirs").done(),
        Msg::new(76, 5).u32(1).s("mine").u32(0).done(),
        Msg::new(26, 5).u32(2).u32(8).u32(0).u32(0).u32(0).u64(0).u64(0).u64(0).u64(0).u64(0).done(),
        Msg::new(32, 5).u32(2).s("user.x").u64(1).u32(0).done(),
        Msg::new(20, 5).u32(2).u32(1).s("moved").done(),
        Msg::new(122, 5).u32(2).done(),
    ];
    for t in refused {
        let kind = t[4];
        assert_eq!(errno(board, t), libc::EROFS, "T-type {kind}");
    }
    // Reads still work.
    ok(board, walk(1, 2, &["mine"]));
    ok(board, Msg::new(12, 6).u32(2).u32(0).done());
    let data = ok(board, Msg::new(116, 6).u32(2).u64(0).u32(100).done());
    assert_eq!(&data[11..], b"a's");
    assert_eq!(snapshot(&parent), before, "the server's tree is byte for byte unchanged");

    drop(r.board);
    assert_eq!(r.worker.join().expect("join"), End::Gone);
}

/// Fixes the size field after bytes were appended to a built message.
fn resized(mut m: Vec<u8>) -> Vec<u8> {
    let n = m.len() as u32;
    m[..4].copy_from_slice(&n.to_le_bytes());
    m
}
