# shellcheck shell=bash
# buflen64k: a board whose usb9pfs function has buflen = 65536, and a host
# config that does not say so (no buflen: the forwarder's default 16384).
# The board negotiates msize 65536, so replies longer than 16 KiB arrive,
# and a reply whose length is a multiple of wMaxPacketSize but shorter than
# 65536 needs a ZLP or the board's receive request never completes. Files
# of 16384-11, 32768-11 and 49152-11 bytes, each read with one Tread (dd
# bs=64k count=1 on a cache=none mount), make Rread messages of exactly 16,
# 32 and 48 KiB (11 = size[4] type[1] tag[2] count[4]). Each read runs under
# timeout -s KILL and must return the file's checksum; the forwarder's log
# must show R-messages of exactly those sizes. Then 16 MiB checksummed read
# and write with 64 KiB requests.
scenario_main() {
    rig_setup 1
    local ex=$EXPORTS/a serial=0030-BOARD-64K m n k
    mkdir -p "$ex"
    diod_start a 5640 "$ex"
    for k in 16 32 48; do
        n=$((k * 1024 - 11))
        head -c "$n" /dev/urandom > "$ex/r$k.bin"
    done
    dd if=/dev/urandom of="$ex/big.bin" bs=1M count=16 status=none
    dd if=/dev/urandom of="$LOCAL/w.bin" bs=1M count=16 status=none

    board_create K "$serial" 1d6b:0109 rigK dummy_udc.0 buflen=65536
    rig_guard "the board's usb9pfs function took buflen 65536" [ "$(cat "$GADGETS/K/functions/usb9pfs.rigK/buflen")" = 65536 ]
    B_BACKEND[K]=127.0.0.1:5640
    fwd_write_config "$LOCAL/usb9pfsd.toml"
    # The point of the scenario: usb9pfsd must learn the board's 64 KiB from
    # its Tversion (checked below by the Rread sizes and checksums).
    rig_guard "the host config leaves buflen at its default" sh -c "! grep -q buflen '$FWD_CONFIG'"
    board_plug K
    # one line per 9P message, with its size: usb9pfsd -vv ("Rread tag=N size=S"),
    # p9_fwd.py -v ("s2c: forwarded S bytes")
    USB9PFSD_VERBOSE=-vv P9FWD_ARGS=-v fwd_start
    board_mount_retry K "$ex" 30 || die "board K: mount failed"
    m=${B_MNT[K]}
    local opts; opts=$(awk -v m="$m" '$2 == m {print $4}' /proc/self/mounts)
    log "mount options: $opts"
    expect "the board negotiated msize 65536 (mount options: $opts)" sh -c "echo '$opts' | grep -q 'msize=65536'"
    case $opts in *cache=*) expect "mount is cache=none (one Tread per read)" sh -c "echo '$opts' | grep -qE 'cache=(none|0x0)'" ;; esac

    sized_reply() {
        case $RIG_FWD in
        usb9pfsd) fwd_log | grep -E "Rread tag=[0-9]+ size=$1\b" >/dev/null ;;
        p9fwd) grep -qE "s2c: forwarded $1 bytes" "$SC_OUT/p9fwd-K.log" ;;
        esac
    }
    for k in 16 32 48; do
        n=$((k * 1024 - 11))
        local got
        got=$(timeout -s KILL 60 dd if="$m/r$k.bin" bs=64k count=1 status=none 2>>"$SC_OUT/guest.log" | sha256sum | cut -d' ' -f1)
        expect_eq "file of $n bytes read in one 64 KiB request (Rread of exactly $k KiB): checksum, no hang" "$(sha "$ex/r$k.bin")" "$got"
        expect "forwarder passed an R-message of exactly $((k * 1024)) bytes to the board" sized_reply $((k * 1024))
    done

    local got
    got=$(timeout -s KILL 300 dd if="$m/big.bin" bs=64k status=none 2>>"$SC_OUT/guest.log" | sha256sum | cut -d' ' -f1)
    expect_eq "16 MiB read with 64 KiB requests: checksum" "$(sha "$ex/big.bin")" "$got"
    timeout -s KILL 300 dd if="$LOCAL/w.bin" of="$m/w.bin" bs=64k conv=fsync status=none 2>>"$SC_OUT/guest.log" || bad "16 MiB write on the board failed"
    expect_eq "16 MiB write with 64 KiB requests lands intact" "$(sha "$LOCAL/w.bin")" "$(sha "$ex/w.bin" 2>/dev/null)"
    big_frames() {
        case $RIG_FWD in
        usb9pfsd) fwd_log | grep -E "Twrite tag=[0-9]+ size=(6[0-9]{4})\b" >/dev/null ;;
        p9fwd) grep -qE "c2s: forwarded 6[0-9]{4} bytes" "$SC_OUT/p9fwd-K.log" ;;
        esac
    }
    expect "the writes went as T-messages larger than 60000 bytes (not split to 16 KiB)" big_frames
    if [ "$RIG_FWD" = usb9pfsd ]; then
        # the session's frames moved in place: usbfs mapped its 64 KiB memory
        in_place() { fwd_log | grep -E "(6[5-9][0-9]{3}) bytes of in-place transfer memory from usbfs" >/dev/null; }
        expect "usbfs mapped in-place transfer memory for the 64 KiB session" in_place
        expect_not "no transfer memory was refused" sh -c "grep -qE 'usbfs refused|no in-place transfer memory' '$SC_OUT/usb9pfsd.log'"
    fi
    board_umount K || bad "umount failed"
    expect "forwarder still running" fwd_alive
}
