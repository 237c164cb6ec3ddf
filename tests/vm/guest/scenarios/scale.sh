# shellcheck shell=bash
# scale: eight usb9pfs boards at once (dummy_hcd num=8, one board on each of
# dummy_udc.0..7), each mapped by serial to its own diod, all up and all busy
# for a bounded time (SCALE_LOAD_S seconds). The boards are a mix:
# - six real kernel usb9pfs gadgets (configfs), mounted: each reads a
#   checksummed 2 MiB file and writes a checksummed 1 MiB file in a loop
#   (reads checked against the server's file, writes by hashing what landed
#   in the server's export);
# - two FunctionFS board simulators (tests/vm/board-sim, SCALE_SIMS = their
#   UDC numbers): each runs the simulator's scripted 9P2000.L `session` in a
#   loop (Tversion .. Tread of the same 2 MiB file to EOF .. Tclunk; every
#   reply's type, tag and size checked, the file's sha256 checked per session).
#
# Measured and asserted (heavy mode: tests/vm/run --soak):
# - aggregate MB/s (t_bytes + r_bytes) and 9P messages/s (t_messages), from
#   `usb9pfsd status --json` counters summed over the boards before and after
#   the load; the load moved at least what the boards verified (the kernel
#   boards' payload plus the simulators' bytes read, and at least the
#   simulators' checked requests plus one per msize-sized kernel chunk);
# - the daemon's RSS (VmRSS while busy, VmHWM = its peak) < 16 MiB;
# - its thread count: one worker thread per board on top of the threads it
#   has with no board (asserted: base + 8 .. base + 10);
# - with every board mounted and idle, its CPU time over IDLE_S seconds
#   (utime + stime from /proc/PID/stat) < 1 % of one CPU.
# All numbers go to $SC_OUT/scale-results.txt.
SCALE_N=8
SCALE_SIMS="3 6"     # these UDCs carry a simulator, the others a kernel gadget
SCALE_LOAD_S=${SCALE_LOAD_S:-60}
IDLE_S=10

# is_sim I: board I is a simulator
is_sim() { case " $SCALE_SIMS " in *" $1 "*) return 0 ;; esac; return 1; }

