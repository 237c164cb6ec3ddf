# shellcheck shell=bash
# deb: the Debian package as a user gets it. dpkg -i in the guest; the
# package's udev rule hands the board's node to group usb9pfsd
# (tests/deb/guest-check.sh: group, mode, systemd tag, SYSTEMD_WANTS); then the
# installed /usr/bin/usb9pfsd, running as the unprivileged user usb9pfsd with
# the installed (edited) /etc/usb9pfsd/config.toml, serves a mount whose data
# matches by checksum in both directions.
scenario_main() {
    requires_usb9pfsd
    [ -r "$STAGE/usb9pfsd.deb" ] || die "no .deb staged: run tests/deb/run (or cargo deb) before tests/vm/run"
    rig_setup 1
    local ex=$EXPORTS/a p bus dev out rc=0 want uid m
    diod_start a 5640 "$ex"
    dd if=/dev/urandom of="$ex/data.bin" bs=1M count=4 status=none
    want=$(sha "$ex/data.bin")
    board_create A 0001-BOARD-A 1d6b:0109 rigA dummy_udc.0
    board_plug A
    p=$(host_dev_of 0001-BOARD-A) || die "board A not on the host side"
    bus=$(cat "/sys/bus/usb/devices/$p/busnum")
    dev=$(cat "/sys/bus/usb/devices/$p/devnum")

    # man-db's dpkg trigger rebuilds the whole man database: minutes under
    # TCG for nothing this scenario checks. (The guest's /var is an overlay.)
    rm -f /var/lib/man-db/auto-update
    # virtme-ng bind-mounts some account files into the guest; systemd-sysusers
    # replaces them by rename(2), which fails with EBUSY on a mount point. Put
    # their contents back as plain files (the guest's /etc is an overlay).
    local f
    for f in /etc/passwd /etc/group /etc/shadow /etc/gshadow; do
        if grep -q " $f " /proc/self/mounts; then
            cp "$f" "$LOCAL/${f##*/}" && umount "$f" && cat "$LOCAL/${f##*/}" > "$f"
        fi
    done
    out=$(bash "$STAGE/guest-check.sh" "$STAGE/usb9pfsd.deb" "$bus" "$dev" 2>&1) || rc=$?
    printf '%s\n' "$out" >> "$SC_OUT/guest.log"
    if [ "$rc" -eq 0 ]; then
        ok "package installed; its udev rule gives the board to group usb9pfsd ($(printf '%s\n' "$out" | tail -n1))"
    else
        die "guest-check.sh: $(printf '%s\n' "$out" | grep '^FAIL' | head -n3 | tr '\n' ' ')"
    fi
    [ -r "$STAGE/build-id" ] || die "no build id staged with the package (tests/vm/run writes it)"
    local RIG_BUILD_ID="" RIG_DEB_BIN_SHA=""
    . "$STAGE/build-id"
    expect_eq "the installed /usr/bin/usb9pfsd is this build (GNU build id)" "$RIG_BUILD_ID" \
        "$(readelf -n /usr/bin/usb9pfsd 2>/dev/null | sed -n 's/^ *Build ID: *//p' | head -n1)"

    # Edit the installed config as a user would.
    printf '[[board]]\nserial = "0001-BOARD-A"\nbackend = "127.0.0.1:5640"\n' > /etc/usb9pfsd/config.toml
    expect "the installed binary accepts the edited config" /usr/bin/usb9pfsd check-config /etc/usb9pfsd/config.toml
    setpriv --reuid=usb9pfsd --regid=usb9pfsd --init-groups \
        /usr/bin/usb9pfsd -v run --config /etc/usb9pfsd/config.toml >>"$SC_OUT/usb9pfsd.log" 2>&1 &
    FWD_PID=$!
    wait_until 30 grep -q "claimed the usb9pfs interface" "$SC_OUT/usb9pfsd.log" \
        || die "installed usb9pfsd did not claim the board: $(tail -n5 "$SC_OUT/usb9pfsd.log" | tr '\n' ' ')"
    uid=$(awk '/^Uid:/ {print $2}' "/proc/$FWD_PID/status")
    expect_eq "the daemon runs as user usb9pfsd, not root" "$(id -u usb9pfsd)" "$uid"
    expect_not "the daemon's uid is not 0" test "$uid" = 0

    board_mount A "$ex" || die "mount through the installed, unprivileged daemon failed"
    m=${B_MNT[A]}
    expect_eq "4 MiB file read through the unprivileged daemon matches" "$want" \
        "$(timeout -s KILL 120 sha256sum "$m/data.bin" | cut -d' ' -f1)"
    dd if=/dev/urandom of="$LOCAL/up.bin" bs=1M count=1 status=none
    timeout -s KILL 120 cp "$LOCAL/up.bin" "$m/up.bin"
    expect_eq "1 MiB file written through it arrives intact on the server" "$(sha "$LOCAL/up.bin")" "$(sha "$ex/up.bin")"
    board_umount A || die "umount failed"
    ok "umount"
}
