#!/bin/bash
# Message timeline (tests/vm/run --trace), one guest boot: for usb9pfsd and
# p9_fwd.py on one board (msize and buflen TRACE_MSIZE, default 65536), an
# ftrace of a short sequential write and read (TRACE_MB MiB each): the board's
# usb9pfs function (request queued, IN transfer done, reply received), the
# forwarder's socket calls and the scheduler, on one global clock. Then
# tools/trace_phases.py cuts it into messages and prints where each one's
# time goes, in kernel timestamps — the view the daemon's own counters (the
# benchmark's budget) cannot give: when the board's request was queued, and
# when the reply reached the board's 9P client.
#
# ftrace adds its own cost to every event, so the absolute times are larger
# than untraced; compare the two forwarders with each other.
set -uo pipefail
# shellcheck source=/dev/null
. /run/rig/out/.stage/env.sh
SCENARIO=trace
SC_OUT=$RIG_OUTROOT/trace
mkdir -p "$SC_OUT"
# shellcheck source=lib.sh
. "$RIG_VM/guest/lib.sh"
MSIZE=${TRACE_MSIZE:-65536}
MB=${TRACE_MB:-2}
: > "$SC_OUT/checks.txt"
rm -f "$SC_OUT"/trace-*.txt

rig_setup 1
EX=$EXPORTS/a
mkdir -p "$EX"
diod_start a 5640 "$EX"
dd if=/dev/urandom of="$LOCAL/w.bin" bs=1M count="$MB" status=none
dd if=/dev/urandom of="$EX/r.bin" bs=1M count="$MB" status=none
board_create T0 0050-TRACE 1d6b:0109 rigT0 dummy_udc.0 "buflen=$MSIZE"
B_BACKEND[T0]=127.0.0.1:5640
fwd_write_config "$LOCAL/usb9pfsd.toml"
M=${B_MNT[T0]}
board_plug T0

T=/sys/kernel/tracing
mountpoint -q $T || mount -t tracefs nodev $T
FUNCS=(p9_usbg_request usb9pfs_tx_complete usb9pfs_rx_complete)
for f in "${FUNCS[@]}"; do grep -q "^$f " $T/available_filter_functions || die "cannot trace $f (usb9pfs module functions not traceable)"; done

FPID=""
start_fwd() {
    case $1 in
    usb9pfsd) NO_COLOR=1 "$USB9PFSD" run --config "$FWD_CONFIG" >>"$SC_OUT/usb9pfsd.log" 2>&1 & ;;
    p9fwd) python3 "$P9FWD" --id 1d6b:0109 --path "$(host_dev_of "${B_SERIAL[T0]}")" connect -s 127.0.0.1 -p 5640 >>"$SC_OUT/p9fwd.log" 2>&1 & ;;
    esac
    FPID=$!
    sleep 1
}
stop_fwd() {
    kill -TERM "$FPID" 2>/dev/null
    wait_until 15 sh -c "! kill -0 $FPID 2>/dev/null" || kill -KILL "$FPID" 2>/dev/null
    wait "$FPID" 2>/dev/null
}
trace_on() {
    echo 0 > $T/tracing_on; echo nop > $T/current_tracer; echo > $T/trace
    echo global > $T/trace_clock
    echo 30000 > $T/buffer_size_kb
    printf '%s\n' "${FUNCS[@]}" > $T/set_ftrace_filter
    echo function > $T/current_tracer
    echo 1 > $T/events/sched/sched_wakeup/enable
    local s
    for s in sendto recvfrom; do
        echo 1 > "$T/events/syscalls/sys_enter_$s/enable"
        echo 1 > "$T/events/syscalls/sys_exit_$s/enable"
    done
    echo 1 > $T/tracing_on
}
trace_off() {   # trace_off FILE
    echo 0 > $T/tracing_on
    cat $T/trace > "$1"
    echo 0 > $T/events/enable; echo nop > $T/current_tracer
    local lost; lost=$(grep -m1 -o 'entries-in-buffer/entries-written: [0-9]*/[0-9]*' "$1")
    log "$1: $lost"
}

for fwd in usb9pfsd p9fwd; do
    start_fwd "$fwd"
    timeout -s KILL 90 mount -t 9p -o "trans=usbg,aname=$EX,msize=$MSIZE" rigT0 "$M" || { bad "$fwd: mount failed"; stop_fwd; continue; }
    # warm: the code paths of every process involved, before tracing
    timeout -s KILL 120 dd if="$LOCAL/w.bin" of="$M/warm.bin" bs=1M conv=fsync status=none
    timeout -s KILL 120 dd if="$M/warm.bin" of=/dev/null bs=1M status=none
    trace_on
    timeout -s KILL 120 dd if="$LOCAL/w.bin" of="$M/w.bin" bs=1M status=none || bad "$fwd: traced write failed"
    trace_off "$SC_OUT/trace-$fwd-write.txt"
    trace_on
    timeout -s KILL 120 dd if="$M/r.bin" of=/dev/null bs=1M status=none || bad "$fwd: traced read failed"
    trace_off "$SC_OUT/trace-$fwd-read.txt"
    [ "$(sha "$EX/w.bin")" = "$(sha "$LOCAL/w.bin")" ] && ok "$fwd: traced write arrived intact" || bad "$fwd: written file differs"
    rm -f "$EX/w.bin" "$EX/warm.bin"
    timeout -s KILL 60 umount "$M" || bad "$fwd: umount failed"
    stop_fwd
done

python3 "$RIG_VM/guest/tools/trace_phases.py" "$MSIZE" "$SC_OUT"/trace-*-*.txt > "$SC_OUT/phases.md" || bad "trace_phases.py failed"
cat "$SC_OUT/phases.md"
if grep -q '^FAIL' "$SC_OUT/checks.txt"; then write_result FAIL "$(grep -m1 '^FAIL' "$SC_OUT/checks.txt" | cut -c6-)"
else write_result PASS "trace complete"; fi
sync
