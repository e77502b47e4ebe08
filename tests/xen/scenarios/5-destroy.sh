# Scenario 5: the domain is destroyed while a transfer runs. The backend must release
# everything (for pvusb: fds and mappings back to where they were before the domain, and no
# crash) and the stick must come back to dom0 with its data.
# timeout: 900
peer_require
peer_start
[ "$PEER" = pvusb ] && { sleep 1; base=$(peer_usage); echo "backend fds/maps before the domain: $base"; }
step "create domU, attach the stick"
peer_domu_create "$SCEN"
peer_ctrl_attach "$DOMID"
peer_dev_attach "$DOMID" $STICK_ID 1
domu_wait_sd
step "start a long read in the domU, destroy the domain under it"
domu_send "d=\$($DOMU_FIND_SD); dd if=/dev/\$d of=/dev/null bs=1M count=128 iflag=direct" >/dev/null
sleep 4
xl destroy "$DOMID" || fail "xl destroy"
step "the backend releases the domain; the stick returns to dom0"
sleep 3
# The toolstack's part, if pvusb has one: remove the dead domain's controllers.
if [ "$PEER" = pvusb ]; then
    peer_alive
    pvusb_has reap && { "$PVUSB" reap || note "pvusb reap failed"; }
fi
wait_for 60 stick_dev || {
    [ "$PEER" = pvusb ] && pvusb_has recover && "$PVUSB" recover --all
    wait_for 30 stick_dev || fail "the stick did not return to dom0 after the domain died"; }
got=$(stick_md5 "$(stick_dev)" 64)
[ "$got" = "$PATTERN_MD5" ] || fail "dom0 reads md5 $got after the destroy, want $PATTERN_MD5"
if [ "$PEER" = pvusb ]; then
    wait_for 30 sh -c "[ \"\$(ls /proc/$PEER_PID/fd | wc -l)\" -le $(( ${base% *} + 2 )) ]" ||
        fail "backend fds did not return: before $base, now $(peer_usage)"
    echo "backend fds/maps: before $base, after $(peer_usage)"
fi
