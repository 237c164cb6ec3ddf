#!/bin/bash
# Benchmark (tests/vm/run --bench), one guest boot: the same board and the same
# diod, reached three ways, in alternating rounds (usb9pfsd, p9_fwd.py, tcp,
# usb9pfsd, p9_fwd.py, tcp, ...):
#   usb9pfsd   board --usbg--> usb9pfsd run --> diod
#   p9_fwd.py  board --usbg--> tools/usb/p9_fwd.py (Debian python3) --> diod
#   tcp        mount -t 9p -o trans=tcp straight to diod (no USB hop)
# at each msize of BENCH_MSIZES (default "16384 65536"; the board's usb9pfs
# buflen is set to it, a second gadget for the second msize).
#
# Each round: sequential read and write of a 16 MiB file (fresh mount each;
# the default cache=none sends every read to the server; MB/s from the bytes
# dd reports it moved, the read's copy checksummed against the server's file,
# the written file checksummed on the server), a metadata walk of a
# 1000-file tree by one process
# (tools/walk.py: read every directory, lstat every entry, as find does), a
# small-file workload by one process (BENCH_FILES, default 2000, files of
# 0.5-4 KiB: create+write all, stat all, read all, unlink all, contents
# checked), and the forwarder's CPU time (utime+stime from /proc/PID/stat)
# per MiB moved. Each workload times itself (see timed_dd).
#
# Then, per msize, the budget of one message through usb9pfsd (profile), for
# each of three workloads (BUDGET_READ_MB sequential read, the same amount
# written, BUDGET_FILES small files): wall time against usb9pfsd's status
# counters (server_wait_us, reply_send_us, t_messages) and its CPU, the same
# workload over trans=tcp for the gap, and all three once more under
# `strace -c -f` on every daemon thread for system calls per message.
#
# Prints medians and ratios, writes /run/rig/out/bench/bench.md (+ raw.txt,
# budget.txt, strace-*.txt). A measurement that failed (a workload that
# failed, moved fewer bytes or read wrong data) is recorded as FAIL, never
# as a number: the table gives each median's number of samples and the
# failures, and /run/rig/out/bench/result's one line is "FAIL: <the first
# failed check>" (tests/vm/run --bench then exits non-zero) or "PASS: ...".
set -uo pipefail
# shellcheck source=/dev/null
. /run/rig/out/.stage/env.sh
SCENARIO=bench
SC_OUT=$RIG_OUTROOT/bench
mkdir -p "$SC_OUT"
# shellcheck source=lib.sh
. "$RIG_VM/guest/lib.sh"

ROUNDS=${BENCH_ROUNDS:-3}
MSIZES=${BENCH_MSIZES:-"16384 65536"}
NFILES=${BENCH_FILES:-2000}
BUDGET_READ_MB=${BUDGET_READ_MB:-8}
BUDGET_FILES=${BUDGET_FILES:-300}
SIZE_MB=16
RAW=$SC_OUT/raw.txt
BUDGET=$SC_OUT/budget.txt
: > "$RAW"
: > "$BUDGET"
: > "$SC_OUT/checks.txt"
HZ=$(getconf CLK_TCK)

rig_setup 2
EX=$EXPORTS/a
mkdir -p "$EX"
diod_start a 5640 "$EX"
dd if=/dev/urandom of="$EX/big.bin" bs=1M count=$SIZE_MB status=none
dd if=/dev/urandom of="$LOCAL/w.bin" bs=1M count=$SIZE_MB status=none
# What every read must bring back, and how many bytes every copy must move.
BIG_BYTES=$((SIZE_MB * 1048576))
BIG_SHA=$(sha "$EX/big.bin")
BIG_SHA_W=$(sha "$LOCAL/w.bin")
BUDGET_BYTES=$((BUDGET_READ_MB * 1048576))
BUDGET_READ_SHA=$(head -c "$BUDGET_BYTES" "$EX/big.bin" | sha256sum | cut -d' ' -f1)
BUDGET_WRITE_SHA=$(head -c "$BUDGET_BYTES" "$LOCAL/w.bin" | sha256sum | cut -d' ' -f1)
for d in $(seq -w 1 20); do
    mkdir -p "$EX/tree/d$d"
    for f in $(seq -w 1 50); do printf '%s\n' "$d$f" > "$EX/tree/d$d/f$f"; done
