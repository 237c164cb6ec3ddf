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
//! [`MAX_REQUEST`] bytes and after [`REQUEST_TIMEOUT`]; an answer not taken
//! within [`ANSWER_TIMEOUT`] is dropped; at most [`MAX_CONNECTIONS`] are
//! served at once (more are told so and closed at once), so clients can
//! never use up the descriptors the boards need.
//!
//! Who may ask what: the socket's file mode (group `usb9pfsd`) decides who
//! may connect, and so read `status`. Commands that change what the daemon
//! does (`reload`, `reexec`, and any later one that changes who serves a
//! board) are further checked against the peer's credentials (SO_PEERCRED,
//! SO_PEERGROUPS): only root, the daemon's own user (the unit's ExecReload
//! runs as it) and members of group [`ADMIN_GROUP`] may. Group `usb9pfsd`
//! alone owns every board's usbfs node, so it must not also be able to
//! replace the daemon. This module must never touch boards or per-board
//! state itself.

use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::config::serve::{BoardSel, Serve};
use crate::config::Config;
use crate::daemon::reload;
use crate::daemon::status::StatusReport;
use crate::daemon::supervisor::{Input, ServeAnswer};

/// The wire format (requests, answers, the protocol version) lives in
/// [`crate::daemon::protocol`], which a re-executed image answers with too.
pub use crate::daemon::protocol::{ReexecSummary, Request, Response, PROTOCOL, REPLY_NAME};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/usb9pfsd/control";
/// The group whose members may use the socket (and read `status`).
pub const GROUP: &str = "usb9pfsd";
/// The group whose members may also change things (`reload`, `reexec`).
pub const ADMIN_GROUP: &str = "usb9pfsd-admin";
/// Connections served at once; more are refused on the spot.
pub const MAX_CONNECTIONS: usize = 16;
/// The longest request line the daemon reads.
pub const MAX_REQUEST: usize = 4096;
/// How much of an oversized request is read and dropped before answering.
const MAX_DISCARD: usize = 1 << 20;
/// How long a client may take to send its request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the client waits for the daemon's answer, and the daemon for
/// the client to take it.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest answer the client reads (a status of many boards).
const MAX_ANSWER: u64 = 64 << 20;

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
    // What parses but cannot work (a placeholder serial, a socket the
    // sandbox hides) is logged, as at start; it does not stop the reload.
    let loaded = Config::load_checked(path).map(|(c, warnings)| {
        for w in &warnings {
            tracing::warn!("{w}");
        }
        c
    });
    inputs.send(Input::Reload(loaded, reply)).map_err(|_| gone())?;
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

/// Whether a command only reads or changes what the daemon does.
fn changes(command: &str) -> bool {
    command != "status"
}

/// Who is on the other end of a connection, as the kernel says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (SO_PEERGROUPS).
    pub groups: Vec<u32>,
}

impl Peer {
    /// The credentials of the process that connected `stream`.
    pub fn of(stream: &impl std::os::fd::AsRawFd) -> io::Result<Peer> {
        let fd = stream.as_raw_fd();
        // SAFETY: getsockopt into a zeroed ucred we own, with its size.
        let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        if unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, (&mut cred as *mut libc::ucred).cast(), &mut len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut groups = vec![0 as libc::gid_t; 64];
        loop {
            let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
            // SAFETY: getsockopt into a buffer of `len` bytes we own.
            let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERGROUPS, groups.as_mut_ptr().cast(), &mut len) };
            let needed = len as usize / std::mem::size_of::<libc::gid_t>();
            if r == 0 {
                groups.truncate(needed);
                break;
            }
            let e = io::Error::last_os_error();
            // ERANGE: the kernel said how much room it needs (bounded by
            // NGROUPS_MAX, 65536).
            if e.raw_os_error() == Some(libc::ERANGE) && needed > groups.len() && needed <= 65536 {
                groups.resize(needed, 0);
                continue;
            }
            return Err(e);
        }
        Ok(Peer { uid: cred.uid, gid: cred.gid, groups })
    }
}

/// Who may change things: see the module comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Users who may (root and the daemon's own user).
    pub users: Vec<u32>,
    /// Members of this group may too ([`ADMIN_GROUP`], if it exists).
    pub group: Option<u32>,
}

impl Access {
    /// Root, this process's user, and group [`ADMIN_GROUP`].
    pub fn system() -> Access {
        // SAFETY: geteuid cannot fail.
        let own = unsafe { libc::geteuid() };
        Access { users: vec![0, own], group: group_id(ADMIN_GROUP) }
    }

