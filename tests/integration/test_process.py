"""`hotline run` as a process, the way systemd runs it: exit codes, JSON logs, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

from tests.harness import Pbx, free_port, wait_ready


async def test_sigterm_stops_the_daemon_cleanly_with_exit_status_zero(
    pbx: Pbx, tmp_path: Path
) -> None:
    (tmp_path / "ami-secret").write_text(pbx.secret + "\n")
    (tmp_path / "ami-secret").chmod(0o600)
    port = free_port()
    proc = await _hotline_run(
        tmp_path,
        f"ami: {{port: {pbx.ami_port}, username: hotline, secret_file: ami-secret}}\n"
        f'http: {{listen: "127.0.0.1:{port}"}}\n',
    )
    try:
        await wait_ready(port, 15)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(5):
            _, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    events = [json.loads(line)["event"] for line in stderr.decode().splitlines()]
    assert events[0] == "daemon_started"
    assert "ami_live" in events
    assert "daemon_stopping" in events
    assert events[-1] == "daemon_stopped"
    assert pbx.secret not in stderr.decode()


async def test_an_unreadable_secret_exits_78_naming_the_setting(tmp_path: Path) -> None:
    proc = await _hotline_run(
        tmp_path, "ami: {username: hotline, secret_file: /nonexistent/ami-secret}\n"
    )
    async with asyncio.timeout(30):
        _, stderr = await proc.communicate()
    assert proc.returncode == 78
    assert "ami.secret_file" in stderr.decode()


async def _hotline_run(tmp_path: Path, ami_and_http: str) -> asyncio.subprocess.Process:
    """`hotline run` with an empty roster, stderr captured."""
    config = tmp_path / "hotline.yaml"
    config.write_text(
        ami_and_http
        + "timezone: UTC\nqueues: {crisis: {min_responders: 0}}\nresponders: {}\nshifts: []\n"
    )
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotline", "run", "-c", str(config), stderr=asyncio.subprocess.PIPE
    )
