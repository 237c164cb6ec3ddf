#!/usr/bin/env bash
# tests/deb/guest-check.sh DEB BUS DEV
#
# Run by the VM rig INSIDE a guest (root, Debian userland, systemd-udevd
# running) with a usb9pfs board already plugged in at USB bus BUS, device
# address DEV (decimal, leading zeros allowed: "1 4" or "001 004").
# Installs the .deb and checks that its udev rule did its job on the board's
# /dev/bus/usb/BBB/DDD node: group usb9pfsd, mode 0660, tagged for systemd,
# pulling in usb9pfsd.service, and that all of it survives a "bind" event.
#
# Prints one PASS/FAIL line per check and "N passed, N failed"; exits
# non-zero if anything failed.
set -euo pipefail

if [ $# -ne 3 ]; then
	echo "usage: $0 DEB BUS DEV" >&2
	exit 64
fi
deb=$1
bus=$(printf '%03d' "$((10#$2))")
dev=$(printf '%03d' "$((10#$3))")
node=/dev/bus/usb/$bus/$dev

passed=0
failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
check() {
	local what=$1
	shift
	if "$@"; then pass "$what"; else fail "$what"; fi
}
finish() {
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
}

check "dpkg -i $deb" dpkg -i "$deb" </dev/null
check "udevadm control --reload" udevadm control --reload
check "udevadm trigger --action=add --subsystem-match=usb" \
	udevadm trigger --action=add --subsystem-match=usb
check "udevadm settle" udevadm settle --timeout=60

if [ ! -c "$node" ]; then
	fail "$node exists (is the board plugged in at bus $bus device $dev?)"
	finish
	exit 1
fi
pass "$node exists"
devpath=$(udevadm info --query=path --name="$node")

# prop NAME: the value of one udev property of the board, as udev has it now.
prop() {
	udevadm info --query=property --name="$node" | sed -n "s/^$1=//p"
}

# The rule's effect, checked after the event named by $1.
check_rule_applied() {
	local event=$1 tags
	check "[$event] ID_USB_INTERFACES has :ffff09: ('$(prop ID_USB_INTERFACES)')" \
		grep -q ':ffff09:' <<<"$(prop ID_USB_INTERFACES)"
	check "[$event] $node group is usb9pfsd ($(stat -c %G "$node"))" \
		test "$(stat -c %G "$node")" = usb9pfsd
	check "[$event] $node mode is 0660 ($(stat -c %a "$node"))" \
		test "$(stat -c %a "$node")" = 660
	# CURRENT_TAGS: tags set by the latest event (TAGS only ever grows).
	tags=$(prop CURRENT_TAGS)
	[ -n "$tags" ] || tags=$(prop TAGS)
	check "[$event] udev tagged the board for systemd (tags '$tags')" \
		grep -q ':systemd:' <<<"$tags"
	check "[$event] SYSTEMD_WANTS is usb9pfsd.service ('$(prop SYSTEMD_WANTS)')" \
		grep -qw 'usb9pfsd\.service' <<<"$(prop SYSTEMD_WANTS)"
}

check_rule_applied add

# Who may open the node: user usb9pfsd (through its group) read-write, any
# other unprivileged user not at all. ($1 expands in the inner shell.)
# shellcheck disable=SC2016
opens_rw_as_usb9pfsd() {
	setpriv --reuid=usb9pfsd --regid=usb9pfsd --init-groups -- \
		bash -c ': <>"$1"' _ "$node"
}
# The refusal counts only as the kernel's EACCES on the node itself, and only
# once setpriv has shown it can run a command as nobody at all: a failure of
# setpriv, of the user lookup or a missing node is not "cannot open".
# shellcheck disable=SC2016
nobody_is_refused() {
	local err rc=0
	if ! err=$(setpriv --reuid=nobody --regid=nogroup --clear-groups -- true 2>&1); then
		echo "    setpriv cannot run a command as nobody: $err"
		return 1
	fi
	err=$(setpriv --reuid=nobody --regid=nogroup --clear-groups -- \
		bash -c ': <"$1"' _ "$node" 2>&1) || rc=$?
	if [ "$rc" -eq 0 ]; then
		echo "    nobody opened $node"
		return 1
	fi
	if ! grep -qF "$node: Permission denied" <<<"$err"; then
		echo "    nobody's open of $node failed, but not with EACCES: $err"
		return 1
	fi
}
check "user usb9pfsd can open $node read-write" opens_rw_as_usb9pfsd
check "user nobody cannot open $node (EACCES from the kernel)" nobody_is_refused

# A "bind" event re-runs every rule; group, mode and tag must not be lost
# (the reason the rule acts on every action but "remove").
check "udevadm trigger --action=bind $devpath" udevadm trigger --action=bind "/sys$devpath"
check "udevadm settle" udevadm settle --timeout=60
check_rule_applied bind

# Where systemd is the init system, the board's device unit must want the
# service. (virtme-ng guests run udevd without systemd as PID 1: skipped.)
if [ -d /run/systemd/system ]; then
	unit=$(systemd-escape --path --suffix=device "/sys$devpath")
	check "$unit wants usb9pfsd.service" \
		grep -qw 'usb9pfsd\.service' <<<"$(systemctl show --property=Wants --value "$unit")"
else
	echo "SKIP: device unit wants usb9pfsd.service (systemd is not PID 1 here)"
fi

finish
