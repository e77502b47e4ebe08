# Scenario 8: device handles released while transfers are in flight. A domU reads the stick in
# a loop (O_DIRECT, 4 MiB per dd, 64 KiB requests) the whole time, while
#  1. RELEASE_ROUNDS (default 10) times `pvusb dev-detach` + `pvusb dev-attach` of the stick,
#  2. RELEASE_UNPLUGS (default 3) times QMP device_del/device_add of the stick (as scenario 3),
#  3. the daemon gets SIGTERM: it must exit within 20 s; restarted, it resumes the connected
#     controller and the domU's reads go on.
# After every round the daemon must be alive and answering: `pvusb list` shows the stick
# assigned, the controller's backend state is still 4 (Connected), the domU sees the disk, a
# 4 KiB O_DIRECT read there returns the pattern, and the reader loop completes new reads.
# The defect behind it: the last libusb device handle could be released on libusb's event
# thread inside a transfer callback (detach or unplug racing with transfers in flight, or a
# shutdown that timed out with transfers outstanding); libusb_close there deadlocked the event
# thread, which stopped every real device of every guest and hung the daemon's exit.
# On a hang the kernel stacks of every pvusb thread go to results/8-release.stacks.txt.
# timeout: 1800
[ "$PEER" = pvusb ] || skip "pvusb only (daemon restart, pvusb dev-attach/dev-detach)"
pvusb_require backend ctrl-attach dev-attach dev-detach list
rounds=${RELEASE_ROUNDS:-10}
unplugs=${RELEASE_UNPLUGS:-3}
STOP_BOUND=20      # s from SIGTERM to the daemon's exit (TCG)
CMD_BOUND=90       # s for one pvusb toolstack command
be_state_path() { echo "/local/domain/0/backend/vusb/$DOMID/0/state"; }

ms() { date +%s%3N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1000 }'; }

# dump_stacks PID WHY: kernel stacks of every thread of PID, appended to results/.
dump_stacks() {
    local pid=$1
    ( set +e
      echo "=== $(date +%T) $2: pvusb backend $pid"
      for t in /proc/"$pid"/task/*; do
          echo "-- tid ${t##*/} $(cat "$t/comm") state=$(cut -d' ' -f3 "$t/stat") wchan=$(cat "$t/wchan")"
          cat "$t/stack"
      done ) >> "$RES/$SCEN.stacks.txt" 2>&1
}
# fail_dump WHY: a failure that may be a stuck daemon: stacks and log tail first.
fail_dump() {
    if [ -n "${PEER_PID:-}" ] && [ -d "/proc/$PEER_PID" ]; then
        dump_stacks "$PEER_PID" "$*"
        echo "---- kernel stacks of the backend ($RES/$SCEN.stacks.txt) ----"
        tail -n 80 "$RES/$SCEN.stacks.txt"
    fi
    echo "---- last lines of the backend log ----"
    tail -n 40 "$BACKEND_LOG" 2>/dev/null || true
    fail "$*"
}
# backend_running: the daemon process exists and is not a zombie.
backend_running() {
    [ -r "/proc/$PEER_PID/stat" ] && [ "$(cut -d' ' -f3 "/proc/$PEER_PID/stat")" != Z ]
}

# The domU's reader loop, appended to its initramfs: reads 4 MiB at a moving offset with
# O_DIRECT until /tmp/reader.stop exists; counts completed reads in /tmp/reader.ok and failed
# ones (the disk was there when dd started: mostly reads cut by a detach, unplug or daemon
# stop) in /tmp/reader.err. While the disk is gone it polls every 0.25 s.
step "put the reader loop into the domU's initramfs"
DOMU_EXTRA=/tmp/$SCEN.extra
rm -rf "$DOMU_EXTRA"; mkdir -p "$DOMU_EXTRA/usr/local/bin"
cat > "$DOMU_EXTRA/usr/local/bin/tb-reader" <<'EOF'
#!/bin/sh
ok=0; err=0
echo 0 > /tmp/reader.ok; echo 0 > /tmp/reader.err
while [ ! -e /tmp/reader.stop ]; do
    d=$(ls /sys/block | grep -m1 '^sd')
    if [ -z "$d" ] || [ ! -b "/dev/$d" ]; then sleep 0.25; continue; fi
    if dd if="/dev/$d" of=/dev/null bs=64k count=64 skip=$(( (ok % 48) * 64 )) iflag=direct 2>/dev/null; then
        ok=$((ok + 1)); echo "$ok" > /tmp/reader.t; mv /tmp/reader.t /tmp/reader.ok
    else
        err=$((err + 1)); echo "$err" > /tmp/reader.t; mv /tmp/reader.t /tmp/reader.err; sleep 0.5
    fi
