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

use crate::board::BoardInfo;
use crate::ninep::backend::BackendAddr;
use crate::ninep::confine::Policy;

pub mod serve;

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
    max_frame: Option<Spanned<i64>>,
    allow_ids: Option<Spanned<Vec<Spanned<String>>>>,
    control_socket: Option<Spanned<String>>,
    /// For the VM rig only (see [`TestWaits`]): not in config.example.toml.
    test_partial_frame_wait: Option<Spanned<i64>>,
    test_nudge_every: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultsSchema {
    backend: Option<Spanned<String>>,
    buflen: Option<Spanned<i64>>,
    request_timeout: Option<Spanned<i64>>,
    recover_window: Option<Spanned<i64>>,
    export: Option<Spanned<String>>,
    read_only: Option<bool>,
    uid: Option<Spanned<i64>>,
    gid: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoardSchema {
    serial: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    interface: Option<Spanned<i64>>,
    backend: Option<Spanned<String>>,
    buflen: Option<Spanned<i64>>,
    request_timeout: Option<Spanned<i64>>,
    recover_window: Option<Spanned<i64>>,
    export: Option<Spanned<String>>,
    read_only: Option<bool>,
    uid: Option<Spanned<i64>>,
    gid: Option<Spanned<i64>>,
}

/// The confinement keys of one table, the same in `[defaults]` and `[[board]]`.
struct ConfineKeys<'a> {
    export: &'a Option<Spanned<String>>,
    read_only: Option<bool>,
    uid: &'a Option<Spanned<i64>>,
    gid: &'a Option<Spanned<i64>>,
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
    /// This serial on this port path, both (`forward --serial S --path P`;
    /// a config entry takes one or the other). Before serial and path alone.
    SerialAt {
        serial: String,
        path: String,
    },
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
    /// Shorter USB waits for the VM rig's fault scenario; empty in any real config.
    pub test_waits: TestWaits,
    /// `usb9pfsd serve`'s runtime mappings, before every entry; never in a
    /// file (the supervisor carries them from config to config).
    pub serves: Vec<serve::Serve>,
}

/// `[daemon] test_partial_frame_wait` and `test_nudge_every` (seconds): the
/// rest of a begun message's deadline and the supervisor's nudge interval
/// (`usb::pipe::PARTIAL_FRAME_WAIT`, 30 s, and `NUDGE_EVERY`, 15 s),
/// shortened. They exist so the VM rig's fault-board scenario, which waits
/// these out several times, runs in seconds instead of minutes; the rig
/// checks the daemon keeps the deadline it was given, and the unit tests
/// check the defaults. They may only shorten (1 s up to the default),
/// apply from `run`'s start (a reload does not change them), and `run` logs
/// a warning naming them: a production config has no reason to set them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestWaits {
    pub partial_frame_wait: Option<Duration>,
    pub nudge_every: Option<Duration>,
}

impl TestWaits {
    pub fn is_set(&self) -> bool {
        self.partial_frame_wait.is_some() || self.nudge_every.is_some()
    }
}

