"""hotline as a systemd service: installed by deploy/install.sh into a Debian 12 host booted with
systemd (a container, tests/systemd_rig.py), from a wheelhouse and without network, then driven
with systemctl against the session's real Asterisk and a Postgres of this module's own.

Checked: the unit passes `systemd-analyze verify` and scores at most 2.0 in `systemd-analyze
security`; `systemctl start` returns at READY=1 with the roster's members in Asterisk; a reload
with a changed roster changes Asterisk's membership within 2 s on the same AMI session, and a
broken one is refused with the old membership kept and the reason in the journal; a daemon that
stops answering (SIGSTOP) is killed by the watchdog and restarted, and membership comes back; a
configuration error exits 78 without a restart loop; the secrets come from
$CREDENTIALS_DIRECTORY; the sandbox holds (no capabilities, no writes outside the state
directory, no netlink sockets); the installer converges (a second run changes nothing but the
package) and uninstalling keeps the data unless purged.

Nothing here is skipped: if the container, the PBX or Postgres cannot start, the tests fail and
say why. Every wait has a deadline; every container is powered off, whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import AmiTestClient, Pbx, free_port, local
from tests.pg import PgCluster
from tests.systemd_rig import (
    REPO,
    Container,
    RigError,
    boot,
    build_root,
    build_wheelhouse,
    service_properties,
    until,
)

UNIT = "hotline.service"
UNIT_PATH = "/etc/systemd/system/hotline.service"
CONFIG = "/etc/hotline/hotline.yaml"
CREDENTIALS = "/etc/hotline/credentials"
RUN_CREDENTIALS = "/run/credentials/hotline.service"
VENV = "/opt/hotline/venv"
INSTALL = ("/src/deploy/install.sh", "--wheelhouse", "/wheelhouse")
QUEUE = "crisis"
RESPONDERS = {"r-ana": 1001, "r-ben": 1002, "r-cai": 1003}
ON_DUTY = ["r-ana", "r-ben"]
AFTER_RELOAD = ["r-ben", "r-cai"]
# The unit's supervision settings, as deploy/systemd/hotline.service sets them.
WATCHDOG_S = 10.0
RESTART_S = 2.0
# How the process is started and supervised; everything else in [Service] is its sandbox.
LIFECYCLE = (
    "Type",
    "NotifyAccess",
    "ExecStart",
    "ExecReload",
    "WatchdogSec",
    "TimeoutStartSec",
    "TimeoutStopSec",
    "Restart",
    "RestartSec",
    "RestartPreventExitStatus",
)


# -- the rig ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def systemd_root() -> Path:
    try:
        return build_root()
    except RigError as exc:
        pytest.fail(f"the systemd container's root could not be built: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return build_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))
    except RigError as exc:
        pytest.fail(f"the wheelhouse could not be built: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PgCluster]:
    cluster = PgCluster()
    try:
        cluster.start()
    except Exception as exc:  # turned into a failure with the reason, never a skip
        cluster.destroy()
        pytest.fail(f"PostgreSQL could not start: {exc}", pytrace=False)
    yield cluster
    cluster.destroy()


def roster_config(ami_port: int, http_port: int, on_duty: list[str], dsn: str | None) -> str:
    """A production-shaped configuration: secrets by their credential paths, a 24-hour shift."""
    text = (
        "timezone: UTC\n"
        f"ami: {{host: 127.0.0.1, port: {ami_port}, username: hotline,"
        f" secret_file: {RUN_CREDENTIALS}/ami-secret}}\n"
        f'http: {{listen: "127.0.0.1:{http_port}"}}\n'
    )
    if dsn is not None:
        text += (
            f'database: {{dsn: "{dsn}", password_file: {RUN_CREDENTIALS}/pg-password,'
            " spool_dir: /var/lib/hotline/spool}\n"
            f"privacy: {{keys_file: {RUN_CREDENTIALS}/caller-keys}}\n"
        )
    text += f"queues:\n  {QUEUE}: {{min_responders: 1}}\nresponders:\n"
    for responder, extension in RESPONDERS.items():
        text += (
            f"  {responder}: {{name: {responder}, interface: {json.dumps(local(extension))},"
            f" queues: {{{QUEUE}: 0}}}}\n"
        )
    shift = ", ".join(on_duty)
    return text + (
        f'shifts:\n  - {{name: always, days: [daily], start: "00:00", end: "00:00",'
        f" responders: [{shift}]}}\n"
    )


def broken(config: str) -> str:
    """The same configuration with a shift naming a responder who does not exist."""
    broken_config = config.replace("responders: [r-ana, r-ben]", "responders: [r-ana, r-nobody]")
    assert broken_config != config
    return broken_config


@dataclass
class Service:
    """hotline installed in a booted container, configured for the session's PBX."""

    container: Container
    pbx: Pbx
    http_port: int
    config: str  # the valid configuration with ON_DUTY on shift
    install_stderr: str
    install_s: float
    state_after_install: str

    def write_config(self, text: str) -> None:
        self.container.write(CONFIG, text, mode="0640", owner="root:hotline")

    def props(self, *names: str) -> dict[str, str]:
        return self.container.show(UNIT, *names)

    def running(self) -> None:
        """Bring the service to running with the valid configuration, if a test left it not."""
        if self.props("ActiveState")["ActiveState"] != "active":
            self.write_config(self.config)
            self.container.systemctl("reset-failed", UNIT, check=False)
            self.container.systemctl("start", UNIT)
        until(self.members, lambda m: m == sorted(ON_DUTY), 10, "the roster in Asterisk")

    def members(self) -> list[str]:
        return members(self.pbx)

    def metrics(self) -> dict[str, float]:
        return scrape(self.http_port)


