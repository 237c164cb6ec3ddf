//! What a config reload means for each board present: a pure function from
//! the config in force, the new config and the boards the supervisor knows to
//! one [`Action`] per board. The supervisor applies the actions; this module
//! only decides.
//!
//! The rule it encodes: never drop a board's session on the daemon's account.
//! A board whose mapping did not change is not touched at all; a changed
//! backend waits for the board's next Tversion (a live 9P session cannot move
//! servers); a board that is no longer served is let go only when idle.
//!
//! It must never do I/O, look at workers or keep state between reloads.

use crate::board::BoardInfo;
use crate::config::{Config, Decision, Target};

/// What a reload does to one board.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Same target as before, or unserved before and after: leave it alone.
    Keep,
    /// Served before and after, by a different target. The new backend takes
    /// effect at the board's next Tversion; a new `buflen` at its next worker.
    SwapBackend(Target),
    /// Served now, not before: start a worker.
    Start(Target),
    /// Served before, not now: stop its worker at the next message boundary
    /// and leave the board alone from then on. Carries the new config's word.
    Release(Decision),
}

/// One action per board, in the order `boards` gives them.
pub fn plan<'a, K, I>(old: &Config, new: &Config, boards: I) -> Vec<(K, Action)>
where
    I: IntoIterator<Item = (K, &'a BoardInfo)>,
{
    boards
        .into_iter()
        .map(|(key, g)| {
            let action = match (old.resolve(g), new.resolve(g)) {
                (Decision::Serve { target: was, .. }, Decision::Serve { target, .. }) if was == target => Action::Keep,
                (Decision::Serve { .. }, Decision::Serve { target, .. }) => Action::SwapBackend(target),
                (_, Decision::Serve { target, .. }) => Action::Start(target),
                (Decision::Serve { .. }, unserved) => Action::Release(unserved),
                (_, _) => Action::Keep,
            };
            (key, action)
        })
        .collect()
}

/// How many boards each kind of action touched, for logs and `usb9pfsd reload`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub kept: usize,
    pub swapped: usize,
    pub started: usize,
    pub released: usize,
}

impl Summary {
    pub fn of<K>(actions: &[(K, Action)]) -> Summary {
        let mut s = Summary::default();
        for (_, a) in actions {
            match a {
                Action::Keep => s.kept += 1,
                Action::SwapBackend(_) => s.swapped += 1,
                Action::Start(_) => s.started += 1,
                Action::Release(_) => s.released += 1,
            }
        }
        s
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} board(s) unchanged, {} change backend at their next mount, {} started, {} released once idle",
            self.kept, self.swapped, self.started, self.released
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::usb_id;
    use std::path::Path;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml")).expect("config")
    }

    fn gadget(serial: &str, port: &str, vid: u16) -> BoardInfo {
        BoardInfo { port_path: port.into(), vid, id: usb_id(vid, 0x0109), ..BoardInfo::example(Some(serial), 1, 2) }
    }

    fn target(backend: &str, buflen: u32) -> Target {
        Target {
            backend: backend.parse().expect("addr"),
            buflen,
            request_timeout: None,
            recover_window: crate::config::DEFAULT_RECOVER_WINDOW,
            confine: Default::default(),
        }
    }

    const OLD: &str = r#"
[[board]]
serial = "same"
backend = "h:1"
[[board]]
serial = "moved"
backend = "h:2"
[[board]]
serial = "resized"
backend = "h:3"
[[board]]
serial = "dropped"
backend = "h:4"
[[board]]
path = "1-9"
backend = "h:9"
"#;

    const NEW: &str = r#"
[daemon]
allow_ids = ["1d6b:0109"]
[[board]]
serial = "same"
backend = "h:1"
[[board]]
serial = "moved"
backend = "h:22"
[[board]]
serial = "resized"
backend = "h:3"
buflen = 65536
[[board]]
serial = "added"
backend = "h:5"
[[board]]
path = "1-9"
backend = "h:9"
"#;

    /// Every transition, one row each: (board, expected action).
    #[test]
    fn each_board_gets_the_action_its_mapping_change_calls_for() {
        let rows = [
            (gadget("same", "1-1", 0x1d6b), Action::Keep),
            (gadget("moved", "1-1", 0x1d6b), Action::SwapBackend(target("h:22", 16384))),
            (gadget("resized", "1-1", 0x1d6b), Action::SwapBackend(target("h:3", 65536))),
            (gadget("dropped", "1-1", 0x1d6b), Action::Release(Decision::NoBackend)),
            (gadget("added", "1-1", 0x1d6b), Action::Start(target("h:5", 16384))),
            (gadget("stranger", "1-1", 0x1d6b), Action::Keep),
            // Matched by path before and after; serial unknown to both.
            (gadget("by-port", "1-9", 0x1d6b), Action::Keep),
            // Served by serial before; now outside allow_ids.
            (gadget("same", "1-1", 0x0525), Action::Release(Decision::NotAllowed)),
        ];
        let (old, new) = (config(OLD), config(NEW));
        let got = plan(&old, &new, rows.iter().enumerate().map(|(i, (g, _))| (i, g)));
        let want: Vec<(usize, Action)> = rows.iter().cloned().map(|(_, a)| a).enumerate().collect();
        assert_eq!(got, want);
        assert_eq!(Summary::of(&got), Summary { kept: 3, swapped: 2, started: 1, released: 2 });
    }

    #[test]
    fn the_same_config_keeps_everything() {
        let c = config(OLD);
        let boards = [gadget("same", "1-1", 1), gadget("x", "1-9", 1), gadget("y", "2-1", 1)];
        let got = plan(&c, &c.clone(), boards.iter().map(|g| ((), g)));
        assert!(got.iter().all(|(_, a)| *a == Action::Keep), "{got:?}");
    }

    #[test]
    fn defaults_appearing_and_going_start_and_release() {
        let none = Config::empty();
        let defaults = config("[defaults]\nbackend = \"h:1\"\n");
        let g = gadget("anyone", "1-1", 1);
        assert_eq!(plan(&none, &defaults, [((), &g)])[0].1, Action::Start(target("h:1", 16384)));
        assert_eq!(plan(&defaults, &none, [((), &g)])[0].1, Action::Release(Decision::NoBackend));
        // An entry that names the same server as the defaults did: no change.
        let listed = config("[[board]]\nserial = \"anyone\"\nbackend = \"h:1\"\n");
        assert_eq!(plan(&defaults, &listed, [((), &g)])[0].1, Action::Keep);
    }
}
