# shellcheck shell=bash
# fault-board: the fault matrix for hostile and broken boards. The FunctionFS
# board simulator sends each malformed input of issue 9 in turn (sizes 0, 3,
# 6, max_frame+1, 64 MiB, 2^31, 2^32-1, larger than the negotiated msize,
# garbage after a valid header, a garbage body, a header then silence, a
# partial size field then silence, full packets then silence (no short
# packet: only the nudge gets them out), a header then disconnect
# mid-frame, vanishing mid-request and mid-reply, thousands of stray ZLPs,
# a stalled IN or OUT endpoint, Tversion in a tight loop), while a real
# kernel usb9pfs board streams a checksummed file through the same
# usb9pfsd. After each fault: usb9pfsd is the same living process, its log
# names the simulator (serial and bus-address) and the fault without
# flooding, it never asks for memory of a declared size (strace on its
# memory calls while the sizes are injected), and the simulator is served
# again (a fully checked valid session). An idle board stays up across two
# nudges.
#
# Known daemon defects are XFAIL lines (see lib.sh: xfail) until their fixes
# merge; docs/reliability.md lists them.
#
# The daemon runs with its two USB waits shortened through the config's
# test-only keys (config.rs: TestWaits): the rest of a begun message gets
# FB_PARTIAL_WAIT s instead of PARTIAL_FRAME_WAIT's 30 s, the supervisor
# nudges every FB_NUDGE_EVERY s instead of NUDGE_EVERY's 15 s. The checks
# hold the daemon to the deadline it was given, scaled bounds and all; the
# default values are the unit tests' (usb/pipe.rs, daemon/supervisor). With
# FB_PARTIAL_WAIT=30 FB_NUDGE_EVERY=15 the scenario runs with the defaults
# (the keys are then left out of the config), ~2 min longer.
FB_PARTIAL_WAIT=${FB_PARTIAL_WAIT:-8}
FB_NUDGE_EVERY=${FB_NUDGE_EVERY:-4}

# The bound the rig allows for "a header arrived, the rest never comes":
# the daemon's own deadline plus slack.
PARTIAL_FRAME_BOUND=${PARTIAL_FRAME_BOUND:-$((FB_PARTIAL_WAIT + 15))}

# fault NAME SIM_COMMAND LOG_PATTERN [MAX_LINES]: inject, then check the log
# names the board and the fault (1..MAX_LINES lines, default 4: one clear
# error and the restart, no flood) and the daemon is alive. The simulator's
# plug state is unchanged.
fault() {
    local name=$1 cmd=$2 pat=$3 max=${4:-4} n
    log "--- fault: $name"
    log_mark
    # shellcheck disable=SC2086
    sim_cmd 120 $cmd || bad "$name: the simulator could not send it: $SIM_REPLY"
    if wait_until 20 log_names "$SIM_SERIAL" "$SIM_BA" "$pat"; then
        ok "$name: usb9pfsd logged the fault naming the board ($SIM_SERIAL, busaddr ~$SIM_BA, /$pat/)"
    else
        bad "$name: no log line names $SIM_SERIAL busaddr ~$SIM_BA and /$pat/"
    fi
    sleep 1
    n=$(log_count "$SIM_SERIAL" "$pat")
    expect "$name: one clear error, not a flood ($n matching lines, want 1..$max)" test "$n" -ge 1 -a "$n" -le "$max"
    expect "$name: usb9pfsd still running, same pid" fwd_same_pid "$PID0"
}

# fault_unplugged NAME SIM_COMMAND: faults where the simulator vanishes.
fault_unplugged() {
    local name=$1 cmd=$2 ba=$SIM_BA
    log "--- fault: $name"
    log_mark
    # shellcheck disable=SC2086
    sim_cmd 120 $cmd || bad "$name: the simulator could not do it: $SIM_REPLY"
    wait_until 30 host_dev_absent "$SIM_SERIAL" || die "$name: simulator still on the bus"
    if wait_until 20 log_names "$SIM_SERIAL" "$ba" 'remov|gone|disconnect|unplug'; then
        ok "$name: usb9pfsd logged the disappearance naming the board ($SIM_SERIAL, busaddr ~$ba)"
    else
        bad "$name: no log line names $SIM_SERIAL busaddr ~$ba and its removal"
    fi
    expect "$name: usb9pfsd still running, same pid" fwd_same_pid "$PID0"
    sim_cmd 10 reopen || true
    sim_plug
    sim_session "$name: simulator served again after replug (valid session, sha256 matches)"
}

