# Scenario 4: the unlink path. Transfers are cut off mid-flight in the domU, repeatedly: the
# reader is killed with SIGKILL, and usb-storage is unbound while a read runs (its disconnect
# kills the in-flight URBs, which xen-hcd turns into unlink requests). Nothing may hang, and
# afterwards the data must read back right.
# timeout: 1500
peer_require
rounds=${UNLINK_ROUNDS:-10}
stick_to_domu
for r in $(seq "$rounds"); do
    step "round $r/$rounds: kill -9 a reader mid-transfer"
    domu_exec -t 120 "d=\$($DOMU_FIND_SD); dd if=/dev/\$d of=/dev/null bs=1M count=64 iflag=direct & p=\$!; sleep \$((1 + $r % 3)); kill -9 \$p; wait \$p; true" ||
        fail "round $r: killing the reader hung or failed"
    step "round $r/$rounds: unbind usb-storage mid-transfer, rebind"
    domu_exec -t 180 "d=\$($DOMU_FIND_SD); i=\$(cd /sys/bus/usb/drivers/usb-storage && ls -d *:* | head -n1); dd if=/dev/\$d of=/dev/null bs=1M count=64 iflag=direct 2>/dev/null & sleep 2; echo \$i > /sys/bus/usb/drivers/usb-storage/unbind; wait; echo \$i > /sys/bus/usb/drivers/usb-storage/bind" ||
        fail "round $r: unbind/rebind mid-transfer failed"
    domu_wait_sd
    peer_alive
done
step "data verified after $rounds rounds"
got=$(domu_md5 64 0) || fail "read after the unlink rounds failed"
[ "$got" = "$PATTERN_MD5" ] || fail "md5 $got after unlinks, want $PATTERN_MD5"
