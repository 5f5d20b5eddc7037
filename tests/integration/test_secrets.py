"""Secrets end to end (docs/security.md): AMI over TLS against the real Asterisk, refused for a
certificate that does not match and for a server that does not speak TLS, before the secret is
sent; a header with a line break refused on the live link, which stays up; and `hotline run` as
a process: exit 78 naming the source for a secret that is not printable ASCII or a credential
file others can read, and with panoramisk forced to fail an encode, JSON lines and no secret."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from hotline.adapters.ami import AmiLink
from hotline.adapters.metrics import Metrics
from hotline.config import AmiSettings, parse_config
from hotline.core.ami import Inbound, Result
from tests.harness import AmiTestClient, Pbx, free_port, local, wait_for, wait_ready

INJECTED = local(1001) + "\r\nAction: Logoff"


def tls_settings(port: int, ca_file: Path, server_name: str | None = None) -> AmiSettings:
    tls: dict[str, Any] = {"ca_file": str(ca_file)}
    if server_name is not None:
        tls["server_name"] = server_name
    ami = {
        "host": "127.0.0.1",
        "port": port,
        "username": "hotline",
        "secret_env": "UNUSED",
        "tls": tls,
        "action_timeout": 2,
        "backoff_min": 0.1,
        "backoff_max": 0.2,
    }
    document = {"timezone": "UTC", "ami": ami, "queues": {"q": {}}, "responders": {}}
    return parse_config(json.dumps(document), Path("tls.yaml")).ami


class Running:
    """An AmiLink running in a task, with its metrics."""

    def __init__(self, settings: AmiSettings, secret: str) -> None:
        self.registry = CollectorRegistry()
        self.inbox: asyncio.Queue[Inbound] = asyncio.Queue()
        self.link = AmiLink(settings, secret, self.inbox, Metrics(self.registry, ["crisis"]).link)
        self.task: asyncio.Task[None] | None = None

    def count(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    async def attempts(self, result: str) -> float:
        return self.count("hotline_ami_connect_attempts_total", result=result)


@pytest.fixture
async def running() -> AsyncIterator[list[Running]]:
    links: list[Running] = []
    yield links
    for each in links:
        if each.task is not None:
            each.task.cancel()
            await asyncio.gather(each.task, return_exceptions=True)


async def start(links: list[Running], settings: AmiSettings, secret: str) -> Running:
    each = Running(settings, secret)
    each.task = asyncio.create_task(each.link.run())
    links.append(each)
    return each


# -- AMI over TLS ---------------------------------------------------------------------------


async def test_the_link_logs_in_over_tls_to_asterisk_and_works(
    pbx: Pbx, running: list[Running]
) -> None:
    tls = await start(running, tls_settings(pbx.ami_tls_port, pbx.ca_file), pbx.secret)

    async def up() -> bool:
        return tls.link.up

    await wait_for(up, bool, 15, "a live AMI session over TLS")
    assert (await tls.link.send({"Action": "Ping"})).result is Result.SUCCESS
    status = await tls.link.send_list({"Action": "QueueStatus", "Queue": "crisis"})
    assert status.result is Result.SUCCESS
    assert await tls.attempts("success") == 1
    assert repr(tls.link).endswith(" tls live>")


@pytest.mark.parametrize("server_name", ["pbx.invalid", "127.0.0.2"])
async def test_a_certificate_for_another_name_is_refused_and_the_secret_never_sent(
    pbx: Pbx, running: list[Running], server_name: str
) -> None:
    tls = await start(running, tls_settings(pbx.ami_tls_port, pbx.ca_file, server_name), pbx.secret)
    await wait_for(lambda: tls.attempts("tls_failed"), lambda n: n >= 2, 10, "refused twice")
    assert not tls.link.up
    assert tls.link.last_error.startswith("TLS handshake failed: ")
    assert f"mismatch, certificate is not valid for '{server_name}'" in tls.link.last_error
    assert await tls.attempts("auth_failed") == 0


async def test_a_certificate_from_another_ca_is_refused(
    pbx: Pbx, running: list[Running], tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    openssl = await asyncio.create_subprocess_exec(
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-days", "1", "-subj", "/CN=not the PBX's CA", "-keyout",
        str(tmp_path / "other-ca.key"), "-out", str(other_ca),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await openssl.wait() == 0
    tls = await start(running, tls_settings(pbx.ami_tls_port, other_ca), pbx.secret)
    await wait_for(lambda: tls.attempts("tls_failed"), lambda n: n >= 1, 10, "refused")
    assert not tls.link.up
    assert tls.link.last_error == "TLS handshake failed: unable to get local issuer certificate"


async def test_a_server_that_does_not_speak_tls_never_sees_the_secret(
    pbx: Pbx, running: list[Running]
) -> None:
    received = bytearray()

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # What anything listening on the AMI port in Asterisk's place would do: say hello and
        # read whatever comes.
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        try:
            while data := await reader.read(4096):
                received.extend(data)
        finally:
            writer.close()

    server = await asyncio.start_server(impostor, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        tls = await start(running, tls_settings(port, pbx.ca_file), pbx.secret)
        await wait_for(lambda: tls.attempts("tls_failed"), lambda n: n >= 2, 10, "refused")
    finally:
        server.close()
    assert received, "the link did connect"
    assert pbx.secret.encode() not in received
    assert b"Login" not in received
    assert not tls.link.up


async def test_a_ca_file_that_cannot_be_used_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-cert.pem").write_text("hello\n")
    for ca_file in (tmp_path / "absent.pem", tmp_path / "not-a-cert.pem"):
        with pytest.raises(Exception, match=r"^ami.tls.ca_file: cannot use ") as caught:
            Running(tls_settings(5039, ca_file), "x")
        assert type(caught.value).__name__ == "ConfigError"


# -- header injection -------------------------------------------------------------------------


async def test_a_line_break_in_a_header_is_refused_on_the_live_link_which_stays_up(
    pbx: Pbx, ami: AmiTestClient, running: list[Running]
) -> None:
    tls = await start(running, tls_settings(pbx.ami_tls_port, pbx.ca_file), pbx.secret)

    async def up() -> bool:
        return tls.link.up

    await wait_for(up, bool, 15, "a live AMI session over TLS")
    reply = await tls.link.send(
        {"Action": "QueueAdd", "Queue": "crisis", "Interface": INJECTED, "MemberName": "r-x"}
    )
    assert reply.result is Result.ERROR
    assert reply.message == "refused, not sent: the Interface header holds a line break or NUL"
    assert tls.count("hotline_ami_actions_refused_total", reason="crlf") == 1
    assert tls.count("hotline_ami_actions_total", action="QueueAdd", result="error") == 0
    # Nothing reached Asterisk: no member, no Logoff; the session carries on.
    assert tls.link.up
    assert (await tls.link.send({"Action": "Ping"})).result is Result.SUCCESS
    assert [m for m in await ami.members("crisis") if m.name == "r-x"] == []


# -- `hotline run` as a process ------------------------------------------------------------------

ROSTER = "timezone: UTC\nqueues: {crisis: {min_responders: 0}}\nresponders: {}\nshifts: []\n"
# panoramisk's send() made to fail its encode, as a secret it cannot encode would: it then logs
# "Fail to send %r" with the whole Login action, and its traceback.
FAILING_ENCODE = """
import sys
from panoramisk.actions import Action
as_text = Action.__str__
Action.__str__ = lambda self: as_text(self) + "\\ud800"
from hotline.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


