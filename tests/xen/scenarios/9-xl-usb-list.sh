# Scenario 9: xl sees pvusb's controllers and devices. pvusb's xl-shaped verbs
# (usbctrl-attach, usbdev-attach, usbdev-detach, usbctrl-detach) give the stick to a domU, and
# after every step `pvusb usb-list DOM` must print byte for byte what `xl usb-list DOM` prints
# (libxl 4.17 reading the /libxl/<domid>/device/vusb bookkeeping pvusb writes, the backend's
# port nodes and sysfs); a diff is shown on a mismatch. Then `xl destroy` of a guest with a
# pvusb controller and the stick attached must leave no /libxl/<domid>/device/vusb nodes,
# no backend nodes and no pvusb record behind (libxl's own device cleanup plus the daemon's
# reaper), and the stick must come back to dom0.
# timeout: 900
[ "$PEER" = pvusb ] || skip "pvusb only (compares pvusb's usb-list with xl's)"
pvusb_require backend usbctrl-attach usbctrl-detach usbdev-attach usbdev-detach usb-list
T="--timeout 90"   # TCG: more than the default 10 s for a controller to connect

# compare WHAT TAG: pvusb usb-list and xl usb-list of $DOMID, byte for byte.
compare() {
    "$PVUSB" usb-list "$DOMID" > "/tmp/9.$2.pvusb" 2> /tmp/9.err ||
        fail "pvusb usb-list $DOMID ($1): $(cat /tmp/9.err)"
    xl usb-list "$DOMID" > "/tmp/9.$2.xl" 2> /tmp/9.err ||
        fail "xl usb-list $DOMID ($1): $(cat /tmp/9.err)"
    if ! cmp -s "/tmp/9.$2.xl" "/tmp/9.$2.pvusb"; then
        echo "--- xl usb-list, +++ pvusb usb-list ($1):"
        diff -u "/tmp/9.$2.xl" "/tmp/9.$2.pvusb"
        cp "/tmp/9.$2.xl" "$RES/$SCEN.$2.xl.txt"
        cp "/tmp/9.$2.pvusb" "$RES/$SCEN.$2.pvusb.txt"
        fail "pvusb usb-list differs from xl usb-list $1 (diff in the log, files results/$SCEN.$2.*.txt)"
    fi
    echo "usb-list $1: identical to xl's ($(wc -c < "/tmp/9.$2.xl") bytes)"
    sed 's/^/    | /' "/tmp/9.$2.xl"
}
libxl_vusb() { xenstore-list "/libxl/$DOMID/device/vusb" 2>/dev/null; }

step "start the pvusb backend, create the domU"
peer_start
domu_create "$SCEN"
read -r BUS ADDR BUSID < <(usb_find $STICK_ID) || fail "the stick is not in dom0"
compare "before any controller" 0
[ ! -s /tmp/9.0.xl ] || fail "xl usb-list shows controllers before any was attached"

step "pvusb usbctrl-attach type=pv version=2 ports=4"
"$PVUSB" usbctrl-attach $T "$DOMID" type=pv version=2 ports=4 ||
    fail "pvusb usbctrl-attach $DOMID type=pv version=2 ports=4"
[ "$(xenstore-read "/libxl/$DOMID/device/vusb/0/type")" = pv ] ||
    fail "no libxl bookkeeping /libxl/$DOMID/device/vusb/0 after usbctrl-attach"
compare "with one controller" 1
grep -q '^0 .* pv ' /tmp/9.1.xl || fail "xl usb-list does not show controller 0 as pv"

step "pvusb usbdev-attach hostbus=$BUS hostaddr=$ADDR controller=0 port=2"
"$PVUSB" usbdev-attach $T "$DOMID" hostbus="$BUS" hostaddr="$ADDR" controller=0 port=2 ||
    fail "pvusb usbdev-attach $DOMID hostbus=$BUS hostaddr=$ADDR controller=0 port=2"
domu_wait_sd
compare "with the stick in port 2" 2
want=$(printf '  Port 2: Bus %03x Device %03x' "$BUS" "$ADDR")
grep -qx "$want" /tmp/9.2.xl || fail "xl usb-list lacks \"$want\""

