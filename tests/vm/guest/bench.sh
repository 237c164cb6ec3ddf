#!/bin/bash
# Benchmark (tests/vm/run --bench), one guest boot: the same board and the same
# diod, reached three ways, in alternating rounds (usb9pfsd, p9_fwd.py, tcp,
# usb9pfsd, p9_fwd.py, tcp, ...):
#   usb9pfsd   board --usbg--> usb9pfsd run --> diod
#   p9_fwd.py  board --usbg--> tools/usb/p9_fwd.py (Debian python3) --> diod
#   tcp        mount -t 9p -o trans=tcp straight to diod (no USB hop)
# Each round: sequential read and write of a 16 MiB file (fresh mount each, page
# cache dropped), a metadata walk of a 1000-file tree by one process
# (find -printf '%s\n'), and the forwarder's CPU time (utime+stime from
# /proc/PID/stat) per MiB moved. Prints medians and ratios to p9_fwd.py and
# writes /run/rig/out/bench/bench.md (+ raw.txt).
set -uo pipefail
# shellcheck source=/dev/null
. /run/rig/out/.stage/env.sh
SCENARIO=bench
SC_OUT=$RIG_OUTROOT/bench
mkdir -p "$SC_OUT"
# shellcheck source=lib.sh
. "$RIG_VM/guest/lib.sh"

ROUNDS=${BENCH_ROUNDS:-3}
SIZE_MB=16
MSIZE=16384          # what usbg negotiates (the function's buflen); tcp gets the same
RAW=$SC_OUT/raw.txt
: > "$RAW"
: > "$SC_OUT/checks.txt"
HZ=$(getconf CLK_TCK)

rig_setup 1
EX=$EXPORTS/a
mkdir -p "$EX"
diod_start a 5640 "$EX"
dd if=/dev/urandom of="$EX/big.bin" bs=1M count=$SIZE_MB status=none
dd if=/dev/urandom of="$LOCAL/w.bin" bs=1M count=$SIZE_MB status=none
for d in $(seq -w 1 20); do
    mkdir -p "$EX/tree/d$d"
    for f in $(seq -w 1 50); do printf '%s\n' "$d$f" > "$EX/tree/d$d/f$f"; done
done
NENT=$(find "$EX/tree" -printf '%s\n' | wc -l)
log "tree: $NENT entries"

board_create A 0001-BOARD-A 1d6b:0109 rigA dummy_udc.0
B_BACKEND[A]=127.0.0.1:5640
fwd_write_config "$LOCAL/usb9pfsd.toml"
board_plug A
M=${B_MNT[A]}
PORT_PATH=$(host_dev_of 0001-BOARD-A)

FPID=""
start_fwd() {
    FPID=""
    case $1 in
    usb9pfsd)
        NO_COLOR=1 "$USB9PFSD" run --config "$FWD_CONFIG" >>"$SC_OUT/usb9pfsd.log" 2>&1 &
        FPID=$! ;;
    p9fwd)
        python3 "$P9FWD" --id 1d6b:0109 --path "$PORT_PATH" connect -s 127.0.0.1 -p 5640 >>"$SC_OUT/p9fwd.log" 2>&1 &
        FPID=$! ;;
    tcp) ;;
    esac
    sleep 1
}
stop_fwd() {
    [ -n "$FPID" ] || return 0
    kill -TERM "$FPID" 2>/dev/null
    wait_until 15 sh -c "! kill -0 $FPID 2>/dev/null" || kill -KILL "$FPID" 2>/dev/null
    wait "$FPID" 2>/dev/null
    FPID=""
}
do_mount() {
    case $1 in
    tcp) timeout -s KILL 60 mount -t 9p -o "trans=tcp,port=5640,aname=$EX,msize=$MSIZE" 127.0.0.1 "$M" ;;
    *) timeout -s KILL 90 mount -t 9p -o "trans=usbg,aname=$EX,msize=$MSIZE" rigA "$M" ;;
    esac
}
do_umount() { timeout -s KILL 60 umount "$M"; ! is_mounted "$M"; }
cpu_ticks() { if [ -n "$FPID" ]; then awk '{print $14 + $15}' "/proc/$FPID/stat"; else echo 0; fi; }
now() { date +%s.%N; }
rate() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.3f", n / (b - a) }'; }
mbrate() { awk -v a="$1" -v b="$2" -v n="$((SIZE_MB * 1048576))" 'BEGIN { printf "%.3f", n / 1e6 / (b - a) }'; }

