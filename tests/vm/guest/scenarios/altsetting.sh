# shellcheck shell=bash
# altsetting: a board whose usb9pfs interface has an empty alternate setting
# 0 and carries its two bulk endpoints on alternate setting 1 (the layout of
# CDC data interfaces, and the one the posted usbg series moves usb9pfs to).
# Stock usb9pfs cannot present it, so the board is the FunctionFS simulator
# (board_sim.py --alt-layout), which f_fs lets answer SET_INTERFACE and
# GET_INTERFACE like a kernel function; its 9P sessions are checked reply by
# reply and by checksum against a real diod. Checks: the host's raw
# descriptors show interface 0 twice (alt 0 without endpoints, alt 1 with
# one bulk IN and one bulk OUT) and the device comes up in alt 0; the
# forwarder claims the interface and selects alt 1 (sysfs bAlternateSetting,
# and the board counts exactly one more enable); a session moves 1.5 MiB
# intact; a second session on the same claim, and one after the daemon
# re-executed itself are served without any further
# SET_INTERFACE (the board's enable count does not move: an unneeded one
# would reset a live session); after a replug (new enumeration, back in
# alt 0) the forwarder selects alt 1 again and a session works.
scenario_main() {
    requires_usb9pfsd
    rig_setup 1
    local exs=$EXPORTS/s serial=0040-ALT-BOARD p e0 e1
    mkdir -p "$exs/dir"
    diod_start s 5640 "$exs"
    dd if=/dev/urandom of="$exs/dir/data.bin" bs=1k count=1536 status=none
    SIM_SERIAL=$serial
    FWD_MAP_SERIAL[$serial]=127.0.0.1:5640
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    sim_start alt "$serial" 1d6b:0109 dummy_udc.0 --alt-layout
    # enables: how often the host enabled the board's function so far (one
    # SET_CONFIGURATION per enumeration, one per SET_INTERFACE)
    enables() { sim_cmd 10 enables >/dev/null || die "sim: enables: $SIM_REPLY"; set -- $SIM_REPLY; echo "$2"; }
    e0=$(enables)
    sim_plug
    p=$(host_dev_of "$serial")

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
    cur_alt() { tr -d ' ' < "/sys/bus/usb/devices/$p:1.0/bAlternateSetting"; }
    expect_eq "raw descriptors: interface 0 alt 0 without endpoints, alt 1 with bulk IN + bulk OUT, both ff/ff/09" \
        "0/0/0/ffff09/- 0/1/2/ffff09/in-bulk,out-bulk" "$(layout)"
    expect_eq "the device comes up in alternate setting 0" 0 "$(cur_alt)"

    SIM_ANAME=$exs SIM_FILE=dir/data.bin SIM_SHA=$(sha "$exs/dir/data.bin")
    fwd_start
    local cycle
    for cycle in first replug; do
        if [ "$cycle" = replug ]; then
            sim_unplug
            sim_cmd 10 reopen || bad "sim: reopen: $SIM_REPLY"
            e0=$(enables)
            sim_plug
            p=$(host_dev_of "$serial")
        fi
        alt1() { iface_claimed "$p" 0 && [ "$(cur_alt)" = 1 ]; }
        if wait_until 30 alt1; then ok "$cycle: forwarder claimed interface 0 and selected alternate setting 1"
        else die "$cycle: forwarder did not claim interface 0 in alternate setting 1 within 30 s (driver '$(iface_driver "$p" 0)', alt $(cur_alt))"; fi
        sim_session "$cycle: a session through alternate setting 1 reads 1.5 MiB, every reply checked, sha256 matches"
        e1=$(enables)
        expect_eq "$cycle: the board's function was enabled twice since the plug (the enumeration's SET_CONFIGURATION, the forwarder's SET_INTERFACE)" $((e0 + 2)) "$e1"
        sim_session "$cycle: a second session on the same claim"
        if [ "$cycle" = first ]; then
            local pid0=$FWD_PID
            log_mark
            kill -USR2 "$FWD_PID"
            took_over() { log_since | grep -q 'took over the claimed usb9pfs interface'; }
            wait_until 30 took_over || bad "the re-executed daemon did not take over the board"
            # the PID that answers on the control socket, not merely a
            # process with the old PID (a re-exec that forked and parked its
            # parent would keep that alive)
            expect_eq "re-exec kept the daemon's PID (status --json: daemon.pid)" "$pid0" \
                "$("$USB9PFSD" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["daemon"]["pid"])')"
            sim_session "after a re-exec: a session on the interface the successor took over"
        fi
        expect_eq "$cycle: no further SET_INTERFACE for later sessions or a re-exec" "$e1" "$(enables)"
    done
    expect_eq "usb9pfsd list --json: the board's interface 0 with alternate setting 1" "0/1" "$(list_json_ifaces "$serial")"
    expect "forwarder still running" fwd_alive
}
