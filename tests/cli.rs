//! The binary as a person runs it: subcommands, exit codes and messages.
//! These run on machines with no USB at all (CI containers) and on machines
//! with USB: `list` must print what sysfs shows, and an empty list where it
//! shows no usb9pfs interface. A test here must never skip itself because of
//! what the machine has; only a daemon that says udev is unavailable is
//! excused (and says so on stderr).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn usb9pfsd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_usb9pfsd")).args(args).env_remove("RUST_LOG").output().expect("run usb9pfsd");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn help_names_every_subcommand() {
    let (code, out, _) = usb9pfsd(&["--help"]);
    assert_eq!(code, 0);
    for sub in ["run", "list", "forward", "check-config", "status", "reload", "reexec"] {
        assert!(out.contains(sub), "{sub} missing from:\n{out}");
    }
}

/// Interfaces as (port path, interface number).
type Interfaces = BTreeSet<(String, u8)>;

/// What sysfs itself says, read without the daemon's code: the usb9pfs
/// interfaces (ff/ff/09) as (port path, interface number), and those of them
/// whose current alternate setting has the two bulk endpoints (which `list`
/// must show; an ff/ff/09 interface without them it may leave out).
fn usb9pfs_in_sysfs(devices: &Path) -> (Interfaces, Interfaces) {
    let (mut any, mut with_endpoints) = (BTreeSet::new(), BTreeSet::new());
    let Ok(entries) = std::fs::read_dir(devices) else {
        return (any, with_endpoints);
    };
    let attr = |dir: &Path, name: &str| std::fs::read_to_string(dir.join(name)).map(|s| s.trim().to_string()).unwrap_or_default();
    for e in entries.flatten() {
        // Interfaces are "PORT:CONFIG.IFACE"; devices have no colon.
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((port, _)) = name.split_once(':') else { continue };
        let dir = e.path();
        let class = (attr(&dir, "bInterfaceClass"), attr(&dir, "bInterfaceSubClass"), attr(&dir, "bInterfaceProtocol"));
        if class != ("ff".into(), "ff".into(), "09".into()) {
            continue;
        }
        let interface = u8::from_str_radix(&attr(&dir, "bInterfaceNumber"), 16).expect("sysfs bInterfaceNumber is hex");
        any.insert((port.to_string(), interface));
        if attr(&dir, "bNumEndpoints") == "02" {
            with_endpoints.insert((port.to_string(), interface));
        }
    }
    (any, with_endpoints)
}

/// `list` against sysfs on whatever machine runs it: no USB sysfs, USB
/// without boards (the empty list, in both output forms), or real boards
/// (each one listed with its bus-address).
#[test]
fn list_shows_what_sysfs_shows() {
    let devices = Path::new("/sys/bus/usb/devices");
    let (any, must) = usb9pfs_in_sysfs(devices);
    let (code, out, err) = usb9pfsd(&["list", "--json", "--config", "config.example.toml"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("list --json is not a JSON list ({e}):\n{out}"));
    let listed: BTreeSet<(String, u8)> = rows
        .iter()
        .map(|r| {
            let port = r["port_path"].as_str().unwrap_or_else(|| panic!("no port_path in {r}")).to_string();
            let interface = r["interface"].as_u64().and_then(|i| u8::try_from(i).ok()).unwrap_or_else(|| panic!("no interface in {r}"));
            (port, interface)
        })
        .collect();
    assert_eq!(listed.len(), rows.len(), "an interface listed twice:\n{out}");
    assert!(listed.is_subset(&any), "listed {listed:?}, but sysfs has only these usb9pfs interfaces: {any:?}");
    assert!(must.is_subset(&listed), "sysfs has usb9pfs interfaces {must:?}, list shows {listed:?}");
    for r in &rows {
        let dev = devices.join(r["port_path"].as_str().unwrap_or_default());
        let num = |name: &str| std::fs::read_to_string(dev.join(name)).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
        assert_eq!(r["busaddr"].as_str(), Some(format!("{:03}-{:03}", num("busnum"), num("devnum")).as_str()), "{r}");
    }
    let (code, text, err) = usb9pfsd(&["list"]);
    assert_eq!(code, 0, "{err}");
    if rows.is_empty() {
        assert_eq!(out.trim(), "[]");
        assert_eq!(text.trim(), "no usb9pfs gadgets present");
    } else {
        // A header, then one row per interface.
        assert_eq!(text.lines().count(), rows.len() + 1, "{text}");
        assert!(text.starts_with("SERIAL "), "{text}");
    }
}

#[test]
fn check_config_reports_file_line_and_column() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[defaults]\nbackend = \"127.0.0.1:564\"\n\n[[board]]\nserial = \"A\"\nbackend = \"nope\"\n").expect("write");
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

