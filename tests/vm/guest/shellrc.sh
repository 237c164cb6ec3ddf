# shellcheck shell=bash
# rc file of the interactive guest shell (tests/vm/run --shell): two boards
# plugged (A: serial 0001-BOARD-A, 1d6b:0109, tag rigA on dummy_udc.0;
# B: 0002-BOARD-B, 1209:0001, tag rigB on dummy_udc.1), two diods
# (127.0.0.1:5640 exporting /run/ex/a, :5641 exporting /run/ex/b), a config
# mapping A->a and B->b, and the forwarder ($RIG_FWD) started. All lib.sh
# functions are available.
[ -f /etc/bash.bashrc ] && . /etc/bash.bashrc
. /run/rig/out/.stage/env.sh
SCENARIO=shell
SC_OUT=$RIG_OUTROOT/shell
mkdir -p "$SC_OUT"
. "$RIG_VM/guest/lib.sh"
die() { bad "$*"; return 1; }     # never exit the interactive shell
: > "$SC_OUT/checks.txt"
rig_setup 2
mkdir -p "$EXPORTS/a" "$EXPORTS/b"
echo "this is export a" > "$EXPORTS/a/marker"
echo "this is export b" > "$EXPORTS/b/marker"
diod_start a 5640 "$EXPORTS/a"
diod_start b 5641 "$EXPORTS/b"
board_create A 0001-BOARD-A 1d6b:0109 rigA dummy_udc.0
board_create B 0002-BOARD-B 1209:0001 rigB dummy_udc.1
B_BACKEND[A]=127.0.0.1:5640
B_BACKEND[B]=127.0.0.1:5641
fwd_write_config "$LOCAL/usb9pfsd.toml"
board_plug A
board_plug B
fwd_start
cat <<HELP

usb9pfsd VM rig shell (kernel $(uname -r), forwarder $RIG_FWD)
  config:        $FWD_CONFIG      daemon log: $SC_OUT/usb9pfsd.log (host: tests/vm/out/shell/)
  mount board A: board_mount A /run/ex/a      (mounts on ${B_MNT[A]}; board_umount A)
  by hand:       mount -t 9p -o trans=usbg,aname=/run/ex/b rigB /run/mnt/B
  reset board A: board_umount A; board_unplug A; board_plug A   (never unplug under a mount)
  list:          \$USB9PFSD list --config \$FWD_CONFIG
  the daemon:    pid \$FWD_PID ($USB9PFSD); stop with fwd_stop
  leave:         exit (or poweroff -f)
HELP
PS1='rig-guest# '
