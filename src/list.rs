//! The usb9pfs interfaces present now, each resolved against a config: what
//! `usb9pfsd list` shows (JSON for scripts, a table for people) and which
//! gadget `usb9pfsd forward` may serve.
//!
//! The caller scans sysfs; this module must never open a device or read
//! sysfs itself.

use serde::Serialize;

use crate::board::{BoardIdentity, BoardInfo};
use crate::config::{Config, Decision};
use crate::daemon::status::ConfineStatus;
use crate::table::{Align, Table};

/// One interface as `list --json` shows it. The field names are an
/// interface (usb9pfsd(8)): the board identity, then what the device says
/// about itself, then what the config does with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub board: BoardIdentity,
    pub manufacturer: Option<String>,
    pub product: Option<String>,
    /// The alternate setting that carries the usb9pfs endpoints.
    pub alt: u8,
    /// The server the config maps it to (null: not served).
    pub backend: Option<String>,
    /// Which part of the config decided (`serial`, `path`, `defaults`, ...).
    pub matched_by: Option<&'static str>,
    /// What the board's entry confines it to (null: nothing).
    pub confine: Option<ConfineStatus>,
    /// Why the config refuses to serve it (an export template it cannot
    /// expand safely for this board).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Each present interface with what `config` does with it, in the order
/// given.
pub fn rows(config: &Config, gadgets: &[BoardInfo]) -> Vec<Listed> {
    gadgets
        .iter()
        .map(|g| {
            let mut row = Listed {
                board: g.identity(),
                manufacturer: g.manufacturer.clone(),
                product: g.product.clone(),
                alt: g.alt,
                backend: None,
                matched_by: None,
                confine: None,
                refused: None,
            };
            match config.resolve(g) {
                Decision::Serve { target, why } => {
                    row.backend = Some(target.backend.to_string());
                    row.matched_by = Some(why);
                    row.confine = ConfineStatus::of(&target.confine);
                }
                Decision::Refused { why } => row.refused = Some(why),
                Decision::NoBackend | Decision::NotAllowed => {}
            }
            row
        })
        .collect()
}

/// The table for people.
pub fn table(rows: &[Listed]) -> String {
    if rows.is_empty() {
        return "no usb9pfs gadgets present\n".into();
    }
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
    let mut t = Table::new(&[
        ("SERIAL", Align::Left),
        ("BUSADDR", Align::Left),
        ("INTERFACE", Align::Right),
        ("PORT", Align::Left),
        ("ID", Align::Left),
        ("MANUFACTURER", Align::Left),
        ("PRODUCT", Align::Left),
        ("BACKEND", Align::Left),
    ]);
    for r in rows {
        let backend = match (&r.backend, r.matched_by, &r.confine) {
            (Some(b), Some(why), Some(c)) => format!("{b} (by {why}; confined: {c})"),
            (Some(b), Some(why), None) => format!("{b} (by {why})"),
            _ => match &r.refused {
                Some(why) => format!("- (not served: {why})"),
                None => "- (not served)".into(),
            },
        };
        let b = &r.board;
        t.row(vec![
            dash(&b.serial),
            b.busaddr.clone(),
            b.interface.to_string(),
            b.port_path.clone(),
            b.id.clone(),
            dash(&r.manufacturer),
            dash(&r.product),
            backend,
        ]);
    }
    t.render()
}

