# shellcheck shell=bash
# Guest-side helpers for the usb9pfsd VM rig. Sourced by guest/main.sh (and by
# guest/shell.sh for `tests/vm/run --shell`); runs as root inside the virtme-ng
# guest. Every wait here is bounded; nothing ever unbinds a UDC under a live
# 9P mount (vm-rig notes, trap 3).
#
# Layout inside the guest:
#   /run/rig/vm          tests/vm of the checkout (read-only)
#   /run/rig/out         tests/vm/out of the checkout (read-write)
#   /run/rig/out/.stage  usb9pfs.ko, p9_fwd.py, usb9pfsd, env.sh (made by tests/vm/run)
#   $SC_OUT              /run/rig/out/<scenario>: logs, checks.txt, result

RIG_VM=${RIG_VM:-/run/rig/vm}
RIG_OUTROOT=${RIG_OUTROOT:-/run/rig/out}
STAGE=${STAGE:-$RIG_OUTROOT/.stage}
GADGETS=/sys/kernel/config/usb_gadget
EXPORTS=/run/ex          # fresh tmpfs: diod cannot export overlayfs (trap 2)
MNTROOT=/run/mnt
LOCAL=/run/local         # guest-local scratch (tmpfs)

# RIG_FWD selects the forwarder: usb9pfsd (default) or p9fwd (tools/usb/p9_fwd.py,
# one process per board, used to prove the rig itself).
RIG_FWD=${RIG_FWD:-usb9pfsd}
USB9PFSD=${USB9PFSD:-$STAGE/usb9pfsd}
P9FWD=${P9FWD:-$STAGE/p9_fwd.py}

FAILED=0
FIRST_FAILURE=""
NCHECKS=0

# ---------------------------------------------------------------- logging
# Builtins only: every fork+exec costs ~0.1-0.3 s under TCG.
log() {
    local line
    printf -v line '[%(%H:%M:%S)T +%ss] %s' -1 "$SECONDS" "$*"
    printf '%s\n' "$line" >> "$SC_OUT/guest.log"
    printf '%s\n' "$line" >&2
}

# persist(): make a file's content reach the host even if the guest dies next.
# The rwdir is a 9p mount without cache, so writes already go straight to the
# host; the sync is belt and braces for the result file only.
persist() { sync "$@" 2>/dev/null || sync; }

