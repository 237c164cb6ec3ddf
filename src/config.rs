//! The TOML file that maps boards to 9P servers, and the one question the
//! supervisor asks of it: which backend serves this board?
//!
//! A board here is one usb9pfs interface of a gadget. Precedence: a
//! `[[board]]` entry matching the gadget's serial (one naming this interface
//! with `interface = N` before one for every interface), then one matching
//! its USB port path (likewise), then `[defaults] backend`, else the board is
//! left alone. Unknown keys are errors; every error names file, line and
//! column. This module must never touch devices or sockets.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::ninep::backend::BackendAddr;
use crate::ninep::confine::Policy;
use crate::board::GadgetInfo;

/// Default path of the config file.
pub const DEFAULT_PATH: &str = "/etc/usb9pfsd/config.toml";
/// The kernel's default usb9pfs `buflen` (DEFAULT_BUFLEN in trans_usbg.c).
pub const DEFAULT_BUFLEN: u32 = 16384;
/// Default hard ceiling for a 9P frame, whatever msize a session negotiates.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;
/// `request_timeout` in seconds: a second up to a day.
const REQUEST_TIMEOUT_RANGE: (u32, u32) = (1, 86400);
/// `recover_window` in seconds: 0 (off) up to a day.
const RECOVER_WINDOW_RANGE: (u32, u32) = (0, 86400);
/// How long a board's request may wait while usb9pfsd rebuilds its session
/// after the 9P server restarted. Two minutes: long enough for a service
/// restart, a crash restarted by its supervisor, or a small server host's
/// reboot; short enough that a server gone for good turns into EIO (and the
/// board's own timeouts and watchdogs) rather than a board frozen for
/// longer than anyone waits at a console. A board whose root file system is
/// on 9P cannot do anything useful meanwhile either way.
pub const DEFAULT_RECOVER_WINDOW: Duration = Duration::from_secs(120);
const FRAME_RANGE: (u32, u32) = (4096, 16 << 20);
/// What `buflen` may be, in the config and for `forward --buflen`.
pub const BUFLEN_RANGE: (u32, u32) = (512, 16 << 20);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSchema {
    #[serde(default)]
    daemon: DaemonSchema,
    #[serde(default)]
    defaults: DefaultsSchema,
    #[serde(default)]
    board: Vec<Spanned<BoardSchema>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DaemonSchema {
    max_frame: Option<Spanned<u32>>,
    allow_ids: Option<Vec<Spanned<String>>>,
    control_socket: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultsSchema {
    backend: Option<BackendAddr>,
    buflen: Option<Spanned<u32>>,
    request_timeout: Option<Spanned<u32>>,
    recover_window: Option<Spanned<u32>>,
    export: Option<Spanned<String>>,
    read_only: Option<bool>,
    uid: Option<Spanned<u32>>,
    gid: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoardSchema {
    serial: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    interface: Option<Spanned<u8>>,
    backend: BackendAddr,
    buflen: Option<Spanned<u32>>,
    request_timeout: Option<Spanned<u32>>,
    recover_window: Option<Spanned<u32>>,
    export: Option<Spanned<String>>,
    read_only: Option<bool>,
    uid: Option<Spanned<u32>>,
    gid: Option<Spanned<u32>>,
}

/// The confinement keys of one table, the same in `[defaults]` and `[[board]]`.
struct ConfineKeys<'a> {
    export: &'a Option<Spanned<String>>,
    read_only: Option<bool>,
    uid: &'a Option<Spanned<u32>>,
    gid: &'a Option<Spanned<u32>>,
}

/// Where a board's frames go, the board's receive buffer size, and how long
/// one request may wait for its reply (None: as long as it takes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub backend: BackendAddr,
    pub buflen: u32,
    pub request_timeout: Option<Duration>,
    /// How long a lost server session may take to be rebuilt (zero: off).
    pub recover_window: Duration,
    /// What the board may reach (`export`, `read_only`, `uid`, `gid`). In a
    /// parsed config `export` may be a template; [`Config::resolve`] gives
    /// it expanded for the board.
    pub confine: Policy,
}

/// How a `[[board]]` entry picks its board.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Match {
    Serial(String),
    Path(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoardRule {
    pub matcher: Match,
    /// Only this usb9pfs interface (bInterfaceNumber) of the gadget; `None`
    /// for every interface.
    pub interface: Option<u8>,
    pub target: Target,
}

/// A validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub max_frame: u32,
    /// When set, only gadgets with one of these VID:PIDs are served.
    pub allow_ids: Option<Vec<(u16, u16)>>,
    pub default: Option<Target>,
    pub boards: Vec<BoardRule>,
    /// Where `run` listens for `status` and `reload` (None: the default).
    pub control_socket: Option<PathBuf>,
}

/// What the config says about one board.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Serve { target: Target, why: &'static str },
    /// Not listed, and no `[defaults] backend`.
    NoBackend,
    /// VID:PID outside `[daemon] allow_ids`.
    NotAllowed,
    /// The entry's export template cannot be expanded safely for this board
    /// (e.g. its serial would not be a plain path component).
    Refused { why: String },
}