# sum_counters FIELD...: the sums over all boards of counters.FIELD, space-separated
status_json() { timeout -s KILL 30 "$USB9PFSD" status --json --socket "$LOCAL/control"; }
sum_counters() {
    status_json | python3 -c '
import json, sys
b = json.load(sys.stdin)["boards"]
print(" ".join(str(sum(x["counters"][f] for x in b)) for f in sys.argv[1:]))' "$@"
}
# scale_id I: board I's VID:PID; half the boards have another one than
# 1d6b:0109: matched by interface, not by ID
scale_id() { if [ $(($1 % 2)) -eq 0 ]; then echo 1d6b:0109; else echo "1209:000$1"; fi; }
# proc_ticks PID: utime + stime of a process (clock ticks)
proc_ticks() { local s f; s=$(cat "/proc/$1/stat"); s=${s##*) }; read -r -a f <<< "$s"; echo $(( f[11] + f[12] )); }
# vm_kb PID FIELD: a /proc/PID/status memory field in kB
vm_kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }
# ctx_switches PID: voluntary + involuntary context switches over all threads (wake-ups)
ctx_switches() {
    local t n=0 a b
    for t in /proc/"$1"/task/*; do
        a=$(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status" 2>/dev/null) || continue
        b=$(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$t/status" 2>/dev/null) || continue
        n=$(( n + ${a:-0} + ${b:-0} ))
    done
    echo "$n"
}

scenario_main() {
    requires_usb9pfsd
    rig_setup "$SCALE_N"
    local i name id res=$SC_OUT/scale-results.txt names=() boards=() sims=()
    : > "$res"
    # kernel boards are B<udc>, simulators S<udc>
    for i in $(seq 0 $((SCALE_N - 1))); do
        if is_sim "$i"; then name=S$i; sims+=("$name"); else name=B$i; boards+=("$name"); fi
        names+=("$name")
        mkdir -p "$EXPORTS/$name"
        diod_start "$name" $((5640 + i)) "$EXPORTS/$name"
        dd if=/dev/urandom of="$EXPORTS/$name/read.bin" bs=1M count=2 status=none
        if is_sim "$i"; then
            # its gadget is made after the daemon started (sim_spawn below),
            # so that the daemon does not inherit the simulator's FIFOs
            FWD_MAP_SERIAL["000$i-SCALE-$name"]=127.0.0.1:$((5640 + i))
            continue
        fi
        dd if=/dev/urandom of="$LOCAL/write-$name.bin" bs=1M count=1 status=none
        echo "marker-$name" > "$EXPORTS/$name/marker"
        board_create "$name" "000$i-SCALE-$name" "$(scale_id "$i")" "rig$i" "dummy_udc.$i"
        B_BACKEND["$name"]=127.0.0.1:$((5640 + i))
    done
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    log "boards: ${#boards[@]} kernel gadgets (${boards[*]}), ${#sims[@]} simulators (${sims[*]})"

    # The daemon, with a control socket for its counters; measured before any
    # board is plugged (its base thread and fd count).
    NO_COLOR=1 "$USB9PFSD" run --config "$FWD_CONFIG" --control-socket "$LOCAL/control" -v >>"$SC_OUT/usb9pfsd.log" 2>&1 &
    FWD_PID=$!
    wait_until 20 test -S "$LOCAL/control" || die "usb9pfsd did not open its control socket: $(tail -5 "$SC_OUT/usb9pfsd.log" | tr '\n' ' ')"
    sleep 1
    local thr_base fds_base rss_base
    thr_base=$(fwd_threads) fds_base=$(fwd_fds) rss_base=$(vm_kb "$FWD_PID" VmRSS)
    log "usb9pfsd pid $FWD_PID with no board: threads=$thr_base fds=$fds_base VmRSS=${rss_base} kB"
    echo "no board: threads=$thr_base fds=$fds_base VmRSS_kB=$rss_base" >> "$res"

    for name in "${sims[@]}"; do
        i=${name#S}
        sim_spawn "$name" "000$i-SCALE-$name" "$(scale_id "$i")" "dummy_udc.$i"
    done
    for name in "${names[@]}"; do
        case $name in S*) sim_use "$name"; sim_plug ;; *) board_plug "$name" ;; esac
    done
    for name in "${boards[@]}"; do
        board_mount_retry "$name" "$EXPORTS/$name" 60 || die "board $name: mount failed"
    done
    local mounted=0
    for name in "${boards[@]}"; do
        [ "$(timeout -s KILL 60 cat "${B_MNT[$name]}/marker" 2>/dev/null)" != "marker-$name" ] || mounted=$((mounted + 1))
    done
    expect_eq "all ${#boards[@]} kernel boards mounted, each reads its own server's marker" "${#boards[@]}" "$mounted"
    # a simulator's "mount": one checked session; the random file's sha256
    # proves that it reached its own server
    for name in "${sims[@]}"; do
        sim_use "$name"
        SIM_ANAME=$EXPORTS/$name SIM_FILE=read.bin SIM_SHA=$(sha "$EXPORTS/$name/read.bin")
        sim_session "simulator $name: a checked session reads its own server's 2 MiB file"
    done
    local served
    served=$(status_json | python3 -c '
import json, sys
b = json.load(sys.stdin)["boards"]
print(sum(1 for x in b if x["backend"] and x["session_started_at"]))')
    expect_eq "status: $SCALE_N boards with a live server session" "$SCALE_N" "$served"

    # ---- all boards busy for SCALE_LOAD_S seconds
    local c0 c1 t0 t1 hwm=0 rss_max=0 thr_max=0 thr rss pids=()
    c0=$(sum_counters t_messages t_bytes r_bytes)
    t0=$(date +%s.%N)
    local stop_at=$(( $(date +%s) + SCALE_LOAD_S ))
    for name in "${boards[@]}"; do
        (
            m=${B_MNT[$name]} ex=$EXPORTS/$name
            want_r=$(sha "$ex/read.bin") want_w=$(sha "$LOCAL/write-$name.bin")
            n=0
            while [ "$(date +%s)" -lt "$stop_at" ]; do
                n=$((n + 1))
                s=$(timeout -s KILL 120 sha256sum "$m/read.bin" 2>/dev/null | cut -d' ' -f1)
                if [ "$s" = "$want_r" ]; then echo "read-ok $n"; else echo "read-BAD $n got '$s'"; fi
                if timeout -s KILL 120 cp "$LOCAL/write-$name.bin" "$m/w$n.bin" 2>/dev/null \
                    && [ "$(sha "$ex/w$n.bin")" = "$want_w" ]; then echo "write-ok $n"
                else echo "write-BAD $n"; fi
                rm -f "$ex/w$n.bin"
            done
        ) > "$LOCAL/load-$name.txt" 2>&1 &
        pids+=($!)
    done
    for name in "${sims[@]}"; do
        (
            sim_use "$name"
            want=$(sha "$EXPORTS/$name/read.bin")
            n=0
            while [ "$(date +%s)" -lt "$stop_at" ]; do
                n=$((n + 1))
                if sim_cmd 150 session "$EXPORTS/$name" read.bin "$want"; then echo "session-ok $n $SIM_REPLY"
                else echo "session-BAD $n $SIM_REPLY"; fi
            done
        ) > "$LOCAL/load-$name.txt" 2>&1 &
        pids+=($!)
    done
    # sample the daemon while the boards are busy
    while [ "$(date +%s)" -lt "$stop_at" ]; do
        thr=$(fwd_threads) rss=$(vm_kb "$FWD_PID" VmRSS)
        [ "$thr" -le "$thr_max" ] || thr_max=$thr
        [ "${rss:-0}" -le "$rss_max" ] || rss_max=$rss
        echo "t=$(( SCALE_LOAD_S - stop_at + $(date +%s) )) threads=$thr VmRSS_kB=$rss" >> "$SC_OUT/samples.txt"
        sleep 5
    done
    local p; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    t1=$(date +%s.%N)
    c1=$(sum_counters t_messages t_bytes r_bytes)
    hwm=$(vm_kb "$FWD_PID" VmHWM)

    local reads=0 writes=0 bad_r=0 bad_w=0 sessions=0 bad_s=0 sim_msgs=0 sim_bytes=0 per=""
    local r w br bw f sm sb
    for name in "${names[@]}"; do
        f=$LOCAL/load-$name.txt
        cp "$f" "$SC_OUT/load-$name.txt"
        case $name in
        S*)
            # "session-ok N session: M messages, msize X, B bytes read, ..."
            r=$(grep -c '^session-ok' "$f" || true); br=$(grep -c '^session-BAD' "$f" || true)
            read -r sm sb <<< "$(awk '/^session-ok/ {m += $4; b += $8} END {print m + 0, b + 0}' "$f")"
            sessions=$((sessions + r)) bad_s=$((bad_s + br)) sim_msgs=$((sim_msgs + sm)) sim_bytes=$((sim_bytes + sb))
            per="$per $name:${r}s"
            expect "simulator $name completed at least one checked session under load ($r sessions, $sm messages)" test "$r" -ge 1
            ;;
        *)
            r=$(grep -c '^read-ok' "$f" || true); br=$(grep -c '^read-BAD' "$f" || true)
            w=$(grep -c '^write-ok' "$f" || true); bw=$(grep -c '^write-BAD' "$f" || true)
            reads=$((reads + r)) writes=$((writes + w)) bad_r=$((bad_r + br)) bad_w=$((bad_w + bw))
            per="$per $name:${r}r/${w}w"
            expect "board $name did at least one verified read and one verified write under load ($r reads, $w writes)" \
                test "$r" -ge 1 -a "$w" -ge 1
            ;;
        esac
    done
    expect_eq "every 2 MiB read under load matched the server's sha256 ($reads reads)" 0 "$bad_r"
    expect_eq "every 1 MiB write under load landed with the right sha256 ($writes writes)" 0 "$bad_w"
    expect_eq "every simulator session under load got only right replies and the right sha256 ($sessions sessions)" 0 "$bad_s"

    local stats
    # Verified work: the kernel boards' payload plus the simulators' bytes
    # read; in messages, the simulators' checked requests plus one per 16 KiB
    # of the kernel boards' payload (msize 16384, trans_usbg's default buflen:
    # no Tread or Twrite carries more).
    stats=$(python3 - "$c0" "$c1" "$t0" "$t1" "$reads" "$writes" "$sim_msgs" "$sim_bytes" <<'EOF'
import sys
c0 = [int(x) for x in sys.argv[1].split()]; c1 = [int(x) for x in sys.argv[2].split()]
dt = float(sys.argv[4]) - float(sys.argv[3])
msgs, tb, rb = (b - a for a, b in zip(c0, c1))
reads, writes, sim_msgs, sim_bytes = (int(x) for x in sys.argv[5:9])
kernel = reads * 2 * 2**20 + writes * 2**20
verified = kernel + sim_bytes
vmsgs = sim_msgs + kernel // 16384
print(f"{dt:.1f} {msgs} {tb + rb} {msgs / dt:.0f} {(tb + rb) / dt / 1e6:.2f} {verified / dt / 1e6:.2f} {int(tb + rb >= verified)} {vmsgs} {int(msgs >= vmsgs)}")
EOF
)
    local dt msgs bytes mps mbs vmbs enough vmsgs enough_m
    read -r dt msgs bytes mps mbs vmbs enough vmsgs enough_m <<< "$stats"
    log "load: ${dt}s, $msgs T-messages ($mps/s), $bytes bytes ($mbs MB/s; verified payload $vmbs MB/s); $per"
    {
        echo "load: boards=$SCALE_N (kernel ${boards[*]}; simulators ${sims[*]}) seconds=$dt reads=$reads writes=$writes sim_sessions=$sessions sim_messages=$sim_msgs sim_bytes=$sim_bytes ($per)"
        echo "aggregate: t_messages=$msgs msgs_per_s=$mps bytes=$bytes MB_per_s=$mbs verified_payload_MB_per_s=$vmbs verified_messages_min=$vmsgs"
        echo "under load: threads_max=$thr_max VmRSS_max_kB=$rss_max VmHWM_kB=$hwm"
    } >> "$res"
    expect_eq "the counters account for at least the verified payload (r_bytes + t_bytes >= kernel reads + writes + simulator bytes read)" 1 "$enough"
    expect_eq "the counters account for at least the verified messages (t_messages $msgs >= $vmsgs: the simulators' $sim_msgs + kernel payload / 16 KiB)" 1 "$enough_m"
    expect "usb9pfsd VmRSS under load < 16 MiB (max sampled ${rss_max} kB)" test "$rss_max" -gt 0 -a "$rss_max" -lt 16384
    expect "usb9pfsd peak RSS (VmHWM) < 16 MiB (${hwm} kB)" test "${hwm:-99999}" -lt 16384
    expect "usb9pfsd threads with $SCALE_N boards = base $thr_base + one worker each (max $thr_max)" \
        test "$thr_max" -ge $((thr_base + SCALE_N)) -a "$thr_max" -le $((thr_base + SCALE_N + 2))

    # ---- all mounted, all idle
    sleep 3
    local idle_states
    idle_states=$(status_json | python3 -c '
import json, sys
print(sum(1 for x in json.load(sys.stdin)["boards"] if x["state"] == "idle"))')
    expect_eq "status: all $SCALE_N boards idle after the load" "$SCALE_N" "$idle_states"
    local k0 k1 w0 w1 hz idle_t0 idle_t1
    hz=$(getconf CLK_TCK)
    k0=$(proc_ticks "$FWD_PID") w0=$(ctx_switches "$FWD_PID") idle_t0=$(date +%s.%N)
    sleep "$IDLE_S"
    k1=$(proc_ticks "$FWD_PID") w1=$(ctx_switches "$FWD_PID") idle_t1=$(date +%s.%N)
    local idle
    idle=$(python3 -c "import sys; dt=$idle_t1-$idle_t0; print(f'{($k1-$k0)/$hz/dt*100:.2f} {($w1-$w0)/dt:.1f} {dt:.1f}')")
    local cpu_pct wakeups idle_dt
    read -r cpu_pct wakeups idle_dt <<< "$idle"
    log "idle: $((k1 - k0)) ticks (CLK_TCK $hz) in ${idle_dt}s = ${cpu_pct}% of one CPU; $wakeups context switches/s"
    echo "idle (all boards up): seconds=$idle_dt cpu_ticks=$((k1 - k0)) clk_tck=$hz cpu_pct_of_one_cpu=$cpu_pct ctx_switches_per_s=$wakeups threads=$(fwd_threads) fds=$(fwd_fds) VmRSS_kB=$(vm_kb "$FWD_PID" VmRSS)" >> "$res"
    expect "usb9pfsd idle CPU with $SCALE_N boards up (${#boards[@]} mounted, ${#sims[@]} simulators between sessions) < 1% of one CPU ($((k1 - k0)) ticks in ${idle_dt}s = ${cpu_pct}%)" \
        test $(( (k1 - k0) * 100 )) -lt "$(python3 -c "print(int($hz * $idle_dt))")"

    for name in "${boards[@]}"; do board_umount "$name" || bad "umount of board $name failed"; done
    expect "forwarder still running" fwd_alive
    expect_not "no worker failed" grep -q 'worker stopped:' "$SC_OUT/usb9pfsd.log"
    # (the rig's unsigned usb9pfs.ko logs "module verification failed" at insmod: not a 9P error)
    expect_not "the board side logged no 9P error" sh -c "dmesg | grep -iE '9pnet|usb9pfs' | grep -v 'module verification failed' | grep -iE 'error|fail'"
    cat "$res" >&2
}