done
NENT=$(find "$EX/tree" -printf '%s\n' | wc -l)
log "tree: $NENT entries"

# One gadget per msize (its usb9pfs buflen = msize), plugged one at a time so
# that no idle board shares the daemon or dummy_hcd with the measured one.
declare -A BOARD_OF=()
i=0
for ms in $MSIZES; do
    name=M$i
    board_create "$name" "00$((40 + i))-BENCH-$ms" 1d6b:0109 "rig$name" "dummy_udc.$i" "buflen=$ms"
    B_BACKEND[$name]=127.0.0.1:5640
    BOARD_OF[$ms]=$name
    i=$((i + 1))
done
fwd_write_config "$LOCAL/usb9pfsd.toml"
# The baseline build (BENCH_BASE_BIN) gets this config; with BENCH_CONFINE=1
# usb9pfsd gets one whose boards are confined to the export (export = EX:
# every request classified, every fid in the table), to measure what
# confinement and the fid table cost against a build without either.
BASE_CONFIG=$FWD_CONFIG
if [ -n "${BENCH_CONFINE:-}" ]; then
    for name in "${BOARD_OF[@]}"; do B_CONF[$name]="export = \"$EX\""; done
    fwd_write_config "$LOCAL/usb9pfsd-confined.toml"
    log "usb9pfsd's boards confined to export = $EX (BENCH_CONFINE)"
fi
CTL=$LOCAL/control

