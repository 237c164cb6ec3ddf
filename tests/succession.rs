//! A new image started by a hand-over (`usb9pfsd reexec`'s `USB9PFSD_FDS`,
//! or systemd's descriptor store) as the real binary: it must load its
//! config before it answers the requester or takes anything out of the
//! store, and a config it cannot load must leave the requester with the
//! reason and a failure (so postinst's fallback restart runs).

use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use usb9pfsd::daemon::control::Response;

/// Runs `usb9pfsd run` with `fds` placed at 3, 4, … and `USB9PFSD_FDS`
/// naming them, under a stand-in `NOTIFY_SOCKET` with the store enabled.
/// Returns the exit code, stderr and every notify message it sent.
fn start_as_successor(config: &std::path::Path, fds: &[(&str, RawFd)]) -> (i32, String, Vec<String>) {
    let dir = tempfile::tempdir().expect("tmp");
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify");
    let listed: Vec<String> = fds.iter().enumerate().map(|(i, (name, _))| format!("{name}={}", 3 + i)).collect();
    let sources: Vec<RawFd> = fds.iter().map(|(_, fd)| *fd).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_usb9pfsd"));
    cmd.args(["run", "--config"])
        .arg(config)
        .arg("--control-socket")
        .arg(dir.path().join("control"))
        .env_remove("RUST_LOG")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env("USB9PFSD_FDS", listed.join(":"))
        .env("NOTIFY_SOCKET", &notify_path)
        .env("FDSTORE", "8");
    // SAFETY: only async-signal-safe calls between fork and exec. Each
    // source is first copied out of the way (to 100 and up), so placing one
    // never overwrites another still to be placed.
    unsafe {
        cmd.pre_exec(move || {
            for (i, fd) in sources.iter().enumerate() {
                if libc::dup2(*fd, 100 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for i in 0..sources.len() as i32 {
                if libc::dup2(100 + i, 3 + i) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(100 + i);
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run usb9pfsd");
    notify.set_nonblocking(true).expect("nonblocking");
    let mut sent = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = notify.recv(&mut buf) {
        sent.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned(), sent)
}

fn memfd(text: &str) -> std::fs::File {
    let name = std::ffi::CString::new("usb9pfsd-state").expect("name");
    // SAFETY: a valid C string; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create");
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: a fresh descriptor we own.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(text.as_bytes()).expect("write");
    f
}

#[test]
fn a_successor_that_cannot_load_its_config_answers_the_error_and_takes_nothing_from_the_store() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("config.toml");
    std::fs::write(&bad, "[defaults]\nbackend = \"127.0.0.1:564\"\nrenamed_key = 1\n").expect("write");
    let (requester, reply_end) = UnixStream::pair().expect("pair");
    let state = memfd(r#"{"version":1,"writer":"test","boards":[]}"#);
    let (code, stderr, notified) =
        start_as_successor(&bad, &[("usb9pfsd-control-reply", reply_end.as_raw_fd()), ("usb9pfsd-state", state.as_raw_fd())]);
    drop(reply_end);
    assert_ne!(code, 0, "a new image that cannot run fails, so a service manager and postinst see it: {stderr}");
    assert!(stderr.contains(&format!("{}:3:1", bad.display())), "{stderr}");

    requester.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut answer = String::new();
    (&requester).read_to_string(&mut answer).expect("read the answer");
    let r: Response = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"));
    assert!(!r.ok, "the requester is not told ok: {answer}");
    let err = r.error.unwrap_or_default();
    assert!(err.contains(&format!("{}:3:1", bad.display())), "the requester gets the parse error: {answer}");

    assert!(
        !notified.iter().any(|m| m.contains("FDSTOREREMOVE")),
        "nothing is taken out of the store before the config loads: {notified:?}"
    );
    // What came by exec (not from the store) is left with the store for a
    // restart once the config is fixed.
    assert!(
        notified.iter().any(|m| m.contains("FDSTORE=1") && m.contains("FDNAME=usb9pfsd-state")),
        "the state is kept in the store: {notified:?}"
    );
    assert!(stderr.contains("descriptor store"), "and it says so: {stderr}");
}

/// `usb9pfsd forward` re-executes on SIGUSR2 like `run`; the new image must
/// take what was passed (here: the state of zero boards), not leak it. A
/// leaked usbfs descriptor would keep the interface claimed by nobody and
/// make every later claim of it fail.
#[test]
fn forward_takes_what_a_reexec_passed_instead_of_leaking_it() {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_usb9pfsd"))
        .args(["forward", "--port", "1", "--serial", "no-such-board-in-this-test"])
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start usb9pfsd forward");
    let pid = child.id() as i32;
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let wait_for = |what: &str, log: &mut Vec<String>| loop {
        match lines.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => {
                let hit = l.contains(what);
                log.push(l);
                if hit {
                    return;
                }
            }
            Err(e) => panic!("no {what:?} ({e}): {log:#?}"),
        }
    };
    wait_for("board(s) served", &mut log);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGUSR2) };
    wait_for("re-executing", &mut log);
    wait_for("board(s) served", &mut log);
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the re-executed forward runs")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let _ = child.wait();
    assert!(!fds.iter().any(|f| f.contains("usb9pfsd-state")), "the hand-over state leaked into the new image: {fds:?}\n{log:#?}");
}
