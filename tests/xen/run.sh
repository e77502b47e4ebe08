#!/usr/bin/env bash
# Boot QEMU (TCG) -> Xen -> dom0 unattended and run test-bed scenarios inside dom0.
#
#   sudo tests/xen/run.sh              # = all: every numbered scenario, then bench
#   sudo tests/xen/run.sh 7            # one scenario (by number or file name)
#   sudo tests/xen/run.sh ci           # scenarios 1 3 6 7 8 11 (the CI subset)
#   sudo tests/xen/run.sh 1 3 bench    # any list
#   sudo tests/xen/run.sh 3@qusb       # scenario 3 against QEMU's backend instead of pvusb
#   sudo tests/xen/run.sh qusb         # scenarios 1-6 against QEMU's backend
#   PVUSB_BIN=path/to/pvusb tests/xen/run.sh ...   # else target/{release,debug}/pvusb if present
#
# Builds what is missing first (tests/xen/build.sh). Each run gets its own directory
# target/xen-testbed/runs/<stamp>/ shared with dom0 over 9p: scripts and the pvusb binary go in,
# results, logs and guest consoles come out. Exit status 0 only if no scenario failed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TB=${XEN_TESTBED_DIR:-$ROOT/target/xen-testbed}
SCENARIO_TIMEOUT=${SCENARIO_TIMEOUT:-600}   # per scenario, enforced inside dom0
BOOT_TIMEOUT=${BOOT_TIMEOUT:-240}           # QEMU start -> toolstack ready, enforced here
KEEP_RUNS=${KEEP_RUNS:-4}
CI_SCENARIOS="1 3 6 7 8 11"
QUSB_SCENARIOS="1@qusb 2@qusb 3@qusb 4@qusb 5@qusb 6@qusb"   # the pvusb scenarios against qusb

log() { printf '[run %(%T)T] %s\n' -1 "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# --- scenario selection ----------------------------------------------------------------------
scenario_names() { # map arguments (numbers, names, all, ci, qusb, bench, N@PEER) to names
    local a f peer
    [[ $# -eq 0 ]] && set -- all
    for a in "$@"; do
        case $a in
            all) for f in "$HERE"/scenarios/[0-9]*.sh; do basename "$f" .sh; done
                 echo bench ;;
            ci) scenario_names $CI_SCENARIOS ;;
            qusb) scenario_names $QUSB_SCENARIOS ;;
            *) peer=""; [[ $a == *@* ]] && peer=@${a#*@}
               [[ -z $peer || $peer == @qusb || $peer == @pvusb ]] || die "unknown peer in '$a' (qusb or pvusb)"
               f=$(ls "$HERE/scenarios/${a%@*}".sh "$HERE/scenarios/${a%@*}"-*.sh 2>/dev/null | head -n1) ||
                   true
               [[ -n $f ]] || die "no scenario '${a%@*}' in tests/xen/scenarios"
               echo "$(basename "$f" .sh)$peer" ;;
        esac
    done
}

find_pvusb() {
    local c
    for c in "${PVUSB_BIN:-}" "$ROOT/target/release/pvusb" "$ROOT/target/debug/pvusb"; do
        [[ -n $c && -x $c ]] && { echo "$c"; return; }
    done
    [[ -z ${PVUSB_BIN:-} ]] || die "PVUSB_BIN=$PVUSB_BIN is not an executable"
}

