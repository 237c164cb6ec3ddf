//! The control protocol over a real unix socket in a temporary directory,
//! against a real supervisor (with a spawner that starts nothing). Clients
//! are the blocking `request` the CLI uses, run on tokio's blocking pool.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::config::serve::ServeSpec;
use crate::daemon::supervisor::{Silent, Spawn, Supervisor};
use crate::worker::Job;

struct NoWorkers;

impl Spawn for NoWorkers {
    fn spawn(&mut self, _: Job) -> Result<(), String> {
        Ok(())
    }
}

struct Daemon {
    dir: tempfile::TempDir,
    socket: PathBuf,
    config: PathBuf,
}

const GOOD: &str = "[defaults]\nbackend = \"127.0.0.1:564\"\n";

/// A supervisor and the control socket in front of it, as `run` wires them.
fn daemon() -> Daemon {
    daemon_with(|l| l)
}

/// The same, with the listener adjusted first.
fn daemon_with(adjust: impl FnOnce(Listener) -> Listener) -> Daemon {
    let dir = tempfile::tempdir().expect("tmp");
    let (socket, config) = (dir.path().join("control"), dir.path().join("config.toml"));
    std::fs::write(&config, GOOD).expect("write config");
    let (tx, rx) = mpsc::unbounded_channel();
    let sup =
        Supervisor::new(Config::load(&config).expect("config"), NoWorkers, Box::new(Silent), tx.clone()).with_config_path(config.clone());
    tokio::spawn(sup.run(rx));
    let listener = adjust(bind(&socket).expect("bind"));
    tokio::spawn(listener.serve(tx, Some(config.clone())));
    Daemon { dir, socket, config }
}

async fn ask(socket: &Path, command: &str) -> Result<Response, String> {
    let (socket, command) = (socket.to_path_buf(), command.to_string());
    tokio::task::spawn_blocking(move || request(&socket, &command)).await.expect("client thread")
}

/// Sends raw bytes, returns the raw answer line.
async fn raw(socket: &Path, bytes: Vec<u8>) -> String {
    let socket = socket.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).expect("connect");
        // A refused request may be answered before all of it is written.
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut answer = String::new();
        s.read_to_string(&mut answer)
            .unwrap_or_else(|e| panic!("read answer to {:?}: {e}", String::from_utf8_lossy(&bytes[..bytes.len().min(40)])));
        answer
    })
    .await
    .expect("client thread")
}

fn error_of(answer: &str) -> String {
    let r: Response = serde_json::from_str(answer).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!((r.version, r.ok), (PROTOCOL, false), "{answer}");
    r.error.expect("error message")
}