done
echo "reader stopped: $ok reads, $err failed"
EOF
chmod +x "$DOMU_EXTRA/usr/local/bin/tb-reader"

stick_to_domu
step "domU: start the reader loop"
domu_exec -t 60 "tb-reader > /tmp/reader.log 2>&1 < /dev/null & echo reader started" ||
    fail "cannot start the reader loop in the domU"

reader_ok() { domu_exec -t 60 "cat /tmp/reader.ok" | head -n1; }
reader_err() { domu_exec -t 60 "cat /tmp/reader.err" | head -n1; }
# reader_stat: sets OK and ERR, the reader's completed and failed reads so far.
reader_stat() {
    local l; l=$(domu_exec -t 60 'echo $(cat /tmp/reader.ok) $(cat /tmp/reader.err)' | head -n1) || true
    read -r OK ERR <<< "$l" || true
    case "$OK" in ''|*[!0-9]*) fail_dump "cannot read the domU reader's counters: '$l'" ;; esac
    case "$ERR" in ''|*[!0-9]*) fail_dump "cannot read the domU reader's counters: '$l'" ;; esac
}
# reader_advances N SECS: wait until the domU's reader has completed more than N reads.
reader_advances() {
    domu_exec -t $(($2 + 30)) "for i in \$(seq $(($2 * 2))); do [ \$(cat /tmp/reader.ok) -gt $1 ] && exit 0; sleep 0.5; done; exit 1" \
        > /dev/null
}
# domu_gone SECS / domu_back SECS: wait for the domU's disk to disappear / to appear.
domu_gone() {
    domu_exec -t $(($1 + 30)) "for i in \$(seq $(($1 * 4))); do $DOMU_FIND_SD >/dev/null || exit 0; sleep 0.25; done; exit 1" > /dev/null
}
domu_back() {
    domu_exec -t $(($1 + 30)) "for i in \$(seq $(($1 * 4))); do $DOMU_FIND_SD >/dev/null && exit 0; sleep 0.25; done; exit 1" > /dev/null
}
# domu_pattern_read LABEL: one 4 KiB O_DIRECT read at a varying offset in the first 64 MiB must
# return the pattern (3 tries, 2 s apart: the disk may still be settling). Sets TRIES.
PROBE=0
domu_pattern_read() {
    local k want got
    PROBE=$((PROBE + 1))
    k=$(( (PROBE * 1237) % 16384 ))
    want=$(printf 'PVUSB sector %010d' $((k * 8)))
    for TRIES in 1 2 3; do
        got=$(domu_exec -t 90 "d=\$($DOMU_FIND_SD) && dd if=/dev/\$d bs=4k count=1 skip=$k iflag=direct 2>/dev/null | head -n1 | cut -c1-23" | head -n1) || true
        [ "$got" = "$want" ] && return 0
        sleep 2
    done
    fail_dump "$1: 4 KiB read at block $k in the domU returned '$got', want '$want'"
}
# liveness LABEL: the daemon is alive and answers, the controller is Connected, the stick is
# assigned to port 1, the domU reads the pattern and its reader loop makes progress.
liveness() {
    local label=$1 st out n0
    backend_running || fail "$label: pvusb backend died: $(tail -n 5 "$BACKEND_LOG")"
    out=$(timeout "$CMD_BOUND" "$PVUSB" list "$DOMID" 2>&1) ||
        fail_dump "$label: 'pvusb list $DOMID' failed or hung ($?): $(echo "$out" | tail -n 3 | tr '\n' ' ')"
    echo "$out" | grep -q "assigned to domain $DOMID controller 0 port 1" ||
        fail_dump "$label: 'pvusb list $DOMID' does not show the stick on port 1: $(echo "$out" | tr '\n' ' ')"
    st=$(xenstore-read "$(be_state_path)" 2>/dev/null) || st=missing
    [ "$st" = 4 ] || fail_dump "$label: controller backend state is $st, want 4"
    domu_pattern_read "$label"
    n0=$(reader_ok)
    reader_advances "$n0" 120 ||
        fail_dump "$label: the domU's reader completed no read within 120 s (stuck at $n0, $(reader_err) failed)"
    reader_stat; READS=$OK; FAILED=$ERR
}
# stick_busaddr: "BUS.ADDR" of the stick in dom0.
stick_busaddr() { local b a; read -r b a _ < <(usb_find $STICK_ID) || return 1; echo "$b.$a"; }

