//! The supervisor's side of a hand-over: stop every served board at a
//! message boundary, collect what each worker hands back (its claimed usbfs file
//! and 9P session), and give it all to the caller, who passes it to a
//! successor process; or, when a board does not reach a boundary in time or
//! the successor cannot be started, give every board its session back here.
//!
//! One hand-over at a time; a board is either handed over whole (interface
//! and session) or keeps being served by this process. From the request
//! until the hand-over is called off or the boards are given back
//! ([`Input::Resume`]), no worker starts: a board whose backoff ends, that
//! is plugged in or whose worker stops meanwhile is *deferred* (it would
//! otherwise be neither handed over nor drained, and an exec would cut its
//! request short), and reloads are refused (the successor reads the config
//! file itself as it starts). This module must never touch descriptors
//! itself: it only moves [`HandedSession`]s around.
//!
//! [`Input::Resume`]: super::Input::Resume

use crate::config::serve::Serve;
use std::collections::BTreeSet;
use std::mem;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Slot, Spawn, Supervisor};
use crate::board::{BoardInfo, BoardKey};
use crate::worker::{End, HandedSession};

/// How long the boards get to reach a message boundary (a request waiting
/// for its server holds its board until the reply comes).
pub const HANDOVER_WAIT: Duration = Duration::from_secs(5);

/// One board handed over.
#[derive(Debug)]
pub struct HandedBoard {
    pub info: BoardInfo,
    /// The server the live session talks to, for the successor's logs.
    pub backend: Option<String>,
    pub handed: HandedSession,
}

/// What a hand-over does with boards still busy at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every board or none (`reexec`: if one board is busy, every board
    /// stays served by this process, which lives on).
    AllOrNothing,
    /// The boards that reached a message boundary in time (a stop: the
    /// process goes anyway, so each board kept is one that keeps its session).
    Ready,
}

/// What a hand-over gives the caller.
#[derive(Debug, Default)]
pub struct HandOver {
    /// The boards stopped at a message boundary, with what each handed back.
    pub boards: Vec<HandedBoard>,
    /// Boards still busy at the deadline ([`Mode::Ready`] only): not handed
    /// over; this process still serves them until it stops.
    pub busy: Vec<BoardKey>,
    /// `usb9pfsd serve`'s mappings, for the successor to keep.
    pub serves: Vec<Serve>,
}

/// The answer to a hand-over request.
pub type HandOverReply = oneshot::Sender<Result<HandOver, String>>;

pub(super) struct Handing {
    reply: Option<HandOverReply>,
    mode: Mode,
    waiting: BTreeSet<BoardKey>,
    handed: Vec<HandedBoard>,
    pub(super) deadline: Instant,
}

impl<S: Spawn> Supervisor<S> {
    /// Stops every running worker at its next message boundary.
    pub(super) fn on_hand_over(&mut self, reply: HandOverReply, mode: Mode) {
        if self.handing.is_some() || self.hand_over_pending {
            let _ = reply.send(Err("a hand-over is already under way".into()));
            return;
        }
        self.hand_over_pending = true;
        let mut waiting = BTreeSet::new();
        for (key, b) in &self.boards {
            if matches!(b.slot, Slot::Running) {
                b.stop.request();
                waiting.insert(*key);
            }
        }
        tracing::info!("handing over: stopping {} board(s) at their next message boundary", waiting.len());
        self.handing = Some(Handing { reply: Some(reply), mode, waiting, handed: Vec::new(), deadline: Instant::now() + HANDOVER_WAIT });
        self.finish_hand_over();
    }

    /// A worker stopped and left its session behind.
    pub(super) fn on_handed(&mut self, key: BoardKey, handed: HandedSession) {
        let Some(b) = self.boards.get(&key) else {
            return;
        }; // removed meanwhile: dropping closes it
        let backend = b.backend.as_ref().filter(|_| handed.session.live).map(|be| be.addr().to_string());
        match &mut self.handing {
            Some(h) if h.waiting.contains(&key) => h.handed.push(HandedBoard { info: b.info.clone(), backend, handed }),
            // Stopped for another reason while a hand-over waits (a release
            // a reload asked for before it): it is at a boundary too, so it
            // crosses with the rest (the successor's config decides).
            Some(h) => {
                h.handed.push(HandedBoard { info: b.info.clone(), backend, handed });
                if let Some(b) = self.boards.get_mut(&key) {
                    // Its worker's last words (Ended) are not for us.
                    b.generation = 0;
                    b.slot = Slot::HandedOver;
                }
            }
            // Stopped because a reload unmapped it: dropping the handed session closes
            // the usbfs file (releasing the interface) and the server
            // connection (ending its session).
            _ if b.target.is_none() => drop(handed),
            // Its hand-over was called off before it reached a boundary, or
            // a reload mapped it again meanwhile: it carries on here.
            _ => self.start_with(key, Some(handed)),
        }
    }

