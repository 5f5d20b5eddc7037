#!/bin/bash
# Installs the Debian packages that building, testing and the development PBX need, if missing.
# Idempotent; needs root. Used by `make setup` (and so by `make demo`, `make test`, `make check`
# and CI). `make lint` and `make unit` do not need it: they only need python3 with venv.
# Anything that cannot be installed stops it with a non-zero exit and a line saying what.
set -euo pipefail
trap 'echo "setup-host: failed (exit $?): $BASH_COMMAND" >&2' ERR

[ "$(id -u)" -eq 0 ] || { echo "setup-host: must run as root (apt-get)" >&2; exit 1; }

# debootstrap builds the PBX root; make and the venv build the project; postgresql gives the
# server binaries the integration tests run their own throwaway cluster with (tests/pg.py);
# prometheus gives /usr/bin/prometheus and /usr/bin/promtool, which check deploy/prometheus and
# run the tests' own Prometheus (tests/prom.py); systemd-container gives systemd-nspawn, which
# boots the Debian 12 root that tests/integration/test_systemd.py installs the service into
# (--no-install-recommends keeps out libnss-mymachines, which would edit nsswitch.conf); openssl
# makes the development PBX's AMI TLS certificate (deploy/pbx.sh); sip-tester (SIPp) plays the
# carrier and the responders' phones in the capacity drill (bench/drill); baresip-core is the real
# desk phone (TLS, SRTP) and tcpdump captures its media in tests/integration/test_phones.py.
packages=(debootstrap make postgresql prometheus systemd-container openssl sip-tester baresip-core
    tcpdump)
# chromium and chromium-driver drive the console in a real browser in
# tests/integration/test_console.py; fonts-liberation gives its screenshots their text.
packages+=(chromium chromium-driver fonts-liberation)
# Debian's own python3 needs python3-venv for `python3 -m venv` (ensurepip).
python3 -c 'import ensurepip, venv' 2>/dev/null || packages+=(python3-venv python3-dev)

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=()
for p in "${packages[@]}"; do
    installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-host: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Check what was asked for is really there, and say what is not.
problems=()
for p in "${packages[@]}"; do
    installed "$p" || problems+=("Debian package $p is not installed")
done
for cmd in debootstrap make prometheus promtool python3 systemd-nspawn openssl sipp baresip tcpdump \
    chromium chromedriver; do
    command -v "$cmd" >/dev/null || problems+=("$cmd is not on PATH")
done
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || problems+=("no PostgreSQL server (initdb)")
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || problems+=("python3 is older than 3.11")
python3 -c 'import ensurepip, venv' 2>/dev/null || problems+=("python3 cannot make a virtualenv")
if [ ${#problems[@]} -gt 0 ]; then
    printf 'setup-host: %s\n' "${problems[@]}" >&2
    exit 1
fi