# write_result STATUS [REASON]  (STATUS = PASS | FAIL | SKIP). Written at once:
# the guest's stdout only reaches the host if it shuts down cleanly (trap 4).
write_result() {
    local status=$1; shift
    if [ $# -gt 0 ] && [ -n "$*" ]; then
        printf '%s: %s\n' "$status" "$*" > "$SC_OUT/result"
    else
        printf '%s\n' "$status" > "$SC_OUT/result"
    fi
    persist "$SC_OUT/result"
}

# ok DESCRIPTION / bad DESCRIPTION: record one check (checks.txt is synced each time).
ok()  { NCHECKS=$((NCHECKS + 1)); printf 'ok   %s\n' "$*" >> "$SC_OUT/checks.txt"; log "ok: $*"; }
bad() {
    NCHECKS=$((NCHECKS + 1)); FAILED=1
    [ -n "$FIRST_FAILURE" ] || FIRST_FAILURE="$*"
    printf 'FAIL %s\n' "$*" >> "$SC_OUT/checks.txt"; log "FAIL: $*"; persist "$SC_OUT/checks.txt"
}
# xfail REASON DESCRIPTION: a check that fails because of a known daemon
# defect someone is fixing. Recorded as `XFAIL` (checks.txt, guest.log and the
# run's summary) and not counted as a failure; flip it to a plain check when
# the fix merges. check_xf runs the command and records ok (marked "was
# XFAIL", so the flip is noticed) or XFAIL.
NXFAIL=0
xfail() {
    local reason=$1; shift
    NCHECKS=$((NCHECKS + 1)); NXFAIL=$((NXFAIL + 1))
    printf 'XFAIL %s [%s]\n' "$*" "$reason" >> "$SC_OUT/checks.txt"; log "XFAIL: $* [$reason]"
}
# check_xf REASON DESCRIPTION CMD...
check_xf() {
    local reason=$1 d=$2; shift 2
    if "$@"; then ok "$d (was XFAIL: $reason)"; else xfail "$reason" "$d"; fi
}
# die REASON: fatal failure, stop the scenario here (main.sh writes the result).
die() { bad "$*"; exit 1; }

# expect_eq DESCRIPTION EXPECTED ACTUAL
expect_eq() {
    if [ "$2" == "$3" ]; then ok "$1"; else bad "$1 (expected '$2', got '$3')"; fi
}
# expect DESCRIPTION CMD...: the command must succeed.
expect() { local d=$1; shift; if "$@"; then ok "$d"; else bad "$d (command failed: $*)"; fi; }
# expect_not DESCRIPTION CMD...: the command must fail.
expect_not() { local d=$1; shift; if "$@"; then bad "$d (command unexpectedly succeeded: $*)"; else ok "$d"; fi; }

# wait_until SECONDS CMD...: poll CMD every 0.5 s, bounded.
wait_until() {
    local limit=$1; shift
    local end=$(( $(date +%s) + limit ))
    while ! "$@"; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.5
    done
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# is_mounted DIR: DIR has a mount in this namespace. Reads /proc/self/mounts:
# mountpoint(1) stats DIR, which fails with EIO on a 9P mount whose server is
# gone, and then wrongly says "not a mountpoint".
is_mounted() {
    local dev mnt rest
    while read -r dev mnt rest; do [ "$mnt" != "$1" ] || return 0; done < /proc/self/mounts
    return 1
}

# --------------------------------------------------------------- guest setup
# rig_setup NUM_UDCS: network, configfs, dummy_hcd with NUM_UDCS UDCs, 9p, usb9pfs.
rig_setup() {
    local n=${1:-1}
    mkdir -p "$SC_OUT" "$EXPORTS" "$MNTROOT" "$LOCAL"
    ip link set lo up
    modprobe configfs
    mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
    modprobe libcomposite
    modprobe dummy_hcd num="$n"
    modprobe 9pnet
    modprobe 9p
    grep -q '^usb9pfs ' /proc/modules || insmod "$STAGE/usb9pfs.ko"
    grep -q '^usb9pfs ' /proc/modules || die "rig setup: usb9pfs.ko did not load"
    mountpoint -q "$EXPORTS" || mount -t tmpfs -o size=1200m none "$EXPORTS"
    mountpoint -q "$LOCAL" || mount -t tmpfs -o size=300m none "$LOCAL"
    wait_until 20 test -e "/sys/class/udc/dummy_udc.$((n - 1))" || die "dummy_udc.$((n - 1)) did not appear"
    pgrep -x systemd-udevd >/dev/null || log "warning: systemd-udevd is not running"
    log "setup: $n UDC(s), kernel $(uname -r), forwarder $RIG_FWD"
}

# ---------------------------------------------------------------- boards
# A gadget is a configfs gadget G (one configuration c.1) with functions
# linked in order (link order = interface order). A board is one usb9pfs
# function instance TAG of a gadget: what the board side mounts. The simple
# case, board_create, is a gadget of the same name with one usb9pfs function.
declare -gA B_SERIAL=() B_ID=() B_TAG=() B_UDC=() B_MNT=() B_ANAME=() B_BACKEND=()
# B_FRESH[NAME]=1 from plug until the board's first mount: see board_unplug.
declare -gA B_FRESH=()
# B_GADGET[NAME]: the board's gadget; B_IFNUM[NAME]: its host-side interface
# number (known after plug); G_BOARDS[G]: the gadget's boards in link order.
declare -gA B_GADGET=() B_IFNUM=() G_SERIAL=() G_ID=() G_UDC=() G_BOARDS=()
# B_IFACE_CFG[NAME]=1: fwd_write_config maps this board by serial + interface
declare -gA B_IFACE_CFG=()
declare -gA B_CONF=()

# gadget_create G SERIAL VID:PID UDC: a gadget with one empty configuration.
gadget_create() {
    local name=$1 serial=$2 id=$3 udc=$4 g=$GADGETS/$1
    mkdir "$g"
    echo "0x${id%%:*}" > "$g/idVendor"
    echo "0x${id##*:}" > "$g/idProduct"
    mkdir "$g/strings/0x409"
    echo "$serial" > "$g/strings/0x409/serialnumber"
    echo "usb9pfsd-rig" > "$g/strings/0x409/manufacturer"
    echo "rig board $name" > "$g/strings/0x409/product"
    mkdir "$g/configs/c.1"
    G_SERIAL[$name]=$serial G_ID[$name]=$id G_UDC[$name]=$udc G_BOARDS[$name]=""
    log "gadget $name: serial=$serial id=$id udc=$udc"
}

# gadget_add G FUNCTION [ATTR=VALUE...]: create functions/FUNCTION (e.g.
# acm.GS0, mass_storage.0, usb9pfs.root), write its attributes (before the
# link: usb9pfs refuses buflen once linked) and link it into c.1.
gadget_add() {
    local name=$1 fn=$2 g=$GADGETS/$1 kv; shift 2
    mkdir -p "$g/functions/$fn"
    for kv in "$@"; do
        echo "${kv#*=}" > "$g/functions/$fn/${kv%%=*}" || die "gadget $name: cannot set $fn/${kv%%=*}=${kv#*=}"
    done
    ln -s "$g/functions/$fn" "$g/configs/c.1/"
    log "gadget $name: function $fn${*:+ ($*)}"
}

# board_on_gadget NAME G TAG [ATTR=VALUE...]: add usb9pfs.TAG to gadget G as
# board NAME (mounted at $MNTROOT/NAME).
board_on_gadget() {
    local name=$1 gname=$2 tag=$3; shift 3
    gadget_add "$gname" "usb9pfs.$tag" "$@"
    B_SERIAL[$name]=${G_SERIAL[$gname]} B_ID[$name]=${G_ID[$gname]} B_TAG[$name]=$tag
    B_UDC[$name]=${G_UDC[$gname]} B_GADGET[$name]=$gname
    G_BOARDS[$gname]="${G_BOARDS[$gname]} $name"
    B_MNT[$name]=$MNTROOT/$name
    mkdir -p "${B_MNT[$name]}"
}

# board_create NAME SERIAL VID:PID TAG UDC [ATTR=VALUE...]: a gadget NAME with
# one usb9pfs function TAG (attributes e.g. buflen=65536).
board_create() {
    local name=$1 serial=$2 id=$3 tag=$4 udc=$5; shift 5
    gadget_create "$name" "$serial" "$id" "$udc"
    board_on_gadget "$name" "$name" "$tag" "$@"
    log "board $name: serial=$serial id=$id tag=$tag udc=$udc"
}

# board_set_serial NAME SERIAL (only while unplugged)
board_set_serial() {
    local gname=${B_GADGET[$1]:-$1} b
    echo "$2" > "$GADGETS/$gname/strings/0x409/serialnumber"
    G_SERIAL[$gname]=$2
    for b in ${G_BOARDS[$gname]}; do B_SERIAL[$b]=$2; done
    log "board $1: serial now $2"
}

# host_dev_of SERIAL: print the host-side sysfs name (= port path, e.g. 1-1) of
# the USB device with that serial; fail if none.
host_dev_of() {
    local d
    for d in /sys/bus/usb/devices/*; do
        case ${d##*/} in *:*|usb*) continue ;; esac
        [ -r "$d/serial" ] || continue
        if [ "$(cat "$d/serial" 2>/dev/null)" == "$1" ]; then echo "${d##*/}"; return 0; fi
    done
    return 1
}
host_dev_present() { host_dev_of "$1" >/dev/null; }
host_dev_absent() { ! host_dev_of "$1" >/dev/null; }
# busaddr_re SERIAL: regex for BUS-ADDR as usb9pfsd logs it (zero padding optional)
busaddr_re() {
    local p; p=$(host_dev_of "$1") || return 1
    echo "0*$(cat "/sys/bus/usb/devices/$p/busnum")-0*$(cat "/sys/bus/usb/devices/$p/devnum")"
}

