# Scenario 3: hotplug. With the stick attached to the domU, QEMU removes and re-adds it (QMP
# device_del/device_add) HOTPLUG_CYCLES times (default 50); each time the domU must see the disk
# go and come back. The backend's open fds and memory mappings must not grow; data still reads
# right at the end.
# timeout: 2400
peer_require
cycles=${HOTPLUG_CYCLES:-50}
stick_to_domu
sleep 2
base=$(peer_usage)
echo "backend fds/maps at start: $base"
gone="for i in \$(seq 240); do $DOMU_FIND_SD >/dev/null || exit 0; sleep 0.25; done; exit 1"
back="for i in \$(seq 480); do $DOMU_FIND_SD >/dev/null && exit 0; sleep 0.25; done; exit 1"
for c in $(seq "$cycles"); do
    step "cycle $c/$cycles: unplug"
    host_do stick-unplug || fail "QMP device_del (cycle $c)"
    domu_exec -t 90 "$gone" || fail "cycle $c: the domU still sees the disk after unplug"
    step "cycle $c/$cycles: plug"
    host_do stick-plug || fail "QMP device_add (cycle $c)"
    domu_exec -t 150 "$back" || fail "cycle $c: the disk did not come back in the domU"
    peer_alive
    echo "cycle $c: backend fds/maps $(peer_usage)"
done
step "after $cycles cycles: data still right"
got=$(domu_md5 64 0) || fail "read after hotplug cycles failed"
[ "$got" = "$PATTERN_MD5" ] || fail "md5 $got after hotplug cycles, want $PATTERN_MD5"
sleep 2
end=$(peer_usage)
echo "backend fds/maps: start $base, end $end"
# A few fds/maps of slack (logging, allocator arenas), but no growth per cycle.
set -- $base $end
[ "$3" -le $(( $1 + 4 )) ] || fail "backend fds grew from $1 to $3 over $cycles hotplug cycles"
[ "$4" -le $(( $2 + 16 )) ] || fail "backend mappings grew from $2 to $4 over $cycles hotplug cycles"