step "reads in flight: wait for the reader's first reads"
reader_advances 0 120 || fail_dump "the domU's reader loop completed no read within 120 s"
base=$(peer_usage)
echo "backend fds/maps at start: $base"

# ---- 1. dev-detach / dev-attach with reads in flight ------------------------------------------
for r in $(seq "$rounds"); do
    step "detach round $r/$rounds: dev-detach with reads in flight"
    reader_stat; n0=$OK; e0=$ERR
    t0=$(ms)
    out=$(timeout "$CMD_BOUND" "$PVUSB" dev-detach "$DOMID" 0 1 2>&1) ||
        fail_dump "round $r: 'pvusb dev-detach $DOMID 0 1' failed or hung ($?): $(echo "$out" | tail -n 3 | tr '\n' ' ')"
    t1=$(ms)
    backend_running || fail "round $r: pvusb backend died at dev-detach: $(tail -n 5 "$BACKEND_LOG")"
    domu_gone 60 || fail_dump "round $r: the domU still sees the disk 60 s after dev-detach"
    t2=$(ms)
    wait_for 60 stick_dev || fail_dump "round $r: dom0's usb-storage did not get the stick back after dev-detach"
    t3=$(ms)
    st=$(xenstore-read "$(be_state_path)" 2>/dev/null) || st=missing
    [ "$st" = 4 ] || fail_dump "round $r: controller backend state is $st after dev-detach, want 4"
    step "detach round $r/$rounds: dev-attach"
    ba=$(stick_busaddr) || fail "round $r: the stick is not in dom0"
    out=$(timeout "$CMD_BOUND" "$PVUSB" dev-attach "$DOMID" "$ba" controller=0 port=1 2>&1) ||
        fail_dump "round $r: 'pvusb dev-attach $DOMID $ba' failed or hung ($?): $(echo "$out" | tail -n 3 | tr '\n' ' ')"
    t4=$(ms)
    domu_back 120 || fail_dump "round $r: the disk did not come back in the domU within 120 s of dev-attach"
    t5=$(ms)
    liveness "round $r"
    t6=$(ms)
    echo "round $r: backend fds/maps $(peer_usage), reader $READS reads"
    note "detach round $r: dev-detach $(secs "$t0" "$t1") s, domU lost disk +$(secs "$t1" "$t2") s, dom0 has it +$(secs "$t2" "$t3") s, dev-attach $(secs "$t3" "$t4") s, domU disk back +$(secs "$t4" "$t5") s, checks $(secs "$t5" "$t6") s (read tries $TRIES), reads $n0 -> $READS, failed reads +$((FAILED - e0))"
done

# ---- 2. hot-unplug / replug (QMP) with reads in flight -------------------------------------------
for c in $(seq "$unplugs"); do
    step "unplug round $c/$unplugs: QMP device_del with reads in flight"
    reader_stat; n0=$OK; e0=$ERR
    t0=$(ms)
    host_do stick-unplug || fail "QMP device_del (round $c)"
    t1=$(ms)
    domu_gone 60 || fail_dump "unplug round $c: the domU still sees the disk 60 s after the unplug"
    t2=$(ms)
    backend_running || fail "unplug round $c: pvusb backend died at unplug: $(tail -n 5 "$BACKEND_LOG")"
    step "unplug round $c/$unplugs: QMP device_add"
    host_do stick-plug || fail "QMP device_add (round $c)"
    t3=$(ms)
    domu_back 150 || fail_dump "unplug round $c: the disk did not come back in the domU within 150 s"
    t4=$(ms)
    liveness "unplug round $c"
    t5=$(ms)
    echo "unplug round $c: backend fds/maps $(peer_usage), reader $READS reads"
    note "unplug round $c: device_del $(secs "$t0" "$t1") s, domU lost disk +$(secs "$t1" "$t2") s, device_add $(secs "$t2" "$t3") s, domU disk back +$(secs "$t3" "$t4") s, checks $(secs "$t4" "$t5") s (read tries $TRIES), reads $n0 -> $READS, failed reads +$((FAILED - e0))"
