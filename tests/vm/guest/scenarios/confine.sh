# shellcheck shell=bash
# confine: issue 18's confinement against Debian's diod exporting the PARENT
# of several boards' trees (the shared-server layout of docs/security.md),
# where diod itself would hand a board its neighbours (`..` at its export
# root is the parent, names are resolved through the host's symlinks).
#  - The FunctionFS board simulator, confined to $FARM/a by `export`, tries
#    every escape it knows (board_sim.py `escapes`): anames outside, with
#    `..`, the neighbour's, the parent; `..` walks from the root, stepwise
#    and inline; names with `/` (walk, create, mkdir); a symlink it makes
#    pointing out, walked through and attached through; a directory renamed
#    under a fid with its old name turned into a symlink to the neighbour,
#    then walked below and up; Tauth. Each is refused or stays inside, and
#    the neighbour's tree and the parent are unchanged on the server.
#  - Kernel board R (a real `mount -t 9p -o trans=usbg`), confined with
#    read_only = true: every write-class operation fails with EROFS and its
#    tree on the server is byte-for-byte what it was.
#  - Kernel board Q with uid/gid squash: what its root creates belongs to
#    the configured uid/gid on the server, and it cannot chown.
# Unconfined boards behaving as before is every other scenario's job.
#
# CONFINE_PLANT=1 writes the config without any confinement key: the planted
# fault that must turn the escape, read-only and squash checks red.
CONFINE_PLANT=${CONFINE_PLANT:-0}
SQUASH_ID=65534    # nobody/nogroup: diod looks the uid up in the user database

# esc NAME: the simulator's answer to escape NAME (from SIM_REPLY).
esc() {
    local w
    for w in $SIM_REPLY; do
        case $w in "$1="*) echo "${w#*=}"; return ;; esac
    done
    echo missing
}
# esc_is NAME WANT DESCRIPTION / esc_not NAME NOT DESCRIPTION
esc_is() { expect_eq "$3 ($1)" "$2" "$(esc "$1")"; }
esc_not() {
    local got; got=$(esc "$1")
    if [ "$got" != "$2" ] && [ "$got" != missing ]; then ok "$3 ($1: $got)"; else bad "$3 ($1: $got)"; fi
}

# tree_sum DIR: one hash over every entry's name, type, mode, owner, size,
# mtime, ctime and link target, and every regular file's content.
tree_sum() {
    (cd "$1" && { find . -printf '%p %y %m %u %g %s %T@ %C@ %l\n' | sort; find . -type f -exec sha256sum {} + | sort; }) \
        | sha256sum | cut -d' ' -f1
}

# erofs DESCRIPTION CMD: CMD (a shell line on board R's mount) must fail
# with "Read-only file system".
erofs() {
    local out rc=0
    out=$(cd "${B_MNT[R]}" && timeout -s KILL 30 sh -c "$2" 2>&1) || rc=$?
    if [ "$rc" -ne 0 ] && printf '%s' "$out" | grep -q 'Read-only file system'; then
        ok "read_only: $1 fails with EROFS"
    else
        bad "read_only: $1: rc=$rc, $(printf '%s' "$out" | tr '\n' ' ')"
    fi
}