# usb9pfs_ifaces PORT: the host-side interface numbers (decimal, ascending)
# of the usb9pfs interfaces (ff/ff/09 in the current alternate setting) of
# device PORT.
usb9pfs_ifaces() {
    local d
    for d in /sys/bus/usb/devices/"$1":1.*; do
        [ -r "$d/bInterfaceClass" ] || continue
        [ "$(cat "$d/bInterfaceClass")$(cat "$d/bInterfaceSubClass")$(cat "$d/bInterfaceProtocol")" = ffff09 ] || continue
        echo $((16#$(cat "$d/bInterfaceNumber")))
    done | sort -n
}
# iface_driver PORT N: the driver bound to interface N of PORT ("" if none)
iface_driver() {
    local l=/sys/bus/usb/devices/$1:1.$2/driver
    if [ -e "$l" ]; then basename "$(readlink -f "$l")"; fi
}
iface_claimed() { [ "$(iface_driver "$1" "$2")" = usbfs ]; }

# board_plug NAME: bind the board's gadget to its UDC and wait until the host
# side enumerated it (interface 0 exists, udev has made the device node).
# Records B_IFNUM for every board of the gadget: its usb9pfs functions get
# the gadget's usb9pfs interfaces in link order.
board_plug() {
    echo "${B_UDC[$1]}" > "$GADGETS/${B_GADGET[$1]:-$1}/UDC"
    board_wait_plugged "$1"
}
# board_wait_plugged NAME: the second half of board_plug, for a gadget
# something else bound (board_script_up).
board_wait_plugged() {
    local name=$1 serial=${B_SERIAL[$1]} gname=${B_GADGET[$1]:-$1} p b i
    wait_until 30 host_dev_present "$serial" || die "board $name ($serial) did not enumerate on the host side"
    p=$(host_dev_of "$serial")
    wait_until 20 test -e "/sys/bus/usb/devices/$p:1.0" || die "board $name: interface $p:1.0 missing"
    local node; node=$(printf '/dev/bus/usb/%03d/%03d' "$(cat "/sys/bus/usb/devices/$p/busnum")" "$(cat "/sys/bus/usb/devices/$p/devnum")")
    wait_until 20 test -e "$node" || die "board $name: device node $node missing"
    udevadm settle -t 10 2>/dev/null || true
    local ifs; ifs=$(usb9pfs_ifaces "$p" | tr '\n' ' ')
    i=0
    for b in ${G_BOARDS[$gname]:-$name}; do
        i=$((i + 1))
        B_IFNUM[$b]=$(echo "$ifs" | cut -d' ' -f"$i")
        B_FRESH[$b]=1
    done
    log "gadget $gname plugged: port $p, $node, usb9pfs interfaces: $ifs"
}

# board_script_up NAME SERIAL VID:PID TAG UDC SCRIPT: board NAME made and
# plugged by the board-side script the package ships (board/usb9pfs-gadget,
# run with the guest's /bin/sh) instead of gadget_create + board_on_gadget +
# board_plug. It makes the same layout (gadget NAME, configs/c.1,
# functions/usb9pfs.TAG), so board_unplug and board_plug work on it as on any
# board. Fatal if the script fails.
board_script_up() {
    local name=$1 serial=$2 id=$3 tag=$4 udc=$5 script=$6 rc=0
    sh "$script" up --name "$name" --tag "$tag" --serial "$serial" --vid "${id%%:*}" --pid "${id##*:}" \
        --udc "$udc" --product "rig board $name" >>"$SC_OUT/gadget-script.log" 2>&1 || rc=$?
    [ "$rc" -eq 0 ] || die "board $name: $script up failed (rc=$rc): $(tail -n2 "$SC_OUT/gadget-script.log" | tr '\n' ' ')"
    G_SERIAL[$name]=$serial G_ID[$name]=$id G_UDC[$name]=$udc G_BOARDS[$name]=" $name"
    B_SERIAL[$name]=$serial B_ID[$name]=$id B_TAG[$name]=$tag B_UDC[$name]=$udc B_GADGET[$name]=$name
    B_MNT[$name]=$MNTROOT/$name
    mkdir -p "${B_MNT[$name]}"
    log "board $name: made by $script (serial=$serial id=$id tag=$tag udc=$udc)"
    board_wait_plugged "$name"
}

# board_unplug NAME: unbind the gadget from its UDC. Refuses (fatal) if the board
# still has a 9P mount: unbinding under a live session wedges the guest (trap 3).
# Also refuses if the board was configured by the host but never mounted since:
# stock trans_usbg.c leaves in_req->context pointing at its own f_usb9pfs after
# set_alt (alloc_requests), and the disconnect path (usb9pfs_disable ->
# usb9pfs_clear_tx) then passes that as a p9_req_t to p9_client_cb with a NULL
# client: the guest spins forever on a garbage lock (RCU stall, backtrace
# p9_client_cb <- usb9pfs_clear_tx <- reset_config <- __composite_disconnect).
# The first completed send of a mount resets the context to NULL.
board_unplug() {
    local name=$1 gname=${B_GADGET[$1]:-$1} b
    for b in ${G_BOARDS[$gname]:-$name}; do
        if [ "${B_FRESH[$b]:-0}" = 1 ] && [ "${RIG_ALLOW_FRESH_UNPLUG:-0}" != 1 ]; then
            die "refusing to unbind board $b: configured but never mounted since plug (trans_usbg.c disconnect bug wedges the guest)"
        fi
        if is_mounted "${B_MNT[$b]}"; then die "refusing to unbind board $b under a live 9P mount (trap 3)"; fi
    done
    echo "" > "$GADGETS/$gname/UDC"
    wait_until 30 host_dev_absent "${B_SERIAL[$name]}" || die "board $name did not disappear from the host side"
    udevadm settle -t 10 2>/dev/null || true
    log "board $name unplugged"
}

# board_mount NAME ANAME [SECONDS]: board-side mount, killed if it hangs (trap 5).
board_mount() {
    local name=$1 aname=$2 t=${3:-90} rc=0
    B_ANAME[$name]=$aname
    timeout -s KILL "$t" mount -t 9p -o "trans=usbg,aname=$aname" "${B_TAG[$name]}" "${B_MNT[$name]}" \
        2>>"$SC_OUT/guest.log" || rc=$?
    if [ "$rc" -eq 0 ]; then B_FRESH[$name]=0; log "board $name mounted $aname on ${B_MNT[$name]}"; else log "board $name: mount failed rc=$rc"; fi
    return "$rc"
}

# board_mount_retry NAME ANAME TOTAL_SECONDS: retry a failing mount (e.g. while
# the forwarder re-enumerates the board or the backend comes back).
board_mount_retry() {
    local name=$1 aname=$2 total=${3:-30} end
    end=$(( $(date +%s) + total ))
    while :; do
        board_mount "$name" "$aname" 60 && return 0
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 2
    done
}

# board_umount NAME [SECONDS]: bounded umount; fails if the mount is still there.
board_umount() {
    local name=$1 t=${2:-60} rc=0
    is_mounted "${B_MNT[$name]}" || return 0
    timeout -s KILL "$t" umount "${B_MNT[$name]}" 2>>"$SC_OUT/guest.log" || rc=$?
    if is_mounted "${B_MNT[$name]}"; then log "board $name: umount failed rc=$rc"; return 1; fi
    log "board $name unmounted"
}

# board_reset NAME [NEW_SERIAL]: what a real board reset looks like from the
# host: the board's mount goes away (bounded umount), the device disconnects,
# comes back (optionally with another serial) and the board mounts again.
board_reset_unplug() {
    local name=$1
    board_umount "$name" || die "board $name: umount before reset failed; not unbinding (trap 3)"
    board_unplug "$name"
}

# ----------------------------------------------------------------- backends
declare -gA DIOD_PID=() DIOD_PORT=() DIOD_EXPORT=()

# diod_start NAME PORT EXPORT_DIR [EXPORT_DIR...]: diod on 127.0.0.1:PORT
# exporting tmpfs dirs; DIOD_DEBUG = its -d mask (1: one line per 9P message)
diod_start() {
    local name=$1 port=$2 ex=$3 e exs=()
    shift 2
    for e in "$@"; do mkdir -p "$e"; exs+=(-e "$e"); done
    diod -f -n -d "${DIOD_DEBUG:-0}" -c /dev/null -L stderr -l "127.0.0.1:$port" "${exs[@]}" >>"$SC_OUT/diod-$name.log" 2>&1 &
    DIOD_PID[$name]=$! DIOD_PORT[$name]=$port DIOD_EXPORT[$name]=$ex
    wait_until 30 port_listening "$port" || die "diod $name did not listen on port $port"
    log "diod $name: pid ${DIOD_PID[$name]} port $port export $ex"
}
port_listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q LISTEN; }
diod_kill() {
    local name=$1 pid=${DIOD_PID[$1]}
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    wait_until 10 sh -c "! kill -0 $pid 2>/dev/null" || true
    log "diod $name killed"
}

# ---------------------------------------------------------------- forwarder
# The scenarios talk to the forwarder only through these functions, so the
# same scenario runs against usb9pfsd or (for proving the rig) p9_fwd.py.
#
# fwd_write_config FILE [DEFAULT_BACKEND]: one [[board]] per entry of B_BACKEND
# (board NAME -> "127.0.0.1:PORT"), mapped by the board's current serial, plus
# FWD_EXTRA_CONFIG appended verbatim.
FWD_CONFIG=""
FWD_EXTRA_CONFIG=""
declare -gA FWD_MAP_SERIAL=()   # extra serial -> backend entries (e.g. a board's alternate serial)
fwd_write_config() {
    local f=$1 def=${2:-} name s
    local -A seen=()
    {
        echo "# written by tests/vm/guest/lib.sh"
        if [ -n "$def" ]; then printf '[defaults]\nbackend = "%s"\n\n' "$def"; fi
        for name in "${!B_BACKEND[@]}"; do
            # a board with B_IFACE_CFG[NAME]=1 gets an entry narrowed to its
            # interface (needs B_IFNUM, i.e. write the config after the plug)
            if [ "${B_IFACE_CFG[$name]:-0}" = 1 ]; then
                printf '[[board]]\nserial = "%s"\ninterface = %s\nbackend = "%s"\n\n' \
                    "${B_SERIAL[$name]}" "${B_IFNUM[$name]:?board $name not plugged yet}" "${B_BACKEND[$name]}"
                continue
            fi
            # boards of one gadget share its serial: one entry per serial
            [ -z "${seen[${B_SERIAL[$name]}]:-}" ] || continue
            seen[${B_SERIAL[$name]}]=1
            printf '[[board]]\nserial = "%s"\nbackend = "%s"\n' "${B_SERIAL[$name]}" "${B_BACKEND[$name]}"
            # B_CONF[NAME]: more keys for the board's entry (one per line)
            [ -z "${B_CONF[$name]:-}" ] || printf '%s\n' "${B_CONF[$name]}"
            echo
        done
        for s in "${!FWD_MAP_SERIAL[@]}"; do
            printf '[[board]]\nserial = "%s"\nbackend = "%s"\n\n' "$s" "${FWD_MAP_SERIAL[$s]}"
        done
        printf '%s\n' "$FWD_EXTRA_CONFIG"
    } > "$f"
    FWD_CONFIG=$f
    cp "$f" "$SC_OUT/usb9pfsd.toml"
}

FWD_PID=""
declare -gA P9FWD_PID=()

# fwd_start: start the forwarder for all boards in B_BACKEND.
fwd_start() {
    case $RIG_FWD in
    usb9pfsd)
        [ -n "$FWD_CONFIG" ] || fwd_write_config "$LOCAL/usb9pfsd.toml"
        NO_COLOR=1 "$USB9PFSD" run --config "$FWD_CONFIG" ${USB9PFSD_VERBOSE:--v} >>"$SC_OUT/usb9pfsd.log" 2>&1 &
        FWD_PID=$!
        sleep 1
        kill -0 "$FWD_PID" 2>/dev/null || die "usb9pfsd run exited at once: $(tail -5 "$SC_OUT/usb9pfsd.log" | tr '\n' ' ')"
        log "usb9pfsd run: pid $FWD_PID config $FWD_CONFIG"
        ;;
    p9fwd)
        local name
        for name in "${!B_BACKEND[@]}"; do
            if host_dev_present "${B_SERIAL[$name]}"; then p9fwd_start_board "$name"; fi
        done
        ;;
    *) die "unknown RIG_FWD=$RIG_FWD" ;;
    esac
}

