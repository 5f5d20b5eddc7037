#!/bin/bash
# A minimal Debian 12 root that boots systemd under systemd-nspawn: the stand-in production host
# that tests/integration/test_systemd.py installs hotline into (deploy/install.sh) and drives with
# systemctl. Built once and cached, like the development PBX's root; every boot is volatile
# (--volatile=overlay), so the cached root itself is never changed by a test.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/systemd-root.sh COMMAND

Commands:
  build    build the root once (about 1 minute and 300 MB; needs root and access to Debian's
           archive); a root that is already built is kept
  rebuild  remove the root and build it again
  path     print where the root is

Environment (defaults in brackets):
  HOTLINE_SYSTEMD_ROOT   the Debian 12 root   [/var/cache/hotline/systemd-root]

The root holds systemd, dbus, python3 with venv and procps (for /bin/kill): what
deploy/install.sh and the unit need on a production host, minus Asterisk and Postgres, which the
tests run on the host.
EOF
}

ROOT=${HOTLINE_SYSTEMD_ROOT:-/var/cache/hotline/systemd-root}
PACKAGES=systemd,systemd-sysv,dbus,python3,python3-venv,procps
SUITE=bookworm

say() { echo "systemd-root: $*" >&2; }
die() { say "error: $*"; exit 1; }

built() { [ -x "$ROOT/lib/systemd/systemd" ] && [ -x "$ROOT/usr/bin/python3" ] && [ -e "$ROOT/.hotline-root" ]; }

build() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap)"
    built && return 0
    command -v debootstrap >/dev/null || die "debootstrap is not installed (deploy/setup-host.sh)"
    say "building $ROOT: debootstrap --variant=minbase --include=$PACKAGES $SUITE (about a minute)"
    local tmp=$ROOT.partial
    rm -rf "$tmp"
    mkdir -p "$(dirname "$ROOT")"
    # No mirror argument: debootstrap's default archive, as configured on this host.
    if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$tmp" >"$tmp.log" 2>&1; then
        tail -20 "$tmp.log" >&2
        die "debootstrap failed; full log in $tmp.log"
    fi
    # A booted container needs a machine id (systemd would otherwise start in first-boot mode,
    # different on every boot) and no units that wait for hardware or a network that is not there.
    chroot "$tmp" systemd-machine-id-setup >/dev/null
    chroot "$tmp" systemctl mask --quiet systemd-networkd-wait-online.service \
        systemd-timesyncd.service getty@tty1.service console-getty.service \
        apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer 2>/dev/null || true
    rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp/var/lib/apt/lists/"*
    echo "$SUITE $PACKAGES" >"$tmp/.hotline-root"
    mv "$tmp" "$ROOT"
    rm -f "$tmp.log"
    say "built $ROOT ($(chroot "$ROOT" systemctl --version | head -1), $(chroot "$ROOT" python3 -V))"
}

case "${1:-}" in
build) build ;;
rebuild)
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    rm -rf "${ROOT:?}"
    build
    ;;
path) echo "$ROOT" ;;
-h | --help | help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac
