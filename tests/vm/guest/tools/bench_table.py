#!/usr/bin/env python3
"""Turns the benchmark's raw numbers (tests/vm/guest/bench.sh) into the
markdown tables of tests/vm/out/bench.md: per msize, the medians of every
workload for usb9pfsd, p9_fwd.py and trans=tcp with their ratios and the
issue's targets; then the per-message time budget and system calls per
message of usb9pfsd.

usage: bench_table.py RAW BUDGET NENT SIZE_MB ROUNDS NFILES BUDGET_READ_MB BUDGET_FILES HZ

A sample recorded as FAIL (a workload that failed, moved too few bytes or
read wrong data) is never a number here: each cell gives its median's
number of samples ("n=3"), and the failed rounds ("1 FAIL"); a budget
workload that failed is a FAIL row.
"""
import os
import re
import statistics
import sys

raw, budget, nent, size, rounds, nfiles, b_read, b_files, hz = sys.argv[1:10]
hz = int(hz)
vals = {}   # (forwarder, msize, metric) -> {round: value, or None for FAIL}
msizes = []
for line in open(raw):
    f, ms, r, m, v = line.split()
    vals.setdefault((f, ms, m), {})[r] = None if v == "FAIL" else float(v)
    if ms not in msizes:
        msizes.append(ms)


# CPU in the kernel, per round: all CPU less user space
for (f, ms, m), v in list(vals.items()):
    if m == "cpu_ms_per_MiB" and (f, ms, "user_cpu_ms_per_MiB") in vals:
        user = vals[(f, ms, "user_cpu_ms_per_MiB")]
        vals[(f, ms, "kernel_cpu_ms_per_MiB")] = {
            r: None if c is None or user.get(r) is None else c - user[r] for r, c in v.items()}


def samples(f, ms, m):
    """(the passed samples, how many rounds failed)"""
    v = vals.get((f, ms, m), {})
    ok = [x for x in v.values() if x is not None]
    return ok, len(v) - len(ok)


def med(f, ms, m):
    ok, _ = samples(f, ms, m)
    return statistics.median(ok) if ok else None


def num(x):
    return "%.2f" % x if x < 100 else "%.0f" % x


def fmt(x):
    return "—" if x is None else num(x)


def cell(f, ms, m):
    """The median with its sample count and failures: "12.30 (n=3)",
    "12.30 (n=2, 1 FAIL)", "FAIL (3 of 3)"."""
    ok, failed = samples(f, ms, m)
    if not ok and not failed:
        return "—"
    if not ok:
        return "**FAIL** (%d of %d)" % (failed, failed)
    text = "%s (n=%d" % (num(statistics.median(ok)), len(ok))
    return text + (", **%d FAIL**)" % failed if failed else ")")


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fr(x):
    return "—" if x is None else "%.2f×" % x


ROWS = [
    ("sequential read, MB/s (%s MiB)" % size, "read_MBps", True),
    ("sequential write, MB/s (%s MiB, fsync)" % size, "write_MBps", True),
    ("metadata walk, entries/s (walk.py over %s entries)" % nent, "meta_ops", True),
    ("small files, files/s (%s × create+write, stat, read, unlink)" % nfiles, "small_files_per_s", True),
    ("forwarder CPU, ms per MiB moved (read+write)", "cpu_ms_per_MiB", False),
    ("… of which in user space (the forwarder's own code)", "user_cpu_ms_per_MiB", False),
    ("… of which in the kernel (system calls, usbfs, and softirqs that land on it)", "kernel_cpu_ms_per_MiB", False),
]


def targets(ms, m):
    """The issue's targets: (min usb9pfsd/p9_fwd.py, min usb9pfsd/tcp), or
    for CPU (max usb9pfsd/p9_fwd.py, None)."""
    if m in ("read_MBps", "write_MBps"):
        return (2.5 if ms == "16384" else None, 0.85)
    if m in ("meta_ops", "small_files_per_s"):
        return (2.0, 0.70)
    return (0.2, None)


def verdict(ms, m, rp, rt):
    lo_p, lo_t = targets(ms, m)
    if m in ("user_cpu_ms_per_MiB", "kernel_cpu_ms_per_MiB"):
        return ""
    if m == "cpu_ms_per_MiB":
        return "≤ %.1f× p9: %s" % (lo_p, "—" if rp is None else ("met" if rp <= lo_p else "missed"))
    parts = []
    if lo_p is not None:
        parts.append("≥ %.1f× p9: %s" % (lo_p, "—" if rp is None else ("met" if rp >= lo_p else "missed")))
    if lo_t is not None:
        parts.append("≥ %d%% tcp: %s" % (lo_t * 100, "—" if rt is None else ("met" if rt >= lo_t else "missed")))
    return "; ".join(parts)


