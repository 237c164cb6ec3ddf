# shellcheck shell=bash
# server-restart: a board keeps its session while its 9P server restarts
# (issue 19). Board A's diod is SIGKILLed and started again RESTARTS times
# while the board streams checksummed reads, writes checksummed files, holds
# an open descriptor mid-file, holds a POSIX lock and lists a directory:
# nothing fails, every checksum matches, the mount is the same (no remount),
# the lock is held on the server again after each restart. A file replaced
# on the server while it was down fails on the board's old descriptor (never
# the new content) and a fresh open sees the new file. Board B on another
# server is unaffected. A re-exec of usb9pfsd between two restarts keeps the
# session recoverable. A server down longer than the board's recover_window
# gives EIO, and the board mounts again once it is back. Board C's server
# comes back offering a smaller msize (tests/vm/board-sim/fake9p.py
# small-msize in front of diod c): its recovery is refused at once, EIO.

RESTARTS=${RESTARTS:-3}
WINDOW=${WINDOW:-20}

# lock_seen_on_server FILE: a process on the server's side cannot take the
# lock the board holds (prints how it was refused).
lock_seen_on_server() {
    python3 - "$1" <<'EOF'
import fcntl, sys
with open(sys.argv[1], "r+") as f:
    for name, take in (("flock", lambda: fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)),
                       ("posix", lambda: fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB))):
        try:
            take()
        except OSError:
            print(name)
            sys.exit(0)
sys.exit(1)
EOF
}

# hold SCRIPT-ARGS: a board-side python process that opens files, reads or
# locks, and waits for $LOCAL/go-NAME before its second half.
hold() {
    python3 -u - "$@" <<'EOF' >>"$SC_OUT/holders.log" 2>&1 &
import fcntl, hashlib, os, sys, time
kind, path, name, out = sys.argv[1:5]
go = os.path.join(os.path.dirname(out), "go-" + name)
f = open(path, "r+b" if kind == "lock" else "rb")
if kind == "lock":
    fcntl.lockf(f, fcntl.LOCK_EX)
    open(out + ".ready", "w").close()
    while not os.path.exists(go):
        time.sleep(0.2)
    f.seek(0)
    print("%s: lock held across the restarts; file reads %r" % (name, f.read(40)))
    open(out, "w").write("ok\n")
    sys.exit(0)
h = hashlib.sha256()
h.update(f.read(1 << 20))
open(out + ".ready", "w").close()
while not os.path.exists(go):
    time.sleep(0.2)
try:
    while True:
        b = f.read(65536)
        if not b:
            break
        h.update(b)
    open(out, "w").write(h.hexdigest() + "\n")
except OSError as e:
    open(out, "w").write("error %d %s\n" % (e.errno, os.strerror(e.errno)))
EOF
}

# A's workload between restarts: reads, writes, listings; every failure
# and every wrong checksum is counted in $LOCAL/load-errors.
workload() {
    local m=${B_MNT[A]} i=0
    : > "$LOCAL/load-errors"
    while [ ! -e "$LOCAL/stop-load" ]; do
        i=$((i + 1))
        s=$(timeout -s KILL 120 sha256sum "$m/stream.bin" 2>>"$SC_OUT/load.log" | cut -d' ' -f1)
        [ "$s" = "$WANT_STREAM" ] || echo "read $i: ${s:-failed}" >> "$LOCAL/load-errors"
        timeout -s KILL 120 cp "$LOCAL/src.bin" "$m/w-$i.bin" 2>>"$SC_OUT/load.log" || echo "write $i failed" >> "$LOCAL/load-errors"
        n=$(timeout -s KILL 120 ls "$m/dir" 2>>"$SC_OUT/load.log" | wc -l)
        [ "$n" = 200 ] || echo "listing $i: $n entries" >> "$LOCAL/load-errors"
        echo "$i" > "$LOCAL/load-rounds"
    done
}

restart_a() {
    diod_kill a
    sleep "${1:-1}"
    diod_start a 5640 "$EXPORTS/a"
}

