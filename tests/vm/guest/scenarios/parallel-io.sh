# shellcheck shell=bash
# parallel-io: several processes of a board read at once (BC_READERS, default
# 6, each its own 256 KiB file), in the first session and in BC_ROUNDS - 1
# (default 3) more on the same gadget function (umount, mount). Every
# reader's checksum must match the server's. Written on 2026-12-06 to test
# the board kernel bug patched by module/0003 (a session after a remount
# lets two requests on the wire at once through the one in_req): without
# the patch, a later session's parallel readers get EIO or wrong data, and
# the guest kernel's memory can be corrupted.
scenario_main() {
    rig_setup 1
    local ex=$EXPORTS/a m i r n=${BC_READERS:-6} rounds=${BC_ROUNDS:-4}
    mkdir -p "$ex"
    diod_start a 5640 "$ex"
    for i in $(seq 1 "$n"); do dd if=/dev/urandom of="$ex/f$i.bin" bs=256K count=1 status=none; done
    (cd "$ex" && sha256sum f*.bin) > "$SC_OUT/want.txt"
    board_create A 0001-BOARD-A 1d6b:0109 rigA dummy_udc.0
    B_BACKEND[A]=127.0.0.1:5640
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    board_plug A
    fwd_start
    m=${B_MNT[A]}
    local p; p=$(host_dev_of 0001-BOARD-A) || die "board A not on the host side"
    wait_until 30 iface_claimed "$p" 0 || die "the forwarder did not claim board A"
    for r in $(seq 1 "$rounds"); do
        sleep 1
        board_mount A "$ex" || die "mount #$r failed"
        local pids=()
        for i in $(seq 1 "$n"); do
            { timeout -s KILL 60 sha256sum "$m/f$i.bin" 2> "$SC_OUT/err-$r-$i.txt" | sed "s|$m/||" > "$SC_OUT/got-$r-$i.txt"; } &
            pids+=($!)
        done
        wait "${pids[@]}" || true
        cat "$SC_OUT"/got-$r-*.txt | sort -k2 > "$SC_OUT/got-$r.txt"
        log "round $r: errors: $(cat "$SC_OUT"/err-$r-*.txt | tr '\n' '|')"
        expect_eq "session #$r: $n readers at once all read their file" "$(cat "$SC_OUT/want.txt")" "$(cat "$SC_OUT/got-$r.txt")"
        board_umount A || die "umount #$r failed"
    done
}
