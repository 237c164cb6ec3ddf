//! Host integration for managed exports (issue 22): a board mapped to a
//! directory with no server gets a diod that usb9pfsd starts for its session
//! over a socketpair, running as the directory's owner, confined to the
//! directory; the diod is gone when the session ends, and a new session
//! gets a new one. Needs diod (Debian package diod).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use usb9pfsd::ninep::backend::BackendAddr;
use usb9pfsd::ninep::board_backend::BoardBackend;
use usb9pfsd::ninep::confine::Policy;
use usb9pfsd::ninep::forward::Limits;

const RLERROR: u8 = 7;

fn limits() -> Limits {
    Limits { max_frame: 1 << 20, board_buflen: 16384, request_timeout: None, recover_window: Duration::from_secs(0) }
}

fn ok(board: &usb9pfsd::usb::sim::Board, t: Vec<u8>) -> Vec<u8> {
    let kind = t[4];
    let r = rpc(board, t);
    assert_eq!(r[4], kind + 1, "T-type {kind} answered, not errno {}", errno_of(&r));
    r
}

/// The managed diods serving `dir` now (their command line names it).
fn diods_serving(dir: &Path) -> Vec<u32> {
    let want = dir.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_diod = args.first().is_some_and(|a| a.ends_with(b"diod"));
        let zombie = std::fs::read_to_string(e.path().join("stat")).is_ok_and(|s| s.contains(") Z "));
        if is_diod && !zombie && args.contains(&want) {
            pids.push(pid);
        }
    }
    pids
}

/// A tree owned by a user other than root, as a developer's rootfs is:
/// `nobody`, which every Debian machine has, when the test runs as root (the
/// service's case with the drop-in), else ours.
fn developer_tree() -> (tempfile::TempDir, std::path::PathBuf, u32) {
    let dir = tempfile::tempdir().expect("tmp");
    let export = dir.path().canonicalize().expect("canon");
    std::fs::write(export.join("data.bin"), content(100_000)).expect("write");
    let owner = if unsafe { libc::geteuid() } == 0 {
        // SAFETY: getpwnam with a NUL-terminated name; the entry is read at once.
        let pw = unsafe { libc::getpwnam(c"nobody".as_ptr()) };
        assert!(!pw.is_null(), "this machine has no user nobody");
        unsafe { (*pw).pw_uid }
    } else {
        unsafe { libc::geteuid() }
    };
    for p in [export.clone(), export.join("data.bin")] {
        std::os::unix::fs::chown(&p, Some(owner), Some(owner)).expect("chown");
    }
    (dir, export, owner)
}

#[test]
fn a_board_mapped_to_a_directory_is_served_by_its_own_diod_as_the_trees_owner_and_it_ends_with_the_session() {
    let (_dir, export, owner) = developer_tree();
    let backend = BoardBackend::new(BackendAddr::Managed(export.clone()));
    // What config.rs gives a managed entry: confined to the directory, the
    // board's attach squashed to root's ids, as a board mounting as root.
    backend.set_policy(&Policy { export: Some(export.to_str().expect("utf8").into()), ..Policy::default() });
    assert!(diods_serving(&export).is_empty());
    let s = serve(backend, limits());
    let b = &s.board;
    ok(b, Msg::new(100, 0xffff).u32(16384).s("9P2000.L").done());
    assert_eq!(diods_serving(&export).len(), 1, "one diod for the session");
    // The board mounts as root with no aname: confinement sends the export.
    ok(b, Msg::new(104, 1).u32(1).u32(NOFID).s("root").s("").u32(0).done());
    // Read the file back whole: the bytes are the file's.
    ok(b, Msg::new(110, 2).u32(1).u32(2).u16(1).s("data.bin").done());
    ok(b, Msg::new(12, 3).u32(2).u32(0).done());
    let mut got = Vec::new();
    while got.len() < 100_000 {
        let r = ok(b, Msg::new(116, 4).u32(2).u64(got.len() as u64).u32(8000).done());
        assert!(r.len() > 11, "short read at {}", got.len());
        got.extend_from_slice(&r[11..]);
    }
    assert_eq!(got, content(100_000));
    // A file the board creates as root belongs to the tree's owner.
    ok(b, Msg::new(110, 5).u32(1).u32(3).u16(0).done());
    ok(b, Msg::new(14, 6).u32(3).s("made-by-board").u32(0o1101).u32(0o644).u32(0).done());
    let meta = std::fs::metadata(export.join("made-by-board")).expect("created");
    assert_eq!((meta.uid(), meta.gid()), (owner, owner), "squashed to the owner");
    // Nothing above the export: a walk to .. stays at the root.
    let r = rpc(b, Msg::new(110, 7).u32(1).u32(4).u16(2).s("..").s("etc").done());
    assert_eq!(r[4], RLERROR, "no /etc above the export");

    // The board mounts again: the old session's diod is gone, a new one serves.
    let before = diods_serving(&export);
    ok(b, Msg::new(100, 0xffff).u32(16384).s("9P2000.L").done());
    let after = diods_serving(&export);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(before, after, "a new diod for the new session");

    // The board goes: no diod is left running.
    drop(s.board);
    s.worker.join().expect("worker");
    s.backend.stop();
    drop(s.backend);
    assert!(diods_serving(&export).is_empty(), "{:?} still running", diods_serving(&export));
}

#[test]
fn a_tree_owned_by_root_is_never_served_by_a_managed_diod_and_the_board_is_told() {
    if unsafe { libc::geteuid() } != 0 {
        return; // a tree owned by root needs root to make
    }
    let dir = tempfile::tempdir().expect("tmp");
    let export = dir.path().canonicalize().expect("canon");
    let backend = BoardBackend::new(BackendAddr::Managed(export.clone()));
    let s = serve(backend, limits());
    let r = rpc(&s.board, Msg::new(100, 0xffff).u32(16384).s("9P2000.L").done());
    assert_eq!(r[4], RLERROR, "the mount fails");
    assert!(diods_serving(&export).is_empty());
    let why = s.backend.last_error.lock().expect("lock").clone().expect("an error on record").message;
    assert!(why.contains("never runs as root") && why.contains("chown -R"), "{why}");
    drop(s.board);
    let _ = s.worker.join();
}
