#!/bin/bash
# Installs the Debian packages that building, testing and the development PBX need, if missing.
# Idempotent; needs root. Used by `make setup` (and so by `make demo`, `make test` and CI).
set -euo pipefail

[ "$(id -u)" -eq 0 ] || { echo "setup-host: must run as root (apt-get)" >&2; exit 1; }

# debootstrap builds the PBX root; make and the venv build the project; postgresql gives the
# server binaries the integration tests run their own throwaway cluster with (tests/pg.py);
# prometheus gives /usr/bin/prometheus and /usr/bin/promtool, which check deploy/prometheus and
# run the tests' own Prometheus (tests/prom.py).
packages=(debootstrap make postgresql prometheus)
# Debian's own python3 needs python3-venv for `python3 -m venv` (ensurepip).
python3 -c 'import ensurepip, venv' 2>/dev/null || packages+=(python3-venv python3-dev)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-host: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
