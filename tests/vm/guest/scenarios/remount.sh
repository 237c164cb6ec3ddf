# shellcheck shell=bash
# remount: a kernel board mounts, unmounts and mounts again on the same gadget
# (no replug) 20 times in a row, then after a reload moved it to another
# server. On board kernels with the 2026 usbg fixes (Debian 6.12.118 and
# later) the board's function disables its endpoints at every umount, so
# each mount after the first works only if the forwarder re-armed it
# (SET_INTERFACE) in between. Odd cycles mount straight after the umount
# (`umount && mount`, the race the forwarder must win), even ones after a
# 2 s pause. Each session reads a checksummed file and sees the previous
# session's write. A back-to-back mount that fails at once (the board found
# its function still disabled: EBUSY inside the board, nothing reaches the
# host) is retried after 0.2 s, at most 10 times, and counted: the count is
# the measured race, and more than REMOUNT_MAX_LOST (default 2) lost races
# in 10 back-to-back remounts fail the scenario. With usb9pfsd, status must
# count one re-arm per umount.
scenario_main() {
    rig_setup 1
    local ex=$EXPORTS/a exb=$EXPORTS/b m i tok prev="" lost=0 tries cycles=${REMOUNT_CYCLES:-20}
    mkdir -p "$ex" "$exb"
    diod_start a 5640 "$ex"
    diod_start b 5641 "$exb"
    dd if=/dev/urandom of="$ex/data.bin" bs=1M count=1 status=none
    dd if=/dev/urandom of="$exb/data.bin" bs=1M count=1 status=none
    local want wantb; want=$(sha "$ex/data.bin"); wantb=$(sha "$exb/data.bin")
    board_create A 0001-BOARD-A 1d6b:0109 rigA dummy_udc.0
    B_BACKEND[A]=127.0.0.1:5640
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    board_plug A
    fwd_start
    m=${B_MNT[A]}
    local T="timeout -s KILL 60"
    local p; p=$(host_dev_of 0001-BOARD-A) || die "board A not on the host side"
    wait_until 30 iface_claimed "$p" 0 || die "the forwarder did not claim board A"

    # remount_fast ANAME: mount right away; a mount that fails at once is
    # retried every 0.2 s, at most 10 times; RM_TRIES = attempts it took.
    remount_fast() {
        RM_TRIES=0
        while [ "$RM_TRIES" -lt 10 ]; do
            RM_TRIES=$((RM_TRIES + 1))
            board_mount A "$1" 60 && return 0
            sleep 0.2
        done
        return 1
    }
    for i in $(seq 1 "$cycles"); do
        if [ "$i" -eq 1 ] || [ $((i % 2)) -eq 0 ]; then
            [ "$i" -eq 1 ] || sleep 2
            board_mount A "$ex" || die "mount #$i (after a pause) failed"
        else
            remount_fast "$ex" || die "mount #$i straight after the umount failed 10 times in a row"
            [ "$RM_TRIES" -eq 1 ] || { lost=$((lost + 1)); log "mount #$i straight after the umount took $RM_TRIES attempts"; }
        fi
        if [ -n "$prev" ]; then
            expect_eq "session #$i reads what session #$((i - 1)) wrote" "$prev" "$($T cat "$m/note" 2>/dev/null)"
        fi
        expect_eq "session #$i reads a 1 MiB file correctly" "$want" "$($T sha256sum "$m/data.bin" | cut -d' ' -f1)"
        tok="session-$i-$RANDOM"
        echo "$tok" | $T tee "$m/note" >/dev/null
        expect_eq "session #$i's write is on the server" "$tok" "$(cat "$ex/note")"
        prev=$tok
        board_umount A || die "umount #$i failed"
    done
    local fast=$((cycles / 2 - 1))
    [ "$fast" -gt 0 ] || fast=1
    printf 'remount race: %d of %d back-to-back remounts needed a retry\n' "$lost" "$fast" > "$SC_OUT/remount-race.txt"
    if [ "$lost" -le "${REMOUNT_MAX_LOST:-2}" ]; then ok "umount && mount: $lost of $fast back-to-back remounts lost the race (needed a retry)"
    else bad "umount && mount: $lost of $fast back-to-back remounts lost the race (more than ${REMOUNT_MAX_LOST:-2})"; fi

    if [ "$RIG_FWD" = usb9pfsd ]; then
        # status: one re-arm per umount (the last umount's included) on
        # kernels that disable the function, none on kernels that do not
        local rearms disables
        rearms=$("$USB9PFSD" status --json | python3 -c 'import json,sys; print(next(b["counters"]["rearms"] for b in json.load(sys.stdin)["boards"] if b["serial"] == "0001-BOARD-A"))')
        disables=$(grep -c 'usb9pfs function disabled its endpoints' "$SC_OUT/usb9pfsd.log" || true)
        log "status: rearms=$rearms; daemon log: $disables umount re-arm lines"
        expect_eq "status counts one re-arm per umount ($cycles umounts)" "$cycles" "$rearms"
        expect "the daemon never re-armed more than once in a row" sh -c "! grep -q 'failed again right after it was re-armed' '$SC_OUT/usb9pfsd.log'"

        # A reload moves the board to server b: its next mount goes there.
        B_BACKEND[A]=127.0.0.1:5641
        fwd_write_config "$LOCAL/usb9pfsd.toml"
        "$USB9PFSD" reload >>"$SC_OUT/guest.log" 2>&1 || bad "usb9pfsd reload failed"
        for i in 1 2; do
            remount_fast "$exb" || die "mount #$i after the reload failed"
            expect_eq "after the reload, mount #$i reads server b's file" "$wantb" "$($T sha256sum "$m/data.bin" | cut -d' ' -f1)"
            board_umount A || die "umount #$i after the reload failed"
        done
    fi
    expect "forwarder still running after $cycles sessions" fwd_alive
}
