# shellcheck shell=bash
# serve: issue 22's runtime mapping and managed diod, with no 9P server
# started by hand.
#  - Board A's whole config entry is its serial and `export = DIR`: a
#    developer's tree owned by a normal user (uid 1000). A mounts it as root:
#    a file read through the board matches its checksum, a file the board
#    writes matches on the host and belongs to uid 1000 (every board user is
#    squashed to the tree's owner); nothing above the tree is reachable; the
#    managed diod runs as uid 1000, never as root, and is gone once A unmounts.
#  - Board B is in no config: `usb9pfsd serve B --export TREE` serves it (B
#    mounts, checksums match), status says who set it and when, and a user
#    outside root/usb9pfsd-admin cannot change it. A second serve while B is
#    mounted leaves B's live session where it is; B's next mount sees the new
#    tree. `usb9pfsd reexec` keeps the serve and B's live session with its
#    diod, which the new image reaps. A tree owned by root is refused
#    and the board's mount fails at once with the reason in status.
#    `unserve` gives B back to the config (unserved: released).
#
# SERVE_PLANT=1 serves B's second tree as root:root-owned: the checks that
# the managed server runs as the tree's owner must turn red.
SERVE_PLANT=${SERVE_PLANT:-0}
# a user other than root whom diod can look up (its own uid): 1000 if the
# machine has one, else nobody
DEV_UID=$(getent passwd 1000 >/dev/null && echo 1000 || id -u nobody)

# managed_diods DIR: pids of diod processes exporting DIR.
managed_diods() { pgrep -f -- "diod .*--export $1\$" || true; }
# status_py EXPR: evaluate a Python expression on `usb9pfsd status --json` (as s).
status_py() { "$USB9PFSD" status --json | python3 -c "import json,sys; s=json.load(sys.stdin); print($1)" 2>&1; }

