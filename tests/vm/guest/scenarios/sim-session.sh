# shellcheck shell=bash
# sim-session: the FunctionFS board simulator (tests/vm/board-sim) with an
# arbitrary serial and VID:PID runs scripted, fully checked 9P2000.L sessions
# through usb9pfsd against a real diod, then sends valid requests back to back
# as fast as it can, while a real kernel usb9pfs board streams a checksummed
# file through the same daemon. Proves the simulator is a faithful board (the
# baseline for the fault scenarios) and that a fast board does not disturb
# another. The simulator keeps its endpoints between sessions, as board
# kernels before the 2026 usbg fixes did after an umount: it counts the
# host's SET_INTERFACEs (FunctionFS enable events), and there must be none.
scenario_main() {
    requires_usb9pfsd
    rig_setup 2
    local exs=$EXPORTS/s exb=$EXPORTS/b
    mkdir -p "$exs/dir" "$exb"
    diod_start s 5640 "$exs"
    diod_start b 5641 "$exb"
    dd if=/dev/urandom of="$exs/dir/data.bin" bs=1k count=1536 status=none
    # Rreads of 15861 bytes are 15872-byte replies, 31 whole packets: each
    # needs the host's ZLP to end the board's 16 KiB receive request
    dd if=/dev/urandom of="$exs/exact.bin" bs=15861 count=8 status=none
    dd if=/dev/urandom of="$exb/stream.bin" bs=1M count=4 status=none
    local want_b; want_b=$(sha "$exb/stream.bin")

    board_create B 0002-BOARD-B 1209:0001 rigB dummy_udc.1
    B_BACKEND[B]=127.0.0.1:5641
    SIM_SERIAL=0009-SIM-S
    FWD_MAP_SERIAL[$SIM_SERIAL]=127.0.0.1:5640
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    sim_start sim "$SIM_SERIAL" 1209:9fff dummy_udc.0
    board_plug B
    sim_plug
    expect_eq "simulator enumerates with its own VID:PID 1209:9fff" "1209:9fff" \
        "$(p=$(host_dev_of 0009-SIM-S); echo "$(cat /sys/bus/usb/devices/$p/idVendor):$(cat /sys/bus/usb/devices/$p/idProduct)")"
    expect_eq "simulator's interface is ff/ff/09" "ff/ff/09" \
        "$(p=$(host_dev_of 0009-SIM-S); d=/sys/bus/usb/devices/$p:1.0; echo "$(cat $d/bInterfaceClass)/$(cat $d/bInterfaceSubClass)/$(cat $d/bInterfaceProtocol)")"
    sim_cmd 10 enables || bad "sim: enables: $SIM_REPLY"
    local enables0=${SIM_REPLY%% (*}
    fwd_start
    local pid0=$FWD_PID
    board_mount B "$exb" || die "board B: mount failed"
    wait_until 20 log_names 0009-SIM-S "$SIM_BA" 'found|claimed' \
        && ok "usb9pfsd found the simulator (serial and busaddr in its log)" \
        || bad "usb9pfsd did not log the simulator 0009-SIM-S busaddr $SIM_BA"

    stream_start "${B_MNT[B]}/stream.bin"
    SIM_ANAME=$exs SIM_FILE=dir/data.bin SIM_SHA=$(sha "$exs/dir/data.bin")
    sim_session "simulator: scripted session reads 1.5 MiB, every reply checked, sha256 matches"
    if sim_cmd 90 zlp-edge; then ok "simulator: T-messages of 512 and 1024 bytes end with a ZLP, like trans_usbg's (${SIM_REPLY})"
    else bad "simulator: whole-packet T-messages: $SIM_REPLY"; fi
    local want_x; want_x=$(sha "$exs/exact.bin")
    sim_cmd 150 session "$exs" exact.bin "$want_x" 16384 15861 \
        && ok "simulator: replies of whole packets (ZLP from the host) arrive whole (${SIM_REPLY})" \
        || bad "simulator: replies of whole packets: $SIM_REPLY"
    sim_cmd 150 session "$exs" dir/data.bin "$SIM_SHA" 8192 \
        && ok "simulator: session at msize 8192 (${SIM_REPLY})" || bad "simulator: session at msize 8192: $SIM_REPLY"
    if sim_cmd 300 burst "$exs" 2000; then ok "simulator: 2000 valid requests back to back all answered (${SIM_REPLY#burst: })"
    else bad "simulator: back-to-back requests: $SIM_REPLY"; fi
    SIM_FILE=dir/data.bin SIM_SHA=$(sha "$exs/dir/data.bin")
    sim_session "simulator: a session after the burst still works"
    stream_stop_check "board B during the simulator's sessions" "$want_b" 1

    # The simulator keeps its endpoints enabled between sessions, as board
    # kernels before the 2026 usbg fixes do after an umount: it must be
    # served without a single SET_INTERFACE (one would reset its session).
    sim_cmd 10 enables || bad "sim: enables: $SIM_REPLY"
    expect_eq "a board that keeps its endpoints between sessions never gets a SET_INTERFACE" "$enables0" "${SIM_REPLY%% (*}"
    expect_eq "status: no re-arm for that board" 0 "$("$USB9PFSD" status --json | python3 -c 'import json,sys; print(next(b["counters"]["rearms"] for b in json.load(sys.stdin)["boards"] if b["serial"] == "0009-SIM-S"))')"
    expect "usb9pfsd is the same living process (pid $pid0)" fwd_same_pid "$pid0"
    expect_not "usb9pfsd log has no panic" sh -c "grep -qi panick '$SC_OUT/usb9pfsd.log'"
    board_umount B || bad "umount of board B failed"
}
