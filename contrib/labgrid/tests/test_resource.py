"""USB9PFSBoard's udev matching, the exporter's published parameters, the
exporter's unserve on acquire and release, and the status parsing."""
import pytest

from labgrid.remote import exporter as lg_exporter

from labgrid_usb9pfsd import USB9PFSBoard, usb9pfsd as u
from labgrid_usb9pfsd.export import USB9PFSBoardExport, register


class Attrs(dict):
    def asstring(self, key):
        return self[key]


class Dev:
    """Just enough of a pyudev device for filter_match."""

    def __init__(self, sys_name, attrs, parent=None):
        self.sys_name = sys_name
        self.attributes = Attrs(attrs)
        self.parent = parent

    def find_parent(self, subsystem, devtype):
        return self.parent


def iface(port="1-1.2", num="00", triple=("ff", "ff", "09")):
    usbdev = Dev(port, {"serial": "0001-BOARD-A"})
    c, s, p = triple
    return Dev(f"{port}:1.{int(num, 16)}", {"bInterfaceClass": c, "bInterfaceSubClass": s,
                                            "bInterfaceProtocol": p, "bInterfaceNumber": num}, usbdev)


@pytest.mark.parametrize("kw,dev,want", [
    ({}, iface(), True),
    ({}, iface(triple=("ff", "ff", "00")), False),       # another vendor-specific function
    ({}, iface(triple=("08", "06", "50")), False),       # mass storage
    ({"port_path": "1-1.2"}, iface(), True),
    ({"port_path": "1-1"}, iface(), False),              # the hub above is not the board's port
    ({"port_path": "1-1.2", "interface_number": 1}, iface(num="01"), True),
    ({"port_path": "1-1.2", "interface_number": 1}, iface(num="00"), False),
])
def test_matches_usb9pfs_interfaces_by_port_and_number(kw, dev, want):
    board = USB9PFSBoard(None, None, **kw)
    assert board.match["DEVTYPE"] == "usb_interface"
    assert bool(board.filter_match(dev)) is want


def test_board_key():
    assert u.board_key("1-1.2", 0) == "1-1.2"
    assert u.board_key("1-1.2", None) == "1-1.2"
    # usb9pfsd has no port-path-and-interface name: interface > 0 by bus address
    assert u.board_key("1-1.2", 2, 1, 4) == "001-004#2"
    with pytest.raises(u.Usb9pfsdError, match="bus and device number unknown"):
        u.board_key("1-1.2", 2)
    assert u.names_of("1-1.2", 0, 1, 4, "S") == {"1-1.2", "path:1-1.2", "S", "serial:S", "001-004#0"}
    assert u.names_of("1-1.2", 1, 1, 4, None) == {"001-004#1"}


def _export(monkeypatch, present=True):
    register()
    assert lg_exporter.exports["USB9PFSBoard"] is USB9PFSBoardExport
    for name, value in (("path", "1-1.2" if present else None), ("interface", 0 if present else None),
                        ("busnum", 1), ("devnum", 4), ("vendor_id", 0x1d6b), ("model_id", 0x0109),
                        ("serial", "0001-BOARD-A"), ("avail", present)):
        monkeypatch.setattr(USB9PFSBoard, name, property(lambda self, v=value: v, lambda self, v: None),
                            raising=False)
    config = {"avail": False, "cls": "USB9PFSBoard", "params": {"port_path": "1-1.2"}}
    return USB9PFSBoardExport(config, host="exporter-1", proxy="exporter-1", proxy_required=False)


def test_export_publishes_the_network_form(fake, monkeypatch):
    exp = _export(monkeypatch)
    assert exp.data["cls"] == "NetworkUSB9PFSBoard"
    assert exp._get_params() == {"host": "exporter-1", "busnum": 1, "devnum": 4, "path": "1-1.2",
                                 "vendor_id": 0x1d6b, "model_id": 0x0109, "interface": 0,
                                 "serial": "0001-BOARD-A", "socket": "/run/usb9pfsd/control"}


def test_export_unserves_on_acquire_and_release(fake, monkeypatch):
    exp = _export(monkeypatch)
    exp.acquire("place-a")
    assert [c[0] for c in fake.calls] == ["status"]          # nothing served: nothing to forget
    # Served under any of the board's names (here: by serial, by hand), then released.
    fake.set(serves=[{"board": "0001-BOARD-A", "export": "/srv/x", "by_uid": 1000},
                     {"board": "1-1.3", "export": "/srv/other", "by_uid": 1000}])
    exp.release()
    assert fake.calls[1:] == [["status", "--json", "--socket", "/run/usb9pfsd/control"],
                              ["unserve", "0001-BOARD-A", "--socket", "/run/usb9pfsd/control"]]
    assert [s["board"] for s in fake.read()["serves"]] == ["1-1.3"]    # another board's: kept
    assert not exp.broken


def test_export_survives_usb9pfsd_saying_no(fake, monkeypatch, caplog):
    exp = _export(monkeypatch)
    fake.fail("status", 3, "no daemon")
    exp.acquire("place-a")
    exp.release()
    assert not exp.broken
    assert "usb9pfsd status --json exited 3: no daemon" in caplog.text


def test_export_board_absent_runs_nothing(fake, monkeypatch):
    exp = _export(monkeypatch, present=False)
    exp.acquire("place-a")
    exp.release()
    assert fake.calls == []


REPORT = {"daemon": {"serves": [{"board": "1-1", "export": "/srv/x"}]},
          "boards": [{"busaddr": "001-005", "interface": 0, "port_path": "1-2"},
                     {"busaddr": "001-004", "interface": 0, "port_path": "1-1",
                      "mount": {"state": "mounted"}}]}


def test_status_parsing_is_defensive():
    b = u.find_board(REPORT, "1-1", 0)
    assert b["busaddr"] == "001-004" and u.mount_state(b) == "mounted"
    assert u.find_board(REPORT, "1-1", 1) is None
    assert u.find_serve(REPORT, "1-1")["export"] == "/srv/x"
    assert u.find_serve(REPORT, "1-2") is None
    # Older or changed reports: missing pieces read as unknown.
    assert u.find_board({}, "1-1") is None
    assert u.find_serve({"daemon": {}}, "1-1") is None
    assert u.mount_state({"mount": None}) is None
    assert u.mount_state(None) is None
    # No port paths in the report: by bus address.
    old = {"boards": [{"busaddr": "001-004", "interface": 0}]}
    assert u.find_board(old, "1-1", 0, busaddr="001-004") is not None
    with pytest.raises(u.Usb9pfsdError):
        u.parse_status("usb9pfsd: not running")