def members(pbx: Pbx) -> list[str]:
    """The dynamic members of the queue, by name, as Asterisk reports them (AMI QueueStatus)."""

    async def query() -> list[str]:
        async with AmiTestClient(pbx) as client:
            return sorted(m.name for m in await client.members(QUEUE) if m.dynamic)

    return asyncio.run(query())


def remove_member(pbx: Pbx, extension: int) -> None:
    async def remove() -> None:
        async with AmiTestClient(pbx) as client:
            await client.action(
                {"Action": "QueueRemove", "Queue": QUEUE, "Interface": local(extension)}
            )

    asyncio.run(remove())


def clear_members(pbx: Pbx) -> None:
    async def clear() -> None:
        async with AmiTestClient(pbx) as client:
            for member in await client.members():
                if member.dynamic:
                    await client.link.send(
                        {
                            "Action": "QueueRemove",
                            "Queue": member.queue,
                            "Interface": member.interface,
                        }
                    )

    asyncio.run(clear())


def scrape(port: int) -> dict[str, float]:
    """hotline's /metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


CONNECTED = 'hotline_ami_connect_attempts_total{result="success"}'
RELOADED = 'hotline_config_reloads_total{result="ok"}'
REFUSED = 'hotline_config_reloads_total{result="refused"}'


def journal_texts(lines: list[str]) -> str:
    """The journal's lines with every string inside hotline's JSON lines unescaped."""
    texts: list[str] = []

    def strings(value: object) -> None:
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                strings(item)
        elif isinstance(value, list):
            for item in value:
                strings(item)

    for line in lines:
        texts.append(line)
        with suppress(ValueError):
            strings(json.loads(line))
    return "\n".join(texts)


@pytest.fixture(scope="module")
def service(
    systemd_root: Path,
    wheelhouse: Path,
    pbx: Pbx,
    postgres: PgCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    dsn = postgres.create_database("hotline")
    http_port = free_port()
    config = roster_config(pbx.ami_port, http_port, ON_DUTY, dsn)
    binds = {REPO: "/src", wheelhouse: "/wheelhouse"}
    clear_members(pbx)
    try:
        with boot(systemd_root, binds, tmp_path_factory.mktemp("console")) as container:
            # What an operator (or configuration management) puts in place before installing:
            # the configuration and Asterisk's AMI secret; Asterisk's configuration directory.
            container.run("groupadd", "--system", "asterisk")
            container.run("mkdir", "-p", "/etc/asterisk")
            container.write(CONFIG, config, mode="0600")
            container.write(f"{CREDENTIALS}/ami-secret", pbx.secret + "\n", mode="0600")
            started = time.monotonic()
            installed = container.run(*INSTALL, timeout=900)
            install_s = time.monotonic() - started
            state = container.show(UNIT, "ActiveState")["ActiveState"]
            yield Service(container, pbx, http_port, config, installed.stderr, install_s, state)
            container.systemctl("stop", UNIT, check=False)
    finally:
        clear_members(pbx)


# -- the unit ---------------------------------------------------------------------------------


def test_the_installed_unit_passes_systemd_analyze_verify(service: Service) -> None:
    proc = service.container.run("systemd-analyze", "verify", UNIT_PATH, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout + proc.stderr == ""


def test_the_unit_scores_at_most_2_in_systemd_analyze_security(service: Service) -> None:
    out = service.container.run("systemd-analyze", "security", UNIT, "--no-pager").stdout
    match = re.search(rf"Overall exposure level for {re.escape(UNIT)}: (\d+\.\d+)", out)
    assert match is not None, out
    exposed = [line for line in out.splitlines() if line.startswith("✗")]
    assert float(match.group(1)) <= 2.0, "\n".join(exposed)


# -- the installer ----------------------------------------------------------------------------


def test_install_lays_out_config_credentials_and_asterisk_secret(
    service: Service, postgres: PgCluster
) -> None:
    c = service.container
    stat = {
        path: c.run("stat", "-c", "%U:%G %a", path).stdout.strip()
        for path in [
            "/etc/hotline",
            CONFIG,
            CREDENTIALS,
            *(f"{CREDENTIALS}/{name}" for name in ("ami-secret", "pg-password", "caller-keys")),
            "/etc/asterisk/manager_hotline_secret.conf",
        ]
    }
    assert stat == {
        "/etc/hotline": "root:hotline 750",
        CONFIG: "root:hotline 640",
        CREDENTIALS: "root:root 700",
        f"{CREDENTIALS}/ami-secret": "root:root 600",
        f"{CREDENTIALS}/pg-password": "root:root 600",
        f"{CREDENTIALS}/caller-keys": "root:root 600",
        "/etc/asterisk/manager_hotline_secret.conf": "root:asterisk 640",
    }
    # What existed was kept; what was missing was generated.
    assert c.read(CONFIG) == service.config
    assert c.read(f"{CREDENTIALS}/ami-secret") == service.pbx.secret + "\n"
    assert re.fullmatch(r"1:[0-9a-f]{64}\n", c.read(f"{CREDENTIALS}/caller-keys"))
    assert re.fullmatch(r"[!-~]{16,}\n", c.read(f"{CREDENTIALS}/pg-password"))
    # Asterisk's side of the AMI secret, rendered from the same credential exactly as the
    # development PBX renders its own.
    pbx_root = Path(os.environ.get("HOTLINE_PBX_ROOT", "/var/cache/hotline/pbx-root"))
    pbx_file = pbx_root / "srv/hotline" / service.pbx.name / "etc/manager_hotline_secret.conf"
    assert c.read("/etc/asterisk/manager_hotline_secret.conf") == pbx_file.read_text()
    # The system user, which cannot log in; the unit, enabled but not started by the install.
    passwd = c.run("getent", "passwd", "hotline").stdout.strip().split(":")
    assert passwd[5:] == ["/var/lib/hotline", "/usr/sbin/nologin"]
    assert c.systemctl("is-enabled", UNIT).strip() == "enabled"
    assert service.state_after_install == "inactive"
    # The database was migrated by the install, since the configuration has one.
    assert postgres.psql("SELECT count(*) FROM hotline.schema_migrations", "hotline").strip() != "0"
    assert "installing hotline" in service.install_stderr


# -- start, reload, watchdog, bad configuration -----------------------------------------------


def test_start_returns_once_ready_with_the_roster_in_asterisk(service: Service) -> None:
    c = service.container
    c.systemctl("stop", UNIT)
    clear_members(service.pbx)
    started = time.monotonic()
    c.systemctl("start", UNIT, timeout=90)
    start_s = time.monotonic() - started
    props = service.props("ActiveState", "SubState", "StatusText", "NRestarts")
    # Asked at once, without waiting: READY=1 comes after the first reconcile round.
    now_members = service.members()
    assert props["ActiveState"] == "active", props
    assert props["SubState"] == "running", props
    assert props["NRestarts"] == "0"
    assert "AMI live" in props["StatusText"], props
    assert now_members == sorted(ON_DUTY)
    assert start_s < 60
    print(
        f"systemctl start returned after {start_s:.2f} s (install took {service.install_s:.1f} s)"
    )


def test_secrets_come_from_the_credentials_directory(service: Service) -> None:
    service.running()
    c = service.container
    pid = service.props("MainPID")["MainPID"]
    environ = c.read(f"/proc/{pid}/environ").split("\0")
    assert f"CREDENTIALS_DIRECTORY={RUN_CREDENTIALS}" in environ
    for name in ("ami-secret", "pg-password", "caller-keys"):
        path = f"{RUN_CREDENTIALS}/{name}"
        assert c.run("stat", "-c", "%U %a", path).stdout.strip() == "hotline 400"
        assert c.read(path) == c.read(f"{CREDENTIALS}/{name}")
    # The configuration names the credentials there, and with them the daemon logged in to
    # Asterisk and reached Postgres.
    metrics = service.metrics()
    assert metrics[CONNECTED] >= 1
    assert metrics["hotline_db_up"] == 1


def test_the_running_daemon_has_no_privileges(service: Service) -> None:
    service.running()
    c = service.container
    pid = service.props("MainPID")["MainPID"]
    status = dict(
        line.split(":\t", 1) for line in c.read(f"/proc/{pid}/status").splitlines() if ":\t" in line
    )
    uid = c.run("id", "-u", "hotline").stdout.strip()
    assert status["Uid"].split() == [uid] * 4
    assert status["CapEff"].strip() == "0000000000000000"
    assert status["CapPrm"].strip() == "0000000000000000"
    assert status["CapBnd"].strip() == "0000000000000000"
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"
    limits = c.read(f"/proc/{pid}/limits")
    assert re.search(r"^Max open files\s+16384\s+16384\s", limits, re.MULTILINE), limits
    assert re.search(r"^Max core file size\s+0\s+0\s", limits, re.MULTILINE), limits


SANDBOX_PROBE = r"""
import ctypes, errno, json, mmap, os, socket
seen = {}
def attempt(what, action):
    try:
        action()
        seen[what] = "ok"
    except OSError as exc:
        seen[what] = errno.errorcode.get(exc.errno, str(exc.errno))
