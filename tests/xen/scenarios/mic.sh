# Microphone (a measurement, not in `all`): does an isochronous IN stream of 1 ms packets keep
# real time? QEMU's usb-audio is a speaker only, so the device is tests/xen/tools/tb-mic: a USB
# Audio Class 1 microphone (48 kHz, stereo, 16 bit, one 192-byte packet per 1 ms frame, a
# counter as the signal) emulated in dom0 userspace and attached to dom0's own vhci-hcd over a
# socketpair (USB/IP without usbipd). It answers iso URBs no faster than real time and drops the
# frames nobody asked for in time, like a real microphone. Recorded with tb-rec (ALSA PCM
# ioctls, counter checked) for MIC_SECONDS (default 10) along MIC_PATHS (default
# "native pvusb qusb"):
#   native  dom0's snd-usb-audio on the vhci device
#   pvusb   `pvusb backend` gives the mic to a domU; its snd-usb-audio records through xen-hcd
#   qusb    the same through QEMU's backend (controller in the domain config)
# Per path: rt (frames captured / (48000 * wall seconds)) and the counter's gaps and lost frames
# over the whole recording; over the steady-state window (2 s in to 2 s before the end) iso
# URBs per second (tb-mic's count), dom0 busy ms per second (/proc/stat), tb-mic's CPU per URB
# and for pvusb the backend process's CPU (utime+stime) per URB; for pvusb also the iso URBs of
# the whole recording as the backend counted them (`pvusb stats`). A path that does not work is a note, not a failure;
# the scenario fails only if the native path fails or the summary cannot be made. tb-mic runs
# SCHED_FIFO (a hardware microphone's clock does not wait for dom0's CPU); MIC_EMU_ARGS=-N
# runs it at normal priority.
# Output: results/mic.table, the summary line as a note.
# timeout: 1500
MIC_ID="1209 0001"
secs=${MIC_SECONDS:-10}
paths=${MIC_PATHS:-native pvusb qusb}
table=$RES/mic.table
summary=""
tb_mic=$(tb_tool tb-mic) || fail "no tb-mic for dom0 (tests/xen/build.sh builds it)"
tb_rec=$(tb_tool tb-rec) || fail "no tb-rec for dom0 (tests/xen/build.sh builds it)"
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)

# CARD_SH: a shell snippet (dom0 and domU) printing the ALSA card number of the mic.
CARD_SH='for c in /proc/asound/card[0-9]*; do [ "$(cat $c/usbid 2>/dev/null)" = "1209:0001" ] && { echo ${c##*card}; exit 0; }; done; exit 1'
val() { printf '%s\n' "$1" | sed -n "s/^$2 //p" | tail -n 1; }

# sample N [BACKEND_PID]: W_T<N> uptime, W_B<N> dom0's idle + iowait + steal jiffies, W_M<N>
# tb-mic's CPU, W_C<N> the backend's CPU (utime + stime, jiffies), W_R<N> the line of tb-mic's
# counters this sample asks for (SIGUSR1). dom0's busy time is the window minus idle, iowait
# and steal: those come from the nohz idle clock and the steal clock, while /proc/stat's user
# and system fields are sampled by the scheduler tick, which a task waking every millisecond
# aliases (a first version read 282 busy ms/s while tb-mic alone used 428). A process's
# utime + stime is scaled to its exact runtime. Builtins only: a fork costs tens of
# milliseconds in dom0 under TCG and would stretch the window.
sample() {
    local _c u n ni sy id io ir si st8 st
    mapfile -t _c < /tmp/tb-mic.err
    eval "W_R$1=$((${#_c[@]} + 1))"
    kill -USR1 "$MIC_PID"
    read -r u _ < /proc/uptime
    read -r _ n ni sy id io ir si st8 _ < /proc/stat
    read -r -a st < "/proc/$MIC_PID/stat"
    eval "W_T$1=$u W_B$1=$((id + io + st8)) W_M$1=$((st[13] + st[14])) W_C$1="
    if [ -n "${2:-}" ]; then
        read -r -a st < "/proc/$2/stat"
        eval "W_C$1=$((st[13] + st[14]))"
    fi
}
# window START [BACKEND_PID]: called right after a recording of $secs seconds started at uptime
# START; samples from 2 s into it to 2 s before its end (all of it when MIC_SECONDS < 7), so the
# rates below are the steady state and exclude starting the recorder, the domU command loop and
# stream setup. Then W_U<N>, W_L<N>: tb-mic's iso URBs and lost frames at each sample.
window() {
    local lead=2 w=$((secs - 4))
    [ "$secs" -ge 7 ] || { lead=0; w=$secs; }
    sleep "$lead"
    sample 0 "${2:-}"
    sleep "$w"
    sample 1 "${2:-}"
    sleep 0.3
    W_U0=$(mic_line "$W_R0" iso_urbs) W_L0=$(mic_line "$W_R0" lost_frames)
    W_U1=$(mic_line "$W_R1" iso_urbs) W_L1=$(mic_line "$W_R1" lost_frames)
    W_Q=$(mic_line "$W_R1" max_queue) W_LATE=$(mic_line "$W_R1" late_max_us) W_LATE1=$(mic_line "$W_R1" late_over_1ms)
    awk -v a="$1" -v b="$W_T1" -v s="$secs" 'BEGIN {exit !(b > a + s)}' &&
        note "the sampling window ended $(awk -v a="$1" -v b="$W_T1" -v s="$secs" 'BEGIN {print b - a - s}') s after the recording: rates are diluted"
    true
}
# mic_line N KEY: counter KEY of line N of tb-mic's counter lines.
mic_line() { sed -n "${1}p" /tmp/tb-mic.err | awk -v k="$2" '{for (i = 2; i < NF; i++) if ($i == k) print $(i + 1)}'; }

