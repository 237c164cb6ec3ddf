# shellcheck shell=bash
# status: `usb9pfsd status --json` for a board whose worker keeps failing and
# then recovers. Another program (the rig's p9_fwd.py) holds board A's
# usb9pfs interface when usb9pfsd starts: A's worker fails with "claimed by
# another program" and backs off; status shows state "backoff", when it
# retries, its restarts and its last error with the time. Once the other
# program lets go, the next restart claims the board, it mounts, a
# checksummed file reads through it and status shows the session and the
# counters; the table for people names the board.
scenario_main() {
    requires_usb9pfsd
    rig_setup 1
    local ex=$EXPORTS/a T="timeout -s KILL 60" want
    mkdir -p "$ex"
    diod_start a 5640 "$ex"
    dd if=/dev/urandom of="$ex/data.bin" bs=1M count=2 status=none
    want=$(sha "$ex/data.bin")
    board_create A 0001-BOARD-A 1d6b:0109 rigA dummy_udc.0
    B_BACKEND[A]=127.0.0.1:5640
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    board_plug A
    p9fwd_start_board A        # holds the interface first
    local p; p=$(host_dev_of 0001-BOARD-A) || die "board A not on the host side"
    held() { [ "$(basename "$(readlink "/sys/bus/usb/devices/$p:1.0/driver" 2>/dev/null)")" = usbfs ]; }
    wait_until 60 held || die "p9_fwd.py did not claim board A's interface ($(tail -n2 "$SC_OUT/p9fwd-A.log" | tr '\n' ' '))"
    fwd_start

    # st PYEXPR: evaluate PYEXPR with b = board A's status object.
    st() {
        "$USB9PFSD" status --json | python3 -c '
import json, sys
r = json.load(sys.stdin)
b = next((b for b in r["boards"] if b["serial"] == "0001-BOARD-A"), None)
print(eval(sys.argv[1]))' "$1"
    }
    # One snapshot: the board alternates between a failing start and its
    # backoff, so state, error and retry time are judged together.
    backing_off() {
        [ "$(st 'b is not None and b["state"] == "backoff" and b["restarts"] >= 1 and "claimed by another program" in (b["last_error"] or "") and b["last_error_at"] is not None and b["backoff_until"] is not None' 2>/dev/null)" = True ]
    }
    if wait_until 30 backing_off; then ok "status: A backs off while another program holds its interface, with its last error (who holds it), when, and when it retries"
    else bad "status: A never showed state backoff with its last error and retry time ($(st 'b' 2>&1 | head -c 300))"; fi
    expect_eq "status: a backing-off board has no session" None "$(st 'b["session_started_at"]')"

    p9fwd_stop_board A
    idle() { [ "$(st 'b["state"] in ("idle", "forwarding")' 2>/dev/null)" = True ]; }
    if wait_until 60 idle; then ok "status: A is served once the other program let go"
    else bad "status: A not served after the other program let go ($(st 'b["state"], b["last_error"]' 2>&1))"; fi
    board_mount_retry A "$ex" 60 || die "board A: mount through usb9pfsd failed"
    expect_eq "a 2 MiB file read through the recovered board matches" "$want" "$($T sha256sum "${B_MNT[A]}/data.bin" | cut -d' ' -f1)"
    expect_eq "status: the session and the counters show the traffic" "True True True" \
        "$(st 'b["session_started_at"] is not None, b["counters"]["r_bytes"] > 2 * 1024 * 1024, b["counters"]["served"] > 0' | tr -d '(),')"
    expect "status (table): names the board and its backend" \
        sh -c "'$USB9PFSD' status | grep -F 0001-BOARD-A | grep -qF 127.0.0.1:5640"
    board_umount A || bad "umount of board A failed"
    expect "forwarder still running" fwd_alive
}