/// One rule for exit statuses (man page, EXIT STATUS): 2 for every bad
/// command line, whichever part of it is wrong.
#[test]
fn a_bad_command_line_exits_2() {
    for args in [
        &["forward", "--id", "1d6b", "-p", "564"][..],
        &["--id", "zz", "forward"],
        &["forward", "--port", "0"],
        &["forward", "--unix", "/run/diod.sock", "-p", "564"],
        &["forward", "--request-timeout", "0"],
        &["--serial", "A", "status"],
        &["--id", "1d6b:0109", "forward", "--id", "0525:a4a0"],
        &["no-such-subcommand"],
        &["status", "--no-such-option"],
        &["probe", "--backend", "host:99999"],
    ] {
        let (code, out, err) = usb9pfsd(args);
        assert_eq!((code, out.as_str()), (2, ""), "{args:?}: {err}");
        assert!(!err.is_empty(), "{args:?} says why");
    }
    let (_, _, err) = usb9pfsd(&["forward", "--id", "1d6b"]);
    assert!(err.contains("VID:PID"), "{err}");
}

/// p9_fwd.py's options in p9_fwd.py's places: `--id`/`--path` before the
/// subcommand, `connect` as the subcommand's name.
#[test]
fn forward_takes_p9_fwd_py_options_where_p9_fwd_py_takes_them() {
    let (code, out, _) = usb9pfsd(&["--help"]);
    assert_eq!(code, 0);
    for opt in ["--id <VID:PID>", "--path <PORT_PATH>"] {
        assert!(out.contains(opt), "{opt} before the subcommand:\n{out}");
    }
    let (code, out, _) = usb9pfsd(&["--id", "1d6b:0109", "--path", "1-1", "connect", "--help"]);
    assert_eq!(code, 0);
    for opt in ["--server", "--port", "--unix", "--request-timeout", "1d6b:0109"] {
        assert!(out.contains(opt), "{opt} missing:\n{out}");
    }
}

