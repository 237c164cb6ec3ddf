//! The command line: what each subcommand takes, and the in-memory config
//! that `forward` (the p9_fwd.py drop-in) synthesises from its flags.
//! It must never do I/O beyond parsing.

use std::path::PathBuf;

use clap::{ArgAction, Parser, Subcommand};

use crate::config::{self, BoardRule, Config, Match, Target};
use crate::daemon::control;
use crate::ninep::backend::BackendAddr;

/// Exit statuses, one rule for every subcommand (man page, EXIT STATUS):
/// 0 done (for `check-config` and `probe`: everything checked is fine);
/// 1 what was asked failed (an invalid config, a probe that failed, the
/// daemon refused); 2 the command line is wrong (clap's own status for a
/// bad option); 3 the daemon is not running (as `systemctl status` says 3
/// for an inactive unit).
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_NOT_RUNNING: u8 = 3;

/// Why a subcommand failed, and the exit status that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure { code: EXIT_USAGE, message: message.into() }
    }

    pub fn not_running(message: impl Into<String>) -> Failure {
        Failure { code: EXIT_NOT_RUNNING, message: message.into() }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure { code: EXIT_FAILED, message }
    }
}

/// p9_fwd.py's default `--id`: the Linux Foundation's usb9pfs gadget.
pub const DEFAULT_ID: &str = "1d6b:0109";

/// Which VID:PID `forward` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdFilter {
    /// `--id any`: every usb9pfs gadget, whatever its VID:PID.
    Any,
    Only(u16, u16),
}

impl std::str::FromStr for IdFilter {
    type Err = String;

    fn from_str(s: &str) -> Result<IdFilter, String> {
        if s == "any" {
            return Ok(IdFilter::Any);
        }
        config::parse_usb_id(s).map(|(v, p)| IdFilter::Only(v, p)).map_err(|e| format!("{e}, or `any`"))
    }
}