/// What the config says about one board.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Serve {
        target: Target,
        why: &'static str,
    },
    /// Not listed, and no `[defaults] backend`.
    NoBackend,
    /// VID:PID outside `[daemon] allow_ids`.
    NotAllowed,
    /// The entry's export template cannot be expanded safely for this board
    /// (e.g. its serial would not be a plain path component).
    Refused {
        why: String,
    },
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
        Config {
            max_frame: DEFAULT_MAX_FRAME,
            allow_ids: None,
            default: None,
            boards: Vec::new(),
            control_socket: None,
            test_waits: TestWaits::default(),
            serves: Vec::new(),
        }
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(&read(path)?, path)
    }

    /// Parses and validates config text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_checked(text, path).map(|(c, _)| c)
    }

    /// Reads a config file as [`Config::load`] does, with the warnings about
    /// what parses but cannot work as configured ([`Config::parse_checked`]).
    pub fn load_checked(path: &Path) -> Result<(Config, Vec<ConfigError>), ConfigError> {
        Config::parse_checked(&read(path)?, path)
    }

    /// Parses and validates config text; besides the config, the warnings:
    /// entries that parse but cannot work as configured (the shipped
    /// placeholder serial, a unix socket the service's sandbox hides), each
    /// with its place in the file and what to do.
    pub fn parse_checked(text: &str, path: &Path) -> Result<(Config, Vec<ConfigError>), ConfigError> {
        let mut c = Checker { text, path, warnings: Vec::new(), max_frame: DEFAULT_MAX_FRAME };
        let file: FileSchema = toml::from_str(text).map_err(|e| {
            let span = e.span();
            c.err(span.clone(), in_toml_words(e.message(), text, span))
        })?;
        let (allow_ids, control_socket, test_waits) = c.daemon(&file.daemon)?;
        let (defaults, default) = c.defaults(&file.defaults)?;
        let mut seen = HashSet::new();
        let mut boards = Vec::new();
        for entry in &file.board {
            boards.push(c.board(entry, &defaults, &mut seen)?);
        }
        let config = Config { max_frame: c.max_frame, allow_ids, default, boards, control_socket, test_waits, serves: Vec::new() };
        Ok((config, c.warnings))
    }

    /// Which backend serves `g`: serial, then port path, then defaults; an
    /// entry naming `g`'s interface beats one for every interface.
    pub fn resolve(&self, g: &BoardInfo) -> Decision {
        if let Some(ids) = &self.allow_ids {
            if !ids.contains(&(g.vid, g.pid)) {
                return Decision::NotAllowed;
            }
        }
        let serve = |target: Target, why: &'static str| expanded(target, why, g);
        if let Some(s) = self.serves.iter().rev().find(|s| s.board.matches(g)) {
            let base = match self.resolve_file(g) {
                Decision::Serve { target, .. } => Some(target),
                _ => self.default.clone(),
            };
            return serve(s.spec.target(base.as_ref()), "usb9pfsd serve");
        }
        self.resolve_file(g)
    }

    /// The directories managed servers of this config export, templates
    /// left out (they name a directory only for a board).
    pub fn managed_exports(&self) -> impl Iterator<Item = &Path> {
        self.default.iter().chain(self.boards.iter().map(|r| &r.target)).filter_map(|t| match &t.backend {
            BackendAddr::Managed(dir) if !dir.to_string_lossy().contains('{') => Some(dir.as_path()),
            _ => None,
        })
    }

    /// What the file alone says about `g` (after `allow_ids`).
    fn resolve_file(&self, g: &BoardInfo) -> Decision {
        let by = |m: &Match| {
            let rules = || self.boards.iter().filter(|r| &r.matcher == m);
            rules().find(|r| r.interface == Some(g.interface)).or_else(|| rules().find(|r| r.interface.is_none())).map(|r| r.target.clone())
        };
        let serve = |target: Target, why: &'static str| expanded(target, why, g);
        let both = g.serial.as_ref().and_then(|s| by(&Match::SerialAt { serial: s.clone(), path: g.port_path.clone() }));
        if let Some(target) = both {
            return serve(target, "serial and path");
        }
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

/// `target` for `g`: its export template expanded, and a managed server
/// exporting what the board is confined to.
fn expanded(mut target: Target, why: &'static str, g: &BoardInfo) -> Decision {
    if let Some(template) = &target.confine.export {
        match expand_export(template, g) {
            Ok(export) => target.confine.export = Some(export),
            Err(why) => return Decision::Refused { why },
        }
    }
    if let (BackendAddr::Managed(dir), Some(export)) = (&mut target.backend, &target.confine.export) {
        *dir = PathBuf::from(export);
    }
    Decision::Serve { target, why }
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
    p.starts_with('/') && !p.chars().any(char::is_control) && p[1..].split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// A value a board supplies that may become part of a path: one plain
/// component, nothing a board could use to point elsewhere.
fn plain_component(v: &str) -> bool {
    !v.is_empty() && v != "." && !v.contains('/') && !v.contains("..") && !v.chars().any(char::is_control)
}

/// `template` with `g`'s port path, serial and interface in place of the
/// placeholders. Err (a sentence for the log) if a value is not a plain path
/// component: that board is not served at all.
pub fn expand_export(template: &str, g: &BoardInfo) -> Result<String, String> {
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
            return Err(format!(
                "its export {template:?} names {{path}}, and the port path {:?} is not a plain path component",
                g.port_path
            ));
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
        Match::SerialAt { serial, path } => format!("serial {serial:?} at path {path:?}"),
    }
}

/// One config text being checked: where its errors point, the warnings so
/// far, and `max_frame` (every buflen must fit under it).
struct Checker<'a> {
    text: &'a str,
    path: &'a Path,
    warnings: Vec<ConfigError>,
    max_frame: u32,
}

/// What `[defaults]` gives every `[[board]]` entry that does not say.
struct Defaults {
    buflen: u32,
    request_timeout: Option<Duration>,
    recover_window: Duration,
    confine: Policy,
}

type Span = std::ops::Range<usize>;

