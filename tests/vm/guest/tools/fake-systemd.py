#!/usr/bin/env python3
"""A stand-in for systemd's service manager in the VM rig (whose guest has
no systemd as PID 1): it runs usb9pfsd with NOTIFY_SOCKET and FDSTORE set,
keeps the descriptors the daemon stores (FDSTORE=1 + FDNAME=, removed by
FDSTOREREMOVE=1), and on SIGUSR1 restarts the daemon the way
`systemctl restart` does on systemd 252: SIGTERM, wait for the exit, start
again with the stored descriptors as LISTEN_FDS/LISTEN_FDNAMES/LISTEN_PID
(numbered from 3). SIGTERM stops both (the store is then closed, as
`systemctl stop` does).

    fake-systemd.py SOCKET PIDFILE EVENTS -- usb9pfsd run --config ...

EVENTS gets one line per notification and restart, for the scenario's
checks. Test-only: never shipped.
"""
import array
import fcntl
import os
import select
import signal
import socket
import sys
import time

sock_path, pidfile, events_path = sys.argv[1:4]
cmd = sys.argv[sys.argv.index("--") + 1:]
store = {}  # FDNAME -> fd
flags = {"restart": False, "stop": False}
signal.signal(signal.SIGUSR1, lambda *_: flags.__setitem__("restart", True))
signal.signal(signal.SIGTERM, lambda *_: flags.__setitem__("stop", True))

try:
    os.unlink(sock_path)
except FileNotFoundError:
    pass
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(sock_path)
events = open(events_path, "a", buffering=1)


def event(line):
    events.write(f"{time.time():.3f} {line}\n")


def start():
    names = sorted(store)
    pid = os.fork()
    if pid == 0:
        high = [fcntl.fcntl(store[n], fcntl.F_DUPFD, 100) for n in names]
        for i, h in enumerate(high):
            os.dup2(h, 3 + i, inheritable=True)
        env = dict(os.environ, NOTIFY_SOCKET=sock_path, FDSTORE="256")
        if names:
            env.update(LISTEN_FDS=str(len(names)), LISTEN_FDNAMES=":".join(names), LISTEN_PID=str(os.getpid()))
        os.execvpe(cmd[0], cmd, env)
    with open(pidfile + ".tmp", "w") as f:
        f.write(f"{pid}\n")
    os.rename(pidfile + ".tmp", pidfile)
    event(f"START pid={pid} fds={len(names)} names={','.join(names)}")
    return pid


def receive():
    fds = array.array("i")
    msg, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(64 * fds.itemsize))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    fields = dict(line.split("=", 1) for line in msg.decode(errors="replace").splitlines() if "=" in line)
    name = fields.get("FDNAME", "stored")
    if fields.get("FDSTORE") == "1":
        for fd in fds:
            if name in store:
                os.close(store[name])
            store[name] = fd
        event(f"FDSTORE {name} n={len(fds)}")
    else:
        for fd in fds:
            os.close(fd)
    if fields.get("FDSTOREREMOVE") == "1" and name in store:
        os.close(store.pop(name))
        event(f"FDSTOREREMOVE {name}")
    for key in ("READY", "RELOADING", "STATUS"):
        if key in fields:
            event(f"{key}={fields[key]}")


def pump(timeout):
    try:
        r, _, _ = select.select([sock], [], [], timeout)
    except InterruptedError:
        return
    if r:
        receive()


def stop_child(pid):
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 20
    while True:
        pump(0.05)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            # Messages sent just before the exit are still queued.
            while select.select([sock], [], [], 0)[0]:
                receive()
            event(f"EXIT pid={pid} status={status}")
            return
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)


pid = start()
while True:
    pump(0.2)
    if flags["restart"]:
        flags["restart"] = False
        event("RESTART")
        stop_child(pid)
        pid = start()
    if flags["stop"]:
        stop_child(pid)
        for fd in store.values():
            os.close(fd)
        event("STOPPED")
        sys.exit(0)
    done, _ = os.waitpid(pid, os.WNOHANG)
    if done:
        event(f"DIED pid={pid}")
        sys.exit(1)