/// A config problem with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.path.display(), self.line, self.column, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// No boards, no defaults: every gadget is left alone.
    pub fn empty() -> Config {
        Config { max_frame: DEFAULT_MAX_FRAME, allow_ids: None, default: None, boards: Vec::new(), control_socket: None }
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!(
                "cannot read the config file: {e} (start from config.example.toml, installed as /usr/share/doc/usb9pfsd/examples/config.example.toml, or pass --config PATH)"
            ),
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let err = |span: Option<std::ops::Range<usize>>, message: String| {
            let (line, column) = span.map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError { path: path.to_path_buf(), line, column, message }
        };
        let file: FileSchema = toml::from_str(text).map_err(|e| err(e.span(), e.message().to_string()))?;

        let max_frame = match &file.daemon.max_frame {
            Some(v) => in_range(v, FRAME_RANGE, "max_frame").map_err(|m| err(Some(v.span()), m))?,
            None => DEFAULT_MAX_FRAME,
        };
        let allow_ids = match &file.daemon.allow_ids {
            None => None,
            Some(ids) => Some(
                ids.iter()
                    .map(|s| parse_usb_id(s.get_ref()).map_err(|m| err(Some(s.span()), m)))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let control_socket = match &file.daemon.control_socket {
            Some(p) if !p.get_ref().starts_with('/') => {
                return Err(err(Some(p.span()), format!("control_socket = {:?} must be an absolute path", p.get_ref())))
            }
            Some(p) => Some(PathBuf::from(p.get_ref())),
            None => None,
        };
        let default_buflen = match &file.defaults.buflen {
            Some(v) => in_range(v, BUFLEN_RANGE, "buflen").map_err(|m| err(Some(v.span()), m))?,
            None => DEFAULT_BUFLEN,
        };
        let request_timeout = |v: &Option<Spanned<u32>>, inherited: Option<Duration>| match v {
            Some(v) => in_range(v, REQUEST_TIMEOUT_RANGE, "request_timeout")
                .map(|s| Some(Duration::from_secs(s.into())))
                .map_err(|m| err(Some(v.span()), m)),
            None => Ok(inherited),
        };
        let default_request_timeout = request_timeout(&file.defaults.request_timeout, None)?;
        let recover_window = |v: &Option<Spanned<u32>>, inherited: Duration| match v {
            Some(v) => in_range(v, RECOVER_WINDOW_RANGE, "recover_window")
                .map(|s| Duration::from_secs(s.into()))
                .map_err(|m| err(Some(v.span()), m)),
            None => Ok(inherited),
        };
        let default_recover_window = recover_window(&file.defaults.recover_window, DEFAULT_RECOVER_WINDOW)?;
        let confine = |c: ConfineKeys, inherited: &Policy| -> Result<Policy, ConfigError> {
            let mut p = inherited.clone();
            if let Some(e) = &c.export {
                check_export(e.get_ref()).map_err(|m| err(Some(e.span()), m))?;
                p.export = Some(e.get_ref().clone());
            }
            if let Some(ro) = c.read_only {
                p.read_only = ro;
            }
            for (v, slot, name) in [(c.uid, &mut p.uid, "uid"), (c.gid, &mut p.gid, "gid")] {
                if let Some(v) = v {
                    if *v.get_ref() == u32::MAX {
                        return Err(err(Some(v.span()), format!("{name} = {} is 9P's \"no user\": pick a real id", u32::MAX)));
                    }
                    *slot = Some(*v.get_ref());
                }
            }
            Ok(p)
        };
        let d = &file.defaults;
        let keys = ConfineKeys { export: &d.export, read_only: d.read_only, uid: &d.uid, gid: &d.gid };
        let default_confine = confine(keys, &Policy::default())?;
        let default = file.defaults.backend.clone().map(|backend| Target {
            backend,
            buflen: default_buflen,
            request_timeout: default_request_timeout,
            recover_window: default_recover_window,
            confine: default_confine.clone(),
        });

        let mut seen = HashSet::new();
        let mut boards = Vec::new();
        for entry in &file.board {
            let b = entry.get_ref();
            let matcher = match (&b.serial, &b.path) {
                (Some(s), None) => (Match::Serial(s.get_ref().clone()), s.span()),
                (None, Some(p)) => (Match::Path(p.get_ref().clone()), p.span()),
                (Some(_), Some(p)) => {
                    return Err(err(Some(p.span()), "a [[board]] entry matches by serial or by path, not both".into()))
                }
                (None, None) => {
                    return Err(err(
                        Some(entry.span()),
                        "this [[board]] entry has neither serial nor path: add serial = \"...\" (see `usb9pfsd list`)".into(),
                    ))
                }
            };
            let (matcher, span) = matcher;
            let interface = b.interface.as_ref().map(|i| *i.get_ref());
            if !seen.insert((matcher.clone(), interface)) {
                let what = match interface {
                    Some(i) => format!("{} interface {i}", describe(&matcher)),
                    None => describe(&matcher),
                };
                return Err(err(Some(span), format!("{what} is listed twice")));
            }
            let buflen = match &b.buflen {
                Some(v) => in_range(v, BUFLEN_RANGE, "buflen").map_err(|m| err(Some(v.span()), m))?,
                None => default_buflen,
            };
            let request_timeout = request_timeout(&b.request_timeout, default_request_timeout)?;
            let recover_window = recover_window(&b.recover_window, default_recover_window)?;
            let keys = ConfineKeys { export: &b.export, read_only: b.read_only, uid: &b.uid, gid: &b.gid };
            let confine = confine(keys, &default_confine)?;
            boards.push(BoardRule { matcher, interface, target: Target { backend: b.backend.clone(), buflen, request_timeout, recover_window, confine } });
        }
        Ok(Config { max_frame, allow_ids, default, boards, control_socket })
    }

    /// Which backend serves `g`: serial, then port path, then defaults; an
    /// entry naming `g`'s interface beats one for every interface.
    pub fn resolve(&self, g: &GadgetInfo) -> Decision {
        if let Some(ids) = &self.allow_ids {
            if !ids.contains(&(g.vid, g.pid)) {
                return Decision::NotAllowed;
            }
        }
        let by = |m: &Match| {
            let rules = || self.boards.iter().filter(|r| &r.matcher == m);
            rules()
                .find(|r| r.interface == Some(g.interface))
                .or_else(|| rules().find(|r| r.interface.is_none()))
                .map(|r| r.target.clone())
        };
        let serve = |mut target: Target, why: &'static str| {
            if let Some(template) = &target.confine.export {
                match expand_export(template, g) {
                    Ok(export) => target.confine.export = Some(export),
                    Err(why) => return Decision::Refused { why },
                }
            }
            Decision::Serve { target, why }
        };
        if let Some(target) = g.serial.as_ref().and_then(|s| by(&Match::Serial(s.clone()))) {
            return serve(target, "serial");
        }
        if let Some(target) = by(&Match::Path(g.port_path.clone())) {
            return serve(target, "path");
        }
        match &self.default {
            Some(target) => serve(target.clone(), "defaults"),
            None => Decision::NoBackend,
        }
    }
}

