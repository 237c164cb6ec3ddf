# shellcheck shell=bash
# handover: a board whose 9P mount streams data never notices the daemon
# being replaced or reconfigured. Board A reads a checksummed 16 MiB file and
# walks a tree in a loop while usb9pfsd is re-executed in place twice (once by
# SIGUSR2, once by `usb9pfsd reexec`: same PID), reloaded with a changed
# mapping for board B, and restarted twice through a service manager's
# descriptor store (the rig's tools/fake-systemd.py standing in for systemd
# 252's FDSTORE=1 / LISTEN_FDS, since this guest has no systemd as PID 1).
# Every read matches its checksum, no request fails, no board remounts; board
# B keeps its live session on its old server and moves to the new one at its
# next mount.
scenario_main() {
    requires_usb9pfsd
    rig_setup 2
    local exa=$EXPORTS/a exb=$EXPORTS/b exc=$EXPORTS/c i
    mkdir -p "$exa/tree" "$exb" "$exc"
    diod_start a 5640 "$exa"
    diod_start b 5641 "$exb"
    diod_start c 5642 "$exc"
    echo "board B's new server" > "$exc/note"
    dd if=/dev/urandom of="$exa/big.bin" bs=1M count=16 status=none
    local want; want=$(sha "$exa/big.bin")
    for i in $(seq 1 40); do mkdir -p "$exa/tree/d$((i % 8))"; echo "$i" > "$exa/tree/d$((i % 8))/f$i"; done
    local tree_want; tree_want=$(cd "$exa/tree" && find . -printf '%y %s %p\n' | sort | sha256sum | cut -d' ' -f1)
    echo "board B's note" > "$exb/note"

    board_create A 0001-BOARD-A 1d6b:0109 rigA dummy_udc.0
    board_create B 0002-BOARD-B 1d6b:0109 rigB dummy_udc.1
    B_BACKEND[A]=127.0.0.1:5640
    B_BACKEND[B]=127.0.0.1:5641
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    board_plug A
    board_plug B

    # The daemon runs under the stand-in service manager.
    local pidfile=$LOCAL/daemon.pid events=$SC_OUT/systemd-events.txt
    NO_COLOR=1 python3 "$RIG_VM/guest/tools/fake-systemd.py" "$LOCAL/notify.sock" "$pidfile" "$events" -- \
        "$USB9PFSD" run --config "$FWD_CONFIG" --control-socket "$LOCAL/control" -v >>"$SC_OUT/usb9pfsd.log" 2>&1 &
    FWD_PID=$!
    wait_until 20 test -s "$pidfile" || die "the daemon did not start under fake-systemd"
    # The daemon's PID as the process table shows it now: the service
    # manager's one child. (fake-systemd.py writes its pidfile only when it
    # starts a process, so the file cannot see an exec that forked instead.)
    daemon_pid() { pgrep -P "$FWD_PID" | head -n 1; }
    # The PID of the process that answers on the control socket now.
    answering_pid() {
        timeout -s KILL 60 "$USB9PFSD" status --json --socket "$LOCAL/control" \
            | python3 -c 'import json, sys; print(json.load(sys.stdin)["daemon"]["pid"])'
    }
    wait_until 20 sh -c "[ -n \"\$(pgrep -P $FWD_PID)\" ]" || die "rig setup: fake-systemd.py has no child process"
    [ "$(daemon_pid)" = "$(cat "$pidfile")" ] || die "rig setup: fake-systemd.py's child $(daemon_pid) is not the PID it recorded ($(cat "$pidfile"))"
    board_mount A "$exa" || die "board A: mount failed"
    board_mount B "$exb" || die "board B: mount failed"
    local ma=${B_MNT[A]} mb=${B_MNT[B]}
    local sessions0; sessions0=$(grep -c 'new 9P session with the server' "$SC_OUT/usb9pfsd.log")

    # Board A's load: read + walk in a loop until told to stop.
    local load=$LOCAL/load.txt stopfile=$LOCAL/stop-load
    (
        n=0
        while [ ! -e "$stopfile" ]; do
            n=$((n + 1))
            s=$(timeout -s KILL 300 sha256sum "$ma/big.bin" 2>&1) || echo "ERROR read $n: $s"
            echo "sum $n ${s%% *}"
            t=$(cd "$ma/tree" && timeout -s KILL 120 find . -printf '%y %s %p\n' 2>&1 | sort | sha256sum | cut -d' ' -f1)
            echo "tree $n $t"
        done
        echo "done $n"
    ) > "$load" 2>&1 &
    local loader=$!
    wait_until 120 grep -q '^sum 1 ' "$load" || bad "the first 16 MiB read through board A did not finish"

    # when each board's session began, as status says (serial order)
    started_at() {
        timeout -s KILL 60 "$USB9PFSD" status --json --socket "$LOCAL/control" | python3 -c '
import json, sys
print(" ".join(str(b["session_started_at"]) for b in sorted(json.load(sys.stdin)["boards"], key=lambda b: b["serial"] or "")))'
    }
    local began0; began0=$(started_at)
    log "sessions began: $began0"
    case $began0 in *None*|"") bad "status shows no session start for a mounted board: $began0" ;; esac

    # Two re-executions in place: by signal, and by the command a package
    # upgrade runs.
    local pid0; pid0=$(daemon_pid)
    for i in 1 2; do
        local before; before=$(grep -c 'taking over .* board' "$SC_OUT/usb9pfsd.log")
        if [ "$i" -eq 1 ]; then
            kill -USR2 "$pid0"
        else
            local said; said=$(timeout -s KILL 60 "$USB9PFSD" reexec --socket "$LOCAL/control" 2>&1)
            log "usb9pfsd reexec: $said"
            expect_eq "usb9pfsd reexec reports both boards handed over" \
                "usb9pfsd re-executed in place; 2 board session(s) handed over" "$said"
        fi
        wait_until 60 sh -c "[ \$(grep -c 'taking over .* board' '$SC_OUT/usb9pfsd.log') -gt $before ]" \
            || bad "re-exec #$i: the new image did not report taking over the boards"
        expect_eq "re-exec #$i keeps the PID: the service manager's child is still pid $pid0 (systemd keeps tracking it)" "$pid0" "$(daemon_pid)"
        expect_eq "re-exec #$i: the process answering on the control socket is pid $pid0" "$pid0" "$(answering_pid)"
        expect "re-exec #$i: the process is still there" kill -0 "$pid0"
        local n0; n0=$(grep -c '^sum ' "$load")
        wait_until 120 sh -c "[ \$(grep -c '^sum ' '$load') -gt $n0 ]" || bad "re-exec #$i: board A's reads stopped"
    done
    expect "both re-executions took over 2 boards" sh -c "[ \$(grep -c 'taking over 2 board' '$SC_OUT/usb9pfsd.log') -ge 2 ]"

    # A reload moves board B to another server; its live session stays.
    B_BACKEND[B]=127.0.0.1:5642
    fwd_write_config "$FWD_CONFIG"
    local said; said=$(timeout -s KILL 60 "$USB9PFSD" reload --socket "$LOCAL/control" 2>&1) || bad "usb9pfsd reload failed: $said"
    log "usb9pfsd reload: $said"
    local st; st=$(timeout -s KILL 60 "$USB9PFSD" status --json --socket "$LOCAL/control")
    expect_eq "status shows board B's pending move to its new server" "127.0.0.1:5642" \
        "$(printf '%s' "$st" | python3 -c 'import json,sys; print([b["backend_pending"] for b in json.load(sys.stdin)["boards"] if b["serial"]=="0002-BOARD-B"][0])')"
    expect_eq "board B's live session still reads its old server" "board B's note" "$(timeout -s KILL 60 cat "$mb/note")"

    # Two restarts through the descriptor store.
    for i in 1 2; do
        local old; old=$(daemon_pid)
        kill -USR1 "$FWD_PID"
        wait_until 60 sh -c "p=\$(pgrep -P $FWD_PID); [ -n \"\$p\" ] && [ \"\$p\" != '$old' ]" || bad "restart #$i: no new daemon started"
        wait_until 60 sh -c "[ \$(grep -c 'taking over 2 board' '$SC_OUT/usb9pfsd.log') -ge $((2 + i)) ]" \
            || bad "restart #$i: the new daemon did not take over both boards"
        local n0; n0=$(grep -c '^sum ' "$load")
        wait_until 120 sh -c "[ \$(grep -c '^sum ' '$load') -gt $n0 ]" || bad "restart #$i: board A's reads stopped"
    done
    expect "the restarts passed the sessions through the store (usb + srv + state)" \
        grep -qE 'START pid=[0-9]+ fds=5 ' "$events"
    expect "the new daemon emptied the store once it held the descriptors" grep -q 'FDSTOREREMOVE usb9pfsd-state' "$events"
    expect_eq "status still says when each board's session began (2 re-execs, 2 restarts later)" "$began0" "$(started_at)"

    touch "$stopfile"
    wait "$loader" 2>/dev/null || true
    local reads bad_sums bad_trees errors
    reads=$(grep -c '^sum ' "$load")
    bad_sums=$(grep '^sum ' "$load" | grep -vc " $want\$" || true)
    bad_trees=$(grep '^tree ' "$load" | grep -vc " $tree_want\$" || true)
    errors=$(grep -c '^ERROR' "$load" || true)
    log "board A: $reads reads of 16 MiB across 2 re-execs and 2 restarts"
    expect "board A read the 16 MiB file at least 4 times meanwhile" test "$reads" -ge 4
    expect_eq "every 16 MiB read through board A matched the server's sha256" 0 "$bad_sums"
    expect_eq "every tree walk through board A matched the server" 0 "$bad_trees"
    expect_eq "no read through board A failed" 0 "$errors"
    expect_eq "board B's mount still reads its old server after the restarts" "board B's note" "$(timeout -s KILL 60 cat "$mb/note")"
    echo "written after the hand-overs" | timeout -s KILL 60 tee "$mb/after" >/dev/null
    expect_eq "board B writes after the hand-overs" "written after the hand-overs" "$(cat "$exb/after" 2>/dev/null)"
    expect_eq "no new server session was opened (the boards never remounted)" "$sessions0" \
        "$(grep -c 'new 9P session with the server' "$SC_OUT/usb9pfsd.log")"
    # B's next mount goes to the server the reload gave it.
    board_umount B || bad "umount of board B failed"
    board_mount B "$exc" || bad "board B: mount on its new server failed"
    expect_eq "board B's next mount reads its new server" "board B's new server" "$(timeout -s KILL 60 cat "$mb/note")"
    expect_not "the board side logged no 9P error" \
        sh -c "dmesg | grep -iE '9pnet|usb9pfs' | grep -v 'module verification' | grep -iE 'error|fail'"
    expect_not "no worker failed" grep -q 'worker stopped:' "$SC_OUT/usb9pfsd.log"

    board_umount A || bad "umount of board A failed"
    board_umount B || bad "umount of board B failed"
    kill -TERM "$FWD_PID" 2>/dev/null || true
    wait "$FWD_PID" 2>/dev/null || true
    FWD_PID=""
}
