#!/bin/bash
# The development PBX: a real Asterisk (Debian unstable's package) in a debootstrapped root,
# configured from asterisk-config/ plus its dev/ overlay, listening on loopback only.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/pbx.sh COMMAND

Commands:
  build     build the Debian unstable root with Asterisk, once (about 1 minute; needs root and
            network access to Debian's archive); kept until removed
  start     install asterisk-config/ (+ dev overlay) into the instance and start Asterisk;
            returns when Asterisk is fully booted
  stop      stop the instance (its astdb, and so its persistent queue members, is kept)
  restart   stop, then start
  reset     stop and delete the instance's state (astdb, logs)
  status    say whether the instance runs, and where its AMI listens
  cli CMD   run an Asterisk CLI command in the instance, e.g. deploy/pbx.sh cli 'queue show'

Environment (defaults in brackets):
  HOTLINE_PBX_ROOT   the Debian root             [/var/cache/hotline/pbx-root]
  HOTLINE_PBX_NAME   instance name, so several can run side by side        [dev]
  HOTLINE_PBX_STATE  host directory for the instance's AMI secrets [var/pbx-NAME in the repo]
  HOTLINE_AMI_PORT   AMI port on 127.0.0.1       [5038]
  HOTLINE_AMI_TLS_PORT  AMI over TLS on 127.0.0.1 [5039]
  HOTLINE_SIP_PORT   SIP (UDP) port on 127.0.0.1, the development overlay's plain transport for
                     stand-ins of the carrier; never where phones register [5060]
  HOTLINE_SIP_PHONE_ADDR  the phones' address, where SIP over TLS alone listens [127.0.1.1]
  HOTLINE_SIP_TLS_PORT    SIP over TLS port on it                          [5061]
  HOTLINE_CONFIG     the hotline configuration whose pauses.reasons become the phones' feature
                     codes (`hotline pbx-dialplan`)       [deploy/dev/hotline.yaml in the repo]
  HOTLINE_PBX_OVERLAY  a directory whose *.conf files are appended, after the dev overlay, to the
                     instance's file of the same name (or added): e.g. the capacity drill's
                     pjsip_site.conf with its carrier and stand-in phones (bench/drill)      [none]

The AMI secrets are written to $HOTLINE_PBX_STATE/ami-secret (the daemon's account, "hotline")
and $HOTLINE_PBX_STATE/ami-test-secret (the test harness's account, "hotline-test"). AMI over
TLS uses a certificate made for the instance by its own CA, whose certificate (what the daemon's
ami.tls.ca_file names) is $HOTLINE_PBX_STATE/ami-ca.pem; the CA's key is not kept.

SIP over TLS uses $HOTLINE_PBX_STATE/sip-tls.pem and sip-tls.key if they are there (a certificate
of your own CA for HOTLINE_SIP_PHONE_ADDR); otherwise they are made like AMI's, by a CA whose
certificate is sip-ca.pem. The development phones are PJSIP endpoints 2001-2004 (SRTP required),
each with its password in $HOTLINE_PBX_STATE/phones/<extension>.
EOF
}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${HOTLINE_PBX_ROOT:-/var/cache/hotline/pbx-root}
NAME=${HOTLINE_PBX_NAME:-dev}
STATE=${HOTLINE_PBX_STATE:-$REPO/var/pbx-$NAME}
AMI_PORT=${HOTLINE_AMI_PORT:-5038}
AMI_TLS_PORT=${HOTLINE_AMI_TLS_PORT:-5039}
SIP_PORT=${HOTLINE_SIP_PORT:-5060}
PHONE_ADDR=${HOTLINE_SIP_PHONE_ADDR:-127.0.1.1}
SIP_TLS_PORT=${HOTLINE_SIP_TLS_PORT:-5061}
HOTLINE_CONFIG=${HOTLINE_CONFIG:-$REPO/deploy/dev/hotline.yaml}
DEV_PHONES="2001 2002 2003 2004"
OVERLAY=${HOTLINE_PBX_OVERLAY:-}
# Paths inside the root.
INST=/srv/hotline/$NAME
CONF=$INST/etc/asterisk.conf
PACKAGES=asterisk,asterisk-moh-opsound-gsm

say() { echo "pbx[$NAME]: $*" >&2; }
die() { say "error: $*"; exit 1; }

need_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot and mounting /proc need it)"
}

ast() { chroot "$ROOT" /usr/sbin/asterisk -C "$CONF" "$@"; }

