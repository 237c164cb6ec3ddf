#!/bin/bash
# Login "shell" of `tests/vm/run --shell`: an interactive bash whose rc file
# prepares the guest (see shellrc.sh).
exec bash --rcfile /run/rig/vm/guest/shellrc.sh -i
