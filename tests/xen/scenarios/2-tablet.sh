# Scenario 2: interrupt IN. The QEMU tablet goes to the domU through the backend; pointer events
# injected through QEMU's QMP (input-send-event) must arrive in the domU's evdev node with the
# injected coordinates. The audio device (isochronous endpoints) is attached too and must be
# enumerated and bound by snd-usb-audio in the domU; then tb-isoout takes its streaming
# interface and streams 5 s of isochronous OUT packets, one per 1 ms frame, all accepted.
# timeout: 600
peer_require
step "start the $PEER backend, create domU"
peer_start
peer_domu_create "$SCEN"
step "$PEER: controller, tablet on port 1, audio on port 2"
peer_ctrl_attach "$DOMID"
peer_dev_attach "$DOMID" $TABLET_ID 1
peer_dev_attach "$DOMID" $AUDIO_ID 2

step "domU: the tablet's evdev node appears"
FIND_TABLET='for e in /sys/class/input/event*; do grep -q Tablet $e/device/name 2>/dev/null && { echo ${e##*/}; exit 0; }; done; exit 1'
domu_exec -t 150 "for i in \$(seq 240); do ( $FIND_TABLET ) && exit 0; sleep 0.5; done; exit 1" ||
    fail "no tablet input device in the domU"

step "inject pointer events through QMP; read them from evdev in the domU"
# Reader first (in the background in the domU), then the events. 24-byte input_event records
# printed as unsigned 16-bit words: od fields 1-8 timestamp, 9 type, 10 code, 11-12 value.
n=$(domu_send "ev=\$( $FIND_TABLET ); timeout 60 dd if=/dev/input/\$ev bs=24 count=8 2>/dev/null | od -An -v -tu2 -w24")
sleep 3
for xy in "12345 23456" "20000 10000" "1000 2000" "12345 23456"; do
    host_do tablet-move $xy || fail "QMP input-send-event failed"
    sleep 0.5
done
events=$(domu_wait "$n" 90) || fail "no evdev events in the domU: $events"
echo "$events"
# EV_ABS (3), ABS_X (0), value 12345 must be among them.
echo "$events" | awk '$9 == 3 && $10 == 0 && $11 == 12345 {found = 1} END {exit !found}' ||
    fail "ABS_X 12345 not seen in the domU's evdev records"

step "domU: snd-usb-audio bound the audio device"
domu_exec -t 60 "for i in \$(seq 120); do grep -q 'USB Audio' /proc/asound/cards 2>/dev/null && exit 0; sleep 0.5; done; cat /proc/asound/cards; exit 1" ||
    fail "the audio device was not bound in the domU"

step "domU: 5 s of isochronous OUT to the speaker (tb-isoout, through usbfs)"
out=$(domu_exec -t 90 "u=\$($(domu_find_usb $AUDIO_ID)) && tb-isoout \$u 5 2>&1") ||
    { domu_exec "dmesg | tail -n 20"; fail "tb-isoout failed: $out"; }
echo "$out"
per_ms=$(echo "$out" | sed -n 's/^PER_MS //p')
note "$PEER: 5 s of iso OUT: $per_ms packets per ms (1 ms frames)"
awk -v r="$per_ms" 'BEGIN {exit !(r > 0.5 && r < 1.5)}' ||
    fail "iso OUT ran at $per_ms packets per ms: the speaker did not take one packet per frame"
peer_alive