#[tokio::test]
async fn status_and_reload_round_trip() {
    let d = daemon();
    let mode = std::fs::metadata(&d.socket).expect("socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);

    let r = ask(&d.socket, "status").await.expect("status");
    assert!(r.ok);
    let report = r.status.expect("report");
    assert_eq!(report.daemon.config_path.as_deref(), Some(d.config.to_str().expect("utf8")));
    assert_eq!(report.daemon.version, env!("CARGO_PKG_VERSION"));
    assert!(report.boards.is_empty());

    let r = ask(&d.socket, "reload").await.expect("reload");
    assert_eq!((r.ok, r.reload), (true, Some(reload::Summary::default())));

    // An invalid file: the error names file:line:column, the old config
    // stays, and status says so until a good reload.
    std::fs::write(&d.config, "[defaults]\nbackend = \"nope\"\n").expect("write");
    let r = ask(&d.socket, "reload").await.expect("answer");
    let err = r.error.expect("error");
    assert!(!r.ok);
    assert!(err.starts_with(&format!("{}:2:11:", d.config.display())), "{err}");
    let report = ask(&d.socket, "status").await.expect("status").status.expect("report");
    assert!(err.starts_with(report.daemon.last_reload_error.as_deref().expect("recorded")), "{err}");
    assert!(err.ends_with("the old config stays in force"), "{err}");
    std::fs::write(&d.config, GOOD).expect("write");
    assert!(ask(&d.socket, "reload").await.expect("reload").ok);
    let report = ask(&d.socket, "status").await.expect("status").status.expect("report");
    assert_eq!(report.daemon.last_reload_error, None);
}

#[tokio::test]
async fn garbage_oversized_and_foreign_requests_get_an_error_and_the_socket_keeps_working() {
    let d = daemon();
    let err = error_of(&raw(&d.socket, b"hello\n".to_vec()).await);
    assert!(err.starts_with("not a usb9pfsd control request"), "{err}");
    let err = error_of(&raw(&d.socket, vec![b'x'; MAX_REQUEST * 4]).await);
    assert!(err.contains("longer than 4096 bytes"), "{err}");
    let err = error_of(&raw(&d.socket, br#"{"version":2,"command":"status"}"#.to_vec()).await);
    assert!(err.contains("protocol version 2"), "{err}");
    let err = error_of(&raw(&d.socket, br#"{"version":1,"command":"reboot"}"#.to_vec()).await);
    assert!(err.contains("unknown command \"reboot\""), "{err}");
    // No newline, end of stream: still one request.
    let answer = raw(&d.socket, br#"{"version":1,"command":"status"}"#.to_vec()).await;
    assert!(answer.starts_with(r#"{"version":1,"ok":true,"status":"#) && answer.ends_with('\n'), "{answer}");
    assert!(ask(&d.socket, "status").await.expect("status").ok);
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_dropped_after_the_timeout() {
    let d = daemon();
    let client = UnixStream::connect(&d.socket).await.expect("connect");
    // Paused clock: the runtime advances it while everyone waits.
    let mut answer = Vec::new();
    loop {
        client.readable().await.expect("readable");
        let mut chunk = [0u8; 256];
        match client.try_read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("{e}"),
        }
    }
    let err = error_of(&String::from_utf8(answer).expect("utf8"));
    assert!(err.contains("no request line within 5 s"), "{err}");
    drop(client);
}

#[tokio::test]
async fn not_running_and_permission_messages_say_what_to_do() {
    let dir = tempfile::tempdir().expect("tmp");
    let missing = dir.path().join("control");
    let err = ask(&missing, "status").await.expect_err("no daemon");
    assert_eq!(err, format!("usb9pfsd is not running (no socket at {})", missing.display()));
    // A socket file whose daemon died.
    drop(std::os::unix::net::UnixListener::bind(&missing).expect("bind"));
    let err = ask(&missing, "status").await.expect_err("no daemon");
    assert_eq!(err, format!("usb9pfsd is not running (nothing listens on {})", missing.display()));
    let denied = connect_error(Path::new(DEFAULT_SOCKET), &io::Error::from(io::ErrorKind::PermissionDenied));
    assert_eq!(denied, "permission denied on /run/usb9pfsd/control: add yourself to group usb9pfsd");
    // The real thing, where the kernel checks the mode (root bypasses it).
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("running as root: the kernel's EACCES is not reachable; the mapping is checked above");
        return;
    }
    let d = daemon();
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o000)).expect("chmod");
    let err = ask(&d.socket, "status").await.expect_err("denied");
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod back");
    assert!(err.starts_with("permission denied on") && err.ends_with("group usb9pfsd"), "{err}");
}

#[tokio::test]
async fn bind_replaces_a_dead_daemons_socket_but_not_a_live_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("run").join("control");
    let first = bind(&path).expect("bind, making the directory");
    let mode = std::fs::metadata(path.parent().expect("dir")).expect("dir").permissions().mode() & 0o777;
    assert_eq!(mode, 0o750);
    let err = bind(&path).err().expect("a live socket is not taken over");
    assert!(err.contains("another usb9pfsd"), "{err}");
    drop(first);
    assert!(!path.exists(), "dropping the listener removes its socket");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("stale"));
    let second = bind(&path).expect("a stale socket is replaced");
    assert_eq!(second.path(), path);
    // Never delete something that is not a socket (a mistyped path).
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "x").expect("write");
    let err = bind(&file).err().expect("refused");
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).expect("still there"), "x");
}

#[tokio::test]
async fn reload_without_a_config_file_says_so() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = reload(&tx, None).await.expect_err("forward has no file");
    assert!(err.contains("usb9pfsd forward"), "{err}");
}