    /// A worker of a board being handed over ended.
    pub(super) fn on_handing_end(&mut self, key: BoardKey, end: &End) -> bool {
        let Some(h) = &mut self.handing else {
            return false;
        };
        if !h.waiting.remove(&key) {
            return false;
        }
        if *end == End::Stopped {
            if let Some(b) = self.boards.get_mut(&key) {
                b.slot = Slot::HandedOver;
            }
            self.finish_hand_over();
            return true;
        }
        self.finish_hand_over();
        false
    }

    /// A board being handed over was unplugged: nothing of it will come.
    pub(super) fn forget_handing(&mut self, key: BoardKey) {
        if let Some(h) = &mut self.handing {
            if h.waiting.remove(&key) {
                self.finish_hand_over();
            }
        }
    }

    fn finish_hand_over(&mut self) {
        let done = self.handing.as_ref().is_some_and(|h| h.waiting.is_empty());
        if !done {
            return;
        }
        if let Some(mut h) = self.handing.take() {
            tracing::info!("{} board(s) stopped at a message boundary, ready to hand over", h.handed.len());
            let handed = HandOver { boards: mem::take(&mut h.handed), busy: Vec::new(), serves: self.config.serves.clone() };
            self.answer_hand_over(&mut h, handed);
        }
    }

    /// Gives the caller its boards; with nobody left to take them, serves
    /// them here again.
    fn answer_hand_over(&mut self, h: &mut Handing, handed: HandOver) {
        let unsent = match h.reply.take() {
            Some(reply) => reply.send(Ok(handed)).err().and_then(Result::ok),
            None => Some(handed),
        };
        if let Some(handed) = unsent {
            self.resume(handed.boards);
        }
    }

    /// The deadline passed with boards still busy: call the hand-over off
    /// ([`Mode::AllOrNothing`]), or hand over the boards that are ready
    /// ([`Mode::Ready`]).
    pub(super) fn hand_over_overdue(&mut self) {
        let Some(mut h) = self.handing.take() else {
            return;
        };
        let busy: Vec<String> = h.waiting.iter().map(|k| k.to_string()).collect();
        if h.mode == Mode::Ready {
            tracing::warn!(
                "board(s) {} did not reach a message boundary within {HANDOVER_WAIT:?} (a request still waits for its server): \
                 not handed over, their requests get EIO and their 9P sessions end; {} board(s) handed over",
                busy.join(", "),
                h.handed.len()
            );
            let handed = HandOver {
                boards: mem::take(&mut h.handed),
                busy: h.waiting.iter().copied().collect(),
                serves: self.config.serves.clone(),
            };
            self.answer_hand_over(&mut h, handed);
            return;
        }
        let why = format!(
            "board(s) {} did not reach a message boundary within {HANDOVER_WAIT:?} (a request still waits for its server); nothing was handed over",
            busy.join(", ")
        );
        tracing::warn!("hand-over called off: {why}");
        self.resume(mem::take(&mut h.handed));
        // The busy ones stop when their request is answered; on_handed then
        // resumes them here.
        if let Some(reply) = h.reply.take() {
            let _ = reply.send(Err(why));
        }
    }

    /// Serves handed-over boards again in this process (the successor could
    /// not be started, or the hand-over was called off), and starts the
    /// boards deferred meanwhile. Every board present ends up either served
    /// or, if no config maps it any more, released.
    pub fn resume(&mut self, boards: Vec<HandedBoard>) {
        self.hand_over_pending = false;
        for hb in boards {
            let key = hb.info.key();
            let Some(b) = self.boards.get_mut(&key) else {
                continue;
            }; // removed meanwhile: dropping the handed session closes it
            if !matches!(b.slot, Slot::HandedOver | Slot::Running | Slot::Deferred(_)) {
                continue;
            }
            if b.target.is_none() {
                // Unmapped while it was stopped: let it go for good.
                drop(hb.handed);
                self.let_go(key);
                continue;
            }
            self.start_with(key, Some(hb.handed));
        }
        let deferred: Vec<BoardKey> = self.boards.iter().filter(|(_, b)| matches!(b.slot, Slot::Deferred(_))).map(|(k, _)| *k).collect();
        for key in deferred {
            let Some(b) = self.boards.get_mut(&key) else {
                continue;
            };
            let Slot::Deferred(handed) = mem::replace(&mut b.slot, Slot::HandedOver) else {
                continue;
            };
            tracing::info!(busaddr = %key.busaddr, iface = key.interface, "starting the worker deferred during the hand-over");
            self.start_with(key, handed);
        }
        self.report_status();
    }
}