# --- the run directory (the 9p share) --------------------------------------------------------
prepare_run_dir() {
    local stamp; stamp=$(date +%Y%m%d-%H%M%S)
    RUN=$TB/runs/$stamp
    mkdir -p "$RUN"/{out,bin,results,host}
    cp -r "$HERE/guest" "$HERE/scenarios" "$RUN/"
    local f
    for f in vmlinuz domu.cpio xen-hcd.ko; do ln "$TB/out/$f" "$RUN/out/$f"; done
    # A fresh copy of the stick per run keeps runs independent of earlier writes.
    cp --sparse=always "$TB/out/stick.img" "$RUN/stick.img"
    # Without its debug information (symbols stay, for backtraces): a release build carries
    # ~45 MB of it, and the vhci paths copy the binary into a 256 MB domU's initramfs, whose
    # unpacking then fails ("Initramfs unpacking failed: write error").
    local pv=""
    if [[ -n $PVUSB_HOST ]]; then
        objcopy --strip-debug "$PVUSB_HOST" "$RUN/bin/pvusb" 2>/dev/null || cp "$PVUSB_HOST" "$RUN/bin/pvusb"
        pv=/tb/bin/pvusb
    fi
    cat > "$RUN/run.conf" <<EOF
SCENARIOS="$SCENARIOS"
SCENARIO_TIMEOUT=$SCENARIO_TIMEOUT
PATTERN_MD5=$(cat "$TB/out/stick.pattern.md5")
PVUSB=$pv
EOF
    # Knobs the scenarios read, passed through when set on the host.
    local v
    for v in BENCH_ROUNDS BENCH_MIB BENCH_SECONDS BENCH_PATHS ANATOMY_MIB MIC_SECONDS MIC_PATHS MIC_EMU_ARGS HOTPLUG_CYCLES VHCI_CYCLES VHCI_PARTS FRONT_LOG UNLINK_ROUNDS RELEASE_ROUNDS RELEASE_UNPLUGS \
             PVUSB_FRONT_READ FRONT_SERVE_ARGS PVUSB_BACKEND_ARGS PVUSB_BACKEND_ENV RUST_LOG; do
        [[ -n ${!v:-} ]] && printf '%s=%q\n' "$v" "${!v}" >> "$RUN/run.conf"
    done
    ln -sfn "$stamp" "$TB/runs/last"
    # Keep the newest KEEP_RUNS run directories (each holds a 192 MB stick image).
    ls -1d "$TB"/runs/2* 2>/dev/null | head -n -"$KEEP_RUNS" | xargs -r rm -rf
}

