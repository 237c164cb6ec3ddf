# shellcheck shell=bash
# soak: one board plugged and unplugged SOAK_CYCLES (100) times under one
# usb9pfsd: plug -> mount -> read a checksummed 64 KiB file -> umount ->
# unplug (never an unbind under a live mount: the umount is bounded and
# board_unplug refuses otherwise, vm-rig trap 3). After each cycle's mount
# and after each unplug the daemon's fd and thread counts are recorded
# ($SC_OUT/soak-counts.txt). Asserted: every cycle's mount worked and read
# the right sha256, and the counts stay flat (the last cycle's are at most
# the first cycle's plus SOAK_SLACK, and so is the maximum over the second
# half of the run); VmRSS's peak over the second half is at most the first
# half's + 1 MiB and stays < 16 MiB. Cycle times go to
# soak-results.txt.
SOAK_CYCLES=${SOAK_CYCLES:-100}
SOAK_SLACK=2

scenario_main() {
    requires_usb9pfsd
    rig_setup 1
    local ex=$EXPORTS/a res=$SC_OUT/soak-results.txt counts=$SC_OUT/soak-counts.txt
    mkdir -p "$ex"
    diod_start a 5640 "$ex"
    dd if=/dev/urandom of="$ex/small.bin" bs=64k count=1 status=none
    local want; want=$(sha "$ex/small.bin")
    board_create A 0001-SOAK-A 1d6b:0109 rigA dummy_udc.0
    B_BACKEND[A]=127.0.0.1:5640
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    fwd_start
    : > "$counts"; : > "$res"
    local rss0 thr0; rss0=$(awk '$1 == "VmRSS:" {print $2}' "/proc/$FWD_PID/status") thr0=$(fwd_threads)
    echo "before the first plug: fds=$(fwd_fds) threads=$thr0 VmRSS_kB=$rss0" >> "$res"

    local i t0 tc ds good=0 m=${B_MNT[A]} s
    local mfds mthr ufds uthr rss
    local -a MF=() MT=() UF=() UT=() RS=()
    t0=$(date +%s)
    for i in $(seq 1 "$SOAK_CYCLES"); do
        tc=${EPOCHREALTIME/./}
        board_plug A
        if ! board_mount_retry A "$ex" 45; then
            # a board configured but never mounted must not be unbound (lib.sh): stop here
            die "cycle $i: mount failed (45 s of retries); see usb9pfsd.log around +${SECONDS}s"
        fi
        s=$(timeout -s KILL 60 sha256sum "$m/small.bin" 2>/dev/null | cut -d' ' -f1)
        if [ "$s" = "$want" ]; then good=$((good + 1)); else bad "cycle $i: 64 KiB read got sha256 '$s'"; fi
        mfds=$(fwd_fds) mthr=$(fwd_threads)
        board_umount A || die "cycle $i: umount failed; not unbinding (trap 3)"
        board_unplug A
        # the worker of the gone board ends by itself: wait (bounded) until the
        # thread count is back at the pre-plug level before sampling
        wait_until 10 sh -c "[ \$(ls /proc/$FWD_PID/task | wc -l) -le $thr0 ]" || true
        ufds=$(fwd_fds) uthr=$(fwd_threads)
        rss=$(awk '$1 == "VmRSS:" {print $2}' "/proc/$FWD_PID/status")
        MF+=("$mfds") MT+=("$mthr") UF+=("$ufds") UT+=("$uthr") RS+=("$rss")
        ds=$(( (${EPOCHREALTIME/./} - tc) / 100000 ))
        printf 'cycle %d mounted: fds=%s threads=%s unplugged: fds=%s threads=%s VmRSS_kB=%s seconds=%s\n' \
            "$i" "$mfds" "$mthr" "$ufds" "$uthr" "$rss" "$((ds / 10)).$((ds % 10))" >> "$counts"
        fwd_alive || die "cycle $i: usb9pfsd died"
    done
    local total=$(( $(date +%s) - t0 ))
    expect_eq "all $SOAK_CYCLES cycles mounted and read the 64 KiB file with the right sha256" "$SOAK_CYCLES" "$good"

    # flat: last <= first + slack, and the maximum over the second half too
    local n=${#MF[@]} half=$(( ${#MF[@]} / 2 ))
    maxof() { local x mx=0; for x in "$@"; do [ "$x" -le "$mx" ] || mx=$x; done; echo "$mx"; }
    local k
    for k in MF MT UF UT; do
        local -n arr=$k
        local first=${arr[0]} last=${arr[$((n - 1))]} mx2
        mx2=$(maxof "${arr[@]:$half}")
        local what
        case $k in MF) what="fds while mounted" ;; MT) what="threads while mounted" ;;
                   UF) what="fds after unplug" ;; UT) what="threads after unplug" ;; esac
        echo "$what: first=$first last=$last max_second_half=$mx2 min=$(printf '%s\n' "${arr[@]}" | sort -n | head -1) max=$(maxof "${arr[@]}")" >> "$res"
        expect "usb9pfsd $what flat over $n cycles (first $first, last $last, max of 2nd half $mx2; slack $SOAK_SLACK)" \
            test "$last" -le $((first + SOAK_SLACK)) -a "$mx2" -le $((first + SOAK_SLACK))
        unset -n arr
    done
    # RSS moves by a few MiB from cycle to cycle as the allocator keeps or
    # returns a worker's freed memory, so compare the peaks of the two halves
    # instead of two single cycles: a leak raises the second half's.
    local rfirst=${RS[0]} rlast=${RS[$((n - 1))]} rmax1 rmax2
    rmax1=$(maxof "${RS[@]:0:$half}") rmax2=$(maxof "${RS[@]:$half}")
    echo "VmRSS_kB: before=$rss0 after_cycle_1=$rfirst last=$rlast max_first_half=$rmax1 max_second_half=$rmax2 min=$(printf '%s\n' "${RS[@]}" | sort -n | head -1)" >> "$res"
    expect "usb9pfsd VmRSS flat over $n cycles (peak of first half $rmax1 kB, of second half $rmax2 kB; slack 1024 kB)" \
        test "$rmax2" -le $((rmax1 + 1024))
    expect "usb9pfsd VmRSS < 16 MiB throughout (peak $(maxof "${RS[@]}") kB)" test "$(maxof "${RS[@]}")" -lt 16384
    local sessions; sessions=$(fwd_log | grep -c 'new 9P session with the server' || true)
    expect_eq "the daemon opened one server session per cycle" "$SOAK_CYCLES" "$sessions"
    echo "cycles=$SOAK_CYCLES seconds=$total per_cycle_s=$(python3 -c "print(f'{$total / $SOAK_CYCLES:.1f}')")" >> "$res"
    log "soak: $SOAK_CYCLES cycles in ${total}s"
    expect "forwarder still running" fwd_alive
    # A worker ends with a USB error when its board is unplugged (expected
    # here); what must not happen is an ERROR, or a board the daemon lost track of.
    local removed warns
    removed=$(fwd_log | grep -c 'INFO board removed serial=0001-SOAK-A' || true)
    warns=$(fwd_log | grep -c ' WARN ' || true)
    echo "daemon log: board_removed=$removed WARN_lines=$warns ERROR_lines=$(fwd_log | grep -c ' ERROR ' || true)" >> "$res"
    expect_eq "the daemon saw the board removed once per cycle" "$SOAK_CYCLES" "$removed"
    expect_eq "the daemon logged no ERROR" 0 "$(fwd_log | grep -c ' ERROR ' || true)"
    cat "$res" >&2
}