#[derive(Debug, Parser)]
#[command(name = "usb9pfsd", version, about = "Forward 9P between usb9pfs gadget boards and 9P servers")]
pub struct Cli {
    /// More log output: -v for debug, -vv for one line per 9P message.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
    /// `forward` only, where p9_fwd.py takes it: the gadget's VID:PID
    /// (default 1d6b:0109; `any` for every usb9pfs gadget).
    #[arg(long, value_name = "VID:PID")]
    pub id: Option<IdFilter>,
    /// `forward` only, where p9_fwd.py takes it: the gadget on this USB port
    /// path (e.g. 1-1.2, as `usb9pfsd list` shows it).
    #[arg(long, value_name = "PORT_PATH")]
    pub path: Option<String>,
    /// `forward` only: the gadget with this USB serial number.
    #[arg(long)]
    pub serial: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// A gadget selection for `forward`: every given criterion must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub id: IdFilter,
    pub path: Option<String>,
    pub serial: Option<String>,
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
    /// Show the running daemon's boards (state, mount, backend, session, counters, errors).
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
    /// Serve a directory or a 9P server to one board, over the config file,
    /// until `unserve` or the daemon stops (a reload or hand-over keeps it).
    /// Takes effect at the board's next mount; a live session is never cut.
    /// Only root, the daemon's user and group usb9pfsd-admin may.
    Serve {
        /// The board: its serial, its port path (1-1.2), one interface of
        /// the gadget on that port (1-1.2#1), or BUS-ADDRESS#INTERFACE
        /// (001-004#0, as `status` shows it); `serial:X` or `path:X` where
        /// a serial looks like a port path.
        board: String,
        /// The 9P server (host:port, [ipv6]:port, unix:/path). Without it,
        /// usb9pfsd starts its own diod for --export DIR at each mount.
        #[arg(long, value_name = "ADDR", required_unless_present = "export")]
        backend: Option<String>,
        /// The directory the board is confined to: on --backend's server,
        /// or served by a diod usb9pfsd starts (running as the directory's
        /// owner, every board user squashed to it).
        #[arg(long, value_name = "DIR")]
        export: Option<String>,
        /// The board may only read.
        #[arg(long)]
        read_only: bool,
        /// Attach as this uid whatever user the board mounts as (squash).
        #[arg(long, value_name = "N")]
        uid: Option<u32>,
        /// Attach with this gid (squash).
        #[arg(long, value_name = "N")]
        gid: Option<u32>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        /// The daemon's control socket.
        #[arg(long, default_value = control::DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Drop a board's `serve`: its config entry (if any) decides again, from
    /// its next mount.
    Unserve {
        /// The board, as `serve` named it.
        board: String,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
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
    /// Serve one gadget with no config file: a drop-in for
    /// `p9_fwd.py [--id VID:PID] [--path P] connect [-s HOST] [-p PORT]`.
    #[command(visible_alias = "connect")]
    Forward {
        /// 9P server host name or address.
        #[arg(short, long, default_value = "127.0.0.1", value_parser = clap::builder::NonEmptyStringValueParser::new())]
        server: String,
        /// 9P server TCP port.
        #[arg(short, long, default_value_t = 564, value_parser = clap::value_parser!(u16).range(1..))]
        port: u16,
        /// A 9P server on this unix socket instead of TCP (e.g. /run/diod.sock).
        #[arg(long, value_name = "PATH", conflicts_with_all = ["server", "port"])]
        unix: Option<PathBuf>,
        /// Only a gadget with this VID:PID (default 1d6b:0109, as p9_fwd.py;
        /// `any` for every usb9pfs gadget). Also accepted before `forward`.
        #[arg(long, value_name = "VID:PID")]
        id: Option<IdFilter>,
        /// Only the gadget on this USB port path (e.g. 1-1.2). Also accepted
        /// before `forward`.
        #[arg(long, value_name = "PORT_PATH")]
        path: Option<String>,
        /// Only the gadget with this serial number (with --path: that
        /// serial on that port).
        #[arg(long)]
        serial: Option<String>,
        /// The board's usb9pfs buflen (512 to 16777216).
        #[arg(long, default_value_t = config::DEFAULT_BUFLEN,
              value_parser = clap::value_parser!(u32).range(config::BUFLEN_RANGE.0 as i64..=config::BUFLEN_RANGE.1 as i64))]
        buflen: u32,
        /// Fail a request (ETIMEDOUT) whose reply has not come after this
        /// many seconds, and end the session (default: wait).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u32).range(1..=86400))]
        request_timeout: Option<u32>,
    },
    /// Check a config file and print what it maps; warnings for what cannot
    /// work. With --probe, then probe every mapped backend.
    CheckConfig {
        /// The file (default: /etc/usb9pfsd/config.toml).
        #[arg(default_value = config::DEFAULT_PATH)]
        path: PathBuf,
        /// Then do what each board's mount will do with its server (see `probe`).
        #[arg(long)]
        probe: bool,
        #[command(flatten)]
        attach: AttachArgs,
    },
    /// Do what a board's mount will do, without the board: connect to its
    /// 9P server, Tversion, Tattach with its aname (its export) and user as
    /// confinement rewrites them; say what an error means and what to
    /// change. For every entry of the config, or for one --backend.
    Probe {
        /// The config whose entries (and plugged boards) to probe.
        #[arg(long, default_value = config::DEFAULT_PATH, conflicts_with = "backend")]
        config: PathBuf,
        /// Probe this server instead (host:port, [ipv6]:port or unix:/path).
        #[arg(long, value_name = "ADDR")]
        backend: Option<String>,
        /// With --backend: the export (as a confined board's `export`).
        #[arg(long, requires = "backend")]
        export: Option<String>,
        /// With --backend: attach as this uid (as a board's `uid` squash).
        #[arg(long = "squash-uid", value_name = "UID", requires = "backend")]
        squash_uid: Option<u32>,
        /// Print JSON (one object per probe) instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        attach: AttachArgs,
    },
}

/// What the board itself puts in its Tattach (its mount options): the
/// host cannot know them, so a probe assumes the kernel's defaults unless
/// told.
#[derive(Debug, Clone, clap::Args)]
pub struct AttachArgs {
    /// The board's `mount -o aname=...` (default: the entry's export, else
    /// none, which diod refuses).
    #[arg(long)]
    pub aname: Option<String>,
    /// The user name in the board's attach (mount -o uname=...; the kernel's default is nobody).
    #[arg(long, default_value = "nobody")]
    pub uname: String,
    /// The uid in the board's attach (default: none, as the board's kernel
    /// sends for its mount; a later attach of one of its users carries theirs).
    #[arg(long)]
    pub uid: Option<u32>,
}

