"""What this package knows about usb9pfsd's command line and status report.

One place for the commands the driver and the exporter run (`serve`,
`unserve`, `status --json`), the board key they pass, the meaning of the exit
codes, and how a board and its runtime mapping are found in `status --json`
(read defensively: a field that is missing reads as unknown, never as an
error).

Must never: run anything (callers run the commands, locally or through a
resource's command prefix) or guess a board that the status does not show.
"""

import json

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3


class Usb9pfsdError(Exception):
    """usb9pfsd refused or failed; the message says what to do."""

    def __init__(self, message, returncode=None, stderr=""):
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


def board_key(port_path, interface=None, busnum=None, devnum=None):
    """The BOARD argument for serve/unserve.

    The port path: the one name of a board that survives its re-enumeration
    (a reset, a power cycle: bus and device numbers change) and the one this
    resource is matched by. usb9pfsd's port path names every usb9pfs
    interface of the device, and it has no port-path-and-interface form, so
    interface N > 0 (a gadget with several usb9pfs functions) is named
    `BBB-DDD#N`, which holds only until the board re-enumerates."""
    if interface is None or interface == 0:
        return port_path
    if busnum is None or devnum is None:
        raise Usb9pfsdError(f"board {port_path} interface {interface}: bus and device number unknown "
                            "(is the board plugged?), and usb9pfsd names interface > 0 only by them")
    return f"{int(busnum):03d}-{int(devnum):03d}#{interface}"


def names_of(port_path, interface=None, busnum=None, devnum=None, serial=None):
    """Every BOARD spelling usb9pfsd may have recorded a serve of this board
    under (its `serves` list keeps the caller's spelling)."""
    names = set()
    if port_path:
        if not interface:
            names |= {port_path, f"path:{port_path}"}
        if serial:
            names |= {serial, f"serial:{serial}"}
    if busnum is not None and devnum is not None and interface is not None:
        names.add(f"{int(busnum):03d}-{int(devnum):03d}#{interface}")
    return names


def serve_args(key, export=None, backend=None, read_only=False, uid=None, gid=None):
    if (export is None) == (backend is None):
        raise ValueError("serve needs exactly one of export (a directory) or backend (a 9P server address)")
    args = ["serve", key]
    args += ["--export", export] if export is not None else ["--backend", backend]
    if read_only:
        args.append("--read-only")
    if uid is not None:
        args += ["--uid", str(int(uid))]
    if gid is not None:
        args += ["--gid", str(int(gid))]
    return args


def explain(args, returncode, stderr, where):
    """An exception for a failed usb9pfsd command, saying what to do."""
    what = "usb9pfsd " + " ".join(args)
    reason = stderr.strip() or "(no message)"
    if returncode == EXIT_NOT_RUNNING:
        msg = f"{what} on {where}: usb9pfsd is not running there ({reason}); start it (systemctl start usb9pfsd)"
    elif returncode == EXIT_REFUSED:
        msg = (f"{what} on {where} was refused: {reason}. Changing a board's mapping needs root, "
               "usb9pfsd's user or group usb9pfsd-admin on that host")
    elif returncode == EXIT_USAGE:
        msg = f"{what} on {where}: usb9pfsd did not understand the command ({reason}); is it too old for serve/unserve?"
    elif returncode == 127:
        msg = f"{what} on {where}: usb9pfsd is not installed there (or not on PATH): {reason}"
    else:
        msg = f"{what} on {where} exited {returncode}: {reason}"
    return Usb9pfsdError(msg, returncode, stderr)


def parse_status(text):
    try:
        report = json.loads(text)
    except ValueError as e:
        raise Usb9pfsdError(f"usb9pfsd status --json printed no JSON ({e}): {text[:200]!r}") from e
    if not isinstance(report, dict):
        raise Usb9pfsdError(f"usb9pfsd status --json printed {type(report).__name__}, not an object")
    return report


def _get(d, key):
    return d.get(key) if isinstance(d, dict) else None


def find_board(report, port_path, interface=None, busaddr=None):
    """The board's entry in a status report, or None.  Matched by port path
    (and interface when known); by bus address when the status has no port
    paths."""
    boards = _get(report, "boards")
    if not isinstance(boards, list):
        return None
    for b in boards:
        if not isinstance(b, dict):
            continue
        path = b.get("port_path")
        if path is not None:
            if path != port_path:
                continue
        elif busaddr is None or b.get("busaddr") != busaddr:
            continue
        if interface is not None and b.get("interface") is not None and b.get("interface") != interface:
            continue
        return b
    return None


def find_serve(report, key, port_path=None):
    """The runtime mapping (`serve`) for this board, or None."""
    serves = _get(_get(report, "daemon"), "serves")
    if not isinstance(serves, list):
        return None
    names = {key, port_path} - {None}
    for s in serves:
        if isinstance(s, dict) and s.get("board") in names:
            return s
    return None


def mount_state(board):
    """"mounted", "refused", another state usb9pfsd reports, or None."""
    mount = _get(board, "mount")
    if isinstance(mount, dict):
        return mount.get("state")
    return None
