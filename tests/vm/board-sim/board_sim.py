#!/usr/bin/env python3
"""usb9pfs board simulator: a user-space USB gadget (FunctionFS) that looks
to the host exactly like a board running the kernel's usb9pfs function
(net/9p/trans_usbg.c): one interface ff/ff/09 with a bulk IN endpoint (board
-> host: T-messages) and a bulk OUT endpoint (host -> board: R-messages),
512-byte packets at high speed, any serial and VID:PID.

Test-only: it lives under tests/ and is never packaged. It runs inside the
VM rig's guest (dummy_hcd + usb_f_fs + libcomposite) and drives usb9pfsd on
the host side of the same kernel. What it can do that the kernel's own
usb9pfs function cannot: send malformed frames on purpose, stall an
endpoint, vanish in the middle of a transfer without leaving a kernel 9P
client holding freed requests (vm-rig notes, trap 3), and hammer the
forwarder as fast as user space can.

Why Python and only its standard library: the guest shares the host's root
file system, which has python3 but not necessarily a Rust toolchain for a
second binary; FunctionFS is plain files plus three ioctls, and 9P2000.L
framing is a few struct.pack calls. Speed is not the point here (the
forwarder, not the simulator, is under test); a Python board still sends
requests faster back to back than the kernel client, which waits for each
syscall.

Usage (the rig runs it as a co-process and talks to it line by line):

    board_sim.py --name sim --serial 0009-SIM --id 1d6b:0109 --udc dummy_udc.0

It sets the gadget up (configfs + functionfs), does NOT plug it, then reads
one command per line on stdin and answers with any number of `# ...`
information lines followed by exactly one line `END ok ...` or
`END fail ...`. `help` lists the commands. Every blocking endpoint
operation has a deadline (SIGALRM interrupts it; FunctionFS then dequeues
the request), so the simulator itself never hangs.
"""

import argparse
import errno
import fcntl
import hashlib
import os
import signal
import struct
import sys
import threading
import time

# ---------------------------------------------------------------- constants
GADGETS = "/sys/kernel/config/usb_gadget"

FUNCTIONFS_DESCRIPTORS_MAGIC_V2 = 3
FUNCTIONFS_STRINGS_MAGIC = 2
FUNCTIONFS_HAS_FS_DESC = 1
FUNCTIONFS_HAS_HS_DESC = 2
FUNCTIONFS_HAS_SS_DESC = 4
FUNCTIONFS_CLEAR_HALT = 0x6703            # _IO('g', 3)
FUNCTIONFS_FIFO_FLUSH = 0x6702            # _IO('g', 2)
FUNCTIONFS_ENDPOINT_DESC = 0x80096782     # _IOR('g', 130, struct usb_endpoint_descriptor[9])

# struct usb_functionfs_event's type byte (offset 8 of its 12 bytes)
FFS_EVENT_NAMES = {0: "bind", 1: "unbind", 2: "enable", 3: "disable", 4: "setup", 5: "suspend", 6: "resume"}

NOTAG = 0xFFFF
NOFID = 0xFFFFFFFF
TLERROR, RLERROR = 6, 7
TLOPEN, TGETATTR, TREADDIR = 12, 24, 40
TVERSION, TATTACH, RERROR, TWALK, TREAD, TWRITE, TCLUNK = 100, 104, 107, 110, 116, 118, 120

TYPE_NAMES = {
    7: "Rlerror", 12: "Tlopen", 13: "Rlopen", 24: "Tgetattr", 25: "Rgetattr", 40: "Treaddir",
    41: "Rreaddir", 100: "Tversion", 101: "Rversion", 104: "Tattach", 105: "Rattach",
    107: "Rerror", 110: "Twalk", 111: "Rwalk", 116: "Tread", 117: "Rread", 118: "Twrite",
    119: "Rwrite", 120: "Tclunk", 121: "Rclunk",
}


class Deadline(Exception):
    """A blocking endpoint operation did not finish in time."""


def _alarm(_sig, _frame):
    raise Deadline()


signal.signal(signal.SIGALRM, _alarm)


