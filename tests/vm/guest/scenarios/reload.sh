# shellcheck shell=bash
# reload: `usb9pfsd reload` and SIGHUP under live sessions, checked through
# `usb9pfsd status --json` and the data itself. Board A's backend moves from
# server a to server c: its live session stays on a (reads and writes keep
# landing there) and its next mount goes to c, on the same worker. Board B's
# mapping does not change: same worker, same session throughout. Board C,
# unmapped at start, is claimed and served after the reload. An invalid
# config is refused with file:line:column, changes nothing and shows in
# `status`; SIGHUP reloads too. Unmapping an idle board marks it for release.
scenario_main() {
    requires_usb9pfsd
    rig_setup 3
    local exa=$EXPORTS/a exb=$EXPORTS/b exc=$EXPORTS/c T="timeout -s KILL 60" out rc
    diod_start a 5640 "$exa"
    diod_start b 5641 "$exb"
    diod_start c 5642 "$exc"
    echo server-a > "$exa/who"
    echo server-b > "$exb/who"
    echo server-c > "$exc/who"
    board_create A 0001-BOARD-A 1d6b:0109 rigA dummy_udc.0
    board_create B 0002-BOARD-B 1d6b:0109 rigB dummy_udc.1
    board_create C 0003-BOARD-C 1d6b:0109 rigC dummy_udc.2
    B_BACKEND[A]=127.0.0.1:5640
    B_BACKEND[B]=127.0.0.1:5641
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    board_plug A
    board_plug B
    board_plug C
    fwd_start
    board_mount A "$exa" || die "mount A"
    board_mount B "$exb" || die "mount B"
    local ma=${B_MNT[A]} mb=${B_MNT[B]} mc=${B_MNT[C]}
    expect_eq "A is served by server a" server-a "$($T cat "$ma/who")"
    expect_eq "B is served by server b" server-b "$($T cat "$mb/who")"

    # st SERIAL PYEXPR: evaluate PYEXPR with b = that board's status object
    # and d = the daemon's (usb9pfsd status --json).
    st() {
        "$USB9PFSD" status --json | python3 -c '
import json, sys
r = json.load(sys.stdin)
d = r["daemon"]
b = next((b for b in r["boards"] if b["serial"] == sys.argv[1]), None)
print(eval(sys.argv[2]))' "$1" "$2"
    }
    expect_eq "status: A forwards to a, one worker, one session" "127.0.0.1:5640 1 1 True" \
        "$(st 0001-BOARD-A 'b["backend"], b["starts"], b["counters"]["sessions"], b["session_started_at"] is not None' | tr -d "(),'")"
    expect_eq "status: C is ignored (unmapped)" ignored "$(st 0003-BOARD-C 'b["state"]')"
    local b_t; b_t=$(st 0002-BOARD-B 'b["counters"]["t_messages"]')

    # --- Reload: A moves to c, B unchanged, C newly mapped to c.
    B_BACKEND[A]=127.0.0.1:5642
    B_BACKEND[C]=127.0.0.1:5642
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    rc=0; out=$("$USB9PFSD" reload 2>&1) || rc=$?
    expect_eq "usb9pfsd reload exits 0" 0 "$rc"
    log "reload: $out"
    expect "reload says what changed" grep -q "1 board(s) unchanged, 1 change backend at their next mount, 1 started" <<<"$out"
    expect_eq "A's live session stays on server a" server-a "$($T cat "$ma/who")"
    echo "after-reload-$RANDOM" > "$LOCAL/tok"
    $T cp "$LOCAL/tok" "$ma/tok"
    expect_eq "A's writes after the reload land on server a" "$(cat "$LOCAL/tok")" "$(cat "$exa/tok" 2>/dev/null)"
    expect "and not on server c" test ! -e "$exc/tok"
    expect_eq "status: A's new backend is pending, same worker" "127.0.0.1:5642 127.0.0.1:5642 1 0" \
        "$(st 0001-BOARD-A 'b["backend"], b["backend_pending"], b["starts"], b["restarts"]' | tr -d "(),'")"
    expect_eq "B's session goes on" server-b "$($T cat "$mb/who")"
    expect_eq "status: B kept its worker and session, nothing pending" "1 1 None False" \
        "$(st 0002-BOARD-B 'b["starts"], b["counters"]["sessions"], b["backend_pending"], b["release_pending"]' | tr -d "(),'")"
    expect "status: B's counters kept counting" test "$(st 0002-BOARD-B 'b["counters"]["t_messages"]')" -gt "$b_t"
    c_served() { [ "$(st 0003-BOARD-C 'b["state"]')" = idle ]; }
    wait_until 20 c_served || bad "C was not claimed after the reload"
    board_mount C "$exc" || die "mount C after the reload"
    expect_eq "C, newly mapped, is served by server c" server-c "$($T cat "$mc/who")"

    # --- A's next mount goes to the new server, on the same worker.
    board_umount A || die "umount A"
    board_mount A "$exc" || die "mount A on the new server"
    expect_eq "A's new session is on server c" server-c "$($T cat "$ma/who")"
    expect_eq "status: A switched, nothing pending, still the first worker" "127.0.0.1:5642 None 1 2" \
        "$(st 0001-BOARD-A 'b["backend"], b["backend_pending"], b["starts"], b["counters"]["sessions"]' | tr -d "(),'")"

    # --- An invalid config changes nothing.
    cp "$FWD_CONFIG" "$LOCAL/good.toml"
    printf '[[board]]\nserial = "0004-X"\nbackend = "nohostport"\n' >> "$FWD_CONFIG"
    local badline; badline=$(grep -n nohostport "$FWD_CONFIG" | cut -d: -f1)
    rc=0; out=$("$USB9PFSD" reload 2>&1) || rc=$?
    expect_eq "usb9pfsd reload of an invalid config exits 1" 1 "$rc"
    expect "the error names file:line:column" grep -q "$FWD_CONFIG:$badline:11:" <<<"$out"
    expect "status shows the failed reload" test "$(st 0001-BOARD-A 'd["last_reload_error"] is not None')" = True
    expect "the log has it too" grep -q "config reload failed, the old config stays in force: $FWD_CONFIG:$badline:11:" <(fwd_log)
    expect_eq "A is still served" server-c "$($T cat "$ma/who")"
    expect_eq "B is still served" server-b "$($T cat "$mb/who")"
    expect_eq "C is still served" server-c "$($T cat "$mc/who")"

    # --- SIGHUP reloads the same file.
    cp "$LOCAL/good.toml" "$FWD_CONFIG"
    kill -HUP "$FWD_PID"
    no_reload_error() { [ "$(st 0001-BOARD-A 'd["last_reload_error"]')" = None ]; }
    if wait_until 20 no_reload_error; then ok "SIGHUP applied the fixed config (status has no reload error)"
    else bad "SIGHUP did not clear the reload error"; fi
    expect "the daemon is still running" fwd_alive

    # --- Unmapping an idle board: released once idle.
    board_umount B || die "umount B"
    unset 'B_BACKEND[B]'
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    rc=0; out=$("$USB9PFSD" reload 2>&1) || rc=$?
    expect_eq "reload unmapping B exits 0" 0 "$rc"
    expect_eq "status: B is released or marked for release, with no backend" True \
        "$(st 0002-BOARD-B '(b["release_pending"] or b["state"] == "ignored") and b["backend"] is None')"
    expect_eq "A is untouched by B's release" server-c "$($T cat "$ma/who")"
    expect_eq "status: 3 boards, A and C on their first worker" "1 1" \
        "$(st 0001-BOARD-A '[x["starts"] for x in r["boards"] if x["serial"] != "0002-BOARD-B"]' | tr -d "[],")"
    expect "forwarder still running" fwd_alive
}
