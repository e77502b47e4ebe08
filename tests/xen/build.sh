#!/usr/bin/env bash
# Build the Xen-in-QEMU test-bed from Debian packages only.
#
#   sudo tests/xen/build.sh            # build what is missing (second run: seconds)
#   XEN_TESTBED_REFRESH=1 tests/xen/build.sh   # re-resolve package versions, rebuild
#
# Everything lands under target/xen-testbed/ (git-ignored). Each step writes a
# stamp file keyed on its inputs; a step whose stamp matches is skipped, so the
# script is idempotent and cheap to rerun. Why TCG, a PV dom0, an uncompressed
# cpio and an out-of-tree xen-hcd: tests/xen/README.md, "Why these choices".
#
# Outputs (paths relative to target/xen-testbed/):
#   out/xen             Xen hypervisor, multiboot ELF for QEMU -kernel
#   out/vmlinuz         Debian's kernel (dom0 and domU)
#   out/dom0.cpio       dom0 root filesystem, uncompressed newc cpio
#   out/domu.cpio       domU busybox initramfs (usb-storage closure + xen-hcd.ko)
#   out/stick.img       USB stick image with a known pattern (see make_stick)
#   out/tools/          tb-iops, tb-ctrl, tb-mic, tb-rec, tb-isoout, tb-reset, tb-switch: static test tools (tools/*.c), also in domu.cpio
#   out/versions        kernel and Xen versions used
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TB=${XEN_TESTBED_DIR:-$ROOT/target/xen-testbed}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
XEN_SERIES=4.17

# Host tools the build and the runs need.
HOST_PACKAGES=(qemu-system-x86 debootstrap cpio busybox-static socat xz-utils kmod gcc make
               perl ca-certificates libc6-dev)
# dom0 userland: the Xen tools matching the hypervisor, USB tools, and QEMU for qusb.
DOM0_PACKAGES=(xen-utils-$XEN_SERIES xenstore-utils usbutils kmod cpio qemu-system-xen procps)
# Kernel modules dom0 loads (closure computed with modprobe --show-depends).
DOM0_MODULES=(xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xhci-pci usb-storage sd_mod
              usbhid hid-generic evdev virtio_pci 9p 9pnet_virtio dummy_hcd libcomposite
              usb_f_ss_lb usb_f_mass_storage)
# Kernel modules the domU initramfs carries, besides xen-hcd.ko. vhci-hcd is for dom0: the mic
# scenario loads it (and snd-usb-audio) from this archive (lib.sh tb_modprobe), which keeps the
# 200 MB dom0 image unchanged.
DOMU_MODULES=(usb-storage sd_mod usbhid hid-generic evdev snd-usb-audio xen-evtchn xen-gntalloc xen-gntdev
              vhci-hcd)
STICK_MIB=192      # 0-64 MiB: pattern (read tests); 64-192 MiB: zeros (write tests)
PATTERN_MIB=64

log() { printf '[build %(%T)T] %s\n' -1 "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# --- stamps: skip a step when its outputs exist and its key is unchanged -----------------
stamp_ok() { [[ -f $TB/stamps/$1 && "$(cat "$TB/stamps/$1")" == "$2" ]]; }
stamp_set() { mkdir -p "$TB/stamps"; printf '%s' "$2" > "$TB/stamps/$1"; }

# run_step NAME KEY FUNCTION: run FUNCTION unless stamp NAME already holds KEY.
run_step() {
    local name=$1 key=$2 fn=$3 t0=$SECONDS
    if stamp_ok "$name" "$key"; then log "$name: up to date"; return; fi
    rm -f "$TB/stamps/$name"
    log "$name: building"
    "$fn" || die "step $name"
    stamp_set "$name" "$key"
    log "$name: done in $((SECONDS - t0)) s"
}

apt_quiet() { DEBIAN_FRONTEND=noninteractive apt-get -q -o APT::Sandbox::User=root "$@"; }

# --- 1. host packages -----------------------------------------------------------------------
host_packages() {
    local missing=() p
    for p in "${HOST_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    log "installing host packages: ${missing[*]}"
    # A fresh machine may have stale lists; update only when the first try fails.
    apt_quiet install -y --no-install-recommends "${missing[@]}" >/dev/null ||
        { apt_quiet update >/dev/null || true
          apt_quiet install -y --no-install-recommends "${missing[@]}" >/dev/null; }
}

# --- 2. resolve versions (kernel ABI from linux-image-amd64, Xen from the hypervisor) -------
resolve_versions() {
    local f=$TB/out/versions
    if [[ -f $f && -z ${XEN_TESTBED_REFRESH:-} ]]; then return; fi
    mkdir -p "$TB/out"
    local kpkg xenver
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
           sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1)
    if [[ -z $kpkg ]]; then apt_quiet update >/dev/null || true
        kpkg=$(apt-cache depends linux-image-amd64 |
               sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n1); fi
    [[ -n $kpkg ]] || die "cannot resolve linux-image-amd64"
    xenver=$(apt-cache policy "xen-hypervisor-$XEN_SERIES-amd64" | sed -n 's/^ *Candidate: //p')
    [[ -n $xenver && $xenver != "(none)" ]] || die "no xen-hypervisor-$XEN_SERIES-amd64"
    { echo "KVER=${kpkg#linux-image-}"; echo "XENVER=$xenver"; } > "$f"
}