impl Checker<'_> {
    /// An error (or warning) at `span` of the text, with what to do.
    fn err(&self, span: Option<Span>, message: String) -> ConfigError {
        let (line, column) = span.map(|s| line_col(self.text, s.start)).unwrap_or((0, 0));
        ConfigError { path: self.path.to_path_buf(), line, column, message }
    }

    /// `v` within `range`, or an error at it.
    fn in_range(&self, v: &Spanned<i64>, range: (u32, u32), name: &str) -> Result<u32, ConfigError> {
        in_range(v, range, name).map_err(|m| self.err(Some(v.span()), m))
    }

    /// `[daemon]`: sets `max_frame`; the allowed VID:PIDs, the control
    /// socket and the rig's test waits.
    #[allow(clippy::type_complexity)]
    fn daemon(&mut self, d: &DaemonSchema) -> Result<(Option<Vec<(u16, u16)>>, Option<PathBuf>, TestWaits), ConfigError> {
        if let Some(v) = &d.max_frame {
            self.max_frame = self.in_range(v, FRAME_RANGE, "max_frame")?;
        }
        let allow_ids = match &d.allow_ids {
            None => None,
            Some(ids) if ids.get_ref().is_empty() => {
                return Err(self.err(
                    Some(ids.span()),
                    "allow_ids = [] lets no board in: list the VID:PIDs to serve, like [\"1d6b:0109\"], or remove the key to serve every usb9pfs gadget".into(),
                ))
            }
            Some(ids) => Some(
                ids.get_ref()
                    .iter()
                    .map(|s| parse_usb_id(s.get_ref()).map_err(|m| self.err(Some(s.span()), m)))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let control_socket = match &d.control_socket {
            Some(p) if !p.get_ref().starts_with('/') => {
                return Err(self.err(Some(p.span()), format!("control_socket = {:?} must be an absolute path", p.get_ref())))
            }
            Some(p) => Some(PathBuf::from(p.get_ref())),
            None => None,
        };
        let test_wait = |v: &Option<Spanned<i64>>, max: Duration, name: &str| match v {
            Some(v) => self.in_range(v, (1, max.as_secs() as u32), name).map(|s| Some(Duration::from_secs(s.into()))),
            None => Ok(None),
        };
        let test_waits = TestWaits {
            partial_frame_wait: test_wait(&d.test_partial_frame_wait, crate::usb::pipe::PARTIAL_FRAME_WAIT, "test_partial_frame_wait")?,
            nudge_every: test_wait(&d.test_nudge_every, crate::usb::pipe::NUDGE_EVERY, "test_nudge_every")?,
        };
        Ok((allow_ids, control_socket, test_waits))
    }

    /// `[defaults]`: what entries inherit, and the target of boards no
    /// entry names (None without a backend).
    fn defaults(&mut self, d: &DefaultsSchema) -> Result<(Defaults, Option<Target>), ConfigError> {
        let keys = ConfineKeys { export: &d.export, read_only: d.read_only, uid: &d.uid, gid: &d.gid };
        let defaults = Defaults {
            buflen: self.buflen(&d.buflen, DEFAULT_BUFLEN)?,
            request_timeout: self.request_timeout(&d.request_timeout, None)?,
            recover_window: self.recover_window(&d.recover_window, DEFAULT_RECOVER_WINDOW)?,
            confine: self.confine(keys, &Policy::default())?,
        };
        let target = match &d.backend {
            None => None,
            Some(b) => {
                let addr = self.backend(b)?;
                Some(Target {
                    backend: self.managed(addr, &defaults.confine, b.span())?,
                    buflen: defaults.buflen,
                    request_timeout: defaults.request_timeout,
                    recover_window: defaults.recover_window,
                    confine: defaults.confine.clone(),
                })
            }
        };
        Ok((defaults, target))
    }

    /// One `[[board]]` entry; `seen` holds the matches of the entries above
    /// it (each may appear once).
    fn board(
        &mut self,
        entry: &Spanned<BoardSchema>,
        defaults: &Defaults,
        seen: &mut HashSet<(Match, Option<u8>)>,
    ) -> Result<BoardRule, ConfigError> {
        let b = entry.get_ref();
        let (matcher, span) = self.matcher(entry)?;
        let interface = match &b.interface {
            Some(i) => Some(self.in_range(i, (0, 255), "interface")? as u8),
            None => None,
        };
        if !seen.insert((matcher.clone(), interface)) {
            let what = match interface {
                Some(i) => format!("{} interface {i}", describe(&matcher)),
                None => describe(&matcher),
            };
            return Err(self.err(Some(span), format!("{what} is listed twice")));
        }
        let board_backend = match &b.backend {
            Some(v) => self.backend(v)?,
            // A directory and no server: a managed diod serves it.
            None if b.export.is_some() => BackendAddr::Managed(PathBuf::new()),
            None => {
                return Err(self.err(
                    Some(entry.span()),
                    format!(
                        "this [[board]] entry ({}) has no backend: add backend = \"host:port\" or \"unix:/path\", or export = \"/dir\" alone to have usb9pfsd start a diod serving that directory",
                        describe(&matcher)
                    ),
                ));
            }
        };
        let buflen = self.buflen(&b.buflen, defaults.buflen)?;
        let request_timeout = self.request_timeout(&b.request_timeout, defaults.request_timeout)?;
        let recover_window = self.recover_window(&b.recover_window, defaults.recover_window)?;
        let keys = ConfineKeys { export: &b.export, read_only: b.read_only, uid: &b.uid, gid: &b.gid };
        let confine = self.confine(keys, &defaults.confine)?;
        let board_backend = self.managed(board_backend, &confine, entry.span())?;
        let target = Target { backend: board_backend, buflen, request_timeout, recover_window, confine };
        Ok(BoardRule { matcher, interface, target })
    }

    /// What an entry matches by (serial or path), and where it says so.
    fn matcher(&mut self, entry: &Spanned<BoardSchema>) -> Result<(Match, Span), ConfigError> {
        let b = entry.get_ref();
        match (&b.serial, &b.path) {
            (Some(s), None) => {
                check_serial(s.get_ref()).map_err(|m| self.err(Some(s.span()), m))?;
                if s.get_ref().starts_with(PLACEHOLDER_SERIAL) {
                    let w = self.err(
                        Some(s.span()),
                        format!(
                            "serial = {:?} is the shipped placeholder: no board has it; replace it with your board's serial (the SERIAL column of `usb9pfsd list`), or delete this [[board]] entry",
                            s.get_ref()
                        ),
                    );
                    self.warnings.push(w);
                }
                Ok((Match::Serial(s.get_ref().clone()), s.span()))
            }
            (None, Some(p)) => {
                check_port_path(p.get_ref()).map_err(|m| self.err(Some(p.span()), m))?;
                Ok((Match::Path(p.get_ref().clone()), p.span()))
            }
            (Some(_), Some(p)) => Err(self.err(Some(p.span()), "a [[board]] entry matches by serial or by path, not both".into())),
            (None, None) => Err(self.err(
                Some(entry.span()),
                "this [[board]] entry has neither serial nor path: add serial = \"...\" (see `usb9pfsd list`)".into(),
            )),
        }
    }

    /// A buflen (`default` if not given): in range, and not above
    /// `max_frame` (a board's frames are as long as its buflen, its mount's
    /// msize: a ceiling below it refuses them all).
    fn buflen(&self, v: &Option<Spanned<i64>>, default: u32) -> Result<u32, ConfigError> {
        let Some(v) = v else { return Ok(default) };
        let buflen = self.in_range(v, BUFLEN_RANGE, "buflen")?;
        if buflen > self.max_frame {
            let max_frame = self.max_frame;
            return Err(self.err(
                Some(v.span()),
                format!(
                    "buflen = {buflen} is larger than max_frame = {max_frame}: the board's messages (up to its buflen) would be refused; raise [daemon] max_frame to at least {buflen}"
                ),
            ));
        }
        Ok(buflen)
    }

    fn request_timeout(&self, v: &Option<Spanned<i64>>, inherited: Option<Duration>) -> Result<Option<Duration>, ConfigError> {
        match v {
            Some(v) => self.in_range(v, REQUEST_TIMEOUT_RANGE, "request_timeout").map(|s| Some(Duration::from_secs(s.into()))),
            None => Ok(inherited),
        }
    }

    fn recover_window(&self, v: &Option<Spanned<i64>>, inherited: Duration) -> Result<Duration, ConfigError> {
        match v {
            Some(v) => self.in_range(v, RECOVER_WINDOW_RANGE, "recover_window").map(|s| Duration::from_secs(s.into())),
            None => Ok(inherited),
        }
    }

    /// The confinement keys of a table over what it inherits.
    fn confine(&self, c: ConfineKeys, inherited: &Policy) -> Result<Policy, ConfigError> {
        let mut p = inherited.clone();
        if let Some(e) = &c.export {
            check_export(e.get_ref()).map_err(|m| self.err(Some(e.span()), m))?;
            p.export = Some(e.get_ref().clone());
        }
        if let Some(ro) = c.read_only {
            p.read_only = ro;
        }
        for (v, slot, name) in [(c.uid, &mut p.uid, "uid"), (c.gid, &mut p.gid, "gid")] {
            if let Some(v) = v {
                if *v.get_ref() == i64::from(u32::MAX) {
                    return Err(self.err(Some(v.span()), format!("{name} = {} is 9P's \"no user\": pick a real id", u32::MAX)));
                }
                *slot = Some(self.in_range(v, (0, u32::MAX - 1), name)?);
            }
        }
        Ok(p)
    }

    /// The address, with a warning if the service cannot reach it.
    fn backend(&mut self, v: &Spanned<String>) -> Result<BackendAddr, ConfigError> {
        let b = parse_backend(v.get_ref()).map_err(|m| self.err(Some(v.span()), m))?;
        if let Some(w) = sandbox_hides(&b) {
            let w = self.err(Some(v.span()), w);
            self.warnings.push(w);
        }
        Ok(b)
    }

    /// A managed server exports the entry's `export`: it must have one (a
    /// template is expanded per board by `resolve`).
    fn managed(&mut self, b: BackendAddr, c: &Policy, span: Span) -> Result<BackendAddr, ConfigError> {
        match (&b, &c.export) {
            (BackendAddr::Managed(_), None) => Err(self.err(
                Some(span),
                "backend = \"managed\" needs export = \"/dir\": the directory the managed diod serves to the board".into(),
            )),
            (BackendAddr::Managed(_), Some(e)) => {
                let dir = BackendAddr::Managed(PathBuf::from(e));
                if let Some(w) = sandbox_hides(&dir) {
                    let w = self.err(Some(span), w);
                    self.warnings.push(w);
                }
                Ok(dir)
            }
            _ => Ok(b),
        }
    }
}

fn in_range(v: &Spanned<i64>, (lo, hi): (u32, u32), name: &str) -> Result<u32, String> {
    let x = *v.get_ref();
    match u32::try_from(x) {
        Ok(x) if (lo..=hi).contains(&x) => Ok(x),
        _ => Err(format!("{name} = {x} must be between {lo} and {hi}")),
    }
}

/// The serial of the shipped config's example entry.
pub const PLACEHOLDER_SERIAL: &str = "CHANGE-ME";

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        line: 0,
        column: 0,
        message: format!(
            "cannot read the config file: {e} (start from config.example.toml, installed as /usr/share/doc/usb9pfsd/examples/config.example.toml)"
        ),
    })
}

