//! How this process hands its boards to a successor, and how a successor
//! picks them up: `usb9pfsd reexec` (execv in place, same PID) and, under
//! systemd, a stop that leaves every session in the unit's file descriptor
//! store for the next start (`systemctl restart`, a package upgrade's
//! restart, a crash with `Restart=`).
//!
//! The supervisor stops the boards at a message boundary and gives back what
//! each carried ([`crate::daemon::supervisor::handover`]); [`crate::daemon::handover`] packs
//! and checks it. This module only sequences those steps and the process
//! edges (exec, sd_notify). It must never decide which board is served, and
//! never leave a board without a process serving it: whatever cannot be
//! handed over is given back to the supervisor.

use std::collections::BTreeMap;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

use sd_notify::NotifyState;
use tokio::sync::{mpsc, oneshot};

use crate::board::GadgetKey;
use crate::daemon::control;
use crate::daemon::handover;
use crate::daemon::supervisor::handover::HandedBoard;
use crate::daemon::supervisor::Input;
use crate::worker::Carry;

/// Whether a stop should leave the sessions in systemd's descriptor store:
/// `$FDSTORE` (what systemd ≥ 254 sets to FileDescriptorStoreMax=; the
/// unit sets it itself for systemd 252) is a positive number, and systemd
/// listens (`$NOTIFY_SOCKET`).
pub fn fd_store_enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
        && std::env::var("FDSTORE").ok().and_then(|v| v.parse::<u32>().ok()).is_some_and(|n| n > 0)
}

/// The sessions a predecessor left: passed descriptors (`LISTEN_FDS`, from
/// `reexec` or systemd's store), checked and turned into sessions. Call it
/// first thing in `main`, before any thread starts: it clears the
/// `LISTEN_*` variables. Everything refused is logged and closed.
pub fn inherited_at_start() -> BTreeMap<GadgetKey, Carry> {
    // SAFETY: called before any other thread exists (see above).
    let mut named: Vec<(String, std::os::fd::RawFd)> = match unsafe { sd_notify::listen_fds_with_names_and_unset_env() } {
        Ok(fds) => fds.map(|(fd, name)| (name, fd)).collect(),
        Err(e) => {
            tracing::warn!("ignoring descriptors passed by systemd: {e}");
            Vec::new()
        }
    };
    if let Some(v) = std::env::var_os(handover::FDS_ENV) {
        named.extend(handover::parse_fds_env(&v.to_string_lossy()));
        // SAFETY: as above, no other thread exists yet.
        unsafe { std::env::remove_var(handover::FDS_ENV) };
    }
    let mut seen = std::collections::BTreeSet::new();
    let named: Vec<(String, OwnedFd)> = named
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
    if named.is_empty() {
        return BTreeMap::new();
    }
    // The connection of a `usb9pfsd reexec` that started this image: it gets
    // the answer once the descriptors are sorted.
    let (replies, named): (Vec<_>, Vec<_>) = named.into_iter().partition(|(name, _)| name == control::REPLY_NAME);
    let inherited = handover::inherit(named);
    for (_, fd) in replies {
        let summary = control::ReexecSummary { boards: inherited.boards.len(), refused: inherited.refused.clone() };
        answer(fd, &control::Response::reexec_done(summary));
    }
    for why in &inherited.refused {
        tracing::warn!("hand-over: {why}");
    }
    // systemd keeps its own copy of every stored descriptor: take them out of
    // the store so closing ours really ends a connection.
    if fd_store_enabled() {
        for name in &inherited.names {
            if let Err(e) = sd_notify::notify(&[NotifyState::FdStoreRemove, NotifyState::FdName(name)]) {
                tracing::debug!("FDSTOREREMOVE {name}: {e}");
            }
        }
    }
    tracing::info!("taking over {} board(s) from the previous usb9pfsd", inherited.boards.len());
    handover::adoptable(inherited.boards)
}

/// Writes the `reexec` answer on the requester's connection, bounded.
fn answer(fd: OwnedFd, response: &control::Response) {
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
async fn stop_all(tx: &mpsc::UnboundedSender<Input>) -> Result<Vec<HandedBoard>, String> {
    let (reply, rx) = oneshot::channel();
    tx.send(Input::HandOver(reply)).map_err(|_| "the supervisor has stopped".to_string())?;
    rx.await.map_err(|_| "the supervisor has stopped".to_string())?
}

/// Re-executes this binary in place with every board's session. Returns
/// only if that failed; then every board is served here again. `extra`
/// descriptors (e.g. the requester's connection, to be answered by the
/// successor) cross too, under their names.
pub async fn reexec(tx: &mpsc::UnboundedSender<Input>, extra: &[(String, BorrowedFd<'_>)]) -> Result<(), String> {
    let exe = handover::own_path().map_err(|e| format!("cannot find this program's path: {e}"))?;
    let boards = stop_all(tx).await?;
    let n = boards.len();
    let (state, mut fds) = match handover::pack(&boards) {
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

/// Leaves every board's session in systemd's descriptor store before the
/// process exits. Returns how many boards were stored; boards that could not
/// be stopped at a boundary are left to the ordinary shutdown.
pub async fn to_fd_store(tx: &mpsc::UnboundedSender<Input>) -> Result<usize, String> {
    let boards = stop_all(tx).await?;
    let (state, fds) = handover::pack(&boards).map_err(|e| format!("cannot write the hand-over state: {e}"))?;
    for (name, fd) in &fds {
        // SAFETY: each descriptor stays open (held by `boards`/`state`) for
        // the duration of the call.
        let fd = unsafe { BorrowedFd::borrow_raw(*fd) };
        sd_notify::notify_with_fds(&[NotifyState::FdStore, NotifyState::FdName(name)], &[fd])
            .map_err(|e| format!("cannot store descriptor {name} with systemd: {e}"))?;
    }
    drop(state);
    // Ours close when `boards` drops at exit; systemd's copies live on.
    Ok(boards.len())
}