class deadline:
    """`with deadline(s):` interrupts the blocking syscall inside after s
    seconds (raising Deadline); FunctionFS dequeues the interrupted request."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        signal.setitimer(signal.ITIMER_REAL, max(self.seconds, 0.001))

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        return False


def info(msg):
    print("# " + msg, flush=True)


# ---------------------------------------------------------------- 9P framing
def msg(kind, tag, body=b""):
    return struct.pack("<IBH", 7 + len(body), kind, tag) + body


def s9(text):
    b = text.encode()
    return struct.pack("<H", len(b)) + b


def tversion(msize=16384, version="9P2000.L"):
    return msg(TVERSION, NOTAG, struct.pack("<I", msize) + s9(version))


def tattach(tag, fid, aname, uname="root", n_uname=0):
    return msg(TATTACH, tag, struct.pack("<II", fid, NOFID) + s9(uname) + s9(aname) + struct.pack("<I", n_uname))


def twalk(tag, fid, newfid, names):
    body = struct.pack("<IIH", fid, newfid, len(names)) + b"".join(s9(n) for n in names)
    return msg(TWALK, tag, body)


def tlopen(tag, fid, flags=0):
    return msg(TLOPEN, tag, struct.pack("<II", fid, flags))


def tread(tag, fid, offset, count):
    return msg(TREAD, tag, struct.pack("<IQI", fid, offset, count))


def tgetattr(tag, fid, mask=0x7FF):
    return msg(TGETATTR, tag, struct.pack("<IQ", fid, mask))


def tclunk(tag, fid):
    return msg(TCLUNK, tag, struct.pack("<I", fid))


def header(frame):
    if len(frame) < 7:
        return None
    return struct.unpack_from("<IBH", frame)


def describe(frame):
    h = header(frame)
    if h is None:
        return "short(%d)" % len(frame)
    size, kind, tag = h
    name = TYPE_NAMES.get(kind, "type%d" % kind)
    extra = ""
    if kind == RLERROR and len(frame) >= 11:
        extra = " errno=%d" % struct.unpack_from("<I", frame, 7)[0]
    if size != len(frame):
        extra += " (declares %d, got %d)" % (size, len(frame))
    return "%s tag=%d size=%d%s" % (name, tag, len(frame), extra)


class Unexpected(Exception):
    pass


# ---------------------------------------------------------------- gadget
def descriptors(ss=True, alt_layout=False):
    """FunctionFS v2 descriptor blob: one interface ff/ff/09, bulk IN (ep1
    file) then bulk OUT (ep2 file), for full, high and super speed.

    With alt_layout the interface has an empty alternate setting 0 and
    carries the two endpoints on alternate setting 1 (the layout CDC data
    interfaces use, and the one the posted usbg series moves usb9pfs to): a
    host must find the interface across its alternate settings and select
    alternate setting 1 (SET_INTERFACE) before any transfer. Stock usb9pfs
    cannot present it; FunctionFS can (f_fs answers SET_INTERFACE up to
    alternate setting 2 and GET_INTERFACE with the current one)."""

    def intf():
        if alt_layout:
            return (struct.pack("<BBBBBBBBB", 9, 4, 0, 0, 0, 0xFF, 0xFF, 0x09, 1)
                    + struct.pack("<BBBBBBBBB", 9, 4, 0, 1, 2, 0xFF, 0xFF, 0x09, 1))
        return struct.pack("<BBBBBBBBB", 9, 4, 0, 0, 2, 0xFF, 0xFF, 0x09, 1)

    def ep(addr, mps):
        return struct.pack("<BBBBHB", 7, 5, addr, 2, mps, 0)

    def comp():
        return struct.pack("<BBBBH", 6, 0x30, 0, 0, 0)

    fs = intf() + ep(0x81, 64) + ep(0x02, 64)
    hs = intf() + ep(0x81, 512) + ep(0x02, 512)
    ssd = intf() + ep(0x81, 1024) + comp() + ep(0x02, 1024) + comp()
    flags = FUNCTIONFS_HAS_FS_DESC | FUNCTIONFS_HAS_HS_DESC
    n_intf = 2 if alt_layout else 1
    counts = struct.pack("<II", n_intf + 2, n_intf + 2)
    body = fs + hs
    if ss:
        flags |= FUNCTIONFS_HAS_SS_DESC
        counts += struct.pack("<I", n_intf + 4)
        body += ssd
    total = 12 + len(counts) + len(body)
    return struct.pack("<III", FUNCTIONFS_DESCRIPTORS_MAGIC_V2, total, flags) + counts + body


def strings():
    s = b"usb9pfs board simulator\0"
    body = struct.pack("<H", 0x0409) + s
    return struct.pack("<IIII", FUNCTIONFS_STRINGS_MAGIC, 16 + len(body), 1, 1) + body


def write_file(path, text):
    with open(path, "w") as f:
        f.write(text)


class Gadget:
    """A configfs gadget NAME with one FunctionFS function, mounted at
    /dev/ffs-NAME; ep0 stays open for the simulator's lifetime (closing it
    would tear the function down)."""

    def __init__(self, name, serial, vidpid, udc, buflen, alt_layout=False):
        self.name, self.serial, self.udc, self.buflen = name, serial, udc, buflen
        self.g = os.path.join(GADGETS, name)
        self.mnt = "/dev/ffs-" + name
        vid, pid = vidpid.split(":")
        os.makedirs(self.g)
        write_file(self.g + "/idVendor", "0x" + vid)
        write_file(self.g + "/idProduct", "0x" + pid)
        os.makedirs(self.g + "/strings/0x409")
        write_file(self.g + "/strings/0x409/serialnumber", serial)
        write_file(self.g + "/strings/0x409/manufacturer", "usb9pfsd-rig")
        write_file(self.g + "/strings/0x409/product", "board simulator " + name)
        os.makedirs(self.g + "/configs/c.1")
        os.makedirs(self.g + "/functions/ffs." + name)
        os.symlink(self.g + "/functions/ffs." + name, self.g + "/configs/c.1/ffs." + name)
        os.makedirs(self.mnt, exist_ok=True)
        if os.system("mount -t functionfs %s %s" % (name, self.mnt)) != 0:
            raise RuntimeError("mount -t functionfs failed")
        self.ep0 = os.open(self.mnt + "/ep0", os.O_RDWR)
        os.write(self.ep0, descriptors(alt_layout=alt_layout))
        os.write(self.ep0, strings())
        self.ep_in = self.ep_out = None
        self.mps = 512
        self.open_eps()
        # FunctionFS reports every SET_CONFIGURATION / SET_INTERFACE that
        # reaches the function as an ENABLE event on ep0, and coalesces the
        # unread ones: a thread reads them as they come and counts them, so
        # a scenario can tell whether the host re-selected the interface.
        self.events = {}
        self.closing = False
        self.ev_thread = threading.Thread(target=self._count_events, daemon=True)
        self.ev_thread.start()

    def _count_events(self):
        import select
        p = select.poll()
        p.register(self.ep0, select.POLLIN)
        while not self.closing:
            try:
                if not p.poll(200):
                    continue
                data = os.read(self.ep0, 12 * 4)
            except OSError:
                if self.closing:
                    return
                time.sleep(0.2)
                continue
            for i in range(0, len(data) - 11, 12):
                t = FFS_EVENT_NAMES.get(data[i + 8], str(data[i + 8]))
                self.events[t] = self.events.get(t, 0) + 1

    def open_eps(self):
        for fd in (self.ep_in, self.ep_out):
            if fd is not None:
                os.close(fd)
        self.ep_in = os.open(self.mnt + "/ep1", os.O_RDWR)
        self.ep_out = os.open(self.mnt + "/ep2", os.O_RDWR)

    def learn_mps(self):
        """wMaxPacketSize the UDC chose for this speed (512 at high speed)."""
        try:
            d = fcntl.ioctl(self.ep_in, FUNCTIONFS_ENDPOINT_DESC, bytes(9))
            self.mps = struct.unpack_from("<H", d, 4)[0] & 0x7FF or 512
        except OSError:
            pass
        return self.mps

    def plug(self):
        write_file(self.g + "/UDC", self.udc)

    def unplug(self):
        write_file(self.g + "/UDC", "\n")

    # -------------------------------------------------------- transfers
    def send_raw(self, data, timeout=30.0):
        """One IN transfer of exactly `data` (no ZLP added)."""
        with deadline(timeout):
            n = os.write(self.ep_in, data)
        if n != len(data):
            raise Unexpected("IN write took %d of %d bytes" % (n, len(data)))

    def send(self, frame, timeout=30.0):
        """A T-message as trans_usbg sends it: one transfer, plus a ZLP when
        its length is a whole number of packets."""
        self.send_raw(frame, timeout)
        if len(frame) % self.mps == 0:
            self.send_raw(b"", timeout)

    def recv(self, timeout=30.0):
        """One R-message: one OUT request of `buflen` bytes, as trans_usbg
        queues it (completes on a short packet, a ZLP, or when full)."""
        with deadline(timeout):
            return os.read(self.ep_out, self.buflen)

    def call(self, frame, timeout=30.0):
        self.send(frame, timeout)
        return self.recv(timeout)

    def halt_in(self):
        """Stall the IN endpoint: FunctionFS halts an endpoint read in the
        wrong direction (returns EBADMSG once the halt is set)."""
        try:
            with deadline(5):
                os.read(self.ep_in, 1)
        except OSError as e:
            if e.errno == errno.EBADMSG:
                return True
            raise
        return False

    def halt_out(self):
        """Stall the OUT endpoint (a write in the wrong direction)."""
        try:
            with deadline(5):
                os.write(self.ep_out, b"x")
        except OSError as e:
            if e.errno == errno.EBADMSG:
                return True
            raise
        return False

    def clear_halt(self):
        fcntl.ioctl(self.ep_in, FUNCTIONFS_CLEAR_HALT)
        fcntl.ioctl(self.ep_out, FUNCTIONFS_CLEAR_HALT)

    def teardown(self):
        self.closing = True
        try:
            self.unplug()
        except OSError:
            pass
        self.ev_thread.join(2)
        for fd in (self.ep_in, self.ep_out, self.ep0):
            try:
                os.close(fd)
            except OSError:
                pass
        os.system("umount %s 2>/dev/null" % self.mnt)
        for p in ("configs/c.1/ffs." + self.name,):
            try:
                os.unlink(os.path.join(self.g, p))
            except OSError:
                pass
        for d in ("configs/c.1", "functions/ffs." + self.name, "strings/0x409", ""):
            try:
                os.rmdir(os.path.join(self.g, d))
            except OSError:
                pass


# ---------------------------------------------------------------- 9P client
class Client:
    """Just enough of a 9P2000.L client to run a session and check every
    answer: right type (T+1), right tag, sizes that match the transfer."""

    def __init__(self, gadget, timeout):
        self.g, self.timeout = gadget, timeout
        self.msize = 16384
        self.messages = 0

    def rpc(self, frame, want_type=None):
        size, kind, tag = header(frame)
        r = self.g.call(frame, self.timeout)
        self.messages += 1
        h = header(r)
        if h is None or h[0] != len(r):
            raise Unexpected("reply to %s tag=%d is malformed: %s" % (TYPE_NAMES.get(kind), tag, describe(r)))
        if h[2] != tag:
            raise Unexpected("reply to %s tag=%d carries tag %d (%s)" % (TYPE_NAMES.get(kind), tag, h[2], describe(r)))
        want = want_type if want_type is not None else kind + 1
        if h[1] != want:
            raise Unexpected("reply to %s tag=%d is %s, wanted %s" % (TYPE_NAMES.get(kind), tag, describe(r), TYPE_NAMES.get(want)))
        return r

    def version(self, msize=16384):
        r = self.rpc(tversion(msize))
        self.msize = struct.unpack_from("<I", r, 7)[0]
        ver = r[13:13 + struct.unpack_from("<H", r, 11)[0]]
        if ver != b"9P2000.L":
            raise Unexpected("Rversion says %r" % ver)
        return r

    def attach(self, aname, fid=1):
        return self.rpc(tattach(0, fid, aname))

    def walk(self, fid, newfid, names, tag=0):
        r = self.rpc(twalk(tag, fid, newfid, names))
        nq = struct.unpack_from("<H", r, 7)[0]
        if nq != len(names):
            raise Unexpected("Rwalk has %d qids for %d names" % (nq, len(names)))
        return r

    def read_all(self, fid, tag=0, count=0):
        h = hashlib.sha256()
        off = 0
        # what the kernel client asks for: msize - P9_IOHDRSZ (24); diod
        # refuses (EIO) a count whose Rread would not leave that headroom
        count = count or self.msize - 24
        while True:
            r = self.rpc(tread(tag, fid, off, count))
            n = struct.unpack_from("<I", r, 7)[0]
            if n != len(r) - 11:
                raise Unexpected("Rread count %d but %d data bytes" % (n, len(r) - 11))
            if n == 0:
                return off, h.hexdigest()
            h.update(r[11:])
            off += n


# ---------------------------------------------------------------- commands
class Sim:
    def __init__(self, g, timeout):
        self.g, self.timeout = g, timeout

    def client(self):
        return Client(self.g, self.timeout)

    # plug / unplug ---------------------------------------------------
    def cmd_plug(self):
        self.g.plug()
        return "plugged into %s" % self.g.udc

    def cmd_unplug(self):
        self.g.unplug()
        return "unplugged"

    def cmd_reopen(self):
        """Close and reopen the endpoint files (after a replug)."""
        self.g.open_eps()
        return "endpoints reopened"

    def cmd_mps(self):
        return "wMaxPacketSize %d" % self.g.learn_mps()

    def cmd_enables(self):
        """How often the host enabled the function since the gadget was made
        (SET_CONFIGURATION at each enumeration, and every SET_INTERFACE):
        `enables N` first, then every ep0 event type seen."""
        ev = dict(self.g.events)
        return "enables %d (%s)" % (ev.get("enable", 0), " ".join("%s=%d" % kv for kv in sorted(ev.items())))

    # valid traffic ----------------------------------------------------
    def cmd_session(self, aname, path, want_sha, msize="16384", count="0"):
        """A whole scripted session against the real backend: Tversion,
        Tattach, Twalk, Tgetattr, Tlopen, Tread to EOF (`count` bytes each,
        default msize - 24, checksummed), Tclunk x2. Every answer is checked."""
        c = self.client()
        t0 = time.monotonic()
        c.version(int(msize))
        c.attach(aname, 1)
        c.walk(1, 2, [p for p in path.split("/") if p])
        r = c.rpc(tgetattr(0, 2))
        size = struct.unpack_from("<Q", r, 7 + 8 + 13 + 4 + 4 + 4 + 8 + 8)[0]
        c.rpc(tlopen(0, 2, 0))
        n, digest = c.read_all(2, 0, int(count))
        c.rpc(tclunk(0, 2))
        c.rpc(tclunk(0, 1))
        dt = time.monotonic() - t0
        if n != size:
            raise Unexpected("read %d bytes, Rgetattr says %d" % (n, size))
        if digest != want_sha:
            raise Unexpected("sha256 of %s through the forwarder is %s, want %s" % (path, digest, want_sha))
        return "session: %d messages, msize %d, %d bytes read, sha256 matches, %.1f s" % (c.messages, c.msize, n, dt)

    def cmd_burst(self, aname, count):
        """Valid requests back to back as fast as possible: Tgetattr on the
        root fid `count` times, cycling tags; each answer checked."""
        c = self.client()
        c.version()
        c.attach(aname, 1)
        count = int(count)
        t0 = time.monotonic()
        for i in range(count):
            c.rpc(tgetattr(i % 64, 1))
        dt = time.monotonic() - t0
        c.rpc(tclunk(0, 1))
        return "burst: %d Tgetattr answered correctly in %.2f s (%.0f/s)" % (count, dt, count / max(dt, 1e-9))

    def cmd_tversion_loop(self, count):
        """Tversion in a tight loop: each one asks for a new server session.
        Every one must be answered with its tag: Rversion, or an error reply
        (a forwarder may refuse sessions opened too fast)."""
        count = int(count)
        t0 = time.monotonic()
        answers = {}
        for _ in range(count):
            r = self.g.call(tversion(), self.timeout)
            h = header(r)
            if h is None or h[0] != len(r) or h[2] != NOTAG or h[1] not in (TVERSION + 1, RLERROR, RERROR):
                raise Unexpected("a Tversion was answered with %s" % describe(r))
            key = describe(r).split(" size=")[0].replace(" tag=65535", "")
            if h[1] == RLERROR:
                key += " errno=%d" % struct.unpack_from("<I", r, 7)[0]
            answers[key] = answers.get(key, 0) + 1
        dt = time.monotonic() - t0
        summary = ", ".join("%d %s" % (n, k) for k, n in sorted(answers.items()))
        return "%d Tversion answered in %.1f s: %s" % (count, dt, summary)

    def cmd_zlp_edge(self):
        """T-messages of exactly 512 and 1024 bytes (whole packets): only the
        ZLP after them ends the host's IN transfer, so an answer proves the
        simulator sends ZLPs like trans_usbg. Twalk of two long names from
        fid 0 (no attach needed: the answer may be an error, but must come
        with the tag)."""
        out = []
        for total in (512, 1024):
            fixed = 7 + 4 + 4 + 2 + 2 + 2
            n1 = (total - fixed) // 2
            names = ["a" * n1, "b" * (total - fixed - n1)] if total == 512 else ["c" * 250, "d" * 250, "e" * (total - fixed - 2 - 500)]
            f = twalk(9, 0, 5, names)
            if len(f) != total:
                raise Unexpected("built a %d-byte Twalk, wanted %d" % (len(f), total))
            r = self.g.call(f, self.timeout)
            if header(r) is None or header(r)[2] != 9:
                raise Unexpected("%d-byte Twalk answered with %s" % (total, describe(r)))
            out.append("%d:%s" % (total, describe(r).replace(" ", ",")))
        return "whole-packet T-messages answered: " + " ".join(out)

    def cmd_probe(self, aname):
        """Tversion, Tattach, Tgetattr, Tclunk, reporting each answer
        without judging it (the server-fault scenario judges). Stops at the
        first timeout."""
        # tag 0 for every request, as the kernel client does with one
        # request in flight (lowest free tag): a stale reply then carries
        # the right tag, and only its type can give it away.
        frames = [tversion(), tattach(0, 1, aname), tgetattr(0, 1), tclunk(0, 1)]
        out = []
        for f in frames:
            try:
                r = self.g.call(f, self.timeout)
            except Deadline:
                out.append("%s:timeout" % TYPE_NAMES[f[4]])
                break
            out.append("%s:%s" % (TYPE_NAMES[f[4]], describe(r).replace(" ", ",")))
        return " ".join(out)

    def cmd_recv(self):
        """Read one R-message (e.g. a late answer)."""
        return describe(self.g.recv(self.timeout))

    def cmd_drain(self):
        """Read and drop anything the host still sends (short deadline)."""
        n = 0
        while True:
            try:
                r = self.g.recv(0.5)
            except Deadline:
                return "drained %d message(s)" % n
            n += 1
            info("drained " + describe(r))

    # malformed frames ---------------------------------------------------
    def cmd_size(self, declared):
        """A 7-byte frame (one short transfer) whose size field says
        `declared` (0, 3, 6, 4294967295, ...)."""
        d = int(declared, 0)
        self.g.send(struct.pack("<IBH", d, TWALK, 1))
        return "sent a 7-byte frame declaring size %d" % d

    def cmd_oversize(self, msize="8192"):
        """Negotiate msize, then send a frame 100 bytes larger (still one
        transfer shorter than the host's request)."""
        c = self.client()
        c.version(int(msize))
        n = c.msize + 100
        self.g.send(struct.pack("<IBH", n, TWRITE, 1) + bytes(n - 7))
        return "msize %d negotiated, sent a %d-byte Twrite" % (c.msize, n)

    def cmd_header_silence(self, declared="100"):
        """Tversion, then a valid 7-byte header declaring more bytes, then
        nothing: the forwarder must give up after a bounded wait."""
        c = self.client()
        c.version()
        self.g.send_raw(struct.pack("<IBH", int(declared), TWALK, 1))
        return "sent a header declaring %s bytes, then silence" % declared

    def cmd_partial_size(self):
        """Three bytes: not even a whole size field, then silence."""
        self.g.send_raw(b"\x40\x00\x00")
        return "sent 3 bytes (a partial size field), then silence"

    def cmd_full_packets_silence(self, packets="4", declared="8192"):
        """Tversion, then exactly `packets` full packets of a Twrite that
        declares `declared` bytes, in one write, then silence: endpoints
        open, still plugged. A FunctionFS bulk IN request never ends with a
        ZLP (f_fs sets `zero` only on ep0), and dummy_hcd completes the
        board's request once all its bytes went into the host's longer
        transfer, which stays open: no short packet ended it, so the host
        cannot tell this from a message still arriving. The answer carries
        the wall-clock time the host had taken the last packet, for the
        rig's measurement of how long the host waits."""
        k, d = int(packets), int(declared)
        n = k * self.g.mps
        # The host asks for 16 KiB per IN transfer (msize 16384): a run that
        # fills it completes that transfer, which is another fault.
        if not 7 <= n < min(d, 16384):
            raise Unexpected("%d packets of %d bytes must be shorter than the declared %d and than 16 KiB" % (k, self.g.mps, d))
        c = self.client()
        c.version()
        self.g.send_raw(struct.pack("<IBH", d, TWRITE, 1) + bytes(n - 7))
        return "sent %d full packets (%d of a %d-byte Twrite), no short packet, no ZLP, then silence; taken at %.3f" % (
            k, n, d, time.time())

    def cmd_header_disconnect(self):
        """Tversion, then the first 2048 bytes (whole packets, no short
        packet: the host's transfer stays open) of a 4096-byte Twrite, then
        unplug."""
        c = self.client()
        c.version()
        f = struct.pack("<IBH", 4096, TWRITE, 1) + bytes(4096 - 7)
        self.g.send_raw(f[:2048])
        time.sleep(0.5)
        self.g.unplug()
        return "sent 2048 of a 4096-byte frame, then unplugged"

    def cmd_garbage_after_header(self):
        """A transfer of 64 bytes whose header declares 20: the rest is
        garbage after a valid frame."""
        c = self.client()
        c.version()
        f = struct.pack("<IBH", 20, TGETATTR, 1) + os.urandom(57)
        self.g.send(f)
        return "sent 64 bytes declaring 20"

    def cmd_garbage_body(self, aname):
        """A well-framed request with a garbage body (and an unknown type):
        the server may refuse it, but the board must get an answer with its
        tag."""
        c = self.client()
        c.version()
        c.attach(aname, 1)
        out = []
        for kind in (TWALK, 0xEE):
            f = struct.pack("<IBH", 64, kind, 7) + os.urandom(57)
            try:
                r = self.g.call(f, self.timeout)
            except Deadline:
                out.append("type%d:timeout" % kind)
                break
            out.append("type%d:%s" % (kind, describe(r).replace(" ", ",")))
        return " ".join(out)

    def cmd_zlps(self, count, patience="3"):
        """Up to `count` stray ZLPs, then a Tversion that must be answered.

        A forwarder may skip them all, or end the session after too many in
        a row and restart it with backoff. The ZLPs go out from a helper
        thread; when the host has not taken one for `patience` seconds the
        flood stops (the thread's last ZLP goes to the next session, one
        stray ZLP). No write is abandoned: an interrupted IN write can leave
        dummy_hcd/FunctionFS out of step."""
        count, patience = int(count), float(patience)
        sent = [0]
        stop = threading.Event()

        def flood():
            for _ in range(count):
                if stop.is_set():
                    return
                os.write(self.g.ep_in, b"")
                sent[0] += 1

        t0 = time.monotonic()
        t = threading.Thread(target=flood, daemon=True)
        t.start()
        last, last_t = 0, time.monotonic()
        while t.is_alive():
            t.join(0.2)
            if sent[0] != last:
                last, last_t = sent[0], time.monotonic()
            elif time.monotonic() - last_t > patience:
                stop.set()
                break
        t.join(self.timeout + 35)
        if t.is_alive():
            raise Unexpected("the host never took ZLP %d" % (sent[0] + 1))
        dt = time.monotonic() - t0
        self.client().version()
        how = "all taken" if sent[0] == count else "host stopped taking them after %d" % sent[0]
        return "%d of %d ZLPs in %.1f s (%s), then Tversion answered" % (sent[0], count, dt, how)

    def cmd_stall(self):
        """Halt the IN endpoint (the host's pending IN transfer fails with
        EPIPE)."""
        if not self.g.halt_in():
            raise Unexpected("could not halt the IN endpoint")
        return "IN endpoint halted"

    def cmd_stall_out(self):
        """Halt the OUT endpoint, then send a Tversion: the host's reply
        transfer fails with EPIPE."""
        if not self.g.halt_out():
            raise Unexpected("could not halt the OUT endpoint")
        self.g.send(tversion())
        return "OUT endpoint halted, Tversion sent"

    def cmd_clear_halt(self):
        self.g.clear_halt()
        return "halts cleared"

    def cmd_try_version(self, seconds):
        """Tversion with a deadline; says whether it was answered."""
        try:
            r = self.g.call(tversion(), float(seconds))
        except Deadline:
            return "no answer within %s s" % seconds
        return "answered: " + describe(r)

    def cmd_vanish_mid_reply(self, aname, path):
        """Open a file, send a Tread for a whole msize, and unplug before
        reading the reply (the host's OUT transfer is in flight)."""
        c = self.client()
        c.version()
        c.attach(aname, 1)
        c.walk(1, 2, [p for p in path.split("/") if p])
        c.rpc(tlopen(0, 2, 0))
        self.g.send(tread(0, 2, 0, c.msize - 24))
        time.sleep(0.3)
        self.g.unplug()
        return "Tread sent, unplugged before taking the reply"

    def cmd_vanish_mid_request(self):
        """Tversion, then 8 KiB of a 12 KiB Twrite, then unplug."""
        c = self.client()
        c.version()
        f = struct.pack("<IBH", 12288, TWRITE, 1) + bytes(12288 - 7)
        self.g.send_raw(f[:8192])
        self.g.unplug()
        return "unplugged 8 KiB into a 12 KiB request"

    # confinement (issue 18) -------------------------------------------
    def cmd_escapes(self, export, neighbour, parent):
        """A board confined to EXPORT tries every way out it knows towards
        NEIGHBOUR (a sibling tree holding the file `theirs`) and PARENT (the
        server's export, holding `top`): anames outside, `..` from the root
        and stepwise, names with `/`, a symlink it makes to PARENT, a
        directory renamed under a fid and its old name made a symlink to
        NEIGHBOUR, Tauth. Reports NAME=ANSWER for every try without judging
        (the confine scenario judges): `Rlerror:ERRNO`, `Rwalk:NWQID`, or
        the reply type; `*-qid=root|other` compares a walk's last qid with
        the attach root's. EXPORT must hold a directory `sub`."""
        c = self.client()
        c.version()
        out = []
        nb = neighbour.rstrip("/").rsplit("/", 1)[-1]

        def call(name, frame):
            r = self.g.call(frame, self.timeout)
            h = header(r)
            if h is None or h[0] != len(r) or h[2] != 0:
                raise Unexpected("%s: malformed reply %s" % (name, describe(r)))
            if h[1] == RLERROR:
                ans = "Rlerror:%d" % struct.unpack_from("<I", r, 7)[0]
            elif h[1] == TWALK + 1:
                ans = "Rwalk:%d" % struct.unpack_from("<H", r, 7)[0]
            else:
                ans = TYPE_NAMES.get(h[1], "R%d" % h[1])
            out.append("%s=%s" % (name, ans))
            return r

        def last_qid(r):
            if header(r)[1] != TWALK + 1:
                return None
            n = struct.unpack_from("<H", r, 7)[0]
            return r[9 + 13 * (n - 1) + 5:9 + 13 * n] if n else None

        def walk(name, fid, newfid, names):
            return call(name, twalk(0, fid, newfid, names))

        def tsymlink(fid, name, target):
            return msg(16, 0, struct.pack("<I", fid) + s9(name) + s9(target) + struct.pack("<I", 0))

        def tmkdir(fid, name):
            return msg(72, 0, struct.pack("<I", fid) + s9(name) + struct.pack("<II", 0o755, 0))

        def tlcreate(fid, name):
            return msg(14, 0, struct.pack("<I", fid) + s9(name) + struct.pack("<III", 0o101, 0o644, 0))

        def trename(fid, dfid, name):
            # Trename, not Trenameat: diod 1.0.24 answers that EOPNOTSUPP
            return msg(20, 0, struct.pack("<II", fid, dfid) + s9(name))

        call("auth", msg(102, 0, struct.pack("<I", 99) + s9("root") + s9(export) + struct.pack("<I", 0)))
        for name, aname, fid in (("attach-root", "/", 10), ("attach-dotdot", export + "/..", 11),
                                 ("attach-neighbour", neighbour, 12), ("attach-parent", parent, 13),
                                 ("attach-neighbour-via-dotdot", export + "/../" + nb, 14)):
            call(name, tattach(0, fid, aname))
        r = call("attach-export", tattach(0, 1, export))
        if header(r)[1] != TATTACH + 1:
            return " ".join(out)
        root = r[7 + 5:7 + 13]
        # `..` from the root, at once and stepwise
        walk("walk-dotdot-neighbour", 1, 20, ["..", nb, "theirs"])
        walk("walk-dotdot-top", 1, 21, ["..", "top"])
        r = walk("walk-dotdot", 1, 22, [".."])
        out.append("walk-dotdot-qid=%s" % ("root" if last_qid(r) == root else "other"))
        walk("walk-from-dotdot", 22, 23, [nb, "theirs"])
        walk("walk-sub", 1, 30, ["sub"])
        walk("walk-step1", 30, 31, [".."])
        r = walk("walk-step2", 31, 32, [".."])
        out.append("walk-step2-qid=%s" % ("root" if last_qid(r) == root else "other"))
        walk("walk-stepwise-neighbour", 32, 33, [nb, "theirs"])
        walk("walk-stepwise-top", 32, 34, ["top"])
        walk("walk-inline", 1, 35, ["sub", "..", "..", nb, "theirs"])
        # names with '/'
        walk("walk-slash-up", 1, 40, ["../" + nb])
        walk("walk-slash-abs", 1, 41, [neighbour.rstrip("/") + "/theirs"])
        walk("clone", 1, 42, [])
        call("create-slash", tlcreate(42, "../" + nb + "/planted-by-create"))
        call("mkdir-slash", tmkdir(1, "../" + nb + "/planted-by-mkdir"))
        # a symlink the board makes, pointing out
        call("symlink-make", tsymlink(1, "out", parent))
        call("symlink-make-nb", tsymlink(1, "nb", neighbour))
        walk("walk-through-symlink", 1, 50, ["out", "top"])
        walk("walk-to-symlink", 1, 51, ["out"])
        walk("walk-from-symlink", 51, 52, ["top"])
        call("open-symlink", tlopen(0, 51, 0))
        call("attach-through-symlink", tattach(0, 53, export + "/nb/theirs"))
        call("attach-symlink", tattach(0, 54, export + "/nb"))
        walk("walk-from-attached-symlink", 54, 55, ["theirs"])
        # a directory renamed under a fid, its old name then a symlink out
        call("mkdir-d1", tmkdir(1, "d1"))
        walk("walk-d1", 1, 60, ["d1"])
        call("mkdir-d2", tmkdir(60, "d2"))
        walk("walk-d1-d2", 1, 61, ["d1", "d2"])
        call("rename-d1", trename(60, 1, "moved"))
        call("symlink-old-name", tsymlink(1, "d1", neighbour))
        walk("walk-renamed-fid", 60, 62, ["theirs"])
        walk("walk-below-renamed", 61, 68, ["theirs"])
        walk("walk-up-below-renamed", 61, 63, ["..", ".."])
        walk("walk-up-below-renamed-neighbour", 61, 64, ["..", "..", "..", nb, "theirs"])
        walk("walk-moved-d2", 1, 65, ["moved", "d2"])
        r = walk("walk-moved-up-beyond", 65, 66, ["..", "..", ".."])
        out.append("walk-moved-up-beyond-qid=%s" % ("root" if last_qid(r) == root else "other"))
        walk("walk-moved-up-neighbour", 65, 67, ["..", "..", "..", nb, "theirs"])
        # the session still works inside its export
        walk("walk-mine", 1, 70, ["mine"])
        return " ".join(out)

    def cmd_deaf(self):
        """Send a Tversion and never take the reply: no request is queued on
        the OUT endpoint (as on a board whose 9P client was killed while the
        host restarted its worker), so the host's reply transfer never
        completes. The next command that reads takes up again."""
        self.g.send(tversion())
        return "Tversion sent; not taking the reply"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True, help="configfs gadget and functionfs instance name")
    ap.add_argument("--serial", required=True)
    ap.add_argument("--id", default="1d6b:0109", help="VID:PID (hex)")
    ap.add_argument("--udc", required=True, help="UDC to bind to, e.g. dummy_udc.0")
    ap.add_argument("--buflen", type=int, default=16384, help="receive request size (trans_usbg's buflen)")
    ap.add_argument("--timeout", type=float, default=30.0, help="deadline of each endpoint operation (s)")
    ap.add_argument("--alt-layout", action="store_true",
                    help="empty alternate setting 0, the two endpoints on alternate setting 1")
    a = ap.parse_args()
    g = Gadget(a.name, a.serial, a.id, a.udc, a.buflen, a.alt_layout)
    sim = Sim(g, a.timeout)
    print("END ok gadget %s ready (serial %s, id %s, not plugged)" % (a.name, a.serial, a.id), flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] == "quit":
                print("END ok bye", flush=True)
                break
            if words[0] == "help":
                names = sorted(n[4:].replace("_", "-") for n in dir(sim) if n.startswith("cmd_"))
                print("END ok commands: " + " ".join(names), flush=True)
                continue
            if words[0] == "timeout":
                sim.timeout = float(words[1])
                print("END ok timeout %s" % words[1], flush=True)
                continue
            fn = getattr(sim, "cmd_" + words[0].replace("-", "_"), None)
            if fn is None:
                print("END fail unknown command %s" % words[0], flush=True)
                continue
            try:
                print("END ok " + fn(*words[1:]), flush=True)
            except Deadline:
                print("END fail %s: timed out after %.0f s" % (words[0], sim.timeout), flush=True)
            except Unexpected as e:
                print("END fail %s: %s" % (words[0], e), flush=True)
            except OSError as e:
                print("END fail %s: %s" % (words[0], e), flush=True)
            except (TypeError, ValueError, struct.error) as e:
                print("END fail %s: %s" % (words[0], e), flush=True)
    finally:
        g.teardown()


if __name__ == "__main__":
    main()
