# Measurements (benchmark, not pass/fail; it fails only if a path stops working).
# Sequential O_DIRECT reads and writes of the stick, 1 MiB and 64 KiB blocks, BENCH_MIB MiB each
# (default 32), along three paths: natively in dom0, in a domU through qusb, in a domU through
# pvusb (when the binary has `backend`). dom0 is pinned to pCPU 0 (dom0_vcpus_pin) and the domU to
# pCPU 1. The paths alternate within each of BENCH_ROUNDS rounds (default 3), each round in a
# fresh domU (qusb slows down run after run inside one domU). Writes go to the scratch region at
# 128 MiB. In the same round and place, two rates from the static tools in tests/xen/tools:
# 4 KiB random-read IOPS (tb-iops: O_DIRECT, queue depth 1, 4 KiB-aligned offsets in the first
# 64 MiB from a fixed seed, pattern verified) and synchronous control transfers per second
# (tb-ctrl: GET_DESCRIPTOR(DEVICE) through usbfs), BENCH_SECONDS (default 10) each.
# Output: results/bench.csv (every run; value and unit per line: MB/s, IOPS or per_s) and
# results/bench.table (medians: the throughput table, then the IOPS / control table).
# BENCH_PATHS narrows or widens the paths (e.g. "qusb pvusb"); two more exist, not run by default:
# vhci (the domU's kernel without xen-hcd drives the stick through vhci-hcd and `pvusb front
# serve`, pvusb's backend behind it) and vhci-qusb (the same bridge in front of QEMU's backend);
# vhci-pollUS is vhci with the bridge's ring polling window set to US µs (`--poll-us US`;
# vhci-poll0: no polling).
# One more, pvusb-thread: the same as pvusb with the backend's controllers as daemon threads
# (--isolation thread) instead of confined worker processes, for what containment costs; and
# pvusb-unconfined: worker processes that keep root and skip seccomp, Landlock and namespaces,
# for what the confinement alone costs. The backend is restarted in the needed mode before each
# round of a pvusb path.
# PVUSB_BACKEND_ARGS reaches the pvusb backend.
# timeout: 5400
mib=${BENCH_MIB:-32}
rounds=${BENCH_ROUNDS:-3}
secs=${BENCH_SECONDS:-10}
span=64     # MiB: the stick's pattern region, so tb-iops -p can verify what it reads
tests="read:1M read:64K write:1M write:64K"
paths="native qusb"
pvusb_has backend && paths="$paths pvusb"
paths=${BENCH_PATHS:-$paths}
csv=$RES/bench.csv
echo "path,test,round,seconds,value,unit" > "$csv"
rate_failures=""
# dom0 runs the tools from domu.cpio (see tb_tool); the domU has them on its PATH.
tb_iops=$(tb_tool tb-iops) || fail "no tb-iops for dom0 (tests/xen/build.sh builds it)"
tb_ctrl=$(tb_tool tb-ctrl) || fail "no tb-ctrl for dom0 (tests/xen/build.sh builds it)"

