# Helpers for scenario scripts; sourced by dom0-init and by every scenario (bash, in dom0).
# A scenario runs with $SCEN (its name), $TB (/tb, the 9p share) and $RES (/tb/results).
# It ends with exit 0 (PASS), fail "why" (FAIL) or skip "why" (SKIP).
# shellcheck shell=bash

# QEMU's emulated devices as dom0 sees them (vendor product).
STICK_ID="46f4 0001"
TABLET_ID="0627 0001"
AUDIO_ID="46f4 0002"

step() {
    echo "$*" > "$RES/$SCEN.step"
    echo "XENTB-STEP $SCEN: $*" > /dev/console
    echo "== $(date +%T) $*"
}
# ON_FAIL names a function fail runs first (once): a scenario's diagnosis of the failure.
fail() {
    echo "$*" >> "$RES/$SCEN.reason"
    if [ -n "${ON_FAIL:-}" ]; then local hook=$ON_FAIL; ON_FAIL=; "$hook" || true; fi
    echo "FAIL: $*"; exit 1
}
skip() { echo "$*" >> "$RES/$SCEN.reason"; echo "SKIP: $*"; exit 77; }
note() { echo "$*" >> "$RES/$SCEN.notes"; echo "NOTE: $*"; }

# wait_for SECS CMD...: poll CMD every half second until it succeeds or SECS pass.
wait_for() {
    local limit=$1 i=0; shift
    while ! "$@" >/dev/null 2>&1; do
        i=$((i + 1)); [ "$i" -ge $((limit * 2)) ] && return 1
        sleep 0.5
    done
}

# ---- USB devices in dom0 ---------------------------------------------------------------------
# usb_find VID PID: print "busnum devnum busid" of the first matching device.
usb_find() {
    local d
    for d in /sys/bus/usb/devices/*; do
        [ -f "$d/idVendor" ] || continue
        [ "$(cat "$d/idVendor") $(cat "$d/idProduct")" = "$1 $2" ] || continue
        echo "$(cat "$d/busnum") $(cat "$d/devnum") ${d##*/}"
        return 0
    done
    return 1
}
# stick_dev: print dom0's block device name of the stick (e.g. sda) if usb-storage has it.
stick_dev() {
    local busid b
    busid=$(usb_find $STICK_ID | cut -d' ' -f3) || return 1
    for b in /sys/bus/usb/devices/"$busid":*/host*/target*/*/block/*; do
        [ -e "$b" ] && { echo "${b##*/}"; return 0; }
    done
    return 1
}
stick_md5() { # stick_md5 DEV MIB SKIP_MIB (reads through dom0's own driver, O_DIRECT)
    dd if="/dev/$1" bs=1M count="$2" skip="${3:-0}" iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1
}

# ---- domUs -------------------------------------------------------------------------------------
# domu_create NAME [CFG-LINE...]: boot a PV domU (busybox + xen-hcd), wait for its command loop,
# set DOMID and DOMNAME. Files in the directory $DOMU_EXTRA (if set) are appended to its
# initramfs (a second cpio archive; the kernel unpacks both).
domu_create() {
    local name=$1; shift
    local cfg=/tmp/$name.cfg rd=/tmp/$name.cpio line
    cp "$TB/out/domu.cpio" "$rd"
    if [ -n "${DOMU_EXTRA:-}" ]; then
        (cd "$DOMU_EXTRA" && find . | cpio -o -H newc --quiet) >> "$rd"
    fi
    cat > "$cfg" <<EOF
name = "$name"
type = "pv"
kernel = "$TB/out/vmlinuz"
ramdisk = "$rd"
extra = "$DOMU_ARGS"
memory = 256
vcpus = 1
cpus = "${DOMU_CPUS:-1}"
on_crash = "destroy"
EOF
    for line in "$@"; do echo "$line" >> "$cfg"; done
    local t0; t0=$(date +%s)
    xl create "$cfg" || fail "xl create $name"
    DOMNAME=$name
    DOMID=$(xl domid "$name") || fail "no domid for $name"
    rm -f "/tmp/domu-$DOMID.n" "/tmp/domu-$DOMID.u"
    wait_for 180 grep -q DOMU-READY "$RES/console/guest-$name.log" ||
        fail "domU $name did not reach its command loop (see console/guest-$name.log)"
    echo "domU $name is domid $DOMID, ready after $(( $(date +%s) - t0 ))s"
}

