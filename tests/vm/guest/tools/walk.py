#!/usr/bin/env python3
"""Metadata walk of the benchmark (tests/vm/guest/bench.sh): what
`find DIR -printf '%s\\n'` does (read every directory, lstat every entry),
timed inside the process so that no fork/exec is measured. Prints the number
of entries (DIR itself included, as find counts it) and the seconds taken."""
import os
import sys
import time


def walk(d):
    n = 0
    with os.scandir(d) as it:
        for e in it:
            e.stat(follow_symlinks=False)
            n += 1
            if e.is_dir(follow_symlinks=False):
                n += walk(e.path)
    return n


top = sys.argv[1]
t0 = time.monotonic()
os.lstat(top)
n = 1 + walk(top)
print("%d %.6f" % (n, time.monotonic() - t0))
