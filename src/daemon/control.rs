//! The control socket: how `usb9pfsd status` and `usb9pfsd reload` reach a
//! running daemon. A unix stream socket (default [`DEFAULT_SOCKET`], mode
//! 0660, group `usb9pfsd`), one request per connection: the client writes one
//! line of JSON, the daemon answers with one line of JSON and closes.
//!
//! ```text
//! → {"version":1,"command":"status"}
//! ← {"version":1,"ok":true,"status":{"daemon":{…},"boards":[…]}}
//! → {"version":1,"command":"reload"}
//! ← {"version":1,"ok":false,"error":"/etc/usb9pfsd/config.toml:3:11: …"}
//! ```
//!
//! Each connection is its own task and talks to the supervisor only through
//! its input channel and a oneshot reply, so a slow, silent or hostile client
//! can never block the supervisor or a board. Requests are refused above
//! [`MAX_REQUEST`] bytes and after [`REQUEST_TIMEOUT`]. The socket's file mode
//! is the only access control: whoever may connect may ask for status and
//! reloads. It must never touch boards or per-board state itself.

use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::daemon::reload;
use crate::daemon::status::StatusReport;
use crate::daemon::supervisor::Input;

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/usb9pfsd/control";
/// The group whose members may use the socket.
pub const GROUP: &str = "usb9pfsd";
/// The protocol version both sides put in every message.
pub const PROTOCOL: u32 = 1;
/// The longest request line the daemon reads.
pub const MAX_REQUEST: usize = 4096;
/// How much of an oversized request is read and dropped before answering.
const MAX_DISCARD: usize = 1 << 20;
/// How long a client may take to send its request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the client waits for the daemon's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest answer the client reads (a status of many boards).
const MAX_ANSWER: u64 = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    /// `status` or `reload`.
    pub command: String,
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
    fn ok() -> Response {
        Response { version: PROTOCOL, ok: true, status: None, reload: None, reexec: None, error: None }
    }

    /// The new image's answer to the `reexec` that started it.
    pub fn reexec_done(summary: ReexecSummary) -> Response {
        Response { ok: summary.refused.is_empty(), reexec: Some(summary), ..Response::ok() }
    }

    /// The line the daemon writes for this response.
    pub fn to_line(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec(self).unwrap_or_else(|e| {
            serde_json::to_vec(&Response::error(format!("cannot encode the answer: {e}"))).unwrap_or_default()
        });
        text.push(b'\n');
        text
    }

    /// A failure with its reason (the new image's answer when it cannot run).
    pub fn failed(message: impl Into<String>) -> Response {
        Response::error(message)
    }

    fn error(message: impl Into<String>) -> Response {
        Response { ok: false, error: Some(message.into()), ..Response::ok() }
    }
}

/// Re-reads the config file and has the supervisor apply it (the same path
/// for SIGHUP and `usb9pfsd reload`). A file that does not parse still goes
/// to the supervisor, which keeps the old config and remembers the error for
/// `status`. The read blocks the runtime thread for the time it takes to read
/// a small local file.
pub async fn reload(inputs: &mpsc::UnboundedSender<Input>, config_path: Option<&Path>) -> Result<reload::Summary, String> {
    let Some(path) = config_path else {
        return Err("this daemon runs without a config file (usb9pfsd forward): nothing to reload".into());
    };
    let (reply, answer) = oneshot::channel();
    inputs.send(Input::Reload(Config::load(path), reply)).map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}

async fn status(inputs: &mpsc::UnboundedSender<Input>) -> Result<StatusReport, String> {
    let (reply, answer) = oneshot::channel();
    inputs.send(Input::Status(reply)).map_err(|_| gone())?;
    answer.await.map_err(|_| gone())
}

fn gone() -> String {
    "usb9pfsd is shutting down".into()
}

/// The daemon's end of the socket. Dropping it removes the socket file.
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of our socket file: never remove someone else's.
    id: (u64, u64),
}