scenario_main() {
    requires_usb9pfsd
    rig_setup 2
    local ta=$EXPORTS/dev-a tb=$EXPORTS/dev-b tc=$EXPORTS/dev-c troot=$EXPORTS/root-owned
    mkdir -p "$ta/etc" "$tb" "$tc" "$troot"
    dd if=/dev/urandom of="$ta/big.bin" bs=1M count=4 status=none
    echo "tree a" > "$ta/etc/hostname"
    echo "tree b" > "$tb/which"
    echo "tree c" > "$tc/which"
    chown -R "$DEV_UID:$DEV_UID" "$ta" "$tb" "$tc"
    [ "$SERVE_PLANT" != 1 ] || { log "PLANTED FAULT: tree c owned by root"; chown -R 0:0 "$tc"; }
    echo secret > "$EXPORTS/outside"

    board_create A 0041-SERVE-A 1d6b:0109 rigA dummy_udc.0
    board_create B 0042-SERVE-B 1d6b:0109 rigB dummy_udc.1
    local cfg=$LOCAL/usb9pfsd.toml
    cat > "$cfg" <<EOF
# written by tests/vm/guest/scenarios/serve.sh: board A's entry is its serial
# and a directory; board B is in no entry.
[[board]]
serial = "0041-SERVE-A"
export = "$ta"
EOF
    FWD_CONFIG=$cfg
    cp "$cfg" "$SC_OUT/usb9pfsd.toml"
    board_plug A
    board_plug B
    fwd_start
    local pid0=$FWD_PID

    # ------------------------------------------------ A: one line of config
    expect "check-config accepts the one-line managed entry" "$USB9PFSD" check-config "$cfg"
    board_mount A "$ta" || die "board A: mount of its managed export failed"
    local m=${B_MNT[A]}
    expect_eq "A reads a 4 MiB file with the tree's sha256" "$(sha "$ta/big.bin")" "$(timeout -s KILL 120 sha256sum "$m/big.bin" | cut -d' ' -f1)"
    dd if=/dev/urandom of="$LOCAL/up.bin" bs=1M count=2 status=none
    timeout -s KILL 120 cp "$LOCAL/up.bin" "$m/up.bin" || bad "A: writing a file failed"
    expect_eq "the file A wrote has the same sha256 in the tree" "$(sha "$LOCAL/up.bin")" "$(sha "$ta/up.bin")"
    expect_eq "what A's root wrote belongs to the tree's owner" "$DEV_UID:$DEV_UID" "$(stat -c %u:%g "$ta/up.bin" 2>&1)"
    expect_eq "A's root sees the tree's files" "tree a" "$(cat "$m/etc/hostname" 2>&1)"
    expect_eq "A's mount holds exactly the tree (nothing beside or above it)" "$(cd "$ta" && ls -A | sort | tr '\n' ' ')" "$(cd "$m" && ls -A | sort | tr '\n' ' ')"
    local pids; pids=$(managed_diods "$ta")
    expect_eq "one managed diod serves A" 1 "$(echo "$pids" | grep -c .)"
    local dp; dp=$(echo "$pids" | head -n1)
    expect_eq "A's diod runs as uid $DEV_UID, not root" "$DEV_UID" "$(stat -c %u "/proc/$dp" 2>&1)"
    expect_eq "A's diod listens on no socket (a socketpair only)" 0 "$(ss -Hlp 2>/dev/null | grep -c "pid=$dp," || true)"
    board_umount A || bad "board A: umount failed"
    expect "A's diod is gone once A unmounted" wait_until 20 test -z "$(managed_diods "$ta")"

    # ------------------------------------------------ B: usb9pfsd serve
    expect_eq "B is not served by the config" ignored "$(status_py 'next(b["state"] for b in s["boards"] if b["serial"] == "0042-SERVE-B")')"
    local out rc=0
    out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$USB9PFSD" serve 0042-SERVE-B --export "$tb" 2>&1) || rc=$?
    if [ "$rc" -ne 0 ]; then ok "a user outside root and usb9pfsd-admin cannot serve (rc=$rc: $out)"; else bad "nobody could serve: $out"; fi
    expect_eq "and nothing was set" 0 "$(status_py 'len(s["daemon"]["serves"])')"
    out=$("$USB9PFSD" serve 0042-SERVE-B --export "$tb" 2>&1) || bad "usb9pfsd serve failed: $out"
    log "serve: $out"
    expect_eq "status lists the serve, by uid 0" "0042-SERVE-B $tb 0" \
        "$(status_py '" ".join(str(x) for x in (s["daemon"]["serves"][0]["board"], s["daemon"]["serves"][0]["export"], s["daemon"]["serves"][0]["by_uid"]))')"
    board_mount_retry B "$tb" 30 || die "board B: mount after usb9pfsd serve failed"
    expect_eq "B mounts the served tree" "tree b" "$(cat "${B_MNT[B]}/which" 2>&1)"
    echo "from b" > "${B_MNT[B]}/made" || bad "B: write failed"
    expect_eq "what B wrote is in the tree" "from b" "$(cat "$tb/made" 2>&1)"

    # A second serve while B is mounted: the live session stays.
    out=$("$USB9PFSD" serve serial:0042-SERVE-B --export "$tc" 2>&1) || bad "second serve failed: $out"
    expect_eq "B's live session still reads tree b" "tree b" "$(cat "${B_MNT[B]}/which" 2>&1)"
    board_umount B || bad "board B: umount failed"
    board_mount_retry B "$tc" 30 || bad "board B: mount of the new tree failed"
    expect_eq "B's next mount is served tree c" "tree c" "$(cat "${B_MNT[B]}/which" 2>&1)"
    local dc; dc=$(managed_diods "$tc" | head -n1)
    expect_eq "tree c's diod runs as its owner" "$DEV_UID" "$(stat -c %u "/proc/$dc" 2>&1)"

    # A re-exec of the daemon with B mounted: the session and its diod
    # carry on; the serve is kept; the new image reaps the diod it did not
    # start when the session ends.
    out=$("$USB9PFSD" reexec 2>&1) || bad "usb9pfsd reexec failed: $out"
    expect_eq "after reexec B's session reads through the same diod" "tree c $dc" "$(cat "${B_MNT[B]}/which" 2>&1) $(managed_diods "$tc" | head -n1)"
    board_umount B || bad "board B: umount failed"
    expect "after the umount that diod is gone, not left a zombie" wait_until 20 sh -c "! test -e /proc/$dc"
    expect_eq "after reexec the serve is still set" "0042-SERVE-B $tc" \
        "$(status_py '" ".join(x["board"] + " " + x["export"] for x in s["daemon"]["serves"] if x["export"] == "'"$tc"'")')"

    # A tree owned by root: refused, the board told at once, status says why.
    "$USB9PFSD" serve 0042-SERVE-B --export "$troot" >/dev/null 2>&1 || bad "serve of the root-owned tree was not accepted"
    if board_mount B "$troot" 60; then bad "B mounted a root-owned tree through a managed diod"; board_umount B; else ok "B's mount of a root-owned tree fails"; fi
    expect_eq "no diod was started for it" "" "$(managed_diods "$troot")"
    expect "status says why (never runs as root)" sh -c "'$USB9PFSD' status | grep -q 'never runs as root'"

    # unserve: B goes back to the config, which does not serve it.
    out=$("$USB9PFSD" unserve 0042-SERVE-B 2>&1) || bad "unserve failed: $out"
    if "$USB9PFSD" unserve 0042-SERVE-B >/dev/null 2>&1; then bad "a second unserve succeeded"; else ok "a second unserve says nothing is set"; fi
    expect_eq "after unserve nothing is set" 0 "$(status_py 'len(s["daemon"]["serves"])')"
    expect "B is released (ignored) again" wait_until 20 sh -c "[ \"\$('$USB9PFSD' status --json | python3 -c 'import json,sys; print(next(b[\"state\"] for b in json.load(sys.stdin)[\"boards\"] if b[\"serial\"] == \"0042-SERVE-B\"))')\" = ignored ]"
    expect_eq "no managed diod is left" "" "$(pgrep -x diod || true)"
    expect "usb9pfsd is the same living process (pid $pid0, re-executed in place)" fwd_same_pid "$pid0"
    expect_not "usb9pfsd log has no panic" sh -c "grep -qi panick '$SC_OUT/usb9pfsd.log'"
}
