# shellcheck shell=bash
# deaf-board: a board that stops taking replies (its OUT endpoint has no
# request queued, as when its 9P client was killed while the host restarted
# its worker) must not hold its worker for ever (review finding 3, issue 20).
# The FunctionFS simulator sends a Tversion and never reads the answer; at
# once `usb9pfsd reexec` is asked to hand every board over. Expected: the
# simulator's worker gives up on the reply within its bound and says so
# naming the board, the re-exec completes (same PID) with the other board
# (a real kernel usb9pfs board B, mounted) handed over, B keeps its mount
# and its data, and the simulator is served again by the new image.
#
# Before the fix the worker slept in the kernel's reap for ever: the
# hand-over waited for it, was called off after 5 s, and reexec failed.

# The rig's allowance for "the worker gives up on the reply": the daemon's
# bound (2 s for a small reply) plus slack for TCG.
REPLY_BOUND=${REPLY_BOUND:-20}

# Server sessions board B opened so far (each mount opens one).
b_sessions() { fwd_log | grep -F 0002-BOARD-B | grep -c 'new 9P session with the server' || true; }

scenario_main() {
    requires_usb9pfsd
    fault_rig_setup
    SIM_SERIAL=0009-SIM-DEAF
    FWD_MAP_SERIAL[$SIM_SERIAL]=127.0.0.1:5640
    fault_rig_start "baseline: simulator's valid session works"
    local want_b=$FAULT_WANT_B
    expect_eq "board B reads its file before" "$want_b" "$(board_sha B stream.bin)"
    local sessions0; sessions0=$(b_sessions)

    log_mark
    sim_cmd 20 deaf || die "the simulator could not send its Tversion: $SIM_REPLY"
    local said rc=0
    said=$(timeout -s KILL 60 "$USB9PFSD" reexec 2>&1) || rc=$?
    log "usb9pfsd reexec (exit $rc): $said"
    expect_eq "reexec succeeds while the simulator is deaf (exit status)" 0 "$rc"
    case $said in
    *"1 board session(s) handed over"*) ok "reexec handed over board B's session: $said" ;;
    *) bad "reexec did not hand over exactly board B: $said" ;;
    esac
    if wait_until "$REPLY_BOUND" log_names "$SIM_SERIAL" "$SIM_BA" 'did not take|reply'; then
        ok "the simulator's worker gave up on its reply within $REPLY_BOUND s, naming the board ($SIM_SERIAL, busaddr ~$SIM_BA)"
    else
        bad "no log line names $SIM_SERIAL busaddr ~$SIM_BA and the reply it never took"
    fi
    expect "usb9pfsd still running, same pid" fwd_same_pid "$PID0"

    expect_eq "board B reads its file after the re-exec" "$want_b" "$(board_sha B stream.bin)"
    sim_session "the simulator is served again by the new image (valid session, sha256 matches)"
    # B opened no server session: its mount carried on.
    expect_eq "board B did not remount across the re-exec (no new server session of B's)" "$sessions0" "$(b_sessions)"
    expect_eq "board B reads its file at the end" "$want_b" "$(board_sha B stream.bin)"
    expect "usb9pfsd still running, same pid" fwd_same_pid "$PID0"
    sim_stop
}