# --- 3. download packages (never installed on the host) -------------------------------------
download_debs() {
    mkdir -p "$TB/debs"
    cd "$TB/debs"
    rm -f ./*.deb
    local kabi=${KVER%-amd64}
    apt_quiet download "xen-hypervisor-$XEN_SERIES-amd64=$XENVER" "linux-image-$KVER" \
        "linux-headers-$KVER" "linux-headers-$kabi-common" linux-kbuild-6.1 linux-source-6.1 \
        >/dev/null
}
deb() { local f; f=$(ls "$TB/debs/$1"_*.deb 2>/dev/null | head -n1); [[ -n $f ]] || die "no $1 deb"; echo "$f"; }

# --- 4. Xen and the kernel --------------------------------------------------------------------
KROOT=$TB/extract/kernel   # the downloaded kernel package, unpacked (module source for images)
extract_xen_kernel() {
    local x=$TB/extract
    rm -rf "$x"; mkdir -p "$x/xen" "$x/kernel"
    dpkg-deb -x "$(deb "xen-hypervisor-$XEN_SERIES-amd64")" "$x/xen"
    zcat "$x/xen/boot/xen-$XEN_SERIES-amd64.gz" > "$TB/out/xen"     # multiboot ELF
    dpkg-deb -x "$(deb "linux-image-$KVER")" "$x/kernel"
    cp "$x/kernel/boot/vmlinuz-$KVER" "$TB/out/vmlinuz"
    # Debian generates modules.dep at install time; do it for the extracted tree.
    depmod -b "$x/kernel" "$KVER"
    rm -rf "$x/xen"
}

# --- 5. xen-hcd.ko out of tree (Debian's kernel lacks CONFIG_USB_XEN_HCD) --------------------
build_xen_hcd() {
    local k=$TB/kbuild h=$TB/hcd kabi=${KVER%-amd64}
    rm -rf "$k" "$h"; mkdir -p "$k" "$h"
    local p
    for p in "linux-headers-$KVER" "linux-headers-$kabi-common" linux-kbuild-6.1; do
        dpkg-deb -x "$(deb "$p")" "$k"
    done
    # The headers' Makefile includes an absolute /usr/src/... path: point it at our copy.
    sed -i "s|/usr/src/|$k/usr/src/|" "$k/usr/src/linux-headers-$KVER/Makefile"
    # Only one file of the 138 MB source tarball is needed; stream it out.
    dpkg-deb --fsys-tarfile "$(deb linux-source-6.1)" |
        tar -xO ./usr/src/linux-source-6.1.tar.xz |
        tar -xJO linux-source-6.1/drivers/usb/host/xen-hcd.c > "$h/xen-hcd.c"
    echo 'obj-m := xen-hcd.o' > "$h/Kbuild"
    make -s -C "$k/usr/src/linux-headers-$KVER" M="$h" modules >/dev/null 2>&1 ||
        make -C "$k/usr/src/linux-headers-$KVER" M="$h" modules
    modinfo -F vermagic "$h/xen-hcd.ko" | grep -q "^$KVER " || die "xen-hcd.ko vermagic mismatch"
    cp "$h/xen-hcd.ko" "$TB/out/xen-hcd.ko"
}

# copy_modules DESTROOT MODULE...: copy the modprobe dependency closure of MODULEs.
copy_modules() {
    local dest=$1; shift
    local src=$KROOT
    local m f
    mkdir -p "$dest/lib/modules/$KVER"
    for m in "$@"; do
        modprobe -d "$src" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
    done | sort -u | while read -r f; do
        local rel=${f#"$src"}
        mkdir -p "$dest/$(dirname "$rel")"
        cp "$f" "$dest/$rel"
    done
    cp "$src/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$dest/lib/modules/$KVER/"
}

# --- 6. dom0 root filesystem ----------------------------------------------------------------
CHROOT_MOUNTS=()
umount_chroot() { local m; for m in "${CHROOT_MOUNTS[@]}"; do umount -l "$m" 2>/dev/null || true; done; CHROOT_MOUNTS=(); }
build_dom0_rootfs() {
    local r=$TB/dom0-root
    umount_chroot; rm -rf "$r"
    debootstrap --variant=minbase "$SUITE" "$r" "$MIRROR" >"$TB/debootstrap.log" 2>&1 ||
        { tail -n 20 "$TB/debootstrap.log"; return 1; }
    # The security suite carries the Xen version the hypervisor came from.
    cat > "$r/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
    printf '#!/bin/sh\nexit 101\n' > "$r/usr/sbin/policy-rc.d"; chmod +x "$r/usr/sbin/policy-rc.d"
    trap umount_chroot EXIT
    mount -t proc proc "$r/proc"; CHROOT_MOUNTS+=("$r/proc")
    chroot "$r" apt-get -q update >/dev/null
    # Pin the tools to the hypervisor's exact version (their libs follow by =binary:Version).
    local pkgs=("${DOM0_PACKAGES[@]}")
    pkgs[0]="xen-utils-$XEN_SERIES=$XENVER"
    chroot "$r" env DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends \
        "${pkgs[@]}" >"$TB/dom0-apt.log" 2>&1 || { tail -n 30 "$TB/dom0-apt.log"; return 1; }
    umount_chroot; trap - EXIT
    rm -f "$r/usr/sbin/policy-rc.d"
    # Trim what a test dom0 never reads.
    rm -rf "$r"/usr/share/{doc,man,info,locale}/* "$r"/var/cache/apt/* "$r"/var/lib/apt/lists/* \
           "$r"/var/log/* "$r"/lib/modules
    copy_modules "$r" "${DOM0_MODULES[@]}"
    depmod -b "$r" "$KVER"
    mkdir -p "$r/tb" "$r/var/run/xen" "$r/var/lib/xen" "$r/var/log/xen"
    [[ -e $r/dev/console ]] || mknod -m 600 "$r/dev/console" c 5 1
    [[ -e $r/dev/null ]] || mknod -m 666 "$r/dev/null" c 1 3
    install -m 755 "$HERE/guest/dom0-stage1" "$r/init"
    (cd "$r" && find . -xdev -print0 | cpio -o -0 -H newc --quiet > "$TB/out/dom0.cpio.tmp")
    mv "$TB/out/dom0.cpio.tmp" "$TB/out/dom0.cpio"
}

# --- 6b. measurement tools (tools/*.c): static, so one binary runs in dom0 and the domU -------
TOOLS=(tb-iops tb-ctrl tb-mic tb-rec tb-isoout tb-reset tb-switch)
build_tools() {
    local t
    rm -rf "$TB/out/tools"; mkdir -p "$TB/out/tools"
    for t in "${TOOLS[@]}"; do
        gcc -static -O2 -Wall -Wextra -Werror -o "$TB/out/tools/$t" "$HERE/tools/$t.c" || return 1
    done
}

# --- 7. domU initramfs (busybox, storage/HID closure, xen-hcd, xenstore client) -------------
# copy_bin_with_libs SRCROOT DESTROOT BIN...: copy binaries from a root with their ld.so closure.
copy_bin_with_libs() {
    local src=$1 dest=$2; shift 2
    local b lib
    for b in "$@"; do
        mkdir -p "$dest/$(dirname "$b")"; cp -L "$src/$b" "$dest/$b"
        chroot "$src" ldd "$b" | grep -o '/[^ ]*' | while read -r lib; do
            mkdir -p "$dest/$(dirname "$lib")"; cp -L "$src/$lib" "$dest/$lib"
        done
    done
}
build_domu_initramfs() {
    local d=$TB/domu-root
    rm -rf "$d"; mkdir -p "$d"/{bin,dev,proc,sys,tmp,lib64,etc}
    cp /bin/busybox "$d/bin/busybox"
    copy_modules "$d" "${DOMU_MODULES[@]}"
    mkdir -p "$d/lib/modules/$KVER/extra"
    cp "$TB/out/xen-hcd.ko" "$d/lib/modules/$KVER/extra/"
    depmod -b "$d" "$KVER"
    # xenstore client, so the domU can talk to dom0's test script through its xenstore home.
    copy_bin_with_libs "$TB/dom0-root" "$d" /usr/bin/xenstore
    local c; for c in read write exists ls rm watch; do ln -sf xenstore "$d/usr/bin/xenstore-$c"; done
    mknod -m 600 "$d/dev/console" c 5 1
    install -m 755 "$HERE/guest/domu-init" "$d/init"
    install -m 755 "$HERE/guest/tb-time" "$d/bin/tb-time"
    # dom0 takes these out of domu.cpio at run time (lib.sh tb_tool), so the 200 MB dom0
    # image is not rebuilt when a tool changes.
    local t; for t in "${TOOLS[@]}"; do install -m 755 "$TB/out/tools/$t" "$d/bin/$t"; done
    (cd "$d" && find . -print0 | cpio -o -0 -H newc --quiet > "$TB/out/domu.cpio.tmp")
    mv "$TB/out/domu.cpio.tmp" "$TB/out/domu.cpio"
}

# --- 8. the USB stick image ------------------------------------------------------------------
# Every 512-byte sector of the first PATTERN_MIB MiB reads "PVUSB sector NNNNNNNNNN", so a
# misplaced or stale block is caught by the checksum; the rest is zeros for write tests.
make_stick() {
    local img=$TB/out/stick.img
    perl -e 'my $n = shift() * 2048; for my $i (0 .. $n - 1) {
                 my $s = sprintf("PVUSB sector %010d ", $i); print $s, "." x (511 - length $s), "\n" }' \
        "$PATTERN_MIB" > "$img.tmp"
    md5sum < "$img.tmp" | cut -d' ' -f1 > "$TB/out/stick.pattern.md5"
    truncate -s "${STICK_MIB}M" "$img.tmp"
    mv "$img.tmp" "$img"
}

main() {
    [[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, chroot, mknod)"
    mkdir -p "$TB/out"
    local t0=$SECONDS
    host_packages
    resolve_versions
    # shellcheck disable=SC1091
    source "$TB/out/versions"
    log "kernel $KVER, Xen $XENVER"
    local key="$KVER $XENVER"
    # The image steps read modules from the unpacked kernel: redo it if it went missing.
    [[ -d $KROOT/lib/modules/$KVER ]] || rm -f "$TB/stamps/xenkernel"
    run_step download   "$key" download_debs
    run_step xenkernel  "$key" extract_xen_kernel
    run_step xenhcd     "$key" build_xen_hcd
    # The dom0 image depends on the package list and stage-1 init, nothing else: the test
    # scripts and the pvusb binary come in through the 9p share at boot.
    run_step dom0       "$key ${DOM0_PACKAGES[*]} ${DOM0_MODULES[*]} $(md5sum < "$HERE/guest/dom0-stage1")" build_dom0_rootfs
    local tools_key t
    tools_key="$(gcc -dumpfullversion) $(for t in "${TOOLS[@]}"; do cat "$HERE/tools/$t.c"; done | md5sum)"
    for t in "${TOOLS[@]}"; do [[ -x $TB/out/tools/$t ]] || rm -f "$TB/stamps/tools"; done
    run_step tools      "${TOOLS[*]} $tools_key" build_tools
    run_step domu       "$key ${DOMU_MODULES[*]} $(cat "$HERE"/guest/{domu-init,tb-time} | md5sum) $tools_key" build_domu_initramfs
    run_step stick      "$STICK_MIB $PATTERN_MIB v1" make_stick
    log "test-bed ready in $((SECONDS - t0)) s: $TB/out"
}
main "$@"