fn check_serial(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("serial = \"\" matches no board (a board without a serial number has none): give the serial `usb9pfsd list` shows, or match by path = \"...\"".into());
    }
    Ok(())
}

/// A USB port path as sysfs names it: bus, `-`, then port numbers joined by
/// `.` (`1-1.2`); `usb9pfsd list` shows it in its PORT column.
fn check_port_path(p: &str) -> Result<(), String> {
    let number = |x: &str| !x.is_empty() && x.len() <= 3 && x.bytes().all(|b| b.is_ascii_digit());
    let ok = p.split_once('-').is_some_and(|(bus, ports)| number(bus) && ports.split('.').all(number));
    if ok {
        return Ok(());
    }
    // What people paste: a sysfs path, or an interface's name.
    let last = p.rsplit('/').next().unwrap_or(p);
    let device = last.split_once(':').map_or(last, |(d, _)| d);
    let hint = if device != p && check_port_path(device).is_ok() {
        format!("write path = {device:?}")
    } else {
        "use the PORT column of `usb9pfsd list`, like \"1-1.2\" (bus 1, port 1, then port 2 of its hub)".into()
    };
    Err(format!("path = {p:?} is not a USB port path: {hint}"))
}

/// A `backend` value: `host:port`, `[ipv6]:port` or `unix:/path`, with the
/// host a name or address and the port a number from 1 to 65535.
pub fn parse_backend(s: &str) -> Result<BackendAddr, String> {
    if s.starts_with("unix:") || s == BackendAddr::MANAGED {
        return s.parse();
    }
    let form = "a backend is \"host:port\", \"[ipv6]:port\", \"unix:/path/to/socket\" or \"managed\" (a diod this daemon starts for the entry's export)";
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("backend = {s:?} has no port: {form}, like \"127.0.0.1:564\""));
    };
    match port.parse::<u64>() {
        Ok(p) if (1..=65535).contains(&p) => {}
        Ok(p) => return Err(format!("backend = {s:?}: port {p} must be between 1 and 65535")),
        Err(_) => return Err(format!("backend = {s:?}: the port {port:?} is not a number ({form})")),
    }
    let host = match host.strip_prefix('[') {
        Some(h) => {
            let h = h.strip_suffix(']').unwrap_or(h);
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("backend = {s:?}: {h:?} in brackets is not an IPv6 address"));
            }
            h
        }
        None if host.contains(':') => return Err(format!("backend = {s:?}: write an IPv6 address in brackets, like \"[::1]:564\"")),
        None => host,
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let name_ok = host.len() <= 253 && host.trim_end_matches('.').split('.').all(label);
    if !host.contains(':') && !name_ok {
        return Err(format!("backend = {s:?}: {host:?} is not a host name or address (letters, digits, '-' and '.' only)"));
    }
    s.parse()
}

