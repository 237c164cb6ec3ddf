# shellcheck shell=bash
# composite: one gadget carrying two usb9pfs functions beside other functions:
#   acm.GS0 (interfaces 0+1), usb9pfs.root (2), ffs.pad (FunctionFS, 8
#   interfaces without endpoints: 3..10), usb9pfs.data (11)
# so one usb9pfs interface sits at number >= 10 (a string sort puts
# "1-1:1.11" before "1-1:1.2"). Each function mounts its own export from
# its own diod: the config maps the serial to diod a and, with an
# `interface = 11` entry, usb9pfs.data to diod b (a exports only root, b
# only data, so a mis-routed mount fails). Checks: the host sees that layout; the forwarder claims both usb9pfs
# interfaces and neither ACM interface; each board reads its own marker;
# concurrent 16 MiB checksummed reads and writes on both; then board R is
# unmounted and mounted three times while board D streams a 6 MiB file in a
# loop: every D checksum matches, no transfer error in the kernel log and no
# new warning in the daemon's log; `usb9pfsd list --json` shows both
# interfaces.
#
# Under RIG_FWD=p9fwd each interface gets its own p9_fwd.py (--interface,
# rig patch 0004). A forwarder that does not claim an interface is a failed
# check, and that board is then not mounted (a mount nobody serves hangs).
scenario_main() {
    rig_setup 1
    modprobe usb_f_acm
    modprobe usb_f_fs
    local exr=$EXPORTS/root exd=$EXPORTS/data serial=0010-COMPOSITE g=C
    mkdir -p "$exr" "$exd"
    diod_start a 5640 "$exr"
    diod_start b 5641 "$exd"
    local tr td
    tr="marker-root-$RANDOM$RANDOM"; td="marker-data-$RANDOM$RANDOM"
    echo "$tr" > "$exr/marker-root"
    echo "$td" > "$exd/marker-data"
    dd if=/dev/urandom of="$exr/big.bin" bs=1M count=16 status=none
    dd if=/dev/urandom of="$exd/big.bin" bs=1M count=16 status=none
    dd if=/dev/urandom of="$exd/stream.bin" bs=1M count=6 status=none
    dd if=/dev/urandom of="$exr/small.bin" bs=256k count=1 status=none
    dd if=/dev/urandom of="$LOCAL/w-R" bs=1M count=16 status=none
    dd if=/dev/urandom of="$LOCAL/w-D" bs=1M count=16 status=none

    # the FunctionFS pad must have its descriptors before the gadget binds
    gadget_create "$g" "$serial" 1d6b:0104 dummy_udc.0
    mkdir "$GADGETS/$g/functions/ffs.pad"
    mkdir -p /run/ffs-pad
    mount -t functionfs pad /run/ffs-pad || die "mount -t functionfs failed"
    python3 "$RIG_VM/guest/ffs-pad.py" /run/ffs-pad 8 "$LOCAL/pad.ready" >>"$SC_OUT/ffs-pad.log" 2>&1 &
    wait_until 20 test -e "$LOCAL/pad.ready" || die "FunctionFS pad did not write its descriptors ($(tail -3 "$SC_OUT/ffs-pad.log" | tr '\n' ' '))"
    gadget_add "$g" acm.GS0
    board_on_gadget R "$g" root
    gadget_add "$g" ffs.pad
    board_on_gadget D "$g" data
    B_BACKEND[R]=127.0.0.1:5640
    B_BACKEND[D]=127.0.0.1:5641
    B_IFACE_CFG[D]=1
    board_plug R
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    # What the daemon makes of this entry is checked below (markers, the
    # server connections, list --json); this only guards the rig's config.
    rig_guard "the config narrows usb9pfs.data's entry to its interface ${B_IFNUM[D]}" grep -qx "interface = ${B_IFNUM[D]}" "$FWD_CONFIG"

    local p ir id
    p=$(host_dev_of "$serial")
    ir=${B_IFNUM[R]} id=${B_IFNUM[D]}
    expect_eq "host sees 12 interfaces (ACM 2 + usb9pfs + pad 8 + usb9pfs)" 12 "$(tr -d ' ' < "/sys/bus/usb/devices/$p/bNumInterfaces")"
    expect_eq "host sees the usb9pfs interfaces at 2 and 11" "2 11" "$(usb9pfs_ifaces "$p" | tr '\n' ' ' | sed 's/ $//')"
    expect_eq "interface 0 is the ACM control interface (class 02)" 02 "$(cat "/sys/bus/usb/devices/$p:1.0/bInterfaceClass")"

    fwd_start
    local claimed_r=0 claimed_d=0
    if wait_until 30 iface_claimed "$p" "$ir"; then claimed_r=1; ok "forwarder claimed interface $ir (usb9pfs.root)"
    else bad "forwarder did not claim interface $ir (usb9pfs.root) within 30 s (driver: '$(iface_driver "$p" "$ir")')"; fi
    if wait_until 30 iface_claimed "$p" "$id"; then claimed_d=1; ok "forwarder claimed interface $id (usb9pfs.data)"
    else bad "forwarder did not claim interface $id (usb9pfs.data) within 30 s (driver: '$(iface_driver "$p" "$id")')"; fi
    expect_not "forwarder left the ACM interfaces alone (interface 0 not usbfs)" iface_claimed "$p" 0
    expect_not "forwarder left the ACM interfaces alone (interface 1 not usbfs)" iface_claimed "$p" 1

    local T="timeout -s KILL 60" mr=${B_MNT[R]} md=${B_MNT[D]}
    if [ "$claimed_r" = 1 ]; then
        board_mount_retry R "$exr" 30 || bad "board R (usb9pfs.root): mount failed"
    fi
    if [ "$claimed_d" = 1 ]; then
        board_mount_retry D "$exd" 30 || bad "board D (usb9pfs.data): mount failed"
    fi
    local up_r=0 up_d=0
    is_mounted "$mr" && up_r=1
    is_mounted "$md" && up_d=1
    [ "$up_r$up_d" = 11 ] && ok "both usb9pfs functions of one gadget mounted"
    if [ "$up_r" = 1 ]; then
        expect_eq "usb9pfs.root reads its own export's marker" "$tr" "$($T cat "$mr/marker-root" 2>/dev/null)"
        expect_not "usb9pfs.root does not see the data export" $T test -e "$mr/marker-data"
    fi
    if [ "$up_d" = 1 ]; then
        expect_eq "usb9pfs.data reads its own export's marker" "$td" "$($T cat "$md/marker-data" 2>/dev/null)"
        expect_not "usb9pfs.data does not see the root export" $T test -e "$md/marker-root"
    fi
    conns() { ss -Htn state established "( dport = :$1 )" 2>/dev/null | wc -l; }
    [ "$up_r" = 0 ] || expect "usb9pfs.root's session goes to diod a (:5640)" test "$(conns 5640)" -ge 1
    [ "$up_d" = 0 ] || expect "usb9pfs.data's session goes to diod b (:5641)" test "$(conns 5641)" -ge 1

    # concurrent 16 MiB reads, then concurrent 16 MiB writes, on both functions
    local pr="" pd=""
    if [ "$up_r" = 1 ]; then board_sha R big.bin 300 > "$LOCAL/r.sum" & pr=$!; fi
    if [ "$up_d" = 1 ]; then board_sha D big.bin 300 > "$LOCAL/d.sum" & pd=$!; fi
    [ -z "$pr" ] || wait "$pr"; [ -z "$pd" ] || wait "$pd"
    [ "$up_r" = 0 ] || expect_eq "usb9pfs.root: 16 MiB read (concurrent with data) checksum" "$(sha "$exr/big.bin")" "$(cat "$LOCAL/r.sum")"
    [ "$up_d" = 0 ] || expect_eq "usb9pfs.data: 16 MiB read (concurrent with root) checksum" "$(sha "$exd/big.bin")" "$(cat "$LOCAL/d.sum")"
    pr="" pd=""
    if [ "$up_r" = 1 ]; then timeout -s KILL 300 dd if="$LOCAL/w-R" of="$mr/w.bin" bs=64k conv=fsync status=none 2>>"$SC_OUT/guest.log" & pr=$!; fi
    if [ "$up_d" = 1 ]; then timeout -s KILL 300 dd if="$LOCAL/w-D" of="$md/w.bin" bs=64k conv=fsync status=none 2>>"$SC_OUT/guest.log" & pd=$!; fi
    [ -z "$pr" ] || wait "$pr"; [ -z "$pd" ] || wait "$pd"
    [ "$up_r" = 0 ] || expect_eq "usb9pfs.root: 16 MiB write (concurrent with data) lands intact in the root export" "$(sha "$LOCAL/w-R")" "$(sha "$exr/w.bin" 2>/dev/null)"
    [ "$up_d" = 0 ] || expect_eq "usb9pfs.data: 16 MiB write (concurrent with root) lands intact in the data export" "$(sha "$LOCAL/w-D")" "$(sha "$exd/w.bin" 2>/dev/null)"

    # root: umount + mount three times while data streams
    if [ "$up_r$up_d" = 11 ]; then
        local want_stream kerr0 warn0 i
        want_stream=$(sha "$exd/stream.bin")
        kerr0=$(dmesg_errs)
        warn0=$(fwd_log | grep -cE 'WARN|ERROR' || true)
        rm -f "$LOCAL/stop" "$LOCAL/stream.sums"
        (
            while [ ! -e "$LOCAL/stop" ]; do board_sha D stream.bin 300 >> "$LOCAL/stream.sums"; done
        ) &
        local streamer=$!
        sleep 2
        for i in 1 2 3; do
            board_umount R || { bad "remount cycle $i: umount of usb9pfs.root failed"; break; }
            board_mount_retry R "$exr" 30 || { bad "remount cycle $i: mount of usb9pfs.root failed"; break; }
            expect_eq "remount cycle $i: usb9pfs.root reads 256 KiB correctly while data streams" "$(sha "$exr/small.bin")" "$(board_sha R small.bin 60)"
        done
        # let the streamer finish at least two whole reads
        wait_until 240 sh -c "[ \$(wc -l < '$LOCAL/stream.sums' 2>/dev/null || echo 0) -ge 2 ]" || true
        touch "$LOCAL/stop"
        local n=0
        while kill -0 "$streamer" 2>/dev/null && [ $n -lt 600 ]; do sleep 0.5; n=$((n + 1)); done
        kill -KILL "$streamer" 2>/dev/null || true
        cp "$LOCAL/stream.sums" "$SC_OUT/stream.sums"
        local total good
        total=$(wc -l < "$LOCAL/stream.sums")
        good=$(grep -c "^$want_stream\$" "$LOCAL/stream.sums" || true)
        expect "usb9pfs.data completed at least 2 full 6 MiB reads during root's remounts (got $total)" test "$total" -ge 2
        expect_eq "every usb9pfs.data read during root's remounts has the right sha256" "$total" "$good"
        expect_eq "no transfer error or warning in the kernel log during root's remounts" "$kerr0" "$(dmesg_errs)"
        if [ "$RIG_FWD" = usb9pfsd ]; then
            expect_eq "no new WARN/ERROR line in usb9pfsd's log during root's remounts" "$warn0" "$(fwd_log | grep -cE 'WARN|ERROR' || true)"
        fi
    fi

    if [ "$RIG_FWD" = usb9pfsd ]; then
        expect_eq "usb9pfsd list --json: two entries for $serial, interfaces 2 and 11" "2 11" \
            "$(list_json_ifaces "$serial" | tr ' ' '\n' | cut -d/ -f1 | sort -n | tr '\n' ' ' | sed 's/ $//')"
        expect_eq "usb9pfsd list --json: interface 2 -> diod a, interface 11 -> diod b" "2=127.0.0.1:5640 11=127.0.0.1:5641" \
            "$(python3 -c '
import json, sys
rows = json.load(open(sys.argv[1]))
print(" ".join("%s=%s" % (o.get("interface"), o.get("backend")) for o in sorted(rows, key=lambda o: o.get("interface", -1)) if o.get("serial") == sys.argv[2]))
' "$SC_OUT/list-$serial.json" "$serial" 2>&1)"
        has_iface_lines() { fwd_log | grep -F "$serial" | grep -E "iface=\"?$1\b" >/dev/null; }
        expect "usb9pfsd log lines carry iface=$ir for usb9pfs.root" has_iface_lines "$ir"
        expect "usb9pfsd log lines carry iface=$id for usb9pfs.data" has_iface_lines "$id"
    fi
    board_umount R || bad "final umount of usb9pfs.root failed"
    board_umount D || bad "final umount of usb9pfs.data failed"
    expect "forwarder still running" fwd_alive
}