# record PATH RC OUTPUT [ISO_URBS_FROM_PVUSB_STATS]: a table row and the summary part of one path
# from the recorder's output and the window's samples.
record() {
    local p=$1 rc=$2 out=$3 wall urbs rate busy micus beus=- rt frames extra=""
    if [ "$rc" != 0 ] || [ -z "$(val "$out" RT)" ]; then
        note "$p: recording failed (rc $rc): $(printf '%s\n' "$out" | grep -v '^\s*$' | tail -n 3 | tr '\n' ' ')"
        summary="$summary${summary:+; }$p failed"
        return 1
    fi
    rt=$(val "$out" RT); frames=$(val "$out" FRAMES)
    wall=$(awk -v a="$W_T0" -v b="$W_T1" 'BEGIN {print b - a}')
    urbs=$((W_U1 - W_U0))
    rate=$(awk -v n="$urbs" -v w="$wall" 'BEGIN {printf "%.0f", n / w}')
    busy=$(awk -v a="$W_B0" -v b="$W_B1" -v hz="$HZ" -v w="$wall" 'BEGIN {printf "%.0f", (w - (b - a) / hz) * 1000 / w}')
    echo "$p window: uptime $W_T0 $W_T1, idle+iowait+steal $W_B0 $W_B1, tb-mic $W_M0 $W_M1, backend ${W_C0:--} ${W_C1:--} (jiffies, HZ $HZ), tb-mic lines $W_R0 $W_R1"
    per_urb() { awk -v j="$1" -v hz="$HZ" -v n="$urbs" 'BEGIN {printf "%.0f", (n > 0) ? j * 1e6 / hz / n : 0}'; }
    micus=$(per_urb $((W_M1 - W_M0)))
    if [ -n "$W_C0" ]; then
        beus=$(per_urb $((W_C1 - W_C0)))
        extra=" urbs=${4:-?} dom0_cpu_us_per_urb=$beus"
    fi
    printf '%-7s %6s %8s %6s %8s %10s %14s %12s %16s %9s\n' "$p" "$rt" "$frames" "$(val "$out" GAPS)" \
        "$(val "$out" LOST)" "$rate" "$busy" "$micus" "$beus" "${4:--}" >> "$table"
    summary="$summary${summary:+; }$p rt=$rt urbs_per_s=$rate cpu_ms_per_s=$busy$extra"
    echo "$p: $(printf '%s\n' "$out" | tr '\n' ' ')"
    [ "$(val "$out" BAD)" = 0 ] || note "$p: $(val "$out" BAD) frames broke the counter pattern"
    [ "$(val "$out" XRUNS)" = 0 ] || note "$p: $(val "$out" XRUNS) overruns in the recorder"
    note "$p: $(val "$out" FRAMES) frames in $(val "$out" WALL) s, $(val "$out" GAPS) gaps, $(val "$out" LOST) frames lost (tb-mic: $((W_L1 - W_L0)) lost in the ${wall} s window, in the window at most $W_Q URBs queued, its own answers up to $W_LATE us late, $W_LATE1 of them over 1 ms); recorder period $(val "$out" PERIOD) buffer $(val "$out" BUFFER) frames"
}

# domu_card: wait for snd-usb-audio to bind the mic in the domU; print its card number.
domu_card() {
    domu_exec -t 150 "for i in \$(seq 240); do ( $CARD_SH ) && exit 0; sleep 0.5; done; cat /proc/asound/cards; exit 1"
}
iso_urbs() { "$PVUSB" stats "$DOMID" --json | grep -o '"isochronous":[0-9]*' | head -n 1 | cut -d: -f2; }
# domu_record PATH [BACKEND_PID]: record in the domU (domU $DOMID has the mic), measure meanwhile.
domu_record() {
    local p=$1 card out rc n r0 s0="" s1=""
    step "$p: snd-usb-audio in the domU binds the mic"
    card=$(domu_card) || { note "$p: the mic did not appear as an ALSA card in the domU: $(echo $card)"; summary="$summary${summary:+; }$p failed"; return 0; }
    card=$(echo "$card" | head -n 1)
    [ -z "${2:-}" ] || s0=$(iso_urbs)
    step "$p: record ${secs} s in the domU (card $card)"
    read -r r0 _ < /proc/uptime
    n=$(domu_send "tb-rec /dev/snd/pcmC${card}D0c $secs") || fail "cannot queue the domU's recording"
    window "$r0" "${2:-}"
    rc=0; out=$(domu_wait "$n" $((secs + 120))) || rc=$?
    if [ -n "${2:-}" ]; then
        s1=$(iso_urbs)
        "$PVUSB" stats "$DOMID" > "$RES/mic.$p.stats.txt" 2>&1 || true
    fi
    record "$p" "$rc" "$out" ${2:+$((${s1:-0} - ${s0:-0}))} || true
}

