#!/bin/bash
# Installs hotline as a systemd service on this host, upgrades it in place, or removes it.
# One command for all three; run it again at any time: it converges and keeps configuration,
# credentials and data. docs/operations.md says what it does and how to upgrade and roll back.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/install.sh [OPTIONS]              install, or upgrade in place
       deploy/install.sh --uninstall [--purge]  remove
       deploy/install.sh --build-wheelhouse DIR make an offline install's wheels

Install or upgrade (as root, on a host booted with systemd):
  - the system user and group `hotline` (systemd-sysusers, /etc/sysusers.d/hotline.conf);
  - hotline in a virtualenv of its own, PREFIX/venv, from requirements/runtime.txt (exact
    versions, every file's hash) and then the package itself without dependencies;
  - /etc/hotline/hotline.yaml (root:hotline 0640) from deploy/hotline.example.yaml, only if
    there is none: an existing configuration is never overwritten;
  - /etc/hotline/credentials/{ami-secret,pg-password,caller-keys} (root:root 0600, the directory
    0700), each generated at random only if missing: the unit hands them to the daemon with
    LoadCredential=;
  - ASTERISK_ETC/manager_hotline_secret.conf ("secret = ..." from the ami-secret credential, the
    file asterisk-config/manager.conf includes), and `manager reload` if Asterisk runs and the
    secret changed;
  - /etc/systemd/system/hotline.service, enabled;
  - then `hotline check-config`, `hotline migrate` if the configuration has a database, and a
    restart of the service if it was running (an upgrade). Starting it is yours:
    `systemctl start hotline`.

Options:
  --prefix DIR            where hotline's virtualenv and documentation go [/opt/hotline]
  --wheelhouse DIR        install offline from DIR, made by --build-wheelhouse with the same
                          checkout (no network needed)
  --asterisk-etc DIR      Asterisk's configuration directory [/etc/asterisk]; skipped if absent
  --uninstall             stop, disable and remove the service, its unit, the virtualenv and
                          the sysusers entry; keep /etc/hotline, /var/lib/hotline and the user
  --purge                 with --uninstall: also remove /etc/hotline, /var/lib/hotline, the
                          rendered Asterisk secret and the user and group
  --build-wheelhouse DIR  download the locked runtime wheels and build hotline's own wheel into
                          DIR (needs PyPI and the target's Python, 3.11 on Debian 12)
  -h, --help              this text

Exit status: 0 done; 1 failed (the last line says why); 2 bad usage; 78 the configuration is
invalid, or the database has a schema this version does not know (the lines above say which;
the running service was left alone).
EOF
}

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=/opt/hotline
WHEELHOUSE=
ASTERISK_ETC=/etc/asterisk
MODE=install
PURGE=0
OUT=

ETC=/etc/hotline
CONFIG=$ETC/hotline.yaml
CREDS=$ETC/credentials
STATE=/var/lib/hotline
UNIT=/etc/systemd/system/hotline.service
SYSUSERS=/etc/sysusers.d/hotline.conf
# Where the unit's LoadCredential= puts the credentials, as the configuration names them.
RUN_CREDS=/run/credentials/hotline.service
USER_NAME=hotline

say() { echo "install: $*" >&2; }
die() { say "error: $*"; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
    --prefix) PREFIX=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) PREFIX=${1#*=}; shift ;;
    --wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a directory}; shift 2 ;;
    --wheelhouse=*) WHEELHOUSE=${1#*=}; shift ;;
    --asterisk-etc) ASTERISK_ETC=${2:?--asterisk-etc needs a directory}; shift 2 ;;
    --asterisk-etc=*) ASTERISK_ETC=${1#*=}; shift ;;
    --uninstall) MODE=uninstall; shift ;;
    --purge) PURGE=1; shift ;;
    --build-wheelhouse) MODE=wheelhouse; OUT=${2:?--build-wheelhouse needs a directory}; shift 2 ;;
    --build-wheelhouse=*) MODE=wheelhouse; OUT=${1#*=}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
done
[ "$PURGE" -eq 0 ] || [ "$MODE" = uninstall ] || { say "--purge goes with --uninstall"; exit 2; }
case "$PREFIX" in
/?*) PREFIX=${PREFIX%/} ;;
*) say "--prefix must be an absolute path"; exit 2 ;;
esac
VENV=$PREFIX/venv

