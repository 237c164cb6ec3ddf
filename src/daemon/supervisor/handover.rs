//! The supervisor's side of a hand-over: stop every served board at a
//! message boundary, collect what each worker carried (its claimed usbfs file
//! and 9P session), and give it all to the caller, who passes it to a
//! successor process; or, when a board does not reach a boundary in time or
//! the successor cannot be started, give every board its session back here.
//!
//! One hand-over at a time; a board is either handed over whole (interface
//! and session) or keeps being served by this process. This module must
//! never touch descriptors itself: it only moves [`Carry`]s around.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Slot, Spawn, Supervisor};
use crate::board::{GadgetInfo, GadgetKey};
use crate::worker::{Carry, End};

/// How long the boards get to reach a message boundary (a request waiting
/// for its server holds its board until the reply comes).
pub const HANDOVER_WAIT: Duration = Duration::from_secs(5);

/// One board handed over.
#[derive(Debug)]
pub struct HandedBoard {
    pub info: GadgetInfo,
    /// The server the live session talks to, for the successor's logs.
    pub backend: Option<String>,
    pub carry: Carry,
}

/// The answer to a hand-over request.
pub type HandOverReply = oneshot::Sender<Result<Vec<HandedBoard>, String>>;

pub(super) struct Handing {
    reply: Option<HandOverReply>,
    waiting: BTreeSet<GadgetKey>,
    carried: Vec<HandedBoard>,
    pub(super) deadline: Instant,
}

impl<S: Spawn> Supervisor<S> {
    /// Stops every running worker at its next message boundary.
    pub(super) fn on_hand_over(&mut self, reply: HandOverReply) {
        if self.handing.is_some() {
            let _ = reply.send(Err("a hand-over is already under way".into()));
            return;
        }
        let mut waiting = BTreeSet::new();
        for (key, b) in &self.boards {
            if matches!(b.slot, Slot::Running) {
                b.stop.request();
                waiting.insert(*key);
            }
        }
        tracing::info!("handing over: stopping {} board(s) at their next message boundary", waiting.len());
        self.handing = Some(Handing { reply: Some(reply), waiting, carried: Vec::new(), deadline: Instant::now() + HANDOVER_WAIT });
        self.finish_hand_over();
    }

    /// A worker stopped and left its session behind.
    pub(super) fn on_carried(&mut self, key: GadgetKey, carry: Carry) {
        let Some(b) = self.boards.get(&key) else { return }; // removed meanwhile: dropping closes it
        let backend = b.backend.as_ref().filter(|_| carry.session.live).map(|be| be.addr().to_string());
        match &mut self.handing {
            Some(h) if h.waiting.contains(&key) => h.carried.push(HandedBoard { info: b.info.clone(), backend, carry }),
            // Stopped because a reload unmapped it: dropping the carry closes
            // the usbfs file (releasing the interface) and the server
            // connection (ending its session).
            _ if b.target.is_none() => drop(carry),
            // Its hand-over was called off before it reached a boundary, or
            // a reload mapped it again meanwhile: it carries on here.
            _ => self.start_with(key, Some(carry)),
        }
    }

    /// A worker of a board being handed over ended.
    pub(super) fn on_handing_end(&mut self, key: GadgetKey, end: &End) -> bool {
        let Some(h) = &mut self.handing else { return false };
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
    pub(super) fn forget_handing(&mut self, key: GadgetKey) {
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
            tracing::info!("{} board(s) stopped at a message boundary, ready to hand over", h.carried.len());
            if let Some(reply) = h.reply.take() {
                if let Err(Ok(boards)) = reply.send(Ok(h.carried)) {
                    // Nobody to hand them to: serve them again.
                    self.resume(boards);
                }
            }
        }
    }

    /// The deadline passed with boards still busy: call the hand-over off.
    pub(super) fn hand_over_overdue(&mut self) {
        let Some(mut h) = self.handing.take() else { return };
        let busy: Vec<String> = h.waiting.iter().map(|k| k.to_string()).collect();
        let why = format!(
            "board(s) {} did not reach a message boundary within {HANDOVER_WAIT:?} (a request still waits for its server); nothing was handed over",
            busy.join(", ")
        );
        tracing::warn!("hand-over called off: {why}");
        self.resume(std::mem::take(&mut h.carried));
        // The busy ones stop when their request is answered; on_carried then
        // resumes them here.
        if let Some(reply) = h.reply.take() {
            let _ = reply.send(Err(why));
        }
    }

    /// Serves handed-over boards again in this process (the successor could
    /// not be started, or the hand-over was called off).
    pub fn resume(&mut self, boards: Vec<HandedBoard>) {
        for hb in boards {
            let key = hb.info.key();
            match self.boards.get(&key) {
                Some(b) if matches!(b.slot, Slot::HandedOver | Slot::Running) => self.start_with(key, Some(hb.carry)),
                _ => {} // removed meanwhile: dropping the carry closes it
            }
        }
    }
}
