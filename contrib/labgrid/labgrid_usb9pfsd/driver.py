"""USB9PFSDriver: tell the exporter's usb9pfsd what to serve to a board.

Runs `usb9pfsd serve/unserve/status --json` where the board is: locally for a
USB9PFSBoard, through the resource's command prefix (labgrid's ssh connection
to the exporter) for a NetworkUSB9PFSBoard, the way labgrid's other drivers
run their tools.  A local tree given to `serve(..., stage=True)` is copied to
the exporter first, into labgrid's per-user cache (/var/cache/labgrid/USER/),
named by the hash of its contents like labgrid's file providers name staged
files, and unpacked there once.

Must never: hold a place's board mapped after `unserve()` or deactivation, or
report a board mounted from a status that does not say so.
"""

import getpass
import hashlib
import io
import os
import shlex
import subprocess
import tarfile
import time

import attr
from labgrid.driver.common import Driver
from labgrid.factory import target_factory
from labgrid.resource.common import NetworkResource
from labgrid.step import step
from labgrid.util.timeout import Timeout

from . import usb9pfsd as u

COMMAND_TIMEOUT = 30.0
STAGE_TIMEOUT = 600.0
POLL_INTERVAL = 0.5
# labgrid's per-user cache on an exporter, where its file providers stage files.
STAGE_ROOT = "/var/cache/labgrid"


