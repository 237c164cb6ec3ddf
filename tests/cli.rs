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
    for sub in ["run", "list", "forward", "check-config"] {
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
