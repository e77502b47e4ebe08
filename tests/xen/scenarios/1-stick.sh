# Scenario 1: pvusb replaces usbback for the stock xen-hcd. `pvusb backend` serves the domU;
# `pvusb ctrl-attach` + `dev-attach` give it the stick; the domU writes 64 MiB of the known
# pattern (a copy of the first 64 MiB, which carries it) into the zeroed region at 64 MiB, reads
# both back with O_DIRECT and verifies them; `pvusb dev-detach` returns the stick and dom0's own
# usb-storage driver reads the same data there.
# timeout: 900
peer_require
stick_dev > /dev/null || fail "dom0 has no block device for the stick before the test"
stick_to_domu

step "domU: read 64 MiB at 0 (O_DIRECT) and verify"
# The domU's busy and idle jiffies around the read (compare scenario 11's bridge).
cpu_jiffies='awk "/^cpu / {print \$2 + \$3 + \$4 + \$7 + \$8, \$5 + \$6}" /proc/stat'
read -r busy0 idle0 < <(domu_exec "$cpu_jiffies")
got=$(domu_md5 64 0) || fail "domU read failed"
read -r busy1 idle1 < <(domu_exec "$cpu_jiffies")
[ "$got" = "$PATTERN_MD5" ] || fail "read through $PEER: md5 $got, want $PATTERN_MD5"
note "$PEER: 64 MiB read + md5 in the domU: $(cat /tmp/last-elapsed) s, domU vCPU busy $(( 100 * (busy1 - busy0) / (busy1 - busy0 + idle1 - idle0 + 1) ))%"

step "domU: write 64 MiB of the pattern at 64 MiB (O_DIRECT)"
domu_exec -t 900 "d=\$($DOMU_FIND_SD); dd if=/dev/\$d bs=1M count=64 iflag=direct 2>/dev/null | dd of=/dev/\$d bs=1M seek=64 iflag=fullblock oflag=direct conv=fsync" ||
    fail "domU write failed"

step "domU: read the written 64 MiB back (O_DIRECT) and verify"
got=$(domu_md5 64 64) || fail "domU read-back failed"
[ "$got" = "$PATTERN_MD5" ] || fail "written region reads back as md5 $got, want $PATTERN_MD5"

step "$PEER dev-detach: the stick returns to dom0"
usage=$(peer_usage)
peer_dev_detach "$DOMID" 1
domu_exec -t 60 "for i in \$(seq 120); do $DOMU_FIND_SD || exit 0; sleep 0.5; done; exit 1" ||
    fail "the domU still has the disk after dev-detach"
wait_for 60 stick_dev || fail "dom0's usb-storage did not get the stick back after dev-detach"
got=$(stick_md5 "$(stick_dev)" 64 64)
[ "$got" = "$PATTERN_MD5" ] || fail "dom0 reads md5 $got in the region the domU wrote, want $PATTERN_MD5"

step "ctrl-detach and destroy; the backend survives"
peer_ctrl_detach "$DOMID"
sleep 2
peer_alive
echo "backend fds/maps before detach: $usage, after: $(peer_usage)"
domu_destroy