async def hotline_run(
    tmp_path: Path, head: str, *, code: str | None = None, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    config = tmp_path / "hotline.yaml"
    config.write_text(head + ROSTER)
    program = ["-c", code] if code is not None else ["-m", "hotline"]
    return await asyncio.create_subprocess_exec(
        sys.executable, *program, "run", "-c", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip


async def exit_78(proc: asyncio.subprocess.Process) -> str:
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert (proc.returncode, out) == (78, b"")
    return err.decode()


def private(path: Path, content: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("content", "flaw"),
    [
        (b"Gr33n-\xff-tea", "a byte that is not ASCII"),
        (b"Gr33n-\n-tea", "a line break"),
        (b"Gr33n- -tea", "whitespace"),
    ],
)
async def test_a_secret_file_that_is_not_printable_ascii_exits_78_naming_the_file(
    tmp_path: Path, content: bytes, flaw: str
) -> None:
    path = private(tmp_path / "ami-secret", content + b"\n")
    err = await exit_78(
        await hotline_run(tmp_path, "ami: {username: hotline, secret_file: ami-secret}\n")
    )
    assert err.splitlines() == [
        f"{tmp_path / 'hotline.yaml'}: ami.secret_file: {path} holds {flaw}: a secret must be "
        "printable ASCII without whitespace (0x21 to 0x7e)"
    ]
    assert "Gr33n" not in err


@pytest.mark.parametrize(
    ("value", "flaw"),
    [(b"Gr33n-\xff-tea", "a byte that is not ASCII"), (b"Gr33n-\n-tea", "a line break"),
     (b"Gr33n- -tea", "whitespace")],
)  # fmt: skip
async def test_a_secret_in_the_environment_that_is_not_printable_ascii_exits_78_naming_it(
    tmp_path: Path, value: bytes, flaw: str
) -> None:
    # A str environment for the child, each value as its bytes (surrogateescape round-trips).
    env = {k.decode(): v.decode("utf-8", "surrogateescape") for k, v in os.environb.items()}
    env["HOTLINE_TEST_AMI_SECRET"] = value.decode("utf-8", "surrogateescape")
    err = await exit_78(
        await hotline_run(
            tmp_path, "ami: {username: hotline, secret_env: HOTLINE_TEST_AMI_SECRET}\n", env=env
        )
    )
    assert f"ami.secret_env: environment variable HOTLINE_TEST_AMI_SECRET holds {flaw}" in err
    assert "Gr33n" not in err


async def test_credential_files_others_can_read_exit_78_naming_file_and_mode(
    tmp_path: Path,
) -> None:
    secret = private(tmp_path / "ami-secret", b"Gr33n-tea\n", 0o640)
    err = await exit_78(
        await hotline_run(tmp_path, "ami: {username: hotline, secret_file: ami-secret}\n")
    )
    assert f"ami.secret_file: {secret} is open to its group (mode 0640): " in err
    assert f"chmod 600 {secret}" in err
    secret.chmod(0o600)
    keys = private(tmp_path / "caller-keys", b"1:" + b"5a" * 32 + b"\n", 0o644)
    recording = (
        f"database: {{dsn: 'postgresql://hotline@127.0.0.1:{free_port()}/hotline',"
        f" spool_dir: {tmp_path / 'spool'}}}\n"
        "privacy: {keys_file: caller-keys}\n"
    )
    err = await exit_78(
        await hotline_run(
            tmp_path, "ami: {username: hotline, secret_file: ami-secret}\n" + recording
        )
    )
    assert err.splitlines() == [
        f"{tmp_path / 'hotline.yaml'}: privacy.keys_file: {keys} is open to its group and other "
        f"users (mode 0644): make it the daemon's user's only (chmod 600 {keys}, and remove any "
        "ACL entry), then replace the secret it holds, which others could read"
    ]
    assert "5a5a" not in err
    assert keys.stat().st_mode & 0o777 == 0o644, "refused, not changed"


async def test_with_panoramisk_failing_to_encode_the_login_stderr_is_json_without_the_secret(
    pbx: Pbx, tmp_path: Path
) -> None:
    private(tmp_path / "ami-secret", pbx.secret.encode() + b"\n")
    head = (
        f"ami: {{port: {pbx.ami_tls_port}, username: hotline, secret_file: ami-secret,"
        f" tls: {{ca_file: {pbx.ca_file}}}, action_timeout: 0.5, backoff_max: 0.5}}\n"
        f'http: {{listen: "127.0.0.1:{free_port()}"}}\n'
    )
    proc = await hotline_run(tmp_path, head, code=FAILING_ENCODE)
    assert proc.stderr is not None
    err = b""
    try:
        async with asyncio.timeout(30):  # a few login attempts, each failing to encode
            while err.count(b"Fail to send") < 2:
                line = await proc.stderr.readline()
                assert line, f"hotline run ended early: {err.decode()}"
                err += line
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            out, rest = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    assert out == b""
    text = (err + rest).decode()
    assert pbx.secret not in text
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    failed = [line for line in lines if line["event"].startswith("Fail to send")]
    assert len(failed) >= 2, "the encode failure was exercised"
    assert all(line["logger"].startswith("panoramisk") for line in failed)
    assert all("'Secret': [redacted]" in line["event"] for line in failed)
    assert any(line["event"] == "ami_connect_failed" for line in lines)


async def test_hotline_run_over_tls_gets_ready_and_logs_only_json(pbx: Pbx, tmp_path: Path) -> None:
    private(tmp_path / "ami-secret", pbx.secret.encode() + b"\n")
    port = free_port()
    head = (
        f"ami: {{port: {pbx.ami_tls_port}, username: hotline, secret_file: ami-secret,"
        f" tls: {{ca_file: {pbx.ca_file}, server_name: localhost}}}}\n"
        f'http: {{listen: "127.0.0.1:{port}"}}\n'
    )
    proc = await hotline_run(tmp_path, head)
    try:
        await wait_ready(port, 20)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    text = err.decode()
    assert pbx.secret not in text
    lines = [json.loads(line) for line in text.splitlines()]
    (live,) = [line for line in lines if line["event"] == "ami_live"]
    assert (live["port"], live["tls"]) == (pbx.ami_tls_port, True)