/// Creates the socket: 0660, group `usb9pfsd` when that group exists. A
/// socket file left behind by a daemon that died is replaced; one that a
/// live daemon answers on is not.
pub fn bind(path: &Path) -> Result<Listener, String> {
    let fail = |e: io::Error| format!("cannot create the control socket {}: {e}", path.display());
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        // Under systemd, RuntimeDirectory= has made it; by hand, make it
        // reachable for the group like the socket.
        std::fs::DirBuilder::new().mode(0o750).create(dir).map_err(fail)?;
        give_to_group(dir);
    }
    let std_listener = match std::os::unix::net::UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            if !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                return Err(format!("cannot create the control socket {}: a file that is not a socket is in the way", path.display()));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(format!("another usb9pfsd answers on {}; not taking it over", path.display()));
            }
            std::fs::remove_file(path).map_err(fail)?;
            std::os::unix::net::UnixListener::bind(path).map_err(fail)?
        }
        Err(e) => return Err(fail(e)),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(fail)?;
    give_to_group(path);
    let meta = std::fs::metadata(path).map_err(fail)?;
    std_listener.set_nonblocking(true).map_err(fail)?;
    let listener = UnixListener::from_std(std_listener).map_err(fail)?;
    Ok(Listener { listener, path: path.to_path_buf(), id: (meta.dev(), meta.ino()) })
}

/// Hands a file to group `usb9pfsd` if the group exists and we may. Under
/// the unit, the daemon's own group is already `usb9pfsd` (and chown is
/// filtered with `~@privileged`), so this matters for runs by hand as root.
fn give_to_group(path: &Path) {
    let Some(gid) = group_id(GROUP) else { return };
    if std::fs::metadata(path).is_ok_and(|m| m.gid() == gid) {
        return;
    }
    if let Err(e) = std::os::unix::fs::chown(path, None, Some(gid)) {
        tracing::debug!("cannot give {} to group {GROUP}: {e}", path.display());
    }
}

/// The id of a group by name (getgrnam_r), None if it does not exist.
fn group_id(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut len = 1024;
    while len <= 1 << 20 {
        let mut buf = vec![0 as libc::c_char; len];
        // SAFETY: a zeroed `group` is a valid out-parameter; getgrnam_r
        // writes only into it and into `buf`, whose length we pass.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        let rc = unsafe { libc::getgrnam_r(cname.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut found) };
        match rc {
            0 if !found.is_null() => return Some(grp.gr_gid),
            libc::ERANGE => len *= 2,
            _ => return None,
        }
    }
    None
}