# Files are created for root, readable where they must be: never group- or world-writable.
umask 022

systemd_running() { [ -d /run/systemd/system ]; }

# ---------------------------------------------------------------------------------------------
# The wheelhouse: everything an offline install needs, for this checkout.

source_copy() {
    # The package's sources alone, so a build never writes into the checkout (which may be
    # read-only, or another user's).
    local to=$1
    mkdir -p "$to"
    cp "$SRC/pyproject.toml" "$SRC/README.md" "$to/"
    cp -r "$SRC/hotline" "$to/"
    find "$to" -name __pycache__ -prune -exec rm -rf {} +
}

build_wheelhouse() {
    local python=${PYTHON:-python3}
    command -v "$python" >/dev/null || die "$python is not installed"
    mkdir -p "$OUT"
    OUT=$(cd "$OUT" && pwd)
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    if ! "$python" -m pip --version >/dev/null 2>&1; then
        "$python" -m venv "$WORK/venv" \
            || die "$python cannot make a virtualenv (apt-get install python3-venv)"
        python=$WORK/venv/bin/python
    fi
    local pip=("$python" -m pip --disable-pip-version-check --no-input --quiet)
    local lock=(--require-hashes --only-binary :all: -r "$SRC/requirements/runtime.txt" -d "$OUT")
    # Offline first: a wheelhouse made before needs no network as long as the lock is unchanged.
    if "${pip[@]}" download --no-index --find-links "$OUT" "${lock[@]}" >/dev/null 2>&1; then
        say "the locked runtime wheels are in $OUT already"
    else
        say "downloading the locked runtime wheels into $OUT"
        "${pip[@]}" download "${lock[@]}"
    fi
    source_copy "$WORK/src"
    rm -f "$OUT"/hotline-*.whl
    # pyproject.toml's build backend; an interpreter that has it builds without the network.
    local isolation=()
    if "$python" -c 'import setuptools, sys
sys.exit(tuple(int(p) for p in setuptools.__version__.split(".")[:2]) < (78, 1))' 2>/dev/null; then
        isolation=(--no-build-isolation)
    fi
    say "building hotline's wheel into $OUT"
    "${pip[@]}" wheel --no-deps "${isolation[@]}" -w "$OUT" "$WORK/src"
    say "done: deploy/install.sh --wheelhouse $OUT (for Python $("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') on $(uname -m))"
}

# ---------------------------------------------------------------------------------------------
# Install or upgrade.

check_host() {
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    if [ ! -f "$SRC/pyproject.toml" ] || [ ! -f "$SRC/requirements/runtime.txt" ]; then
        die "$SRC is not a hotline checkout (no pyproject.toml or requirements/runtime.txt)"
    fi
    command -v python3 >/dev/null || die "python3 is not installed (apt-get install python3)"
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "hotline needs Python 3.11 or newer; python3 is $(python3 -V 2>&1)"
    python3 -c 'import ensurepip, venv' 2>/dev/null \
        || die "python3 cannot make a virtualenv (apt-get install python3-venv)"
    command -v systemd-sysusers >/dev/null || die "systemd-sysusers is missing (a systemd host is needed)"
    systemd_running || say "note: systemd is not running here; the unit is installed but not enabled"
}

make_user() {
    install -D -m 0644 "$SRC/deploy/systemd/sysusers.d/hotline.conf" "$SYSUSERS"
    systemd-sysusers "$SYSUSERS"
    getent passwd "$USER_NAME" >/dev/null || die "systemd-sysusers did not create the user $USER_NAME"
}

installed_version() {
    "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("hotline"))'
}

package_version() {
    sed -n 's/^version = "\(.*\)"$/\1/p' "$SRC/pyproject.toml" | head -1
}

