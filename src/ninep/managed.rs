//! A managed 9P server: for a board mapped to a directory with no server of
//! its own (`export = DIR` and no `backend`, or `usb9pfsd serve BOARD
//! --export DIR`), one `diod` per connection, started here over a socketpair
//! (diod's `--rfdno/--wfdno`), so there is no network listener and nothing
//! another local user could connect to. The connection's end is the server's
//! end: dropping the [`ManagedServer`] closes our side (diod exits on EOF)
//! and kills and reaps whatever is left, so no diod outlives its session.
//!
//! Who diod runs as: the owner of the exported directory, with every board
//! user squashed to it (`--allsquash`; diod not running as root serves every
//! attach as its own uid). So a developer's tree owned by a normal user is
//! served as that user — files the board creates are that user's — and a
//! managed server never runs as root: a tree owned by root is refused (diod
//! resolves paths on the host, and a board can plant symlinks; as root that
//! would reach the whole host). To run diod as another user the daemon
//! needs CAP_SETUID and CAP_SETGID (root has them; the hardened unit does
//! not, see docs/serve.md "Privileges"); the child drops every
//! capability before diod starts.
//!
//! It must never start a server as root, leave one running after its
//! connection is gone, or give a server any descriptor but its socket.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Where Debian's diod package puts the server; else `diod` on PATH.
pub const DIOD: &str = "/usr/sbin/diod";
/// diod's worker threads per export: a board has one request in flight.
const DIOD_THREADS: &str = "2";
/// The descriptor diod is told to serve (`--rfdno 3 --wfdno 3`).
const CHILD_FD: RawFd = 3;

/// One running managed diod; killed and reaped when dropped.
#[derive(Debug)]
pub struct ManagedServer {
    child: Server,
}

#[derive(Debug)]
enum Server {
    /// Started by this process image.
    Spawned(Child),
    /// Started by the image this process re-executed from (same pid, so
    /// still our child): known by its pid from the hand-over state.
    TakenOver(libc::pid_t),
}

impl ManagedServer {
    /// The diod's process id (tests, logs, the hand-over state).
    pub fn pid(&self) -> u32 {
        match &self.child {
            Server::Spawned(c) => c.id(),
            Server::TakenOver(pid) => *pid as u32,
        }
    }

    /// The diod a predecessor image of this process started for a session
    /// it handed over, if `pid` is still a child of this process (after an
    /// in-place re-exec it is; after a restart it is not ours to reap, and
    /// systemd has stopped it with the old process's cgroup anyway).
    pub fn taken_over(pid: u32) -> Option<ManagedServer> {
        let pid = libc::pid_t::try_from(pid).ok().filter(|p| *p > 0)?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command may hold spaces and parentheses: fields follow the last ')'.
        let ppid: libc::pid_t = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: getpid cannot fail.
        (ppid == unsafe { libc::getpid() }).then_some(ManagedServer { child: Server::TakenOver(pid) })
    }
}

impl Drop for ManagedServer {
    fn drop(&mut self) {
        // Our end of the socket is closed before this runs (see Backend's
        // field order), so diod is on its way out; a diod stuck in the
        // file system is killed rather than waited for.
        match &mut self.child {
            Server::Spawned(child) => {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            Server::TakenOver(pid) => {
                // SAFETY: `pid` is our child (checked when taken over) and
                // nobody else reaps it, so the pid cannot have been reused.
                unsafe {
                    libc::kill(*pid, libc::SIGKILL);
                    libc::waitpid(*pid, std::ptr::null_mut(), 0);
                }
            }
        }
    }
}

/// Who a managed server for `dir` runs as: the directory's owner and group.
/// Refuses what must not be served: not a directory, owned by root.
pub fn owner(dir: &Path) -> io::Result<(u32, u32)> {
    let meta = std::fs::metadata(dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "managed export {}: {e}; the directory must exist and be visible to the daemon (under the systemd unit, /home, /root and /tmp are hidden unless a drop-in allows them: docs/serve.md \"Privileges\" (/usr/share/doc/usb9pfsd/serve.md))",
                dir.display()
            ),
        )
    })?;
    if !meta.is_dir() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("managed export {}: not a directory", dir.display())));
    }
    if meta.uid() == 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "managed export {}: owned by root, and a managed 9P server never runs as root (a board could reach the whole host through a symlink it plants); chown the tree to the user who builds it (chown -R USER: {}), or serve it from a 9P server you run yourself (backend =)",
                dir.display(),
                dir.display()
            ),
        ));
    }
    if !has_account(meta.uid()) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "managed export {}: its owner, uid {}, has no user account on this host, and diod refuses to run as a uid it cannot look up; chown the tree to an existing user (getent passwd shows them)",
                dir.display(),
                meta.uid()
            ),
        ));
    }
    Ok((meta.uid(), meta.gid()))
}