impl Listener {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers connections until dropped. `config_path` is the file a
    /// `reload` request re-reads.
    pub async fn serve(self, inputs: mpsc::UnboundedSender<Input>, config_path: Option<PathBuf>) {
        tracing::info!("control socket at {} (usb9pfsd status, usb9pfsd reload)", self.path.display());
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let (inputs, config_path) = (inputs.clone(), config_path.clone());
                    tokio::spawn(async move { answer(stream, &inputs, config_path.as_deref()).await });
                }
                Err(e) => {
                    // Out of file descriptors, most likely: pause instead of
                    // spinning; boards are not affected.
                    tracing::warn!("control socket: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// One connection: read the request line, answer it, close.
async fn answer(stream: UnixStream, inputs: &mpsc::UnboundedSender<Input>, config_path: Option<&Path>) {
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, read_line(&stream)).await {
        Err(_) => Response::error(format!("no request line within {} s", REQUEST_TIMEOUT.as_secs())),
        Ok(Err(why)) => Response::error(why),
        Ok(Ok(line)) => match parse(&line) {
            Err(why) => Response::error(why),
            // Returns only if the re-exec failed (every board is then still
            // served here); otherwise the new image answers on this
            // connection, which crosses the exec.
            Ok(command) if command == "reexec" => {
                use std::os::fd::AsFd;
                let reply = [(REPLY_NAME.to_string(), stream.as_fd())];
                match crate::daemon::succession::reexec(inputs, config_path, &reply).await {
                    Ok(()) => Response::error("re-exec returned without an answer"),
                    Err(e) => Response::error(e),
                }
            }
            Ok(command) => run(&command, inputs, config_path).await,
        },
    };
    let text = response.to_line();
    if tokio::time::timeout(ANSWER_TIMEOUT, write_all(&stream, &text)).await.is_err() {
        tracing::debug!("control socket: a client did not take its answer");
    }
}

fn parse(line: &[u8]) -> Result<String, String> {
    let req: Request = serde_json::from_slice(line).map_err(|e| format!("not a usb9pfsd control request: {e}"))?;
    if req.version != PROTOCOL {
        return Err(format!("protocol version {} is not supported (this usb9pfsd speaks version {PROTOCOL})", req.version));
    }
    Ok(req.command)
}

async fn run(command: &str, inputs: &mpsc::UnboundedSender<Input>, config_path: Option<&Path>) -> Response {
    match command {
        "status" => match status(inputs).await {
            Ok(report) => Response { status: Some(report), ..Response::ok() },
            Err(e) => Response::error(e),
        },
        "reload" => match reload(inputs, config_path).await {
            Ok(summary) => Response { reload: Some(summary), ..Response::ok() },
            Err(e) => Response::error(e),
        },
        other => Response::error(format!("unknown command {other:?} (this usb9pfsd knows status, reload, reexec)")),
    }
}

/// Reads up to and without the first newline, or to the end of the stream.
/// A longer line than [`MAX_REQUEST`] is refused; the rest of it is read
/// and dropped (up to a bound) so that the client gets the refusal rather
/// than a connection reset.
async fn read_line(stream: &UnixStream) -> Result<Vec<u8>, String> {
    let mut line = Vec::new();
    let mut discarded = 0usize;
    let mut chunk = [0u8; 512];
    loop {
        stream.readable().await.map_err(|e| format!("cannot read the request: {e}"))?;
        let n = match stream.try_read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(format!("cannot read the request: {e}")),
        };
        let end = chunk[..n].iter().position(|&b| b == b'\n');
        if line.len() <= MAX_REQUEST {
            line.extend_from_slice(&chunk[..end.unwrap_or(n)]);
        } else {
            discarded += n;
        }
        if n == 0 || end.is_some() || discarded > MAX_DISCARD {
            if line.len() > MAX_REQUEST {
                return Err(format!("request longer than {MAX_REQUEST} bytes; refused"));
            }
            return Ok(line);
        }
    }
}

async fn write_all(stream: &UnixStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The client's side: sends one command, returns the daemon's answer, or a
/// sentence saying why the daemon could not be asked.
pub fn request(path: &Path, command: &str) -> Result<Response, String> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| connect_error(path, &e))?;
    let io_err = |e: io::Error| format!("talking to usb9pfsd on {}: {e}", path.display());
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io_err)?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT)).map_err(io_err)?;
    let mut line = serde_json::to_vec(&Request { version: PROTOCOL, command: command.into() }).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io_err)?;
    let mut text = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut text).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("usb9pfsd on {} did not answer within {} s", path.display(), ANSWER_TIMEOUT.as_secs())
        }
        _ => io_err(e),
    })?;
    let response: Response = serde_json::from_slice(&text)
        .map_err(|e| format!("usb9pfsd on {} answered something unreadable ({e}); is it the same version as this command?", path.display()))?;
    if response.version != PROTOCOL {
        return Err(format!("usb9pfsd on {} speaks control protocol {}, this command {PROTOCOL}", path.display(), response.version));
    }
    Ok(response)
}

/// Why connecting to the socket failed, for people.
pub fn connect_error(path: &Path, e: &io::Error) -> String {
    let p = path.display();
    match e.kind() {
        io::ErrorKind::NotFound => format!("usb9pfsd is not running (no socket at {p})"),
        io::ErrorKind::ConnectionRefused => format!("usb9pfsd is not running (nothing listens on {p})"),
        io::ErrorKind::PermissionDenied => format!("permission denied on {p}: add yourself to group {GROUP}"),
        _ => format!("cannot reach usb9pfsd at {p}: {e}"),
    }
}

#[cfg(test)]
mod tests;
