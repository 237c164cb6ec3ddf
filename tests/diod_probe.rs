//! `usb9pfsd probe` against a real diod: what a board's mount would meet
//! (connect, Tversion, Tattach with the aname and user its confinement
//! sends), reported with what an error means, and as exit status and JSON
//! for scripts.

mod common;

use std::process::Command;

use common::{free_port, start_diod};

fn usb9pfsd(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_usb9pfsd")).args(args).env_remove("RUST_LOG").output().expect("run usb9pfsd");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn json(out: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

#[test]
fn a_good_aname_attaches_and_a_wrong_one_says_what_to_change() {
    let export = tempfile::tempdir().expect("tmp");
    let diod = start_diod(export.path());
    let backend = format!("127.0.0.1:{}", diod.port);
    let ex = export.path().to_str().expect("utf8");

    let (code, out, err) = usb9pfsd(&["probe", "--backend", &backend, "--aname", ex]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK: attached to aname") && out.contains(ex), "{out}");

    // What a board with a wrong aname meets: diod's EPERM, explained.
    let (code, out, err) = usb9pfsd(&["probe", "--backend", &backend, "--aname", "/srv/not-exported", "--json"]);
    assert_eq!(code, 1, "{out}{err}");
    let r = &json(&out)[0];
    assert_eq!(r["ok"], false);
    assert_eq!(r["step"], "attach");
    assert_eq!(r["errno"], 1, "{r}");
    assert_eq!(r["server_aname"], "/srv/not-exported");
    assert!(r["error"].as_str().unwrap_or_default().contains("EPERM"), "{r}");
    assert!(r["hint"].as_str().unwrap_or_default().contains("not one of its exports"), "{r}");
    assert!(err.contains("1 of 1 probe(s) failed"), "{err}");

    // No aname at all (a board mounting without aname=): diod refuses it too.
    let (code, out, _) = usb9pfsd(&["probe", "--backend", &backend]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED at attach") && out.contains("an empty aname"), "{out}");
}

#[test]
fn nothing_listening_says_to_start_the_server() {
    let port = free_port();
    let (code, out, _) = usb9pfsd(&["probe", "--backend", &format!("127.0.0.1:{port}"), "--aname", "/x"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED at connect") && out.contains("nothing listens at") && out.contains("diod"), "{out}");
}

/// Each entry of a config, as its board's mount would go: the export for
/// the aname (confinement), the squashed uid, a template expanded from the
/// entry, a directory below the export walked to.
#[test]
fn every_config_entry_is_probed_as_its_confinement_rewrites_the_attach() {
    let export = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(export.path().join("a")).expect("mkdir");
    let diod = start_diod(export.path());
    let ex = export.path().to_str().expect("utf8");
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("config.toml");
    let backend = format!("127.0.0.1:{}", diod.port);
    std::fs::write(
        &config,
        format!(
            "[[board]]\nserial = \"GOOD\"\nbackend = \"{backend}\"\nexport = \"{ex}\"\nuid = 1000\n\n\
             [[board]]\nserial = \"WRONG\"\nbackend = \"{backend}\"\nexport = \"/srv/not-exported\"\n\n\
             [[board]]\npath = \"1-1\"\nbackend = \"{backend}\"\nexport = \"{ex}\"\n"
        ),
    )
    .expect("write");
    let cfg = config.to_str().expect("utf8");
    let (code, out, err) = usb9pfsd(&["probe", "--config", cfg, "--json"]);
    assert_eq!(code, 1, "one entry fails: {out}{err}");
    let r = json(&out);
    assert_eq!(r.len(), 3, "{out}");
    assert_eq!((r[0]["entry"].as_str(), r[0]["ok"].as_bool()), (Some("[[board]] serial \"GOOD\""), Some(true)), "{out}");
    assert_eq!(r[0]["server_aname"], ex, "an empty board aname becomes the export");
    assert_eq!((r[0]["uname"].as_str(), r[0]["n_uname"].as_u64()), (Some(""), Some(1000)), "squashed");
    assert_eq!(r[1]["ok"], false);
    assert_eq!(r[1]["errno"], 1);
    assert!(r[1]["hint"].as_str().unwrap_or_default().contains("the entry's `export`"), "{out}");
    assert_eq!(r[2]["ok"], true, "{out}");
    // No squash: the user the board's kernel mounts as, uname nobody and
    // no uid (n_uname ~0).
    assert_eq!((r[2]["uname"].as_str(), r[2]["n_uname"].as_u64()), (Some("nobody"), Some(u64::from(u32::MAX))), "{out}");

    // The board's own aname, below the export: walked to; above it: refused
    // by usb9pfsd itself, as the board would be.
    let below = format!("{ex}/a");
    let (code, out, _) = usb9pfsd(&["probe", "--config", cfg, "--aname", &below, "--json"]);
    let r = json(&out);
    assert_eq!(code, 1);
    assert_eq!((r[0]["ok"].as_bool(), r[0]["server_aname"].as_str()), (Some(true), Some(ex)), "{out}");
    let (_, out, _) = usb9pfsd(&["probe", "--config", cfg, "--aname", "/etc", "--json"]);
    let r = json(&out);
    assert_eq!((r[0]["ok"].as_bool(), r[0]["step"].as_str(), r[0]["errno"].as_u64()), (Some(false), Some("confine"), Some(13)), "{out}");
    let missing = format!("{ex}/missing");
    let (_, out, _) = usb9pfsd(&["probe", "--config", cfg, "--aname", &missing, "--json"]);
    let r = json(&out);
    assert_eq!((r[0]["ok"].as_bool(), r[0]["step"].as_str()), (Some(false), Some("confine")), "{out}");

    // check-config --probe: the same, after the check.
    let (code, out, _) = usb9pfsd(&["check-config", cfg, "--probe"]);
    assert_eq!(code, 1);
    assert!(out.contains(": OK") && out.contains("[[board]] serial \"GOOD\"") && out.contains("FAILED at attach"), "{out}");
}

/// What `status` shows of a real board's mount against a real diod: not
/// mounted after Tversion alone, refused with the server's errno and the
/// aname after a wrong one, mounted once the server answered Rattach.
#[test]
fn status_says_mounted_only_after_rattach_and_shows_a_refused_attach() {
    use common::{errno_of, rpc, serve, Msg, NOFID};
    use usb9pfsd::ninep::board_backend::BoardBackend;
    use usb9pfsd::ninep::forward::Limits;

    let export = tempfile::tempdir().expect("tmp");
    let diod = start_diod(export.path());
    let backend = BoardBackend::new(format!("127.0.0.1:{}", diod.port).parse().expect("addr"));
    let limits = Limits { max_frame: 1 << 20, board_buflen: 16384, request_timeout: None, recover_window: std::time::Duration::ZERO };
    let s = serve(backend, limits);
    let attach = |tag: u16, aname: &str| Msg::new(104, tag).u32(0).u32(NOFID).s("nobody").s(aname).u32(0).done();

    let r = rpc(&s.board, Msg::new(100, 0xffff).u32(16384).s("9P2000.L").done());
    assert_eq!(r[4], 101, "Rversion");
    assert_eq!(s.counters.mount_status(), None, "a Tversion is not a mount");

    let r = rpc(&s.board, attach(1, "/srv/not-exported"));
    assert_eq!(errno_of(&r), 1, "diod refuses it with EPERM");
    let m = s.counters.mount_status().expect("noted");
    assert_eq!((m.state.as_str(), m.aname.as_str(), m.errno), ("refused", "/srv/not-exported", Some(1)));

    let ex = export.path().to_str().expect("utf8");
    let r = rpc(&s.board, attach(2, ex));
    assert_eq!(r[4], 105, "Rattach");
    let m = s.counters.mount_status().expect("noted");
    assert_eq!((m.state.as_str(), m.aname.as_str(), m.errno), ("mounted", ex, None));
}
