//! Applying a config reload to the supervisor's boards: the plan comes from
//! [`crate::daemon::reload::plan`]; this file carries out each [`Action`] on the one
//! copy of per-board state, and lets go of released boards once their worker
//! has stopped.
//!
//! It must never drop a board's live session: a kept board is not touched, a
//! changed backend waits for the board's next Tversion, and a released board
//! is stopped at a message boundary through its worker's [`StopSwitch`],
//! never by breaking its server connection.
//!
//! [`StopSwitch`]: crate::usb::pipe::StopSwitch

use std::sync::Arc;
use std::time::SystemTime;

use super::{Slot, Spawn, Supervisor};
use crate::board::{BoardInfo, BoardKey};
use crate::config::serve::{BoardSel, Serve};
use crate::config::{Config, ConfigError, Decision, Target};
use crate::daemon::reload::{self, Action, Summary};
use crate::daemon::status::Stamped;
use crate::ninep::board_backend::BoardBackend;
use crate::worker::End;

/// The key of the supervisor's board map: one usb9pfs interface.
type Key = BoardKey;

/// What a `serve` or `unserve` did: the boards it touched, by action, and
/// the boards present now that it names.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServeAnswer {
    pub summary: Summary,
    pub boards: Vec<String>,
}

impl<S: Spawn> Supervisor<S> {
    /// Takes a re-read config into force, or keeps the old one when `new` is
    /// an error (which `status` then shows until a good reload).
    pub(super) fn reload(&mut self, new: Result<Config, ConfigError>) -> Result<Summary, String> {
        if self.hand_over_pending {
            // Every board is being stopped for a successor, which reads the
            // config file itself as it starts; changing mappings now could
            // leave a board neither handed over nor served.
            return Err("a hand-over to a new usb9pfsd process is under way: nothing was reloaded (the new process reads the \
                        config file as it starts; if the hand-over is called off, reload again)"
                .into());
        }
        if self.ready {
            self.notify.reloading();
        }
        let result = match new {
            Err(e) => {
                tracing::error!("config reload failed, the old config stays in force: {e}");
                self.last_reload_error = Some(Stamped { message: e.to_string(), at: SystemTime::now() });
                Err(format!("{e}; the old config stays in force"))
            }
            Ok(mut new) => {
                // `usb9pfsd serve`'s mappings stay over any file.
                new.serves = self.config.serves.clone();
                if new.max_frame != self.config.max_frame {
                    tracing::info!("max_frame {} applies to workers started from now on", new.max_frame);
                }
                if new.control_socket != self.config.control_socket {
                    tracing::warn!("[daemon] control_socket changed: the daemon keeps its socket until it restarts");
                }
                if new.test_waits != self.config.test_waits {
                    tracing::warn!("[daemon] test_partial_frame_wait / test_nudge_every changed: they apply from the next start only");
                }
                let summary = self.take(new);
                self.config_loaded_at = SystemTime::now();
                self.last_reload_error = None;
                tracing::info!("config reloaded: {summary}");
                Ok(summary)
            }
        };
        if self.ready {
            let served = self.served();
            self.notify.ready(served);
        }
        self.report_status();
        result
    }

    /// Puts `new` in force, each board as the plan says; what it did.
    fn take(&mut self, new: Config) -> Summary {
        let actions = reload::plan(&self.config, &new, self.boards.iter().map(|(at, b)| (*at, &b.info)));
        self.config = new;
        let summary = Summary::of(&actions);
        for (at, action) in actions {
            self.apply(at, action);
        }
        summary
    }

    /// `usb9pfsd serve`: `s` replaces any serve for the same board and
    /// applies like a reload (a live session keeps its server and
    /// confinement until the board mounts again).
    pub(super) fn serve(&mut self, s: Serve) -> Result<ServeAnswer, String> {
        s.spec.check()?;
        let board = s.board.clone();
        self.change_serves(&board, |serves| {
            serves.retain(|x| x.board != s.board);
            tracing::info!(board = %s.board, by_uid = s.by_uid, "usb9pfsd serve: {} serves {}, from the board's next mount", s.board, s.spec);
            serves.push(s.clone());
            Ok(())
        })
    }

    /// `usb9pfsd unserve`: the config file decides for the board again.
    pub(super) fn unserve(&mut self, board: &BoardSel) -> Result<ServeAnswer, String> {
        self.change_serves(board, |serves| {
            let before = serves.len();
            serves.retain(|x| &x.board != board);
            if serves.len() == before {
                let set: Vec<String> = serves.iter().map(|x| x.board.to_string()).collect();
                return Err(format!(
                    "no serve is set for {board} (set now: {})",
                    if set.is_empty() { "none".into() } else { set.join(", ") }
                ));
            }
            tracing::info!(board = %board, "usb9pfsd unserve: the config decides for {board} again, from the board's next mount");
            Ok(())
        })
    }

    fn change_serves(
        &mut self,
        board: &BoardSel,
        change: impl FnOnce(&mut Vec<Serve>) -> Result<(), String>,
    ) -> Result<ServeAnswer, String> {
        if self.hand_over_pending {
            return Err("a hand-over to a new usb9pfsd process is under way: nothing was changed; try again when it is done".into());
        }
        let mut new = self.config.clone();
        change(&mut new.serves)?;
        let summary = self.take(new);
        let served = self.served();
        self.notify.status(served, self.boards.len());
        self.report_status();
        let boards = self
            .boards
            .iter()
            .filter(|(_, b)| board.matches(&b.info))
            .map(|(at, b)| format!("{} at {at}", b.info.serial_or_none()))
            .collect();
        Ok(ServeAnswer { summary, boards })
    }