# partial NAME SIM_COMMAND: a frame that starts and never ends.
partial() {
    local name=$1 cmd=$2
    log "--- fault: $name"
    log_mark
    # shellcheck disable=SC2086
    sim_cmd 60 $cmd || bad "$name: the simulator could not send it: $SIM_REPLY"
    # The daemon gives the rest of a begun message FB_PARTIAL_WAIT s (the
    # default PARTIAL_FRAME_WAIT is 30 s), then ends the worker; the rig
    # allows PARTIAL_FRAME_BOUND.
    if wait_until "$PARTIAL_FRAME_BOUND" log_names "$SIM_SERIAL" "$SIM_BA" 'time|deadline|never|incomplete|silen|wait|stuck|part'; then
        ok "$name: usb9pfsd ended the session within $PARTIAL_FRAME_BOUND s (log names the board)"
        expect "$name: usb9pfsd still running, same pid" fwd_same_pid "$PID0"
        sim_session "$name: simulator served again (valid session, sha256 matches)"
    else
        bad "$name: usb9pfsd did not end the session within $PARTIAL_FRAME_BOUND s, or did not log it naming the board"
        expect "$name: usb9pfsd still running, same pid" fwd_same_pid "$PID0"
        # recover the simulator the only way left: replug it
        sim_unplug
        sim_cmd 10 reopen || true
        sim_plug
        sim_session "$name: simulator served again after replug (valid session, sha256 matches)"
    fi
}

# sim_status PYEXPR: PYEXPR evaluated with b = the simulator's board in
# `usb9pfsd status --json`.
sim_status() {
    timeout -s KILL 30 "$USB9PFSD" status --json | python3 -c '
import json, sys
r = json.load(sys.stdin)
b = next((b for b in r["boards"] if b["serial"] == sys.argv[1]), None)
print(eval(sys.argv[2]))' "$SIM_SERIAL" "$1" | tr -d "(),'"
}

