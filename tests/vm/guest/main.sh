#!/bin/bash
# Guest entry point (the command tests/vm/run passes to `vng --exec`):
#   main.sh SCENARIO[:LIMIT] [SCENARIO[:LIMIT]...]
# Runs guest/scenario.sh for each SCENARIO in turn (one boot, several
# scenarios: each boot costs ~30 s under TCG), each under its own guest-side
# watchdog (LIMIT seconds, default RIG_GUEST_LIMIT), makes sure each has a
# result file, saves each one's slice of the kernel log (dmesg.txt), and
# returns (the guest powers off).
#
# What keeps the scenarios of one boot apart:
# - each begins and ends with a marker line in the kernel log
#   ("usb9pfsd-rig: scenario NAME begins/ends"); tests/vm/run cuts the
#   console log at these lines and judges each scenario by its own slice
#   (plus the boot before the first and the shutdown after the last, which
#   count against every scenario of the boot);
# - dmesg is read and cleared after each (dmesg -c), so a scenario's checks
#   that read dmesg see only their own boot's lines and its own;
# - between two scenarios, rig_release (lib.sh) kills what the scenario left
#   running, unplugs and removes its gadgets, unloads dummy_hcd and unmounts
#   the rig's tmpfs: the next scenario starts from what a fresh boot gives.
#   When that cannot be done safely (a 9P board mount left behind, a gadget
#   whose unbind would wedge the kernel, a process that will not die), the
#   boot stops there: the scenarios not run yet leave no trace, and
#   tests/vm/run boots a fresh guest for them.
set -uo pipefail
# shellcheck source=/dev/null
. /run/rig/out/.stage/env.sh
# Guest-local (tmpfs, gone at power-off): what scenario.sh tells rig_release.
RIG_GROUP_DIR=/run/rig-group
export RIG_GROUP_DIR
mkdir -p "$RIG_GROUP_DIR"

kmsg() { echo "<5>usb9pfsd-rig: $*" > /dev/kmsg 2>/dev/null || true; }

n=$#
i=0
for arg in "$@"; do
    i=$((i + 1))
    SCENARIO=${arg%%:*}
    limit=${RIG_GUEST_LIMIT:-600}
    [ "$arg" = "$SCENARIO" ] || limit=${arg#*:}
    SC_OUT=$RIG_OUTROOT/$SCENARIO
    mkdir -p "$SC_OUT"
    rm -f "$RIG_GROUP_DIR"/gadgets "$RIG_GROUP_DIR"/fresh
    kmsg "scenario $SCENARIO begins ($i of $n in this boot)"
    echo "guest up at $(cut -d' ' -f1 /proc/uptime)s uptime (scenario $i of $n in this boot)" >> "$SC_OUT/guest.log"
    date +%s > "$SC_OUT/started"
    sync
    # everything running now is the boot's; whatever is new afterwards is the scenario's
    before=" $(ps -e -o pid= | tr -s ' \n' ' ') "

    rc=0
    timeout -s KILL "$limit" bash "$RIG_VM/guest/scenario.sh" "$SCENARIO" || rc=$?
    if [ ! -s "$SC_OUT/result" ] && [ -s "$SC_OUT/verdict" ]; then
        echo "FAIL: the teardown did not finish (rc=$rc; the checks had said: $(head -n1 "$SC_OUT/verdict"))" > "$SC_OUT/result"
    elif [ ! -s "$SC_OUT/result" ]; then
        if [ "$rc" -eq 137 ]; then
            echo "FAIL: guest watchdog: scenario still running after ${limit}s (killed)" > "$SC_OUT/result"
        else
            echo "FAIL: scenario script ended (rc=$rc) without a result" > "$SC_OUT/result"
        fi
    fi
    stop=""
    if [ "$i" -lt "$n" ]; then
        # shellcheck source=lib.sh
        stop=$(SC_OUT=$SC_OUT; . "$RIG_VM/guest/lib.sh"; rig_release "$before")
    fi
    echo $(( $(date +%s) - $(cat "$SC_OUT/started") )) > "$SC_OUT/elapsed"
    kmsg "scenario $SCENARIO ends"
    dmesg -c > "$SC_OUT/dmesg.txt" 2>&1
    sync
    if [ -n "$stop" ]; then
        echo "[$(date +%T)] this boot runs no further scenario: $stop" >> "$SC_OUT/guest.log"
        echo "$stop" > "$SC_OUT/boot-stopped"
        sync
        break
    fi
done
exit 0
