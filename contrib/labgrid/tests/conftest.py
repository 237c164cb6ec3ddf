"""Fixtures: a fake usb9pfsd on PATH with a state file, a fake ssh prefix, and
targets with a local or a network usb9pfs board bound to the driver."""
import json
import os
import pathlib

import pytest
from labgrid import Target

from labgrid_usb9pfsd import NetworkUSB9PFSBoard, USB9PFSBoard, USB9PFSDriver

HERE = pathlib.Path(__file__).resolve().parent

BOARD = {"serial": "0001-BOARD-A", "busaddr": "001-004", "interface": 0, "port_path": "1-1",
         "state": "idle", "mount": None}


class Fake:
    def __init__(self, path):
        self.path = path
        self.write({"calls": [], "boards": [dict(BOARD)], "serves": [], "exit": {}, "mount_after": 0})

    def read(self):
        return json.loads(self.path.read_text())

    def write(self, state):
        self.path.write_text(json.dumps(state))

    def set(self, **kw):
        s = self.read()
        s.update(kw)
        self.write(s)

    def fail(self, cmd, code, stderr):
        s = self.read()
        s["exit"][cmd] = [code, stderr]
        self.write(s)

    @property
    def calls(self):
        return self.read()["calls"]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "usb9pfsd").symlink_to(HERE / "fake-usb9pfsd")
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_USB9PFSD_STATE", str(tmp_path / "state.json"))
    monkeypatch.setenv("FAKE_SSH_LOG", str(tmp_path / "ssh.log"))
    return Fake(tmp_path / "state.json")


@pytest.fixture
def local_driver(fake, monkeypatch):
    # No udev device in a unit test: stand in for the matched interface.
    for name, value in (("path", "1-1"), ("interface", 0), ("busnum", 1), ("devnum", 4)):
        monkeypatch.setattr(USB9PFSBoard, name, property(lambda self, v=value: v))
    t = Target("local")
    board = USB9PFSBoard(t, None, port_path="1-1")
    board.avail = True
    d = USB9PFSDriver(t, None)
    t.activate(d)
    yield d
    t.deactivate_all_drivers()


@pytest.fixture
def remote_driver(fake, monkeypatch):
    monkeypatch.setattr(NetworkUSB9PFSBoard, "command_prefix",
                        property(lambda self: [str(HERE / "fake-ssh"), self.host, "--"]))
    # The place manager needs a coordinator; the test stands in for it.
    monkeypatch.setattr(NetworkUSB9PFSBoard, "poll", lambda self: None)
    t = Target("remote")
    board = NetworkUSB9PFSBoard(t, None, host="exporter-1", busnum=1, devnum=4, path="1-1",
                                vendor_id=0x1d6b, model_id=0x0109, interface=0,
                                serial="0001-BOARD-A", socket="/run/usb9pfsd/control")
    board.avail = True
    d = USB9PFSDriver(t, None)
    t.activate(d)
    yield d
    t.deactivate_all_drivers()