p9fwd_start_board() {
    local name=$1 serial=${B_SERIAL[$1]} be port path gname=${B_GADGET[$1]:-$1} ifarg=()
    be=${FWD_MAP_SERIAL[$serial]:-${B_BACKEND[$name]}}
    port=${be##*:}
    path=$(host_dev_of "$serial") || die "p9fwd: board $name not present"
    # several usb9pfs functions in one gadget: one p9_fwd.py per interface
    # (--interface: the rig's patch 0004)
    # shellcheck disable=SC2086
    if [ "$(set -- ${G_BOARDS[$gname]:-$name}; echo $#)" -gt 1 ]; then ifarg=(--interface "${B_IFNUM[$name]}"); fi
    # shellcheck disable=SC2086
    python3 "$P9FWD" ${P9FWD_ARGS:-} --id "${B_ID[$name]}" --path "$path" connect -s 127.0.0.1 -p "$port" "${ifarg[@]}" \
        >>"$SC_OUT/p9fwd-$name.log" 2>&1 &
    P9FWD_PID[$name]=$!
    log "p9_fwd.py for board $name: pid ${P9FWD_PID[$name]} path $path -> $be"
}
p9fwd_stop_board() {
    local pid=${P9FWD_PID[$1]:-}
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    P9FWD_PID[$1]=""
}

# fwd_board_unplugged NAME / fwd_board_plugged NAME: hotplug hooks. usb9pfsd
# follows udev itself; p9_fwd.py handles one device for its lifetime and is
# restarted.
fwd_board_unplugged() { [ "$RIG_FWD" != p9fwd ] || p9fwd_stop_board "$1"; }
fwd_board_plugged() { [ "$RIG_FWD" != p9fwd ] || p9fwd_start_board "$1"; }

fwd_alive() {
    case $RIG_FWD in
    usb9pfsd) [ -n "$FWD_PID" ] && kill -0 "$FWD_PID" 2>/dev/null ;;
    p9fwd) local p; for p in "${P9FWD_PID[@]}"; do [ -z "$p" ] || kill -0 "$p" 2>/dev/null || return 1; done ;;
    esac
}
fwd_stop() {
    if [ -n "$FWD_PID" ]; then kill -TERM "$FWD_PID" 2>/dev/null || true
        wait_until 10 sh -c "! kill -0 $FWD_PID 2>/dev/null" || kill -KILL "$FWD_PID" 2>/dev/null || true
        wait "$FWD_PID" 2>/dev/null || true; FWD_PID=""; fi
    local n; for n in "${!P9FWD_PID[@]}"; do p9fwd_stop_board "$n"; done
}
# fd / thread counts of the usb9pfsd process
fwd_fds() { ls "/proc/$FWD_PID/fd" 2>/dev/null | wc -l; }
fwd_threads() { ls "/proc/$FWD_PID/task" 2>/dev/null | wc -l; }
# fwd_log: the daemon's log without ANSI colour codes
fwd_log() { sed 's/\x1b\[[0-9;]*m//g' "$SC_OUT/usb9pfsd.log" 2>/dev/null; }