# domu_send CMD: queue a shell command in the domU; prints its sequence number.
domu_send() {
    local n=0
    [ -f "/tmp/domu-$DOMID.n" ] && n=$(cat "/tmp/domu-$DOMID.n")
    echo $((n + 1)) > "/tmp/domu-$DOMID.n"
    xenstore-write -R "/local/domain/$DOMID/data/cmd/$n" "$1" || return 1
    echo "$n"
}
# domu_wait N [SECS]: wait for command N, print its output tail, return its exit status.
domu_wait() {
    local n=$1 limit=${2:-300} rc
    wait_for "$limit" xenstore-read "/local/domain/$DOMID/data/rc/$n" || {
        echo "domU command $n: no answer within ${limit}s"; return 124; }
    xenstore-read -R "/local/domain/$DOMID/data/out/$n" 2>/dev/null && echo
    rc=$(xenstore-read "/local/domain/$DOMID/data/rc/$n")
    return "$rc"
}
# domu_urgent CMD: run CMD in the domU beside the command loop (which may be stuck behind a
# hung command) and wait up to 120 s for it; prints its output tail, returns its exit status.
domu_urgent() {
    local n=0 rc
    [ -f "/tmp/domu-$DOMID.u" ] && n=$(cat "/tmp/domu-$DOMID.u")
    echo $((n + 1)) > "/tmp/domu-$DOMID.u"
    xenstore-write -R "/local/domain/$DOMID/data/urgent/$n" "$1" || return 1
    wait_for 120 xenstore-read "/local/domain/$DOMID/data/urc/$n" || {
        echo "domU urgent command $n: no answer within 120s"; return 124; }
    xenstore-read -R "/local/domain/$DOMID/data/uout/$n" 2>/dev/null && echo
    rc=$(xenstore-read "/local/domain/$DOMID/data/urc/$n")
    return "$rc"
}
# domu_exec [-t SECS] CMD: run CMD in the domU and wait for it.
domu_exec() {
    local limit=300
    if [ "$1" = -t ]; then limit=$2; shift 2; fi
    local n; n=$(domu_send "$1") || return 1
    domu_wait "$n" "$limit"
}

domu_destroy() { xl destroy "${1:-$DOMNAME}" 2>/dev/null || true; }

# domu_stick_dev: in the domU, the block device (sdX) behind a usb-storage device.
DOMU_FIND_SD='ls /sys/block | grep -m1 "^sd"'
# The domU's kernel command line; add tb.nohcd to keep xen-hcd unloaded (scenario 6).
DOMU_ARGS="console=hvc0 rdinit=/init"

# domu_find_usb VID PID: a domU shell snippet printing the usbfs node (/dev/bus/usb/BBB/DDD,
# from devtmpfs) of the first device with that vendor and product (e.g. on xen-hcd's bus).
domu_find_usb() {
    echo "for u in /sys/bus/usb/devices/*; do [ \"\$(cat \$u/idVendor 2>/dev/null) \$(cat \$u/idProduct 2>/dev/null)\" = \"$1 $2\" ] && { printf '/dev/bus/usb/%03d/%03d\\n' \$(cat \$u/busnum) \$(cat \$u/devnum); exit 0; }; done; exit 1"
}
# usb_node VID PID: the same in dom0, from usb_find.
usb_node() {
    local bus dev
    read -r bus dev _ < <(usb_find "$1" "$2") || return 1
    printf '/dev/bus/usb/%03d/%03d\n' "$bus" "$dev"
}

