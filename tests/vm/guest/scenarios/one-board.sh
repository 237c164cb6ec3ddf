# shellcheck shell=bash
# one-board: one gadget mapped by serial to one diod; a 16 MiB random file
# read through the board matches its checksum, a 16 MiB file written by the
# board matches on the server, and mkdir/rename/unlink/readdir/symlink/chmod/
# truncate done on the board are seen identically on the server.
scenario_main() {
    rig_setup 1
    local ex=$EXPORTS/a m
    mkdir -p "$ex"
    diod_start a 5640 "$ex"
    dd if=/dev/urandom of="$ex/big.bin" bs=1M count=16 status=none
    local want; want=$(sha "$ex/big.bin")

    board_create A 0001-BOARD-A 1d6b:0109 rigA dummy_udc.0
    B_BACKEND[A]=127.0.0.1:5640
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    board_plug A
    fwd_start
    board_mount A "$ex" || die "board A: mount -t 9p -o trans=usbg failed"
    ok "board A mounted through $RIG_FWD"
    m=${B_MNT[A]}

    # --- 16 MiB read
    local t0 t1 got
    t0=$(date +%s.%N)
    got=$(timeout -s KILL 300 sha256sum "$m/big.bin" | cut -d' ' -f1)
    t1=$(date +%s.%N)
    expect_eq "16 MiB random file read through the board has the server's sha256" "$want" "$got"
    log "read 16 MiB in $(awk "BEGIN{printf \"%.1f\", $t1-$t0}") s"

    # --- 16 MiB write back
    dd if=/dev/urandom of="$LOCAL/up.bin" bs=1M count=16 status=none
    want=$(sha "$LOCAL/up.bin")
    timeout -s KILL 300 dd if="$LOCAL/up.bin" of="$m/up.bin" bs=1M conv=fsync status=none \
        || bad "writing 16 MiB through the board failed"
    expect_eq "16 MiB file written by the board has the same sha256 on the server" "$want" "$(sha "$ex/up.bin")"
    expect_eq "written file size on the server" 16777216 "$(stat -c %s "$ex/up.bin")"

    # --- metadata operations, each compared with the server's view
    local T=timeout\ -s\ KILL\ 60
    $T mkdir "$m/d1" && ok "mkdir on the board" || bad "mkdir on the board failed"
    expect "mkdir: directory exists on the server" test -d "$ex/d1"
    $T mv "$m/d1" "$m/d2" || bad "rename of a directory on the board failed"
    expect "rename: new name on the server" test -d "$ex/d2"
    expect_not "rename: old name gone on the server" test -e "$ex/d1"
    echo "hello from board A" | $T tee "$m/d2/f.txt" >/dev/null || bad "create file on the board failed"
    expect_eq "file created on the board: content on the server" "hello from board A" "$(cat "$ex/d2/f.txt" 2>/dev/null)"
    $T mv "$m/d2/f.txt" "$m/d2/g.txt" || bad "rename of a file failed"
    expect "file rename seen on the server" test -f "$ex/d2/g.txt"
    expect_not "file rename: old name gone on the server" test -e "$ex/d2/f.txt"
    $T rm "$m/d2/g.txt" || bad "unlink on the board failed"
    expect_not "unlink: file gone on the server" test -e "$ex/d2/g.txt"

    # readdir: server-side tree listed from the board
    mkdir -p "$ex/list"
    local i
    for i in $(seq 1 150); do echo "$i" > "$ex/list/file-$i"; done
    mkdir "$ex/list/sub"
    expect_eq "readdir of a 151-entry directory matches the server" \
        "$(cd "$ex/list" && ls -A | sort | sha256sum)" "$($T ls -A "$m/list" | sort | sha256sum)"
    expect_eq "a server-written file reads the same on the board" "77" "$($T cat "$m/list/file-77")"

    # symlink both ways
    $T ln -s d2/target-name "$m/lnk" || bad "symlink on the board failed"
    expect_eq "symlink made on the board: target on the server" "d2/target-name" "$(readlink "$ex/lnk")"
    ln -s /some/where "$ex/srvlnk"
    expect_eq "symlink made on the server: target on the board" "/some/where" "$($T readlink "$m/srvlnk")"

    # chmod
    echo data > "$ex/mode.txt"; chmod 0644 "$ex/mode.txt"
    $T chmod 0640 "$m/mode.txt" || bad "chmod on the board failed"
    expect_eq "chmod 0640 on the board: mode on the server" 640 "$(stat -c %a "$ex/mode.txt")"
    chmod 0755 "$ex/mode.txt"
    expect_eq "chmod on the server: mode seen on the board" 755 "$($T stat -c %a "$m/mode.txt")"

    # truncate (shrink, then grow with zeroes)
    cp "$ex/big.bin" "$ex/trunc.bin"
    $T truncate -s 1000 "$m/trunc.bin" || bad "truncate on the board failed"
    expect_eq "truncate -s 1000: size on the server" 1000 "$(stat -c %s "$ex/trunc.bin")"
    expect_eq "truncate kept the first 1000 bytes" "$(head -c 1000 "$ex/big.bin" | sha256sum)" "$(sha256sum < "$ex/trunc.bin")"
    $T truncate -s 5000 "$m/trunc.bin" || bad "truncate (grow) on the board failed"
    expect_eq "truncate -s 5000: board and server agree on the content" "$(sha256sum < "$ex/trunc.bin")" "$($T cat "$m/trunc.bin" | sha256sum)"
    expect_eq "truncate -s 5000: size on the server" 5000 "$(stat -c %s "$ex/trunc.bin")"

    # the board sees the server's tree as the server does (names, sizes, types)
    expect_eq "find -printf of the whole export matches the server" \
        "$(cd "$ex" && find . -printf '%y %s %p\n' | grep -v '^d' | sort | sha256sum)" \
        "$(cd "$m" && $T find . -printf '%y %s %p\n' | grep -v '^d' | sort | sha256sum)"

    board_umount A || bad "umount of board A failed"
    expect "forwarder still running after umount" fwd_alive

    if [ "$RIG_FWD" = usb9pfsd ]; then
        local ba; ba=$(busaddr_re 0001-BOARD-A)
        board_line() { fwd_log | grep -E 'serial="?0001-BOARD-A\b' | grep -E "busaddr=\"?$ba\\b" >/dev/null; }
        expect "usb9pfsd log lines about the board carry serial=0001-BOARD-A and busaddr=$ba" board_line
    fi
}
