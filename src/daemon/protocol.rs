//! The control socket's wire format: one line of JSON in ([`Request`]), one
//! out ([`Response`]), both carrying [`PROTOCOL`]. Field names are an
//! interface (scripts, and a daemon's successor of another version, which
//! answers a `reexec` on the connection that crossed the exec under
//! [`REPLY_NAME`]). `control.rs` serves and sends it; `succession.rs` writes
//! the re-executed image's answer. Shared by both so neither imports the
//! other's half of the re-exec.
//!
//! Plain data: it must never do I/O.

use serde::{Deserialize, Serialize};

use crate::config::serve::ServeSpec;
use crate::daemon::reload;
use crate::daemon::status::StatusReport;
use crate::daemon::supervisor::ServeAnswer;

/// The protocol version both sides put in every message.
pub const PROTOCOL: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    /// `status`, `reload`, `reexec`, `serve` or `unserve`.
    pub command: String,
    /// `serve` and `unserve`: which board (serial, port path or
    /// BUS-ADDRESS#INTERFACE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board: Option<String>,
    /// `serve`: what to serve it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<ServeSpec>,
}

impl Request {
    /// A request with no arguments.
    pub fn new(command: &str) -> Request {
        Request { version: PROTOCOL, command: command.into(), board: None, serve: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<reload::Summary>,
    /// The answer to `reexec`, written by the *new* image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reexec: Option<ReexecSummary>,
    /// The answer to `serve` and `unserve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served: Option<ServeAnswer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a re-executed daemon took over from its predecessor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReexecSummary {
    /// Boards whose sessions the new image took over.
    pub boards: usize,
    /// What it could not use (closed; those boards start afresh).
    pub refused: Vec<String>,
}

/// The name the requester's connection crosses a re-exec under, so the new
/// image answers it.
pub const REPLY_NAME: &str = "usb9pfsd-control-reply";

impl Response {
    /// Success with nothing in it yet (a command fills in its answer).
    pub fn ok() -> Response {
        Response { version: PROTOCOL, ok: true, status: None, reload: None, reexec: None, served: None, error: None }
    }

    /// The new image's answer to the `reexec` that started it.
    pub fn reexec_done(summary: ReexecSummary) -> Response {
        Response { ok: summary.refused.is_empty(), reexec: Some(summary), ..Response::ok() }
    }

    /// The line the daemon writes for this response.
    pub fn to_line(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec(self)
            .unwrap_or_else(|e| serde_json::to_vec(&Response::error(format!("cannot encode the answer: {e}"))).unwrap_or_default());
        text.push(b'\n');
        text
    }

    /// A failure with its reason (the new image's answer when it cannot run).
    pub fn failed(message: impl Into<String>) -> Response {
        Response::error(message)
    }

    pub fn error(message: impl Into<String>) -> Response {
        Response { ok: false, error: Some(message.into()), ..Response::ok() }
    }
}