def write(path):
    def action():
        with open(path, "w") as f:
            f.write("probe")
        os.unlink(path)
    return action
for path in ["/etc/hotline/probe", "/opt/hotline/venv/probe", "/var/lib/probe", "/usr/probe",
             "/root/probe", "/home/probe", "/run/probe", "/var/lib/hotline/probe"]:
    attempt("write " + path, write(path))
attempt("read credential file", lambda: open("/etc/hotline/credentials/ami-secret").read())
attempt("read credential", lambda: open(os.environ["CREDENTIALS_DIRECTORY"] + "/ami-secret").read())
for family in ["AF_NETLINK", "AF_PACKET", "AF_INET", "AF_INET6", "AF_UNIX"]:
    kind = socket.SOCK_RAW if family in ("AF_NETLINK", "AF_PACKET") else socket.SOCK_STREAM
    attempt("socket " + family, lambda: socket.socket(getattr(socket, family), kind).close())
libc = ctypes.CDLL(None, use_errno=True)
def unshare():
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        raise OSError(ctypes.get_errno(), "unshare")
attempt("unshare user namespace", unshare)
def write_execute():
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC).close()
attempt("mmap write+execute", write_execute)
for line in open("/proc/self/status"):
    key, _, value = line.partition(":")
    if key in ("CapEff", "CapBnd", "NoNewPrivs", "Seccomp"):
        seen[key] = value.strip()
