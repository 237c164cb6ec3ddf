# shellcheck shell=bash
# rig self-test: the runner must fail a scenario whose checks all pass when
# the guest dies during the teardown (here: powered off at once, as a guest
# whose kernel went down would be gone).
# selftest-expects: ^FAIL: guest died in the teardown .*the checks had said: PASS
scenario_main() {
    ok "the checks of this scenario pass"
}
rig_teardown() {
    echo 1 > /proc/sys/kernel/sysrq
    echo o > /proc/sysrq-trigger
    sleep 60
}