FPID=""
BOARD=""
start_fwd() {
    FPID=""
    case $1 in
    usb9pfsd)
        NO_COLOR=1 "$USB9PFSD" run --config "$FWD_CONFIG" --control-socket "$CTL" >>"$SC_OUT/usb9pfsd.log" 2>&1 &
        FPID=$! ;;
    base)
        NO_COLOR=1 "$STAGE/usb9pfsd-base" run --config "$BASE_CONFIG" --control-socket "$CTL" >>"$SC_OUT/usb9pfsd-base.log" 2>&1 &
        FPID=$! ;;
    p9fwd)
        python3 "$P9FWD" --id 1d6b:0109 --path "$(host_dev_of "${B_SERIAL[$BOARD]}")" connect -s 127.0.0.1 -p 5640 >>"$SC_OUT/p9fwd.log" 2>&1 &
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
# do_mount FWD: mount the export at $M. A board whose function disabled its
# endpoints at its last umount (kernels with the 2026 usbg fixes) refuses a
# mount with EBUSY, sending nothing, until the forwarder that claims it
# re-arms it (protocol notes): a fresh forwarder may not have yet, so a
# usbg mount is tried again for up to 30 s (each retry in guest.log).
do_mount() {
    local end=$(( $(date +%s) + 30 )) n=0
    case $1 in
    tcp) timeout -s KILL 60 mount -t 9p -o "trans=tcp,port=5640,aname=$EX,msize=$MSIZE" 127.0.0.1 "$M" ;;
    *)
        until timeout -s KILL 90 mount -t 9p -o "trans=usbg,aname=$EX,msize=$MSIZE" "${B_TAG[$BOARD]}" "$M" 2>>"$SC_OUT/guest.log"; do
            n=$((n + 1))
            [ "$(date +%s)" -lt "$end" ] || { log "$1: mount refused $n times in 30 s"; return 1; }
            log "$1: mount refused (try $n), again in 1 s"
            sleep 1
        done
        B_FRESH[$BOARD]=0
        ;;
    esac
}
do_umount() { timeout -s KILL 60 umount "$M"; ! is_mounted "$M"; }
# cpu_ticks [user|sys]: the forwarder's utime+stime (or one of them), clock ticks
cpu_ticks() {
    local f='$14 + $15'
    case ${1:-} in user) f='$14' ;; sys) f='$15' ;; esac
    if [ -n "$FPID" ]; then awk "{print $f}" "/proc/$FPID/stat"; else echo 0; fi
}
# Every workload times itself (dd's own report; walk.py and small_files.py
# read the clock inside the process): timing around a command would add its
# fork/exec, which costs tens to hundreds of ms under TCG (more right after
# drop_caches, when binaries come back from the host over virtio-9p), and
# that squeezed every ratio toward 1 (a 16 MiB write at 20 MB/s is 0.8 s).
# timed_dd DD-ARGS...: prints "BYTES SECONDS" as dd reports them (the bytes
# it copied; the time from after its files are open until the copy and any
# conv=fsync end); fails if dd fails or reports nothing.
timed_dd() {
    local out
    out=$(LC_ALL=C timeout -s KILL 600 dd "$@" 2>&1 >/dev/null) || { printf '%s\n' "$out" >&2; return 1; }
    out=$(printf '%s\n' "$out" | sed -n 's/^\([0-9][0-9]*\) bytes .* copied, \([0-9.e+-]*\) s,.*/\1 \2/p')
    [ -n "$out" ] && printf '%s\n' "$out"
}
# checked_copy KEY WHAT WANT_BYTES WANT_SHA FILE DD-ARGS...: a timed dd that
# must move WANT_BYTES and leave FILE with sha256 WANT_SHA; prints the
# seconds, or records a failed check (naming KEY and WHAT) and fails.
checked_copy() {
    local key=$1 what=$2 want_bytes=$3 want_sha=$4 file=$5 r got; shift 5
    if ! r=$(timed_dd "$@"); then bad "$key: $what failed (dd)"; return 1; fi
    if [ "${r% *}" != "$want_bytes" ]; then bad "$key: $what moved ${r% *} bytes, want $want_bytes"; return 1; fi
    got=$(sha "$file" 2>/dev/null)
    if [ "$got" != "$want_sha" ]; then bad "$key: $what: the data differs from the source (sha256 $got, want $want_sha)"; return 1; fi
    printf '%s\n' "${r#* }"
}
# No drop_caches before a measurement: a fresh cache=none mount already
# reads from the server, and dropping the page cache also drops the code of
# diod, the forwarder and dd (the guest's root is the host's, over
# virtio-9p), so the next workload pays for page faults to the host —
# measured: a 64 KiB-msize write ran at 12 MB/s right after it and at 30
# without, which skewed whichever forwarder came first after a drop.
per_s() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.3f", n / s }'; }
# mbps BYTES SECONDS
mbps() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.3f", n / 1e6 / s }'; }
# small_files DIR N: the small-file workload; prints "files/s seconds", fails
# on a mismatch
small_files() { timeout -s KILL 1200 python3 "$RIG_VM/guest/tools/small_files.py" "$1" "$2"; }
# walk DIR: the metadata walk; prints "entries seconds"
walk() { timeout -s KILL 600 python3 "$RIG_VM/guest/tools/walk.py" "$1"; }

