#!/bin/bash
# Login "shell" of `tests/vm/run --shell`: an interactive bash whose rc file
# prepares the guest (see shellrc.sh).
# (In the systemd guest, `tests/vm/run --shell systemd`: shellrc-systemd.sh.)
if [ "$(cat /proc/1/comm)" = systemd ]; then exec bash --rcfile /run/rig/vm/guest/shellrc-systemd.sh -i; fi
exec bash --rcfile /run/rig/vm/guest/shellrc.sh -i
