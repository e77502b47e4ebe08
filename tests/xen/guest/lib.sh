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
fail() { echo "$*" >> "$RES/$SCEN.reason"; echo "FAIL: $*"; exit 1; }
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
extra = "console=hvc0 rdinit=/init"
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
    rm -f "/tmp/domu-$DOMID.n"
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
    xenstore-read -R "/local/domain/$DOMID/data/out/$n" 2>/dev/null
    rc=$(xenstore-read "/local/domain/$DOMID/data/rc/$n")
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

# ---- the pvusb binary --------------------------------------------------------------------------
# pvusb_require SUBCOMMAND...: skip the scenario unless the pvusb binary has them all.
pvusb_require() {
    [ -n "${PVUSB:-}" ] && [ -x "$PVUSB" ] || skip "no pvusb binary supplied (set PVUSB_BIN or build target/*/pvusb)"
    local c
    for c in "$@"; do
        # shellcheck disable=SC2086
        "$PVUSB" $c --help >/dev/null 2>&1 || skip "pvusb lacks the '$c' command"
    done
}
# pvusb_backend_start: run `pvusb backend` as a daemon; sets BACKEND_PID.
pvusb_backend_start() {
    "$PVUSB" backend --domid 0 > "$RES/$SCEN.backend.log" 2>&1 &
    BACKEND_PID=$!
    echo "$BACKEND_PID" >> /tmp/tb-pids
    sleep 1
    kill -0 "$BACKEND_PID" 2>/dev/null || fail "pvusb backend exited at start: $(tail -n 5 "$RES/$SCEN.backend.log")"
}

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
cleanup_after_scenario() {
    local d p
    for d in $(xl list | awk 'NR > 2 {print $1}'); do xl destroy "$d"; done
    if [ -f /tmp/tb-pids ]; then
        for p in $(cat /tmp/tb-pids); do kill "$p" 2>/dev/null; done
        sleep 1
        for p in $(cat /tmp/tb-pids); do kill -9 "$p" 2>/dev/null; done
        rm -f /tmp/tb-pids
    fi
    xenstore-rm /local/domain/0/backend/vusb 2>/dev/null
    # Give the stick back to dom0's driver if a scenario left it unbound.
    local busid; busid=$(usb_find $STICK_ID | cut -d' ' -f3) &&
        [ ! -e "/sys/bus/usb/devices/$busid:1.0/driver" ] &&
        echo "$busid:1.0" > /sys/bus/usb/drivers/usb-storage/bind
    true
}