/// Where usb9pfsd.service cannot see a unix socket: its sandbox gives it a
/// private /tmp and /var/tmp and hides /home, /root and /run/user.
fn sandbox_hides(b: &BackendAddr) -> Option<String> {
    let hidden = ["/tmp", "/var/tmp", "/home", "/root", "/run/user"];
    match b {
        BackendAddr::Unix(p) => {
            let under = hidden.iter().find(|h| p.starts_with(h))?;
            Some(format!(
                "unix socket {} is under {under}, which usb9pfsd.service cannot see (its sandbox: PrivateTmp=, ProtectHome=): the board's mount would fail as if the server were down; have the server listen under /run or /srv",
                p.display()
            ))
        }
        BackendAddr::Managed(dir) => {
            let under = hidden.iter().find(|h| dir.starts_with(h))?;
            Some(format!(
                "managed export {} is under {under}, which usb9pfsd.service cannot see (its sandbox: PrivateTmp=, ProtectHome=): serve it from /srv, or allow it with the drop-in in docs/serve.md \"Privileges\" (/usr/share/doc/usb9pfsd/serve.md)",
                dir.display()
            ))
        }
        BackendAddr::Tcp { .. } => None,
    }
}

/// A TOML parser's message about a value of the wrong kind, in TOML's words
/// and the user's (never a Rust type): which kind the key takes.
fn in_toml_words(message: &str, text: &str, span: Option<std::ops::Range<usize>>) -> String {
    // The key before the span, if the span is a value (`key = value`).
    let key = span.as_ref().and_then(|s| {
        let line = text[..s.start.min(text.len())].rsplit('\n').next()?;
        let k = line.split('=').next()?.trim();
        (!k.is_empty() && !k.starts_with('[')).then(|| k.to_string())
    });
    // Or a table header (`[name]`, `[[name]]`) the span points at.
    let header =
        span.as_ref().and_then(|s| text.get(s.start..)).and_then(|t| t.lines().next()).map(str::trim).filter(|t| t.starts_with('['));
    if let Some(h) = header.filter(|h| h.starts_with("[[") && !h.starts_with("[[board]]")) {
        let name = h.trim_matches(['[', ']']);
        return format!("[{name}] is a single table: write [{name}], not [[{name}]]");
    }
    let header = header.map(str::to_string);
    let the = |what: &str| match &key {
        Some(k) => format!("{k} must be {what}"),
        None => format!("expected {what}"),
    };
    let got =
        message.split(", expected").next().unwrap_or(message).trim_start_matches("invalid type: ").trim_start_matches("invalid value: ");
    if message.contains("expected a sequence") || message.contains("expected a Vec") {
        if message.contains("map") && (header.as_deref() == Some("[board]") || key.is_none()) {
            return "[board] must be written [[board]] (two brackets): one [[board]] table per board".into();
        }
        return format!("{}, not {got}", the("an array, like [\"1d6b:0109\"]"));
    }
    if message.contains("expected struct") || message.contains("expected a map") {
        let name = header.as_deref().unwrap_or("this").trim_matches(['[', ']']);
        return format!("[{name}] is a single table: write [{name}], not [[{name}]]");
    }
    for rust in ["i64", "u64", "u32", "u16", "u8", "i32", "an integer"] {
        if message.ends_with(&format!("expected {rust}")) {
            return format!("{}, not {got}", the("a whole number (without quotes)"));
        }
    }
    if message.ends_with("expected a string") {
        return format!("{}, not {got}", the("a string (in double quotes)"));
    }
    if message.ends_with("expected a boolean") {
        return format!("{}, not {got}", the("true or false (without quotes)"));
    }
    message.replace("missing field", "missing key").replace("unknown field", "unknown key")
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

    fn gadget(serial: Option<&str>, port: &str, vid: u16, pid: u16) -> BoardInfo {
        BoardInfo { port_path: port.into(), vid, pid, id: usb_id(vid, pid), ..BoardInfo::example(serial, 1, 2) }
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
        assert_eq!(target(c.resolve(&gadget(Some("0001-BOARD-A"), "1-1.2", 1, 2))), ("buildhost:5640".into(), 16384, "serial"));
        assert_eq!(target(c.resolve(&gadget(Some("other"), "1-1.2", 1, 2))), ("unix:/run/diod-b.sock".into(), 65536, "path"));
        assert_eq!(target(c.resolve(&gadget(None, "1-1.3", 1, 2))), ("127.0.0.1:564".into(), 16384, "defaults"));
    }

    #[test]
    fn a_directory_with_no_server_is_served_by_a_managed_diod_confined_to_it() {
        let c = parse(
            r#"
[[board]]
serial = "A"
export = "/srv/rootfs-a"

[[board]]
serial = "B"
backend = "managed"
export = "/srv/boards/{serial}"
read_only = true

[defaults]
backend = "managed"
export = "/srv/boards/{path}"
"#,
        )
        .expect("parse");
        let target = |serial: &str| match c.resolve(&gadget(Some(serial), "1-4", 1, 2)) {
            Decision::Serve { target, .. } => (target.backend, target.confine.export, target.confine.read_only),
            other => panic!("{other:?}"),
        };
        let managed = |d: &str| BackendAddr::Managed(PathBuf::from(d));
        assert_eq!(target("A"), (managed("/srv/rootfs-a"), Some("/srv/rootfs-a".into()), false));
        assert_eq!(target("B"), (managed("/srv/boards/B"), Some("/srv/boards/B".into()), true), "the template expanded for both");
        assert_eq!(target("C"), (managed("/srv/boards/1-4"), Some("/srv/boards/1-4".into()), false), "defaults");
        assert_eq!(managed("/srv/x").to_string(), "managed:/srv/x");

        let e = parse("[[board]]\nserial = \"A\"\nbackend = \"managed\"\n").expect_err("no export");
        assert!(e.message.contains("needs export"), "{e}");
        let e = parse("[[board]]\nserial = \"A\"\n").expect_err("neither");
        assert!(e.message.contains("export = \"/dir\" alone"), "{e}");
        let (_, warnings) =
            Config::parse_checked("[[board]]\nserial = \"A\"\nexport = \"/home/dev/rootfs\"\n", Path::new("t.toml")).expect("parse");
        assert!(warnings.iter().any(|w| w.message.contains("docs/serve.md")), "{warnings:?}");
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
        let on = |serial: Option<&str>, port: &str, interface: u8| {
            let g = BoardInfo { interface, ..gadget(serial, port, 1, 2) };
            match c.resolve(&g) {
                Decision::Serve { target, why } => format!("{} {why}", target.backend),
                other => format!("{other:?}"),
            }
        };
        assert_eq!(on(Some("A"), "1-1", 3), "h:3 serial");
        assert_eq!(on(Some("A"), "1-1", 0), "h:1 serial");
        assert_eq!(on(Some("B"), "2-1", 1), "p:1 path");
        assert_eq!(on(Some("B"), "2-1", 2), "NoBackend", "the path entry names interface 1 only");
        let (l, _, m) = at(
            "[[board]]\nserial = \"A\"\ninterface = 1\nbackend = \"h:1\"\n[[board]]\nserial = \"A\"\ninterface = 1\nbackend = \"h:2\"\n",
        );
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
    fn test_waits_only_shorten_and_default_to_unset() {
        let c = parse("").expect("empty config");
        assert!(!c.test_waits.is_set());
        let c = parse("[daemon]\ntest_partial_frame_wait = 5\ntest_nudge_every = 2\n").expect("config");
        assert_eq!(c.test_waits.partial_frame_wait, Some(Duration::from_secs(5)));
        assert_eq!(c.test_waits.nudge_every, Some(Duration::from_secs(2)));
        let (l, _, m) = at("[daemon]\ntest_partial_frame_wait = 31\n");
        assert_eq!(l, 2, "{m}");
        assert!(m.contains("must be between 1 and 30"), "{m}");
        let (_, _, m) = at("[daemon]\ntest_nudge_every = 0\n");
        assert!(m.contains("must be between 1 and 15"), "{m}");
    }

    #[test]
    fn errors_carry_line_and_column() {
        let (l, c, m) = at("[defaults]\nbackend = \"127.0.0.1:564\"\nbakend = \"x:1\"\n");
        assert_eq!((l, c), (3, 1), "{m}");
        assert!(m.contains("unknown key `bakend`"), "{m}");

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
        assert_eq!(e.to_string(), "test.toml:4:10: buflen = 1 must be between 512 and 16777216");
        let long = format!("[[board]]\nserial = \"A\"\nbackend = \"unix:/{}\"\n", "s".repeat(120));
        let (l, c, m) = at(&long);
        assert_eq!((l, c), (3, 11), "{m}");
        assert!(m.contains("107"), "{m}");
    }

    #[test]
    fn recover_window_defaults_to_two_minutes_is_inherited_and_may_be_off() {
        let c = parse(
            "[defaults]\nbackend = \"h:1\"\nrecover_window = 30\n\n[[board]]\nserial = \"A\"\nbackend = \"h:2\"\nrecover_window = 0\n\n[[board]]\nserial = \"B\"\nbackend = \"h:3\"\n",
        )
        .expect("parse");
        let window = |serial| match c.resolve(&gadget(Some(serial), "1-9", 1, 2)) {
            Decision::Serve { target, .. } => target.recover_window,
            other => panic!("{other:?}"),
        };
        assert_eq!(window("A"), Duration::ZERO, "off for this board");
        assert_eq!(window("B"), Duration::from_secs(30), "inherited from [defaults]");
        assert_eq!(parse(EXAMPLE).expect("parse").boards[0].target.recover_window, DEFAULT_RECOVER_WINDOW);
        assert_eq!(DEFAULT_RECOVER_WINDOW, Duration::from_secs(120));
        let e = parse("[[board]]\nserial = \"A\"\nbackend = \"h:1\"\nrecover_window = 90000\n").expect_err("range");
        assert_eq!(e.to_string(), "test.toml:4:18: recover_window = 90000 must be between 0 and 86400");
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
        assert_eq!(e.to_string(), "test.toml:2:19: request_timeout = 0 must be between 1 and 86400");
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

    /// Every config the issue found accepted although it cannot work: an
    /// error with its place and what to do, or a warning for what may work
    /// outside the service (a socket under /tmp) or is the shipped example.
    #[test]
    fn configs_that_cannot_work_are_refused_or_flagged() {
        let board = |extra: &str| format!("[[board]]\n{extra}\n");
        for (text, line, col, want) in [
            (board("path = \"usb1/1-1.2\"\nbackend = \"h:1\""), 2, 8, "write path = \"1-1.2\""),
            (board("path = \"1-1.2:1.0\"\nbackend = \"h:1\""), 2, 8, "write path = \"1-1.2\""),
            (board("path = \"port3\"\nbackend = \"h:1\""), 2, 8, "PORT column"),
            ("[daemon]\nallow_ids = []\n".into(), 2, 13, "lets no board in"),
            ("[daemon]\nmax_frame = 8192\n[defaults]\nbuflen = 16384\n".into(), 4, 10, "raise [daemon] max_frame to at least 16384"),
            (
                "[daemon]\nmax_frame = 8192\n".to_string() + &board("serial = \"A\"\nbackend = \"h:1\"\nbuflen = 65536"),
                6,
                10,
                "larger than max_frame",
            ),
            (board("serial = \"\"\nbackend = \"h:1\""), 2, 10, "matches no board"),
            (board("serial = \"A\"\nbackend = \"bad host name:564\""), 3, 11, "\"bad host name\" is not a host name"),
            (board("serial = \"A\"\nbackend = \"host:99999\""), 3, 11, "port 99999 must be between 1 and 65535"),
            (board("serial = \"A\"\nbackend = \"host:x\""), 3, 11, "is not a number"),
            (board("serial = \"A\"\nbackend = \"[nope]:1\""), 3, 11, "not an IPv6 address"),
            (board("serial = \"A\""), 1, 1, "has no backend"),
        ] {
            let (l, c, m) = at(&text);
            assert_eq!((l, c), (line, col), "{text}: {m}");
            assert!(m.contains(want), "{text}: {m}");
        }
        for good in ["h:1", "build-host.example.org:564", "10.0.0.1:5640", "[::1]:564", "unix:/run/diod.sock", "my_host:1"] {
            parse(&board(&format!("serial = \"A\"\nbackend = {good:?}"))).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        let warned = |text: &str| Config::parse_checked(text, Path::new("t.toml")).expect("valid").1;
        let w = warned(&board("serial = \"CHANGE-ME-0001\"\nbackend = \"h:1\""));
        assert_eq!(w.len(), 1);
        assert_eq!((w[0].line, w[0].column), (2, 10));
        assert!(w[0].message.contains("shipped placeholder"), "{}", w[0]);
        for hidden in ["/tmp/diod.sock", "/home/me/d.sock", "/var/tmp/d", "/root/d", "/run/user/1000/d"] {
            let w = warned(&format!("[defaults]\nbackend = \"unix:{hidden}\"\n"));
            assert_eq!(w.len(), 1, "{hidden}");
            assert!(w[0].message.contains("cannot see") && w[0].line == 2, "{}", w[0]);
        }
        assert!(warned("[defaults]\nbackend = \"unix:/run/diod.sock\"\n").is_empty());
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let (_, w) = Config::load_checked(&shipped).expect("example");
        assert!(w.iter().any(|w| w.message.contains("placeholder")), "the shipped file is flagged until edited: {w:?}");
    }

    /// serde's words name Rust types; the user wrote TOML.
    #[test]
    fn type_errors_speak_toml_not_rust() {
        for (text, want) in [
            ("[defaults]\nbuflen = -1\n", "buflen = -1 must be between 512 and 16777216"),
            ("[[board]]\nserial = \"A\"\nbackend = \"h:1\"\ninterface = 300\n", "interface = 300 must be between 0 and 255"),
            ("[defaults]\nuid = -1\n", "uid = -1 must be between 0 and"),
            ("[board]\nserial = \"A\"\nbackend = \"h:1\"\n", "must be written [[board]] (two brackets)"),
            ("[[daemon]]\nmax_frame = 8192\n", "[daemon] is a single table"),
            ("[defaults]\nbuflen = \"big\"\n", "buflen must be a whole number (without quotes)"),
            ("[defaults]\nread_only = \"yes\"\n", "read_only must be true or false"),
            ("[defaults]\nbackend = 564\n", "backend must be a string"),
            ("[daemon]\nallow_ids = \"1d6b:0109\"\n", "allow_ids must be an array"),
            ("[[board]]\nserial = 7\nbackend = \"h:1\"\n", "serial must be a string"),
        ] {
            let e = parse(text).expect_err(text);
            let m = e.to_string();
            assert!(m.contains(want), "{text}: {m}");
            for rust in ["u8", "u32", "i64", "u64", "sequence", "struct", "Schema", "map"] {
                assert!(!m.split(|c: char| !c.is_alphanumeric()).any(|w| w == rust), "{text}: a Rust word {rust:?} in {m}");
            }
        }
    }

    #[test]
    fn missing_file_says_what_to_do() {
        let e = Config::load(Path::new("/nonexistent/usb9pfsd.toml")).expect_err("missing");
        assert!(e.to_string().contains("config.example.toml"), "{e}");
        // Not an option some subcommands lack (check-config takes a path).
        assert!(!e.to_string().contains("--config"), "{e}");
    }

    #[test]
    fn shipped_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        Config::load(&path).expect("config.example.toml must parse");
    }
}
