# shellcheck shell=bash
# rig self-test: the runner must fail a scenario whose checks all pass when
# the guest kernel logs a WARNING during the teardown (after the checks).
# A planted line (written to /dev/kmsg, so it carries a printk time stamp
# like a real one) stands in for the kernel's own.
# selftest-expects: ^FAIL: guest kernel logged trouble \(checks: PASS.*WARNING: CPU: 0 PID: [0-9]+ at planted by the rig self-test
scenario_main() {
    ok "the checks of this scenario pass"
}
eval "orig_$(declare -f rig_teardown)"
rig_teardown() {
    echo "<4>WARNING: CPU: 0 PID: $$ at planted by the rig self-test (tests/vm/guest/selftest)" > /dev/kmsg
    orig_rig_teardown
}
