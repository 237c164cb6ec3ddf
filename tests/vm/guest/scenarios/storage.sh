# shellcheck shell=bash
# storage: usb9pfs beside mass storage in one gadget (mass_storage.0 on
# interface 0 with an 8 MiB backing file, usb9pfs.st on interface 1), the
# way g_multi-style boards do it. Before the forwarder starts, the host's
# usb-storage driver owns interface 0 and the rig reads the backing file's
# first sector through the SCSI disk (the storage function is real). Then
# the forwarder detaches usb-storage (p9_fwd.py does the same: its stall
# handling resets the port under the 9P transfers), claims interface 1, and
# the board mounts: 8 MiB checksummed read and write. usb-storage stays
# detached afterwards, and usb9pfsd logs the detach.
scenario_main() {
    rig_setup 1
    modprobe usb_f_mass_storage
    local ex=$EXPORTS/st serial=0020-STORAGE-BOARD g=S p disk tok
    mkdir -p "$ex"
    diod_start a 5640 "$ex"
    dd if=/dev/urandom of="$ex/big.bin" bs=1M count=8 status=none
    dd if=/dev/urandom of="$LOCAL/w.bin" bs=1M count=8 status=none
    tok="rig-disk-$RANDOM$RANDOM"
    dd if=/dev/zero of="$LOCAL/disk.img" bs=1M count=8 status=none
    printf '%s' "$tok" | dd of="$LOCAL/disk.img" conv=notrunc status=none

    gadget_create "$g" "$serial" 1d6b:0104 dummy_udc.0
    gadget_add "$g" mass_storage.0 "lun.0/file=$LOCAL/disk.img"
    board_on_gadget B "$g" st
    B_BACKEND[B]=127.0.0.1:5640
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    board_plug B
    p=$(host_dev_of "$serial")
    expect_eq "host sees mass storage on interface 0 (class 08)" 08 "$(cat "/sys/bus/usb/devices/$p:1.0/bInterfaceClass")"
    expect_eq "host sees usb9pfs on interface 1" 1 "${B_IFNUM[B]}"

    storage_bound() { [ "$(iface_driver "$p" 0)" = usb-storage ]; }
    find_disk() { ls -d /sys/bus/usb/devices/"$p":1.0/host*/target*/*/block/* 2>/dev/null | head -n1; }
    has_disk() { [ -n "$(find_disk)" ]; }
    if wait_until 30 storage_bound && wait_until 30 has_disk; then
        disk=/dev/$(basename "$(find_disk)")
        wait_until 10 test -b "$disk" || true
        expect_eq "the mass storage function works: first sector of $disk holds the backing file's token" \
            "$tok" "$(timeout -s KILL 30 dd if="$disk" bs=512 count=1 iflag=direct status=none 2>/dev/null | head -c ${#tok})"
    else
        bad "usb-storage did not bind interface 0 / no SCSI disk within 30 s (driver: '$(iface_driver "$p" 0)')"
    fi

    fwd_start
    not_storage() { [ "$(iface_driver "$p" 0)" != usb-storage ]; }
    if wait_until 30 iface_claimed "$p" 1; then ok "forwarder claimed interface 1 (usb9pfs)"
    else die "forwarder did not claim interface 1 within 30 s (driver: '$(iface_driver "$p" 1)')"; fi
    expect "forwarder detached usb-storage from interface 0" wait_until 10 not_storage

    board_mount_retry B "$ex" 30 || die "board B: mount failed"
    local m=${B_MNT[B]}
    expect_eq "8 MiB read beside mass storage: checksum" "$(sha "$ex/big.bin")" "$(board_sha B big.bin 300)"
    timeout -s KILL 300 dd if="$LOCAL/w.bin" of="$m/w.bin" bs=64k conv=fsync status=none 2>>"$SC_OUT/guest.log" || bad "8 MiB write on the board failed"
    expect_eq "8 MiB write beside mass storage lands intact" "$(sha "$LOCAL/w.bin")" "$(sha "$ex/w.bin" 2>/dev/null)"
    expect "usb-storage still detached from interface 0 after the transfers" not_storage
    board_umount B || bad "umount failed"

    if [ "$RIG_FWD" = usb9pfsd ]; then
        detach_logged() { fwd_log | grep -iE 'usb-storage|mass.storage|storage' | grep -iE 'detach' >/dev/null; }
        expect "usb9pfsd logged detaching usb-storage" detach_logged
    fi
    expect "forwarder still running" fwd_alive
}
