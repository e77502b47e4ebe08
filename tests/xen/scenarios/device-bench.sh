# Device bench (a measurement, not in `all`): `pvusb bench --device` in dom0 against a real
# kernel USB device, the source/sink function of Linux's USB gadget stack on dummy_hcd (bulk IN
# and OUT endpoints that produce and swallow data at the speed of the kernel, no QEMU device
# emulation in the data path). The bench measures bulk IN through pvusb (backend process with
# libusb, frontend over the simulated transport) and natively with libusb from one process,
# and prints the ratio. Output: results/device-bench.txt and .json.
# timeout: 1200
pvusb_require bench
GADGET=/sys/kernel/config/usb_gadget/pvusb-ss

step "dummy_hcd with a source/sink gadget"
modprobe dummy_hcd || fail "modprobe dummy_hcd"
modprobe libcomposite && modprobe usb_f_ss_lb || fail "modprobe libcomposite usb_f_ss_lb"
mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config ||
    fail "cannot mount configfs"
mkdir -p "$GADGET" || fail "configfs has no usb_gadget directory"
echo 0x1d6b > "$GADGET/idVendor"      # Linux Foundation
echo 0x0104 > "$GADGET/idProduct"     # Multifunction Composite Gadget
mkdir -p "$GADGET/strings/0x409" "$GADGET/configs/c.1" "$GADGET/functions/SourceSink.0"
echo pvusb-test-bed > "$GADGET/strings/0x409/manufacturer"
echo source-sink > "$GADGET/strings/0x409/product"
# Whole 64 KiB requests on the gadget side, so the device side is not the limit.
echo 65536 > "$GADGET/functions/SourceSink.0/bulk_buflen" || true
ln -s "$GADGET/functions/SourceSink.0" "$GADGET/configs/c.1/" 2>/dev/null || true
udc=$(ls /sys/class/udc | head -n 1)
[ -n "$udc" ] || fail "no UDC after modprobe dummy_hcd"
echo "$udc" > "$GADGET/UDC" || fail "cannot bind the gadget to $udc"
wait_for 30 usb_find 1d6b 0104 > /dev/null || fail "the source/sink gadget did not enumerate in dom0"
read -r bus addr busid < <(usb_find 1d6b 0104)
note "source/sink gadget at $bus.$addr ($busid)"

# device_bench NAME ARGS...: pvusb bench --device with ARGS; stdout to $RES/NAME.txt, stderr
# (one progress line per step) to $RES/NAME.err. While it runs, the kernel stacks of every
# pvusb thread are snapshotted to $RES/NAME.stacks every 5 s: if a step ever stops answering,
# the snapshots show where (the bench's own watchdog names the step and exits).
device_bench() {
    local name=$1 pid rc; shift
    "$PVUSB" bench --device "$bus.$addr" "$@" > "$RES/$name.txt" 2> "$RES/$name.err" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 5
        # A subshell without set -e: threads come and go while it reads them.
        ( set +e; date +%T; for p in /proc/[0-9]*; do
              [ "$(cat "$p/comm" 2>/dev/null)" = pvusb ] || continue
              for t in "$p"/task/*; do
                  echo "-- ${t#/proc/} $(cat "$t/comm") wchan=$(cat "$t/wchan") $(cut -d' ' -f3 "$t/stat")"
                  cat "$t/stack"
              done
          done ) >> "$RES/$name.stacks" 2>&1
    done
    rc=0; wait "$pid" || rc=$?
    [ "$rc" -eq 0 ] || fail "pvusb bench --device $* failed ($rc): $(tail -n 3 "$RES/$name.err" | tr '\n' ' ')"
}

step "pvusb bench --quick --device $bus.$addr"
device_bench device-bench-quick --quick
cat "$RES/device-bench-quick.txt"

step "pvusb bench --device $bus.$addr"
device_bench device-bench
cat "$RES/device-bench.txt"
"$PVUSB" bench --quick --json --device "$bus.$addr" > "$RES/device-bench.json" 2>/dev/null ||
    note "the --json run failed"
note "$(grep -A9 -- '-- ratios' "$RES/device-bench.txt")"

step "unbind the gadget"
echo "" > "$GADGET/UDC" || true
