# Scenario 10: what an operator sees and decides. A device rules file (USBGuard's language)
# is enforced at `pvusb dev-attach` (a rule blocking the stick refuses it, naming the rule;
# one allowing it for this guest lets it through) and by the daemon each time it opens the
# device (a daemon restarted under a blocking rule does not serve the assigned stick; restarted
# under the allowing rule it does again). While the domU reads the stick, `pvusb stats` and the
# Prometheus listener show the URBs of port 1.
# timeout: 900
pvusb_require backend ctrl-attach dev-attach stats
[ "$PEER" = pvusb ] || skip "scenario 10 checks pvusb's own policy and statistics"
# Both the toolstack commands and the daemon read the rules from here.
export PVUSB_RULES=/tmp/pvusb-rules.conf
read -r vid pid <<< "$STICK_ID"
rules() { printf '%s\n' "$@" > "$PVUSB_RULES"; }
rules "allow id $vid:$pid"
# dom0's loopback interface is down here: the metrics listener takes a UNIX socket, read
# with perl-base's IO::Socket (dom0 has no curl or socat).
METRICS=/tmp/pvusb-metrics.sock
PVUSB_BACKEND_ARGS="${PVUSB_BACKEND_ARGS:-} --metrics unix:$METRICS"
get_metrics() {
    perl -MIO::Socket::UNIX -e '$s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "connect: $!\n";
        print $s "GET /metrics HTTP/1.0\r\n\r\n"; print while <$s>' "$METRICS"
}

step "start the pvusb backend (with --metrics) and create the domU"
peer_start
peer_domu_create "$SCEN"
peer_ctrl_attach "$DOMID"
read -r bus addr _ < <(usb_find $STICK_ID) || fail "no stick in dom0"

step "dev-attach under a rule that blocks the stick is refused, naming the rule"
rules "# the stick may not leave dom0" "block id $vid:$pid"
if out=$("$PVUSB" dev-attach "$DOMID" "$bus.$addr" controller=0 port=1 2>&1); then
    fail "dev-attach succeeded under a blocking rule: $out"
fi
echo "$out"
echo "$out" | grep -q "$PVUSB_RULES:2" || fail "the refusal does not name the rule's line: $out"
[ -z "$(xenstore-read "/local/domain/0/backend/vusb/$DOMID/0/port/1")" ] ||
    fail "the refused attach left a busid in port 1"
stick_dev > /dev/null || fail "dom0 lost the stick after a refused attach"
note "blocked: $(echo "$out" | grep -m1 '^pvusb:')"

step "dev-attach under a rule that allows the stick for this guest"
rules "allow id $vid:$pid domain \"$DOMNAME\""
"$PVUSB" dev-attach "$DOMID" "$bus.$addr" controller=0 port=1 || fail "dev-attach under an allowing rule"
domu_wait_sd

step "pvusb stats while the domU reads the stick"
n=$(domu_send "d=\$($DOMU_FIND_SD); dd if=/dev/\$d of=/dev/null bs=64k count=1024 iflag=direct") ||
    fail "cannot start the read in the domU"
sleep 3
"$PVUSB" stats "$DOMID" | tee /tmp/stats-1.txt || fail "pvusb stats failed"
sleep 3
"$PVUSB" stats "$DOMID" | tee /tmp/stats-2.txt || fail "pvusb stats failed"
domu_wait "$n" 300 > /dev/null || fail "the domU's read failed"
while IFS= read -r line; do note "stats: $line"; done < /tmp/stats-2.txt
json=$("$PVUSB" stats "$DOMID" --json) || fail "pvusb stats --json failed"
echo "$json" | grep -q '"bulk":[1-9]' || fail "no bulk URBs counted on port 1: $json"
metrics=$(get_metrics) || fail "no metrics listener on $METRICS"
echo "$metrics" | grep "type=\"bulk\"" | head -n 2
echo "$metrics" | grep -q "pvusb_urbs_total{domid=\"$DOMID\",devid=\"0\",port=\"1\",type=\"bulk\"} [1-9]" ||
    fail "the metrics lack port 1's bulk URBs"
note "metrics: $(echo "$metrics" | grep "type=\"bulk\"" | head -n 1)"

step "the daemon enforces the rules when it opens the device: restart under a blocking rule"
rules "block id $vid:$pid"
kill -TERM "$BACKEND_PID"; wait_for 30 sh -c "! kill -0 $BACKEND_PID 2>/dev/null" || fail "daemon did not stop"
peer_start
domu_exec -t 60 "for i in \$(seq 120); do $DOMU_FIND_SD || exit 0; sleep 0.5; done; exit 1" ||
    fail "the domU still has the disk although the daemon's rules block it"
grep -q "not served: blocked by" "$BACKEND_LOG" ||
    fail "the daemon did not log the refusal: $(tail -n 5 "$BACKEND_LOG")"
note "daemon refusal: $(grep -m1 "not served: blocked by" "$BACKEND_LOG" | cut -c1-240)"

step "restarted under the allowing rule, the daemon serves the stick again"
rules "allow id $vid:$pid domain \"$DOMNAME\""
kill -TERM "$BACKEND_PID"; wait_for 30 sh -c "! kill -0 $BACKEND_PID 2>/dev/null" || fail "daemon did not stop"
peer_start
domu_wait_sd
got=$(domu_md5 8 0) || fail "domU read failed after the daemon served the stick again"
note "served again after the allowing restart; 8 MiB read md5 $got"
peer_dev_detach "$DOMID" 1
peer_ctrl_detach "$DOMID"
domu_destroy