/// The placeholders an `export` may hold.
const PLACEHOLDERS: [&str; 3] = ["{path}", "{serial}", "{interface}"];

/// An `export` must be absolute and normalised: no `.` or `..` components,
/// no `//`, no trailing `/` (but `/` itself), no NUL or control characters.
/// Placeholders count as one plain component's worth of text each.
fn check_export(e: &str) -> Result<(), String> {
    let mut plain = e.to_string();
    for p in PLACEHOLDERS {
        plain = plain.replace(p, "x");
    }
    if plain.contains(['{', '}']) {
        return Err(format!("export = {e:?}: the only placeholders are {{path}}, {{serial}} and {{interface}}"));
    }
    if !normalised(&plain) {
        return Err(format!(
            "export = {e:?} must be an absolute, normalised path (starting with '/', without '.', '..', '//', a trailing '/' or control characters)"
        ));
    }
    Ok(())
}

fn normalised(p: &str) -> bool {
    if p == "/" {
        return true;
    }
    p.starts_with('/')
        && !p.chars().any(char::is_control)
        && p[1..].split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// A value a board supplies that may become part of a path: one plain
/// component, nothing a board could use to point elsewhere.
fn plain_component(v: &str) -> bool {
    !v.is_empty() && v != "." && !v.contains('/') && !v.contains("..") && !v.chars().any(char::is_control)
}

/// `template` with `g`'s port path, serial and interface in place of the
/// placeholders. Err (a sentence for the log) if a value is not a plain path
/// component: that board is not served at all.
pub fn expand_export(template: &str, g: &GadgetInfo) -> Result<String, String> {
    let mut out = template.to_string();
    if out.contains("{serial}") {
        let serial = g.serial.as_deref().unwrap_or("");
        if !plain_component(serial) {
            return Err(format!(
                "its export {template:?} names {{serial}}, and this board's serial {:?} is not a plain path component \
                 (empty, or with '/', '..', NUL or control characters): refused so that it cannot point its export elsewhere; \
                 use {{path}} or a [[board]] entry for it",
                serial.escape_debug().to_string()
            ));
        }
        out = out.replace("{serial}", serial);
    }
    if out.contains("{path}") {
        if !plain_component(&g.port_path) {
            return Err(format!("its export {template:?} names {{path}}, and the port path {:?} is not a plain path component", g.port_path));
        }
        out = out.replace("{path}", &g.port_path);
    }
    out = out.replace("{interface}", &g.interface.to_string());
    if !normalised(&out) {
        return Err(format!("its export {template:?} expands to {out:?}, which is not a normalised absolute path"));
    }
    Ok(out)
}

fn describe(m: &Match) -> String {
    match m {
        Match::Serial(s) => format!("serial {s:?}"),
        Match::Path(p) => format!("path {p:?}"),
    }
}

fn in_range(v: &Spanned<u32>, (lo, hi): (u32, u32), name: &str) -> Result<u32, String> {
    let x = *v.get_ref();
    if x < lo || x > hi {
        return Err(format!("{name} = {x} is outside {lo}..={hi}"));
    }
    Ok(x)
}

/// Parses `1d6b:0109`.
pub fn parse_usb_id(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?} is not a VID:PID like \"1d6b:0109\"");
    let (v, p) = s.split_once(':').ok_or_else(bad)?;
    let hex = |x: &str| if x.len() == 4 { u16::from_str_radix(x, 16).ok() } else { None };
    Ok((hex(v).ok_or_else(bad)?, hex(p).ok_or_else(bad)?))
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::usb_id;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    fn gadget(serial: Option<&str>, port: &str, vid: u16, pid: u16) -> GadgetInfo {
        GadgetInfo { port_path: port.into(), vid, pid, id: usb_id(vid, pid), ..GadgetInfo::example(serial, 1, 2) }
    }

    const EXAMPLE: &str = r#"