@target_factory.reg_driver
@attr.s(eq=False)
class USB9PFSDriver(Driver):
    """Serve a directory to a usb9pfs board through its host's usb9pfsd.

    Args:
        unserve_on_deactivate (bool): unserve when the driver is deactivated
            (the exporter also unserves when the place is released)
    """

    bindings = {"board": {"USB9PFSBoard", "NetworkUSB9PFSBoard"}}

    unserve_on_deactivate = attr.ib(default=True, validator=attr.validators.instance_of(bool))

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        self.tool = "usb9pfsd"
        if self.target is not None and self.target.env:
            self.tool = self.target.env.config.get_tool("usb9pfsd") or "usb9pfsd"
        self._served = False

    def on_deactivate(self):
        if self.unserve_on_deactivate and self._served:
            self.unserve()

    # -- what runs where ----------------------------------------------------

    @property
    def _where(self):
        if isinstance(self.board, NetworkResource):
            return f"exporter host {self.board.host}"
        return "this host"

    @property
    def key(self):
        """The BOARD argument usb9pfsd is given for this board."""
        return u.board_key(self.board.path, self.board.interface, self.board.busnum, self.board.devnum)

    def _run(self, args, stdin=None, timeout=COMMAND_TIMEOUT):
        cmd = self.board.wrap_command([self.tool] + args + ["--socket", self.board.socket])
        self.logger.debug("running %s", cmd)
        try:
            proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise u.Usb9pfsdError(f"usb9pfsd {' '.join(args)} on {self._where}: no answer in {timeout:.0f} s") from e
        except OSError as e:
            raise u.Usb9pfsdError(f"could not run {cmd[0]} for usb9pfsd on {self._where}: {e}") from e
        out = proc.stdout.decode("utf-8", "replace")
        err = proc.stderr.decode("utf-8", "replace")
        if proc.returncode != 0:
            raise u.explain(args, proc.returncode, err, self._where)
        return out

    # -- the driver's API ---------------------------------------------------

    @Driver.check_active
    @step(args=["path"], result=True)
    def serve(self, path, stage=False, read_only=False, uid=None, gid=None):
        """Serve a directory to the board from its next mount on.

        path is a directory on the board's host (the exporter), or with
        stage=True a directory here that is copied there first.  Returns the
        directory served (on the exporter)."""
        if stage:
            path = self.stage(path)
        self._run(u.serve_args(self.key, export=path, read_only=read_only, uid=uid, gid=gid))
        self._served = True
        return path

    @Driver.check_active
    @step(args=["address"])
    def serve_backend(self, address, read_only=False, uid=None, gid=None):
        """Map the board to a 9P server the exporter can reach (HOST:PORT or unix:PATH)."""
        self._run(u.serve_args(self.key, backend=address, read_only=read_only, uid=uid, gid=gid))
        self._served = True

    @Driver.check_active
    @step()
    def unserve(self):
        """Forget the runtime mapping (the board's config applies again from its next mount)."""
        self._run(["unserve", self.key])
        self._served = False

    @Driver.check_active
    def status(self):
        """This board's entry of `usb9pfsd status --json` with its runtime
        mapping under "serve" (None when it has none); None when usb9pfsd does
        not see the board."""
        report = u.parse_status(self._run(["status", "--json"]))
        busaddr = None
        if self.board.busnum is not None and self.board.devnum is not None:
            busaddr = f"{self.board.busnum:03d}-{self.board.devnum:03d}"
        board = u.find_board(report, self.board.path, self.board.interface, busaddr)
        if board is None:
            return None
        board = dict(board)
        board["serve"] = u.find_serve(report, self.key, self.board.path)
        return board

    @Driver.check_active
    @step(args=["timeout"])
    def wait_mounted(self, timeout=60.0):
        """Wait until usb9pfsd reports the board mounted; returns its status.
        A mount usb9pfsd refused fails at once with the reason."""
        deadline = Timeout(float(timeout))
        last = None
        while True:
            last = self.status()
            state = u.mount_state(last)
            if state == "mounted":
                return last
            if state == "refused":
                raise u.Usb9pfsdError(
                    f"usb9pfsd refused the mount of board {self.key} on {self._where}: {last.get('mount')}")
            if deadline.expired:
                seen = "not seen by usb9pfsd" if last is None else f"state {last.get('state')}, mount {last.get('mount')}"
                raise TimeoutError(f"board {self.key} on {self._where} not mounted after {timeout} s ({seen})")
            # usb9pfsd has no event stream to wait on: ask again shortly.
            time.sleep(min(POLL_INTERVAL, deadline.remaining))

    @Driver.check_active
    @step(args=["local_dir"], result=True)
    def stage(self, local_dir):
        """Copy a local directory to the board's host; returns its path there.

        A local board serves the directory in place."""
        if not os.path.isdir(local_dir):
            raise FileNotFoundError(f"{local_dir} is not a directory here: nothing to stage")
        if not isinstance(self.board, NetworkResource):
            return os.path.realpath(local_dir)
        data = pack_tree(local_dir)
        digest = hashlib.sha256(data).hexdigest()
        remote = f"{STAGE_ROOT}/{getpass.getuser()}/usb9pfs-{digest}"
        script = (
            "set -e; d=" + shlex.quote(remote) + "; "
            'if [ -e "$d/.staged" ]; then cat >/dev/null; exit 0; fi; '
            'rm -rf "$d.part"; mkdir -p "$d.part/tree"; tar -x -C "$d.part/tree"; '
            'touch "$d.part/.staged"; rm -rf "$d"; mv "$d.part" "$d"'
        )
        cmd = self.board.wrap_command(["sh", "-c", script])
        try:
            proc = subprocess.run(cmd, input=data, capture_output=True, timeout=STAGE_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise u.Usb9pfsdError(f"staging {local_dir} to {self._where} failed: {e}") from e
        if proc.returncode != 0:
            raise u.Usb9pfsdError(
                f"staging {local_dir} to {remote} on {self._where} failed (exit {proc.returncode}): "
                f"{proc.stderr.decode('utf-8', 'replace').strip()}")
        return remote + "/tree"


def pack_tree(local_dir):
    """The directory as an uncompressed tar, the same bytes for the same tree
    (sorted names, ownership left out: the board sees the exporter's owner or
    usb9pfsd's squash)."""
    buf = io.BytesIO()

    def clean(info):
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for root, dirs, files in os.walk(local_dir):
            dirs.sort()
            for name in sorted(dirs + files):
                full = os.path.join(root, name)
                tar.add(full, arcname=os.path.relpath(full, local_dir), recursive=False, filter=clean)
    return buf.getvalue()
