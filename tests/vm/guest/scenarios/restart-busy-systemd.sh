# shellcheck shell=bash
# restart-busy-systemd: `systemctl restart usb9pfsd` under a real systemd
# (the rig's systemd guest: Debian 12, systemd 252 as PID 1) while one
# board's request waits for a server that stopped answering (issue 20,
# review finding 2; `restart-busy` proves the same with tools/fake-systemd.py).
#
# The package is installed from the freshly built .deb; /etc/usb9pfsd/config.toml
# maps board A to diod a and board B to diod b; udev starts the service.
# Both boards mount. Diod a is stopped (SIGSTOP) with a request of A's in
# it; board B streams a checksummed file. Then `systemctl restart`.
# Expected: B keeps its session (same mount, no new server session, every
# read's checksum right, `status` of the new daemon says handed over); only
# A's request fails, with EIO, and A mounts again afterwards; the journal
# (journalctl -u usb9pfsd) names the board whose session was kept and the
# one that was busy. Before the fix one busy board called the whole
# hand-over off, and B lost its session too.
#
# Also the control socket's admin group under the installed package: a user
# in groups usb9pfsd and usb9pfsd-admin may `usb9pfsd reload`, a user in
# usb9pfsd alone may read `status` but is refused `reload`.

# sysguest_prepare, sysguest_install, sysguest_require, unit_prop, is_active,
# status_is, note, save_journal (its scenario_main is replaced below)
# shellcheck source=systemd.sh
. "$RIG_VM/guest/scenarios/systemd.sh"

SERIAL_A=0001-BOARD-A
SERIAL_B=0002-BOARD-B

# json_field SERIAL FIELD: one field of a board in `usb9pfsd status --json`
# on stdin, as JSON text ("true", "\"idle\"", ...); nothing if absent. The
# systemd guest has no python3: this relies on the pretty-printed report,
# one field a line, a board's "serial" before its other fields.
json_field() {
    awk -v s="$1" -v f="$2" '
        /^ *"serial": / { cur = $0; sub(/^ *"serial": *"/, "", cur); sub(/",?$/, "", cur) }
        cur == s && $0 ~ "^ *\"" f "\": " { v = $0; sub("^ *\"" f "\": *", "", v); sub(/,$/, "", v); print v; exit }'
}
# board_field SERIAL FIELD: json_field of the running daemon's status.
board_field() { timeout -s KILL 30 usb9pfsd status --json 2>/dev/null | json_field "$1" "$2"; }
# status_block SERIAL: a board's line of the `usb9pfsd status` table on
# stdin and the indented lines under it.
status_block() { awk -v s="$1" '/^[^ ]/ { on = ($1 == s) } on'; }
# block_has SERIAL TEXT FILE: that board's part of the table in FILE has TEXT.
block_has() { status_block "$1" <"$3" | grep -qF -- "$2"; }
board_is() { [ "$(board_field "$1" state)" = "\"$2\"" ]; }
# journal_count SERIAL TEXT: lines of the unit's journal with the board's
# serial field that contain TEXT.
journal_count() {
    journalctl -u usb9pfsd.service "BOARD_SERIAL=$1" -o cat --no-pager 2>/dev/null | grep -cF -- "$2" || true
}
unit_log() { journalctl -u usb9pfsd.service -o cat --no-pager 2>/dev/null; }
# reloaded_since N: the journal has more than N "config reloaded" lines.
reloaded_since() { [ "$(unit_log | grep -c 'config reloaded' || true)" -gt "$1" ]; }
# as_user USER CMD...: CMD with USER's uid, gid and groups (as a login would).
as_user() { local u=$1; shift; setpriv --reuid="$u" --regid="$u" --init-groups "$@"; }

