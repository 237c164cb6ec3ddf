#!/bin/bash
# Guest entry point (the command tests/vm/run passes to `vng --exec`):
#   main.sh SCENARIO
# Runs guest/scenario.sh SCENARIO under a guest-side watchdog, makes sure a
# result file exists, saves the kernel log (tests/vm/run judges it, with the
# console's, for warnings and crashes), and returns (the guest powers off).
set -uo pipefail
SCENARIO=$1
# shellcheck source=/dev/null
. /run/rig/out/.stage/env.sh
SC_OUT=$RIG_OUTROOT/$SCENARIO
mkdir -p "$SC_OUT"
echo "guest up at $(cat /proc/uptime | cut -d' ' -f1)s uptime" >> "$SC_OUT/guest.log"
sync

limit=${RIG_GUEST_LIMIT:-600}
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
dmesg > "$SC_OUT/dmesg.txt" 2>&1
sync
exit 0
