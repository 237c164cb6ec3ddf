# shellcheck shell=bash
# restart-busy: a restart through the service manager's descriptor store
# while one board's request waits for a server that stopped answering
# (review finding 2, issue 20). Board A's server (diod a) is stopped
# (SIGSTOP) with a request of A's in it; board B reads a checksummed file.
# The daemon is restarted the way `systemctl restart` does it (the rig's
# tools/fake-systemd.py stands in for systemd 252's FDSTORE=1/LISTEN_FDS).
# Expected: B's session is handed over (no remount, its file still reads
# right), only A's request fails (EIO) and A mounts again afterwards; the
# old daemon's log names A as busy, and the new daemon's status marks B's
# session as handed over and says why A's was lost.
#
# Before the fix one busy board called the whole hand-over off and the
# shutdown broke every server connection: B lost its session too.

scenario_main() {
    requires_usb9pfsd
    rig_setup 2
    local exa=$EXPORTS/a exb=$EXPORTS/b
    mkdir -p "$exa" "$exb"
    diod_start a 5640 "$exa"
    diod_start b 5641 "$exb"
    echo "board A's note" > "$exa/note"
    dd if=/dev/urandom of="$exb/stream.bin" bs=1M count=4 status=none
    local want_b; want_b=$(sha "$exb/stream.bin")

    board_create A 0001-BOARD-A 1d6b:0109 rigA dummy_udc.0
    board_create B 0002-BOARD-B 1d6b:0109 rigB dummy_udc.1
    B_BACKEND[A]=127.0.0.1:5640
    B_BACKEND[B]=127.0.0.1:5641
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    board_plug A
    board_plug B

    local pidfile=$LOCAL/daemon.pid events=$SC_OUT/systemd-events.txt ctl=$LOCAL/control
    NO_COLOR=1 python3 "$RIG_VM/guest/tools/fake-systemd.py" "$LOCAL/notify.sock" "$pidfile" "$events" -- \
        "$USB9PFSD" run --config "$FWD_CONFIG" --control-socket "$ctl" -v >>"$SC_OUT/usb9pfsd.log" 2>&1 &
    FWD_PID=$!
    wait_until 20 test -s "$pidfile" || die "the daemon did not start under fake-systemd"
    board_mount A "$exa" || die "board A: mount failed"
    board_mount B "$exb" || die "board B: mount failed"
    expect_eq "board B reads its file before" "$want_b" "$(board_sha B stream.bin)"
    local b_sessions0; b_sessions0=$(grep -F 0002-BOARD-B "$SC_OUT/usb9pfsd.log" | grep -c 'new 9P session with the server' || true)

    # A's server stops answering with a request of A's in it.
    kill -STOP "${DIOD_PID[a]}"
    local astat=$LOCAL/a-stat.txt
    ( timeout -s KILL 120 cat "${B_MNT[A]}/note" >"$astat" 2>&1; echo "rc=$?" >>"$astat" ) &
    local reader=$!
    wait_until 20 sh -c "\"$USB9PFSD\" status --json --socket '$ctl' | grep -qE '\"state\": *\"forwarding\"'" \
        || bad "board A's request did not reach its server"

    local old; old=$(cat "$pidfile")
    kill -USR1 "$FWD_PID"
    wait_until 60 sh -c "[ \"\$(cat '$pidfile')\" != '$old' ]" || die "restart: no new daemon started"
    wait_until 60 test -S "$ctl" || bad "restart: the new daemon's control socket did not appear"
    kill -CONT "${DIOD_PID[a]}"
    wait "$reader" 2>/dev/null || true
    log "board A's request across the restart: $(tr '\n' ' ' <"$astat")"
    expect_not "board A's request, stuck in its stopped server, failed (EIO) instead of hanging" grep -q '^rc=0$' "$astat"

    expect "the old daemon stored one board's session (B)" grep -q "left 1 board session(s) in systemd's descriptor store" "$SC_OUT/usb9pfsd.log"
    expect "the old daemon's log names board A as busy" grep -qE 'board\(s\) 0*1-0*[0-9]+#0 were still waiting for their server' "$SC_OUT/usb9pfsd.log"
    expect "the new daemon took over one board" grep -q 'taking over 1 board' "$SC_OUT/usb9pfsd.log"

    expect_eq "board B reads its file after the restart" "$want_b" "$(board_sha B stream.bin)"
    local b_sessions1; b_sessions1=$(grep -F 0002-BOARD-B "$SC_OUT/usb9pfsd.log" | grep -c 'new 9P session with the server' || true)
    expect_eq "board B kept its session (no new server session)" "$b_sessions0" "$b_sessions1"

    local st; st=$(timeout -s KILL 60 "$USB9PFSD" status --json --socket "$ctl")
    printf '%s\n' "$st" > "$SC_OUT/status-after.json"
    local said; said=$(printf '%s' "$st" | python3 -c '
import json, sys
b = {x["serial"]: x for x in json.load(sys.stdin)["boards"]}
print(b["0002-BOARD-B"]["session_handed_over"], "previous usb9pfsd stopped" in (b["0001-BOARD-A"]["last_error"] or ""))')
    expect_eq "status: B's session handed over, A's last error says why its session was lost" "True True" "$said"

    # A mounts again and is served by the new daemon.
    board_umount A 60 || true
    board_mount_retry A "$exa" 60 || bad "board A: mount after the restart failed"
    expect_eq "board A reads its note after mounting again" "board A's note" "$(timeout -s KILL 60 cat "${B_MNT[A]}/note")"
    # Both boards unmount while the new daemon still serves them: a 9P
    # umount sends its clunks and waits for the answers, so unmounting after
    # the daemon is gone would hang until the teardown's timeout (2 x 30 s).
    expect "board A unmounts through the new daemon" board_umount A 60
    expect "board B unmounts through the new daemon" board_umount B 60
    kill -TERM "$FWD_PID" 2>/dev/null || true
    wait "$FWD_PID" 2>/dev/null || true
}
