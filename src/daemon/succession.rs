//! How this process hands its boards to a successor, and how a successor
//! picks them up: `usb9pfsd reexec` (execv in place, same PID) and, under
//! systemd, a stop that leaves every session in the unit's file descriptor
//! store for the next start (`systemctl restart`, a package upgrade's
//! restart, a crash with `Restart=`).
//!
//! The supervisor stops the boards at a message boundary and gives back what
//! each hands back ([`crate::daemon::supervisor::handover`]); [`crate::daemon::handover`] packs
//! and checks it. This module only sequences those steps and the process
//! edges (exec, sd_notify). It must never decide which board is served, and
//! never leave a board without a process serving it: whatever cannot be
//! handed over is given back to the supervisor.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

use sd_notify::NotifyState;
use tokio::sync::{mpsc, oneshot};

use crate::board::BoardKey;
use crate::config::Config;
use crate::daemon::handover;
use crate::daemon::protocol;
use crate::daemon::supervisor::handover::{HandOver, HandedBoard, Mode};
use crate::daemon::supervisor::Input;
use crate::worker::HandedSession;

/// Whether a stop should leave the sessions in systemd's descriptor store:
/// `$FDSTORE` (what systemd ≥ 254 sets to FileDescriptorStoreMax=; the
/// unit sets it itself for systemd 252) is a positive number, and systemd
/// listens (`$NOTIFY_SOCKET`).
pub fn fd_store_enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some() && std::env::var("FDSTORE").ok().and_then(|v| v.parse::<u32>().ok()).is_some_and(|n| n > 0)
}

/// Descriptors a predecessor passed to this process, not yet looked at:
/// taken first thing in `main` (before any thread, as it edits the
/// environment), and used only once the config has loaded ([`Passed::take_over`]),
/// or given back if it cannot ([`Passed::refuse`]).
pub struct Passed {
    named: Vec<(String, OwnedFd)>,
    /// They came by `reexec` (`USB9PFSD_FDS`), not from systemd's store:
    /// only this process holds them.
    by_exec: bool,
}

/// What a successor takes over.
#[derive(Default)]
pub struct TakenOver {
    /// The boards' sessions, taken over when each board shows up.
    pub sessions: BTreeMap<BoardKey, HandedSession>,
    /// Boards the predecessor could not hand over (busy when it stopped).
    pub lost: Vec<BoardKey>,
    /// The serial each session was recorded with.
    pub serials: BTreeMap<BoardKey, Option<String>>,
    /// The predecessor's `usb9pfsd serve` mappings.
    pub serves: Vec<crate::config::serve::Serve>,
}

