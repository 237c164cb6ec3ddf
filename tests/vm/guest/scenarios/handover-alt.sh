# shellcheck shell=bash
# handover-alt: the handover scenario with both boards in the alternate-
# setting layout (rig patch 0003: endpoints on alt 1). A successor daemon
# that sent SET_INTERFACE again would reset the live session (the gadget
# re-enables its endpoints and drops the queued request: the board's mount
# fails); handover.sh's checks (every read matches, no request fails, one
# server session per board) then catch it. Each board is mounted only once
# the daemon has selected alt 1: a mount before that fails with EBUSY, and
# stock trans_usbg.c then leaves an extra "received" token behind.

# shellcheck source=handover.sh
. "$RIG_VM/guest/scenarios/handover.sh"

eval "orig_$(declare -f board_create)"
eval "orig_$(declare -f board_mount)"
board_create() { orig_board_create "$@" alt_setting=1; }
board_mount() {
    local p
    p=$(host_dev_of "${B_SERIAL[$1]}") || return 1
    in_alt1() { iface_claimed "$p" 0 && [ "$(tr -d ' ' < "/sys/bus/usb/devices/$p:1.0/bAlternateSetting")" = 1 ]; }
    wait_until 30 in_alt1 || { bad "board $1: the daemon did not select alternate setting 1 within 30 s"; return 1; }
    orig_board_mount "$@"
}
