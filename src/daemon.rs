//! The service around the data path: the supervisor that owns every board's
//! state, the control socket and reload, status, hand-over to a successor
//! process, logging and systemd notification. Nothing here touches an
//! endpoint or a server socket's bytes.

pub mod control;
pub mod handover;
pub mod logging;
pub mod notify;
pub mod protocol;
pub mod reload;
pub mod status;
pub mod succession;
pub mod supervisor;