scenario_main() {
    requires_usb9pfsd
    rig_setup 3
    local farm=$EXPORTS/farm
    local exa=$farm/a exb=$farm/b exr=$farm/ro exq=$farm/sq
    mkdir -p "$exa/sub" "$exb/d2" "$exr/dir" "$exq"
    echo top > "$farm/top"
    echo mine > "$exa/mine"
    echo theirs > "$exb/theirs"
    echo theirs-too > "$exb/d2/theirs"
    echo keep > "$exr/file"
    echo deep > "$exr/dir/x"
    ln -s file "$exr/link"
    chmod 0777 "$exq"
    diod_start farm 5640 "$farm"

    local sim_serial=0031-CONF-A
    board_create R 0032-CONF-RO 1209:0001 rigR dummy_udc.1
    board_create Q 0033-CONF-SQ 1209:0001 rigQ dummy_udc.2
    local cfg=$LOCAL/usb9pfsd.toml ka="" kr="" kq=""
    if [ "$CONFINE_PLANT" != 1 ]; then
        ka="export = \"$exa\""
        kr="export = \"$exr\""$'\n'"read_only = true"
        kq="export = \"$exq\""$'\n'"uid = $SQUASH_ID"$'\n'"gid = $SQUASH_ID"
    else
        log "PLANTED FAULT: no confinement keys in the config"
    fi
    cat > "$cfg" <<EOF
# written by tests/vm/guest/scenarios/confine.sh
[[board]]
serial = "$sim_serial"
backend = "127.0.0.1:5640"
$ka

[[board]]
serial = "0032-CONF-RO"
backend = "127.0.0.1:5640"
$kr

[[board]]
serial = "0033-CONF-SQ"
backend = "127.0.0.1:5640"
$kq
EOF
    FWD_CONFIG=$cfg
    cp "$cfg" "$SC_OUT/usb9pfsd.toml"

    sim_start sim "$sim_serial" 1209:9fff dummy_udc.0
    board_plug R
    board_plug Q
    sim_plug
    fwd_start
    local pid0=$FWD_PID

    # ------------------------------------------------ the simulator's escapes
    local sum_b0 sum_top0
    sum_b0=$(tree_sum "$exb") sum_top0=$(sha "$farm/top")
    if ! wait_until 30 sim_cmd 60 probe "$exa"; then bad "simulator: no session: $SIM_REPLY"; fi
    if sim_cmd 120 escapes "$exa" "$exb" "$farm"; then ok "simulator: escape attempts all answered"
    else bad "simulator: escapes: $SIM_REPLY"; fi
    printf '%s\n' $SIM_REPLY > "$SC_OUT/escapes.txt"
    esc_is auth Rlerror:13 "Tauth is refused (EACCES)"
    esc_is attach-root Rlerror:13 "attach to / is EACCES"
    esc_is attach-dotdot Rlerror:13 "attach to the export's .. is EACCES"
    esc_is attach-neighbour Rlerror:13 "attach to the neighbour's export is EACCES"
    esc_is attach-parent Rlerror:13 "attach to the server's export (the parent) is EACCES"
    esc_is attach-neighbour-via-dotdot Rlerror:13 "attach to export/../neighbour is EACCES"
    esc_is attach-export Rattach "attach to its own export works"
    esc_not walk-dotdot-neighbour Rwalk:3 "walk .. /neighbour/theirs from the root does not reach the neighbour"
    esc_not walk-dotdot-top Rwalk:2 "walk .. /top from the root does not reach the parent"
    esc_is walk-dotdot-qid root "walk .. from the root stays at the root"
    esc_not walk-from-dotdot Rwalk:2 "walking on from that .. does not reach the neighbour"
    esc_is walk-step2-qid root "stepwise .. from sub, twice, stays at the root"
    esc_not walk-stepwise-neighbour Rwalk:2 "stepwise .. then neighbour/theirs does not reach it"
    esc_not walk-stepwise-top Rwalk:1 "stepwise .. then top does not reach the parent"
    esc_not walk-inline Rwalk:5 "one walk sub/../../neighbour/theirs does not reach it"
    esc_is walk-slash-up Rlerror:22 "a walk name '../neighbour' is EINVAL"
    esc_is walk-slash-abs Rlerror:22 "a walk name that is an absolute path is EINVAL"
    esc_is create-slash Rlerror:22 "Tlcreate of '../neighbour/x' is EINVAL"
    esc_is mkdir-slash Rlerror:22 "Tmkdir of '../neighbour/x' is EINVAL"
    esc_is symlink-make R17 "the board may make a symlink pointing out (inside its export)"
    esc_is walk-through-symlink Rlerror:40 "walking through its symlink to the parent is ELOOP"
    esc_is walk-from-symlink Rlerror:40 "walking from a fid on its symlink is ELOOP"
    esc_is open-symlink Rlerror:40 "opening its symlink is ELOOP"
    esc_is attach-through-symlink Rlerror:40 "attaching through its symlink to the neighbour is ELOOP"
    esc_not walk-from-attached-symlink Rwalk:1 "walking from an attach on its symlink does not reach the neighbour"
    esc_is rename-d1 R21 "the board may rename a directory it holds a fid below"
    esc_is symlink-old-name R17 "and put a symlink to the neighbour at the old name"
    esc_is walk-below-renamed Rlerror:116 "a walk from the fid below the renamed directory is ESTALE"
    esc_is walk-up-below-renamed Rlerror:116 "walking up from that fid is ESTALE"
    esc_not walk-up-below-renamed-neighbour Rwalk:5 "walking up and over from that fid does not reach the neighbour"
    esc_is walk-moved-up-beyond-qid root "walking up past the root from the renamed directory stays at the root"
    esc_not walk-moved-up-neighbour Rwalk:5 "walking up and over from the renamed directory does not reach the neighbour"
    esc_is walk-mine Rwalk:1 "the session still works inside its export"
    expect_eq "the neighbour's tree on the server is unchanged" "$sum_b0" "$(tree_sum "$exb")"
    expect_eq "the parent's file is unchanged" "$sum_top0" "$(sha "$farm/top")"
    expect_eq "nothing new in the parent (only top and the boards' directories)" "a b ro sq top" \
        "$(cd "$farm" && echo *)"
    local refused
    refused=$("$USB9PFSD" status --json | python3 -c 'import json,sys; print(next(b["counters"].get("refused", 0) for b in json.load(sys.stdin)["boards"] if b["serial"] == "'"$sim_serial"'"))' 2>&1)
    expect "status counts the simulator's refused requests ($refused)" test "${refused:-0}" -ge 10 2>/dev/null

    # ------------------------------------------------ kernel board R: read_only
    local sum_r0; sum_r0=$(tree_sum "$exr")
    board_mount R "$exr" || die "board R: mount failed"
    expect_eq "read_only: reading works" keep "$(cat "${B_MNT[R]}/file" 2>&1)"
    erofs "touch of a new file" "touch new"
    erofs "touch of an existing file" "touch file"
    erofs "mkdir" "mkdir newdir"
    erofs "rm" "rm -f file"
    erofs "rmdir" "rmdir dir"
    erofs "mv" "mv file file2"
    erofs "echo >>" "echo more >> file"
    erofs "truncate (: >)" ": > file"
    erofs "chmod" "chmod 600 file"
    erofs "ln -s" "ln -s file lnk"
    erofs "ln (hard link)" "ln file hard"
    board_umount R || bad "board R: umount failed"
    expect_eq "read_only: the server tree is byte-for-byte unchanged" "$sum_r0" "$(tree_sum "$exr")"

    # ------------------------------------------------ kernel board Q: squash
    board_mount Q "$exq" || die "board Q: mount failed"
    local mq=${B_MNT[Q]}
    if touch "$mq/made" && mkdir "$mq/mdir" && echo data > "$mq/mdir/inner"; then
        ok "squash: the board's root creates a file, a directory and a file in it"
    else bad "squash: the board could not create files"; fi
    expect_eq "squash: the file is owned by $SQUASH_ID:$SQUASH_ID on the server" "$SQUASH_ID:$SQUASH_ID" "$(stat -c %u:%g "$exq/made" 2>&1)"
    expect_eq "squash: the directory too" "$SQUASH_ID:$SQUASH_ID" "$(stat -c %u:%g "$exq/mdir" 2>&1)"
    expect_eq "squash: and the file in it" "$SQUASH_ID:$SQUASH_ID" "$(stat -c %u:%g "$exq/mdir/inner" 2>&1)"
    expect_not "squash: the board cannot chown a file to root" timeout -s KILL 30 chown 0:0 "$mq/made"
    expect_eq "squash: still $SQUASH_ID:$SQUASH_ID after the chown attempt" "$SQUASH_ID:$SQUASH_ID" "$(stat -c %u:%g "$exq/made" 2>&1)"
    board_umount Q || bad "board Q: umount failed"

    expect "usb9pfsd is the same living process (pid $pid0)" fwd_same_pid "$pid0"
    expect_not "usb9pfsd log has no panic" sh -c "grep -qi panick '$SC_OUT/usb9pfsd.log'"
    sim_stop
}
