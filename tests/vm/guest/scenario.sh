#!/bin/bash
# Runs one scenario inside the guest: scenario.sh NAME
# Sources lib.sh and scenarios/NAME.sh, calls scenario_main, tears down, and
# then writes the result (PASS unless a check failed).
set -uo pipefail
SCENARIO=$1
# shellcheck source=/dev/null
. /run/rig/out/.stage/env.sh
SC_OUT=$RIG_OUTROOT/$SCENARIO
# shellcheck source=lib.sh
. "$RIG_VM/guest/lib.sh"
# the rig's own self-tests (tests/vm/run --selftest) live in guest/selftest/
SC_FILE=$RIG_VM/guest/scenarios/$SCENARIO.sh
[ -f "$SC_FILE" ] || SC_FILE=$RIG_VM/guest/selftest/$SCENARIO.sh
[ -f "$SC_FILE" ] || { write_result FAIL "no such scenario: $SCENARIO"; exit 1; }
# shellcheck source=/dev/null
. "$SC_FILE"

# The checks' verdict is kept aside (verdict) until the teardown, which
# unmounts live 9P mounts and stops the daemon (the likeliest moment for the
# guest kernel to break), has finished; only then is it the result. A guest
# that dies or wedges in the teardown leaves a verdict and no result, and
# tests/vm/run fails the scenario for it (and for any kernel warning).
# rig_group_note then tells main.sh which gadgets may be unplugged before
# the next scenario of the same boot.
finish() {
    local rc=$?
    if [ ! -s "$SC_OUT/result" ]; then
        # a check may have failed in a subshell: checks.txt is the record
        if [ -z "$FIRST_FAILURE" ] && grep -q '^FAIL' "$SC_OUT/checks.txt"; then
            FAILED=1; FIRST_FAILURE=$(grep -m1 '^FAIL' "$SC_OUT/checks.txt" | cut -c6-)
        fi
        if [ "$FAILED" -ne 0 ]; then write_result FAIL "$FIRST_FAILURE"
        elif [ "$rc" -ne 0 ]; then write_result FAIL "scenario script error (rc=$rc), see guest.log"
        elif [ "$NCHECKS" -eq 0 ]; then write_result FAIL "no checks ran"
        elif NXFAIL=$(grep -c '^XFAIL' "$SC_OUT/checks.txt"); [ "$NXFAIL" -gt 0 ]; then write_result PASS "$NCHECKS checks, $NXFAIL XFAIL"
        else write_result PASS "$NCHECKS checks"; fi
    fi
    mv "$SC_OUT/result" "$SC_OUT/verdict"; persist "$SC_OUT/verdict"
    log "checks: $(cat "$SC_OUT/verdict"); tearing down"
    rig_teardown
    log "teardown done"
    rig_group_note
    mv "$SC_OUT/verdict" "$SC_OUT/result"; persist "$SC_OUT/result"
}
trap finish EXIT
: > "$SC_OUT/checks.txt"
log "scenario $SCENARIO starts (forwarder: $RIG_FWD)"
scenario_main
