#!/usr/bin/env python3
"""Small-file workload of the benchmark (tests/vm/guest/bench.sh), like an
untar, a build and a clean: one process creates and writes N files of
0.5-4 KiB in a fresh directory, then stats each, reads each back (checked),
then unlinks each and the directory. Prints files per second (N divided by
the whole time) and the seconds taken, timed inside the process (no
interpreter start-up); exits non-zero on any mismatch."""
import os
import sys
import time

d, n = sys.argv[1], int(sys.argv[2])
blobs = [os.urandom(512 + (k * 229) % 3585) for k in range(17)]
os.mkdir(d)
names = [os.path.join(d, "f%05d.c" % i) for i in range(n)]
t0 = time.monotonic()
for i, p in enumerate(names):
    with open(p, "wb") as f:
        f.write(blobs[i % 17])
for i, p in enumerate(names):
    if os.stat(p).st_size != len(blobs[i % 17]):
        sys.exit("%s: wrong size" % p)
for i, p in enumerate(names):
    with open(p, "rb") as f:
        if f.read() != blobs[i % 17]:
            sys.exit("%s: wrong contents" % p)
for p in names:
    os.unlink(p)
os.rmdir(d)
secs = time.monotonic() - t0
print("%.3f %.6f" % (n / secs, secs))
