# shellcheck shell=bash
# altsetting: a board whose usb9pfs interface has an empty alternate setting
# 0 and carries its two bulk endpoints on alternate setting 1 (rig patch
# 0003, functions/usb9pfs.TAG/alt_setting = 1), on the real kernel path.
# Checks: the host's raw descriptors show interface 0 twice (alt 0 without
# endpoints, alt 1 with one bulk IN and one bulk OUT) and the device comes
# up in alt 0; the forwarder claims the interface and selects alt 1 (sysfs
# bAlternateSetting); the board mounts and moves 4 MiB each way intact; after
# a replug (new enumeration, back in alt 0) the forwarder selects alt 1 again
# and the board mounts and reads again.
scenario_main() {
    rig_setup 1
    local ex=$EXPORTS/a serial=0040-ALT-BOARD p m
    mkdir -p "$ex"
    diod_start a 5640 "$ex"
    dd if=/dev/urandom of="$ex/data.bin" bs=1M count=4 status=none
    dd if=/dev/urandom of="$LOCAL/w.bin" bs=1M count=4 status=none
    echo "marker-alt" > "$ex/marker"
    board_create L "$serial" 1d6b:0109 rigL dummy_udc.0 alt_setting=1
    expect_eq "board's usb9pfs function is in the alt-setting layout" 1 "$(cat "$GADGETS/L/functions/usb9pfs.rigL/alt_setting")"
    B_BACKEND[L]=127.0.0.1:5640
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    board_plug L
    p=$(host_dev_of "$serial")
    m=${B_MNT[L]}

    # interface descriptors of the active configuration as "NUM/ALT/NEP/CLASS"
    layout() {
        python3 - "/sys/bus/usb/devices/$p/descriptors" <<'PY'
import sys
d = open(sys.argv[1], "rb").read()
i, out, cur = 18, [], None   # skip the device descriptor
while i + 2 <= len(d):
    ln, ty = d[i], d[i + 1]
    if ln == 0:
        break
    if ty == 4:
        cur = [d[i + 2], d[i + 3], d[i + 4], "%02x%02x%02x" % (d[i + 5], d[i + 6], d[i + 7]), []]
        out.append(cur)
    elif ty == 5 and cur is not None:
        cur[4].append(("in" if d[i + 2] & 0x80 else "out") + ("-bulk" if d[i + 3] & 3 == 2 else "-other"))
    i += ln
print(" ".join("%d/%d/%d/%s/%s" % (n, a, e, c, ",".join(sorted(eps)) or "-") for n, a, e, c, eps in out))
PY
    }
    expect_eq "raw descriptors: interface 0 alt 0 without endpoints, alt 1 with bulk IN + bulk OUT, both ff/ff/09" \
        "0/0/0/ffff09/- 0/1/2/ffff09/in-bulk,out-bulk" "$(layout)"
    cur_alt() { tr -d ' ' < "/sys/bus/usb/devices/$p:1.0/bAlternateSetting"; }
    expect_eq "the device comes up in alternate setting 0" 0 "$(cur_alt)"

    fwd_start
    local cycle
    for cycle in first replug; do
        if [ "$cycle" = replug ]; then
            board_umount L || die "umount before replug failed"
            board_unplug L
            fwd_board_unplugged L
            board_plug L
            p=$(host_dev_of "$serial")
            # (usb9pfsd may already have selected alt 1 by now; p9_fwd.py starts below)
            [ "$RIG_FWD" != p9fwd ] || expect_eq "replug: the device comes back in alternate setting 0" 0 "$(cur_alt)"
            fwd_board_plugged L
        fi
        alt1() { iface_claimed "$p" 0 && [ "$(cur_alt)" = 1 ]; }
        if wait_until 30 alt1; then ok "$cycle: forwarder claimed interface 0 and selected alternate setting 1"
        else die "$cycle: forwarder did not claim interface 0 in alternate setting 1 within 30 s (driver '$(iface_driver "$p" 0)', alt $(cur_alt))"; fi
        board_mount_retry L "$ex" 30 || die "$cycle: mount through alternate setting 1 failed"
        expect_eq "$cycle: marker read through alternate setting 1" "marker-alt" "$(timeout -s KILL 60 cat "$m/marker" 2>/dev/null)"
        expect_eq "$cycle: 4 MiB read through alternate setting 1: checksum" "$(sha "$ex/data.bin")" "$(board_sha L data.bin 200)"
        if [ "$cycle" = first ]; then
            timeout -s KILL 200 dd if="$LOCAL/w.bin" of="$m/w.bin" bs=64k conv=fsync status=none 2>>"$SC_OUT/guest.log" || bad "4 MiB write failed"
            expect_eq "4 MiB write through alternate setting 1 lands intact" "$(sha "$LOCAL/w.bin")" "$(sha "$ex/w.bin" 2>/dev/null)"
        fi
    done
    if [ "$RIG_FWD" = usb9pfsd ]; then
        expect_eq "usb9pfsd list --json: the board's interface 0 with alternate setting 1" "0/1" "$(list_json_ifaces "$serial")"
    fi
    board_umount L || bad "umount failed"
    expect "forwarder still running" fwd_alive
}