printf '%-7s %6s %8s %6s %8s %10s %14s %12s %16s %9s\n' path rt frames gaps lost urbs_per_s \
    dom0_cpu_ms/s mic_us/urb backend_us/urb urbs > "$table"

step "vhci-hcd and the emulated microphone (tb-mic)"
tb_modprobe vhci-hcd || fail "cannot load vhci-hcd from domu.cpio's modules"
tb_modprobe snd-usb-audio || fail "cannot load snd-usb-audio from domu.cpio's modules"
# shellcheck disable=SC2086 # MIC_EMU_ARGS: tb-mic flags, e.g. -N (no SCHED_FIFO)
"$tb_mic" ${MIC_EMU_ARGS:-} > /tmp/tb-mic.out 2> /tmp/tb-mic.err &
MIC_PID=$!
echo "$MIC_PID" >> /tmp/tb-pids
wait_for 30 usb_find $MIC_ID || fail "tb-mic did not enumerate on vhci: $(cat /tmp/tb-mic.out /tmp/tb-mic.err; dmesg | tail -n 15)"
cat /tmp/tb-mic.out
read -r bus addr busid < <(usb_find $MIC_ID)
note "tb-mic: $(lsusb -s "$bus:$addr" 2>/dev/null || echo "bus $bus addr $addr") ($busid, $(cat "/sys/bus/usb/devices/$busid/speed") Mb/s)"

for p in $paths; do
    case $p in
    native)
        step "native: dom0's snd-usb-audio binds the mic"
        wait_for 30 sh -c "$CARD_SH" || fail "dom0's snd-usb-audio did not bind tb-mic: $(cat /proc/asound/cards)"
        card=$(sh -c "$CARD_SH")
        step "native: record ${secs} s in dom0 (card $card)"
        read -r r0 _ < /proc/uptime
        "$tb_rec" "/dev/snd/pcmC${card}D0c" "$secs" > /tmp/tb-rec.out 2>&1 &
        rp=$!
        window "$r0"
        rc=0; wait "$rp" || rc=$?
        out=$(cat /tmp/tb-rec.out)
        record native "$rc" "$out" || fail "native recording failed: $out"
        ;;
    pvusb)
        if ! pvusb_has backend; then note "pvusb: skipped (no pvusb binary with 'backend')"; continue; fi
        step "pvusb: backend, domU, controller, the mic on port 1"
        PEER=pvusb
        pvusb_backend_start
        domu_create mic-pvusb
        pvusb_ctrl_attach "$DOMID"
        pvusb_dev_attach "$DOMID" $MIC_ID 1
        domu_record pvusb "$BACKEND_PID"
        pvusb_dev_detach "$DOMID" 1 || true
        pvusb_ctrl_detach "$DOMID" || true
        domu_destroy
        kill "$BACKEND_PID" 2>/dev/null || true
        wait "$BACKEND_PID" 2>/dev/null || true
        wait_for 30 sh -c "$CARD_SH" > /dev/null || note "pvusb: dom0's snd-usb-audio did not get the mic back"
        ;;
    qusb)
        step "qusb: domU with a qusb controller, xl usbdev-attach"
        domu_create mic-qusb 'usbctrl = [ "type=qusb,version=2,ports=4" ]'
        read -r bus addr busid < <(usb_find $MIC_ID) || fail "the mic is gone from dom0"
        if xl usbdev-attach "$DOMID" hostbus="$bus" hostaddr="$addr" controller=0 port=1; then
            domu_record qusb
            grep -q 'invalid request' /var/log/xen/qemu-dm-mic-qusb.log 2>/dev/null &&
                note "qusb: its QEMU logged $(grep -c 'invalid request' /var/log/xen/qemu-dm-mic-qusb.log) x 'xen be: qusb-N: invalid request' (hw/usb/xen-usb.c rejects isochronous requests)"
        else
            note "qusb: xl usbdev-attach failed"; summary="$summary${summary:+; }qusb failed"
        fi
        domu_destroy
        ;;
    *) fail "unknown path '$p' in MIC_PATHS (native pvusb qusb)" ;;
    esac
done

cat "$table"
note "$(cat "$table")"
note "mic: $summary"
echo "mic: $summary"
