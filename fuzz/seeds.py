#!/usr/bin/env python3
"""Writes the hand-made seeds of fuzz/corpus/ (named seed-*): valid 9P frames
as a board and a server send them, in each target's input encoding, and
config examples. Beside them: regress-* (inputs of fixed findings, by hand)
and inputs the fuzzer found that `fuzz/run merge` kept, named by SHA-1. Run from anywhere: fuzz/seeds.py"""

import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


def msg(kind, tag, body=b""):
    return struct.pack("<IBH", 7 + len(body), kind, tag) + body


def s(text):
    b = text.encode()
    return struct.pack("<H", len(b)) + b


TVERSION = msg(100, 0xFFFF, struct.pack("<I", 8192) + s("9P2000.L"))
RVERSION = msg(101, 0xFFFF, struct.pack("<I", 8192) + s("9P2000.L"))
TVERSION_U = msg(100, 0xFFFF, struct.pack("<I", 65536) + s("9P2000.u"))
TATTACH = msg(104, 1, struct.pack("<II", 0, 0xFFFFFFFF) + s("root") + s("/srv") + struct.pack("<I", 0))
TWALK = msg(110, 2, struct.pack("<IIH", 0, 1, 2) + s("etc") + s("hostname"))
TREAD = msg(116, 3, struct.pack("<IQI", 1, 0, 4096))
RREAD = msg(117, 3, struct.pack("<I", 9) + b"board-a\n\0")
RLERROR = msg(7, 3, struct.pack("<I", 2))
RCLUNK = msg(121, 1)


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


# frame: a frame as it sits in the buffer.
for name, frame in [
    ("tversion", TVERSION), ("tversion-u", TVERSION_U), ("rversion", RVERSION),
    ("tattach", TATTACH), ("twalk", TWALK), ("tread", TREAD), ("rread", RREAD),
    ("rlerror", RLERROR), ("short", TVERSION[:3]),
    ("oversize", struct.pack("<I", 0xFFFFFFFF) + TVERSION[4:]),
]:
    write("frame", name, frame)


# recv: pick byte (mps index | ceiling index << 2), then packet operations.
def pick(mps_i, ceil_i):
    return bytes([mps_i | ceil_i << 2])


def short(data):
    return b"\x01" + struct.pack("<H", len(data)) + data


def full(data):
    return b"\x02" + data


def run(count, fill):
    return b"\x03" + struct.pack("<HB", count, fill)


ZLP = b"\x00"
MPS512_16K = pick(2, 5)  # wMaxPacketSize 512, ceiling 16384
big = struct.pack("<IBHI", 16384, 118, 4, 1)  # Twrite of 16384 bytes
write("recv", "session", MPS512_16K + short(TVERSION) + short(TATTACH) + short(TWALK) + short(TREAD))
write("recv", "split-and-stray-zlp", MPS512_16K + ZLP + short(TWALK[:2]) + short(TWALK[2:]))
write("recv", "packet-multiple-with-zlp",
      MPS512_16K + full(struct.pack("<IBH", 512, 118, 5) + bytes(505)) + ZLP + short(TREAD))
write("recv", "16k-frame-in-runs", MPS512_16K + full(big + bytes(512 - len(big))) + run(31, 0x55) + ZLP)
write("recv", "mps8-lying-size", pick(0, 4) + full(struct.pack("<IBHB", 100, 116, 7, 0)) + short(b"abc"))
write("recv", "oversize", MPS512_16K + short(struct.pack("<I", 0xFFFFFFFF) + TREAD[4:]))


# reply: pick byte (buffer index | ceiling index << 2 | 0x20: no header),
# request tag, then what the server sends.
def reply_input(buf_i, ceil_i, tag, stream):
    return bytes([buf_i | ceil_i << 2]) + struct.pack("<H", tag) + stream


write("reply", "rversion", reply_input(2, 5, 0xFFFF, RVERSION))
write("reply", "rread-rlerror", reply_input(2, 5, 3, RREAD + RLERROR + RLERROR))
write("reply", "rclunk-then-wrong-tag", reply_input(2, 5, 1, RCLUNK + msg(121, 2)))
write("reply", "oversize", reply_input(2, 5, 3, struct.pack("<I", 0xFFFFFFFF) + RREAD[4:]))
write("reply", "truncated", reply_input(3, 6, 3, RREAD[:-4]))


# config: TOML as users write it.
write("config", "example", (HERE.parent / "config.example.toml").read_bytes())
write("config", "readme", b"""[defaults]
backend = "127.0.0.1:564"

[[board]]
serial = "0001-BOARD-A"
backend = "buildhost:5640"

[[board]]
path = "1-1.2"
backend = "unix:/run/diod-b.sock"
buflen = 65536
""")
write("config", "daemon", b"""[daemon]
max_frame = 65536
allow_ids = ["1d6b:0109", "0525:a4a0"]

[defaults]
backend = "[::1]:564"
buflen = 16384
""")
write("config", "duplicate-utf8-serial", """[[board]]
serial = "\u00e9"
backend = "h:1"
[[board]]
serial = "\u00e9"
backend = "h:1"
""".encode())
write("config", "errors", b"""[[board]]
serial = "A"
path = "1-1"
backend = "nohostport"
buflen = 1
""")
write("config", "confined", b"""[defaults]
backend = "h:1"
export = "/srv/boards/{path}/{serial}-{interface}"
uid = 1000
gid = 100

[[board]]
serial = "A"
backend = "h:2"
export = "/srv/a"
read_only = true
""")


# confine: a policy byte (bit 0 export, 1 read_only, 2 uid, 3 gid; bits 4-5
# the ceiling), then steps: a structured request (selector from 0x80: type
# = selector % 22) and its fields as single bytes, then a "server fails"
# byte (0: fail). Names and anames index the target's dictionaries.
ATTACH, WALK, LCREATE, RENAMEAT, REMOVE, CLUNK, READ = 0x84, 0x85, 0x8A, 0x8E, 0x91, 0x92, 0x94
ESCAPES = bytes([
    ATTACH, 0, 0, 1,            # fid 0 attaches with an empty aname
    WALK, 0, 1, 1, 2, 1,        # fid 1 = walk [..] from the root
    WALK, 0, 2, 2, 5, 0, 1,     # walk [link, a]: through a symlink
    WALK, 0, 3, 3, 0, 2, 2, 1,  # walk [a, .., ..]
    ATTACH, 4, 6, 1,            # aname /e/link/x
    ATTACH, 5, 4, 1,            # aname /e/../f
    LCREATE, 1, 0, 1,           # fid 1 becomes a
    RENAMEAT, 0, 0, 0, 1, 1,    # rename a to b
    WALK, 3, 3, 1, 2, 1,        # walk in place [..]
    READ, 1, 1,
    REMOVE, 3, 1,
    CLUNK, 1, 1,
])
write("confine", "escapes-export-only", bytes([0x11]) + ESCAPES)
write("confine", "escapes-everything", bytes([0x1F]) + ESCAPES)
write("confine", "raw-tattach-twalk", bytes([0x21, 0x7F, len(TATTACH) - 7]) + TATTACH + b"\x01"
      + bytes([0x7F, len(TWALK) - 7]) + TWALK + b"\x01")
