# shellcheck shell=bash
# list: `usb9pfsd list` and `usb9pfsd list --json` show the present boards with
# bus-address, port path, VID:PID, serial, manufacturer, product and the
# mapped backend (by serial, by port path, and null for an unmapped board),
# both with and without a running daemon that has claimed one of them.
scenario_main() {
    requires_usb9pfsd
    rig_setup 3
    local exa=$EXPORTS/a
    mkdir -p "$exa"
    diod_start a 5640 "$exa"
    board_create A 0001-BOARD-A 1d6b:0109 rigA dummy_udc.0
    board_create B 0002-BOARD-B 1209:0001 rigB dummy_udc.1
    board_create C 0003-UNMAPPED 1d6b:0109 rigC dummy_udc.2
    board_plug A
    board_plug B
    board_plug C
    local pb; pb=$(host_dev_of 0002-BOARD-B)
    B_BACKEND[A]=127.0.0.1:5640
    FWD_EXTRA_CONFIG=$(printf '[[board]]\npath = "%s"\nbackend = "127.0.0.1:5641"\n' "$pb")
    fwd_write_config "$LOCAL/usb9pfsd.toml"

    # expected rows from sysfs: serial -> busaddr port_path id manufacturer product backend
    expected_json() {
        python3 - <<'PY'
import json, os, sys
backends = {"0001-BOARD-A": "127.0.0.1:5640", "0002-BOARD-B": "127.0.0.1:5641", "0003-UNMAPPED": None}
rows = {}
base = "/sys/bus/usb/devices"
for d in os.listdir(base):
    if ":" in d or d.startswith("usb"):
        continue
    try:
        serial = open(f"{base}/{d}/serial").read().strip()
    except OSError:
        continue
    if serial not in backends:
        continue
    r = lambda n: open(f"{base}/{d}/{n}").read().strip()
    rows[serial] = {"busaddr": "%03d-%03d" % (int(r("busnum")), int(r("devnum"))), "port_path": d,
                    "id": f"{r('idVendor')}:{r('idProduct')}", "serial": serial,
                    "manufacturer": r("manufacturer"), "product": r("product"),
                    "backend": backends[serial]}
print(json.dumps(rows, sort_keys=True))
PY
    }
    check_list() {
        local when=$1 out rc=0
        out=$(timeout -s KILL 60 "$USB9PFSD" list --config "$FWD_CONFIG" 2>>"$SC_OUT/usb9pfsd-list.stderr") || rc=$?
        printf '%s\n' "$out" > "$SC_OUT/list-$when.txt"
        expect_eq "usb9pfsd list ($when) exits 0" 0 "$rc"
        local s be
        for s in 0001-BOARD-A:127.0.0.1:5640 0002-BOARD-B:127.0.0.1:5641; do
            be=${s#*:}; s=${s%%:*}
            expect "list ($when): the line for $s shows backend $be" \
                sh -c "printf '%s\n' \"\$1\" | grep -F -- '$s' | grep -qF -- '$be'" _ "$out"
        done
        expect "list ($when): the line for 1209:0001 shows serial 0002-BOARD-B" \
            sh -c "printf '%s\n' \"\$1\" | grep -F 1209:0001 | grep -qF 0002-BOARD-B" _ "$out"
        expect "list ($when): the unmapped board is listed" sh -c "printf '%s\n' \"\$1\" | grep -qF 0003-UNMAPPED" _ "$out"
        expect_not "list ($when): the unmapped board shows no backend address" \
            sh -c "printf '%s\n' \"\$1\" | grep -F 0003-UNMAPPED | grep -q '127\.0\.0\.1'" _ "$out"

        rc=0
        out=$(timeout -s KILL 60 "$USB9PFSD" list --json --config "$FWD_CONFIG" 2>>"$SC_OUT/usb9pfsd-list.stderr") || rc=$?
        printf '%s\n' "$out" > "$SC_OUT/list-$when.json"
        expect_eq "usb9pfsd list --json ($when) exits 0" 0 "$rc"
        local got want
        want=$(expected_json)
        got=$(printf '%s' "$out" | python3 -c '
import json, sys
keys = ["busaddr", "port_path", "id", "serial", "manufacturer", "product", "backend"]
try:
    arr = json.load(sys.stdin)
except Exception as e:
    print("not JSON: %s" % e); sys.exit(0)
if not isinstance(arr, list):
    print("not a JSON array"); sys.exit(0)
rows = {}
for o in arr:
    miss = [k for k in keys if k not in o]
    if miss:
        print("object without %s: %s" % (miss, o)); sys.exit(0)
    if o["serial"] in ("0001-BOARD-A", "0002-BOARD-B", "0003-UNMAPPED"):
        rows[o["serial"]] = {k: o[k] for k in keys}
print(json.dumps(rows, sort_keys=True))
')
        expect_eq "list --json ($when): the three boards with busaddr, port_path, id, serial, manufacturer, product, backend as in sysfs/config" "$want" "$got"
    }

    check_list idle
    fwd_start
    board_mount A "$exa" || bad "board A: mount through the running daemon failed"
    check_list running
    board_umount A || bad "umount failed"
}
