# Anatomy (a measurement, not in `all`): where a URB's time goes on the pvusb path. The domU
# reads and writes the stick with O_DIRECT in 1 MiB and 64 KiB blocks; around each run the
# backend's counters are dumped (kill -USR1) and the difference gives the URBs the guest sent,
# their mean size and the mean time each spent in the device (libusb, dom0's kernel, QEMU's
# xHCI) against the wall time per URB, and how many events the guest sent per URB (fewer than
# one while the backend polls its ring: see `pvusb backend --poll-max-us`). Output:
# results/anatomy.table.
# Then one synchronous operation at a time (ANATOMY_SECONDS, default 10, each): GET_DESCRIPTOR
# control transfers (tb-ctrl) natively in dom0 and from the domU, and 4 KiB QD1 random reads
# (tb-iops) from the domU. Per URB, the wall time splits into the device's time (the backend's
# device_us), the backend's CPU (the daemon's and its workers' utime + stime), the domU's CPU (its /proc/stat busy
# time: xen-hcd, the block layer, the tool, the test-bed's command loop) and the rest, which
# is neither side computing: event delivery, vCPU wake-ups and scheduling (negative where the
# two sides' work overlaps). Output: results/anatomy.sync.
# timeout: 1800
pvusb_require backend
PEER=pvusb
mib=${ANATOMY_MIB:-16}
stick_to_domu anatomy

