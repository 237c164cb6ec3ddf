//! The command line: what each subcommand takes, and the in-memory config
//! that `forward` (the p9_fwd.py drop-in) synthesises from its flags.
//! It must never do I/O beyond parsing.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

use crate::ninep::backend::BackendAddr;
use crate::config::{self, BoardRule, Config, Match, Target};
use crate::daemon::control;

#[derive(Debug, Parser)]
#[command(name = "usb9pfsd", version, about = "Forward 9P between usb9pfs gadget boards and 9P servers")]
pub struct Cli {
    /// More log output: -v for debug, -vv for one line per 9P message.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground: serve every configured board.
    Run {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Listen for `status` and `reload` here (default: [daemon]
        /// control_socket, else /run/usb9pfsd/control).
        #[arg(long)]
        control_socket: Option<PathBuf>,
    },
    /// Show the running daemon's boards (state, backend, session, counters, errors).
    Status {
        /// Print JSON (stable field names, see the man page) instead of a table.
        #[arg(long)]
        json: bool,
        /// The daemon's control socket.
        #[arg(long, default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Make the running daemon re-read its config; boards whose mapping did
    /// not change keep their sessions. Fails, changing nothing, if the
    /// config is invalid.
    Reload {
        /// The daemon's control socket.
        #[arg(long, default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Make the running daemon re-execute its binary in place (same PID),
    /// handing every board's live session to the new image: how a package
    /// upgrade takes effect without a board noticing. Fails if any board
    /// could not be handed over.
    Reexec {
        /// The daemon's control socket.
        #[arg(long, default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// List the usb9pfs gadgets plugged in now and where the config sends them.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
        /// Config to map boards with (default: /etc/usb9pfsd/config.toml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Serve one gadget with no config file (drop-in for `p9_fwd.py connect`).
    Forward {
        /// 9P server host name or address.
        #[arg(short, long, default_value = "127.0.0.1", value_parser = clap::builder::NonEmptyStringValueParser::new())]
        server: String,
        /// 9P server TCP port.
        #[arg(short, long, default_value_t = 564, value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
        /// Only a gadget with this VID:PID (default: any usb9pfs gadget).
        #[arg(long)]
        id: Option<String>,
        /// Only the gadget on this USB port path (e.g. 1-1.2).
        #[arg(long)]
        path: Option<String>,
        /// Only the gadget with this serial number.
        #[arg(long)]
        serial: Option<String>,
        /// The board's usb9pfs buflen (512 to 16777216).
        #[arg(long, default_value_t = config::DEFAULT_BUFLEN,
              value_parser = clap::value_parser!(u32).range(config::BUFLEN_RANGE.0 as i64..=config::BUFLEN_RANGE.1 as i64))]
        buflen: u32,
    },
    /// Check a config file and print what it maps.
    CheckConfig { path: PathBuf },
}

/// The config `forward` runs with: one server, and a selection by VID:PID,
/// port path or serial (any gadget when none is given).
pub fn forward_config(
    server: &str,
    port: u16,
    id: Option<&str>,
    path: Option<&str>,
    serial: Option<&str>,
    buflen: u32,
) -> Result<Config, String> {
    if port == 0 {
        return Err("--port 0 cannot be connected to".into());
    }
    let target = Target { backend: BackendAddr::Tcp { host: server.to_string(), port }, buflen, request_timeout: None, recover_window: crate::config::DEFAULT_RECOVER_WINDOW, confine: Default::default() };
    let mut c = Config::empty();
    if let Some(id) = id {
        c.allow_ids = Some(vec![config::parse_usb_id(id)?]);
    }
    let rules = [serial.map(|s| Match::Serial(s.into())), path.map(|p| Match::Path(p.into()))];
    c.boards = rules.into_iter().flatten().map(|matcher| BoardRule { matcher, interface: None, target: target.clone() }).collect();
    if c.boards.is_empty() {
        c.default = Some(target);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::{usb_id, GadgetInfo};
    use crate::config::Decision;

    fn g(serial: &str, port: &str, vid: u16) -> GadgetInfo {
        GadgetInfo { port_path: port.into(), vid, id: usb_id(vid, 0x0109), ..GadgetInfo::example(Some(serial), 1, 1) }
    }

    #[test]
    fn forward_selects_like_p9_fwd() {
        let any = forward_config("127.0.0.1", 564, None, None, None, 16384).expect("cfg");
        assert!(matches!(any.resolve(&g("x", "1-1", 0x1d6b)), Decision::Serve { .. }));
        let by_id = forward_config("h", 1, Some("1d6b:0109"), None, None, 16384).expect("cfg");
        assert_eq!(by_id.resolve(&g("x", "1-1", 0x0525)), Decision::NotAllowed);
        let by_serial = forward_config("h", 1, None, None, Some("A"), 16384).expect("cfg");
        assert!(matches!(by_serial.resolve(&g("A", "1-1", 1)), Decision::Serve { .. }));
        assert_eq!(by_serial.resolve(&g("B", "1-1", 1)), Decision::NoBackend);
        let by_path = forward_config("h", 1, None, Some("2-1"), None, 16384).expect("cfg");
        assert_eq!(by_path.resolve(&g("B", "1-1", 1)), Decision::NoBackend);
        assert!(forward_config("h", 1, Some("nope"), None, None, 16384).is_err());
    }

    #[test]
    fn forward_refuses_numbers_out_of_range() {
        for bad in [&["--buflen", "0"][..], &["--buflen", "511"], &["--buflen", "16777217"], &["--port", "0"], &["--server", ""]] {
            let args = ["usb9pfsd", "forward"].into_iter().chain(bad.iter().copied());
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
        let ok = Cli::try_parse_from(["usb9pfsd", "forward", "--buflen", "512", "--port", "1"]).expect("in range");
        assert!(matches!(ok.command, Command::Forward { buflen: 512, port: 1, .. }));
    }

    #[test]
    fn cli_parses_p9_fwd_style_flags() {
        let cli = Cli::try_parse_from(["usb9pfsd", "-vv", "forward", "-s", "10.0.0.1", "-p", "5640", "--id", "1d6b:0109"])
            .expect("parse");
        assert_eq!(cli.verbose, 2);
        assert!(matches!(cli.command, Command::Forward { port: 5640, .. }));
    }

    #[test]
    fn status_and_reload_default_to_the_packaged_socket() {
        let cli = Cli::try_parse_from(["usb9pfsd", "status", "--json"]).expect("parse");
        assert!(matches!(cli.command, Command::Status { json: true, socket } if socket.as_os_str() == "/run/usb9pfsd/control"));
        let cli = Cli::try_parse_from(["usb9pfsd", "reload", "--socket", "/tmp/c"]).expect("parse");
        assert!(matches!(cli.command, Command::Reload { socket } if socket.as_os_str() == "/tmp/c"));
    }
}