# admin_group_checks: who may reload the service's daemon over its control
# socket, with the groups the package made.
admin_group_checks() {
    local out rc reloads
    if getent group usb9pfsd-admin >/dev/null; then ok "the package made group usb9pfsd-admin ($(getent group usb9pfsd-admin))"
    else bad "the package did not make group usb9pfsd-admin"; fi
    useradd -M -s /usr/sbin/nologin -G usb9pfsd rigviewer 2>>"$SC_OUT/guest.log" \
        || die "rig setup: useradd rigviewer (group usb9pfsd) failed"
    useradd -M -s /usr/sbin/nologin -G usb9pfsd,usb9pfsd-admin rigadmin 2>>"$SC_OUT/guest.log" \
        || bad "useradd rigadmin -G usb9pfsd,usb9pfsd-admin failed (no group usb9pfsd-admin?)"
    reloads=$(unit_log | grep -c 'config reloaded' || true)

    rc=0; out=$(as_user rigviewer timeout -s KILL 30 usb9pfsd status 2>&1) || rc=$?
    expect_eq "a user in group usb9pfsd only may read status (rc 0, board $SERIAL_B listed)" "0 1" \
        "$rc $(printf '%s\n' "$out" | grep -c "^$SERIAL_B ")"
    rc=0; out=$(as_user rigviewer timeout -s KILL 30 usb9pfsd reload 2>&1) || rc=$?
    log "reload as rigviewer: rc=$rc: $out"
    expect_not "a user in group usb9pfsd only is refused reload (rc $rc)" test "$rc" -eq 0
    expect "... and told why: permission denied, group usb9pfsd-admin" \
        sh -c "printf '%s' \"\$1\" | grep -q 'permission denied' && printf '%s' \"\$1\" | grep -q usb9pfsd-admin" _ "$out"
    expect_eq "... and the daemon did not reload" "$reloads" "$(unit_log | grep -c 'config reloaded' || true)"

    rc=0; out=$(as_user rigadmin timeout -s KILL 30 usb9pfsd reload 2>&1) || rc=$?
    log "reload as rigadmin: rc=$rc: $out"
    expect_eq "a user in groups usb9pfsd and usb9pfsd-admin may reload (rc 0)" 0 "$rc"
    if wait_until 10 reloaded_since "$reloads"; then
        ok "... and the daemon reloaded (its journal says so)"
    else bad "... the daemon's journal shows no reload after the admin's"; fi
}

