//! Telling systemd how the service stands (Type=notify): READY=1 once every
//! board present at start-up has been seen, STATUS= with the board count,
//! and RELOADING=1 … READY=1 around a config reload.
//!
//! What systemd 252 (Debian 12; no Type=notify-reload yet, that came in 253)
//! does with the reload pair: RELOADING=1 from a running service puts the
//! unit in "reloading" until the next READY=1, so a SIGHUP sent by hand shows
//! in `systemctl status`. During `systemctl reload`, the unit is already
//! reloading while ExecReload (`usb9pfsd reload`, which waits for the
//! daemon's answer) runs, and the reload ends when that command exits, with
//! its exit status. MONOTONIC_USEC= goes with RELOADING=1 because 253+
//! requires it for Type=notify-reload; older versions ignore it.
//! Outside systemd (no NOTIFY_SOCKET) it does nothing. It must never fail the
//! daemon: a lost notification is logged at debug level and forgotten.

use sd_notify::NotifyState;

use crate::daemon::supervisor::Notify;

pub struct Systemd;

impl Notify for Systemd {
    fn ready(&mut self, served: usize) {
        let status = format!("serving {served} board(s)");
        send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    fn status(&mut self, served: usize, total: usize) {
        let status = format!("serving {served} board(s), {total} usb9pfs gadget(s) present");
        send(&[NotifyState::Status(&status)]);
    }

    fn reloading(&mut self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[NotifyState::Reloading, now, NotifyState::Status("reloading the config")]),
            Err(_) => send(&[NotifyState::Reloading, NotifyState::Status("reloading the config")]),
        }
    }
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}
