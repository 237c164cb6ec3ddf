"""The exporter side: publish a USB9PFSBoard as a NetworkUSB9PFSBoard.

labgrid 26's exporter knows its export classes from a module-level table
(`labgrid.remote.exporter.exports`, class name -> export class) and has no
plugin hook (labgrid issue #1205).  `register()` adds this package's entry to
that table; `labgrid-usb9pfsd-exporter` (exporter.py) calls it and then runs
labgrid's own exporter, so an exporter config can say `USB9PFSBoard:`.

On release of the place, the exporter (not the client, which may have crashed
or never called unserve) asks its usb9pfsd to forget the board's runtime
mapping, and it does the same when a place acquires the board, so a new
holder never inherits the previous holder's tree.  The exporter's user must be
privileged on the control socket for that (root, the daemon's user or group
usb9pfsd-admin); if it is not, a warning says so and nothing else changes.

Must never: fail an acquire or a release because usb9pfsd said no (a broken
export blocks the place until the exporter restarts), or unserve when a board
merely leaves the bus (a board rebooting into its served tree re-enumerates).
"""

import logging
import shutil
import subprocess

import attr
from labgrid.remote import exporter as lg_exporter

from .resource import USB9PFSBoard
from .usb9pfsd import Usb9pfsdError, parse_status
from .usb9pfsd import names_of as board_names

EXPORT_NAME = "USB9PFSBoard"
UNSERVE_TIMEOUT = 10.0


@attr.s(eq=False)
class USB9PFSBoardExport(lg_exporter.ResourceExport):
    """Publishes one usb9pfs board; unserves it on acquire and on release."""

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        self.data["cls"] = "NetworkUSB9PFSBoard"
        self.local = USB9PFSBoard(target=None, name=None, **self.local_params)
        self.usb9pfsd = shutil.which("usb9pfsd") or "usb9pfsd"

    def _get_params(self):
        return {
            "host": self.host,
            "busnum": self.local.busnum,
            "devnum": self.local.devnum,
            "path": self.local.path,
            "vendor_id": self.local.vendor_id,
            "model_id": self.local.model_id,
            "interface": self.local.interface,
            "serial": self.local.serial,
            "socket": self.local.socket,
        }

    def acquire(self, *args, **kwargs):
        super().acquire(*args, **kwargs)
        self._unserve("acquired")

    def release(self, *args, **kwargs):
        super().release(*args, **kwargs)
        self._unserve("released")

    def _unserve(self, why):
        """Forget every runtime mapping usb9pfsd has for this board, under
        whichever name it was set (port path, serial, bus address)."""
        local = self.local
        if local.path is None:
            self.logger.info("%s while not on the bus: no mapping to forget", why)
            return
        names = board_names(local.path, local.interface, local.busnum, local.devnum, local.serial)
        proc = self._usb9pfsd(why, ["status", "--json"])
        if proc is None:
            return
        try:
            serves = (parse_status(proc.stdout).get("daemon") or {}).get("serves") or []
        except Usb9pfsdError as e:
            self.logger.warning("%s: %s", why, e)
            return
        for s in serves:
            if isinstance(s, dict) and s.get("board") in names:
                if self._usb9pfsd(why, ["unserve", s["board"]]) is not None:
                    self.logger.info("%s: usb9pfsd unserve %s done (it served %s, set by uid %s)",
                                     why, s["board"], s.get("export") or s.get("backend"), s.get("by_uid"))

    def _usb9pfsd(self, why, args):
        cmd = [self.usb9pfsd] + args + ["--socket", self.local.socket]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=UNSERVE_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as e:
            self.logger.warning("%s: could not run %s: %s", why, " ".join(cmd), e)
            return None
        if proc.returncode != 0:
            self.logger.warning(
                "%s: usb9pfsd %s exited %d: %s (is usb9pfsd running, and the exporter's user root, "
                "usb9pfsd's user or in group usb9pfsd-admin?)",
                why, " ".join(args), proc.returncode, proc.stderr.strip(),
            )
            return None
        return proc


def register():
    """Make `USB9PFSBoard` known to labgrid's exporter (idempotent)."""
    lg_exporter.exports[EXPORT_NAME] = USB9PFSBoardExport


logging.getLogger(__name__).addHandler(logging.NullHandler())