impl Passed {
    /// Takes the passed descriptors (`LISTEN_FDS` from systemd's store,
    /// `USB9PFSD_FDS` from `reexec`) and clears the variables that named
    /// them. Call it before any other thread starts.
    pub fn take_at_start() -> Passed {
        // SAFETY: called before any other thread exists (see above).
        let mut named: Vec<(String, std::os::fd::RawFd)> = match unsafe { sd_notify::listen_fds_with_names_and_unset_env() } {
            Ok(fds) => fds.map(|(fd, name)| (name, fd)).collect(),
            Err(e) => {
                tracing::warn!("ignoring descriptors passed by systemd: {e}");
                Vec::new()
            }
        };
        let from_store = named.len();
        if let Some(v) = std::env::var_os(handover::FDS_ENV) {
            named.extend(handover::parse_fds_env(&v.to_string_lossy()));
            // SAFETY: as above, no other thread exists yet.
            unsafe { std::env::remove_var(handover::FDS_ENV) };
        }
        let by_exec = named.len() > from_store;
        let mut seen = std::collections::BTreeSet::new();
        let named = named
            .into_iter()
            // Each number once (owned twice would be closed twice), and only
            // numbers that are open: F_GETFD only asks.
            .filter(|(_, fd)| seen.insert(*fd) && (unsafe { libc::fcntl(*fd, libc::F_GETFD) }) >= 0)
            // SAFETY: our predecessor (reexec) or systemd passed these open
            // descriptors to this process to own; each is taken exactly once.
            .map(|(name, fd)| {
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                // Not into any child we might start.
                unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::F_SETFD, libc::FD_CLOEXEC) };
                (name, fd)
            })
            .collect();
        Passed { named, by_exec }
    }

    /// The config loaded: checks what was passed and turns it into sessions,
    /// answers the `reexec` that started this image, and takes the names out
    /// of systemd's store. Everything refused is logged and closed.
    pub fn take_over(self) -> TakenOver {
        if self.named.is_empty() {
            return TakenOver::default();
        }
        // The connection of a `usb9pfsd reexec` that started this image: it
        // gets the answer once the descriptors are sorted.
        let (replies, named): (Vec<_>, Vec<_>) = self.named.into_iter().partition(|(name, _)| name == protocol::REPLY_NAME);
        let unpacked = handover::unpack(named);
        for (_, fd) in replies {
            let summary = protocol::ReexecSummary { boards: unpacked.boards.len(), refused: unpacked.refused.clone() };
            answer(fd, &protocol::Response::reexec_done(summary));
        }
        for why in &unpacked.refused {
            tracing::warn!("hand-over: {why}");
        }
        // systemd keeps its own copy of every stored descriptor: take them
        // out of the store so closing ours really ends a connection.
        if fd_store_enabled() {
            for name in &unpacked.names {
                if let Err(e) = sd_notify::notify(&[NotifyState::FdStoreRemove, NotifyState::FdName(name)]) {
                    tracing::debug!("FDSTOREREMOVE {name}: {e}");
                }
            }
        }
        let live: Vec<String> = unpacked.boards.iter().filter(|(_, i)| i.record.session.live).map(|(k, _)| k.to_string()).collect();
        tracing::info!(
            "taking over {} board(s) from the previous usb9pfsd; live 9P sessions kept: {}",
            unpacked.boards.len(),
            if live.is_empty() { "none".to_string() } else { live.join(", ") }
        );
        for key in &unpacked.lost {
            tracing::warn!(
                "board {key} was busy past the hand-over deadline when the previous usb9pfsd stopped: its request got EIO and its 9P session is lost (the board must mount again)"
            );
        }
        let serials = unpacked.boards.iter().map(|(k, i)| (*k, i.record.serial.clone())).collect();
        for s in &unpacked.serves {
            tracing::info!(board = %s.board, "usb9pfsd serve from the previous usb9pfsd kept: {} serves {} (set by uid {} at {})", s.board, s.spec, s.by_uid, s.since);
        }
        TakenOver { sessions: handover::sessions(unpacked.boards), lost: unpacked.lost, serials, serves: unpacked.serves }
    }

    /// This image cannot run (`why`: its config does not load). Takes
    /// nothing: the `reexec` requester gets `why` and a failure (so the
    /// package's fallback restart runs); descriptors from systemd's store
    /// stay there; descriptors that came by exec are put in the store, when
    /// there is one, so a start with a fixed config still finds the
    /// sessions. Returns what became of them, for the exit message.
    pub fn refuse(self, why: &str) -> String {
        if self.named.is_empty() {
            return String::new();
        }
        let (replies, named): (Vec<_>, Vec<_>) = self.named.into_iter().partition(|(name, _)| name == protocol::REPLY_NAME);
        let fate = if named.is_empty() {
            String::new()
        } else if !self.by_exec {
            "; the board sessions stay in systemd's descriptor store for the next start".to_string()
        } else if fd_store_enabled() {
            let mut kept = 0;
            for (name, fd) in &named {
                match sd_notify::notify_with_fds(&[NotifyState::FdStore, NotifyState::FdName(name)], &[fd.as_fd()]) {
                    Ok(()) => kept += 1,
                    Err(e) => tracing::warn!("cannot store descriptor {name} with systemd: {e}"),
                }
            }
            format!(
                "; {kept} of {} handed-over descriptor(s) are kept in systemd's descriptor store: fix the config and restart the service (systemctl restart usb9pfsd) to carry on with the board sessions",
                named.len()
            )
        } else {
            "; the handed-over board sessions are lost (no descriptor store to keep them in)".to_string()
        };
        let message = format!("the re-executed usb9pfsd cannot run: {why}{fate}");
        for (_, fd) in replies {
            answer(fd, &protocol::Response::failed(message.clone()));
        }
        fate
    }
}

/// Writes the `reexec` answer on the requester's connection, bounded.
fn answer(fd: OwnedFd, response: &protocol::Response) {
    use std::io::Write;
    let mut conn = std::os::unix::net::UnixStream::from(fd);
    let sent = conn
        .set_nonblocking(false)
        .and_then(|()| conn.set_write_timeout(Some(std::time::Duration::from_secs(5))))
        .and_then(|()| conn.write_all(&response.to_line()));
    if let Err(e) = sent {
        tracing::debug!("could not answer the reexec request: {e}");
    }
}

/// Asks the supervisor to stop every board at a message boundary.
async fn stop_all(tx: &mpsc::UnboundedSender<Input>, mode: Mode) -> Result<HandOver, String> {
    let (reply, rx) = oneshot::channel();
    tx.send(Input::HandOver(reply, mode)).map_err(|_| "the supervisor has stopped".to_string())?;
    rx.await.map_err(|_| "the supervisor has stopped".to_string())?
}