# sim_worker_sleeps: how often the simulator's worker thread (board-BBB-DDD#0)
# went to sleep in the kernel so far (voluntary context switches).
sim_worker_sleeps() {
    local p comm t
    p=$(host_dev_of "$SIM_SERIAL") || return 1
    comm=$(printf 'board-%03d-%03d#0' "$(cat "/sys/bus/usb/devices/$p/busnum")" "$(cat "/sys/bus/usb/devices/$p/devnum")")
    for t in /proc/"$FWD_PID"/task/*; do
        if [ "$(cat "$t/comm" 2>/dev/null)" = "$comm" ]; then
            awk '/^voluntary_ctxt_switches:/ {print $2}' "$t/status"
            return 0
        fi
    done
    return 1
}

# idle_across_nudges: the simulator idle (its session done, nothing in
# flight) for 2 nudge intervals and 5 s, i.e. across at least two of the
# supervisor's nudges (every FB_NUDGE_EVERY s). Each nudge cancels the
# worker's empty wait, which it resubmits: the worker wakes once per nudge
# (and never otherwise), is never ended or restarted, and logs nothing.
# Its sleeps are bounded by the nudges the window can hold: at least one per
# nudge certain to fall in it, at most three per nudge that may (a worker
# that polled would sleep hundreds of times).
idle_across_nudges() {
    log "--- idle board across two nudges"
    local s0 s1 z0 z1 idle=$((2 * FB_NUDGE_EVERY + 5)) lo hi
    lo=$((idle / FB_NUDGE_EVERY)) hi=$((3 * (idle / FB_NUDGE_EVERY + 1)))
    s0=$(sim_status 'b["starts"], b["state"]')
    z0=$(sim_worker_sleeps) || { bad "idle: no worker thread of $SIM_SERIAL in usb9pfsd"; return; }
    log_mark
    sleep "$idle"
    s1=$(sim_status 'b["starts"], b["state"]')
    z1=$(sim_worker_sleeps) || z1=""
    expect_eq "idle board across two nudges ($idle s, nudged every $FB_NUDGE_EVERY s): same worker, never restarted, still idle (starts, state)" "$s0" "$s1"
    if [ -n "$z1" ]; then
        expect "idle board: its worker woke once per nudge and waited again ($((z1 - z0)) sleeps in $idle s, want $lo..$hi: nudged, not polled)" \
            test $((z1 - z0)) -ge "$lo" -a $((z1 - z0)) -le "$hi"
    else bad "idle board: its worker thread is gone after $idle s idle"; fi
    expect_eq "idle board: nothing logged about it meanwhile" 0 "$(log_since | grep -Fc "$SIM_SERIAL" || true)"
    sim_session "idle board: served at once after two nudges"
}

# full_packets_silence: the board stops inside a run of full packets (4 x
# 512 bytes of an 8192-byte Twrite) and stays plugged and silent. No short
# packet ends the host's IN transfer, so only the supervisor's nudge (every
# FB_NUDGE_EVERY s) takes the 2048 bytes out, and the rest of the message
# then has FB_PARTIAL_WAIT s: the worker must end that long after the last
# packet, and at most one nudge interval more (the rig allows 15 s of slack
# on top), with one error naming the board, the bytes that came and what to
# do, then be restarted once and serve the board.
FULL_PACKETS_BOUND=${FULL_PACKETS_BOUND:-$((FB_PARTIAL_WAIT + FB_NUDGE_EVERY + 15))}
# sim_starts_idle N: the simulator's board has had N workers and the current one waits.
sim_starts_idle() { [ "$(sim_status 'b["starts"], b["state"]')" = "$1 idle" ]; }
full_packets_silence() {
    local name="full packets then silence" pat='2048.*(stuck|never|incomplete|silen|nothing)' s0 line t_sent t_end dt n
    log "--- fault: $name"
    s0=$(sim_status 'b["starts"]')
    log_mark
    if ! sim_cmd 60 full-packets-silence 4 8192; then bad "$name: the simulator could not send it: $SIM_REPLY"; return; fi
    t_sent=${SIM_REPLY##*taken at }
    if ! wait_until $((FULL_PACKETS_BOUND + 30)) log_names "$SIM_SERIAL" "$SIM_BA" "$pat"; then
        bad "$name: usb9pfsd did not end the worker within $((FULL_PACKETS_BOUND + 30)) s, or did not log it naming the board and the 2048 bytes"
        sim_unplug
        sim_cmd 10 reopen || true
        sim_plug
        sim_session "$name: simulator served again after replug (valid session, sha256 matches)"
        return
    fi
    line=$(log_since | grep -F "$SIM_SERIAL" | grep -Ei -m1 "$pat")
    t_end=$(date -d "${line%% *}" +%s.%N)
    dt=$(awk -v a="$t_sent" -v b="$t_end" 'BEGIN { printf "%.1f", b - a }')
    log "$name: worker ended ${dt} s after the board's last packet: ${line}"
    echo "$name: worker ended ${dt} s after the last packet" >> "$SC_OUT/measured.txt"
    expect "$name: usb9pfsd ended the worker ${dt} s after the last packet (nudge <= $FB_NUDGE_EVERY s + the partial-frame wait $FB_PARTIAL_WAIT s; want $FB_PARTIAL_WAIT..$FULL_PACKETS_BOUND s)" \
        awk -v t="$dt" -v min="$FB_PARTIAL_WAIT" -v max="$FULL_PACKETS_BOUND" 'BEGIN { exit !(t >= min && t <= max) }'
    expect "$name: the log line names the board ($SIM_SERIAL, busaddr ~$SIM_BA), the 2048 bytes that came and what to do (remount or reset the board)" \
        grep -Eiq 'mount|reset' <<<"$line"
    sleep 1
    n=$(log_count "$SIM_SERIAL" "$pat")
    expect "$name: one clear error, not a flood ($n matching lines, want 1..4)" test "$n" -ge 1 -a "$n" -le 4
    if wait_until 20 sim_starts_idle $((s0 + 1)); then ok "$name: the worker was restarted once and waits for the board (starts $s0 -> $((s0 + 1)), idle)"
    else bad "$name: the worker was not restarted once (starts before: $s0; starts, state now: $(sim_status 'b["starts"], b["state"]'))"; fi
    expect "$name: usb9pfsd still running, same pid" fwd_same_pid "$PID0"
    sim_session "$name: simulator served again, nothing lost (valid session, sha256 matches)"
}

scenario_main() {
    requires_usb9pfsd
    fault_rig_setup
    local exs=$EXPORTS/s want_b=$FAULT_WANT_B

    SIM_SERIAL=0009-SIM-F
    FWD_MAP_SERIAL[$SIM_SERIAL]=127.0.0.1:5640
    if [ "$FB_PARTIAL_WAIT" != 30 ] || [ "$FB_NUDGE_EVERY" != 15 ]; then
        FWD_EXTRA_CONFIG=$(printf '[daemon]\ntest_partial_frame_wait = %s\ntest_nudge_every = %s\n' "$FB_PARTIAL_WAIT" "$FB_NUDGE_EVERY")
    fi
    fault_rig_start "baseline: simulator's valid session works"
    if [ -n "$FWD_EXTRA_CONFIG" ]; then
        rig_guard "usb9pfsd runs with the shortened waits it was configured with" \
            grep -q "message is given $FB_PARTIAL_WAIT s and the workers are nudged every $FB_NUDGE_EVERY s" "$SC_OUT/usb9pfsd.log"
    fi
    local hwm0 fds0; hwm0=$(fwd_hwm_kib) fds0=$(fwd_fds)
    log "usb9pfsd VmHWM ${hwm0} KiB, fds $fds0 before the faults"

    stream_start "${B_MNT[B]}/stream.bin"

    idle_across_nudges

    # Every declared size, with strace watching what memory usb9pfsd asks
    # for meanwhile (lib.sh: alloc_watch_check): sizes a buggy forwarder
    # would reserve without touching (64 MiB, 2^31, 2^32-1; VmHWM cannot see
    # those) and the first size past the ceiling (max_frame + 1; no Tversion
    # yet, so the ceiling is max_frame, 1 MiB by default).
    alloc_watch_start
    fault "size 0" "size 0" 'size[^0-9]*0([^0-9]|$)'
    sim_session "size 0: simulator served again"
    fault "size 3" "size 3" 'size[^0-9]*3([^0-9]|$)'
    sim_session "size 3: simulator served again"
    fault "size 6" "size 6" 'size[^0-9]*6([^0-9]|$)'
    sim_session "size 6: simulator served again"
    fault "size max_frame+1" "size 1048577" '1048577'
    sim_session "size max_frame+1: simulator served again"
    fault "size 64 MiB" "size 67108864" '67108864'
    sim_session "size 64 MiB: simulator served again"
    fault "size 2^31" "size 2147483648" '2147483648'
    sim_session "size 2^31: simulator served again"
    fault "size 2^32-1" "size 4294967295" '4294967295'
    sim_session "size 2^32-1: simulator served again"
    fault "larger than the negotiated msize" "oversize 8192" '8292'
    sim_session "larger than msize: simulator served again"
    fault "garbage after a valid header" "garbage-after-header" 'size[^0-9]*20([^0-9]|$)'
    sim_session "garbage after header: simulator served again"
    alloc_watch_check "usb9pfsd never reserved a declared size (sizes 0 .. 2^32-1 from the board, strace on every thread)"

    log "--- fault: garbage body"
    if sim_cmd 90 garbage-body "$exs"; then
        case $SIM_REPLY in
        *timeout*) bad "garbage body: a well-framed garbage request got no answer: $SIM_REPLY" ;;
        *) expect "garbage body: each garbage request answered with its tag 7 ($SIM_REPLY)" \
               test "$(echo "$SIM_REPLY" | grep -o 'tag=7' | wc -l)" -eq 2 ;;
        esac
    else bad "garbage body: $SIM_REPLY"; fi
    sim_session "garbage body: simulator served again"

    # Skipping them all and ending the session after too many in a row are
    # both fine; either way the board is told nothing wrong, the log stays
    # short (bounded by the restart backoff) and the next Tversion works.
    log "--- fault: stray ZLPs"
    log_mark
    if sim_cmd 300 zlps 3000; then ok "stray ZLPs: then a Tversion answered (${SIM_REPLY})"
    else bad "stray ZLPs: $SIM_REPLY"; fi
    sleep 1
    local nz; nz=$(log_since | grep -Fc "$SIM_SERIAL" || true)
    case $SIM_REPLY in
    *"all taken"*)
        expect "stray ZLPs: skipped silently ($nz log lines name the board, want < 10)" test "$nz" -lt 10 ;;
    *)
        if log_names "$SIM_SERIAL" "$SIM_BA" 'empty|zlp|zero'; then
            ok "stray ZLPs: usb9pfsd ended the session and logged why, naming the board"
        else bad "stray ZLPs: the host stopped reading but no log line names $SIM_SERIAL busaddr ~$SIM_BA and the ZLPs"; fi
        nz=$(log_count "$SIM_SERIAL" 'empty|zlp|zero')
        expect "stray ZLPs: no log flood ($nz lines about them, want <= 16)" test "$nz" -le 16 ;;
    esac
    sim_session "stray ZLPs: simulator served again"

    # Each Tversion asks for a new server session; a forwarder may answer
    # some with an error (a board looping on mount), but never leaves one
    # unanswered or keeps the old connections.
    log "--- fault: Tversion in a tight loop"
    local fa fb
    fa=$(fwd_fds)
    log_mark
    if sim_cmd 900 tversion-loop 300; then ok "Tversion loop: all 300 answered with tag NOTAG (${SIM_REPLY#* answered })"
    else bad "Tversion loop: $SIM_REPLY"; fi
    sleep 1; fb=$(fwd_fds)
    expect "Tversion loop: usb9pfsd fds do not grow ($fa before, $fb after)" test "$fb" -le $((fa + 1))
    expect "Tversion loop: diod still running" kill -0 "${DIOD_PID[s]}"
    local nw; nw=$(log_since | grep -F "$SIM_SERIAL" | grep -Ec 'WARN|ERROR' || true)
    expect "Tversion loop: no flood of warnings ($nw WARN/ERROR lines name the board, want <= 5)" test "$nw" -le 5
    sim_session "Tversion loop: simulator served again"

    # a stall that persists fails each restart again: one line per restart,
    # spaced by the capped backoff
    fault "stalled IN endpoint" "stall" 'stall|halt|pipe' 8
    # The host ends the stall (CLEAR_FEATURE ENDPOINT_HALT) when it restarts
    # the worker, so the restarted worker's transfer does not stall again.
    # (Not probed by writing to the halted endpoint: a write the simulator
    # abandons there leaves dummy_hcd/FunctionFS out of step.)
    # One stall is one or two lines (the worker's end, the restart); a halt
    # nobody clears fails every restart again (0.5, 1, 2 s backoff: 6+ lines
    # in 5 s). Counted without relying on the wording.
    sleep 4
    local ns; ns=$(log_count "$SIM_SERIAL" 'stall')
    expect "stalled IN endpoint: the restarted worker clears the halt instead of stalling again ($ns lines about the stall in 5 s, want <= 3)" \
        test "$ns" -le 3
    sim_session "stalled IN endpoint: simulator served again (nobody cleared the halt on the board's side)"

    fault "stalled OUT endpoint (the reply cannot be delivered)" "stall-out" 'stall|halt|pipe' 8
    sim_cmd 10 clear-halt || bad "clear-halt: $SIM_REPLY"
    sim_session "stalled OUT endpoint: simulator served again once the halt is gone"

    partial "header then silence" "header-silence 100"
    partial "partial size field then silence" "partial-size"
    full_packets_silence

    fault_unplugged "header then disconnect mid-frame" "header-disconnect"
    fault_unplugged "vanish mid-request (8 of 12 KiB sent)" "vanish-mid-request"
    fault_unplugged "vanish with a reply in flight" "vanish-mid-reply $exs data.bin"

    stream_stop_check "board B during the whole fault matrix" "$want_b" 2

    local hwm1 fds1; hwm1=$(fwd_hwm_kib) fds1=$(fwd_fds)
    log "usb9pfsd VmHWM ${hwm1} KiB, fds $fds1 after the faults"
    # Touched memory only (see alloc_watch_check for reservations): the
    # matrix left no lasting growth behind.
    expect "usb9pfsd's peak resident memory grew by < 16 MiB over the matrix (VmHWM ${hwm0} -> ${hwm1} KiB)" \
        test $((hwm1 - hwm0)) -lt 16384
    expect "usb9pfsd fds back to the baseline ($fds0 -> $fds1)" test "$fds1" -le $((fds0 + 1))
    expect "usb9pfsd is the same living process after the whole matrix (pid $PID0)" fwd_same_pid "$PID0"
    expect_not "usb9pfsd log has no panic" grep -qi panick "$SC_OUT/usb9pfsd.log"
    board_umount B || bad "umount of board B failed"
}