install_venv() {
    local want have=""
    want=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [ -x "$VENV/bin/python" ]; then
        have=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
    fi
    if [ "$have" != "$want" ]; then
        [ -z "$have" ] || say "the virtualenv's Python is $have, the host's $want: making it again"
        rm -rf "$VENV"
        mkdir -p "$PREFIX"
        python3 -m venv "$VENV"
    fi
    local pip=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input --quiet)
    local index=()
    if [ -n "$WHEELHOUSE" ]; then
        [ -d "$WHEELHOUSE" ] || die "no wheelhouse at $WHEELHOUSE"
        index=(--no-index --find-links "$WHEELHOUSE")
    fi
    say "installing the locked dependencies into $VENV"
    "${pip[@]}" install "${index[@]}" --require-hashes -r "$SRC/requirements/runtime.txt"
    local version
    version=$(package_version)
    if [ -n "$WHEELHOUSE" ]; then
        local wheels=("$WHEELHOUSE"/hotline-"$version"-*.whl)
        if [ ! -f "${wheels[0]}" ] || [ ${#wheels[@]} -ne 1 ]; then
            die "$WHEELHOUSE has no single hotline $version wheel: make it again with --build-wheelhouse"
        fi
        say "installing hotline $version from ${wheels[0]##*/}"
        "${pip[@]}" install "${index[@]}" --no-deps --force-reinstall "${wheels[0]}"
    else
        local tmp
        tmp=$(mktemp -d)
        source_copy "$tmp/src"
        say "installing hotline $version from $SRC"
        "${pip[@]}" install --no-deps --force-reinstall "$tmp/src" || { rm -rf "$tmp"; exit 1; }
        rm -rf "$tmp"
    fi
    "${pip[@]}" check >/dev/null || { "$VENV/bin/python" -m pip check >&2; die "pip check failed"; }
    install -D -m 0644 "$SRC/docs/operations.md" "$PREFIX/doc/operations.md"
}

# A random credential, printable ASCII without whitespace as hotline requires.
random_hex() { python3 -c "import secrets; print(secrets.token_hex($1))"; }

install_credential() {
    local name=$1 content=$2
    if [ ! -e "$CREDS/$name" ]; then
        say "generated $CREDS/$name"
        (umask 077 && printf '%s\n' "$content" >"$CREDS/$name")
    fi
    chown root:root "$CREDS/$name"
    chmod 0600 "$CREDS/$name"
}

install_config() {
    FIRST=0
    install -d -m 0750 -o root -g "$USER_NAME" "$ETC"
    if [ ! -e "$CONFIG" ]; then
        install -m 0640 -o root -g "$USER_NAME" "$SRC/deploy/hotline.example.yaml" "$CONFIG"
        FIRST=1
        say "installed the example configuration as $CONFIG: edit it"
    fi
    # The daemon runs as hotline and reads the file; nobody else needs it.
    chown root:"$USER_NAME" "$CONFIG"
    chmod 0640 "$CONFIG"
    install -d -m 0700 -o root -g root "$CREDS"
    install_credential ami-secret "$(random_hex 24)"
    install_credential pg-password "$(random_hex 24)"
    install_credential caller-keys "1:$(random_hex 32)"
    grep -qxE '[!-~]+' "$CREDS/ami-secret" \
        || die "$CREDS/ami-secret must be one line of printable ASCII without whitespace"
}

render_asterisk_secret() {
    if [ ! -d "$ASTERISK_ETC" ]; then
        say "no $ASTERISK_ETC: render manager_hotline_secret.conf where Asterisk runs (docs/operations.md)"
        return 0
    fi
    local target=$ASTERISK_ETC/manager_hotline_secret.conf group=root mode=0600 tmp
    if getent group asterisk >/dev/null; then
        group=asterisk
        mode=0640
    fi
    tmp=$(mktemp "$ASTERISK_ETC/.manager_hotline_secret.XXXXXX")
    printf 'secret = %s\n' "$(cat "$CREDS/ami-secret")" >"$tmp"
    chown root:"$group" "$tmp"
    chmod "$mode" "$tmp"
    if [ -f "$target" ] && cmp -s "$tmp" "$target"; then
        rm -f "$tmp"
        chown root:"$group" "$target"
        chmod "$mode" "$target"
        return 0
    fi
    mv -f "$tmp" "$target"
    say "rendered $target from $CREDS/ami-secret"
    if command -v asterisk >/dev/null && asterisk -rx 'core show version' >/dev/null 2>&1; then
        asterisk -rx 'manager reload' >/dev/null && say "Asterisk reloaded its AMI accounts"
    fi
}

install_unit() {
    local tmp
    tmp=$(mktemp)
    sed "s|@PREFIX@|$PREFIX|g" "$SRC/deploy/systemd/hotline.service" >"$tmp"
    install -D -m 0644 "$tmp" "$UNIT"
    rm -f "$tmp"
    if systemd_running; then
        systemctl daemon-reload
        systemctl enable --quiet hotline.service
    fi
}

has_database() {
    "$VENV/bin/python" - "$CONFIG" <<'EOF'
import sys
import yaml
with open(sys.argv[1], encoding="utf-8") as f:
    document = yaml.safe_load(f)
sys.exit(0 if isinstance(document, dict) and document.get("database") else 1)
EOF
}

check_config() {
    local status=0
    "$VENV/bin/hotline" check-config -c "$CONFIG" >/dev/null || status=$?
    if [ "$status" -ne 0 ]; then
        say "$CONFIG is not valid (above); the service was left as it was"
        exit "$status"
    fi
}

migrate() {
    if [ "$FIRST" -eq 1 ]; then
        say "not migrating: the configuration is the example; edit it, then run deploy/install.sh again"
        return 0
    fi
    if ! has_database; then
        say "no database in $CONFIG: nothing to migrate"
        return 0
    fi
    # The configuration names the credentials where the unit puts them; outside the unit they
    # are in /etc/hotline/credentials. A copy of the configuration beside the original (relative
    # paths keep their meaning) points at a private copy of the credentials.
    local tmp status=0
    tmp=$(mktemp -d /run/hotline-install.XXXXXX)
    local copy=$ETC/.install-migrate.yaml
    trap 'rm -rf "$tmp" "$copy"' EXIT
    cp -p "$CREDS"/* "$tmp/"
    (umask 077 && sed "s|$RUN_CREDS/|$tmp/|g" "$CONFIG" >"$copy")
    "$VENV/bin/hotline" migrate -c "$copy" || status=$?
    rm -rf "$tmp" "$copy"
    trap - EXIT
    if [ "$status" -ne 0 ]; then
        say "error: hotline migrate failed (exit $status; it names $copy, a copy of $CONFIG"
        say "pointing at the credentials); the service was left as it was"
        exit "$status"
    fi
}

restart_if_running() {
    systemd_running || return 0
    if systemctl is-active --quiet hotline.service; then
        say "restarting hotline.service on the new version"
        systemctl restart hotline.service
    fi
}

do_install() {
    check_host
    make_user
    install_venv
    install_config
    render_asterisk_secret
    install_unit
    check_config
    migrate
    restart_if_running
    say "hotline $(installed_version) installed in $VENV"
    if [ "$FIRST" -eq 1 ]; then
        cat >&2 <<EOF
install: next:
  1. edit $CONFIG (AMI port, database DSN, roster) and check it: $VENV/bin/hotline check-config -c $CONFIG
  2. keep the generated AMI secret in $CREDS/ami-secret (this script renders it for Asterisk
     into $ASTERISK_ETC/manager_hotline_secret.conf) or put Asterisk's there; set the database
     role's password to $CREDS/pg-password or put the DBA's there; $CREDS/caller-keys holds a
     new pseudonym key
  3. run deploy/install.sh again (it migrates the database), then: systemctl start hotline
EOF
    fi
}

# ---------------------------------------------------------------------------------------------
# Uninstall.

do_uninstall() {
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    if systemd_running && systemctl cat hotline.service >/dev/null 2>&1; then
        systemctl disable --quiet --now hotline.service || true
    fi
    rm -f "$UNIT"
    systemd_running && systemctl daemon-reload
    rm -rf "$VENV" "$PREFIX/doc"
    rmdir "$PREFIX" 2>/dev/null || true
    rm -f "$SYSUSERS"
    if [ "$PURGE" -eq 1 ]; then
        rm -rf "$ETC" "$STATE" "/var/lib/private/hotline"
        rm -f "$ASTERISK_ETC/manager_hotline_secret.conf"
        if getent passwd "$USER_NAME" >/dev/null; then
            userdel "$USER_NAME"
        fi
        if getent group "$USER_NAME" >/dev/null; then
            groupdel "$USER_NAME"
        fi
        say "removed hotline, its configuration, credentials, data and user"
    else
        say "removed hotline; kept $ETC (configuration, credentials), $STATE (spool) and the user"
        say "(--uninstall --purge removes them too)"
    fi
}

case "$MODE" in
install) do_install ;;
uninstall) do_uninstall ;;
wheelhouse) build_wheelhouse ;;
esac
