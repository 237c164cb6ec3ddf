//! The binary as a person runs it: subcommands, exit codes and messages.
//! These run on machines with no USB at all (CI containers): `list` must still
//! work and print an empty list.

use std::process::Command;

fn usb9pfsd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_usb9pfsd"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run usb9pfsd");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_names_every_subcommand() {
    let (code, out, _) = usb9pfsd(&["--help"]);
    assert_eq!(code, 0);
    for sub in ["run", "list", "forward", "check-config", "status", "reload", "reexec"] {
        assert!(out.contains(sub), "{sub} missing from:\n{out}");
    }
}

#[test]
fn list_without_config_or_usb_is_an_empty_list() {
    if std::path::Path::new("/sys/bus/usb/devices").exists() {
        eprintln!("this machine has USB; the empty-list case is covered by discover's unit tests");
        return;
    }
    let (code, out, _) = usb9pfsd(&["list", "--json", "--config", "config.example.toml"]);
    assert_eq!((code, out.trim()), (0, "[]"));
    let (code, out, _) = usb9pfsd(&["list"]);
    assert_eq!((code, out.trim()), (0, "no usb9pfs gadgets present"));
}

#[test]
fn check_config_reports_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[defaults]\nbackend = \"127.0.0.1:564\"\n\n[[board]]\nserial = \"A\"\nbackend = \"nope\"\n")
        .expect("write");
    let (code, _, err) = usb9pfsd(&["check-config", bad.to_str().expect("utf8")]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{}:6:11:", bad.display())), "{err}");
    assert!(err.contains("host:port"), "{err}");

    let (code, out, _) = usb9pfsd(&["check-config", "config.example.toml"]);
    assert_eq!(code, 0);
    assert!(out.contains("serial CHANGE-ME-0001 -> 127.0.0.1:564"), "{out}");

    // The confinement keys: checked with their place, shown when valid.
    std::fs::write(&bad, "[defaults]\nbackend = \"h:1\"\nexport = \"/srv/../etc\"\n").expect("write");
    let (code, _, err) = usb9pfsd(&["check-config", bad.to_str().expect("utf8")]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{}:3:10: export", bad.display())), "{err}");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[defaults]\nbackend = \"h:1\"\nexport = \"/srv/boards/{path}\"\nread_only = true\nuid = 1000\n").expect("write");
    let (code, out, _) = usb9pfsd(&["check-config", good.to_str().expect("utf8")]);
    assert_eq!(code, 0);
    assert!(out.contains("confined: export /srv/boards/{path}, read-only, uid 1000"), "{out}");
}

#[test]
fn run_with_a_missing_config_says_what_to_do() {
    let (code, _, err) = usb9pfsd(&["run", "--config", "/nonexistent/usb9pfsd.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/usb9pfsd.toml") && err.contains("--config"), "{err}");
}

#[test]
fn forward_rejects_a_bad_id() {
    let (code, _, err) = usb9pfsd(&["forward", "--id", "1d6b", "-p", "564"]);
    assert_eq!(code, 1);
    assert!(err.contains("VID:PID"), "{err}");
}

#[test]
fn status_and_reload_without_a_daemon_say_it_is_not_running() {
    let dir = tempfile::tempdir().expect("tmp");
    let socket = dir.path().join("control");
    for cmd in ["status", "reload", "reexec"] {
        let (code, out, err) = usb9pfsd(&[cmd, "--socket", socket.to_str().expect("utf8")]);
        assert_eq!((code, out.as_str()), (1, ""), "{cmd}");
        assert_eq!(err.trim(), format!("usb9pfsd: usb9pfsd is not running (no socket at {})", socket.display()));
    }
}

/// The daemon as systemd runs it, minus systemd: status, reload (good and
/// bad config) and SIGHUP through its control socket. Needs udev's netlink
/// socket; skipped where the daemon cannot start (some containers).
#[test]
fn a_running_daemon_answers_status_and_reload() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    /// Stops the daemon however the test ends.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let dir = tempfile::tempdir().expect("tmp");
    let (config, socket) = (dir.path().join("config.toml"), dir.path().join("control"));
    // No defaults: a real board on the test machine is left alone.
    std::fs::write(&config, "[[board]]\nserial = \"usb9pfsd-cli-test-no-such-board\"\nbackend = \"127.0.0.1:564\"\n")
        .expect("write");
    let daemon = Command::new(env!("CARGO_BIN_EXE_usb9pfsd"))
        .args(["run", "--config", config.to_str().expect("utf8"), "--control-socket", socket.to_str().expect("utf8")])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let mut daemon = Running(daemon);
    // Its log says when the socket is up (no polling, no sleeps).
    let mut log = BufReader::new(daemon.0.stderr.take().expect("stderr"));
    let mut line = String::new();
    let up = loop {
        line.clear();
        if log.read_line(&mut line).unwrap_or(0) == 0 {
            break false;
        }
        if line.contains("control socket at") {
            break true;
        }
    };
    if !up {
        eprintln!("the daemon could not start here (no udev?); skipping");
        return;
    }
    let sock = socket.to_str().expect("utf8");

    let (code, out, err) = usb9pfsd(&["status", "--json", "--socket", sock]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["daemon"]["config_path"], config.to_str().expect("utf8"));
    assert!(report["boards"].is_array());

    let (code, out, err) = usb9pfsd(&["reload", "--socket", sock]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("config reloaded:"), "{out}");

    std::fs::write(&config, "[[board]]\nserial = \"x\"\nbakend = 1\n").expect("write");
    let (code, _, err) = usb9pfsd(&["reload", "--socket", sock]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{}:3:1:", config.display())) && err.contains("old config stays in force"), "{err}");

    // SIGHUP takes the same path: the log says so a second time, the daemon
    // lives on, and status shows the error.
    let pid = daemon.0.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().expect("kill").success());
    let mut failures = 0;
    while failures < 2 {
        line.clear();
        assert!(log.read_line(&mut line).expect("log") > 0, "the daemon died");
        if line.contains("config reload failed") {
            assert!(line.contains(":3:1:"), "{line}");
            failures += 1;
        }
    }
    let (code, out, _) = usb9pfsd(&["status", "--socket", sock]);
    assert_eq!(code, 0);
    assert!(out.contains("last reload FAILED") && out.contains(":3:1:"), "{out}");

    assert!(Command::new("kill").arg(&pid).status().expect("kill").success());
    assert!(daemon.0.wait().expect("wait").success());
    assert!(!socket.exists(), "the daemon removes its socket when it stops");
}