print(json.dumps(seen))
"""


def test_the_units_sandbox_holds(service: Service) -> None:
    """A probe run by systemd-run with every sandboxing setting of the installed unit."""
    c = service.container
    properties = service_properties(c.read(UNIT_PATH), LIFECYCLE)
    out = c.run(
        "systemd-run",
        "--wait",
        "--pipe",
        "--quiet",
        "--collect",
        *properties,
        f"{VENV}/bin/python",
        "-c",
        SANDBOX_PROBE,
    ).stdout
    seen = json.loads(out)
    # The state directory is the one place it may write (besides its own private /tmp).
    assert seen.pop("write /var/lib/hotline/probe") == "ok"
    writes = {what: result for what, result in seen.items() if what.startswith("write ")}
    assert all(result != "ok" for result in writes.values()), writes
    assert seen["read credential"] == "ok"
    assert seen["read credential file"] != "ok"
    assert seen["socket AF_NETLINK"] == "EAFNOSUPPORT"
    assert seen["socket AF_PACKET"] != "ok"
    assert seen["socket AF_INET"] == seen["socket AF_INET6"] == seen["socket AF_UNIX"] == "ok"
    assert seen["unshare user namespace"] != "ok"
    assert seen["mmap write+execute"] != "ok"
    assert seen["CapEff"] == seen["CapBnd"] == "0000000000000000"
    assert seen["NoNewPrivs"] == "1"
    assert seen["Seccomp"] == "2"


def test_reload_changes_membership_within_2_s_on_the_same_ami_session(service: Service) -> None:
    service.running()
    c = service.container
    before = service.metrics()
    pid = service.props("MainPID")["MainPID"]
    try:
        service.write_config(roster_config(*_ports(service), AFTER_RELOAD, _dsn(service)))
        asked = time.monotonic()
        c.systemctl("reload", UNIT)
        until(
            service.members,
            lambda m: m == sorted(AFTER_RELOAD),
            2.0 - (time.monotonic() - asked),
            "the reloaded roster in Asterisk",
        )
        changed_s = time.monotonic() - asked
        after = service.metrics()
        assert after[RELOADED] == before[RELOADED] + 1
        assert after[CONNECTED] == before[CONNECTED], "the reload logged in to AMI again"
        assert service.props("MainPID", "NRestarts") == {"MainPID": pid, "NRestarts": "0"}
        assert changed_s <= 2.0
        print(f"membership changed {changed_s:.2f} s after systemctl reload")
    finally:
        service.write_config(service.config)
        c.systemctl("reload", UNIT)
        until(service.members, lambda m: m == sorted(ON_DUTY), 5, "the first roster back")


def test_a_broken_roster_on_reload_is_refused_and_the_journal_says_why(service: Service) -> None:
    service.running()
    c = service.container
    before = service.metrics()
    pid = service.props("MainPID")["MainPID"]
    cursor = c.journal_cursor(UNIT)
    try:
        service.write_config(broken(service.config))
        check = c.run(f"{VENV}/bin/hotline", "check-config", "-c", CONFIG, check=False)
        assert check.returncode == 78
        problems = check.stderr.splitlines()
        assert problems
        c.systemctl("reload", UNIT)
        until(lambda: service.metrics()[REFUSED], lambda n: n == before[REFUSED] + 1, 5, "refusal")
        assert service.members() == sorted(ON_DUTY)
        assert service.props("ActiveState", "MainPID") == {"ActiveState": "active", "MainPID": pid}
        said = journal_texts(c.journal(UNIT, after=cursor))
        for problem in problems:
            assert problem in said, f"{problem!r} not in the journal:\n{said}"
        assert service.metrics()[RELOADED] == before[RELOADED]
    finally:
        service.write_config(service.config)
        c.systemctl("reload", UNIT)


def test_the_watchdog_restarts_a_daemon_that_stopped_answering(service: Service) -> None:
    service.running()
    c = service.container
    props = service.props("MainPID", "NRestarts")
    cursor = c.journal_cursor(UNIT)
    c.run("kill", "-STOP", props["MainPID"])
    frozen = time.monotonic()
    # While hotline is frozen a member is removed by hand: only a live daemon puts it back.
    remove_member(service.pbx, RESPONDERS["r-ben"])
    restarts = int(props["NRestarts"])
    until(
        lambda: int(service.props("NRestarts")["NRestarts"]),
        lambda n: n == restarts + 1,
        WATCHDOG_S + RESTART_S + 15,
        "the watchdog's restart",
        every=0.2,
    )
    restarted_s = time.monotonic() - frozen
    until(
        lambda: service.props("ActiveState", "SubState", "MainPID"),
        lambda p: p["SubState"] == "running" and p["MainPID"] not in ("0", props["MainPID"]),
        60,
        "the restarted daemon to be ready",
    )
    until(service.members, lambda m: m == sorted(ON_DUTY), 10, "the roster back in Asterisk")
    said = "\n".join(c.journal(UNIT, after=cursor))
    assert "Watchdog timeout" in said, said
    assert restarted_s <= WATCHDOG_S + RESTART_S + 15
    print(f"watchdog restart {restarted_s:.1f} s after SIGSTOP")


def test_a_configuration_error_exits_78_without_a_restart_loop(service: Service) -> None:
    c = service.container
    c.systemctl("stop", UNIT)
    cursor = c.journal_cursor(UNIT)
    service.write_config(broken(service.config))
    try:
        start = c.run("systemctl", "start", UNIT, check=False, timeout=90)
        assert start.returncode != 0
        wanted = {
            "ActiveState": "failed",
            "Result": "exit-code",
            "ExecMainStatus": "78",
            "NRestarts": "0",
        }
        assert service.props(*wanted) == wanted
        # No restart within twice the restart delay: the state holds for the whole window.
        window = time.monotonic() + 2 * RESTART_S + 1
        while time.monotonic() < window:
            assert service.props(*wanted) == wanted
            time.sleep(0.25)
        said = journal_texts(c.journal(UNIT, after=cursor))
        assert "unknown responder 'r-nobody'" in said, said
    finally:
        service.write_config(service.config)
        c.systemctl("reset-failed", UNIT, check=False)


def test_stop_is_clean_and_takes_the_credentials_away(service: Service) -> None:
    service.running()
    c = service.container
    c.systemctl("stop", UNIT, timeout=60)
    props = service.props("ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    assert c.run("test", "-e", RUN_CREDENTIALS, check=False).returncode != 0


def _ports(service: Service) -> tuple[int, int]:
    return service.pbx.ami_port, service.http_port


def _dsn(service: Service) -> str:
    match = re.search(r'dsn: "([^"]+)"', service.config)
    assert match is not None
    return match.group(1)


# -- install, upgrade, uninstall on a clean root ----------------------------------------------

# Inside the venv, what belongs to the hotline package itself: a reinstall may rewrite it.
PACKAGE = re.compile(
    rf"^{VENV}/(bin/hotline|lib/python3\.\d+/site-packages/(hotline|hotline-[^/]+\.dist-info)(/|$))"
)
INSTALLED_TREES = (
    "/opt/hotline",
    "/etc/hotline",
    "/var/lib/hotline",
    UNIT_PATH,
    "/etc/systemd/system/multi-user.target.wants/hotline.service",
    "/etc/sysusers.d/hotline.conf",
    "/etc/asterisk",
)


def test_install_converges_and_uninstall_keeps_data_unless_purged(
    systemd_root: Path, wheelhouse: Path, postgres: PgCluster, tmp_path: Path
) -> None:
    binds = {REPO: "/src", wheelhouse: "/wheelhouse"}
    with boot(systemd_root, binds, tmp_path) as c:
        c.run("mkdir", "-p", "/etc/asterisk")
        # First install on a clean host: the example configuration, generated credentials, the
        # unit enabled and not started.
        first = c.run(*INSTALL, timeout=900)
        assert "installed the example configuration" in first.stderr
        assert c.read(CONFIG) == (REPO / "deploy/hotline.example.yaml").read_text()
        secret = c.read(f"{CREDENTIALS}/ami-secret")
        assert re.fullmatch(r"[!-~]{32,}\n", secret)
        assert c.read("/etc/asterisk/manager_hotline_secret.conf") == f"secret = {secret}"
        assert c.systemctl("is-enabled", UNIT).strip() == "enabled"
        assert c.show(UNIT, "ActiveState")["ActiveState"] == "inactive"

        # The operator edits the configuration (here: an Asterisk that is not there, a database
        # of its own) and runs the installer again, which migrates; the service starts and is
        # ready after its first failed AMI attempt.
        dsn = postgres.create_database("fresh")
        http_port = free_port()
        c.write(CONFIG, roster_config(free_port(), http_port, ON_DUTY, dsn), "0640", "root:hotline")
        second = c.run(*INSTALL, timeout=900)
        assert "applied" in second.stdout, second.stdout
        c.systemctl("start", UNIT, timeout=90)
        props = c.show(UNIT, "ActiveState", "StatusText")
        assert props["ActiveState"] == "active"
        assert "retrying" in props["StatusText"], props
        c.systemctl("stop", UNIT)
        c.write("/var/lib/hotline/operator-note", "kept\n", owner="hotline:hotline")
        before = c.listing(*INSTALLED_TREES)
        users = c.run("getent", "passwd", "hotline").stdout

        # Run again: nothing changes but the package itself.
        third = c.run(*INSTALL, timeout=900)
        assert "already at schema version" in third.stdout, third.stdout
        after = c.listing(*INSTALLED_TREES)
        assert sorted(after) == sorted(before)
        changed = {
            path: (before[path], after[path])
            for path in before
            if before[path] != after[path] and not PACKAGE.match(path)
        }
        assert changed == {}
        package_meta = {
            path: (before[path], after[path])
            for path in before
            if PACKAGE.match(path)
            and {k: v for k, v in before[path].items() if k != "sha256"}
            != {k: v for k, v in after[path].items() if k != "sha256"}
        }
        assert package_meta == {}
        # The same wheel again: only the bytecode, stamped at install time, differs.
        rewritten = [p for p in before if before[p] != after[p] and not p.endswith(".pyc")]
        assert rewritten == []
        assert c.run("getent", "passwd", "hotline").stdout == users

        # Uninstall keeps configuration, credentials, data and the user.
        kept = {p: e for p, e in before.items() if p.startswith(("/etc/hotline", "/var/lib"))}
        c.run("/src/deploy/install.sh", "--uninstall", timeout=120)
        assert c.run("test", "-e", "/opt/hotline", check=False).returncode != 0
        assert c.run("test", "-e", UNIT_PATH, check=False).returncode != 0
        assert c.run("systemctl", "cat", UNIT, check=False).returncode != 0
        remaining = c.listing("/etc/hotline", "/var/lib/hotline")
        assert {p: remaining.get(p) for p in kept} == kept
        assert c.run("getent", "passwd", "hotline").stdout == users

        # --purge takes the rest.
        c.run("/src/deploy/install.sh", "--uninstall", "--purge", timeout=120)
        for path in (
            "/etc/hotline",
            "/var/lib/hotline",
            "/etc/asterisk/manager_hotline_secret.conf",
        ):
            assert c.run("test", "-e", path, check=False).returncode != 0, path
        assert c.run("getent", "passwd", "hotline", check=False).returncode != 0