    fn apply(&mut self, at: Key, action: Action) {
        match action {
            Action::Keep => self.refresh_reason(at),
            Action::SwapBackend(target) => self.swap(at, target),
            Action::Start(target) => self.start_mapped(at, target),
            Action::Release(decision) => self.release(at, decision),
        }
    }

    /// Served before and after, elsewhere: the board's live session stays on
    /// the old server; its next Tversion connects to the new one.
    fn swap(&mut self, at: Key, target: Target) {
        let Some(b) = self.boards.get_mut(&at) else {
            return;
        };
        let Some(old) = b.target.replace(target.clone()) else {
            return;
        };
        let serial = b.info.serial_or_none().to_string();
        if let Some(be) = &b.backend {
            be.swap_for_next_session(target.backend.clone());
            be.set_policy(&target.confine);
        }
        if old.confine != target.confine {
            tracing::info!(
                serial = %serial, busaddr = %at,
                "confinement changes to {:?} at the board's next mount; a live session keeps what it began with", target.confine
            );
        }
        if old.backend != target.backend {
            tracing::info!(
                serial = %serial, busaddr = %at,
                "backend changes from {} to {} at the board's next mount; a live session stays on {}",
                old.backend, target.backend, old.backend
            );
        }
        if old.buflen != target.buflen {
            tracing::info!(serial = %serial, busaddr = %at, "buflen {} applies from the board's next worker (replug or reset)", target.buflen);
        }
    }

    /// Newly mapped: start a worker. A board whose release is still under
    /// way keeps its worker; when that stops, a fresh one starts.
    fn start_mapped(&mut self, at: Key, target: Target) {
        let Some(b) = self.boards.get_mut(&at) else {
            return;
        };
        tracing::info!(
            serial = %b.info.serial_or_none(), busaddr = %at, port = %b.info.port_path,
            backend = %target.backend, "board now mapped (config reload)"
        );
        b.releasing = None;
        match &b.backend {
            Some(be) => be.swap_for_next_session(target.backend.clone()),
            None => b.backend = Some(Arc::new(BoardBackend::new(target.backend.clone()))),
        }
        if let Some(be) = &b.backend {
            be.set_policy(&target.confine);
        }
        b.target = Some(target);
        if matches!(b.slot, Slot::Ignored(_)) {
            b.failures = 0;
            self.start(at);
        }
    }

    /// No longer mapped. A waiting board is let go now; a running one is
    /// asked to stop at its next message boundary (after the reply to a
    /// request in flight), and let go when its worker reports the end.
    fn release(&mut self, at: Key, decision: Decision) {
        let Some(b) = self.boards.get_mut(&at) else {
            return;
        };
        let reason = unserved_reason(&decision, &b.info);
        b.target = None;
        match b.slot {
            Slot::Running => {
                tracing::info!(
                    serial = %b.info.serial_or_none(), busaddr = %at,
                    "no longer mapped (config reload: {reason}); releasing the board once it is idle"
                );
                b.releasing = Some(reason);
                b.stop.request();
            }
            // Its session belongs to a successor now; the successor's config
            // decides.
            Slot::HandedOver => {}
            Slot::Waiting(_) | Slot::Ignored(_) | Slot::Deferred(_) => {
                tracing::info!(serial = %b.info.serial_or_none(), busaddr = %at, "no longer mapped (config reload: {reason}); released");
                if let Some(be) = b.backend.take() {
                    be.stop();
                }
                b.slot = Slot::Ignored(reason);
            }
        }
    }

    /// Unserved before and after: the reason may have changed (a board with
    /// no backend that is now also outside allow_ids, say).
    fn refresh_reason(&mut self, at: Key) {
        let Some(b) = self.boards.get_mut(&at) else {
            return;
        };
        if let Slot::Ignored(reason) = &mut b.slot {
            *reason = unserved_reason(&self.config.resolve(&b.info), &b.info);
        }
    }

    /// A worker ended on a board a reload touched. Returns true when that
    /// is all there is to it: the board is released (no longer mapped), or
    /// its worker was stopped and a fresh one started at once. Otherwise the
    /// end is a failure for the caller's backoff.
    pub(super) fn after_stop(&mut self, at: Key, end: &End) -> bool {
        let Some(b) = self.boards.get_mut(&at) else {
            return true;
        };
        if b.target.is_none() {
            self.let_go(at);
            return true;
        }
        if *end == End::Stopped {
            self.start(at);
            self.report_status();
            return true;
        }
        false
    }
}

impl<S: Spawn> Supervisor<S> {
    /// An unmapped board whose worker has stopped: leave it alone from now on.
    pub(super) fn let_go(&mut self, at: Key) {
        let Some(b) = self.boards.get_mut(&at) else {
            return;
        };
        let reason = b.releasing.take().unwrap_or_else(|| "no longer mapped".into());
        tracing::info!(serial = %b.info.serial_or_none(), busaddr = %at, "released the board; leaving it alone from now on");
        if let Some(be) = b.backend.take() {
            be.stop();
        }
        b.counters.session_ended();
        b.slot = Slot::Ignored(reason);
        self.report_status();
    }
}

/// Why the config leaves a board alone, for `status` and the log.
fn unserved_reason(decision: &Decision, info: &BoardInfo) -> String {
    match decision {
        Decision::NotAllowed => format!("VID:PID {} is not in [daemon] allow_ids", info.id),
        Decision::Refused { why } => format!("not served: {why}"),
        _ => "no backend configured for this board and no [defaults] backend".to_string(),
    }
}