# ---- measurement tools (tests/xen/tools/*.c, static) -----------------------------------------
# tb_tool NAME: path of a measurement tool in dom0. build.sh puts them in domu.cpio's /bin (the
# domU has them on its PATH); dom0 takes them out of that archive once per boot, so the dom0
# image need not be rebuilt when a tool changes.
tb_tool() {
    local dir=/tmp/tb-tools
    if [ ! -x "$dir/bin/$1" ]; then
        mkdir -p "$dir"
        (cd "$dir" && cpio -i --quiet -d -m "*bin/$1" < "$TB/out/domu.cpio") || return 1
        [ -x "$dir/bin/$1" ] || { echo "tb_tool: no bin/$1 in $TB/out/domu.cpio (rebuild with build.sh)" >&2; return 1; }
    fi
    echo "$dir/bin/$1"
}

# tb_modprobe MODULE: load a kernel module in dom0 from domu.cpio's module tree (same kernel),
# for modules the dom0 image lacks (vhci-hcd, snd-usb-audio; see DOMU_MODULES in build.sh).
tb_modprobe() {
    local dir=/tmp/tb-mods
    if [ ! -d "$dir/lib/modules" ]; then
        mkdir -p "$dir"
        (cd "$dir" && cpio -i --quiet -d -m "lib/modules/*" < "$TB/out/domu.cpio") || return 1
    fi
    modprobe -d "$dir" "$1"
}

# ---- the pvusb binary --------------------------------------------------------------------------
# pvusb_has SUBCOMMAND: does the supplied binary know it? (clap: `CMD --help` exits 0)
pvusb_has() { [ -n "${PVUSB:-}" ] && "$PVUSB" $1 --help >/dev/null 2>&1; }
# pvusb_require SUBCOMMAND...: skip the scenario unless the pvusb binary has them all.
pvusb_require() {
    [ -n "${PVUSB:-}" ] && [ -x "$PVUSB" ] ||
        skip "no pvusb binary supplied (set PVUSB_BIN or build target/*/pvusb)"
    local c
    for c in "$@"; do pvusb_has "$c" || skip "pvusb ($PVUSB) lacks the '$c' command"; done
}
# pvusb_backend_start: run `pvusb backend` as the dom0 daemon (with PVUSB_BACKEND_ARGS, e.g.
# "--poll-max-us 4000") and PVUSB_BACKEND_ENV (NAME=VALUE ... for its environment); sets
# BACKEND_PID and BACKEND_LOG. The log is written to dom0's tmpfs,
# not to the 9p share: each write to the share is a round trip through QEMU, which under TCG
# costs about a millisecond and would stall the worker that logs (with RUST_LOG=trace it made
# every URB wait for its log lines). cleanup_after_scenario copies it into results/.
pvusb_backend_start() {
    BACKEND_LOG=/tmp/$SCEN.backend.log
    # shellcheck disable=SC2086 # PVUSB_BACKEND_ARGS is a list of flags
    # shellcheck disable=SC2086 # PVUSB_BACKEND_ENV is a list of NAME=VALUE
    env RUST_LOG="${RUST_LOG:-info}" ${PVUSB_BACKEND_ENV:-} "$PVUSB" backend --domid 0 ${PVUSB_BACKEND_ARGS:-} \
        > "$BACKEND_LOG" 2>&1 &
    BACKEND_PID=$!
    echo "$BACKEND_PID" >> /tmp/tb-pids
    sleep 2
    kill -0 "$BACKEND_PID" 2>/dev/null ||
        fail "pvusb backend exited at start: $(tail -n 5 "$BACKEND_LOG")"
}

