//! Telling systemd how the service stands (Type=notify): READY=1 once every
//! board present at start-up has been seen, STATUS= with the board count.
//! Outside systemd (no NOTIFY_SOCKET) it does nothing. It must never fail the
//! daemon: a lost notification is logged at debug level and forgotten.

use sd_notify::NotifyState;

use crate::supervisor::Notify;

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
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}