# dd_cmd TEST DEV: the dd command line for TEST (read:BS or write:BS) on /dev/DEV.
dd_cmd() {
    local op=${1%%:*} bs=${1#*:} b n
    b=$(bs_bytes "$bs"); n=$((mib * 1048576 / b))
    if [ "$op" = read ]; then
        echo "dd if=/dev/$2 of=/dev/null bs=$bs count=$n iflag=direct"
    else
        echo "dd if=/dev/zero of=/dev/$2 bs=$bs count=$n seek=$((128 * 1048576 / b)) oflag=direct"
    fi
}
record() { # record PATH TEST ROUND ELAPSED
    local mbps; mbps=$(awk -v m="$mib" -v s="$4" 'BEGIN { printf "%.2f", m * 1.048576 / s }')
    echo "$1,$2,$3,$4,$mbps,MB/s" >> "$csv"
    echo "round $3 $1 $2: $mbps MB/s ($4 s)"
}
# tool_value KEY OUTPUT: the last number a tool printed after KEY on a line of its own.
tool_value() { printf '%s\n' "$2" | sed -n "s/^$1 \([0-9][0-9.]*\)\$/\1/p" | tail -n1; }
# record_rate PATH TEST ROUND KEY UNIT RC OUTPUT: record the number a tool printed after KEY
# (tb-iops: IOPS, tb-ctrl: CTRL_PER_S). A failed measurement is noted and fails the scenario
# at the end, after the tables, so one broken rate does not hide all the others.
record_rate() {
    local v
    v=$(tool_value "$4" "$7")
    if [ "$6" != 0 ] || [ -z "$v" ]; then
        note "round $3 $1 $2 failed (rc $6): $(printf '%s\n' "$7" | grep -v '^\s*$' | tail -n 2 | tr '\n' ' ')"
        rate_failures="$rate_failures $1:$2:$3"
        return 0
    fi
    echo "$1,$2,$3,$secs,$v,$5" >> "$csv"
    echo "round $3 $1 $2: $v $5"
}
measure_native() {
    local t e dev; dev=$(stick_dev) || fail "no stick in dom0 for the native run"
    for t in $tests; do
        e=$(/tb/guest/tb-time $(dd_cmd "$t" "$dev") 2>&1 >/dev/null | sed -n 's/^ELAPSED //p')
        [ -n "$e" ] || fail "native $t failed"
        record native "$t" "$1" "$e"
    done
    local out rc node
    rc=0; out=$("$tb_iops" -p "/dev/$dev" "$secs" "$span" 2>&1) || rc=$?
    record_rate native randread:4K "$1" IOPS IOPS "$rc" "$out"
    node=$(usb_node $STICK_ID) || fail "no usbfs node for the stick in dom0"
    rc=0; out=$("$tb_ctrl" "$node" "$secs" 2>&1) || rc=$?
    record_rate native ctrl "$1" CTRL_PER_S per_s "$rc" "$out"
}
measure_domu() { # measure_domu PATH ROUND (domU $DOMID has the stick)
    local t out e
    domu_wait_sd
    for t in $tests; do
        out=$(domu_exec -t 1200 "d=\$($DOMU_FIND_SD); tb-time $(dd_cmd "$t" "\$d") 2>&1") ||
            fail "$1 $t failed in the domU: $out"
        e=$(echo "$out" | sed -n 's/^ELAPSED //p')
        record "$1" "$t" "$2" "$e"
    done
    local rc
    rc=0; out=$(domu_exec -t $((secs + 120)) "d=\$($DOMU_FIND_SD); $DOMU_CTXT tb-iops -p /dev/\$d $secs $span 2>&1; $DOMU_CTXT_END") || rc=$?
    record_rate "$1" randread:4K "$2" IOPS IOPS "$rc" "$out"
    record_switches "$1" randread:4K "$2" IOPS "$out"
    case $1 in vhci*) domu_exec "$DOMU_THREADS" > "$RES/bench.threads.$1.$2.before" || true ;; esac
    rc=0; out=$(domu_exec -t $((secs + 120)) "u=\$($(domu_find_usb $STICK_ID)) || { echo 'no usbfs node for the stick'; exit 1; }; $DOMU_CTXT tb-ctrl \$u $secs 2>&1; $DOMU_CTXT_END") || rc=$?
    case $1 in vhci*) domu_exec "$DOMU_THREADS" > "$RES/bench.threads.$1.$2.after" || true ;; esac
    record_rate "$1" ctrl "$2" CTRL_PER_S per_s "$rc" "$out"
    record_switches "$1" ctrl "$2" CTRL_PER_S "$out"
    # What a system call and a wake-up cost on the domU's vCPU (tb-switch), once per domU.
    rc=0; out=$(domu_exec -t 60 "tb-switch 2 2>&1") || rc=$?
    local k
    for k in SYSCALL_US CLOCK_US THREAD_RTT_US PROCESS_RTT_US; do
        record_rate "$1" "$k" "$2" "$k" us "$rc" "$out"
    done
}
# The domU's context switches and interrupts (/proc/stat) around a rate measurement:
# DOMU_CTXT before the tool (keeps its exit status), DOMU_CTXT_END after it prints the deltas.
DOMU_CTXT='c0=$(sed -n "s/^ctxt //p" /proc/stat); i0=$(sed -n "s/^intr \([0-9]*\).*/\1/p" /proc/stat);'
DOMU_CTXT_END='rc=$?; echo "SWITCHES $(( $(sed -n "s/^ctxt //p" /proc/stat) - c0 ))"; echo "INTERRUPTS $(( $(sed -n "s/^intr \([0-9]*\).*/\1/p" /proc/stat) - i0 ))"; exit $rc'
# Each thread of `pvusb front serve` and each vhci kernel thread in the domU: name, voluntary and
# involuntary context switches (bench.threads.PATH.ROUND.before/after, around the control run).
DOMU_THREADS='for t in /proc/$(cat /tmp/front-serve.pid)/task/* /proc/[0-9]*; do c=$(cat $t/comm 2>/dev/null); case $c in pvusb*|vhci*|usb-storage|tb-ctrl) echo "$c $(sed -n "s/^voluntary_ctxt_switches:\t*//p" $t/status) $(sed -n "s/^nonvoluntary_ctxt_switches:\t*//p" $t/status)";; esac; done'
# record_switches PATH TEST ROUND KEY OUTPUT: the domU's context switches and interrupts per
# operation while the tool ran (operations: the rate after KEY times BENCH_SECONDS).
record_switches() {
    local rate sw in
    rate=$(tool_value "$4" "$5")
    sw=$(printf '%s\n' "$5" | sed -n 's/^SWITCHES \([0-9]*\)$/\1/p')
    in=$(printf '%s\n' "$5" | sed -n 's/^INTERRUPTS \([0-9]*\)$/\1/p')
    [ -n "$rate" ] && [ -n "$sw" ] && [ -n "$in" ] || return 0
    awk -v p="$1" -v t="$2" -v r="$3" -v s="$secs" -v rate="$rate" -v sw="$sw" -v intr="$in" 'BEGIN {
        n = rate * s; if (n <= 0) exit
        printf "%s,%s:switches,%s,%s,%.2f,per_op\n%s,%s:interrupts,%s,%s,%.2f,per_op\n", p, t, r, s, sw / n, p, t, r, s, intr / n
    }' >> "$csv"
}
BASE_DOMU_ARGS=$DOMU_ARGS
BASE_FRONT_SERVE_ARGS=${FRONT_SERVE_ARGS:-}
BASE_BACKEND_ARGS=${PVUSB_BACKEND_ARGS:-}
BACKEND_MODE=unset
backend_gone() { ! kill -0 "$BACKEND_PID" 2>/dev/null; }
# backend_mode FLAGS: pvusb's backend runs with FLAGS added (restarted if it runs otherwise).
backend_mode() {
    [ "$BACKEND_MODE" = "$1" ] && return 0
    if [ -n "${BACKEND_PID:-}" ]; then
        kill -TERM "$BACKEND_PID" 2>/dev/null || true
        wait_for 30 backend_gone || fail "pvusb backend did not stop for a mode change"
        # Each backend's log is kept (the next start overwrites BACKEND_LOG).
        { echo "==== backend with flags '$BACKEND_MODE'"; cat "$BACKEND_LOG"; } >> "$RES/bench.backends.log"
    fi
    PVUSB_BACKEND_ARGS="$BASE_BACKEND_ARGS $1" pvusb_backend_start
    PEER_PID=$BACKEND_PID BACKEND_MODE=$1
}
run_domu() { # run_domu PATH ROUND: a fresh domU gets the stick through PATH
    # vhci paths: the domU's kernel drives the stick through vhci-hcd and `pvusb front serve`
    # (no xen-hcd), with pvusb's backend (vhci) or QEMU's (vhci-qusb) behind it.
    DOMU_ARGS=$BASE_DOMU_ARGS DOMU_EXTRA="" FRONT_SERVE_ARGS=$BASE_FRONT_SERVE_ARGS
    case $1 in
        vhci) PEER=pvusb; domu_with_pvusb; backend_mode "" ;;
        vhci-poll*) PEER=pvusb; domu_with_pvusb; backend_mode ""
            FRONT_SERVE_ARGS="$BASE_FRONT_SERVE_ARGS --poll-us ${1#vhci-poll}" ;;
        vhci-qusb) PEER=qusb; domu_with_pvusb ;;
        pvusb) PEER=pvusb; backend_mode "" ;;
        pvusb-thread) PEER=pvusb; backend_mode "--isolation thread" ;;
        pvusb-unconfined) PEER=pvusb; backend_mode "--unconfined-workers" ;;
        *) PEER=$1 ;;
    esac
    peer_domu_create "bench-$1-$2"
    case $1 in
        vhci | vhci-poll*) xs_ctrl_attach "$DOMID" 0 2 4 ;;
        *) peer_ctrl_attach "$DOMID" ;;
    esac
    peer_dev_attach "$DOMID" $STICK_ID 1
    case $1 in vhci*) front_serve_start ;; esac
    measure_domu "$1" "$2"
    peer_dev_detach "$DOMID" 1
    peer_ctrl_detach "$DOMID" || true
    domu_destroy
    wait_for 60 stick_dev || fail "stick did not return to dom0 after $1 round $2"
}

