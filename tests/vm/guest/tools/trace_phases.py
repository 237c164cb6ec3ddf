#!/usr/bin/env python3
"""Cuts the ftraces of tests/vm/guest/trace.sh into 9P messages and prints,
per forwarder and workload, the median time of each phase of a message that
carries bulk data (a Twrite or an Rread of at least 4 KiB), in µs:

  board → IN done    the board's 9P client queues the request (p9_usbg_request)
                     until its IN transfer completes (usb9pfs_tx_complete)
  IN done → sent     the forwarder wakes, reaps and starts writing it to the server
  server             its write to the server until its last read of the reply
  reply → board      the reply's OUT transfer until the board's usb9pfs function
                     has it (usb9pfs_rx_complete)
  board              the board's client and application until the next request

usage: trace_phases.py MSIZE trace-FWD-WORKLOAD.txt..."""
import os
import re
import statistics
import sys

LINE = re.compile(r"\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+):\s+(.*)")
PHASES = ["board → IN done", "IN done → sent", "server", "reply → board", "board"]


def events(path):
    for line in open(path, errors="replace"):
        if line.startswith("#"):
            continue
        m = LINE.match(line)
        if m:
            comm, _pid, _cpu, ts, what = m.groups()
            yield float(ts) * 1e6, comm, what


def messages(path):
    ev = list(events(path))
    starts = [i for i, e in enumerate(ev) if e[2].startswith("p9_usbg_request")]
    for a, b in zip(starts, starts[1:]):
        t0, seg = ev[a][0], ev[a:b]
        txc = next((t for t, _, w in seg if w.startswith("usb9pfs_tx_complete")), None)
        rxc = next((t for t, _, w in seg if w.startswith("usb9pfs_rx_complete")), None)
        if txc is None or rxc is None:
            continue
        fwd = [(t, w) for t, c, w in seg if c != "diod" and t > txc]
        send = next((t for t, w in fwd if w.startswith("sys_sendto(")), None)
        recvs = [t for t, w in fwd if w.startswith("sys_recvfrom ->") and t < rxc]
        if send is None or not recvs:
            continue
        sent = max([int(x, 16) for x in re.findall(r"sys_sendto\(.*?len: ([0-9a-f]+)", " ".join(w for _, w in fwd))] or [0])
        got = max([int(x, 16) for x in re.findall(r"sys_recvfrom -> 0x([0-9a-f]+)", " ".join(w for _, w in fwd))] or [0])
        if max(sent, got) < 4096:
            continue
        yield [txc - t0, send - txc, recvs[-1] - send, rxc - recvs[-1], ev[b][0] - rxc]


def main():
    msize, paths = sys.argv[1], sys.argv[2:]
    print("### One message's phases in kernel time (msize %s, ftrace)" % msize)
    print()
    print("Medians over the messages that carry bulk data, in µs of guest time with ftrace on "
          "(which slows every traced event; compare the forwarders with each other).")
    print()
    print("| forwarder | workload | messages | " + " | ".join(PHASES) + " | total |")
    print("|---|---|---|" + "---|" * (len(PHASES) + 1))
    for path in sorted(paths):
        name = os.path.basename(path)[len("trace-"):-len(".txt")]
        fwd, work = name.rsplit("-", 1)
        rows = list(messages(path))
        if not rows:
            print("| %s | %s | 0 |%s" % (fwd, work, " — |" * (len(PHASES) + 1)))
            continue
        med = [statistics.median(c) for c in zip(*rows)]
        total = statistics.median([sum(r) for r in rows])
        print("| %s | %s | %d | %s | %.0f |" % (fwd, work, len(rows), " | ".join("%.0f" % x for x in med), total))


main()