# xs_ctrl_attach DOM DEVID VERSION PORTS: what `xl usbctrl-attach type=pv` writes (libxl's
# layout), for testing the backend alone before `pvusb ctrl-attach` exists. The backend dir is
# complete and readable by the guest before the frontend dir appears (xen-hcd reads usb-ver and
# num-ports at probe); each xenstore-write call is one transaction.
xs_ctrl_attach() {
    local dom=$1 dev=$2 ver=$3 ports=$4 p
    local be=/local/domain/0/backend/vusb/$dom/$dev fe=/local/domain/$dom/device/vusb/$dev
    local kv=("$be/frontend" "$fe" "$be/frontend-id" "$dom" "$be/online" 1 "$be/state" 1
              "$be/type" pv "$be/usb-ver" "$ver" "$be/num-ports" "$ports")
    for p in $(seq "$ports"); do kv+=("$be/port/$p" ""); done
    xenstore-write "${kv[@]}"
    xenstore-chmod -r "$be" n0 "r$dom"
    xenstore-write "$fe/backend" "$be" "$fe/backend-id" 0 "$fe/state" 1
    xenstore-chmod -r "$fe" "n$dom" r0
}
# pvusb_ctrl_attach DOM: a USB 2 controller with 4 ports as devid 0, by `pvusb ctrl-attach`
# when the binary has it, else by writing the nodes (see xs_ctrl_attach).
pvusb_ctrl_attach() {
    if pvusb_has ctrl-attach; then
        # TCG is slow: give the connection more than ctrl-attach's default wait when we can.
        local t=""; "$PVUSB" ctrl-attach --help 2>&1 | grep -q -- --timeout && t="--timeout 90"
        "$PVUSB" ctrl-attach $t "$1" version=2 ports=4 || fail "pvusb ctrl-attach $1"
    else
        note "pvusb has no ctrl-attach: controller nodes written by the test script"
        xs_ctrl_attach "$1" 0 2 4
        wait_for 30 test "$(xenstore-read "/local/domain/0/backend/vusb/$1/0/state")" = 4 ||
            fail "controller did not connect: backend state $(xenstore-read "/local/domain/0/backend/vusb/$1/0/state")"
    fi
}
# pvusb_dev_attach DOM VID PID PORT: give a dom0 USB device to the domU's controller 0.
pvusb_dev_attach() { # DOM VID PID PORT [CONTROLLER]
    local bus addr busid ctl=${5:-0}
    read -r bus addr busid < <(usb_find "$2" "$3") || fail "device $2:$3 not in dom0"
    if pvusb_has dev-attach; then
        "$PVUSB" dev-attach "$1" "$bus.$addr" controller="$ctl" port="$4" || fail "pvusb dev-attach $1 $bus.$addr"
    else
        note "pvusb has no dev-attach: busid written to port/$4 by the test script"
        xenstore-write "/local/domain/0/backend/vusb/$1/$ctl/port/$4" "$busid"
    fi
}
pvusb_dev_detach() { # pvusb_dev_detach DOM PORT
    if pvusb_has dev-detach; then
        "$PVUSB" dev-detach "$1" 0 "$2" || fail "pvusb dev-detach $1 0 $2"
    else
        xenstore-write "/local/domain/0/backend/vusb/$1/0/port/$2" ""
    fi
}
pvusb_ctrl_detach() { # pvusb_ctrl_detach DOM
    if pvusb_has ctrl-detach; then
        "$PVUSB" ctrl-detach "$1" 0 || fail "pvusb ctrl-detach $1 0"
    else
        local be=/local/domain/0/backend/vusb/$1/0
        xenstore-write "$be/online" 0 "$be/state" 5
        wait_for 20 test "$(xenstore-read "$be/state")" = 6 || note "backend did not reach Closed"
        xenstore-rm "$be" "/local/domain/$1/device/vusb/0"
    fi
}
# ---- input ---------------------------------------------------------------------------------------
# tablet_events_check: the tablet's evdev node appears in domU $DOMID, and pointer events injected
# through QMP (input-send-event) arrive in it with the injected coordinates (EV_ABS ABS_X 12345).
# Prints the records; on failure the last line says why and it returns 1.
tablet_events_check() {
    local find='for e in /sys/class/input/event*; do grep -q Tablet $e/device/name 2>/dev/null && { echo ${e##*/}; exit 0; }; done; exit 1'
    local n events xy
    domu_exec -t 150 "for i in \$(seq 240); do ( $find ) && exit 0; sleep 0.5; done; exit 1" > /dev/null ||
        { echo "no tablet input device in the domU"; return 1; }
    # Reader first (in the background in the domU), then the events. 24-byte input_event records
    # printed as unsigned 16-bit words: od fields 1-8 timestamp, 9 type, 10 code, 11-12 value.
    n=$(domu_send "ev=\$( $find ); timeout 60 dd if=/dev/input/\$ev bs=24 count=8 2>/dev/null | od -An -v -tu2 -w24")
    sleep 3
    for xy in "12345 23456" "20000 10000" "1000 2000" "12345 23456"; do
        host_do tablet-move $xy > /dev/null || { echo "QMP input-send-event failed"; return 1; }
        sleep 0.5
    done
    events=$(domu_wait "$n" 90) || { echo "no evdev events in the domU: $events"; return 1; }
    echo "$events"
    echo "$events" | awk '$9 == 3 && $10 == 0 && $11 == 12345 {found = 1} END {exit !found}' ||
        { echo "ABS_X 12345 not seen in the domU's evdev records"; return 1; }
}