[defaults]
backend = "127.0.0.1:564"

[[board]]
serial = "0001-BOARD-A"
backend = "buildhost:5640"

[[board]]
path = "1-1.2"
backend = "unix:/run/diod-b.sock"
buflen = 65536
"#;

    #[test]
    fn precedence_is_serial_then_path_then_defaults() {
        let c = parse(EXAMPLE).expect("parse");
        let target = |d: Decision| match d {
            Decision::Serve { target, why } => (target.backend.to_string(), target.buflen, why),
            other => panic!("{other:?}"),
        };
        // Serial wins even on the path of another entry.
        assert_eq!(
            target(c.resolve(&gadget(Some("0001-BOARD-A"), "1-1.2", 1, 2))),
            ("buildhost:5640".into(), 16384, "serial")
        );
        assert_eq!(
            target(c.resolve(&gadget(Some("other"), "1-1.2", 1, 2))),
            ("unix:/run/diod-b.sock".into(), 65536, "path")
        );
        assert_eq!(target(c.resolve(&gadget(None, "1-1.3", 1, 2))), ("127.0.0.1:564".into(), 16384, "defaults"));
    }

    #[test]
    fn no_defaults_leaves_unknown_boards_alone_and_allow_list_filters() {
        let c = parse("[daemon]\nallow_ids = [\"1d6b:0109\"]\n[[board]]\nserial = \"A\"\nbackend = \"h:1\"\n").expect("parse");
        assert_eq!(c.resolve(&gadget(Some("B"), "1-1", 0x1d6b, 0x0109)), Decision::NoBackend);
        assert_eq!(c.resolve(&gadget(Some("A"), "1-1", 0x0525, 0xa4a0)), Decision::NotAllowed);
        assert!(matches!(c.resolve(&gadget(Some("A"), "1-1", 0x1d6b, 0x0109)), Decision::Serve { .. }));
        assert_eq!(Config::empty().resolve(&gadget(Some("A"), "1-1", 1, 1)), Decision::NoBackend);
    }

    #[test]
    fn an_interface_entry_narrows_a_serial_or_path_match() {
        let c = parse(
            "[[board]]\nserial = \"A\"\nbackend = \"h:1\"\n[[board]]\nserial = \"A\"\ninterface = 3\nbackend = \"h:3\"\n\
             [[board]]\npath = \"2-1\"\ninterface = 1\nbackend = \"p:1\"\n",
        )
        .expect("parse");
        let on = |serial: Option<&str>, port: &str, iface: u8| {
            let g = GadgetInfo { interface: iface, ..gadget(serial, port, 1, 2) };
            match c.resolve(&g) {
                Decision::Serve { target, why } => format!("{} {why}", target.backend),
                other => format!("{other:?}"),
            }
        };
        assert_eq!(on(Some("A"), "1-1", 3), "h:3 serial");
        assert_eq!(on(Some("A"), "1-1", 0), "h:1 serial");
        assert_eq!(on(Some("B"), "2-1", 1), "p:1 path");
        assert_eq!(on(Some("B"), "2-1", 2), "NoBackend", "the path entry names interface 1 only");
        let (l, _, m) = at("[[board]]\nserial = \"A\"\ninterface = 1\nbackend = \"h:1\"\n[[board]]\nserial = \"A\"\ninterface = 1\nbackend = \"h:2\"\n");
        assert_eq!(l, 6, "{m}");
        assert!(m.contains("serial \"A\" interface 1 is listed twice"), "{m}");
        let (l, _, m) = at("[[board]]\nserial = \"A\"\ninterface = 300\nbackend = \"h:1\"\n");
        assert_eq!(l, 3, "{m}");
    }

    #[test]
    fn empty_file_is_valid() {
        assert_eq!(parse("").expect("empty"), Config::empty());
    }

    fn at(text: &str) -> (usize, usize, String) {
        let e = parse(text).expect_err("must fail");
        (e.line, e.column, e.message)
    }

    #[test]
    fn errors_carry_line_and_column() {
        let (l, c, m) = at("[defaults]\nbackend = \"127.0.0.1:564\"\nbakend = \"x:1\"\n");
        assert_eq!((l, c), (3, 1), "{m}");
        assert!(m.contains("unknown field `bakend`"), "{m}");

        let (l, c, m) = at("[[board]]\nserial = \"A\"\nbackend = \"nohostport\"\n");
        assert_eq!((l, c), (3, 11), "{m}");
        assert!(m.contains("host:port"), "{m}");

        let (l, _, m) = at("[[board]]\nserial = \"A\"\nbackend = \"h:1\"\n\n[[board]]\nserial = \"A\"\nbackend = \"h:2\"\n");
        assert_eq!(l, 6, "{m}");
        assert!(m.contains("listed twice"), "{m}");

        let (l, _, m) = at("[[board]]\nbackend = \"h:1\"\n");
        assert_eq!(l, 1, "{m}");
        assert!(m.contains("neither serial nor path"), "{m}");

        let (l, _, m) = at("[[board]]\nserial = \"A\"\npath = \"1-1\"\nbackend = \"h:1\"\n");
        assert_eq!(l, 3, "{m}");

        let (l, c, m) = at("[daemon]\nmax_frame = 10\n");
        assert_eq!((l, c), (2, 13), "{m}");
        let (l, _, m) = at("[daemon]\nallow_ids = [\"1d6b-0109\"]\n");
        assert_eq!(l, 2, "{m}");
        let (l, c, m) = at("[daemon]\ncontrol_socket = \"run/control\"\n");
        assert_eq!((l, c), (2, 18), "{m}");
        assert!(m.contains("absolute"), "{m}");
        let c = parse("[daemon]\ncontrol_socket = \"/run/x/control\"\n").expect("parse");
        assert_eq!(c.control_socket, Some(PathBuf::from("/run/x/control")));
        let (l, _, _) = at("[defaults\n");
        assert_eq!(l, 1);
        let e = parse("[[board]]\nserial = \"A\"\nbackend = \"h:1\"\nbuflen = 1\n").expect_err("range");
        assert_eq!(e.to_string(), "test.toml:4:10: buflen = 1 is outside 512..=16777216");
        let long = format!("[[board]]\nserial = \"A\"\nbackend = \"unix:/{}\"\n", "s".repeat(120));
        let (l, c, m) = at(&long);
        assert_eq!((l, c), (3, 11), "{m}");
        assert!(m.contains("107"), "{m}");
    }

    #[test]
    fn request_timeout_is_optional_inherited_and_range_checked() {
        let c = parse(
            "[defaults]\nbackend = \"h:1\"\nrequest_timeout = 30\n\n[[board]]\nserial = \"A\"\nbackend = \"h:2\"\nrequest_timeout = 5\n\n[[board]]\nserial = \"B\"\nbackend = \"h:3\"\n",
        )
        .expect("parse");
        let timeout = |serial| match c.resolve(&gadget(Some(serial), "1-9", 1, 2)) {
            Decision::Serve { target, .. } => target.request_timeout,
            other => panic!("{other:?}"),
        };
        assert_eq!(timeout("A"), Some(Duration::from_secs(5)));
        assert_eq!(timeout("B"), Some(Duration::from_secs(30)), "inherited from [defaults]");
        assert_eq!(timeout("C"), Some(Duration::from_secs(30)));
        assert_eq!(parse(EXAMPLE).expect("parse").boards[0].target.request_timeout, None, "off by default");
        let e = parse("[defaults]\nrequest_timeout = 0\n").expect_err("range");
        assert_eq!(e.to_string(), "test.toml:2:19: request_timeout = 0 is outside 1..=86400");
        let e = parse("[[board]]\nserial = \"A\"\nbackend = \"h:1\"\nrequest_timeout = 90000\n").expect_err("range");
        assert_eq!((e.line, e.column), (4, 19), "{e}");
    }

    #[test]
    fn confinement_keys_parse_inherit_and_expand_per_board() {
        let c = parse(
            "[defaults]\nbackend = \"h:1\"\nexport = \"/srv/boards/{path}-{interface}\"\nuid = 1000\n\n\
             [[board]]\nserial = \"A\"\nbackend = \"h:2\"\nexport = \"/srv/a\"\nread_only = true\ngid = 100\n\n\
             [[board]]\nserial = \"S\"\nbackend = \"h:3\"\nexport = \"/srv/by-serial/{serial}\"\n",
        )
        .expect("parse");
        let policy = |serial: Option<&str>, port: &str| match c.resolve(&gadget(serial, port, 1, 2)) {
            Decision::Serve { target, .. } => Ok(target.confine),
            Decision::Refused { why } => Err(why),
            other => panic!("{other:?}"),
        };
        let a = policy(Some("A"), "1-1").expect("A");
        assert_eq!(a, Policy { export: Some("/srv/a".into()), read_only: true, uid: Some(1000), gid: Some(100) }, "uid inherited");
        let d = policy(None, "1-1.2").expect("defaults");
        assert_eq!(d.export.as_deref(), Some("/srv/boards/1-1.2-0"), "{{path}} and {{interface}} expanded");
        assert!(!d.read_only);
        assert_eq!(policy(Some("S"), "1-3").expect("S").export.as_deref(), Some("/srv/by-serial/S"));
        // Without the keys nothing is confined.
        let plain = parse(EXAMPLE).expect("parse");
        assert!(plain.boards.iter().all(|b| !b.target.confine.confines()));
        assert!(!plain.default.as_ref().expect("defaults").confine.confines());
    }

    #[test]
    fn a_serial_that_is_no_plain_component_never_becomes_a_path() {
        let c = parse("[defaults]\nbackend = \"h:1\"\nexport = \"/srv/{serial}\"\n").expect("parse");
        for bad in [None, Some(""), Some("."), Some(".."), Some("a/b"), Some("x..y"), Some("a\0b"), Some("a\nb"), Some("\u{7f}")] {
            match c.resolve(&gadget(bad, "1-1", 1, 2)) {
                Decision::Refused { why } => assert!(why.contains("not a plain path component"), "{why}"),
                other => panic!("serial {bad:?}: {other:?}"),
            }
        }
        assert!(matches!(c.resolve(&gadget(Some("0001-A_b.c"), "1-1", 1, 2)), Decision::Serve { .. }));
    }

    #[test]
    fn exports_must_be_absolute_and_normalised() {
        for bad in ["srv/a", "/srv/../a", "/srv/./a", "/srv//a", "/srv/a/", "", "/srv/{bogus}", "/srv/{path"] {
            let text = format!("[[board]]\nserial = \"A\"\nbackend = \"h:1\"\nexport = {bad:?}\n");
            let (l, c, m) = at(&text);
            assert_eq!((l, c), (4, 10), "{bad:?}: {m}");
            assert!(m.contains("export"), "{m}");
        }
        let (l, c, m) = at("[defaults]\nexport = \"/srv/\\u0001\"\n");
        assert_eq!((l, c), (2, 10), "a control character: {m}");
        let (l, c, m) = at("[defaults]\nexport = \"/srv/{serial}/..\"\n");
        assert_eq!((l, c), (2, 10), "{m}");
        let (l, _, m) = at("[defaults]\nuid = 4294967295\n");
        assert_eq!(l, 2, "{m}");
        let (l, _, m) = at("[defaults]\nuid = -1\n");
        assert_eq!(l, 2, "{m}");
        let (l, _, m) = at("[defaults]\nread_only = \"yes\"\n");
        assert_eq!(l, 2, "{m}");
        for good in ["/", "/srv/a", "/srv/{path}/{serial}#{interface}"] {
            let text = format!("[defaults]\nexport = {good:?}\n");
            parse(&text).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
    }

    #[test]
    fn missing_file_says_what_to_do() {
        let e = Config::load(Path::new("/nonexistent/usb9pfsd.toml")).expect_err("missing");
        assert!(e.to_string().contains("--config"), "{e}");
    }

    #[test]
    fn shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        Config::load(&path).expect("config.example.toml must parse");
    }
}
