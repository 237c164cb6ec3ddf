# shellcheck shell=bash
# rc file of the interactive systemd guest (tests/vm/run --shell systemd):
# Debian 12 with systemd as PID 1, the freshly built package installed with
# dpkg, a diod exporting /run/ex/a on 127.0.0.1:5640, the installed
# /etc/usb9pfsd/config.toml mapping board A (serial 0001-BOARD-A, 1d6b:0109,
# mount tag rigA on dummy_udc.0) to it, and board A plugged: udev has started
# usb9pfsd.service. All lib.sh functions are available.
# shellcheck source=/dev/null
[ -f /etc/bash.bashrc ] && . /etc/bash.bashrc
# shellcheck source=/dev/null
. /run/rig/out/.stage/env.sh
SCENARIO=shell-systemd
SC_OUT=$RIG_OUTROOT/shell-systemd
mkdir -p "$SC_OUT"
# shellcheck source=lib.sh
. "$RIG_VM/guest/lib.sh"
# shellcheck source=scenarios/systemd.sh
. "$RIG_VM/guest/scenarios/systemd.sh"
die() { bad "$*"; return 1; }     # never exit the interactive shell
: > "$SC_OUT/checks.txt"
sysguest_prepare
rig_setup 1
mkdir -p "$EXPORTS/a"
echo "this is export a" > "$EXPORTS/a/marker"
diod_start a 5640 "$EXPORTS/a"
dpkg -i "$STAGE/usb9pfsd.deb" </dev/null >"$SC_OUT/dpkg-i.log" 2>&1 \
    || echo "dpkg -i failed: $SC_OUT/dpkg-i.log"
printf '[[board]]\nserial = "0001-BOARD-A"\nbackend = "127.0.0.1:5640"\n' > /etc/usb9pfsd/config.toml
board_create A 0001-BOARD-A 1d6b:0109 rigA dummy_udc.0
board_plug A
wait_until 60 is_active || echo "usb9pfsd.service did not start: systemctl status usb9pfsd"
cat <<HELP

=== systemd guest: usb9pfsd package installed, board A plugged ===
systemctl status usb9pfsd              # started by udev when board A appeared
mount -t 9p -o trans=usbg,aname=/run/ex/a rigA /mnt && cat /mnt/marker
                                       # the board side mounts through the service
journalctl -u usb9pfsd BOARD_SERIAL=0001-BOARD-A   # one board's lines (also BOARD_BUSADDR=, BOARD_INTERFACE=)
umount /mnt; board_unplug A            # unplug (umount first: a live mount wedges the VM)
board_plug A                           # plug again
poweroff                               # leave
HELP