# raw KEY METRIC VALUE: one sample; VALUE is FAIL for a failed measurement.
declare -A RECORDED=()
raw() { echo "$1 $2 $3" >> "$RAW"; RECORDED[$2]=1; }
# measure FWD ROUND: one round of every workload; whatever it could not
# measure is recorded as FAIL, so a failed round counts in the table.
measure() {
    local fwd=$1 m want=(read_MBps write_MBps meta_ops small_files_per_s)
    RECORDED=()
    measure_round "$@"
    stop_fwd
    [ "$fwd" = tcp ] || want+=(cpu_ms_per_MiB user_cpu_ms_per_MiB)
    for m in "${want[@]}"; do
        [ -n "${RECORDED[$m]:-}" ] || raw "$1 $MSIZE $2" "$m" FAIL
    done
    log "$1 $MSIZE $2: $(grep "^$1 $MSIZE $2 " "$RAW" | cut -d' ' -f4- | tr '\n' ' ')"
}
measure_round() {
    local fwd=$1 r=$2 s c0 c2 u0 u2 n key="$1 $MSIZE $2" rd=0 wr=0
    start_fwd "$fwd"
    if ! do_mount "$fwd"; then bad "$key: mount failed"; return; fi
    c0=$(cpu_ticks); u0=$(cpu_ticks user)
    if s=$(checked_copy "$key" "16 MiB read" "$BIG_BYTES" "$BIG_SHA" "$LOCAL/r.bin" if="$M/big.bin" of="$LOCAL/r.bin" bs=1M); then
        raw "$key" read_MBps "$(mbps "$BIG_BYTES" "$s")"; rd=1
    fi
    rm -f "$LOCAL/r.bin"
    do_umount || { bad "$key: umount failed"; return; }
    do_mount "$fwd" || { bad "$key: mount failed"; return; }
    if s=$(checked_copy "$key" "16 MiB write" "$BIG_BYTES" "$BIG_SHA_W" "$EX/w.bin" if="$LOCAL/w.bin" of="$M/w.bin" bs=1M conv=fsync); then
        raw "$key" write_MBps "$(mbps "$BIG_BYTES" "$s")"; wr=1
    fi
    c2=$(cpu_ticks); u2=$(cpu_ticks user)
    rm -f "$EX/w.bin"
    do_umount || { bad "$key: umount failed"; return; }
    if [ -n "$FPID" ] && [ "$rd$wr" = 11 ]; then
        # CPU of read + write together (the remount in between is included
        # and is a handful of messages)
        raw "$key" cpu_ms_per_MiB "$(awk -v t="$((c2 - c0))" -v hz="$HZ" -v mib=$((2 * SIZE_MB)) 'BEGIN { printf "%.2f", t * 1000 / hz / mib }')"
        raw "$key" user_cpu_ms_per_MiB "$(awk -v u="$((u2 - u0))" -v hz="$HZ" -v mib=$((2 * SIZE_MB)) 'BEGIN { printf "%.2f", u * 1000 / hz / mib }')"
    fi
    do_mount "$fwd" || { bad "$key: mount failed"; return; }
    if ! n=$(walk "$M/tree"); then bad "$key: walk failed: $n"
    elif [ "${n% *}" != "$NENT" ]; then bad "$key: walk saw ${n% *} entries, expected $NENT"
    else raw "$key" meta_ops "$(per_s "${n% *}" "${n#* }")"; fi
    if n=$(small_files "$M/small" "$NFILES"); then raw "$key" small_files_per_s "${n%% *}"
    else bad "$key: small-file workload failed: $n"; fi
    do_umount || bad "$key: umount failed"
}

# status_sum: t_messages board_wait_us server_wait_us reply_send_us of the board
status_sum() {
    timeout -s KILL 60 "$USB9PFSD" status --json --socket "$CTL" | python3 -c '
import json, sys
c = [b["counters"] for b in json.load(sys.stdin)["boards"] if b["counters"]["t_messages"]]
print(" ".join(str(sum(x.get(f, 0) for x in c)) for f in ("t_messages", "board_wait_us", "server_wait_us", "reply_send_us")))'
}
# budget_run KEY WORKLOAD: one of the budget's workloads on the mount at $M;
# prints the seconds it took (timed inside the workload, as above), or FAIL
# (and records a failed check): a failed workload must never look fast.
budget_run() {
    local out key="budget $MSIZE $1 $2"
    case $2 in
    read)
        checked_copy "$key" "read" "$BUDGET_BYTES" "$BUDGET_READ_SHA" "$LOCAL/b.bin" \
            if="$M/big.bin" of="$LOCAL/b.bin" bs=1M count="$BUDGET_READ_MB"
        ;;
    write)
        checked_copy "$key" "write" "$BUDGET_BYTES" "$BUDGET_WRITE_SHA" "$EX/budget.bin" \
            if="$LOCAL/w.bin" of="$M/budget.bin" bs=1M count="$BUDGET_READ_MB" conv=fsync
        ;;
    small)
        if out=$(small_files "$M/budget" "$BUDGET_FILES"); then echo "${out#* }"
        else bad "$key: small-file workload failed: $out"; false; fi
        ;;
    esac || echo FAIL
    rm -f "$LOCAL/b.bin" "$EX/budget.bin"
}
BUDGET_WORKLOADS=(read write small)
# profile: where one message's time goes (usb9pfsd), per workload; the same
# workloads over tcp for the gap; then all of them again under strace for
# system calls per message
profile() {
    local w e c0 c1 u0 u1 s0 s1 sc="$SC_OUT/strace-$MSIZE.txt"
    local -A tcp_s=()
    do_mount tcp || { bad "budget $MSIZE: tcp mount failed"; return; }
    for w in "${BUDGET_WORKLOADS[@]}"; do
        tcp_s[$w]=$(budget_run tcp "$w")
    done
    do_umount || { bad "budget $MSIZE: umount failed"; return; }
    start_fwd usb9pfsd
    do_mount usb9pfsd || { bad "budget $MSIZE: mount failed"; stop_fwd; return; }
    for w in "${BUDGET_WORKLOADS[@]}"; do
        s0=$(status_sum); c0=$(cpu_ticks); u0=$(cpu_ticks user)
        e=$(budget_run usb9pfsd "$w")
        c1=$(cpu_ticks); u1=$(cpu_ticks user); s1=$(status_sum)
        echo "$MSIZE timing $w $s0 | $s1 | 0 $e | $c0 $c1 | $u0 $u1 | tcp_s ${tcp_s[$w]}" >> "$BUDGET"
    done
    # the same workloads with strace attached to every thread of the daemon
    local pids=() t
    for t in /proc/"$FPID"/task/*; do pids+=(-p "${t##*/}"); done
    s0=$(status_sum)
    strace -c -f -q -o "$sc" "${pids[@]}" &
    local spid=$!
    sleep 2
    local failed=0
    for w in "${BUDGET_WORKLOADS[@]}"; do [ "$(budget_run strace "$w")" != FAIL ] || failed=1; done
    kill -INT "$spid"; wait "$spid" 2>/dev/null
    s1=$(status_sum)
    if [ "$failed" = 0 ]; then echo "$MSIZE strace all $s0 | $s1" >> "$BUDGET"
    else echo "$MSIZE strace all FAIL" >> "$BUDGET"; fi
    do_umount || bad "budget $MSIZE: umount failed"
    stop_fwd
    log "budget $MSIZE: $(grep "^$MSIZE " "$BUDGET" | tr '\n' ' ')"
}