impl Cli {
    /// `forward`'s gadget selection from p9_fwd.py's places (before the
    /// subcommand) and its own; Err (a usage error) for a selection given
    /// before another subcommand, or given twice differently.
    pub fn selection(&self) -> Result<Option<Selection>, String> {
        let Command::Forward { id, path, serial, .. } = &self.command else {
            return match (&self.id, &self.path, &self.serial) {
                (None, None, None) => Ok(None),
                _ => Err("--id, --path and --serial before the subcommand select the gadget for `forward` only".into()),
            };
        };
        fn one<T: Clone + PartialEq + std::fmt::Debug>(name: &str, before: &Option<T>, after: &Option<T>) -> Result<Option<T>, String> {
            match (before, after) {
                (Some(a), Some(b)) if a != b => Err(format!("--{name} is given twice, differently ({a:?} and {b:?})")),
                (a, b) => Ok(a.clone().or_else(|| b.clone())),
            }
        }
        let default_id = IdFilter::Only(0x1d6b, 0x0109);
        Ok(Some(Selection {
            id: one("id", &self.id, id)?.unwrap_or(default_id),
            path: one("path", &self.path, path)?,
            serial: one("serial", &self.serial, serial)?,
        }))
    }
}

/// The config `forward` runs with: one server, the gadgets `sel` selects
/// (by VID:PID, and port path and serial when given: all that are given
/// must match), `buflen` and `request_timeout` as the flags say.
pub fn forward_config(backend: BackendAddr, sel: &Selection, buflen: u32, request_timeout: Option<u32>) -> Config {
    let target = Target {
        backend,
        buflen,
        request_timeout: request_timeout.map(|s| std::time::Duration::from_secs(s.into())),
        recover_window: config::DEFAULT_RECOVER_WINDOW,
        confine: Default::default(),
    };
    let mut c = Config::empty();
    if let IdFilter::Only(v, p) = sel.id {
        c.allow_ids = Some(vec![(v, p)]);
    }
    let matcher = match (&sel.serial, &sel.path) {
        (Some(serial), Some(path)) => Some(Match::SerialAt { serial: serial.clone(), path: path.clone() }),
        (Some(s), None) => Some(Match::Serial(s.clone())),
        (None, Some(p)) => Some(Match::Path(p.clone())),
        (None, None) => None,
    };
    match matcher {
        Some(matcher) => c.boards.push(BoardRule { matcher, interface: None, target }),
        None => c.default = Some(target),
    }
    c
}