# iso_out_check: tb-isoout streams 5 s of isochronous OUT to the speaker in domU $DOMID (through
# usbfs, taking its streaming interface). Prints the tool's output; the last line is
# "PER_MS <packets per ms>" on success, the reason on failure (return 1): a failed packet, or
# a pace outside 0.5-1.5 packets per 1 ms frame.
iso_out_check() {
    local out per_ms
    out=$(domu_exec -t 90 "u=\$($(domu_find_usb $AUDIO_ID)) && tb-isoout \$u 5 2>&1") ||
        { echo "$out"; echo "tb-isoout failed: $(echo "$out" | grep -v '^$' | tail -n 1)"; return 1; }
    echo "$out"
    per_ms=$(echo "$out" | sed -n 's/^PER_MS //p')
    awk -v r="$per_ms" 'BEGIN {exit !(r > 0.5 && r < 1.5)}' ||
        { echo "iso OUT ran at $per_ms packets per ms: the speaker did not take one packet per frame"; return 1; }
    echo "PER_MS $per_ms"
}

# ---- pvusb's frontend in the domU (scenarios 6, 11 and bench's vhci paths) ---------------------
# domu_with_pvusb: the next domu_create puts the pvusb binary (and its libraries) into the domU's
# initramfs and keeps xen-hcd unloaded (tb.nohcd), as on a kernel without it.
domu_with_pvusb() {
    DOMU_EXTRA=/tmp/$SCEN.extra
    rm -rf "$DOMU_EXTRA"; mkdir -p "$DOMU_EXTRA/usr/local/bin"
    cp "$PVUSB" "$DOMU_EXTRA/usr/local/bin/pvusb"
    local lib
    for lib in $(ldd "$PVUSB" | grep -o '/[^ ]*'); do
        mkdir -p "$DOMU_EXTRA$(dirname "$lib")"; cp -L "$lib" "$DOMU_EXTRA$lib"
    done
    mkdir -p "$DOMU_EXTRA/usr/local/share"
    cp "$TB/guest/bridge-anatomy.awk" "$DOMU_EXTRA/usr/local/share/"
    case " $DOMU_ARGS " in *" tb.nohcd "*) ;; *) DOMU_ARGS="$DOMU_ARGS tb.nohcd" ;; esac
}
# front_serve_anatomy: with FRONT_LOG at pvusb_frontend::vhci=trace, the bridge's time per request
# in the guest kernel, in usbif (backend and device) and in answering (bridge-anatomy.awk).
front_serve_anatomy() {
    case ${FRONT_LOG:-} in *vhci=trace*) ;; *) return 0 ;; esac
    domu_exec "awk -f /usr/local/share/bridge-anatomy.awk $FRONT_SERVE_LOG; : > $FRONT_SERVE_LOG"
}
# front_serve_start: `pvusb front serve` in the background in domU $DOMID (log: front_serve_log).
FRONT_SERVE_LOG=/tmp/front-serve.log
front_serve_start() {
    domu_exec "RUST_LOG=${FRONT_LOG:-info} setsid pvusb front serve ${FRONT_SERVE_ARGS:-} > $FRONT_SERVE_LOG 2>&1 < /dev/null & echo \$! > /tmp/front-serve.pid" ||
        fail "cannot start pvusb front serve in the domU"
}
# A domU command returns the last 3000 bytes of its output (domu-init) through one xenstore
# value, which xenstored caps at 2048 bytes for a guest: a longer output is lost whole.
front_serve_log() { domu_exec "tail -n ${1:-30} $FRONT_SERVE_LOG | tail -c 1900"; }
# domu_fetch FILE DEST [MAX_KIB]: copy the last MAX_KIB (default 256) KiB of a domU file into DEST
# in dom0, in chunks whose base64 (1868 bytes for 1400) fits one guest xenstore value (through
# domu_urgent: it serves failures, when the command loop may be stuck).
domu_fetch() {
    local file=$1 dest=$2 max=$((${3:-256} * 1024)) size start i out
    size=$(domu_urgent "stat -c %s $file 2>/dev/null || echo 0") || return 1
    size=$(echo "$size" | tr -dc 0-9); [ -n "$size" ] || size=0
    start=$(( size > max ? (size - max) / 1400 : 0 ))
    : > "$dest"
    for i in $(seq "$start" $(( (size + 1399) / 1400 - 1 ))); do
        out=$(domu_urgent "dd if=$file bs=1400 skip=$i count=1 2>/dev/null | base64 -w0") || break
        printf '%s' "$out" | tr -d '\n' | base64 -d >> "$dest" 2>/dev/null || break
    done
}
# front_serve_diagnose: what a stalled bridge holds, into results/: SIGUSR1 makes pvusb front serve
# log each controller's requests in flight and ring indexes and each device's pending commands;
# then its log, the domU's dmesg (the reset loop's repeated lines cut) and its threads' wait channels.
front_serve_diagnose() {
    echo "the domU's memory and /tmp:"
    domu_urgent "free; df /tmp; ls -la /tmp | tail -n 12"
    domu_urgent "kill -USR1 \$(cat /tmp/front-serve.pid)" || echo "SIGUSR1 not sent"
    sleep 2
    echo "front serve's report (SIGUSR1):"
    domu_urgent "grep -E 'controller: |bridge: ' $FRONT_SERVE_LOG | tail -n 4 | cut -c1-460 | tail -c 1900"
    domu_fetch "$FRONT_SERVE_LOG" "$RES/$SCEN.front-serve.log"
    domu_urgent "dmesg | awk '/SetAddress Request|reset high-speed/ { if (++n > 40) next } { print }' > /tmp/dmesg.txt"
    domu_fetch /tmp/dmesg.txt "$RES/$SCEN.domu-dmesg.log" 64
    echo "front serve's log and the domU's dmesg: results/$SCEN.front-serve.log, results/$SCEN.domu-dmesg.log"
    if [ "$PEER" = pvusb ]; then
        echo "the backend's counters (requests taken, responses given):"
        "$PVUSB" stats "$DOMID" 2>&1 | head -n 20 || true
    fi
    echo "front serve's threads (name, kernel wait channel):"
    domu_urgent "for t in /proc/\$(cat /tmp/front-serve.pid)/task/*; do echo \$(cat \$t/comm) \$(cat \$t/wchan); done | tail -c 1900"
}
front_serve_alive() {
    domu_exec "kill -0 \$(cat /tmp/front-serve.pid)" ||
        fail "pvusb front serve died: $(front_serve_log 8 | tr '\n' ' ')"
}