# dmesg_errs: kernel log lines that mean a usb9pfs/9P transfer went wrong
# (failed request completions, 9P transport errors, I/O errors, warnings).
dmesg_errs() { dmesg | grep -cE 'usb9pfs complete --> -|9pnet.*(error|Error)|I/O error|WARNING:|BUG:' || true; }

# board_sha NAME PATH [SECONDS]: sha256 of a file read on the board side
# ("read-failed" if the read fails or hangs).
board_sha() {
    local s
    s=$(timeout -s KILL "${3:-240}" sha256sum "${B_MNT[$1]}/$2" 2>>"$SC_OUT/guest.log" | cut -d' ' -f1)
    echo "${s:-read-failed}"
}

# list_json_ifaces SERIAL: from `usb9pfsd list --json`, the entries with that
# serial as "IFACE/ALT" (sorted, space separated; "-" for a field the entry
# lacks), or "not JSON: ..." (the raw output goes to $SC_OUT/list-<serial>.json)
list_json_ifaces() {
    local out
    out=$(timeout -s KILL 60 "$USB9PFSD" list --json --config "$FWD_CONFIG" 2>>"$SC_OUT/usb9pfsd-list.stderr")
    printf '%s\n' "$out" > "$SC_OUT/list-$1.json"
    printf '%s' "$out" | python3 -c '
import json, sys
serial = sys.argv[1]
try:
    arr = json.load(sys.stdin)
except Exception as e:
    print("not JSON: %s" % e); sys.exit(0)
def field(o, *names):
    for n in names:
        if n in o and o[n] is not None:
            return str(o[n])
    return "-"
rows = sorted(field(o, "interface", "iface", "bInterfaceNumber") + "/" + field(o, "alt", "alt_setting", "alternate_setting")
              for o in arr if isinstance(o, dict) and o.get("serial") == serial)
print(" ".join(rows))
' "$1"
}

requires_usb9pfsd() {
    if [ "$RIG_FWD" != usb9pfsd ]; then
        write_result SKIP "needs usb9pfsd (RIG_FWD=$RIG_FWD)"
        exit 0
    fi
}

# ---------------------------------------------------------------- teardown
# Unmount everything the board side mounted (bounded); never unbinds a UDC.
rig_teardown() {
    local name
    touch "$LOCAL/stop"; [ -z "$STREAMER" ] || kill -KILL "$STREAMER" 2>/dev/null || true
    sim_stop
    for name in "${!SIMS_PID[@]}"; do sim_use "$name"; sim_stop; done
    for name in "${!B_MNT[@]}"; do
        is_mounted "${B_MNT[$name]}" && { board_umount "$name" 30 || log "teardown: umount of board $name failed"; }
    done
    fwd_stop 2>/dev/null || true
    local d; for d in "${!DIOD_PID[@]}"; do kill -KILL "${DIOD_PID[$d]}" 2>/dev/null || true; done
}

# ------------------------------------------------ several scenarios, one boot
# rig_group_note: after the teardown, tell rig_release (main.sh, which runs
# the next scenario of the boot) which gadgets this scenario made and which
# of them carry a usb9pfs board plugged and never mounted since: unbinding
# those wedges the guest (board_unplug). Run by scenario.sh.
rig_group_note() {
    [ -n "${RIG_GROUP_DIR:-}" ] || return 0
    local g b
    for g in "${!G_SERIAL[@]}"; do
        echo "$g" >> "$RIG_GROUP_DIR/gadgets"
        for b in ${G_BOARDS[$g]:-}; do
            if [ "${B_FRESH[$b]:-0}" = 1 ]; then echo "$g" >> "$RIG_GROUP_DIR/fresh"; break; fi
        done
    done
}