#[tokio::test]
async fn only_root_the_daemons_user_and_the_admin_group_may_change_things() {
    // Nobody is trusted to change things here, not even this test's user.
    let d = daemon_with(|l| l.with_access(Access { users: vec![], group: None }));
    let r = ask(&d.socket, "status").await.expect("status");
    assert!(r.ok, "status only reads: open to whoever may connect");
    // A config that does not load: should the check ever let a reexec
    // through, it stops there, before this test process is replaced.
    std::fs::write(&d.config, "[defaults]\nbackend = \"nope\"\n").expect("write");
    for command in ["reload", "reexec"] {
        let r = ask(&d.socket, command).await.expect("answer");
        let err = r.error.unwrap_or_default();
        assert!(!r.ok && err.starts_with("permission denied"), "{command}: {err}");
        assert!(err.contains(ADMIN_GROUP), "{err}");
    }
    // Nor may they say who serves a board.
    for req in [serve_req("0001-A", "/srv/rootfs"), Request { board: Some("0001-A".into()), ..Request::new("unserve") }] {
        let r = send_async(&d.socket, req.clone()).await.expect("answer");
        let err = r.error.unwrap_or_default();
        assert!(!r.ok && err.starts_with("permission denied"), "{}: {err}", req.command);
    }
    // The refused reload did not happen: the file was not even read.
    let report = ask(&d.socket, "status").await.expect("status").status.expect("report");
    assert_eq!(report.daemon.last_reload_error, None);
    assert!(report.daemon.serves.is_empty(), "the refused serve did not happen");
}

fn serve_req(board: &str, export: &str) -> Request {
    let spec = ServeSpec { export: Some(export.into()), ..ServeSpec::default() };
    Request { board: Some(board.into()), serve: Some(spec), ..Request::new("serve") }
}

async fn send_async(socket: &Path, req: Request) -> Result<Response, String> {
    let socket = socket.to_path_buf();
    tokio::task::spawn_blocking(move || send(&socket, &req)).await.expect("client thread")
}

#[tokio::test]
async fn serve_and_unserve_round_trip_and_say_who_set_what() {
    let d = daemon();
    let r = send_async(&d.socket, serve_req("1-1.2", "/srv/rootfs")).await.expect("serve");
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(r.served.expect("answer").boards, Vec::<String>::new(), "no such board plugged in");
    let serves = ask(&d.socket, "status").await.expect("status").status.expect("report").daemon.serves;
    assert_eq!(serves.len(), 1);
    assert_eq!((serves[0].board.to_string(), serves[0].spec.export.as_deref()), ("1-1.2".into(), Some("/srv/rootfs")));
    assert_eq!(serves[0].by_uid, unsafe { libc::geteuid() }, "SO_PEERCRED's uid");
    // A reload of the file keeps it.
    assert!(ask(&d.socket, "reload").await.expect("reload").ok);
    assert_eq!(ask(&d.socket, "status").await.expect("status").status.expect("report").daemon.serves.len(), 1);
    // Bad requests say what is wrong and change nothing.
    for (req, want) in [
        (Request { board: Some("1-1.2".into()), ..Request::new("serve") }, "needs what to serve"),
        (serve_req("1-1.2", "relative/dir"), "--export"),
        (Request { board: None, ..serve_req("x", "/srv/x") }, "needs a board"),
        (serve_req("003-007#q", "/srv/x"), "BUS-ADDRESS#INTERFACE"),
    ] {
        let r = send_async(&d.socket, req).await.expect("answer");
        assert!(!r.ok && r.error.as_deref().unwrap_or_default().contains(want), "{:?} / {want}", r.error);
    }
    let r = send_async(&d.socket, Request { board: Some("1-1.2".into()), ..Request::new("unserve") }).await.expect("unserve");
    assert!(r.ok, "{:?}", r.error);
    assert!(ask(&d.socket, "status").await.expect("status").status.expect("report").daemon.serves.is_empty());
}