measure() {   # measure FWD ROUND
    local fwd=$1 r=$2 t0 t1 c0 c1 c2 n
    start_fwd "$fwd"
    if ! do_mount "$fwd"; then bad "round $r $fwd: mount failed"; stop_fwd; return; fi
    echo 3 > /proc/sys/vm/drop_caches
    c0=$(cpu_ticks); t0=$(now)
    timeout -s KILL 600 dd if="$M/big.bin" of=/dev/null bs=1M status=none || bad "round $r $fwd: read failed"
    t1=$(now); c1=$(cpu_ticks)
    echo "$fwd $r read_MBps $(mbrate "$t0" "$t1")" >> "$RAW"
    do_umount || { bad "round $r $fwd: umount failed"; return; }
    do_mount "$fwd" || { bad "round $r $fwd: mount failed"; stop_fwd; return; }
    c1=$(cpu_ticks); t0=$(now)
    timeout -s KILL 600 dd if="$LOCAL/w.bin" of="$M/w.bin" bs=1M conv=fsync status=none || bad "round $r $fwd: write failed"
    t1=$(now); c2=$(cpu_ticks)
    echo "$fwd $r write_MBps $(mbrate "$t0" "$t1")" >> "$RAW"
    [ "$(sha "$EX/w.bin")" = "$(sha "$LOCAL/w.bin")" ] || bad "round $r $fwd: written file differs on the server"
    rm -f "$EX/w.bin"
    do_umount || { bad "round $r $fwd: umount failed"; return; }
    if [ -n "$FPID" ]; then
        # CPU of read + write together (the read part is c1_read-c0; the
        # remount in between is included and is a handful of messages)
        awk -v t="$((c2 - c0))" -v hz="$HZ" -v mib=$((2 * SIZE_MB)) \
            'BEGIN { printf "'"$fwd $r"' cpu_ms_per_MiB %.2f\n", t * 1000 / hz / mib }' >> "$RAW"
    fi
    do_mount "$fwd" || { bad "round $r $fwd: mount failed"; stop_fwd; return; }
    t0=$(now)
    n=$(timeout -s KILL 600 find "$M/tree" -printf '%s\n' | wc -l)
    t1=$(now)
    [ "$n" -eq "$NENT" ] || bad "round $r $fwd: walk saw $n entries, expected $NENT"
    echo "$fwd $r meta_ops $(rate "$t0" "$t1" "$n")" >> "$RAW"
    do_umount || bad "round $r $fwd: umount failed"
    stop_fwd
    log "round $r $fwd: $(grep "^$fwd $r " "$RAW" | cut -d' ' -f3- | tr '\n' ' ')"
}

FWDS=(usb9pfsd p9fwd tcp)
[ -x "$USB9PFSD" ] || { log "no usb9pfsd binary staged; benchmarking p9_fwd.py and tcp only"; FWDS=(p9fwd tcp); }
for r in $(seq 1 "$ROUNDS"); do
    for f in "${FWDS[@]}"; do measure "$f" "$r"; done
done

python3 - "$RAW" "$NENT" "$SIZE_MB" "$ROUNDS" > "$SC_OUT/bench.md" <<'PY'
import statistics, sys
raw, nent, size, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
vals = {}
for line in open(raw):
    f, r, m, v = line.split()
    vals.setdefault((f, m), []).append(float(v))
def med(f, m):
    v = vals.get((f, m))
    return statistics.median(v) if v else None
def fmt(x):
    return "—" if x is None else ("%.2f" % x if x < 100 else "%.0f" % x)
def ratio(a, b):
    return "—" if a is None or b is None or b == 0 else "%.2f×" % (a / b)
rows = [("sequential read, MB/s (%s MiB)" % size, "read_MBps"),
        ("sequential write, MB/s (%s MiB, fsync)" % size, "write_MBps"),
        ("metadata walk, entries/s (find -printf over %s entries)" % nent, "meta_ops"),
        ("forwarder CPU, ms per MiB moved (read+write)", "cpu_ms_per_MiB")]
print("| metric (median of %s rounds) | usb9pfsd | p9_fwd.py | trans=tcp (no USB) | usb9pfsd ÷ p9_fwd.py | tcp ÷ p9_fwd.py |" % rounds)
print("|---|---|---|---|---|---|")
for label, m in rows:
    u, p, t = med("usb9pfsd", m), med("p9fwd", m), med("tcp", m)
    print("| %s | %s | %s | %s | %s | %s |" % (label, fmt(u), fmt(p), fmt(t), ratio(u, p), ratio(t, p)))
print()
print("CPU ratio < 1 means usb9pfsd needs less CPU per MiB than p9_fwd.py; the tcp row has no forwarder.")
print("Per-round values: tests/vm/out/bench/raw.txt. msize %s for every path; page cache dropped and a fresh mount for each measurement." % "16384")
PY
if grep -q '^FAIL' "$SC_OUT/checks.txt"; then write_result FAIL "$(grep -m1 '^FAIL' "$SC_OUT/checks.txt" | cut -c6-)"
else write_result PASS "benchmark complete"; fi
cat "$SC_OUT/bench.md"
dmesg > "$SC_OUT/dmesg.txt"
sync
