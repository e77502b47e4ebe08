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

step "domU: the tablet's evdev node appears; QMP pointer events arrive in it"
out=$(tablet_events_check) || fail "$(echo "$out" | tail -n 1)"
echo "$out"

step "domU: snd-usb-audio bound the audio device"
domu_exec -t 60 "for i in \$(seq 120); do grep -q 'USB Audio' /proc/asound/cards 2>/dev/null && exit 0; sleep 0.5; done; cat /proc/asound/cards; exit 1" ||
    fail "the audio device was not bound in the domU"

step "domU: 5 s of isochronous OUT to the speaker (tb-isoout, through usbfs)"
out=$(iso_out_check) || { domu_exec "dmesg | tail -n 20"; fail "$(echo "$out" | tail -n 1)"; }
echo "$out"
note "$PEER: 5 s of iso OUT: $(echo "$out" | sed -n 's/^PER_MS //p' | tail -n 1) packets per ms (1 ms frames)"
peer_alive