#[test]
fn the_admin_group_counts_as_primary_or_supplementary_group() {
    let access = Access { users: vec![0, 991], group: Some(990) };
    let peer = |uid, gid, groups: &[u32]| Peer { uid, gid, groups: groups.to_vec() };
    for ok in [peer(0, 0, &[]), peer(991, 991, &[]), peer(1000, 990, &[]), peer(1000, 1000, &[4, 990])] {
        assert_eq!(access.check(&ok, "reload"), Ok(()), "{ok:?}");
    }
    let stranger = peer(1000, 1000, &[991, 4]);
    assert!(access.check(&stranger, "reload").is_err());
    assert!(access.check(&stranger, "reexec").unwrap_err().contains("uid 1000"));
    assert_eq!(access.check(&stranger, "status"), Ok(()));
    // No admin group on this system: only the listed users.
    let bare = Access { users: vec![0], group: None };
    assert!(bare.check(&peer(1000, 990, &[990]), "reload").is_err());
}

#[test]
fn a_peers_credentials_are_read_from_the_kernel() {
    let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
    let peer = Peer::of(&a).expect("credentials");
    // SAFETY: plain getters.
    assert_eq!((peer.uid, peer.gid), (unsafe { libc::geteuid() }, unsafe { libc::getegid() }));
}

#[tokio::test(start_paused = true)]
async fn idle_clients_cannot_take_more_than_their_share_of_connections() {
    let d = daemon();
    // Connections that never send anything hold every slot...
    let mut idle = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        idle.push(UnixStream::connect(&d.socket).await.expect("connect"));
    }
    // ...the next one is told at once and closed, without waiting for a
    // request or holding a descriptor.
    let extra = UnixStream::connect(&d.socket).await.expect("connect");
    let answer = read_to_end(&extra).await;
    let err = error_of(&answer);
    assert!(err.contains(&format!("answering {MAX_CONNECTIONS} control connections already")), "{err}");
    // The idle ones are dropped at their deadline; then the socket serves again.
    for c in &idle {
        let err = error_of(&read_to_end(c).await);
        assert!(err.contains("no request line"), "{err}");
    }
    drop(idle);
    let client = UnixStream::connect(&d.socket).await.expect("connect");
    write_all(&client, b"{\"version\":1,\"command\":\"status\"}\n").await.expect("write");
    let answer = read_to_end(&client).await;
    assert!(answer.starts_with(r#"{"version":1,"ok":true"#), "{answer}");
}

async fn read_to_end(client: &UnixStream) -> String {
    let mut answer = Vec::new();
    loop {
        client.readable().await.expect("readable");
        let mut chunk = [0u8; 4096];
        match client.try_read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("{e}"),
        }
    }
    String::from_utf8(answer).expect("utf8")
}

#[tokio::test]
async fn a_daemon_that_goes_away_without_answering_is_said_so() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("control");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    // What a reexec's requester sees when the new image dies before it
    // answers: the connection closes with nothing on it.
    let server = std::thread::spawn(move || drop(listener.accept().expect("accept")));
    let err = ask(&path, "reexec").await.expect_err("no answer");
    server.join().expect("server thread");
    assert!(err.contains("closed the connection without an answer") && err.contains("could not start"), "{err}");
}

#[test]
fn an_admin_who_is_not_root_may_serve_only_a_directory_of_their_own() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().to_str().expect("utf8").to_string();
    let owner = std::fs::metadata(dir.path()).expect("stat").uid();
    let managed = ServeSpec { export: Some(path.clone()), ..ServeSpec::default() };
    assert_eq!(may_serve_locally(owner, &managed), Ok(()), "its owner");
    assert_eq!(may_serve_locally(0, &managed), Ok(()), "root");
    let other = owner.wrapping_add(4321);
    let err = may_serve_locally(other, &managed).expect_err("someone else's directory");
    assert!(err.starts_with("permission denied") && err.contains(&format!("uid {owner}")), "{err}");
    // On a server of the user's, the export is a path on that server.
    let remote = ServeSpec { backend: Some("10.0.0.2:564".parse().expect("addr")), ..managed.clone() };
    assert_eq!(may_serve_locally(other, &remote), Ok(()));
    assert!(may_serve_locally(other, &ServeSpec { export: Some("/nonexistent/x".into()), ..ServeSpec::default() }).is_err());
}
