#!/usr/bin/env python3
"""A 9P server that misbehaves on cue, for the VM rig's fault matrix.

It is a transparent proxy in front of a real 9P server (diod), so sessions
are real, until the fault chosen for the connection strikes. The fault is
read from a control file when a connection is accepted (and re-read while a
connection is being held silent), so the rig switches faults between board
sessions with `echo MODE > CONTROL`.

Message faults strike on the first Tgetattr of a connection (Tversion and
Tattach pass through, so the forwarder has a live session to lose):

    proxy            no fault
    wrong-tag        the reply carries tag + 1
    wrong-type       the reply's type is Rread (117) instead of Rgetattr
    extra-reply      the reply is sent twice
    close-mid-frame  half the reply, then the connection is closed
    size-0, size-3, size-6, size-64m (67108864), size-2g (2147483648),
    size-huge (4294967295), size-over (msize + 1 declared and sent)
                     a reply whose size field is malformed

Connection faults strike at once:

    silence          accept, read everything, never answer; the connection
                     is closed when the control file says something else
    close-at-accept  accept and close at once
    small-msize      proxy, but answer Tversion with msize 4096 (a server
                     restarted with a smaller msize, for recovery)
    slow-accept      leave the connection unserved for SLOW seconds (default
                     5), then proxy. To the client this is a slow accept():
                     the kernel completes the handshake from the backlog
                     either way, and nothing is read until the server gets
                     round to it.

Test-only (tests/, never packaged). Python standard library only, like
board_sim.py next to it.

    fake9p.py --listen 5642 --upstream 5640 --control /run/local/fake9p.mode
"""

import argparse
import socket
import struct
import threading
import time

TGETATTR, RREAD = 24, 117


def log(text):
    print("fake9p: " + text, flush=True)


def recv_exact(sock, n):
    out = bytearray()
    while len(out) < n:
        b = sock.recv(n - len(out))
        if not b:
            return None
        out += b
    return bytes(out)


def recv_frame(sock):
    head = recv_exact(sock, 4)
    if head is None:
        return None
    size = struct.unpack("<I", head)[0]
    if size < 7 or size > 16 << 20:
        return None
    rest = recv_exact(sock, size - 4)
    return None if rest is None else head + rest


class Server:
    def __init__(self, a):
        self.a = a
        self.n = 0

    def mode(self):
        try:
            with open(self.a.control) as f:
                return f.read().strip() or "proxy"
        except OSError:
            return "proxy"

    def run(self):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.a.listen))
        ls.listen(16)
        log("listening on %d, upstream %d" % (self.a.listen, self.a.upstream))
        while True:
            c, _ = ls.accept()
            self.n += 1
            m = self.mode()
            log("connection %d accepted, mode %s" % (self.n, m))
            threading.Thread(target=self.serve, args=(c, m, self.n), daemon=True).start()

    def serve(self, c, m, n):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if m == "slow-accept":
            log("connection %d: slow accept, %.1f s before serving it" % (n, self.a.slow))
            t0 = time.monotonic()
            time.sleep(self.a.slow)
            # measured, for the rig's proof that the fault was injected
            log("connection %d: slow accept over after %.1f s; proxying" % (n, time.monotonic() - t0))
        if m == "close-at-accept":
            c.close()
            return
        if m == "silence":
            c.settimeout(0.2)
            while self.mode() == "silence":
                try:
                    if c.recv(65536) == b"":
                        break
                except socket.timeout:
                    pass
                except OSError:
                    break
            log("connection %d: silence over, closing" % n)
            c.close()
            return
        up = socket.create_connection(("127.0.0.1", self.a.upstream))
        up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        struck = False
        msize = 16384
        try:
            while True:
                t = recv_frame(c)
                if t is None:
                    return
                up.sendall(t)
                r = recv_frame(up)
                if r is None:
                    return
                if t[4] == 100 and m == "small-msize":
                    r = r[:7] + struct.pack("<I", 4096) + r[11:]
                    log("connection %d: injected small-msize: Rversion msize 4096" % n)
                if t[4] == 100:
                    msize = struct.unpack_from("<I", r, 7)[0]
                if struck or t[4] != TGETATTR or m in ("proxy", "slow-accept", "small-msize"):
                    c.sendall(r)
                    continue
                struck = True
                tag = struct.unpack_from("<H", t, 5)[0]
                sizes = {"size-0": 0, "size-3": 3, "size-6": 6, "size-64m": 64 << 20, "size-2g": 1 << 31,
                         "size-huge": 0xFFFFFFFF, "size-over": msize + 1}
                if m == "wrong-tag":
                    out = r[:5] + struct.pack("<H", (struct.unpack_from("<H", r, 5)[0] + 1) & 0xFFFF) + r[7:]
                elif m == "wrong-type":
                    out = r[:4] + bytes([RREAD]) + r[5:]
                elif m == "extra-reply":
                    out = r + r
                elif m == "close-mid-frame":
                    out = r[: len(r) // 2]
                elif m in sizes:
                    body = r[4:] if m != "size-over" else r[4:] + bytes(msize + 1 - len(r))
                    out = struct.pack("<I", sizes[m]) + body
                else:
                    log("connection %d: unknown mode %s: proxying, nothing injected" % (n, m))
                    c.sendall(r)
                    continue
                c.sendall(out)
                # Said only once the bytes are sent: the rig's proof that
                # the fault struck (fault-server.sh: "fake9p injected").
                log("connection %d: injected %s on Tgetattr tag %d: sent %d bytes for a %d-byte reply" % (
                    n, m, tag, len(out), len(r)))
                if m == "close-mid-frame":
                    return
        except OSError as e:
            log("connection %d: %s" % (n, e))
        finally:
            c.close()
            up.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--upstream", type=int, required=True, help="port of the real 9P server on 127.0.0.1")
    ap.add_argument("--control", required=True, help="file naming the current fault")
    ap.add_argument("--slow", type=float, default=5.0, help="slow-accept delay (s)")
    Server(ap.parse_args()).run()


if __name__ == "__main__":
    main()