# rig_release PIDS: between two scenarios of one boot, put the guest back
# the way a fresh boot leaves it: kill every process not in PIDS (the boot's
# own, " PID PID ... "), unplug and remove every gadget, unload dummy_hcd
# (the next rig_setup loads it with its own number of UDCs, and the buses are
# numbered from 1 again) and unmount the rig's tmpfs. Prints nothing when
# done; otherwise one line saying why the next scenario cannot run in this
# boot. Never unbinds a UDC under a 9P board mount (trap 3) or a usb9pfs
# board plugged and never mounted since (board_unplug), and never unbinds a
# gadget it cannot vouch for: it stops instead.
rig_release() {
    local before=$1 p pid i g f line mnt fstype opts rest c keep=" " udevd
    # 1. what the scenario left running: not the boot's processes, not this
    # shell and its parents, not udev's workers, not kernel threads (no
    # command line)
    pid=$BASHPID
    while [ -n "$pid" ] && [ "$pid" -gt 1 ]; do
        keep="$keep$pid "
        pid=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$pid/status" 2>/dev/null)
    done
    udevd=" $(pgrep -x systemd-udevd | tr '\n' ' ') "
    for i in 1 2 3; do
        line=""
        for p in /proc/[0-9]*; do
            pid=${p#/proc/}
            case $before$keep in *" $pid "*) continue ;; esac
            c=""; IFS= read -r -d '' c < "$p/cmdline" 2>/dev/null
            [ -n "$c" ] || continue
            f=$(sed -n 's/^PPid:[[:space:]]*//p' "$p/status" 2>/dev/null)
            case $udevd in *" $f "*) continue ;; esac
            line="$line $pid"
            kill -KILL "$pid" 2>/dev/null || true
        done
        [ -n "$line" ] || break
        [ "$i" -gt 1 ] || log "release: killed what the scenario left running:$line"
        sleep 1
    done
    [ -z "$line" ] || { echo "processes of the scenario would not die:$line"; return 0; }
    # 2. no 9P board mount may be left (the rig's own 9p mounts are virtio)
    while read -r f mnt fstype opts rest; do
        case $fstype in 9p) case $opts in *trans=virtio*) ;; *) echo "a 9P mount is left on $mnt ($opts)"; return 0 ;; esac ;; esac
    done < /proc/self/mounts
    # 3. gadgets: unbind what is safe to unbind, then remove them
    if [ -d "$GADGETS" ]; then
        for g in "$GADGETS"/*/; do
            [ -d "$g" ] || continue
            g=${g%/}
            f=$(cat "$g/UDC" 2>/dev/null)
            if [ -n "$f" ] && compgen -G "$g/configs/*/usb9pfs.*" >/dev/null; then
                grep -qxF "${g##*/}" "$RIG_GROUP_DIR/gadgets" 2>/dev/null \
                    || { echo "gadget ${g##*/} with a usb9pfs function is plugged and the scenario did not say it may be unplugged"; return 0; }
                ! grep -qxF "${g##*/}" "$RIG_GROUP_DIR/fresh" 2>/dev/null \
                    || { echo "gadget ${g##*/} carries a usb9pfs board plugged and never mounted since: unbinding it wedges the guest"; return 0; }
            fi
            if [ -n "$f" ]; then
                echo "" > "$g/UDC" || { echo "could not unbind gadget ${g##*/} from $f"; return 0; }
            fi
        done
        udevadm settle -t 10 2>/dev/null || true
        # FunctionFS instances are removable only once unmounted
        while read -r f mnt fstype rest; do
            [ "$fstype" != functionfs ] || umount "$mnt" 2>/dev/null || { echo "could not unmount functionfs on $mnt"; return 0; }
        done < /proc/self/mounts
        for g in "$GADGETS"/*/; do
            [ -d "$g" ] || continue
            g=${g%/}
            for f in "$g"/configs/*/*; do [ ! -L "$f" ] || rm -f "$f"; done
            for f in "$g"/configs/*/strings/* "$g"/configs/* "$g"/functions/* "$g"/strings/*; do
                [ ! -d "$f" ] || rmdir "$f" 2>/dev/null || true
            done
            rmdir "$g" 2>/dev/null || { echo "could not remove gadget ${g##*/}"; return 0; }
        done
    fi
    # 4. dummy_hcd goes, with its buses; then the rig's scratch file systems
    if grep -q '^dummy_hcd ' /proc/modules; then
        rmmod dummy_hcd 2>/dev/null || { echo "rmmod dummy_hcd failed"; return 0; }
    fi
    for f in "$EXPORTS" "$LOCAL"; do
        if is_mounted "$f"; then umount "$f" 2>/dev/null || { echo "could not unmount $f"; return 0; }; fi
    done
    rm -rf "$MNTROOT"
    udevadm settle -t 10 2>/dev/null || true
    log "release: gadgets removed, dummy_hcd unloaded, scratch unmounted: the next scenario starts clean"
}

# ---------------------------------------------------------------- board simulator
# tests/vm/board-sim/board_sim.py: a user-space usb9pfs board on FunctionFS
# (usb_f_fs), run as a bash co-process: one command per line in, `# ...` info
# lines and one `END ok|fail ...` line out. It has no kernel 9P client, so it
# may vanish mid-transfer (the trap-3 rule is about kernel usb9pfs boards).
# Its own endpoint operations have deadlines, so sim_cmd's read timeout only
# guards against a dead simulator.
SIM_PY=$RIG_VM/board-sim/board_sim.py
FAKE9P_PY=$RIG_VM/board-sim/fake9p.py
SIM_REPLY="" SIM_SERIAL="" SIM_BA="" SIM_ANAME="" SIM_FILE="" SIM_SHA="" SIM_LOG=""

# sim_start NAME SERIAL VID:PID UDC [BOARD_SIM_ARGS...]: create the gadget
# (not plugged yet); e.g. --alt-layout for endpoints on alternate setting 1
sim_start() {
    modprobe usb_f_fs || die "modprobe usb_f_fs failed"
    coproc SIM { exec python3 -u "$SIM_PY" --name "$1" --serial "$2" --id "$3" --udc "$4" "${@:5}" 2>>"$SC_OUT/board-sim.err"; }
    SIM_SERIAL=$2
    local line
    IFS= read -r -t 30 line <&"${SIM[0]}" || die "board simulator did not start: $(tail -3 "$SC_OUT/board-sim.err" | tr '\n' ' ')"
    echo "$line" >> "$SC_OUT/board-sim.log"
    case $line in "END ok"*) log "sim: ${line#END ok }" ;; *) die "board simulator: $line" ;; esac
}

