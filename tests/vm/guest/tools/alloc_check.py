#!/usr/bin/env python3
"""Reads an `strace -f -e trace=mmap,mremap,brk,mprotect` log of usb9pfsd
and says whether any call asked for BOUND bytes or more of readable/writable
memory, whether or not the pages were ever touched (what VmRSS and VmHWM
cannot see). Used by the VM rig's alloc watch (lib.sh: alloc_watch_check)
while a fault declares a size.

    alloc_check.py BOUND STRACE_LOG

Prints "ok: N calls traced, largest request K bytes" and exits 0, or one
line naming the offending calls and exits 1. (Zero calls is fine: a
restarted worker may reuse a cached stack and arena memory. That strace was
attached is checked by the caller, from every thread's TracerPid.)

Counted: mmap with PROT_WRITE (length), mremap (new length), mprotect to
PROT_WRITE (length: glibc grows a thread arena's heap this way), brk growth
(the requested break minus the break the previous call returned).
PROT_NONE reservations (glibc's 64 MiB arena heaps, guard pages) are not
allocations and do not count. Test-only: never shipped.
"""
import re
import sys

CALL = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(mmap|mremap|mprotect|brk)\((.*)")
RESUMED = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+<\.\.\. (brk) resumed>.*=\s*(0x[0-9a-f]+)")


def num(text):
    return int(text, 0)


def main():
    bound = int(sys.argv[1])
    calls, largest, big = 0, 0, []
    brk = None
    pending_brk = {}  # pid -> requested break of an unfinished brk
    with open(sys.argv[2], errors="replace") as f:
        for line in f:
            line = line.strip()
            m = RESUMED.match(line)
            if m:
                want = pending_brk.pop(m.group(1), None)
                if want is not None and brk is not None and want - brk >= bound:
                    big.append(line)
                brk = num(m.group(3))
                continue
            m = CALL.match(line)
            if not m:
                continue
            pid, name, rest = m.groups()
            calls += 1
            args = [a.strip() for a in rest.split(")")[0].split(",")]
            size = 0
            try:
                if name == "mmap" and len(args) >= 3 and "PROT_WRITE" in args[2]:
                    size = num(args[1])
                elif name == "mremap" and len(args) >= 3:
                    size = num(args[2])
                elif name == "mprotect" and len(args) >= 3 and "PROT_WRITE" in args[2]:
                    size = num(args[1])
                elif name == "brk":
                    want = 0 if args[0] in ("NULL", "0") else num(args[0])
                    r = re.search(r"=\s*(0x[0-9a-f]+)\s*$", line)
                    if want and brk is not None:
                        size = want - brk
                    if r:
                        brk = num(r.group(1))
                    elif want:
                        pending_brk[pid] = want
            except ValueError:
                continue
            largest = max(largest, size)
            if size >= bound:
                big.append(line)
    if big:
        print("%d request(s) of >= %d bytes: %s" % (len(big), bound, " | ".join(big[:4])))
        return 1
    print("ok: %d calls traced, largest request %d bytes" % (calls, largest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
