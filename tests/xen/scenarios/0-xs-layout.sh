# Scenario 0 (harness self-check, needs no pvusb): the controller nodes the scripts write when
# pvusb lacks ctrl-attach (xs_ctrl_attach: libxl's "pv" layout and permissions) are what the
# stock xen-hcd expects. The script plays the backend's xenstore part by hand: InitWait, then
# the frontend must publish its rings and event channel and go Connected; Closing, then the
# frontend must go Closed.
# timeout: 300
step "create domU, write the controller nodes"
domu_create "$SCEN"
xs_ctrl_attach "$DOMID" 0 2 4
be=/local/domain/0/backend/vusb/$DOMID/0
fe=/local/domain/$DOMID/device/vusb/0
xenstore-ls -p "$be" || true
xenstore-ls -p "$fe" || true

step "backend InitWait: xen-hcd must publish its rings and go Connected"
xenstore-write "$be/state" 2
wait_for 60 test "$(xenstore-read "$fe/state")" = 4 ||
    fail "frontend state $(xenstore-read "$fe/state" 2>&1), want 4 (Connected)"
for k in urb-ring-ref conn-ring-ref event-channel; do
    v=$(xenstore-read "$fe/$k") || fail "frontend did not write $k"
    echo "$k = $v"
done
domu_exec "ls /sys/bus/xen/devices/; cat /sys/bus/usb/devices/usb*/product" || true

step "backend Closing: xen-hcd must go Closed"
xenstore-write "$be/state" 5
wait_for 60 test "$(xenstore-read "$fe/state")" = 6 ||
    fail "frontend state $(xenstore-read "$fe/state" 2>&1) after backend Closing, want 6 (Closed)"
xenstore-write "$be/state" 6
domu_destroy