# Several simulators at once (a bash shell has one coproc): sim_spawn NAME
# SERIAL VID:PID UDC starts board_sim.py NAME talking through two FIFOs
# instead (gadget created, not plugged); sim_use NAME points sim_cmd,
# sim_plug, sim_session and sim_stop at it (SIM holds its fds, as the
# coproc's would; its log is board-sim-NAME.log). A background subshell may
# drive one simulator after sim_use while the main shell leaves it alone.
declare -gA SIMS_R=() SIMS_W=() SIMS_PID=() SIMS_SERIAL=()
sim_spawn() {
    local name=$1 f=$LOCAL/sim-$1 r w line
    modprobe usb_f_fs || die "modprobe usb_f_fs failed"
    mkfifo "$f.in" "$f.out"
    (
        # not the other simulators' FIFOs: each sees EOF when the rig closes its own
        for r in "${SIMS_R[@]}" "${SIMS_W[@]}"; do exec {r}>&-; done
        exec python3 -u "$SIM_PY" --name "$1" --serial "$2" --id "$3" --udc "$4"
    ) <"$f.in" >"$f.out" 2>>"$SC_OUT/board-sim-$name.err" &
    SIMS_PID[$name]=$!
    exec {w}>"$f.in" {r}<"$f.out"
    SIMS_R[$name]=$r SIMS_W[$name]=$w SIMS_SERIAL[$name]=$2
    sim_use "$name"
    IFS= read -r -t 30 line <&"$r" || die "board simulator $name did not start: $(tail -3 "$SC_OUT/board-sim-$name.err" | tr '\n' ' ')"
    echo "$line" >> "$SIM_LOG"
    case $line in "END ok"*) log "sim $name: ${line#END ok }" ;; *) die "board simulator $name: $line" ;; esac
}
sim_use() {
    SIM=("${SIMS_R[$1]}" "${SIMS_W[$1]}") SIM_PID=${SIMS_PID[$1]} SIM_SERIAL=${SIMS_SERIAL[$1]}
    SIM_LOG=$SC_OUT/board-sim-$1.log
}

# sim_cmd SECONDS COMMAND...: run one simulator command; SIM_REPLY = its answer;
# status 0 for ok, 1 for fail, 2 when the simulator itself did not answer.
sim_cmd() {
    local t=$1 line; shift
    SIM_REPLY=""
    printf '> %s\n' "$*" >> "${SIM_LOG:-$SC_OUT/board-sim.log}"
    printf '%s\n' "$*" >&"${SIM[1]}" || { SIM_REPLY="simulator is gone"; return 2; }
    while :; do
        if ! IFS= read -r -t "$t" line <&"${SIM[0]}"; then
            SIM_REPLY="simulator gave no answer within $t s"; log "sim: $*: $SIM_REPLY"; return 2
        fi
        printf '%s\n' "$line" >> "${SIM_LOG:-$SC_OUT/board-sim.log}"
        case $line in
        "END ok"*) SIM_REPLY=${line#END ok }; log "sim: $* -> ok: $SIM_REPLY"; return 0 ;;
        "END fail"*) SIM_REPLY=${line#END fail }; log "sim: $* -> FAIL: $SIM_REPLY"; return 1 ;;
        esac
    done
}

# sim_plug: bind the simulator's gadget and wait until the host enumerated it;
# SIM_BA = its bus-address regex for log checks (it changes with every plug).
sim_plug() {
    sim_cmd 20 plug || die "sim: plug failed: $SIM_REPLY"
    wait_until 30 host_dev_present "$SIM_SERIAL" || die "simulator ($SIM_SERIAL) did not enumerate on the host side"
    local p; p=$(host_dev_of "$SIM_SERIAL")
    wait_until 20 test -e "/sys/bus/usb/devices/$p:1.0" || die "simulator: interface $p:1.0 missing"
    udevadm settle -t 10 2>/dev/null || true
    SIM_BA=$(busaddr_re "$SIM_SERIAL")
    sim_cmd 10 mps >/dev/null || true
    log "simulator plugged: port $p busaddr ~ $SIM_BA"
}
sim_unplug() {
    sim_cmd 20 unplug || bad "sim: unplug failed: $SIM_REPLY"
    wait_until 30 host_dev_absent "$SIM_SERIAL" || die "simulator did not disappear from the host side"
    udevadm settle -t 10 2>/dev/null || true
}
sim_stop() {
    [ -n "${SIM_PID:-}" ] || return 0
    kill -0 "$SIM_PID" 2>/dev/null || return 0   # a write to its closed pipe would kill us (SIGPIPE)
    sim_cmd 20 quit >/dev/null 2>&1 || true
    wait_until 10 sh -c "! kill -0 $SIM_PID 2>/dev/null" || kill -KILL "$SIM_PID" 2>/dev/null || true
}

# sim_session DESCRIPTION: a whole valid 9P2000.L session through usb9pfsd
# (SIM_ANAME, SIM_FILE, SIM_SHA), checked reply by reply and by checksum.
# An attempt may meet a worker still in its restart backoff (the simulator's
# writes wait for the host, bounded by its deadline) or a session refused for
# a while after a fault (Tversion answered with an error): 3 tries, 3 s apart.
sim_session() {
    local i
    for i in 1 2 3; do
        if sim_cmd 150 session "$SIM_ANAME" "$SIM_FILE" "$SIM_SHA"; then ok "$1 (${SIM_REPLY}; try $i)"; return 0; fi
        [ "$i" -eq 3 ] || sleep 3
    done
    bad "$1: $SIM_REPLY"
}

# Daemon log checks. log_mark remembers how long the log is; log_since
# prints what came after. log_names SERIAL BUSADDR_RE PATTERN: a line since
# the mark names the board (serial and bus-address) and matches PATTERN
# (extended regex, case-insensitive). Wording is not asserted beyond PATTERN.
LOG_MARK=0
log_mark() { LOG_MARK=$(fwd_log | wc -l); }
log_since() { fwd_log | tail -n +"$((LOG_MARK + 1))"; }
log_names() { log_since | grep -F -- "$1" | grep -E -- "busaddr=$2([^0-9]|\$)" | grep -Eiq -- "$3"; }
log_count() { log_since | grep -F -- "$1" | grep -Eic -- "$2" || true; }