/// Re-executes this binary in place with every board's session. Returns
/// only if that failed; then every board is served here again. `extra`
/// descriptors (e.g. the requester's connection, to be answered by the
/// successor) cross too, under their names.
pub async fn reexec(
    tx: &mpsc::UnboundedSender<Input>,
    config_path: Option<&std::path::Path>,
    extra: &[(String, BorrowedFd<'_>)],
) -> Result<(), String> {
    // The new image reads the same file first thing: if it would not load,
    // the new image could not run. Refuse before any board is stopped.
    if let Some(path) = config_path {
        Config::load(path)
            .map_err(|e| format!("{e}; not re-executing: every board is still served by this process with the config in force"))?;
    }
    let exe = handover::own_path().map_err(|e| format!("cannot find this program's path: {e}"))?;
    let handed = stop_all(tx, Mode::AllOrNothing).await?;
    let boards = handed.boards;
    let n = boards.len();
    let (state, mut fds) = match handover::pack(&boards, &[], &handed.serves) {
        Ok(p) => p,
        Err(e) => {
            let _ = tx.send(Input::Resume(boards));
            return Err(format!("cannot write the hand-over state: {e}"));
        }
    };
    use std::os::fd::AsRawFd;
    fds.extend(extra.iter().map(|(name, fd)| (name.clone(), fd.as_raw_fd())));
    tracing::info!("re-executing {} with {n} board session(s)", exe.display());
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let err = handover::reexec(&exe, &args, &fds);
    drop(state);
    let _ = tx.send(Input::Resume(boards));
    Err(format!("cannot re-execute {}: {err}; every board is still served by this process", exe.display()))
}

/// What a stop left in systemd's descriptor store.
pub struct Stored {
    /// Boards whose sessions wait in the store for the next start.
    pub kept: Vec<BoardKey>,
    /// Boards still busy at the deadline: not stored; the shutdown that
    /// follows answers their request with EIO.
    pub busy: Vec<BoardKey>,
    /// Kept alive until the process exits (the boards' descriptors, which
    /// systemd has copies of).
    _boards: Vec<HandedBoard>,
}

/// Leaves the session of every board that reaches a message boundary in
/// time in systemd's descriptor store before the process exits; boards
/// still busy at the deadline are left to the ordinary shutdown (EIO).
pub async fn to_fd_store(tx: &mpsc::UnboundedSender<Input>) -> Result<Stored, String> {
    let handed = stop_all(tx, Mode::Ready).await?;
    let busy = handed.busy;
    let boards = handed.boards;
    let (state, fds) = handover::pack(&boards, &busy, &handed.serves).map_err(|e| format!("cannot write the hand-over state: {e}"))?;
    // The state last: a successor that finds descriptors without it closes
    // them all, so a store that fails half-way leaves nothing half-taken.
    for (name, fd) in fds.iter().skip(1).chain(fds.iter().take(1)) {
        // SAFETY: each descriptor stays open (held by `boards`/`state`) for
        // the duration of the call.
        let fd = unsafe { BorrowedFd::borrow_raw(*fd) };
        sd_notify::notify_with_fds(&[NotifyState::FdStore, NotifyState::FdName(name)], &[fd])
            .map_err(|e| format!("cannot store descriptor {name} with systemd: {e}"))?;
    }
    drop(state);
    // Ours close when `boards` drops at exit; systemd's copies live on.
    Ok(Stored { kept: boards.iter().map(|b| b.info.key()).collect(), busy, _boards: boards })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A supervisor stand-in that records whether a hand-over was asked for
    /// and calls it off (so nothing is ever executed).
    fn recording_supervisor() -> (mpsc::UnboundedSender<Input>, std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = asked.clone();
        tokio::spawn(async move {
            while let Some(input) = rx.recv().await {
                if let Input::HandOver(reply, _) = input {
                    let reply: crate::daemon::supervisor::handover::HandOverReply = reply;
                    seen.store(true, std::sync::atomic::Ordering::SeqCst);
                    let _ = reply.send(Err("test: called off".into()));
                }
            }
        });
        (tx, asked)
    }

    #[tokio::test]
    async fn reexec_with_a_config_that_would_not_load_refuses_before_stopping_any_board() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[defaults]\nbackend = \"nope\"\n").expect("write");
        let (tx, asked) = recording_supervisor();
        let err = reexec(&tx, Some(&path), &[]).await.expect_err("refused");
        assert!(err.contains(&format!("{}:2:11:", path.display())), "the parse error, with file:line:column: {err}");
        assert!(err.contains("still served"), "{err}");
        assert!(!asked.load(std::sync::atomic::Ordering::SeqCst), "no board was asked to stop");
    }
}