#[test]
fn status_and_reload_without_a_daemon_say_it_is_not_running() {
    let dir = tempfile::tempdir().expect("tmp");
    let socket = dir.path().join("control");
    for cmd in ["status", "reload", "reexec"] {
        let (code, out, err) = usb9pfsd(&[cmd, "--socket", socket.to_str().expect("utf8")]);
        // As systemctl: 3 for a unit that is not running.
        assert_eq!((code, out.as_str()), (3, ""), "{cmd}");
        assert!(err.starts_with(&format!("usb9pfsd: usb9pfsd is not running (nothing listens on {})", socket.display())), "{err}");
        assert!(err.contains("udev starts it when a usb9pfs board appears"), "{err}");
    }
    // A socket nobody accepts on (a daemon that died): not running either.
    let stale = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    drop(stale);
    let (code, _, err) = usb9pfsd(&["status", "--socket", socket.to_str().expect("utf8")]);
    assert_eq!(code, 3, "{err}");
    // Not a socket at all: a wrong --socket, not a stopped daemon.
    let (code, _, err) = usb9pfsd(&["status", "--socket", "/etc/passwd"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/etc/passwd is not a socket"), "{err}");
}

#[test]
fn check_config_flags_the_shipped_placeholder_and_what_the_service_cannot_reach() {
    let (code, out, err) = usb9pfsd(&["check-config", "config.example.toml"]);
    assert_eq!(code, 0, "a warning is not an error: {err}");
    assert!(out.contains("1 warning(s)"), "{out}");
    assert!(err.contains("warning: config.example.toml:") && err.contains("shipped placeholder"), "{err}");
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("c.toml");
    std::fs::write(&f, "[defaults]\nbackend = \"unix:/tmp/diod.sock\"\n").expect("write");
    let (code, _, err) = usb9pfsd(&["check-config", f.to_str().expect("utf8")]);
    assert_eq!(code, 0);
    assert!(err.contains(&format!("warning: {}:2:11: unix socket /tmp/diod.sock", f.display())), "{err}");
    let (code, _, err) = usb9pfsd(&["check-config", "/nonexistent/c.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/c.toml: cannot read") && !err.contains("--config"), "{err}");
}

/// What the daemon logs when it cannot listen to udev (usb/hotplug.rs): the
/// only reason `a_running_daemon_answers_status_and_reload` may skip.
const NO_UDEV: &str = "cannot listen to udev for USB hotplug";

/// The daemon as systemd runs it, minus systemd: status, reload (good and
/// bad config) and SIGHUP through its control socket. Needs udev's netlink
/// socket: skipped only where the daemon itself says it cannot listen to
/// udev (some containers); any other failure to start fails the test.
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
    std::fs::write(&config, "[[board]]\nserial = \"usb9pfsd-cli-test-no-such-board\"\nbackend = \"127.0.0.1:564\"\n").expect("write");
    let daemon = Command::new(env!("CARGO_BIN_EXE_usb9pfsd"))
        .args(["run", "--config", config.to_str().expect("utf8"), "--control-socket", socket.to_str().expect("utf8")])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let mut daemon = Running(daemon);
    // A daemon that neither comes up nor ends would hang the test: a
    // watchdog ends it after a minute (a bound, not a synchronisation: the
    // test itself waits on the log).
    let (started, watchdog) = std::sync::mpsc::channel::<()>();
    let pid = daemon.0.id().to_string();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = watchdog.recv_timeout(std::time::Duration::from_secs(60)) {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    });
    // Its log says when it is up (no polling, no sleeps): the control socket
    // is bound, and the coldplug scan is done, which comes only after the
    // udev monitor listens.
    let mut log = BufReader::new(daemon.0.stderr.take().expect("stderr"));
    let mut line = String::new();
    let mut seen = String::new();
    let (mut socket_up, mut coldplugged) = (false, false);
    while !(socket_up && coldplugged) {
        line.clear();
        if log.read_line(&mut line).unwrap_or(0) == 0 {
            let status = daemon.0.wait().expect("wait");
            if seen.contains(NO_UDEV) {
                eprintln!("the daemon cannot listen to udev here; skipping:\n{seen}");
                return;
            }
            panic!("the daemon did not start ({status}); its log:\n{seen}");
        }
        seen.push_str(&line);
        assert!(!line.contains("cannot reach this daemon"), "the control socket was not bound:\n{seen}");
        socket_up |= line.contains("control socket at");
        coldplugged |= line.contains("board(s) served");
    }
    drop(started);
    let sock = socket.to_str().expect("utf8");

    let (code, out, err) = usb9pfsd(&["status", "--json", "--socket", sock]);
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["daemon"]["config_path"], config.to_str().expect("utf8"));
    assert!(report["boards"].is_array());

    let (code, out, err) = usb9pfsd(&["reload", "--socket", sock]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("config reloaded:"), "{out}");

    // What parses but cannot work is applied, and the log says why it
    // cannot, with its place (as at start).
    std::fs::write(&config, "[[board]]\nserial = \"CHANGE-ME-0001\"\nbackend = \"127.0.0.1:564\"\n").expect("write");
    let (code, _, err) = usb9pfsd(&["reload", "--socket", sock]);
    assert_eq!(code, 0, "{err}");
    // The warning comes before the supervisor's "config reloaded" line of
    // this (the second) reload.
    let (mut warned, mut reloads) = (String::new(), 0);
    while reloads < 2 {
        line.clear();
        assert!(log.read_line(&mut line).expect("log") > 0, "the daemon died");
        if line.contains("shipped placeholder") {
            warned = line.clone();
        }
        reloads += usize::from(line.contains("config reloaded:"));
    }
    assert!(warned.contains(&format!("{}:2:10:", config.display())), "no warning with its place before the reload's line: {warned:?}");

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