# ---- the backend under test ("peer"): pvusb (default) or qusb, from the scenario name ----------
# run.sh's "3@qusb" runs scenario 3 with PEER=qusb: the same steps through QEMU's backend
# (controller in the domain config, xl usbdev-attach/detach), for comparison and to prove the
# scenario itself. PEER_PID is the process serving the guest (pvusb backend or the guest's QEMU).
PEER=${PEER:-pvusb}
peer_require() { # peer_require [PVUSB-SUBCOMMAND...]
    [ "$PEER" = qusb ] || pvusb_require backend "$@"
}
peer_start() {
    [ "$PEER" = pvusb ] || return 0
    pvusb_backend_start
    PEER_PID=$BACKEND_PID
}
peer_domu_create() { # NAME
    if [ "$PEER" = qusb ]; then
        domu_create "$1" 'usbctrl = [ "type=qusb,version=2,ports=4" ]'
        PEER_PID=$(xenstore-read "/local/domain/$DOMID/image/device-model-pid") ||
            fail "no device-model QEMU for the qusb domU"
    else
        domu_create "$1"
    fi
}
peer_ctrl_attach() { [ "$PEER" = qusb ] || pvusb_ctrl_attach "$1"; }
peer_dev_attach() { # DOM VID PID PORT [CONTROLLER]
    if [ "$PEER" = qusb ]; then
        local bus addr busid
        read -r bus addr busid < <(usb_find "$2" "$3") || fail "device $2:$3 not in dom0"
        xl usbdev-attach "$1" hostbus="$bus" hostaddr="$addr" controller=0 port="$4" ||
            fail "xl usbdev-attach $1 hostbus=$bus hostaddr=$addr"
    else
        pvusb_dev_attach "$@"
    fi
}
peer_dev_detach() { # DOM PORT
    if [ "$PEER" = qusb ]; then xl usbdev-detach "$1" 0 "$2" || fail "xl usbdev-detach $1 0 $2"
    else pvusb_dev_detach "$@"; fi
}
peer_ctrl_detach() { # DOM
    if [ "$PEER" = qusb ]; then xl usbctrl-detach "$1" 0 || fail "xl usbctrl-detach $1 0"
    else pvusb_ctrl_detach "$1"; fi
}
peer_alive() {
    kill -0 "$PEER_PID" 2>/dev/null && return 0
    [ "$PEER" = pvusb ] && fail "pvusb backend died: $(tail -n 5 "$BACKEND_LOG")"
    fail "the qusb QEMU ($PEER_PID) died"
}
# peer_usage: "<open fds> <mappings>" of the serving process (leak checks compare these).
peer_usage() { echo "$(ls "/proc/$PEER_PID/fd" | wc -l) $(wc -l < "/proc/$PEER_PID/maps")"; }

