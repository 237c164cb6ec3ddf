# shellcheck shell=bash
# reset: board A goes through 6 resets (board-side umount -> UDC unbind ->
# rebind -> mount; once with a changed serial that maps to the other backend)
# while board B keeps reading a file. The forwarder brings A back every time,
# A sees the right backend's marker, B's data checksums all match, and
# usb9pfsd's fd and thread counts do not grow across cycles.
scenario_main() {
    rig_setup 2
    local exa=$EXPORTS/a exb=$EXPORTS/b
    mkdir -p "$exa" "$exb"
    diod_start a 5640 "$exa"
    diod_start b 5641 "$exb"
    echo "marker-of-backend-a" > "$exa/marker"
    echo "marker-of-backend-b" > "$exb/marker"
    dd if=/dev/urandom of="$exa/small.bin" bs=256k count=1 status=none
    dd if=/dev/urandom of="$exb/small.bin" bs=256k count=1 status=none
    dd if=/dev/urandom of="$exb/stream.bin" bs=1M count=6 status=none
    local want_stream; want_stream=$(sha "$exb/stream.bin")

    board_create A 0001-BOARD-A 1d6b:0109 rigA dummy_udc.0
    board_create B 0002-BOARD-B 1209:0001 rigB dummy_udc.1
    B_BACKEND[A]=127.0.0.1:5640
    B_BACKEND[B]=127.0.0.1:5641
    FWD_MAP_SERIAL["0003-BOARD-A2"]=127.0.0.1:5641   # A's "other" serial -> backend b
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    board_plug A
    board_plug B
    fwd_start
    board_mount A "$exa" || die "board A: first mount failed"
    board_mount B "$exb" || die "board B: first mount failed"
    ok "both boards mounted"
    local ma=${B_MNT[A]} mb=${B_MNT[B]}

    # board B streams for as long as the cycles run
    rm -f "$LOCAL/stop" "$LOCAL/stream.sums"
    (
        while [ ! -e "$LOCAL/stop" ]; do
            s=$(timeout -s KILL 300 sha256sum "$mb/stream.bin" 2>/dev/null | cut -d' ' -f1)
            echo "${s:-read-failed}" >> "$LOCAL/stream.sums"
        done
    ) &
    local streamer=$!

    local i serial aname marker fds0="" thr0="" fds thr T="timeout -s KILL 60"
    for i in 1 2 3 4 5 6; do
        if [ "$i" -eq 4 ]; then serial=0003-BOARD-A2 aname=$exb marker=marker-of-backend-b
        else serial=0001-BOARD-A aname=$exa marker=marker-of-backend-a; fi
        log "--- reset cycle $i (serial $serial)"
        board_reset_unplug A
        fwd_board_unplugged A
        [ "${B_SERIAL[A]}" = "$serial" ] || board_set_serial A "$serial"
        board_plug A
        fwd_board_plugged A
        board_mount_retry A "$aname" 45 || die "cycle $i: board A ($serial) could not mount again within 45 s"
        expect_eq "cycle $i: board A ($serial) reaches backend ${marker#marker-of-}" "$marker" "$($T cat "$ma/marker" 2>/dev/null)"
        expect_eq "cycle $i: 256 KiB read on board A" "$(sha "$aname/small.bin")" "$($T sha256sum "$ma/small.bin" | cut -d' ' -f1)"
        if [ "$RIG_FWD" = usb9pfsd ]; then
            sleep 1
            fds=$(fwd_fds) thr=$(fwd_threads)
            log "cycle $i: usb9pfsd fds=$fds threads=$thr"
            echo "cycle $i fds=$fds threads=$thr" >> "$SC_OUT/usb9pfsd-counts.txt"
            if [ -z "$fds0" ]; then fds0=$fds thr0=$thr; fi
        fi
    done
    board_umount A || bad "final umount of board A failed"

    touch "$LOCAL/stop"
    local n=0
    while kill -0 "$streamer" 2>/dev/null && [ $n -lt 600 ]; do sleep 0.5; n=$((n + 1)); done
    kill -KILL "$streamer" 2>/dev/null || true
    local total good
    total=$(wc -l < "$LOCAL/stream.sums")
    good=$(grep -c "^$want_stream\$" "$LOCAL/stream.sums" || true)
    cp "$LOCAL/stream.sums" "$SC_OUT/stream.sums"
    expect "board B completed at least 2 full 6 MiB reads during the resets (got $total)" test "$total" -ge 2
    expect_eq "every board B read during the resets has the right sha256" "$total" "$good"
    board_umount B || bad "umount of board B failed"

    if [ "$RIG_FWD" = usb9pfsd ]; then
        expect "usb9pfsd fd count did not grow across cycles (after cycle 1: $fds0, after cycle 6: $fds)" test "$fds" -le "$fds0"
        expect "usb9pfsd thread count did not grow across cycles (after cycle 1: $thr0, after cycle 6: $thr)" test "$thr" -le "$thr0"
    fi
    expect "forwarder still running" fwd_alive
}
