# Anatomy (a measurement, not in `all`): where a URB's time goes on the pvusb path. The domU
# reads and writes the stick with O_DIRECT in 1 MiB and 64 KiB blocks; around each run the
# backend's counters are dumped (kill -USR1) and the difference gives the URBs the guest sent,
# their mean size and the mean time each spent in the device (libusb, dom0's kernel, QEMU's
# xHCI) against the wall time per URB, and how many events the guest sent per URB (fewer than
# one while the backend polls its ring: see `pvusb backend --poll-max-us`). Output:
# results/anatomy.table.
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
peer_dev_detach "$DOMID" 1
peer_ctrl_detach "$DOMID" || true
domu_destroy