# stick_to_domu [NAME]: backend, domU (named $SCEN unless NAME), controller 0 and the stick on
# its port 1, block device visible in the domU. Sets PEER_PID, DOMID.
stick_to_domu() {
    step "start the $PEER backend"
    peer_start
    step "create domU"
    peer_domu_create "${1:-$SCEN}"
    step "$PEER: controller for domU $DOMID"
    peer_ctrl_attach "$DOMID"
    step "$PEER: attach the stick"
    peer_dev_attach "$DOMID" $STICK_ID 1
    step "domU: xen-hcd enumerates the stick"
    domu_wait_sd
}
domu_wait_sd() { # wait up to 120 s for a usb-storage disk in the domU
    domu_exec -t 150 "for i in \$(seq 240); do $DOMU_FIND_SD && exit 0; sleep 0.5; done; exit 1" ||
        fail "no sd block device in the domU within 120 s"
}
# domu_md5 MIB SKIP_MIB [BS]: md5 of a region of the domU's stick, read with O_DIRECT.
domu_md5() {
    local out
    out=$(domu_exec -t 600 "d=\$($DOMU_FIND_SD); export d; tb-time sh -c 'dd if=/dev/\$d bs=${3:-1M} count=\$(($1 * 1048576 / $(bs_bytes "${3:-1M}"))) skip=\$(($2 * 1048576 / $(bs_bytes "${3:-1M}"))) iflag=direct 2>/dev/null | md5sum'") ||
        { echo "domU read failed: $out" >&2; return 1; }
    echo "$out" | awk 'NR == 1 {print $1}'
    echo "$out" | sed -n 's/^ELAPSED //p' > /tmp/last-elapsed
}
bs_bytes() { case $1 in *M) echo $(( ${1%M} * 1048576 ));; *K) echo $(( ${1%K} * 1024 ));; *) echo "$1";; esac; }