scenario_main() {
    requires_usb9pfsd
    rig_setup 3
    local exa=$EXPORTS/a exb=$EXPORTS/b exc=$EXPORTS/c ma r
    mkdir -p "$exa/dir" "$exb" "$exc"
    diod_start a 5640 "$exa"
    diod_start b 5641 "$exb"
    diod_start c 5643 "$exc"
    echo proxy > "$LOCAL/fake9p.mode"
    python3 -u "$FAKE9P_PY" --listen 5642 --upstream 5643 --control "$LOCAL/fake9p.mode" >>"$SC_OUT/fake9p.log" 2>&1 &
    wait_until 20 port_listening 5642 || die "fake9p did not listen on 5642"
    dd if=/dev/urandom of="$exa/stream.bin" bs=1M count=4 status=none
    WANT_STREAM=$(sha "$exa/stream.bin")
    dd if=/dev/urandom of="$exa/held.bin" bs=1M count=3 status=none
    local want_held; want_held=$(sha "$exa/held.bin")
    dd if=/dev/urandom of="$LOCAL/src.bin" bs=256k count=1 status=none
    local want_src; want_src=$(sha "$LOCAL/src.bin")
    for i in $(seq 1 200); do echo "$i" > "$exa/dir/f$i"; done
    echo "the old file" > "$exa/replaced.txt"
    echo "lock me" > "$exa/locked.txt"
    dd if=/dev/urandom of="$exb/stream.bin" bs=1M count=4 status=none
    local want_b; want_b=$(sha "$exb/stream.bin")
    echo "board C's note" > "$exc/note"

    board_create A 0001-BOARD-A 1d6b:0109 rigA dummy_udc.0
    board_create B 0002-BOARD-B 1d6b:0109 rigB dummy_udc.1
    board_create C 0003-BOARD-C 1d6b:0109 rigC dummy_udc.2
    B_BACKEND[A]=127.0.0.1:5640
    B_CONF[A]="recover_window = $WINDOW"
    B_BACKEND[B]=127.0.0.1:5641
    B_BACKEND[C]=127.0.0.1:5642
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    board_plug A
    board_plug B
    board_plug C
    fwd_start
    board_mount A "$exa" || die "board A: mount failed"
    board_mount B "$exb" || die "board B: mount failed"
    board_mount C "$exc" || die "board C: mount failed"
    ma=${B_MNT[A]}
    local mount_before; mount_before=$(grep -F " $ma " /proc/mounts)
    local pid0=$FWD_PID

    # Holders: an open descriptor mid-file, a lock, a file to be replaced.
    hold read "$ma/held.bin" held "$LOCAL/held.out"
    hold lock "$ma/locked.txt" lock "$LOCAL/lock.out"
    hold read "$ma/replaced.txt" replaced "$LOCAL/replaced.out"
    wait_until 60 sh -c "test -e '$LOCAL/held.out.ready' && test -e '$LOCAL/lock.out.ready' && test -e '$LOCAL/replaced.out.ready'" \
        || die "the board-side holders did not start (see holders.log)"
    r=$(lock_seen_on_server "$exa/locked.txt") || die "the board's lock is not visible on the server: nothing to check after a restart"
    ok "the board's lock is held on the server (a server-side $r lock is refused)"

    workload &
    local load=$!
    wait_until 60 test -s "$LOCAL/load-rounds" || bad "the workload did not complete a round before the restarts"
    for i in $(seq 1 "$RESTARTS"); do
        local rounds; rounds=$(cat "$LOCAL/load-rounds" 2>/dev/null || echo 0)
        if [ "$i" = 1 ]; then
            # replaced the way editors do it, while the server is down
            diod_kill a
            echo "the NEW file" > "$exa/replaced.txt.new"
            mv "$exa/replaced.txt.new" "$exa/replaced.txt"
            sleep 1
            diod_start a 5640 "$exa"
        elif [ "$i" = 2 ]; then
            # usb9pfsd re-executes itself between two restarts
            timeout -s KILL 60 "$USB9PFSD" reexec >>"$SC_OUT/guest.log" 2>&1 || bad "usb9pfsd reexec failed"
            restart_a 2
        else
            restart_a 1
        fi
        wait_until 120 sh -c "[ \"\$(cat '$LOCAL/load-rounds')\" -gt $((rounds + 1)) ]" \
            || bad "restart $i: the workload made no progress for 120 s"
        r=$(lock_seen_on_server "$exa/locked.txt") \
            && ok "restart $i: the board's lock is held on the server again ($r)" \
            || bad "restart $i: the board's lock was not taken again"
        log "restart $i done; workload rounds $(cat "$LOCAL/load-rounds")"
    done
    touch "$LOCAL/stop-load"
    wait "$load" 2>/dev/null
    expect_eq "workload across $RESTARTS server restarts: no failed read, write or listing, no wrong checksum" "" "$(head -5 "$LOCAL/load-errors")"
    local bad_w=0 f
    for f in "$exa"/w-*.bin; do [ "$(sha "$f")" = "$want_src" ] || bad_w=$((bad_w + 1)); done
    expect_eq "every file the board wrote has the right checksum on the server ($(ls "$exa"/w-*.bin | wc -l) files)" 0 "$bad_w"
    touch "$LOCAL/go-held" "$LOCAL/go-lock" "$LOCAL/go-replaced"
    wait_until 60 sh -c "test -s '$LOCAL/held.out' && test -s '$LOCAL/lock.out' && test -s '$LOCAL/replaced.out'" || bad "holders did not finish"
    expect_eq "the descriptor held open mid-file across the restarts reads the rest of the file right" "$want_held" "$(cat "$LOCAL/held.out")"
    expect_eq "the lock holder went on" "ok" "$(cat "$LOCAL/lock.out")"
    r=$(cat "$LOCAL/replaced.out")
    case $r in
    error*) ok "the old descriptor of the replaced file fails ($r), never reads the new file" ;;
    *) bad "the old descriptor of the replaced file read something: $r" ;;
    esac
    expect_eq "a fresh open of the replaced file sees the new file" "the NEW file" "$(timeout -s KILL 60 cat "$ma/replaced.txt")"
    expect_eq "board A: the same mount (never remounted)" "$mount_before" "$(grep -F " $ma " /proc/mounts)"
    expect_eq "board A: one server session in the whole scenario (recovered, not remounted)" 1 \
        "$(fwd_log | grep -F 0001-BOARD-A | grep -c 'new 9P session with the server')"
    expect_eq "board B read its file through all of it" "$want_b" "$(board_sha B stream.bin)"
    expect_eq "board B: its session never broke" 0 "$(fwd_log | grep -F 0002-BOARD-B | grep -c 'lost the 9P server session' || true)"

    local st; st=$(timeout -s KILL 60 "$USB9PFSD" status --json)
    printf '%s\n' "$st" > "$SC_OUT/status.json"
    r=$(printf '%s' "$st" | python3 -c '
import json, sys
b = {x["serial"]: x["counters"] for x in json.load(sys.stdin)["boards"]}
a = b["0001-BOARD-A"]
print(a["recoveries"], a["recoverable"], a["last_recovery_fids_replayed"] > 0, b["0002-BOARD-B"]["recoveries"])')
    # restart 1 counted by the old process; status is the new one's since the reexec
    set -- $r
    expect "status: board A recovered after the re-exec too ($1 recoveries since it), still recoverable ($2), fids replayed ($3)" \
        test "$1" -ge $((RESTARTS - 1)) -a "$2" = True -a "$3" = True
    expect_eq "status: board B never needed a recovery" 0 "$4"
    expect "the journal says when a session was lost and when it was recovered, with counts and duration" \
        sh -c "fwd_log() { sed 's/\x1b\[[0-9;]*m//g' '$SC_OUT/usb9pfsd.log'; }; fwd_log | grep -F 0001-BOARD-A | grep -q 'lost the 9P server session' && fwd_log | grep -F 0001-BOARD-A | grep -qE 'recovered the 9P server session in [0-9]+ ms: [0-9]+ fid'"

    # Board C: its server comes back offering a smaller msize.
    echo small-msize > "$LOCAL/fake9p.mode"
    diod_kill c
    diod_start c 5643 "$exc"
    local t0=$SECONDS
    if timeout -s KILL 60 cat "${B_MNT[C]}/note" >/dev/null 2>>"$SC_OUT/guest.log"; then
        bad "board C read through a server that came back with a smaller msize"
    else
        ok "board C: a server back with a smaller msize fails the request ($((SECONDS - t0)) s), no wrong reply"
    fi
    expect "board C: the log says the smaller msize ended recovery" sh -c "sed 's/\x1b\[[0-9;]*m//g' '$SC_OUT/usb9pfsd.log' | grep -F 0003-BOARD-C | grep -q 'smaller than the session'"
    expect "fake9p really answered with the smaller msize" grep -q 'injected small-msize' "$SC_OUT/fake9p.log"

    # A server down past the window: EIO, then a new mount once it is back.
    diod_kill a
    t0=$SECONDS
    if timeout -s KILL $((WINDOW + 60)) cat "$ma/dir/f1" >/dev/null 2>>"$SC_OUT/guest.log"; then
        bad "a read succeeded with the server down past the window"
    else
        local took=$((SECONDS - t0))
        expect "server down past the window: EIO after about recover_window = $WINDOW s (took $took s)" test "$took" -ge $((WINDOW - 2)) -a "$took" -le $((WINDOW + 30))
    fi
    diod_start a 5640 "$exa"
    board_umount A 60 || bad "board A: umount after the window failed"
    board_mount_retry A "$exa" 60 || bad "board A: no new mount once the server was back"
    expect_eq "board A reads again after mounting again" "$WANT_STREAM" "$(board_sha A stream.bin)"
    expect "usb9pfsd never died" kill -0 "$FWD_PID"
    log "usb9pfsd pid $pid0 -> $FWD_PID (re-exec keeps the pid)"
}