step "a second controller: usbctrl-attach version=1 ports=2"
"$PVUSB" usbctrl-attach $T "$DOMID" version=1 ports=2 || fail "pvusb usbctrl-attach $DOMID version=1 ports=2"
compare "with two controllers" 3
[ "$(grep -c '^Devid' /tmp/9.3.xl)" = 2 ] || fail "xl usb-list does not show two controllers"

step "pvusb usbdev-detach 0 2: the stick returns to dom0"
"$PVUSB" usbdev-detach $T "$DOMID" 0 2 || fail "pvusb usbdev-detach $DOMID 0 2"
wait_for 60 stick_dev || fail "dom0 did not get the stick back after usbdev-detach"
compare "after usbdev-detach" 4
grep -q 'Bus ' /tmp/9.4.xl && fail "xl usb-list still shows a device after usbdev-detach"

step "pvusb usbctrl-detach 1 and 0"
"$PVUSB" usbctrl-detach $T "$DOMID" 1 || fail "pvusb usbctrl-detach $DOMID 1"
compare "after usbctrl-detach 1" 5
"$PVUSB" usbctrl-detach $T "$DOMID" 0 || fail "pvusb usbctrl-detach $DOMID 0"
compare "after usbctrl-detach 0" 6
[ ! -s /tmp/9.6.xl ] || fail "xl usb-list still shows controllers after usbctrl-detach"
[ -z "$(libxl_vusb)" ] || fail "/libxl/$DOMID/device/vusb left after usbctrl-detach: $(libxl_vusb)"

step "xl destroy of a guest with a pvusb controller and the stick attached"
"$PVUSB" usbdev-attach $T "$DOMID" hostbus="$BUS" hostaddr="$ADDR" ||
    fail "pvusb usbdev-attach $DOMID hostbus=$BUS hostaddr=$ADDR (creating a controller)"
domu_wait_sd
compare "with a controller usbdev-attach created" 7
dead=$DOMID
xl destroy "$dead" || fail "xl destroy $dead"
leftovers() {
    xenstore-list "/libxl/$dead/device/vusb" 2>/dev/null
    xenstore-list "/local/domain/0/backend/vusb/$dead" 2>/dev/null
    xenstore-list /pvusb/usbback 2>/dev/null
}
wait_for 60 sh -c "[ -z \"\$( { xenstore-list /libxl/$dead/device/vusb; xenstore-list /local/domain/0/backend/vusb/$dead; xenstore-list /pvusb/usbback; } 2>/dev/null)\" ]" ||
    fail "after xl destroy $dead left: $(leftovers | tr '\n' ' ')"
wait_for 60 stick_dev || fail "the stick did not return to dom0 after xl destroy"
peer_alive
note "xl usb-list == pvusb usb-list at 8 points; xl destroy left no vusb nodes"

step "xl shutdown of a guest with a pvusb controller and the stick attached"
domu_create "$SCEN-shutdown"
"$PVUSB" usbdev-attach $T "$DOMID" hostbus="$BUS" hostaddr="$ADDR" ||
    fail "pvusb usbdev-attach $DOMID hostbus=$BUS hostaddr=$ADDR (second guest)"
domu_wait_sd
dead=$DOMID
# The guest's kernel powers off through its init on the toolstack's request; a guest that
# cannot (no poweroff handler) is no finding about pvusb, only the end state is.
if timeout 120 xl shutdown -w "$dead"; then
    wait_for 60 sh -c "[ -z \"\$( { xenstore-list /libxl/$dead/device/vusb; xenstore-list /local/domain/0/backend/vusb/$dead; xenstore-list /pvusb/usbback; } 2>/dev/null)\" ]" ||
        fail "after xl shutdown $dead left: $(leftovers | tr '\n' ' ')"
    wait_for 60 stick_dev || fail "the stick did not return to dom0 after xl shutdown"
    peer_alive
    note "xl shutdown left no vusb nodes and gave the stick back"
else
    note "xl shutdown: the test-bed's domU did not power off within 120 s; destroyed instead (end state not checked)"
    domu_destroy
fi