# ---- host side (QMP) ---------------------------------------------------------------------------
# host_do ACTION ARGS...: ask run.sh on the host to act (QMP); see host_action in run.sh.
host_do() {
    local n; n=$(date +%s%N)
    mkdir -p "$TB/host"
    echo "$*" > "$TB/host/.req.$n"
    mv "$TB/host/.req.$n" "$TB/host/req.$n"
    wait_for 60 test -f "$TB/host/done.$n" || { echo "host did not answer: $*"; return 1; }
    sed 1d "$TB/host/done.$n"
    return "$(head -n1 "$TB/host/done.$n")"
}

# ---- between scenarios --------------------------------------------------------------------------
# cleanup_after_scenario NAME: leave dom0 as it booted, so scenarios stay independent. pvusb's
# own `recover --all` gets the first go (while its backend still runs); whatever it leaves is
# removed by force and noted in the scenario's result, since that is a finding too.
cleanup_after_scenario() {
    local name=$1 d p left
    for d in $(xl list | awk 'NR > 2 {print $1}'); do xl destroy "$d"; done
    if [ -n "${PVUSB:-}" ] && pvusb_has recover &&
       [ -n "$(xenstore-list /local/domain/0/backend/vusb 2>/dev/null)$(xenstore-list /pvusb/usbback 2>/dev/null)" ]; then
        timeout 90 "$PVUSB" recover --all ||
            echo "cleanup: 'pvusb recover --all' failed after this scenario" >> "$RES/$name.notes"
    fi
    if [ -f /tmp/tb-pids ]; then
        for p in $(cat /tmp/tb-pids); do kill "$p" 2>/dev/null; done
        sleep 1
        for p in $(cat /tmp/tb-pids); do kill -9 "$p" 2>/dev/null; done
        rm -f /tmp/tb-pids
    fi
    for p in /tmp/*.backend.log; do [ -f "$p" ] && mv "$p" "$RES/"; done
    left=$(xenstore-list /local/domain/0/backend/vusb 2>/dev/null; xenstore-list /pvusb/usbback 2>/dev/null)
    if [ -n "$left" ]; then
        echo "cleanup: removed leftover xenstore state (backend/vusb, /pvusb/usbback): $(echo $left)" >> "$RES/$name.notes"
        xenstore-rm /local/domain/0/backend/vusb 2>/dev/null
        xenstore-rm /pvusb/usbback 2>/dev/null
    fi
    # Give the stick back to dom0's driver if it was left unbound.
    local busid; busid=$(usb_find $STICK_ID | cut -d' ' -f3) &&
        [ ! -e "/sys/bus/usb/devices/$busid:1.0/driver" ] &&
        echo "$busid:1.0" > /sys/bus/usb/drivers/usb-storage/bind
    true
}