scenario_main() {
    requires_usb9pfsd
    sysguest_require
    sysguest_prepare
    rig_setup 2
    local exa=$EXPORTS/a exb=$EXPORTS/b want_b pid0 pid1 busa busb cur rc st said t0 b_sessions0
    mkdir -p "$exa" "$exb"
    diod_start a 5640 "$exa"
    diod_start b 5641 "$exb"
    echo "board A's note" > "$exa/note"
    dd if=/dev/urandom of="$exb/stream.bin" bs=1M count=4 status=none
    want_b=$(sha "$exb/stream.bin")

    sysguest_install
    printf '[[board]]\nserial = "%s"\nbackend = "127.0.0.1:5640"\n\n[[board]]\nserial = "%s"\nbackend = "127.0.0.1:5641"\n' \
        "$SERIAL_A" "$SERIAL_B" > /etc/usb9pfsd/config.toml
    rig_guard "the installed binary accepts the two-board config" /usr/bin/usb9pfsd check-config /etc/usb9pfsd/config.toml
    board_create A "$SERIAL_A" 1d6b:0109 rigA dummy_udc.0
    board_create B "$SERIAL_B" 1d6b:0109 rigB dummy_udc.1
    board_plug A
    board_plug B
    wait_until 60 is_active || { save_journal; die "boards plugged: usb9pfsd.service not active after 60 s"; }
    if wait_until 30 status_is "serving 2 board(s)"; then ok "udev started the service, which serves both boards: '$(unit_prop StatusText)'"
    else save_journal; die "StatusText does not report 2 served boards: '$(unit_prop StatusText)'"; fi
    busa=$(busaddr_re "$SERIAL_A") || die "board A not on the host side"
    busb=$(busaddr_re "$SERIAL_B") || die "board B not on the host side"

    admin_group_checks

    board_mount_retry A "$exa" 60 || { save_journal; die "board A: mount through the service failed"; }
    board_mount_retry B "$exb" 60 || { save_journal; die "board B: mount through the service failed"; }
    expect_eq "board B reads its file before the restart" "$want_b" "$(board_sha B stream.bin)"
    b_sessions0=$(journal_count "$SERIAL_B" 'new 9P session with the server')
    pid0=$(unit_prop MainPID)

    # A's server stops answering with a request of A's in it.
    kill -STOP "${DIOD_PID[a]}"
    local astat=$LOCAL/a-stat.txt reader
    ( timeout -s KILL 180 cat "${B_MNT[A]}/note" >"$astat" 2>&1; echo "rc=$?" >>"$astat" ) &
    reader=$!
    wait_until 20 board_is "$SERIAL_A" forwarding \
        || bad "board A's request did not reach its server (A's state: $(board_field "$SERIAL_A" state))"
    # B streams its file across the restart.
    stream_start "${B_MNT[B]}/stream.bin"
    wait_until 120 test -s "$LOCAL/stream.sums" || bad "board B: no read finished before the restart"

    cur=$(journalctl -u usb9pfsd.service -n 0 --show-cursor --no-pager 2>/dev/null | sed -n 's/^-- cursor: //p')
    t0=$(date +%s.%N)
    rc=0; timeout 180 systemctl restart usb9pfsd.service >>"$SC_OUT/guest.log" 2>&1 || rc=$?
    note restart_s "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
    expect_eq "systemctl restart usb9pfsd succeeds with A stuck and B streaming" 0 "$rc"
    kill -CONT "${DIOD_PID[a]}"
    wait "$reader" 2>/dev/null || true
    log "board A's request across the restart: $(tr '\n' ' ' <"$astat")"
    expect "board A's request, stuck in its stopped server, failed with EIO instead of hanging" \
        sh -c "grep -q 'Input/output error' '$astat' && ! grep -q '^rc=0$' '$astat'"
    stream_stop_check "board B streaming across the restart" "$want_b" 2
    expect "after restart: active again" is_active
    pid1=$(unit_prop MainPID)
    expect_not "after restart: a new main process" test "$pid1" = "$pid0"

    # What the journal says about the restart (only its lines since).
    journalctl -u usb9pfsd.service ${cur:+--after-cursor="$cur"} -o cat --no-pager > "$SC_OUT/journal-restart.txt" 2>&1 || true
    expect "journal: the old daemon left B's session (${busb}#0), only B's, in systemd's store" \
        grep -Eq "left 1 board session\(s\) in systemd's descriptor store for the next start: ${busb}#0\$" "$SC_OUT/journal-restart.txt"
    expect "journal: the old daemon names A (${busa}#0) as still waiting for its server" \
        grep -Eq "board\(s\) ${busa}#0 were still waiting for their server" "$SC_OUT/journal-restart.txt"
    expect "journal: the new daemon took over one board and names B's session as kept" \
        grep -Eq "taking over 1 board\(s\) from the previous usb9pfsd; live 9P sessions kept: ${busb}#0\$" "$SC_OUT/journal-restart.txt"
    expect "journal: the new daemon says A's session was lost (busy past the deadline)" \
        grep -Eq "board ${busa}#0 was busy past the hand-over deadline" "$SC_OUT/journal-restart.txt"

    expect_eq "board B reads its file after the restart (same mount)" "$want_b" "$(board_sha B stream.bin)"
    expect_eq "board B kept its session (no new server session in the journal)" "$b_sessions0" \
        "$(journal_count "$SERIAL_B" 'new 9P session with the server')"
    st=$(timeout -s KILL 60 usb9pfsd status --json 2>&1)
    printf '%s\n' "$st" > "$SC_OUT/status-after.json"
    timeout -s KILL 60 usb9pfsd status > "$SC_OUT/status-after.txt" 2>&1 || true
    said="$(printf '%s\n' "$st" | json_field "$SERIAL_B" session_handed_over) $(printf '%s\n' "$st" | json_field "$SERIAL_A" session_handed_over)"
    expect_eq "status --json of the new daemon: B's session handed over, A's not" "true false" "$said"
    expect "status --json: A's last error says why its session was lost" \
        sh -c "printf '%s\n' \"\$1\" | grep -q 'previous usb9pfsd stopped while a request of this board waited for its server'" _ "$(printf '%s\n' "$st" | json_field "$SERIAL_A" last_error)"
    expect "status table: under B, its session was kept across the restart" \
        block_has "$SERIAL_B" 'kept across the last usb9pfsd restart (handed over)' "$SC_OUT/status-after.txt"
    expect_not "status table: not under A" \
        block_has "$SERIAL_A" 'kept across the last usb9pfsd restart' "$SC_OUT/status-after.txt"

    # A mounts again and is served by the new daemon.
    board_umount A 60 || true
    board_mount_retry A "$exa" 60 || bad "board A: mount after the restart failed"
    expect_eq "board A reads its note after mounting again" "board A's note" "$(timeout -s KILL 60 cat "${B_MNT[A]}/note")"
    expect_eq "the new daemon serves both boards: StatusText" "serving 2 board(s)" "$(unit_prop StatusText | cut -c1-18)"
    expect_eq "systemd restarted nothing by itself (NRestarts)" 0 "$(unit_prop NRestarts)"

    board_umount A 60 || log "board A: umount failed"
    board_umount B 60 || log "board B: umount failed"
    save_journal
}