    /// Whether `peer` may ask for `command`; if not, the refusal.
    pub fn check(&self, peer: &Peer, command: &str) -> Result<(), String> {
        if !changes(command) || self.users.contains(&peer.uid) || self.group.is_some_and(|g| peer.gid == g || peer.groups.contains(&g)) {
            return Ok(());
        }
        Err(format!(
            "permission denied: `{command}` changes what usb9pfsd does; only root, the daemon's user and members of group \
             {ADMIN_GROUP} may ask for it (this request came from uid {}); `status` is open to group {GROUP}",
            peer.uid
        ))
    }
}

/// The daemon's end of the socket. Dropping it removes the socket file.
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of our socket file: never remove someone else's.
    id: (u64, u64),
    access: Access,
    max_connections: usize,
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
    } else if let Some(dir) = path.parent().filter(|d| made_by_us(d)) {
        // Made by an earlier run, perhaps before group usb9pfsd existed.
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
    Ok(Listener {
        listener,
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
        access: Access::system(),
        max_connections: MAX_CONNECTIONS,
    })
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

/// Whether `dir` looks like the socket directory `bind` makes: 0750 and
/// ours (never a shared directory such as /tmp or /run).
fn made_by_us(dir: &Path) -> bool {
    // SAFETY: geteuid cannot fail.
    let own = unsafe { libc::geteuid() };
    std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == own && m.mode() & 0o7777 == 0o750)
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

    /// Who may change things (default: [`Access::system`]).
    pub fn with_access(mut self, access: Access) -> Listener {
        self.access = access;
        self
    }

    /// Answers connections until dropped. `config_path` is the file a
    /// `reload` request re-reads.
    pub async fn serve(self, inputs: mpsc::UnboundedSender<Input>, config_path: Option<PathBuf>) {
        tracing::info!("control socket at {} (usb9pfsd status, usb9pfsd reload)", self.path.display());
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(self.max_connections));
        let access = std::sync::Arc::new(self.access.clone());
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        // Told without waiting (the socket buffer takes a
                        // short line), then closed at once.
                        let busy = Response::error(format!(
                            "usb9pfsd is answering {} control connections already; try again",
                            self.max_connections
                        ));
                        let _ = stream.try_write(&busy.to_line());
                        continue;
                    };
                    let (inputs, config_path, access) = (inputs.clone(), config_path.clone(), access.clone());
                    tokio::spawn(async move {
                        answer(stream, &inputs, config_path.as_deref(), &access).await;
                        drop(slot);
                    });
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
async fn answer(stream: UnixStream, inputs: &mpsc::UnboundedSender<Input>, config_path: Option<&Path>, access: &Access) {
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, read_line(&stream)).await {
        Err(_) => Response::error(format!("no request line within {} s", REQUEST_TIMEOUT.as_secs())),
        Ok(Err(why)) => Response::error(why),
        Ok(Ok(line)) => match parse(&line).and_then(|req| {
            let peer = Peer::of(&stream).map_err(|e| format!("cannot tell who is asking (SO_PEERCRED): {e}"))?;
            if KNOWN.contains(&req.command.as_str()) {
                access.check(&peer, &req.command).map_err(|why| {
                    tracing::warn!("control socket: {why}");
                    why
                })?;
            }
            Ok((req, peer))
        }) {
            Err(why) => Response::error(why),
            // Returns only if the re-exec failed (every board is then still
            // served here); otherwise the new image answers on this
            // connection, which crosses the exec.
            Ok((req, _)) if req.command == "reexec" => {
                use std::os::fd::AsFd;
                let reply = [(REPLY_NAME.to_string(), stream.as_fd())];
                match crate::daemon::succession::reexec(inputs, config_path, &reply).await {
                    Ok(()) => Response::error("re-exec returned without an answer"),
                    Err(e) => Response::error(e),
                }
            }
            Ok((req, peer)) => run(req, &peer, inputs, config_path).await,
        },
    };
    let text = response.to_line();
    if tokio::time::timeout(ANSWER_TIMEOUT, write_all(&stream, &text)).await.is_err() {
        tracing::debug!("control socket: a client did not take its answer");
    }
}

/// The commands this daemon answers.
const KNOWN: [&str; 5] = ["status", "reload", "reexec", "serve", "unserve"];

fn parse(line: &[u8]) -> Result<Request, String> {
    let req: Request = serde_json::from_slice(line).map_err(|e| format!("not a usb9pfsd control request: {e}"))?;
    if req.version != PROTOCOL {
        return Err(format!("protocol version {} is not supported (this usb9pfsd speaks version {PROTOCOL})", req.version));
    }
    Ok(req)
}