# --- QMP and host-side actions requested by dom0 (guest/lib.sh host_do) ----------------------
qmp() { # qmp JSON...: run QMP commands; prints the replies; fails on an error reply
    local out
    out=$({ echo '{"execute":"qmp_capabilities"}'; printf '%s\n' "$@"; sleep 0.3; } |
          socat -t 2 - "UNIX-CONNECT:$RUN/qmp.sock" 2>&1) || { echo "$out"; return 1; }
    echo "$out" | grep -v '"QMP"'
    ! grep -q '"error"' <<<"$out"
}
STICK_ADD='{"execute":"device_add","arguments":{"driver":"usb-storage","bus":"xhci.0","port":"1","drive":"stickdrv","id":"stick"}}'
abs_event() { printf '{"type":"abs","data":{"axis":"%s","value":%d}}' "$1" "$2"; }
host_action() {
    case $1 in
        stick-unplug) qmp '{"execute":"device_del","arguments":{"id":"stick"}}' ;;
        stick-plug) # device_del finishes asynchronously; retry while the id is still taken
            local i; for i in 1 2 3 4 5 6; do qmp "$STICK_ADD" && return 0; sleep 0.5; done; return 1 ;;
        tablet-move) # tablet-move X Y (0..32767)
            qmp "{\"execute\":\"input-send-event\",\"arguments\":{\"events\":[$(abs_event x "$2"),$(abs_event y "$3")]}}" ;;
        tablet-click)
            qmp '{"execute":"input-send-event","arguments":{"events":[{"type":"btn","data":{"down":true,"button":"left"}}]}}' \
                '{"execute":"input-send-event","arguments":{"events":[{"type":"btn","data":{"down":false,"button":"left"}}]}}' ;;
        qmp) shift; qmp "$*" ;;
        *) echo "unknown host action: $*"; return 1 ;;
    esac
}
serve_host_requests() { # until QEMU exits: answer dom0's requests in $RUN/host
    local req n out rc
    while kill -0 "$QEMU_PID" 2>/dev/null; do
        for req in "$RUN"/host/req.*; do
            [[ -f $req ]] || continue
            n=${req##*.}
            rc=0; out=$(host_action $(cat "$req") 2>&1) || rc=$?
            printf '%s\n%s\n' "$rc" "$out" > "$RUN/host/.done.$n"
            mv "$RUN/host/.done.$n" "$RUN/host/done.$n"; rm -f "$req"
        done
        sleep 0.2
    done
}

# --- QEMU ---------------------------------------------------------------------------------------
XEN_ARGS="console=com1 com1=115200,8n1 dom0_mem=1536M,max:1536M dom0_max_vcpus=1 dom0_vcpus_pin
 loglvl=all guest_loglvl=all smap=0 smep=0 bootscrub=0"
start_qemu() {
    local limit=$1
    # TCG only: /dev/kvm here cannot run Xen (tests/xen/README.md, "Why these choices").
    timeout -k 10 "$limit" qemu-system-x86_64 \
        -accel tcg,thread=multi,tb-size=512 -cpu max -machine q35 -smp 2 -m 4096 \
        -display none -monitor none -no-reboot \
        -serial "file:$RUN/serial.log" \
        -kernel "$TB/out/xen" -append "$(echo $XEN_ARGS)" \
        -initrd "$TB/out/vmlinuz console=hvc0 earlyprintk=xen,$TB/out/dom0.cpio" \
        -virtfs "local,path=$RUN,mount_tag=tb,security_model=none" \
        -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
        -qmp "unix:$RUN/qmp.sock,server=on,wait=off" \
        -audiodev none,id=noaudio \
        -device qemu-xhci,id=xhci \
        -blockdev "driver=file,filename=$RUN/stick.img,node-name=stickfile,cache.no-flush=on" \
        -blockdev driver=raw,file=stickfile,node-name=stickdrv,cache.no-flush=on \
        -device usb-storage,bus=xhci.0,port=1,drive=stickdrv,id=stick \
        -device usb-tablet,bus=xhci.0,port=2,id=tablet \
        -device usb-audio,bus=xhci.0,port=3,audiodev=noaudio,id=audio \
        > "$RUN/qemu.log" 2>&1 &
    QEMU_PID=$!
}

# Print XENTB-* lines from the serial console as they arrive, with seconds since QEMU start.
follow_progress() {
    local t0=$SECONDS line
    tail -n +1 -F --pid="$QEMU_PID" "$RUN/serial.log" 2>/dev/null |
        grep --line-buffered -a '^XENTB-' | while IFS= read -r line; do
            printf '[%4ds] %s\n' $((SECONDS - t0)) "$line"
            [[ $line == XENTB-STEP\ boot:\ toolstack* ]] && echo $((SECONDS - t0)) > "$RUN/boot-seconds"
        done
}

# Kill the run if dom0 has not brought the toolstack up within BOOT_TIMEOUT.
boot_watchdog() {
    local i
    for ((i = 0; i < BOOT_TIMEOUT; i++)); do
        sleep 1
        kill -0 "$QEMU_PID" 2>/dev/null || return 0
        grep -qa 'XENTB-STEP boot: toolstack\|XENTB-DONE' "$RUN/serial.log" 2>/dev/null && return 0
    done
    echo "boot: no toolstack after ${BOOT_TIMEOUT}s" > "$RUN/boot-timeout"
    kill "$QEMU_PID" 2>/dev/null || true
}

CHILDREN=()
teardown() {
    local p
    [[ -n ${QEMU_PID:-} ]] && kill "$QEMU_PID" 2>/dev/null || true
    for p in "${CHILDREN[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}

# --- the report ------------------------------------------------------------------------------
show_tail() { # show_tail FILE N: last N lines of a console, labelled
    [[ -s $1 ]] || return 0
    echo "---- last $2 lines of ${1#"$RUN"/} ----"
    tail -n "$2" "$1" | tr -d '\r' | cut -c1-200
}
report() {
    local qemu_rc=$1 s line verdict failed=0 total=0
    echo
    echo "==== xen test-bed results (run dir: $RUN) ===="
    for s in $SCENARIOS; do
        total=$((total + 1))
        if [[ -f $RUN/results/$s.result ]]; then
            line=$(cat "$RUN/results/$s.result")
        elif [[ -f $RUN/boot-timeout ]]; then
            line="FAIL - $(cat "$RUN/boot-timeout")"
        else
            line="FAIL - no result (dom0 died or the run timed out; last step: $(cat "$RUN/results/$s.step" 2>/dev/null || echo none))"
        fi
        verdict=${line%% *}
        [[ $verdict == PASS || $verdict == SKIP ]] || failed=$((failed + 1))
        printf '%-4s %-22s %s\n' "$verdict" "$s" "${line#* }"
        [[ -f $RUN/results/$s.notes ]] && sed 's/^/       note: /' "$RUN/results/$s.notes"
    done
    [[ -f $RUN/results/bench.table ]] && { echo; cat "$RUN/results/bench.table"; }
    echo
    echo "boot to toolstack: $(cat "$RUN/boot-seconds" 2>/dev/null || echo '?') s; whole run: $((SECONDS - RUN_T0)) s; QEMU exit status $qemu_rc"
    # TCG timings depend on what else the 2 host cores do; say how busy they were.
    echo "host load average (1/5/15 min): at start $LOAD0, at end $(cut -d' ' -f1-3 /proc/loadavg)"
    grep -qa '^XENTB-DONE' "$RUN/serial.log" 2>/dev/null || { failed=$((failed + 1)); echo "dom0 never reported XENTB-DONE"; }
    if [[ $failed -gt 0 ]]; then
        echo "FAILED: $failed of $total scenario(s) (or the run itself)"
        show_tail "$RUN/serial.log" 40
        local f; for f in "$RUN"/results/console/guest-*.log; do [[ -e $f ]] && show_tail "$f" 25; done
        show_tail "$RUN/qemu.log" 10
        return 1
    fi
    echo "OK: $total scenario(s), none failed"
}

main() {
    [[ $(id -u) -eq 0 ]] || die "run as root (9p share with security_model=none, build steps)"
    SCENARIOS=$(scenario_names "$@" | tr '\n' ' ')
    PVUSB_HOST=$(find_pvusb)
    mkdir -p "$TB/runs"
    exec 9> "$TB/run.lock"
    flock -n 9 || { log "another test-bed run holds $TB/run.lock; waiting"; flock 9; }
    # Build under the lock: the images this run links into its directory are the ones this
    # checkout built (a worktree with other tools or modules may rebuild them while we wait),
    # and a rebuild never competes with another run's QEMU for the two host cores.
    [[ -z ${XEN_TESTBED_NO_BUILD:-} ]] && "$HERE/build.sh"
    RUN_T0=$SECONDS
    LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
    prepare_run_dir
    log "scenarios: $SCENARIOS"
    log "pvusb: ${PVUSB_HOST:-none (pvusb scenarios will SKIP)}"
    local limit=$((BOOT_TIMEOUT + 60)) s t
    for s in $SCENARIOS; do # the same per-scenario budgets dom0-init enforces, plus cleanup
        t=$(sed -n 's/^# timeout: *\([0-9]*\).*/\1/p' "$HERE/scenarios/${s%@*}.sh" | head -n1)
        limit=$((limit + ${t:-$SCENARIO_TIMEOUT} + 30))
    done
    log "run dir $RUN; hard timeout ${limit}s"
    trap teardown EXIT INT TERM
    start_qemu "$limit"
    follow_progress & CHILDREN+=($!)
    serve_host_requests & CHILDREN+=($!)
    boot_watchdog & CHILDREN+=($!)
    local rc=0; wait "$QEMU_PID" || rc=$?
    QEMU_PID=
    sleep 0.5
    teardown
    trap - EXIT INT TERM
    # isa-debug-exit: 1 = dom0 said rc 0; 124 = our timeout hit.
    [[ $rc -eq 124 || $rc -eq 137 ]] && log "hard timeout (${limit}s) hit"
    report "$rc"
}
main "$@"