done

# ---- 3. SIGTERM with reads in flight, restart, resume ---------------------------------------------
step "SIGTERM to the daemon with reads in flight"
reader_stat; n0=$OK; e0=$ERR
reader_advances "$n0" 60 || fail_dump "the domU's reader made no progress before SIGTERM"
pid=$PEER_PID
t0=$(ms)
kill -TERM "$pid"
snap=0
while backend_running; do
    el=$(( $(ms) - t0 ))
    # One snapshot after 3 s (before the daemon's own 5 s join bound lets it exit regardless).
    if [ "$snap" = 0 ] && [ "$el" -ge 3000 ]; then snap=1; dump_stacks "$pid" "still running 3 s after SIGTERM"; fi
    if [ "$el" -ge $((STOP_BOUND * 1000)) ]; then
        dump_stacks "$pid" "still running ${STOP_BOUND} s after SIGTERM"
        echo "---- kernel stacks of the backend ($RES/$SCEN.stacks.txt) ----"
        cat "$RES/$SCEN.stacks.txt"
        echo "---- last lines of the backend log ----"
        tail -n 60 "$BACKEND_LOG"
        kill -9 "$pid" 2>/dev/null || true
        fail "pvusb backend did not exit within ${STOP_BOUND} s of SIGTERM with reads in flight (stacks in $SCEN.stacks.txt)"
    fi
    sleep 0.2
done
t1=$(ms)
rc=0; wait "$pid" 2>/dev/null || rc=$?
stuck=$(grep -c 'did not stop within' "$BACKEND_LOG" || true)
st=$(xenstore-read "$(be_state_path)" 2>/dev/null) || st=missing
note "SIGTERM with reads in flight: daemon exited after $(secs "$t0" "$t1") s, status $rc, threads left behind: $stuck, controller state left at $st"
[ "$stuck" = 0 ] || { echo "backend log names stuck threads:"; grep 'did not stop within' "$BACKEND_LOG"; }
# Keep the first daemon's log (cleanup moves /tmp/*.backend.log into results/).
mv "$BACKEND_LOG" "/tmp/$SCEN.before-restart.backend.log"

step "restart the daemon: it resumes the connected controller"
t2=$(ms)
pvusb_backend_start
PEER_PID=$BACKEND_PID
n1=$(reader_ok)
reader_advances "$n1" 180 ||
    fail_dump "after the restart the domU's reader completed no read within 180 s (stuck at $n1, $(reader_err) failed)"
t3=$(ms)
liveness "after restart"
t4=$(ms)
note "restart: domU reads resumed $(secs "$t2" "$t3") s after the daemon's start (reads $n0 before SIGTERM, $n1 at restart, $READS after the checks; failed reads +$((FAILED - e0))), checks $(secs "$t3" "$t4") s; failed reads over the whole run: $FAILED"

step "stop the reader; data verified"
domu_exec -t 120 "touch /tmp/reader.stop; for i in \$(seq 200); do grep -q stopped /tmp/reader.log && break; sleep 0.5; done; cat /tmp/reader.log" ||
    fail "the domU's reader loop did not stop"
got=$(domu_md5 64 0) || fail_dump "read of 64 MiB after the release rounds failed"
[ "$got" = "$PATTERN_MD5" ] || fail "md5 $got after the release rounds, want $PATTERN_MD5"
backend_running || fail "pvusb backend died at the end: $(tail -n 5 "$BACKEND_LOG")"
echo "backend fds/maps: start $base (first daemon), end $(peer_usage) (restarted daemon)"
for f in "/tmp/$SCEN.before-restart.backend.log" "$BACKEND_LOG"; do
    echo "$f: $(grep -c ' WARN ' "$f" || true) WARN, $(grep -c ' ERROR ' "$f" || true) ERROR lines"
done