/// `forward`'s server: `--unix PATH`, else `--server` and `--port`.
pub fn forward_backend(server: &str, port: u16, unix: Option<&std::path::Path>) -> Result<BackendAddr, String> {
    match unix {
        Some(p) => format!("unix:{}", p.display()).parse(),
        None => config::parse_backend(&BackendAddr::Tcp { host: server.into(), port }.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::{usb_id, BoardInfo};
    use crate::config::Decision;

    fn g(serial: &str, port: &str, vid: u16) -> BoardInfo {
        BoardInfo { port_path: port.into(), vid, id: usb_id(vid, 0x0109), ..BoardInfo::example(Some(serial), 1, 1) }
    }

    fn sel(args: &[&str]) -> Result<Selection, String> {
        let cli = Cli::try_parse_from(["usb9pfsd"].iter().chain(args)).map_err(|e| e.to_string())?;
        cli.selection().map(|s| s.expect("forward"))
    }

    fn cfg(args: &[&str]) -> Config {
        forward_config(BackendAddr::Tcp { host: "h".into(), port: 1 }, &sel(args).expect("selection"), 16384, None)
    }

    #[test]
    fn forward_selects_like_p9_fwd() {
        // p9_fwd.py's default id: a gadget with another VID:PID is not served.
        let plain = cfg(&["forward"]);
        assert!(matches!(plain.resolve(&g("x", "1-1", 0x1d6b)), Decision::Serve { .. }));
        assert_eq!(plain.resolve(&g("x", "1-1", 0x0525)), Decision::NotAllowed);
        let any = cfg(&["forward", "--id", "any"]);
        assert!(matches!(any.resolve(&g("x", "1-1", 0x0525)), Decision::Serve { .. }));
        let by_serial = cfg(&["forward", "--serial", "A"]);
        assert!(matches!(by_serial.resolve(&g("A", "1-1", 0x1d6b)), Decision::Serve { .. }));
        assert_eq!(by_serial.resolve(&g("B", "1-1", 0x1d6b)), Decision::NoBackend);
        // p9_fwd.py's places: before the subcommand, and `connect`.
        let by_path = cfg(&["--path", "2-1", "connect", "-p", "564"]);
        assert_eq!(by_path.resolve(&g("B", "1-1", 0x1d6b)), Decision::NoBackend);
        assert!(matches!(by_path.resolve(&g("B", "2-1", 0x1d6b)), Decision::Serve { .. }));
        // Both: that serial on that port, nothing else.
        let both = cfg(&["--path", "2-1", "forward", "--serial", "A"]);
        assert!(matches!(both.resolve(&g("A", "2-1", 0x1d6b)), Decision::Serve { .. }));
        assert_eq!(both.resolve(&g("A", "1-1", 0x1d6b)), Decision::NoBackend);
        assert_eq!(both.resolve(&g("B", "2-1", 0x1d6b)), Decision::NoBackend);
        assert_eq!(sel(&["--id", "1234:5678", "forward"]).expect("sel").id, IdFilter::Only(0x1234, 0x5678));
        assert!(sel(&["--id", "1234:5678", "forward", "--id", "1111:2222"]).is_err(), "twice, differently");
        assert!(sel(&["forward", "--id", "nope"]).is_err());
        let cli = Cli::try_parse_from(["usb9pfsd", "--serial", "A", "status"]).expect("parse");
        assert!(cli.selection().is_err(), "a selection before another subcommand");
    }

    #[test]
    fn forward_takes_a_unix_server_and_a_request_timeout() {
        let cli = Cli::try_parse_from(["usb9pfsd", "forward", "--unix", "/run/diod.sock", "--request-timeout", "30"]).expect("parse");
        let Command::Forward { server, port, unix, request_timeout, .. } = cli.command else { panic!("forward") };
        let b = forward_backend(&server, port, unix.as_deref()).expect("backend");
        assert_eq!(b.to_string(), "unix:/run/diod.sock");
        let c = forward_config(b, &Selection { id: IdFilter::Any, path: None, serial: None }, 16384, request_timeout);
        assert_eq!(c.default.expect("default").request_timeout, Some(std::time::Duration::from_secs(30)));
        for bad in [&["--unix", "/x", "-p", "5"][..], &["--unix", "/x", "-s", "h"], &["--request-timeout", "0"]] {
            let args = ["usb9pfsd", "forward"].into_iter().chain(bad.iter().copied());
            assert!(Cli::try_parse_from(args).is_err(), "{bad:?}");
        }
        assert!(forward_backend("127.0.0.1", 564, Some(std::path::Path::new("relative"))).is_err());
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
        let cli = Cli::try_parse_from(["usb9pfsd", "-vv", "forward", "-s", "10.0.0.1", "-p", "5640", "--id", "1d6b:0109"]).expect("parse");
        assert_eq!(cli.verbose, 2);
        assert!(matches!(cli.command, Command::Forward { port: 5640, .. }));
        assert_eq!(cli.selection().expect("sel").expect("forward").id, IdFilter::Only(0x1d6b, 0x0109));
    }

    #[test]
    fn status_and_reload_default_to_the_packaged_socket() {
        let cli = Cli::try_parse_from(["usb9pfsd", "status", "--json"]).expect("parse");
        assert!(matches!(cli.command, Command::Status { json: true, socket } if socket.as_os_str() == "/run/usb9pfsd/control"));
        let cli = Cli::try_parse_from(["usb9pfsd", "reload", "--socket", "/tmp/c"]).expect("parse");
        assert!(matches!(cli.command, Command::Reload { socket } if socket.as_os_str() == "/tmp/c"));
    }
}