/// `forward` serves one gadget (every usb9pfs interface of it) and refuses
/// to guess among several that `config` would serve. Ok(true): one is
/// present; Ok(false): none yet (the daemon waits for it).
pub fn single_gadget(config: &Config, gadgets: &[BoardInfo]) -> Result<bool, String> {
    let mut matching: Vec<&BoardInfo> = gadgets.iter().filter(|g| matches!(config.resolve(g), Decision::Serve { .. })).collect();
    matching.sort_by_key(|g| g.busaddr);
    matching.dedup_by_key(|g| g.busaddr);
    match matching.as_slice() {
        [] => Ok(false),
        [_] => Ok(true),
        many => {
            let which: Vec<String> = many.iter().map(|g| format!("{} {} ({})", g.port_path, g.id, g.serial_or_none())).collect();
            Err(format!("{} usb9pfs gadgets match; pick one with --path or --serial: {}", many.len(), which.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text, std::path::Path::new("test.toml")).expect("config")
    }

    fn gadget(serial: &str, bus: u8, addr: u8, interface: u8) -> BoardInfo {
        BoardInfo { interface, port_path: format!("{bus}-1"), ..BoardInfo::example(Some(serial), bus, addr) }
    }

    #[test]
    fn each_interface_is_listed_with_the_identity_every_json_output_shares() {
        let c = config("[[board]]\nserial = \"A\"\nbackend = \"127.0.0.1:5640\"\nexport = \"/srv/a\"\n");
        let rows = rows(&c, &[gadget("A", 1, 4, 2), gadget("B", 3, 17, 0)]);
        let json = serde_json::to_value(&rows).expect("json");
        assert_eq!(
            json,
            serde_json::json!([
                {
                    "serial": "A", "busaddr": "001-004", "interface": 2, "port_path": "1-1", "id": "1d6b:0109",
                    "manufacturer": null, "product": null, "alt": 0,
                    "backend": "127.0.0.1:5640", "matched_by": "serial",
                    "confine": {"export": "/srv/a", "read_only": false, "uid": null, "gid": null}
                },
                {
                    "serial": "B", "busaddr": "003-017", "interface": 0, "port_path": "3-1", "id": "1d6b:0109",
                    "manufacturer": null, "product": null, "alt": 0,
                    "backend": null, "matched_by": null, "confine": null
                }
            ])
        );
    }

    #[test]
    fn the_table_says_how_each_board_is_served_or_why_not() {
        let c = config("[[board]]\nserial = \"A\"\nbackend = \"127.0.0.1:5640\"\n");
        let t = table(&rows(&c, &[gadget("A", 1, 4, 2), gadget("B", 3, 17, 0)]));
        let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines[0], ["SERIAL", "BUSADDR", "INTERFACE", "PORT", "ID", "MANUFACTURER", "PRODUCT", "BACKEND"]);
        assert_eq!(lines[1], ["A", "001-004", "2", "1-1", "1d6b:0109", "-", "-", "127.0.0.1:5640", "(by", "serial)"]);
        assert_eq!(lines[2], ["B", "003-017", "0", "3-1", "1d6b:0109", "-", "-", "-", "(not", "served)"]);
        assert_eq!(lines.len(), 3);
        assert_eq!(table(&[]), "no usb9pfs gadgets present\n");
    }

    #[test]
    fn forward_serves_one_gadget_with_all_its_interfaces_and_refuses_to_guess() {
        let c = config("[defaults]\nbackend = \"127.0.0.1:564\"\n");
        assert_eq!(single_gadget(&c, &[]), Ok(false), "none yet: wait for it");
        let two_functions = [gadget("A", 1, 4, 0), gadget("A", 1, 4, 1)];
        assert_eq!(single_gadget(&c, &two_functions), Ok(true), "one gadget with two usb9pfs interfaces");
        let err = single_gadget(&c, &[gadget("A", 1, 4, 0), gadget("B", 2, 5, 0), gadget("A", 1, 4, 1)]).expect_err("two gadgets");
        assert!(err.starts_with("2 usb9pfs gadgets match; pick one with --path or --serial: 1-1 1d6b:0109 (A), 2-1"), "{err}");
        let only_a = config("[[board]]\nserial = \"A\"\nbackend = \"127.0.0.1:564\"\n");
        assert_eq!(single_gadget(&only_a, &[gadget("A", 1, 4, 0), gadget("B", 2, 5, 0)]), Ok(true), "B is not served");
    }
}