FWDS=(usb9pfsd p9fwd tcp)
[ -x "$USB9PFSD" ] || { log "no usb9pfsd binary staged; benchmarking p9_fwd.py and tcp only"; FWDS=(p9fwd tcp); }
# BENCH_BASE_BIN (tests/vm/run): another usb9pfsd build in the same rounds
if [ -x "$STAGE/usb9pfsd-base" ]; then FWDS=(usb9pfsd base "${FWDS[@]:1}"); log "baseline build in the rounds"; fi
# BENCH_FWDS="usb9pfsd base": only these (a change judged against its
# baseline, without the p9_fwd.py and tcp rounds)
if [ -n "${BENCH_FWDS:-}" ]; then read -r -a FWDS <<<"$BENCH_FWDS"; log "forwarders: ${FWDS[*]} (BENCH_FWDS)"; fi
PREV=""
for MSIZE in $MSIZES; do
    BOARD=${BOARD_OF[$MSIZE]}
    M=${B_MNT[$BOARD]}
    [ -z "$PREV" ] || board_unplug "$PREV"
    board_plug "$BOARD"
    PREV=$BOARD
    for r in $(seq 1 "$ROUNDS"); do
        for f in "${FWDS[@]}"; do measure "$f" "$r"; done
    done
    # the per-message budget needs tcp too: not with BENCH_FWDS
    if [ -x "$USB9PFSD" ] && [ -z "${BENCH_FWDS:-}" ]; then profile; fi
done

python3 "$RIG_VM/guest/tools/bench_table.py" "$RAW" "$BUDGET" "$NENT" "$SIZE_MB" "$ROUNDS" "$NFILES" \
    "$BUDGET_READ_MB" "$BUDGET_FILES" "$HZ" > "$SC_OUT/bench.md" 2>>"$SC_OUT/guest.log" \
    || bad "bench_table.py could not make the table (guest.log)"
if grep -q '^FAIL' "$SC_OUT/checks.txt"; then write_result FAIL "$(grep -m1 '^FAIL' "$SC_OUT/checks.txt" | cut -c6-)"
else write_result PASS "benchmark complete"; fi
cat "$SC_OUT/bench.md"
dmesg > "$SC_OUT/dmesg.txt"
sync