/// `serve` and `unserve`: the board and spec checked here, applied by the
/// supervisor.
async fn serve(req: Request, peer: &Peer, inputs: &mpsc::UnboundedSender<Input>) -> Result<ServeAnswer, String> {
    let board: BoardSel = req.board.as_deref().ok_or_else(|| format!("`{}` needs a board", req.command))?.parse()?;
    let (reply, answer) = oneshot::channel();
    let input = if req.command == "serve" {
        let spec = req.serve.ok_or("`serve` needs what to serve: a backend, an export, or both")?;
        spec.check()?;
        let since = crate::counters::rfc3339(std::time::SystemTime::now());
        Input::Serve(Serve { board, spec, by_uid: peer.uid, since }, reply)
    } else {
        Input::Unserve(board, reply)
    };
    inputs.send(input).map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}

async fn run(req: Request, peer: &Peer, inputs: &mpsc::UnboundedSender<Input>, config_path: Option<&Path>) -> Response {
    match req.command.as_str() {
        "serve" | "unserve" => match serve(req, peer, inputs).await {
            Ok(answer) => Response { served: Some(answer), ..Response::ok() },
            Err(e) => Response::error(e),
        },
        "status" => match status(inputs).await {
            Ok(report) => Response { status: Some(report), ..Response::ok() },
            Err(e) => Response::error(e),
        },
        "reload" => match reload(inputs, config_path).await {
            Ok(summary) => Response { reload: Some(summary), ..Response::ok() },
            Err(e) => Response::error(e),
        },
        other => Response::error(format!("unknown command {other:?} (this usb9pfsd knows {})", KNOWN.join(", "))),
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
    send(path, &Request::new(command))
}

/// The client's side for any request (`serve` carries arguments).
pub fn send(path: &Path, req: &Request) -> Result<Response, String> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| connect_error(path, &e))?;
    // A daemon that went away mid-request: for `reexec`, the new image
    // exited before it could answer (its log says why).
    let closed = || {
        format!(
            "usb9pfsd on {} closed the connection without an answer: it stopped, or a re-executed image could not start (see its log: journalctl -u usb9pfsd)",
            path.display()
        )
    };
    let io_err = |e: io::Error| match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => closed(),
        _ => format!("talking to usb9pfsd on {}: {e}", path.display()),
    };
    stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io_err)?;
    stream.set_write_timeout(Some(ANSWER_TIMEOUT)).map_err(io_err)?;
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io_err)?;
    let mut text = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut text).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("usb9pfsd on {} did not answer within {} s", path.display(), ANSWER_TIMEOUT.as_secs())
        }
        _ => io_err(e),
    })?;
    if text.is_empty() {
        return Err(closed());
    }
    let response: Response = serde_json::from_slice(&text).map_err(|e| {
        format!("usb9pfsd on {} answered something unreadable ({e}); is it the same version as this command?", path.display())
    })?;
    if response.version != PROTOCOL {
        return Err(format!("usb9pfsd on {} speaks control protocol {}, this command {PROTOCOL}", path.display(), response.version));
    }
    Ok(response)
}

/// Whether no daemon listens on `path`: no such file, or a socket nobody
/// accepts on (what `usb9pfsd status` reports as exit status 3).
pub fn absent(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Err(e) => e.kind() == io::ErrorKind::NotFound,
        Ok(m) if m.file_type().is_socket() => {
            matches!(std::os::unix::net::UnixStream::connect(path), Err(e) if e.kind() == io::ErrorKind::ConnectionRefused)
        }
        Ok(_) => false,
    }
}

/// Why connecting to the socket failed, for people.
pub fn connect_error(path: &Path, e: &io::Error) -> String {
    use std::os::unix::fs::FileTypeExt;
    let p = path.display();
    if std::fs::metadata(path).is_ok_and(|m| !m.file_type().is_socket()) {
        return format!("{p} is not a socket: give the daemon's control socket with --socket (default {DEFAULT_SOCKET})");
    }
    match e.kind() {
        io::ErrorKind::NotFound => format!("usb9pfsd is not running (no socket at {p})"),
        io::ErrorKind::ConnectionRefused => {
            format!("usb9pfsd is not running (nothing listens on {p})")
        }
        io::ErrorKind::PermissionDenied => {
            format!("permission denied on {p}: add yourself to group {GROUP}")
        }
        _ => format!("cannot reach usb9pfsd at {p}: {e}"),
    }
}

#[cfg(test)]
mod tests;
