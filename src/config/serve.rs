//! Runtime mappings: what `usb9pfsd serve BOARD ...` sets for one board over
//! the config file, until `usb9pfsd unserve BOARD` or the daemon stops. A
//! serve beats every `[[board]]` entry and `[defaults]` (not `allow_ids`),
//! survives a reload (the supervisor carries the list into each new config)
//! and a hand-over (it travels in the hand-over state), and like a reload
//! takes effect at the board's next mount: a live session is never cut.
//!
//! BOARD is a serial, a USB port path (`1-1.2`), a port path and
//! interface (`1-1.2#1`) or a bus-address and interface (`001-004#0`); `serial:X` and `path:X` say which when a serial
//! looks like a port path.
//!
//! This module is data and matching only: it must never touch boards,
//! sockets or files, nor decide who may serve (the control socket does).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{check_export, check_port_path, check_serial, Target, DEFAULT_BUFLEN, DEFAULT_RECOVER_WINDOW};
use crate::board::{BoardInfo, BoardKey, BusAddr};
use crate::ninep::backend::BackendAddr;
use crate::ninep::confine::Policy;

/// Which board a serve is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum BoardSel {
    Serial(String),
    Path(String),
    /// One usb9pfs interface of the gadget on a port (`1-1.2#1`): survives
    /// re-enumeration, unlike a bus address.
    PathInterface(String, u8),
    At(BoardKey),
}

impl BoardSel {
    pub fn matches(&self, g: &BoardInfo) -> bool {
        match self {
            BoardSel::Serial(s) => g.serial.as_deref() == Some(s.as_str()),
            BoardSel::Path(p) => &g.port_path == p,
            BoardSel::PathInterface(p, i) => &g.port_path == p && g.interface == *i,
            BoardSel::At(k) => g.key() == *k,
        }
    }
}

impl fmt::Display for BoardSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Written back in a form that parses to the same selection.
            BoardSel::Serial(s) if looks_like_path_or_at(s) => write!(f, "serial:{s}"),
            BoardSel::Serial(s) => f.write_str(s),
            BoardSel::Path(p) => f.write_str(p),
            BoardSel::PathInterface(p, i) => write!(f, "{p}#{i}"),
            BoardSel::At(k) => write!(f, "{k}"),
        }
    }
}

fn looks_like_path_or_at(s: &str) -> bool {
    check_port_path(s).is_ok() || parse_at(s).is_some() || s.starts_with("serial:") || s.starts_with("path:")
}

/// `BBB-DDD#N`, as status and the journal write a board.
fn parse_at(s: &str) -> Option<BoardKey> {
    let (busaddr, interface) = s.split_once('#')?;
    let (bus, addr) = busaddr.split_once('-')?;
    let all_digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(bus) || !all_digits(addr) || !all_digits(interface) {
        return None;
    }
    Some(BoardKey { busaddr: BusAddr { bus: bus.parse().ok()?, addr: addr.parse().ok()? }, interface: interface.parse().ok()? })
}

impl FromStr for BoardSel {
    type Err = String;

    fn from_str(s: &str) -> Result<BoardSel, String> {
        if let Some(serial) = s.strip_prefix("serial:") {
            check_serial(serial).map_err(|m| format!("board {s:?}: {m}"))?;
            return Ok(BoardSel::Serial(serial.to_string()));
        }
        if let Some(path) = s.strip_prefix("path:") {
            check_port_path(path).map_err(|m| format!("board {s:?}: {m}"))?;
            return Ok(BoardSel::Path(path.to_string()));
        }
        if let Some((path, interface)) = s.split_once('#') {
            // BUS-ADDRESS#N has exactly one '-' and no '.'; a port path has
            // at least one '-' and a '.' past the root hub's port, or
            // bus-port alone (1-1), which BUS-ADDRESS also is: as status
            // writes it, a bus address has three digits on each side.
            let bus_address = path.split_once('-').is_some_and(|(b, a)| b.len() == 3 && a.len() == 3);
            if !bus_address && check_port_path(path).is_ok() {
                if let Ok(i) = interface.parse::<u8>() {
                    return Ok(BoardSel::PathInterface(path.to_string(), i));
                }
            }
        }
        if let Some(k) = parse_at(s) {
            return Ok(BoardSel::At(k));
        }
        if s.contains('#') {
            return Err(format!(
                "board {s:?} is not BUS-ADDRESS#INTERFACE like 001-004#0 (see `usb9pfsd status`) nor PORT-PATH#INTERFACE like 1-1.2#0"
            ));
        }
        if check_port_path(s).is_ok() {
            return Ok(BoardSel::Path(s.to_string()));
        }
        check_serial(s)
            .map_err(|m| format!("board {s:?}: {m}; a board is its serial, its port path (1-1.2) or BUS-ADDRESS#INTERFACE (001-004#0)"))?;
        Ok(BoardSel::Serial(s.to_string()))
    }
}

impl TryFrom<String> for BoardSel {
    type Error = String;
    fn try_from(s: String) -> Result<BoardSel, String> {
        s.parse()
    }
}

impl From<BoardSel> for String {
    fn from(b: BoardSel) -> String {
        b.to_string()
    }
}

/// What a serve asks for: a server, a directory, or both (a directory on
/// that server the board is confined to); read-only and squashed ids.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServeSpec {
    /// The server; none: a managed diod exporting `export`.
    #[serde(default)]
    pub backend: Option<BackendAddr>,
    /// What the board is confined to (and a managed diod exports).
    #[serde(default)]
    pub export: Option<String>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub gid: Option<u32>,
}