pid_of_instance() {
    local pidfile=$ROOT$INST/run/asterisk.pid
    [ -s "$pidfile" ] || return 1
    local pid
    pid=$(cat "$pidfile")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

build() {
    need_root
    if [ -x "$ROOT/usr/sbin/asterisk" ]; then
        return 0
    fi
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    say "building $ROOT: debootstrap --variant=minbase --include=$PACKAGES unstable (takes a minute)"
    local tmp=$ROOT.partial
    rm -rf "$tmp"
    mkdir -p "$(dirname "$ROOT")"
    # No mirror argument: debootstrap's default archive, as configured on this host.
    if ! debootstrap --variant=minbase --include="$PACKAGES" unstable "$tmp" >"$tmp.log" 2>&1; then
        tail -20 "$tmp.log" >&2
        die "debootstrap failed; full log in $tmp.log"
    fi
    # The greeting the dialplan plays; a real centre records its own.
    # (Inside the root: the package's sound paths are absolute symlinks.)
    chroot "$tmp" sh -c 'mkdir -p /usr/share/asterisk/sounds/custom/ &&
        cp /usr/share/asterisk/sounds/en/silence/1.gsm /usr/share/asterisk/sounds/custom/hotline-greeting.gsm'
    mv "$tmp" "$ROOT"
    rm -f "$tmp.log"
    say "built $(chroot "$ROOT" /usr/sbin/asterisk -V)"
}

new_secret() { head -c 24 /dev/urandom | base64 | tr -d '/+=\n'; }

# AMI over TLS (docs/security.md, "AMI transport") and SIP over TLS (docs/phones.md): made once
# per instance and use, a CA of its own and, signed by it, Asterisk's certificate for the names
# given (AMI: localhost, 127.0.0.1 and ::1; SIP: the phones' address). The daemon or the phones
# trust that CA alone; its key is thrown away once it has signed, so nothing else can ever be
# signed by it. USE is the files' prefix (ami, sip); a certificate and key already there are kept.
# KEY is the keys' kind, ec or rsa: SIP's are RSA, which every desk phone takes.
make_tls() {
    local use=$1 names=$2 cn=${2%%,*} keyopts=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
    local usage=digitalSignature
    [ "$3" = rsa ] && keyopts=(-newkey rsa:2048) && usage=digitalSignature,keyEncipherment
    [ -s "$STATE/$use-tls.pem" ] && [ -s "$STATE/$use-tls.key" ] && return 0
    command -v openssl >/dev/null || die "openssl is not installed (deploy/setup-host.sh)"
    local tmp
    tmp=$(mktemp -d)
    if ! (
        umask 077
        cd "$tmp"
        openssl req -x509 "${keyopts[@]}" -nodes -days 3650 \
            -subj "/CN=hotline development PBX $NAME: $use CA" -keyout ca.key -out ca.pem \
            -addext basicConstraints=critical,CA:TRUE \
            -addext keyUsage=critical,keyCertSign,cRLSign
        openssl req -new "${keyopts[@]}" -nodes \
            -subj "/CN=${cn#*:}" -keyout server.key -out server.csr
        printf '%s\n' basicConstraints=critical,CA:FALSE "keyUsage=critical,$usage" \
            extendedKeyUsage=serverAuth "subjectAltName=$names" \
            subjectKeyIdentifier=hash authorityKeyIdentifier=keyid >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -days 3650 \
            -set_serial "0x$(openssl rand -hex 16)" -extfile server.ext -out server.pem
    ) >"$tmp/log" 2>&1; then
        cat "$tmp/log" >&2
        rm -rf "$tmp"
        die "could not make the $use TLS certificate"
    fi
    install -m 600 "$tmp/server.key" "$STATE/$use-tls.key"
    install -m 644 "$tmp/server.pem" "$STATE/$use-tls.pem"
    install -m 644 "$tmp/ca.pem" "$STATE/$use-ca.pem"
    rm -rf "$tmp"
}

install_config() {
    local etc=$ROOT$INST/etc
    rm -rf "$etc"
    mkdir -p "$etc" "$ROOT$INST"/{run,lib,log,spool,cache} "$STATE"
    cp "$REPO"/asterisk-config/*.conf "$etc/"
    # The overlay is appended to the file of the same name (or added if there is none).
    local f
    for f in "$REPO"/asterisk-config/dev/*.conf; do
        cat "$f" >>"$etc/$(basename "$f")"
    done
    local moddir
    moddir=$(cd "$ROOT" && echo usr/lib/*/asterisk/modules)
    cat >"$etc/asterisk.conf" <<EOF
[directories]
astcachedir => $INST/cache
astetcdir => $INST/etc
astmoddir => /$moddir
astvarlibdir => $INST/lib
astdbdir => $INST/lib
astkeydir => $INST/lib
astdatadir => /usr/share/asterisk
astagidir => /usr/share/asterisk/agi-bin
astspooldir => $INST/spool
astrundir => $INST/run
astlogdir => $INST/log
astsbindir => /usr/sbin

[options]
runuser = asterisk
rungroup = asterisk
EOF
    sed -i "s/^port = 5038$/port = $AMI_PORT/" "$etc/manager.conf"
    sed -i "s/^bind = 127.0.0.1:5060$/bind = 127.0.0.1:$SIP_PORT/" "$etc/pjsip.conf"
    grep -q "^bind = 127.0.0.1:$SIP_PORT$" "$etc/pjsip.conf" || die "could not set the SIP port"
    grep -q "^port = $AMI_PORT$" "$etc/manager.conf" || die "could not set the AMI port"
    # Secrets live outside the repository; made once per instance and reused across restarts.
    [ -s "$STATE/ami-secret" ] || (umask 077 && new_secret >"$STATE/ami-secret")
    [ -s "$STATE/ami-test-secret" ] || (umask 077 && new_secret >"$STATE/ami-test-secret")
    (umask 077 && echo "secret = $(cat "$STATE/ami-secret")" >"$etc/manager_hotline_secret.conf")
    (umask 077 && echo "secret = $(cat "$STATE/ami-test-secret")" >"$etc/manager_test_secret.conf")
    make_tls ami "DNS:localhost,IP:127.0.0.1,IP:::1" ec
    install -m 600 "$STATE/ami-tls.key" "$etc/ami-tls.key"
    install -m 644 "$STATE/ami-tls.pem" "$etc/ami-tls.pem"
    (umask 077 && printf '%s\n' "tlsenable = yes" "tlsbindaddr = 127.0.0.1:$AMI_TLS_PORT" \
        "tlscertfile = $INST/etc/ami-tls.pem" "tlsprivatekey = $INST/etc/ami-tls.key" \
        >"$etc/manager_tls.conf")
    render_phones "$etc"
    if [ -n "$OVERLAY" ]; then
        [ -d "$OVERLAY" ] || die "HOTLINE_PBX_OVERLAY is not a directory: $OVERLAY"
        for f in "$OVERLAY"/*.conf; do
            [ -e "$f" ] || continue
            cat "$f" >>"$etc/$(basename "$f")"
        done
    fi
    chroot "$ROOT" chown -R asterisk:asterisk "$INST"
}

# What a site renders for its phones (docs/phones.md, "What deploy renders"), here for the
# development phones: the TLS transport's address and certificate, the phones with their
# passwords, and the feature codes from the configuration's pause reasons.
render_phones() {
    local etc=$1 ext
    make_tls sip "IP:$PHONE_ADDR" rsa
    install -m 600 "$STATE/sip-tls.key" "$etc/sip-tls.key"
    install -m 644 "$STATE/sip-tls.pem" "$etc/sip-tls.pem"
    (umask 077 && printf '%s\n' "bind = $PHONE_ADDR:$SIP_TLS_PORT" \
        "cert_file = $INST/etc/sip-tls.pem" "priv_key_file = $INST/etc/sip-tls.key" \
        >"$etc/pjsip_tls.conf")
    mkdir -p "$STATE/phones"
    (
        umask 077
        for ext in $DEV_PHONES; do
            [ -s "$STATE/phones/$ext" ] || new_secret >"$STATE/phones/$ext"
        done
        {
            echo "; The development phones, rendered by deploy/pbx.sh; passwords in $STATE/phones/."
            for ext in $DEV_PHONES; do
                printf '%s\n' "[$ext](responder-endpoint)" "auth = $ext" "aors = $ext" \
                    "[$ext](responder-auth)" "username = $ext" \
                    "password = $(cat "$STATE/phones/$ext")" "[$ext](responder-aor)"
            done
        } >"$etc/pjsip_site.conf"
    )
    local python=$REPO/.venv/bin/python
    [ -x "$python" ] || python=python3
    (cd "$REPO" && "$python" -m hotline pbx-dialplan -c "$HOTLINE_CONFIG") \
        >"$etc/extensions_responder_codes.conf" || die "hotline pbx-dialplan failed for $HOTLINE_CONFIG"
}

start() {
    need_root
    build
    if pid=$(pid_of_instance); then
        say "already running (pid $pid); AMI on 127.0.0.1:$AMI_PORT"
        return 0
    fi
    mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
    install_config
    say "starting Asterisk (AMI 127.0.0.1:$AMI_PORT, TLS :$AMI_TLS_PORT, SIP 127.0.0.1:$SIP_PORT," \
        "phones TLS $PHONE_ADDR:$SIP_TLS_PORT)"
    ast -U asterisk -G asterisk
    # The control socket appears a moment after the fork; then wait for FullyBooted, because the
    # AMI port accepts logins before app_queue is loaded.
    local deadline=$((SECONDS + 60))
    until ast -rx 'core waitfullybooted' >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            tail -20 "$ROOT$INST/log/messages.log" >&2 2>/dev/null || true
            die "Asterisk did not finish booting within 60 s"
        fi
        sleep 0.1
    done
    say "fully booted: $(ast -rx 'core show version' | head -1)"
}

stop() {
    need_root
    local pid
    if ! pid=$(pid_of_instance); then
        say "not running"
        return 0
    fi
    ast -rx 'core stop now' >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS > deadline)); then
            say "did not stop within 15 s; killing pid $pid"
            kill -9 "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    say "stopped"
}

reset() {
    stop
    rm -rf "${ROOT:?}$INST"
    say "state removed"
}

status() {
    local pid
    if pid=$(pid_of_instance); then
        echo "running (pid $pid); AMI 127.0.0.1:$AMI_PORT (TLS :$AMI_TLS_PORT, CA $STATE/ami-ca.pem)," \
            "user hotline, secret in $STATE/ami-secret"
    else
        echo "not running"
        return 3
    fi
}

case "${1:-}" in
build) build ;;
start) start ;;
stop) stop ;;
restart) stop && start ;;
reset) reset ;;
status) status ;;
cli)
    shift
    ast -rx "$*"
    ;;
-h | --help | help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac
