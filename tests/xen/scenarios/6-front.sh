# Scenario 6: pvusb's own frontend in the domU's userspace (grants through /dev/xen/gntalloc,
# events through /dev/xen/evtchn), xen-hcd not loaded, against pvusb's backend in dom0 (or
# QEMU's with 6@qusb): `pvusb front list` shows the stick, and a read of the first 64 MiB
# verifies the pattern. PVUSB_FRONT_READ overrides the read command line (data on stdout).
# timeout: 900
pvusb_require front
peer_require
# 131072 blocks of 512 bytes = 64 MiB from LBA 0 of the device on port 1, raw to stdout.
front_read=${PVUSB_FRONT_READ:-front read --lba 0 --count 131072 --out /proc/self/fd/1 1}

step "put pvusb into the domU's initramfs"
domu_with_pvusb

step "start the $PEER backend, create domU (no xen-hcd)"
peer_start
peer_domu_create "$SCEN"
step "controller and stick"
# `pvusb ctrl-attach` waits for a frontend, which only runs with `pvusb front`: write the nodes.
[ "$PEER" = pvusb ] && xs_ctrl_attach "$DOMID" 0 2 4
peer_dev_attach "$DOMID" $STICK_ID 1

step "domU: pvusb front list"
out=$(domu_exec -t 300 "pvusb front list") || fail "pvusb front list: $out"
echo "$out"
echo "$out" | grep -qi '46f4:0001' || fail "pvusb front list does not show the stick 46f4:0001"

step "domU: pvusb $front_read, verify the pattern"
pvusb_has "front read" || skip "pvusb lacks 'front read' (front list passed)"
# A second frontend session on the same controller: the backend must accept the re-handshake.
out=$(domu_exec -t 900 "tb-time sh -c 'set -o pipefail; pvusb $front_read | md5sum'") ||
    fail "pvusb front read failed: $(echo "$out" | grep -v '^ELAPSED' | tail -n 3 | tr '\n' ' ')"
# The console output interleaves pvusb's log lines (stderr): take the md5sum line.
got=$(echo "$out" | awk '$2 == "-" && $1 ~ /^[0-9a-f]+$/ && length($1) == 32 {print $1; exit}')
[ "$got" = "$PATTERN_MD5" ] || fail "pvusb front read: md5 $got, want $PATTERN_MD5"
note "pvusb frontend read 64 MiB + md5: $(echo "$out" | sed -n 's/^ELAPSED //p') s"
peer_alive
