# shellcheck shell=bash
# labgrid: real labgrid 26 (from the package index, tests/vm/run's venv in
# the rig cache) drives usb9pfsd through contrib/labgrid: a coordinator, an
# exporter publishing board A as a NetworkUSB9PFSBoard
# (labgrid-usb9pfsd-exporter), and clients reaching the exporter over ssh
# (an sshd unpacked from Debian's openssh-server, on 127.0.0.1) like any
# labgrid remote command prefix.
#
# Users in the guest: "dev" (groups usb9pfsd, usb9pfsd-admin on the
# exporter) holds the place; "mallory" (group usb9pfsd: may read status)
# does not. The exporter runs as root.
#
# dev acquires the place, stages a tree of its own through the driver
# (copied over ssh into /var/cache/labgrid/dev/) and serves it; the board
# mounts it and every file's checksum matches; wait_mounted sees the mount.
# mallory cannot take the place, its labgrid client refuses to use a place
# it does not hold, and usb9pfsd itself refuses its serve (not privileged on
# the control socket): the mapping stays dev's each time. dev's release
# makes the exporter unserve the board: its next mount gets the config's
# server again. Ends its boot (it adds users, groups and an ssh config to
# the guest's /etc).
#
# LABGRID_PLANT=1 runs the exporter as mallory, who may not unserve: the
# release checks turn red (shown 2026-12-06: "board A still served after
# the release", the exporter's log saying permission denied).
scenario_main() {
    requires_usb9pfsd
    if [ -z "${RIG_LG_VENV:-}" ] || [ ! -x "$RIG_LG_VENV/bin/python" ]; then die "rig setup: no labgrid venv (tests/vm/run ensure_labgrid)"; fi
    if [ -z "${RIG_SSHD:-}" ] || [ ! -x "$RIG_SSHD" ]; then die "rig setup: no sshd (tests/vm/run ensure_labgrid)"; fi
    rig_setup 1
    local T="timeout -s KILL 60" LG=$LOCAL/lg PY=$RIG_LG_VENV/bin/python
    local CLIENT="$RIG_VM/guest/tools/lg_client.py" out p

    # lgc_spawn NAME USER: a client process (tools/lg_client.py) run by USER,
    # commands in and answers out on FIFOs; lgc_connect NAME: open them
    # (read-write, so no open blocks on a client that died) and wait for its
    # "ready"; lgc NAME WORDS...: one command, its JSON answer in LGC_REPLY
    # (fails on a timeout); jget PYEXPR: PYEXPR with r = that answer.
    declare -gA LGC_IN=() LGC_OUT=()
    LGC_REPLY=""
    lgc_spawn() {
        local d=$LG/c-$1
        mkdir -p "$d" && mkfifo "$d/in" "$d/out" && chown -R "$2" "$d"
        runuser -u "$2" -- env HOME="/home/$2" PYTHONPATH="$STAGE/labgrid" \
            "$PY" "$CLIENT" "/home/$2/env.yaml" "$d/in" "$d/out" 2>>"$SC_OUT/lg-client-$1.log" &
    }
    lgc_connect() {
        local fd_in fd_out
        exec {fd_in}<>"$LG/c-$1/in" {fd_out}<>"$LG/c-$1/out"
        LGC_IN[$1]=$fd_in LGC_OUT[$1]=$fd_out
        read -r -t 300 -u "$fd_out" LGC_REPLY || die "labgrid client $1 not ready in 300 s ($(tail -n3 "$SC_OUT/lg-client-$1.log" | tr '\n' ' '))"
        log "labgrid client $1 ready"
    }
    lgc() {
        local name=$1; shift
        printf '%s\n' "$(printf '%q ' "$@")" >&"${LGC_IN[$name]}"
        LGC_REPLY='{"error": "Timeout", "message": "no answer in 300 s"}'
        read -r -t 300 -u "${LGC_OUT[$name]}" LGC_REPLY || { log "labgrid client $name: no answer to: $*"; return 1; }
        printf '%s\n' "$name: $* => $LGC_REPLY" >> "$SC_OUT/lg-commands.txt"
    }
    jget() { printf '%s' "$LGC_REPLY" | python3 -c 'import json, sys; r = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1" 2>/dev/null; }

    # --- users, groups, ssh (guest /etc is an overlay: gone at power-off)
    # Written straight into the guest's /etc (useradd fails on its overlay);
    # password "*": no password, but not a locked account (sshd, no PAM).
    lg_user() {  # NAME UID GROUPS...
        local n=$1 id=$2 g; shift 2
        getent passwd "$n" >/dev/null && return 0
        echo "$n:x:$id:$id::/home/$n:/bin/sh" >> /etc/passwd
        echo "$n:*:20000:0:99999:7:::" >> /etc/shadow
        echo "$n:x:$id:" >> /etc/group
        for g in "$@"; do sed -i "s/^\($g:x:[0-9]*:.*[^:]\)\$/\1,$n/; s/^\($g:x:[0-9]*:\)\$/\1$n/" /etc/group; done
        mkdir -p "/home/$n" && chown "$n:$n" "/home/$n" && chmod 700 "/home/$n"
    }
    lg_group() { getent group "$1" >/dev/null || echo "$1:x:$2:" >> /etc/group; }
    lg_group usb9pfsd 2901
    lg_group usb9pfsd-admin 2902
    lg_user dev 2001 usb9pfsd usb9pfsd-admin
    lg_user mallory 2002 usb9pfsd
    getent passwd sshd >/dev/null || { echo "sshd:x:2999:65534::/run/sshd:/usr/sbin/nologin" >> /etc/passwd; echo "sshd:*:20000:0:99999:7:::" >> /etc/shadow; }
    expect_eq "rig: dev is in usb9pfsd and usb9pfsd-admin, mallory in usb9pfsd only" \
        "dev usb9pfsd usb9pfsd-admin|mallory usb9pfsd" "$(id -nG dev | tr ' ' '\n' | sort | tr '\n' ' ' | sed 's/ $//')|$(id -nG mallory | tr ' ' '\n' | sort | tr '\n' ' ' | sed 's/ $//')"
    mkdir -p "$LG/keys" /run/sshd && chmod 755 "$LG" "$LG/keys"
    rig_guard "ssh host key" ssh-keygen -q -t ed25519 -N '' -f "$LG/hostkey"
    local u
    for u in dev mallory; do
        rig_guard "ssh key of $u" runuser -u "$u" -- ssh-keygen -q -t ed25519 -N '' -f "/home/$u/id"
        cp "/home/$u/id.pub" "$LG/keys/$u"
    done
    cat > "$LG/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port 22
HostKey $LG/hostkey
PidFile $LG/sshd.pid
AuthorizedKeysFile $LG/keys/%u
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
EOF
    cat > /etc/ssh/ssh_config.d/usb9pfsd-rig.conf <<EOF
Host exporter
  HostName 127.0.0.1
  IdentityFile ~/id
  BatchMode yes
EOF
    # labgrid's ssh checks host keys strictly: the exporter's key is known
    echo "127.0.0.1 $(cat "$LG/hostkey.pub")" > /etc/ssh/ssh_known_hosts
    "$RIG_SSHD" -D -f "$LG/sshd_config" -E "$SC_OUT/sshd.log" &
    wait_until 30 port_listening 22 || die "rig setup: sshd did not listen ($(tail -n3 "$SC_OUT/sshd.log" | tr '\n' ' '))"
    expect "ssh: dev reaches the exporter host with its key" \
        runuser -u dev -- $T ssh exporter true
    # labgrid's per-user cache on the exporter, where the driver stages trees:
    # a tmpfs (diod cannot export overlayfs, trap 2), sticky like /tmp
    mkdir -p /var/cache/labgrid && mount -t tmpfs -o mode=1777 none /var/cache/labgrid \
        || die "rig setup: tmpfs on /var/cache/labgrid"

    # --- board A, mapped by the config to a decoy server
    local decoy=$EXPORTS/decoy
    mkdir -p "$decoy"; echo config > "$decoy/marker"
    diod_start decoy 5640 "$decoy"
    board_create A 0001-BOARD-A 1d6b:0109 rigA dummy_udc.0
    B_BACKEND[A]=127.0.0.1:5640
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    board_plug A
    # usb9pfsd gives its socket's directory to group usb9pfsd only when it
    # makes it; an earlier scenario of this boot made it before the group
    # existed, so the users could not reach the socket
    if [ -d /run/usb9pfsd ]; then chgrp usb9pfsd /run/usb9pfsd; fi
    fwd_start
    local port; port=$(host_dev_of 0001-BOARD-A) || die "board A not on the host side"
    # status JSON helpers: board A's entry, and its runtime mapping
    st() {
        "$USB9PFSD" status --json | python3 -c '
import json, sys
r = json.load(sys.stdin)
b = next((b for b in r.get("boards", []) if b.get("serial") == "0001-BOARD-A"), None)
s = next((s for s in (r.get("daemon") or {}).get("serves", []) if s.get("board") in (sys.argv[2], sys.argv[3])), None)
print(eval(sys.argv[1]))' "$1" "$port" "$(printf '%03d-%03d' "$(cat "/sys/bus/usb/devices/$port/busnum")" "$(cat "/sys/bus/usb/devices/$port/devnum")")#0"
    }
    # Mounted once (and unmounted) through the config, so rig_release may
    # unplug it later (a board plugged and never mounted wedges an unbind).
    board_mount_retry A "$decoy" 60 || die "board A: first mount through the config failed"
    expect_eq "before labgrid: the board reads the config's server" config "$($T cat "${B_MNT[A]}/marker")"
    board_umount A || die "board A: umount failed"

    # --- labgrid: coordinator, exporter, and the clients' processes, all
    # started at once: each import of labgrid takes tens of seconds under TCG
    mkdir -p "$LG/coordinator"
    (cd "$LG/coordinator" && exec "$PY" -m labgrid.remote.coordinator -l 127.0.0.1:20408) >>"$SC_OUT/lg-coordinator.log" 2>&1 &
    cat > "$LG/exporter.yaml" <<EOF
board-a:
  USB9PFSBoard:
    port_path: "$port"
EOF
    # LABGRID_PLANT=1: the exporter runs as mallory, not privileged on the
    # control socket, so its unserve at the release is refused: the release
    # checks must turn red.
    local exp_user=root
    [ "${LABGRID_PLANT:-0}" != 1 ] || { exp_user=mallory; log "PLANTED FAULT: the exporter runs as mallory"; }
    runuser -u "$exp_user" -- env PATH="$STAGE:$PATH" PYTHONPATH="$STAGE/labgrid" "$PY" -m labgrid_usb9pfsd.exporter \
        -c 127.0.0.1:20408 -n exporter --hostname exporter "$LG/exporter.yaml" >>"$SC_OUT/lg-exporter.log" 2>&1 &
    for u in dev mallory; do
        cat > "/home/$u/env.yaml" <<EOF
targets:
  main:
    resources:
      RemotePlace:
        name: board-a
    drivers:
      USB9PFSDriver:
        unserve_on_deactivate: false
tools:
  usb9pfsd: $USB9PFSD
options:
  coordinator_address: 127.0.0.1:20408
imports:
  - labgrid_usb9pfsd
EOF
        chown "$u" "/home/$u/env.yaml"
    done
    # dev runs two clients (labgrid-client commands, and the environment with
    # the driver: they cannot share a process, see lg_client.py); mallory one
    lgc_spawn devcli dev; lgc_spawn dev dev; lgc_spawn mallory mallory
    wait_until 300 port_listening 20408 || die "labgrid-coordinator did not listen in 300 s"
    lgc_connect devcli; lgc_connect dev; lgc_connect mallory
    local X="-x 127.0.0.1:20408"
    # shellcheck disable=SC2086
    published() { lgc devcli cli $X resources && jget 'r["rc"] == 0 and "exporter/board-a/NetworkUSB9PFSBoard" in r["out"].split()' | grep -qx True; }
    if wait_until 300 published; then ok "labgrid: the exporter publishes board A as exporter/board-a/NetworkUSB9PFSBoard"
    else die "labgrid: board A never published ($LGC_REPLY; $(tail -n5 "$SC_OUT/lg-exporter.log" | tr '\n' ' '))"; fi
    # shellcheck disable=SC2086
    lgc devcli cli $X -v resources exporter/board-a/NetworkUSB9PFSBoard
    jget 'r["out"]' > "$SC_OUT/lg-resource.txt"
    expect "labgrid: the published resource carries the port path, interface, serial and control socket" \
        sh -c "grep -q \"'path': '$port'\" '$SC_OUT/lg-resource.txt' && grep -q \"'interface': 0\" '$SC_OUT/lg-resource.txt' && grep -q \"'serial': '0001-BOARD-A'\" '$SC_OUT/lg-resource.txt' && grep -q \"'socket': '/run/usb9pfsd/control'\" '$SC_OUT/lg-resource.txt'"

    # --- dev: the place, and a tree of its own
    # shellcheck disable=SC2086
    { lgc devcli cli $X -p board-a create && lgc devcli cli $X -p board-a add-match 'exporter/board-a/NetworkUSB9PFSBoard'; } \
        || die "labgrid: creating place board-a failed ($LGC_REPLY)"
    # shellcheck disable=SC2086
    lgc devcli cli $X -p board-a acquire
    expect_eq "labgrid: dev acquires the place" 0 "$(jget 'r["rc"]')"
    local tree=/home/dev/rootfs
    runuser -u dev -- mkdir -p "$tree/etc" "$tree/usr/lib/deep/er"
    runuser -u dev -- sh -c "head -c 3145728 /dev/urandom > $tree/usr/lib/big.bin; echo labgrid > $tree/etc/hostname; head -c 70000 /dev/urandom > '$tree/usr/lib/deep/er/odd name.bin'; ln -s ../etc/hostname $tree/usr/link"
    local want; want=$(cd "$tree" && find . -type f -print0 | sort -z | xargs -0 sha256sum)

    # --- dev serves the tree through labgrid
    lgc dev serve "$tree"
    log "dev serve: $LGC_REPLY"
    local served; served=$(jget 'r.get("ok") or ""')
    case $served in
    /var/cache/labgrid/dev/usb9pfs-*/tree) ok "labgrid: dev's tree staged on the exporter under labgrid's cache ($served)" ;;
    *) die "labgrid: dev's serve failed: $LGC_REPLY" ;;
    esac
    expect_eq "usb9pfsd status: board A served dev's staged tree, set by dev's uid" "$served $(id -u dev)" \
        "$(st 's and s.get("export")') $(st 's and s.get("by_uid")')"

    # --- mallory, who does not hold the place
    # shellcheck disable=SC2086
    lgc mallory cli $X -p board-a acquire
    if [ "$(jget 'r["rc"]')" != 0 ]; then ok "labgrid: mallory cannot acquire the place dev holds ($(jget 'r["err"].strip()[:100]'))"
    else bad "labgrid: mallory acquired a place dev holds ($LGC_REPLY)"; fi
    lgc mallory serve /home/mallory
    case $(jget 'r.get("error", "") + " " + r.get("message", "")') in
    *'not acquired'*) ok "labgrid: mallory's client refuses a place it does not hold ($(jget 'r["message"][:100]'))" ;;
    *) bad "labgrid: mallory's client did not refuse the place: $LGC_REPLY" ;;
    esac
    local rc=0
    out=$(runuser -u mallory -- $T ssh exporter "$USB9PFSD" serve "$port" --export /home/mallory 2>&1) || rc=$?
    expect_eq "usb9pfsd: mallory's own serve on the exporter (ssh, no labgrid) is refused, exit 1" 1 "$rc"
    log "mallory's serve: $out"
    expect_eq "after mallory's three tries the mapping is still dev's" "$served" "$(st 's and s.get("export")')"

    # --- the board mounts dev's tree
    board_mount_retry A "$served" 60 || die "board A: mount of dev's tree failed"
    local got; got=$(cd "${B_MNT[A]}" && $T find . -type f -print0 | sort -z | xargs -0 sha256sum)
    [ "$got" = "$want" ] || log "the board's view of dev's tree: $($T ls -laR "${B_MNT[A]}" 2>&1 | head -n 20 | tr '\n' '|'); dmesg: $(dmesg | tail -n 5 | tr '\n' '|')"
    expect_eq "the board reads dev's tree: every file's sha256 matches" "$want" "$got"
    expect_eq "the board sees dev's symlink" ../etc/hostname "$(readlink "${B_MNT[A]}/usr/link")"
    lgc dev wait 60
    log "dev wait: $LGC_REPLY"
    expect_eq "labgrid: wait_mounted sees the board mounted" mounted "$(jget '((r.get("ok") or {}).get("mount") or {}).get("state")')"
    board_umount A || die "board A: umount failed"

    # --- release: the exporter unserves
    # shellcheck disable=SC2086
    lgc devcli cli $X -p board-a release
    expect_eq "labgrid: dev releases the place" 0 "$(jget 'r["rc"]')"
    unserved() { [ "$(st 's is None')" = True ]; }
    if wait_until 30 unserved; then ok "labgrid: releasing the place unserved board A (the exporter did)"
    else bad "labgrid: board A still served after the release ($(st 's'))"; fi
    board_mount_retry A "$decoy" 60 || die "board A: mount after the release failed"
    expect_eq "after the release the board reads the config's server again" config "$($T cat "${B_MNT[A]}/marker")"
    board_umount A || bad "board A: umount failed"
    expect "forwarder still running" fwd_alive
}
