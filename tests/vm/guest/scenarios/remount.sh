# shellcheck shell=bash
# remount: umount and mount again on the same gadget (no replug), three times;
# each new session sees the previous session's writes and reads data correctly.
scenario_main() {
    rig_setup 1
    local ex=$EXPORTS/a m i tok prev=""
    mkdir -p "$ex"
    diod_start a 5640 "$ex"
    dd if=/dev/urandom of="$ex/data.bin" bs=1M count=2 status=none
    local want; want=$(sha "$ex/data.bin")
    board_create A 0001-BOARD-A 1d6b:0109 rigA dummy_udc.0
    B_BACKEND[A]=127.0.0.1:5640
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    board_plug A
    fwd_start
    m=${B_MNT[A]}
    local T="timeout -s KILL 60"
    for i in 1 2 3; do
        board_mount A "$ex" || die "mount #$i on the same gadget failed"
        ok "mount #$i on the same gadget"
        if [ -n "$prev" ]; then
            expect_eq "session #$i reads what session #$((i - 1)) wrote" "$prev" "$($T cat "$m/note" 2>/dev/null)"
        fi
        expect_eq "session #$i reads a 2 MiB file correctly" "$want" "$($T sha256sum "$m/data.bin" | cut -d' ' -f1)"
        tok="session-$i-$RANDOM"
        echo "$tok" | $T tee "$m/note" >/dev/null
        expect_eq "session #$i's write is on the server" "$tok" "$(cat "$ex/note")"
        prev=$tok
        board_umount A || die "umount #$i failed"
        ok "umount #$i"
    done
    expect "forwarder still running after 3 sessions" fwd_alive
}