# fault_rig_setup: the fault scenarios' common start: two dummy_hcd ports,
# diod "s" on 5640 exporting $EXPORTS/s with a 256 KiB data.bin (the
# simulator's server) and diod "b" on 5641 exporting $EXPORTS/b with a 4 MiB
# stream.bin (board B's), whose sha256 goes to FAULT_WANT_B.
fault_rig_setup() {
    rig_setup 2
    mkdir -p "$EXPORTS/s" "$EXPORTS/b"
    diod_start s 5640 "$EXPORTS/s"
    diod_start b 5641 "$EXPORTS/b"
    dd if=/dev/urandom of="$EXPORTS/s/data.bin" bs=1k count=256 status=none
    dd if=/dev/urandom of="$EXPORTS/b/stream.bin" bs=1M count=4 status=none
    FAULT_WANT_B=$(sha "$EXPORTS/b/stream.bin")
}
# fault_rig_start DESCRIPTION: board B (0002-BOARD-B on dummy_udc.1, served
# by diod b) and the simulator SIM_SERIAL on dummy_udc.0 (its mapping set by
# the caller), the daemon started (PID0), B mounted, then one checked
# simulator session reading data.bin (a check named DESCRIPTION).
fault_rig_start() {
    board_create B 0002-BOARD-B 1209:0001 rigB dummy_udc.1
    B_BACKEND[B]=127.0.0.1:5641
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    sim_start sim "$SIM_SERIAL" 1d6b:0109 dummy_udc.0
    board_plug B
    sim_plug
    fwd_start
    PID0=$FWD_PID
    board_mount B "$EXPORTS/b" || die "board B: mount failed"
    SIM_ANAME=$EXPORTS/s SIM_FILE=data.bin SIM_SHA=$(sha "$EXPORTS/s/data.bin")
    sim_session "$1"
}

# fwd_same_pid PID: usb9pfsd is still the same, living process.
fwd_same_pid() { [ "$FWD_PID" = "$1" ] && kill -0 "$1" 2>/dev/null; }
fwd_hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$FWD_PID/status" 2>/dev/null; }

# stream_start MOUNTED_FILE / stream_stop_check DESCRIPTION SHA MIN_ROUNDS:
# a real kernel board reads a file in a loop while faults are injected
# elsewhere; every read must match, and there must be enough of them.
STREAMER=""
stream_start() {
    rm -f "$LOCAL/stop" "$LOCAL/stream.sums"
    (
        while [ ! -e "$LOCAL/stop" ]; do
            s=$(timeout -s KILL 300 sha256sum "$1" 2>/dev/null | cut -d' ' -f1)
            echo "${s:-read-failed}" >> "$LOCAL/stream.sums"
        done
    ) &
    STREAMER=$!
}
stream_stop_check() {
    local d=$1 want=$2 min=$3 n=0 total good
    touch "$LOCAL/stop"
    while kill -0 "$STREAMER" 2>/dev/null && [ $n -lt 600 ]; do sleep 0.5; n=$((n + 1)); done
    kill -KILL "$STREAMER" 2>/dev/null || true
    touch "$LOCAL/stream.sums"
    total=$(wc -l < "$LOCAL/stream.sums")
    good=$(grep -c "^$want\$" "$LOCAL/stream.sums" || true)
    cp "$LOCAL/stream.sums" "$SC_OUT/stream.sums"
    expect "$d: at least $min full reads completed meanwhile (got $total)" test "$total" -ge "$min"
    expect_eq "$d: every read has the right sha256" "$total" "$good"
}

# ------------------------------------------------------------ rig guards
# rig_guard DESCRIPTION CMD...: a precondition of the rig's own setup (what
# the test itself wrote or configured). Stops the scenario when it does not
# hold; passes silently, so it is never counted as a check of usb9pfsd.
rig_guard() { local d=$1; shift; "$@" || die "rig setup: $d (command failed: $*)"; }

# ------------------------------------------------ declared-size allocations
# alloc_watch_start / alloc_watch_check DESCRIPTION: while a fault declares a
# size, strace follows every thread of usb9pfsd (and every thread it starts)
# for the calls that reserve memory: mmap, mremap, brk, and mprotect (glibc
# grows a thread arena's heap with it). The check fails when any of them
# asked for >= ALLOC_BOUND bytes of readable/writable memory, touched or
# not: VmRSS and VmHWM count only touched pages, so they cannot see a
# vec![0; declared] (calloc hands back fresh zero pages) or a
# Vec::with_capacity(declared). The largest legitimate requests are the
# frame buffers (max_frame, 1 MiB by default) and thread stacks (2 MiB);
# glibc's 64 MiB arena reservations are PROT_NONE and do not count. The
# watch counts only if strace attached to every thread (TracerPid) and was
# still running when stopped.
ALLOC_BOUND=${ALLOC_BOUND:-$((16 << 20))}
ALLOC_WATCH=""
alloc_watch_start() {
    local t args=()
    for t in /proc/"$FWD_PID"/task/*; do args+=(-p "${t##*/}"); done
    rm -f "$LOCAL/alloc.strace"
    strace -f -qq -e trace=mmap,mremap,brk,mprotect -e signal=none -o "$LOCAL/alloc.strace" "${args[@]}" \
        2>>"$SC_OUT/strace.err" &
    ALLOC_WATCH=$!
    # attached = every thread has a tracer
    alloc_traced() {
        local s
        for s in /proc/"$FWD_PID"/task/*/status; do
            [ "$(awk '/^TracerPid:/ {print $2}' "$s" 2>/dev/null)" = "$ALLOC_WATCH" ] || return 1
        done
    }
    wait_until 30 alloc_traced || bad "alloc watch: strace did not attach to every usb9pfsd thread within 30 s"
}
alloc_watch_check() {
    local d=$1 verdict
    [ -n "$ALLOC_WATCH" ] || { bad "$d: no alloc watch was running"; return; }
    kill -INT "$ALLOC_WATCH" 2>/dev/null || { bad "$d: strace ended before the fault was over ($(tail -2 "$SC_OUT/strace.err" | tr '\n' ' '))"; ALLOC_WATCH=""; return; }
    wait "$ALLOC_WATCH" 2>/dev/null || true
    ALLOC_WATCH=""
    cat "$LOCAL/alloc.strace" >> "$SC_OUT/alloc.strace" 2>/dev/null || true
    verdict=$(python3 "$RIG_VM/guest/tools/alloc_check.py" "$ALLOC_BOUND" "$LOCAL/alloc.strace" 2>&1)
    case $verdict in
    ok*) ok "$d: no request for >= $((ALLOC_BOUND >> 20)) MiB of memory, touched or not ($verdict)" ;;
    *) bad "$d: $verdict" ;;
    esac
}