case " $paths " in
    *" pvusb "* | *" vhci "* | *" vhci-poll"* | *" pvusb-thread "* | *" pvusb-unconfined "*) ;;
    *) note "pvusb path skipped: no pvusb binary with a backend command" ;;
esac
for r in $(seq "$rounds"); do
    for p in $paths; do
        step "round $r/$rounds: $p"
        case $p in
            native) measure_native "$r" ;;
            *) run_domu "$p" "$r" ;;
        esac
    done
done

# Medians per path and test, and the ratios the issue sets targets for.
awk -F, -v mib="$mib" -v rounds="$rounds" '
    NR > 1 && $6 == "MB/s" { v[$1 "," $2] = v[$1 "," $2] " " $5; if (!($1 in seen)) order[++nseen] = $1; seen[$1] = 1; tst[$2] = 1 }
    function median(s,   a, n, i, j, t) {
        n = split(s, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n ? (n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2) : ""
    }
    function pct(a, b) { return (a == "" || b == "" || b + 0 == 0) ? sprintf(" %10s", "-") : sprintf(" %9.0f%%", 100 * a / b) }
    function times(a, b) { return (a == "" || b == "" || b + 0 == 0) ? sprintf(" %10s", "-") : sprintf(" %9.2fx", a / b) }
    END {
        printf "Stick throughput, MB/s (10^6 B/s), median of %d rounds, %d MiB per run, O_DIRECT, TCG:\n", rounds, mib
        printf "%-10s %10s %10s %10s %10s\n", "path", "read 1M", "read 64K", "write 1M", "write 64K"
        np = split("native qusb pvusb pvusb-thread pvusb-unconfined vhci vhci-qusb", P, " ")
        for (i = 1; i <= nseen; i++) if (order[i] ~ /^vhci-poll/) P[++np] = order[i]; split("read:1M read:64K write:1M write:64K", T, " ")
        for (i = 1; i <= np; i++) {
            if (!(P[i] in seen)) continue
            printf "%-10s", P[i]
            for (j = 1; j <= 4; j++) { m[P[i], j] = median(v[P[i] "," T[j]]); printf " %10s", m[P[i], j] }
            printf "\n"
        }
        if (("pvusb" in seen) && ("native" in seen)) {
            printf "%-10s", "pvusb/nat"; for (j = 1; j <= 4; j++) printf "%s", pct(m["pvusb", j], m["native", j]); printf "\n"
        }
        if (("pvusb" in seen) && ("qusb" in seen)) {
            printf "%-10s", "pvusb/qusb"; for (j = 1; j <= 4; j++) printf "%s", times(m["pvusb", j], m["qusb", j]); printf "\n"
        }
        if (("qusb" in seen) && ("native" in seen)) {
            printf "%-10s", "qusb/nat"; for (j = 1; j <= 4; j++) printf "%s", pct(m["qusb", j], m["native", j]); printf "\n"
        }
        if (("vhci" in seen) && ("pvusb" in seen)) {
            printf "%-10s", "vhci/pvusb"; for (j = 1; j <= 4; j++) printf "%s", times(m["vhci", j], m["pvusb", j]); printf "\n"
        }
        if (("pvusb-thread" in seen) && ("pvusb" in seen)) {
            printf "%-10s", "proc/thrd"; for (j = 1; j <= 4; j++) printf "%s", times(m["pvusb", j], m["pvusb-thread", j]); printf "\n"
        }
        if (("pvusb-unconfined" in seen) && ("pvusb" in seen)) {
            printf "%-10s", "conf/unconf"; for (j = 1; j <= 4; j++) printf "%s", times(m["pvusb", j], m["pvusb-unconfined", j]); printf "\n"
        }
        if (("vhci-qusb" in seen) && ("vhci" in seen)) {
            printf "%-10s", "vhci/v-qusb"; for (j = 1; j <= 4; j++) printf "%s", times(m["vhci", j], m["vhci-qusb", j]); printf "\n"
        }
        for (i = 1; i <= np; i++) if (P[i] ~ /^vhci-poll/ && ("pvusb" in seen)) {
            printf "%-10s", substr(P[i], 6) "/pvusb"; for (j = 1; j <= 4; j++) printf "%s", times(m[P[i], j], m["pvusb", j]); printf "\n"
        }
    }' "$csv" > "$RES/bench.table"

# The rates: 4 KiB random-read IOPS and control transfers/s, medians and the ratios.
awk -F, -v rounds="$rounds" -v secs="$secs" -v span="$span" '
    NR > 1 && ($6 == "IOPS" || $6 == "per_s") { v[$1 "," $2] = v[$1 "," $2] " " $5; if (!($1 in seen)) order[++nseen] = $1; seen[$1] = 1 }
    function median(s,   a, n, i, j, t) {
        n = split(s, a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n ? (n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2) : ""
    }
    function pct(a, b) { return (a == "" || b == "" || b + 0 == 0) ? sprintf(" %14s", "-") : sprintf(" %13.0f%%", 100 * a / b) }
    function times(a, b) { return (a == "" || b == "" || b + 0 == 0) ? sprintf(" %14s", "-") : sprintf(" %13.2fx", a / b) }
    END {
        printf "4 KiB random reads (O_DIRECT, QD1, first %d MiB, fixed seed) and control transfers\n", span
        printf "(GET_DESCRIPTOR(DEVICE) via usbfs), %d s each, median of %d rounds, TCG:\n", secs, rounds
        printf "%-10s %14s %14s\n", "path", "randread IOPS", "ctrl/s"
        np = split("native qusb pvusb pvusb-thread pvusb-unconfined vhci vhci-qusb", P, " ")
        for (i = 1; i <= nseen; i++) if (order[i] ~ /^vhci-poll/) P[++np] = order[i]; split("randread:4K ctrl", T, " ")
        for (i = 1; i <= np; i++) {
            if (!(P[i] in seen)) continue
            printf "%-10s", P[i]
            for (j = 1; j <= 2; j++) { m[P[i], j] = median(v[P[i] "," T[j]]); printf m[P[i], j] == "" ? " %14s" : " %14.1f", m[P[i], j] == "" ? "-" : m[P[i], j] }
            printf "\n"
        }
        if ("pvusb" in seen) {
            printf "%-10s", "pvusb/nat"; for (j = 1; j <= 2; j++) printf "%s", pct(m["pvusb", j], m["native", j]); printf "\n"
            printf "%-10s", "pvusb/qusb"; for (j = 1; j <= 2; j++) printf "%s", times(m["pvusb", j], m["qusb", j]); printf "\n"
        }
        printf "%-10s", "qusb/nat"; for (j = 1; j <= 2; j++) printf "%s", pct(m["qusb", j], m["native", j]); printf "\n"
        if (("vhci" in seen) && ("pvusb" in seen)) {
            printf "%-10s", "vhci/pvusb"; for (j = 1; j <= 2; j++) printf "%s", times(m["vhci", j], m["pvusb", j]); printf "\n"
        }
        if (("pvusb-thread" in seen) && ("pvusb" in seen)) {
            printf "%-10s", "proc/thrd"; for (j = 1; j <= 2; j++) printf "%s", times(m["pvusb", j], m["pvusb-thread", j]); printf "\n"
        }
        if (("pvusb-unconfined" in seen) && ("pvusb" in seen)) {
            printf "%-10s", "conf/unconf"; for (j = 1; j <= 2; j++) printf "%s", times(m["pvusb", j], m["pvusb-unconfined", j]); printf "\n"
        }
        if (("vhci-qusb" in seen) && ("vhci" in seen)) {
            printf "%-10s", "vhci/v-qusb"; for (j = 1; j <= 2; j++) printf "%s", times(m["vhci", j], m["vhci-qusb", j]); printf "\n"
        }
        for (i = 1; i <= np; i++) if (P[i] ~ /^vhci-poll/ && ("pvusb" in seen)) {
            printf "%-10s", substr(P[i], 6) "/pvusb"; for (j = 1; j <= 2; j++) printf "%s", times(m[P[i], j], m["pvusb", j]); printf "\n"
        }
    }' "$csv" > "$RES/bench.rates"
# Where a synchronous operation's time goes in the domU: its context switches and interrupts per
# operation, and what a system call and a wake-up cost on its vCPU (tb-switch).
awk -F, -v rounds="$rounds" '
    NR > 1 && ($6 == "per_op" || $6 == "us") { v[$1 "," $2] = v[$1 "," $2] " " $5; if (!($1 in seen)) order[++n] = $1; seen[$1] = 1 }
    function median(s,   a, k, i, j, t) {
        k = split(s, a, " ")
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return k ? (k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2) : "-"
    }
    END {
        if (!n) exit
        printf "In the domU, per operation (median of %d rounds): context switches and interrupts during\n", rounds
        printf "the IOPS and control runs; then tb-switch: one system call, one clock read, and a round trip of two wake-ups\n"
        printf "between two threads and between two processes, in microseconds:\n"
        printf "%-14s %9s %9s %9s %9s %9s %9s %9s %9s\n", "path", "io:sw", "io:irq", "ctrl:sw", "ctrl:irq", "syscall", "clock", "thr rtt", "proc rtt"
        split("randread:4K:switches randread:4K:interrupts ctrl:switches ctrl:interrupts SYSCALL_US CLOCK_US THREAD_RTT_US PROCESS_RTT_US", T, " ")
        for (i = 1; i <= n; i++) {
            printf "%-14s", order[i]
            for (j = 1; j <= 8; j++) printf " %9s", median(v[order[i] "," T[j]])
            printf "\n"
        }
    }' "$csv" > "$RES/bench.domu"
{ echo; cat "$RES/bench.rates"; echo; cat "$RES/bench.domu"; } >> "$RES/bench.table"
cat "$RES/bench.table"
[ -z "$rate_failures" ] || fail "measurements failed (path:test:round):$rate_failures"
