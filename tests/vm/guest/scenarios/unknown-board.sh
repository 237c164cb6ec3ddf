# shellcheck shell=bash
# unknown-board: config without [defaults] backend; a board whose serial is
# not listed is left alone (its interface is not claimed: no usbfs driver on
# <port>:1.0, and another program - p9_fwd.py - can claim and use it), and the
# daemon logs "no backend" with its serial exactly once, even after a re-plug.
scenario_main() {
    requires_usb9pfsd
    rig_setup 1
    local ex=$EXPORTS/a serial=0005-UNKNOWN-BOARD p
    mkdir -p "$ex"
    diod_start a 5640 "$ex"
    echo "reached-by-p9_fwd" > "$ex/marker"
    board_create U "$serial" 1d6b:0109 rigU dummy_udc.0
    # shellcheck disable=SC2080  # associative array (lib.sh)
    FWD_MAP_SERIAL["0009-SOMEONE-ELSE"]=127.0.0.1:5640   # a config that maps some other board only
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    grep -q '^\[defaults\]' "$FWD_CONFIG" && die "config unexpectedly has [defaults]"
    board_plug U
    fwd_start

    nb_count() { fwd_log | grep 'no backend' | grep -c -- "$serial" || true; }
    nb_seen() { [ "$(nb_count)" -ge 1 ]; }
    wait_until 30 nb_seen && ok "usb9pfsd logged 'no backend' with serial $serial" \
        || bad "usb9pfsd did not log a 'no backend' line with serial $serial within 30 s"

    not_claimed() {
        local drv="/sys/bus/usb/devices/$1:1.0/driver"
        if [ -e "$drv" ] && [ "$(basename "$(readlink -f "$drv")")" = usbfs ]; then return 1; fi
        return 0
    }
    p=$(host_dev_of "$serial")
    sleep 3
    expect "interface $p:1.0 of the unknown board is not claimed (no usbfs driver)" not_claimed "$p"

    # left alone means usable by someone else: p9_fwd.py claims it and serves a mount
    python3 "$P9FWD" --id 1d6b:0109 --path "$p" connect -s 127.0.0.1 -p 5640 >>"$SC_OUT/p9fwd-U.log" 2>&1 &
    local other=$!
    if board_mount U "$ex" 90; then
        ok "another program (p9_fwd.py) could claim the board and serve a mount"
        expect_eq "the board reads through the other program" "reached-by-p9_fwd" "$(timeout -s KILL 60 cat "${B_MNT[U]}/marker")"
        board_umount U || bad "umount failed"
    else
        bad "p9_fwd.py could not serve the unknown board while usb9pfsd runs ($(tail -3 "$SC_OUT/p9fwd-U.log" | tr '\n' ' '))"
    fi
    kill "$other" 2>/dev/null || true
    wait "$other" 2>/dev/null || true

    # re-plug (after the mount above: unbinding a board that was configured
    # but never mounted trips a trans_usbg.c bug, see board_unplug in lib.sh)
    board_unplug U
    board_plug U
    p=$(host_dev_of "$serial")
    sleep 8   # give the daemon ample time to (wrongly) log or claim again
    expect "after a re-plug, interface $p:1.0 is still not claimed" not_claimed "$p"
    expect_eq "'no backend' logged exactly once for $serial across a re-plug" 1 "$(nb_count)"
    expect "usb9pfsd still running" fwd_alive
}
