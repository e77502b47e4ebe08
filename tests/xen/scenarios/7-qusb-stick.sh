# Scenario 7: the reference peer. The USB stick goes to a domU through QEMU's own Xen pvUSB
# backend ("qusb", started by libxl) and the stock xen-hcd; the domU reads 64 MiB with O_DIRECT
# and checks the known pattern; after detach and domain destroy dom0 gets the stick back.
# Proves the harness (Xen, toolstack, xen-hcd, emulated USB) without any pvusb code.

step "find the stick in dom0"
read -r bus addr busid < <(usb_find $STICK_ID) || fail "stick ($STICK_ID) not on dom0's USB"
dev=$(stick_dev) || fail "dom0's usb-storage has no block device for the stick"
echo "stick: bus $bus addr $addr busid $busid dev $dev"

step "create domU with a qusb controller"
# qusb controllers must exist at xl create: libxl starts the device-model QEMU only then.
domu_create "$SCEN" 'usbctrl = [ "type=qusb,version=2,ports=4" ]'

step "xl usbdev-attach hostbus=$bus hostaddr=$addr"
xl usbdev-attach "$DOMID" hostbus="$bus" hostaddr="$addr" controller=0 port=1 ||
    fail "xl usbdev-attach"
xl usb-list "$DOMID" || true

step "domU: xen-hcd enumerates the stick"
domu_exec -t 120 "for i in \$(seq 240); do $DOMU_FIND_SD && exit 0; sleep 0.5; done; exit 1" ||
    fail "no sd block device in the domU within 120 s"
domu_exec "cat /sys/bus/usb/devices/*/product 2>/dev/null; dmesg | grep -i -E 'xen_hcd|vusb|usb-storage|sd ' | tail -n 8" || true

step "domU: read 64 MiB O_DIRECT and verify the pattern"
out=$(domu_exec -t 300 "d=\$($DOMU_FIND_SD); export d; tb-time sh -c 'dd if=/dev/\$d bs=1M count=64 iflag=direct 2>/dev/null | md5sum'") ||
    fail "domU read failed: $out"
echo "$out"
got=$(echo "$out" | awk 'NR == 1 {print $1}')
[ "$got" = "$PATTERN_MD5" ] || fail "pattern mismatch through qusb: md5 $got, want $PATTERN_MD5"
note "qusb: 64 MiB read + md5 in the domU took $(echo "$out" | sed -n "s/^ELAPSED //p") s"

step "xl usbdev-detach, destroy, stick back in dom0"
xl usbdev-detach "$DOMID" 0 1 || fail "xl usbdev-detach"
domu_destroy
wait_for 60 stick_dev || fail "dom0's usb-storage did not get the stick back"
got=$(stick_md5 "$(stick_dev)" 64) || true
[ "$got" = "$PATTERN_MD5" ] || fail "dom0 reads a different pattern after qusb: $got"
echo "PASS: qusb passes the stick to xen-hcd and back"