impl ServeSpec {
    /// Refuses what cannot work, in the CLI's words.
    pub fn check(&self) -> Result<(), String> {
        if let Some(e) = &self.export {
            check_export(e).map_err(|m| format!("--export {e:?}: {m}"))?;
            if e.contains('{') {
                return Err(format!("--export {e:?}: a serve names one directory; placeholders are for the config file"));
            }
        }
        match (&self.backend, &self.export) {
            (None, None) => {
                Err("serve needs --backend ADDR (a 9P server), --export DIR (a directory usb9pfsd serves with its own diod), or both"
                    .into())
            }
            (Some(BackendAddr::Managed(_)), None) => Err("--backend managed needs --export DIR".into()),
            _ if self.uid == Some(u32::MAX) || self.gid == Some(u32::MAX) => {
                Err("--uid/--gid 4294967295 is 9P's \"no user\": pick a real id".into())
            }
            _ => Ok(()),
        }
    }

    /// The target for a board: this spec's server and confinement, the rest
    /// (buflen, timeouts) from what the config would give the board.
    pub fn target(&self, base: Option<&Target>) -> Target {
        let confine = Policy { export: self.export.clone(), read_only: self.read_only, uid: self.uid, gid: self.gid };
        let backend = match (&self.backend, &self.export) {
            (Some(BackendAddr::Managed(_)) | None, Some(e)) => BackendAddr::Managed(e.into()),
            (Some(b), _) => b.clone(),
            // Refused by `check`; served as a managed export of nothing,
            // which fails at the board's mount with the reason.
            (None, None) => BackendAddr::Managed(Default::default()),
        };
        match base {
            Some(t) => Target { backend, confine, ..t.clone() },
            None => Target { backend, confine, buflen: DEFAULT_BUFLEN, request_timeout: None, recover_window: DEFAULT_RECOVER_WINDOW },
        }
    }
}

impl fmt::Display for ServeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.backend, &self.export) {
            (Some(b), Some(e)) if !matches!(b, BackendAddr::Managed(_)) => write!(f, "{e} on {b}")?,
            (Some(b), None) => write!(f, "{b}")?,
            (_, Some(e)) => write!(f, "{e} (managed diod)")?,
            (None, None) => f.write_str("nothing")?,
        }
        if self.read_only {
            f.write_str(", read-only")?;
        }
        if let Some(u) = self.uid {
            write!(f, ", uid {u}")?;
        }
        if let Some(g) = self.gid {
            write!(f, ", gid {g}")?;
        }
        Ok(())
    }
}

/// One runtime mapping, with who set it and when (status shows both).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Serve {
    pub board: BoardSel,
    #[serde(flatten)]
    pub spec: ServeSpec,
    /// The uid of the `usb9pfsd serve` caller (SO_PEERCRED).
    pub by_uid: u32,
    /// When, RFC 3339.
    pub since: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_board_is_named_by_serial_port_path_or_bus_address_and_interface() {
        let g = BoardInfo { port_path: "1-1.2".into(), ..BoardInfo::example(Some("0001-A"), 3, 7) };
        for (text, sel) in [
            ("0001-A", BoardSel::Serial("0001-A".into())),
            ("1-1.2", BoardSel::Path("1-1.2".into())),
            ("003-007#0", BoardSel::At(g.key())),
            ("1-1.2#0", BoardSel::PathInterface("1-1.2".into(), 0)),
            ("serial:1-1.2", BoardSel::Serial("1-1.2".into())),
            ("path:1-1.2", BoardSel::Path("1-1.2".into())),
        ] {
            assert_eq!(text.parse::<BoardSel>(), Ok(sel.clone()), "{text}");
            assert_eq!(sel.to_string().parse::<BoardSel>(), Ok(sel.clone()), "{sel} round-trips");
        }
        assert!("0001-A".parse::<BoardSel>().expect("serial").matches(&g));
        assert!("1-1.2".parse::<BoardSel>().expect("path").matches(&g));
        assert!("003-007#0".parse::<BoardSel>().expect("at").matches(&g));
        assert!(!"003-007#1".parse::<BoardSel>().expect("at").matches(&g), "another interface");
        assert!("1-1.2#0".parse::<BoardSel>().expect("path#if").matches(&g));
        assert!(!"1-1.2#1".parse::<BoardSel>().expect("path#if").matches(&g), "another interface");
        assert!(!"serial:1-1.2".parse::<BoardSel>().expect("serial").matches(&g));
        for bad in ["", "003-007#x", "a#b", "003-007#300", "1-1.2#x"] {
            assert!(bad.parse::<BoardSel>().is_err(), "{bad:?} refused");
        }
    }

    #[test]
    fn a_spec_needs_a_server_or_a_directory_and_a_directory_alone_is_a_managed_diod() {
        assert!(ServeSpec::default().check().is_err());
        let dir = ServeSpec { export: Some("/srv/rootfs".into()), ..ServeSpec::default() };
        dir.check().expect("a directory alone");
        let t = dir.target(None);
        assert_eq!(t.backend, BackendAddr::Managed("/srv/rootfs".into()));
        assert_eq!(t.confine.export.as_deref(), Some("/srv/rootfs"));
        let remote = ServeSpec { backend: Some("10.0.0.2:564".parse().expect("addr")), read_only: true, ..ServeSpec::default() };
        remote.check().expect("a server alone");
        assert_eq!(remote.target(None).backend.to_string(), "10.0.0.2:564");
        assert!(remote.target(None).confine.read_only);
        for bad in ["relative", "/a/../b", "/srv/{serial}"] {
            assert!(ServeSpec { export: Some(bad.into()), ..ServeSpec::default() }.check().is_err(), "{bad}");
        }
    }
}
