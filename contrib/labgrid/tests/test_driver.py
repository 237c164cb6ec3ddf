"""USB9PFSDriver against a fake usb9pfsd: the commands it runs, locally and
through a command prefix, and how it reads usb9pfsd's answers."""
import hashlib
import os

import pytest

import labgrid_usb9pfsd.driver as driver_mod
from labgrid_usb9pfsd import Usb9pfsdError
from labgrid_usb9pfsd.usb9pfsd import serve_args

SOCK = ["--socket", "/run/usb9pfsd/control"]


def test_serve_runs_usb9pfsd_serve_by_port_path(local_driver, fake, tmp_path):
    served = local_driver.serve(str(tmp_path))
    assert served == str(tmp_path)
    assert fake.calls == [["serve", "1-1", "--export", str(tmp_path)] + SOCK]


def test_serve_options(local_driver, fake):
    local_driver.serve("/srv/x", read_only=True, uid=1000, gid=1000)
    assert fake.calls[-1] == ["serve", "1-1", "--export", "/srv/x", "--read-only",
                              "--uid", "1000", "--gid", "1000"] + SOCK
    local_driver.serve("/srv/x", gid=100)
    assert fake.calls[-1] == ["serve", "1-1", "--export", "/srv/x", "--gid", "100"] + SOCK
    with pytest.raises(ValueError, match="exactly one"):
        serve_args("1-1", export="/x", backend="h:1")


def test_serve_backend(local_driver, fake):
    local_driver.serve_backend("127.0.0.1:5640")
    assert fake.calls[-1] == ["serve", "1-1", "--backend", "127.0.0.1:5640"] + SOCK


def test_unserve_and_status(local_driver, fake):
    local_driver.serve("/srv/x")
    st = local_driver.status()
    assert st["busaddr"] == "001-004"
    assert st["serve"]["export"] == "/srv/x"
    local_driver.unserve()
    assert fake.calls[-1] == ["unserve", "1-1"] + SOCK
    assert local_driver.status()["serve"] is None


def test_deactivate_unserves_what_it_served(local_driver, fake):
    local_driver.serve("/srv/x")
    local_driver.target.deactivate(local_driver)
    assert fake.calls[-1] == ["unserve", "1-1"] + SOCK


def test_deactivate_without_serve_runs_nothing(local_driver, fake):
    local_driver.target.deactivate(local_driver)
    assert fake.calls == []


def test_wait_mounted(local_driver, fake, monkeypatch):
    monkeypatch.setattr(driver_mod, "POLL_INTERVAL", 0.01)
    fake.set(mount_after=3)
    local_driver.serve("/srv/x")
    st = local_driver.wait_mounted(timeout=10.0)
    assert st["mount"]["state"] == "mounted"
    assert sum(1 for c in fake.calls if c[0] == "status") == 4


def test_wait_mounted_times_out(local_driver, fake, monkeypatch):
    monkeypatch.setattr(driver_mod, "POLL_INTERVAL", 0.01)
    fake.set(mount_after=-1)
    local_driver.serve("/srv/x")
    with pytest.raises(TimeoutError, match="1-1 on this host not mounted"):
        local_driver.wait_mounted(timeout=0.2)


def test_wait_mounted_refused_fails_at_once(local_driver, fake):
    fake.set(mount_after="refused")
    local_driver.serve("/srv/x")
    with pytest.raises(Usb9pfsdError, match="refused the mount"):
        local_driver.wait_mounted(timeout=30.0)


def test_board_not_seen_by_usb9pfsd(local_driver, fake):
    fake.set(boards=[])
    assert local_driver.status() is None


@pytest.mark.parametrize("code,words", [
    (1, "was refused: not allowed.*usb9pfsd-admin"),
    (2, "did not understand"),
    (3, "not running there"),
])
def test_exit_codes_say_what_to_do(local_driver, fake, code, words):
    fake.fail("serve", code, "not allowed")
    with pytest.raises(Usb9pfsdError, match=words) as e:
        local_driver.serve("/srv/x")
    assert e.value.returncode == code


def test_stage_local_board_serves_in_place(local_driver, fake, tmp_path):
    assert local_driver.serve(str(tmp_path), stage=True) == str(tmp_path)


def _tree(root):
    (root / "sub dir").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "sub dir" / "b.bin").write_bytes(os.urandom(70000))
    os.symlink("a.txt", root / "link")
    return root


def test_remote_commands_go_through_the_prefix_quoted(remote_driver, fake, tmp_path):
    remote_driver.serve("/srv/with space")
    assert fake.calls[-1] == ["serve", "1-1", "--export", "/srv/with space"] + SOCK
    assert (tmp_path / "ssh.log").read_text().split() == ["exporter-1"]


def test_remote_stage_copies_the_tree_once(remote_driver, fake, tmp_path, monkeypatch):
    monkeypatch.setattr(driver_mod, "STAGE_ROOT", str(tmp_path / "cache"))
    src = _tree(tmp_path / "src")
    served = remote_driver.serve(str(src), stage=True)
    assert served.startswith(str(tmp_path / "cache") + "/")
    assert fake.calls[-1] == ["serve", "1-1", "--export", served] + SOCK
    for rel in ("a.txt", "sub dir/b.bin"):
        got = hashlib.sha256(open(os.path.join(served, rel), "rb").read()).hexdigest()
        assert got == hashlib.sha256((src / rel).read_bytes()).hexdigest()
    assert os.readlink(os.path.join(served, "link")) == "a.txt"
    # The same tree again: the same place, not unpacked again.
    marker = os.path.join(os.path.dirname(served), ".staged")
    before = os.stat(marker).st_mtime_ns
    assert remote_driver.stage(str(src)) == served
    assert os.stat(marker).st_mtime_ns == before
    # A changed tree: somewhere else.
    (src / "a.txt").write_bytes(b"beta\n")
    assert remote_driver.stage(str(src)) != served


def test_stage_missing_dir(remote_driver, tmp_path):
    with pytest.raises(FileNotFoundError):
        remote_driver.stage(str(tmp_path / "nope"))
