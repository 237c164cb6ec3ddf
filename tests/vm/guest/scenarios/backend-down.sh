# shellcheck shell=bash
# backend-down: diod is killed under a mounted board whose entry turns
# recovery off (recover_window = 0; server-restart.sh covers recovery, which
# is on by default). The board's operations fail promptly (no hang), usb9pfsd stays up, logs an error naming the
# backend and does not spin; after diod is back on the same port a NEW mount
# works without restarting usb9pfsd.
scenario_main() {
    requires_usb9pfsd
    rig_setup 1
    local ex=$EXPORTS/a m be=127.0.0.1:5640
    mkdir -p "$ex"
    diod_start a 5640 "$ex"
    dd if=/dev/urandom of="$ex/data.bin" bs=1M count=1 status=none
    local want; want=$(sha "$ex/data.bin")
    board_create A 0001-BOARD-A 1d6b:0109 rigA dummy_udc.0
    B_BACKEND[A]=$be
    B_CONF[A]='recover_window = 0'
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    board_plug A
    fwd_start
    local pid0=$FWD_PID
    board_mount A "$ex" || die "board A: mount failed"
    m=${B_MNT[A]}
    expect_eq "read before the backend goes away" "$want" "$(timeout -s KILL 60 sha256sum "$m/data.bin" | cut -d' ' -f1)"

    diod_kill a
    local rc t0
    # each op: must fail, must not need the KILL (rc 137), must take < 30 s
    op_fails() {
        local what=$1; shift
        t0=$SECONDS; rc=0
        timeout -s KILL 60 "$@" >/dev/null 2>>"$SC_OUT/guest.log" || rc=$?
        if [ "$rc" -eq 137 ]; then bad "$what hung with the backend down (killed after 60 s)"
        elif [ "$rc" -eq 0 ]; then bad "$what succeeded with the backend down"
        elif [ $((SECONDS - t0)) -ge 30 ]; then bad "$what took $((SECONDS - t0)) s to fail"
        else ok "$what fails (rc=$rc) within $((SECONDS - t0)) s with the backend down"; fi
    }
    op_fails "reading a file" cat "$m/data.bin"
    op_fails "listing the directory" ls -l "$m/"
    op_fails "creating a file" sh -c "echo x > '$m/new-file'"
    expect "usb9pfsd still running with its backend down" kill -0 "$pid0"
    if board_umount A 60; then ok "umount with the backend down"; else die "umount with the backend down failed (board wedged)"; fi
    op_fails "mounting while the backend is down" mount -t 9p -o "trans=usbg,aname=$ex" rigA "$m"
    is_mounted "$m" && { board_umount A 30 || die "stray mount could not be removed"; }

    backend_error_logged() { fwd_log | grep -E '(ERROR|WARN)' | grep -F -- "$be" >/dev/null; }
    wait_until 20 backend_error_logged \
        && ok "usb9pfsd logged an error naming the backend $be" \
        || bad "no ERROR/WARN line naming $be in the usb9pfsd log"

    # back-off: while the backend stays down and nothing asks, the daemon idles
    local c0 c1 l0 l1
    c0=$(awk '{print $14 + $15}' "/proc/$pid0/stat"); l0=$(wc -l < "$SC_OUT/usb9pfsd.log")
    sleep 10
    c1=$(awk '{print $14 + $15}' "/proc/$pid0/stat"); l1=$(wc -l < "$SC_OUT/usb9pfsd.log")
    expect "usb9pfsd does not spin with its backend down ($((c1 - c0)) ticks of CPU in 10 s)" test $((c1 - c0)) -lt 200
    expect "usb9pfsd does not flood its log with the backend down ($((l1 - l0)) lines in 10 s)" test $((l1 - l0)) -lt 50

    diod_start a 5640 "$ex"
    board_mount_retry A "$ex" 30 || die "no new mount within 30 s after the backend came back"
    ok "a new mount works after the backend came back"
    expect_eq "read after the backend came back" "$want" "$(timeout -s KILL 60 sha256sum "$m/data.bin" | cut -d' ' -f1)"
    expect_eq "same usb9pfsd process (not restarted)" "$pid0" "$FWD_PID"
    expect "usb9pfsd still running" kill -0 "$pid0"
    board_umount A || bad "final umount failed"
}