# counters: the last stats line of the backend log as
# "transfers completed bytes_in bytes_out device_us events" (events: the guest's notifications).
counters() {
    local line
    kill -USR1 "$BACKEND_PID"
    sleep 1
    line=$(grep 'stats:' "$BACKEND_LOG" | tail -n 1)
    for k in transfers completed bytes_in bytes_out device_us events; do
        printf '%s ' "$(printf '%s\n' "$line" | grep -oE "[ {]$k: [0-9]+" | grep -oE '[0-9]+$')"
    done
    echo
}
out=$RES/anatomy.table
printf '%-10s %8s %8s %9s %10s %12s %12s %12s %12s\n' test MB/s URBs transfers "B/URB" "wall us/URB" "device us" "device share" \
    "events/URB" > "$out"
for t in read:1M read:64K write:1M write:64K; do
    op=${t%%:*} bs=${t#*:}
    n=$((mib * 1048576 / $(bs_bytes "$bs")))
    if [ "$op" = read ]; then
        cmd="dd if=/dev/\$d of=/dev/null bs=$bs count=$n iflag=direct"
    else
        cmd="dd if=/dev/zero of=/dev/\$d bs=$bs count=$n seek=$((128 * 1048576 / $(bs_bytes "$bs"))) oflag=direct"
    fi
    read -r x0 c0 i0 o0 d0 v0 < <(counters) || fail "no stats line from the backend"
    res=$(domu_exec -t 1200 "d=\$($DOMU_FIND_SD); tb-time $cmd 2>&1") || fail "$t failed in the domU: $res"
    e=$(echo "$res" | sed -n 's/^ELAPSED //p')
    read -r x1 c1 i1 o1 d1 v1 < <(counters) || fail "no stats line from the backend"
    awk -v t="$t" -v e="$e" -v mib="$mib" -v x=$((x1 - x0)) -v c=$((c1 - c0)) -v b=$((i1 - i0 + o1 - o0)) -v d=$((d1 - d0)) \
        -v v=$((v1 - v0)) 'BEGIN {
        printf "%-10s %8.2f %8d %9d %10.0f %12.0f %12.0f %11.0f%% %12.2f\n", t, mib * 1.048576 / e, c, x, b / c, e * 1e6 / c, d / c, 100 * d / (e * 1e6), v / c
    }' >> "$out"
done
cat "$out"
note "$(cat "$out")"

# ---- one synchronous URB at a time -------------------------------------------------------------
secs=${ANATOMY_SECONDS:-10}
sync=$RES/anatomy.sync
printf '%-16s %8s %8s %9s %10s %12s %11s %10s %12s\n' test op_per_s URBs/op "wall us" "device us" "backend cpu" \
    "domU cpu" "rest us" "events/URB" > "$sync"
tb_ctrl=$(tb_tool tb-ctrl) || fail "no tb-ctrl for dom0"
# The daemon's and its worker processes' utime + stime (with `--isolation process`, the
# default, the URBs are served by the workers, the daemon's children). A worker that ends
# between the two readings drops out; the workers live as long as their controllers.
backend_ticks() {
    local p t=0
    for p in "$BACKEND_PID" $(pgrep -P "$BACKEND_PID"); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$t"
}
domu_busy() { domu_exec "head -n1 /proc/stat" | awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}'; }
hz=$(getconf CLK_TCK)
# sync_row TEST PER_S C0 C1 D0 D1 V0 V1 B0 B1 U0 U1: one table row from the counter deltas, per
# URB (a 4 KiB read through usb-storage is three URBs: command, data, status; the URBs/op column
# says how many the test's operation took).
sync_row() {
    awk -v t="$1" -v r="$2" -v c=$(($4 - $3)) -v d=$(($6 - $5)) -v v=$(($8 - $7)) -v b=$((${10} - $9)) \
        -v u=$((${12} - ${11})) -v hz="$hz" -v secs="$secs" 'BEGIN {
        if (c == 0) { printf "%-16s %8.1f %8s (no URBs counted)\n", t, r, "-"; exit }
        wall = secs * 1e6 / c; dev = d / c; bc = b * 1e6 / hz / c; uc = u * 1e6 / hz / c
        printf "%-16s %8.1f %8.2f %9.0f %10.0f %12.0f %11.0f %10.0f %12.2f\n", t, r, c / (r * secs), wall, dev, bc, uc,
            wall - dev - bc - uc, v / c
    }' >> "$sync"
}
step "synchronous URBs: control transfers natively in dom0 ($secs s)"
# The stick is the domU's: the native rate is measured on the tablet, whose control endpoint
# QEMU answers the same way.
node=$(usb_node $TABLET_ID) || fail "no usbfs node for the tablet in dom0"
out=$("$tb_ctrl" "$node" "$secs" 2>&1) || fail "native tb-ctrl failed: $out"
r=$(printf '%s\n' "$out" | sed -n 's/^CTRL_PER_S //p')
awk -v r="$r" 'BEGIN { printf "%-16s %8.1f %8s %9.0f %10s %12s %11s %10s %12s\n", "ctrl native", r, "1", 1e6 / r, "-", "-", "-", "-", "-" }' >> "$sync"
for t in ctrl randread:4K; do
    step "synchronous URBs through pvusb: $t ($secs s)"
    case $t in
        ctrl) cmd="u=\$($(domu_find_usb $STICK_ID)) && tb-ctrl \$u $secs"; key=CTRL_PER_S ;;
        *) cmd="d=\$($DOMU_FIND_SD) && tb-iops -p /dev/\$d $secs 64"; key=IOPS ;;
    esac
    read -r _ c0 _ _ d0 v0 < <(counters) || fail "no stats line from the backend"
    b0=$(backend_ticks); u0=$(domu_busy)
    out=$(domu_exec -t $((secs + 120)) "$cmd 2>&1") || fail "$t failed in the domU: $out"
    b1=$(backend_ticks); u1=$(domu_busy)
    read -r _ c1 _ _ d1 v1 < <(counters) || fail "no stats line from the backend"
    r=$(printf '%s\n' "$out" | sed -n "s/^$key \([0-9.]*\)\$/\1/p" | tail -n1)
    [ -n "$r" ] || fail "$t printed no $key: $out"
    sync_row "$t pvusb" "$r" "$c0" "$c1" "$d0" "$d1" "$v0" "$v1" "$b0" "$b1" "$u0" "$u1"
done
cat "$sync"
note "$(cat "$sync")"
peer_dev_detach "$DOMID" 1
peer_ctrl_detach "$DOMID" || true
domu_destroy
