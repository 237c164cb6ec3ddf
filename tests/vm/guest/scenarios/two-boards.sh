# shellcheck shell=bash
# two-boards: two gadgets at once (dummy_hcd num=2), one with a VID:PID other
# than 1d6b:0109, mapped by serial to two diods exporting different
# directories. Each board sees its own export's marker and not the other's,
# and simultaneous reads on both boards return the right data.
scenario_main() {
    rig_setup 2
    local exa=$EXPORTS/a exb=$EXPORTS/b ma mb
    mkdir -p "$exa" "$exb"
    diod_start a 5640 "$exa"
    diod_start b 5641 "$exb"
    local ma_tok mb_tok
    ma_tok="marker-A-$RANDOM$RANDOM"; mb_tok="marker-B-$RANDOM$RANDOM"
    echo "$ma_tok" > "$exa/marker-a"
    echo "$mb_tok" > "$exb/marker-b"
    dd if=/dev/urandom of="$exa/data.bin" bs=1M count=4 status=none
    dd if=/dev/urandom of="$exb/data.bin" bs=1M count=4 status=none

    board_create A 0001-BOARD-A 1d6b:0109 rigA dummy_udc.0
    board_create B 0002-BOARD-B 1209:0001 rigB dummy_udc.1
    B_BACKEND[A]=127.0.0.1:5640
    B_BACKEND[B]=127.0.0.1:5641
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    board_plug A
    board_plug B
    expect_eq "board B enumerates with VID:PID 1209:0001" "1209:0001" \
        "$(p=$(host_dev_of 0002-BOARD-B); echo "$(cat /sys/bus/usb/devices/$p/idVendor):$(cat /sys/bus/usb/devices/$p/idProduct)")"
    fwd_start
    board_mount A "$exa" || die "board A: mount failed"
    board_mount B "$exb" || die "board B: mount failed"
    ok "both boards mounted"
    ma=${B_MNT[A]} mb=${B_MNT[B]}

    local T="timeout -s KILL 60"
    expect_eq "board A reads its own marker" "$ma_tok" "$($T cat "$ma/marker-a" 2>/dev/null)"
    expect_eq "board B reads its own marker" "$mb_tok" "$($T cat "$mb/marker-b" 2>/dev/null)"
    expect_not "board A does not see board B's marker" $T test -e "$ma/marker-b"
    expect_not "board B does not see board A's marker" $T test -e "$mb/marker-a"
    expect_eq "board A lists exactly its export" "$(ls -A "$exa" | sort | tr '\n' ' ')" "$($T ls -A "$ma" | sort | tr '\n' ' ')"
    expect_eq "board B lists exactly its export" "$(ls -A "$exb" | sort | tr '\n' ' ')" "$($T ls -A "$mb" | sort | tr '\n' ' ')"

    # both boards busy at the same time
    timeout -s KILL 240 sha256sum "$ma/data.bin" > "$LOCAL/a.sum" 2>&1 &
    local pa=$!
    timeout -s KILL 240 sha256sum "$mb/data.bin" > "$LOCAL/b.sum" 2>&1 &
    local pb=$!
    dd if=/dev/urandom of="$LOCAL/wa" bs=1M count=2 status=none
    wait "$pa"; wait "$pb"
    expect_eq "board A's 4 MiB file read concurrently with board B" "$(sha "$exa/data.bin")" "$(cut -d' ' -f1 "$LOCAL/a.sum")"
    expect_eq "board B's 4 MiB file read concurrently with board A" "$(sha "$exb/data.bin")" "$(cut -d' ' -f1 "$LOCAL/b.sum")"

    # writes land on the right server
    echo "from-A" | $T tee "$ma/written-by-a" >/dev/null
    echo "from-B" | $T tee "$mb/written-by-b" >/dev/null
    expect_eq "board A's write lands in export a" "from-A" "$(cat "$exa/written-by-a" 2>/dev/null)"
    expect_eq "board B's write lands in export b" "from-B" "$(cat "$exb/written-by-b" 2>/dev/null)"
    expect_not "board A's write is not in export b" test -e "$exb/written-by-a"
    expect_not "board B's write is not in export a" test -e "$exa/written-by-b"

    board_umount A || bad "umount of board A failed"
    board_umount B || bad "umount of board B failed"
    expect "forwarder still running" fwd_alive
}