/// Whether `uid` has a passwd entry (getpwuid_r): diod running as a user
/// looks itself up and exits if it cannot.
fn has_account(uid: u32) -> bool {
    let mut len = 1024;
    while len <= 1 << 20 {
        let mut buf = vec![0 as libc::c_char; len];
        // SAFETY: a zeroed `passwd` is a valid out-parameter; getpwuid_r
        // writes only into it and into `buf`, whose length we pass.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        match unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) } {
            0 => return !found.is_null(),
            libc::ERANGE => len *= 2,
            _ => return false,
        }
    }
    false
}

/// The diod to run: [`DIOD`] if it is there, else whatever `diod` PATH finds.
fn diod_program() -> PathBuf {
    if Path::new(DIOD).exists() {
        PathBuf::from(DIOD)
    } else {
        PathBuf::from("diod")
    }
}

/// Starts a diod exporting `dir` and returns our end of its connection.
pub fn spawn(dir: &Path) -> io::Result<(UnixStream, ManagedServer)> {
    let (uid, gid) = owner(dir)?;
    let (ours, theirs) = UnixStream::pair()?;
    let fd = theirs.as_raw_fd();
    let switch_user = uid != unsafe { libc::geteuid() };
    let mut cmd = Command::new(diod_program());
    cmd.arg("--foreground")
        .arg("--no-auth")
        .arg("--allsquash")
        .args(["--rfdno", "3", "--wfdno", "3"])
        .args(["--nwthreads", DIOD_THREADS])
        // No config file: only what is given here applies.
        .args(["--config-file", "/dev/null"])
        .args(["--logdest", "stderr"])
        .arg("--export")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: only async-signal-safe calls (dup2, fcntl, setgroups, setgid,
    // setuid, prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd == CHILD_FD {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(fd, CHILD_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            if switch_user {
                let groups = [gid as libc::gid_t];
                if libc::setgroups(1, groups.as_ptr()) < 0 || libc::setgid(gid) < 0 || libc::setuid(uid) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Nothing the daemon was given (ambient capabilities under a
            // unit that grants them) passes to diod.
            if libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0
                && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        let why = if e.kind() == io::ErrorKind::PermissionDenied && switch_user {
            format!(
                "cannot run diod as uid {uid} gid {gid}, the owner of {}: {e}; the daemon needs CAP_SETUID and CAP_SETGID for that (run it as root, or add the unit drop-in in docs/serve.md \"Privileges\" (/usr/share/doc/usb9pfsd/serve.md)), or chown the tree to the daemon's own user",
                dir.display()
            )
        } else if e.kind() == io::ErrorKind::NotFound {
            format!("cannot start diod for managed export {}: {e}; install it (apt install diod)", dir.display())
        } else {
            format!("cannot start diod for managed export {}: {e}", dir.display())
        };
        io::Error::new(e.kind(), why)
    })?;
    drop(theirs);
    Ok((ours, ManagedServer { child: Server::Spawned(child) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_reexec_only_a_child_of_this_process_is_taken_over_and_it_is_reaped_with_the_session() {
        assert!(ManagedServer::taken_over(1).is_none(), "init is nobody's child to reap");
        assert!(ManagedServer::taken_over(0).is_none());
        let child = Command::new("sleep").arg("60").spawn().expect("sleep");
        let pid = child.id();
        // As after an exec: the new image has the pid, not the Child.
        std::mem::forget(child);
        let server = ManagedServer::taken_over(pid).expect("our child");
        assert_eq!(server.pid(), pid);
        drop(server);
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "killed and reaped, no zombie left");
    }

    #[test]
    fn a_tree_owned_by_root_or_missing_or_not_a_directory_is_refused_with_what_to_do() {
        if unsafe { libc::geteuid() } == 0 {
            let root_owned = tempfile::tempdir().expect("tempdir");
            let e = owner(root_owned.path()).expect_err("root-owned");
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
            assert!(e.to_string().contains("never runs as root"), "{e}");
            assert!(e.to_string().contains("chown -R"), "{e}");
        }
        let e = owner(Path::new("/nonexistent/usb9pfsd-managed")).expect_err("missing");
        assert!(e.to_string().contains("must exist"), "{e}");
        if unsafe { libc::geteuid() } == 0 {
            let orphan = tempfile::tempdir().expect("tempdir");
            std::os::unix::fs::chown(orphan.path(), Some(4_000_000_007), Some(4_000_000_007)).expect("chown");
            let e = owner(orphan.path()).expect_err("no such user");
            assert!(e.to_string().contains("no user account"), "{e}");
        }
        let e = owner(Path::new("/etc/hostname")).expect_err("a file");
        assert!(e.to_string().contains("not a directory") || e.to_string().contains("owned by root"), "{e}");
    }
}