for ms in msizes:
    print("### msize %s (board buflen %s)" % (ms, ms))
    print()
    print("| metric (median of the rounds that passed, n of %s; FAIL = rounds that failed) | usb9pfsd | p9_fwd.py | trans=tcp (no USB) | usb9pfsd ÷ p9_fwd.py | usb9pfsd ÷ tcp | target |" % rounds)
    print("|---|---|---|---|---|---|---|")
    for label, m, _ in ROWS:
        u, p, t = med("usb9pfsd", ms, m), med("p9fwd", ms, m), med("tcp", ms, m)
        rp, rt = ratio(u, p), ratio(u, t)
        # a target is judged only on complete rounds
        failed = any(samples(f, ms, m)[1] for f in ("usb9pfsd", "p9fwd", "tcp"))
        judged = "not judged: rounds failed" if failed else verdict(ms, m, rp, rt)
        print("| %s | %s | %s | %s | %s | %s | %s |" % (
            label, cell("usb9pfsd", ms, m), cell("p9fwd", ms, m), cell("tcp", ms, m), fr(rp), fr(rt), judged))
    print()

    if any(k[0] == "base" and k[1] == ms for k in vals):
        print("usb9pfsd against the baseline build (BENCH_BASE_BIN) in the same rounds:")
        print()
        print("| metric (median of the rounds that passed, n of %s) | usb9pfsd | baseline | usb9pfsd ÷ baseline |" % rounds)
        print("|---|---|---|---|")
        for label, m, _ in ROWS:
            u, b = med("usb9pfsd", ms, m), med("base", ms, m)
            print("| %s | %s | %s | %s |" % (label, cell("usb9pfsd", ms, m), cell("base", ms, m), fr(ratio(u, b))))
        print()

print("CPU ratio < 1: usb9pfsd needs less CPU per MiB than p9_fwd.py (trans=tcp has no forwarder).")
print("Per-round values: tests/vm/out/bench/raw.txt. A fresh mount (cache=none) for each sequential measurement; every workload timed inside its own process.")
print()

# ---------------------------------------------------------------- budget
timing, straced = [], {}
for line in open(budget):
    parts = line.split()
    ms, kind, what = parts[0], parts[1], parts[2]
    nums = [x for x in parts[3:] if x not in ("|", "tcp_s")]
    try:
        values = [float(x) for x in nums]
    except ValueError:
        values = None   # a FAIL (or a missing counter): never a figure
    if kind == "timing":
        timing.append((ms, what, values if values is not None and len(values) >= 15 else None))
    elif kind == "strace":
        straced[ms] = values if values is not None and len(values) >= 5 else None


def strace_calls(ms):
    """{syscall: calls} from strace -c's summary table."""
    path = os.path.join(os.path.dirname(budget), "strace-%s.txt" % ms)
    calls = {}
    try:
        for line in open(path):
            f = line.split()
            if len(f) >= 5 and re.match(r"^[0-9.]+$", f[0]) and f[-1] != "total":
                calls[f[-1]] = int(f[3])
    except OSError:
        pass
    return calls


WORKLOAD = {"read": "read %s MiB" % b_read, "write": "write %s MiB" % b_read, "small": "%s small files" % b_files}
if timing:
    print("### Where one message's time goes (usb9pfsd)")
    print()
    print("The three workloads one after the other on one mount through usb9pfsd, each timed against the daemon's counters (`usb9pfsd status --json`), "
          "and the same workload over trans=tcp. Per 9P message, in µs of guest wall clock. "
          "*Server* is request written → reply read (the server's work and loopback TCP both ways); "
          "*USB OUT* is the reply's transfer until the board took it; *board + USB IN* is the rest: "
          "the board's application and 9P client, its usb9pfs function and the IN transfer that brings the next request.")
    print()
    print("| msize | workload | messages | total | board + USB IN | server | USB OUT | usb9pfsd CPU (user + kernel) | of it user space | trans=tcp total | gap to tcp |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for ms, what, n in timing:
        if n is None:
            print("| %s | %s | **FAIL** (the workload, its checksum or the counters failed: guest.log) |  |  |  |  |  |  |  |  |" % (
                ms, WORKLOAD.get(what, what)))
            continue
        m0, bw0, sv0, rs0, m1, bw1, sv1, rs1, t0, t1, c0, c1, u0, u1, tcp_s = n[:15]
        msgs = m1 - m0
        if msgs <= 0:
            print("| %s | %s | **FAIL** (no message counted) |  |  |  |  |  |  |  |  |" % (ms, WORKLOAD.get(what, what)))
            continue
        wall = (t1 - t0) * 1e6 / msgs
        server, out = (sv1 - sv0) / msgs, (rs1 - rs0) / msgs
        cpu = (c1 - c0) / hz * 1e6 / msgs
        user = (u1 - u0) / hz * 1e6 / msgs
        tcp = tcp_s * 1e6 / msgs
        print("| %s | %s | %d | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f |" % (
            ms, WORKLOAD.get(what, what), msgs, wall, wall - server - out, server, out, cpu, user, tcp, wall - tcp))
    print()

if straced:
    print("### System calls per message (usb9pfsd, strace -c -f on every thread, all three workloads)")
    print()
    print("| msize | messages | all | per call |")
    print("|---|---|---|---|")
    for ms in msizes:
        if ms not in straced:
            continue
        n = straced[ms]
        if n is None:
            print("| %s | **FAIL** (a workload under strace failed: guest.log) |  |  |" % ms)
            continue
        msgs = n[4] - n[0]
        calls = strace_calls(ms)
        if msgs <= 0 or not calls:
            continue
        detail = ", ".join("%s %.2f" % (k, v / msgs) for k, v in sorted(calls.items(), key=lambda kv: -kv[1]) if v / msgs >= 0.01)
        print("| %s | %d | %.2f | %s |" % (ms, msgs, sum(calls.values()) / msgs, detail))
    print()
