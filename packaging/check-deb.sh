#!/usr/bin/env bash
# Installs a built pvusb package on this machine, checks it, purges it, and
# checks that nothing is left behind. Needs root and Debian's apt/dpkg.
#   packaging/check-deb.sh target/debian/pvusb_*.deb
set -euo pipefail
deb="$1"
fail() { echo "check-deb: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root"
if ! command -v man >/dev/null || ! command -v mandb >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q man-db >/dev/null
fi

mapfile -t files < <(dpkg-deb -c "$deb" | awk '{print substr($6, 2)}' | grep -v '/$')
dpkg -i "$deb" >/dev/null
echo "installed: $(dpkg-query -W -f '${Package} ${Version}' pvusb)"
# The backend's worker processes run as this system user (postinst).
getent passwd pvusb >/dev/null || fail "no pvusb system user after install"
echo "user: $(getent passwd pvusb | cut -d: -f1,3,6,7)"
pvusb --version
# Every man page the package ships resolves through man's own lookup.
pages=0
for f in "${files[@]}"; do
    case "$f" in
    /usr/share/man/man8/*)
        page=$(basename "$f"); page=${page%.8.gz}; page=${page%.8}
        man -w 8 "$page" >/dev/null || fail "man -w 8 $page finds nothing"
        pages=$((pages + 1))
        ;;
    esac
done
[ "$pages" -gt 1 ] || fail "only $pages man page(s) in the package"
echo "man pages: $pages resolve with man -w"
for f in /usr/share/bash-completion/completions/pvusb /usr/share/zsh/vendor-completions/_pvusb \
    /usr/share/fish/vendor_completions.d/pvusb.fish /etc/default/pvusb; do
    [ -s "$f" ] || fail "$f missing or empty"
done
for c in /etc/default/pvusb /etc/pvusb/rules.conf; do
    dpkg-query -W -f '${Conffiles}\n' pvusb | grep -q "$c" || fail "$c is not a conffile"
done
unit=$(printf '%s\n' "${files[@]}" | grep '/pvusb-backend.service$' || true)
[ -n "$unit" ] || fail "no pvusb-backend.service in the package"
front=$(printf '%s\n' "${files[@]}" | grep '/pvusb-front@.service$' || true)
[ -n "$front" ] || fail "no pvusb-front@.service (the guest's unit) in the package"
if command -v systemd-analyze >/dev/null; then
    # Units they name that this machine lacks (xenstored, /proc/xen) are not
    # the units' faults; anything else is. A template is verified as an instance.
    instance=$(mktemp -d)/pvusb-front@0.service
    cp "$front" "$instance"
    for u in "$unit" "$instance"; do
        out=$(systemd-analyze verify "$u" 2>&1 || true)
        bad=$(printf '%s\n' "$out" | grep -v -e 'proc-xen.mount' -e 'xenstored.service' -e '^$' || true)
        [ -z "$bad" ] || fail "systemd-analyze verify $(basename "$u"): $bad"
    done
    rm -rf "$(dirname "$instance")"
    echo "units: systemd-analyze verify clean"
fi
# The command lock directory a command creates is removed on purge.
mkdir -p /run/pvusb && touch /run/pvusb/toolstack.lock
dpkg --purge pvusb >/dev/null
for f in "${files[@]}"; do
    [ ! -e "$f" ] || fail "$f left after purge"
done
[ ! -e /run/pvusb ] || fail "/run/pvusb left after purge"
[ ! -e /etc/default/pvusb ] || fail "/etc/default/pvusb left after purge"
[ ! -e /etc/pvusb ] || fail "/etc/pvusb left after purge"
! getent passwd pvusb >/dev/null || fail "the pvusb user is left after purge"
! dpkg-query -W pvusb >/dev/null 2>&1 || fail "dpkg still knows pvusb"
echo "purged: nothing left (${#files[@]} files checked)"
