"""The daemon killed with SIGKILL while calls are in progress, then restarted: no call that had
entered the queue is lost without trace, and none is recorded twice."""

from __future__ import annotations

import asyncio
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from hotline.adapters.store.migrations import migrate
from hotline.core.privacy import load_keys
from tests.harness import AmiTestClient, Pbx, free_port, local, wait_for
from tests.pg import PgCluster


class Process:
    """`hotline run` as systemd would run it."""

    def __init__(self, config: Path, log: Path, port: int) -> None:
        self.config = config
        self.log = log
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hotline", "run", "-c", str(self.config), stderr=out
            )

        async def ready() -> int:
            try:
                async with (
                    aiohttp.ClientSession() as http,
                    http.get(f"http://127.0.0.1:{self.port}/readyz") as response,
                ):
                    return response.status
            except aiohttp.ClientConnectionError:
                return 0

        await wait_for(ready, lambda status: status == 200, 20, "the daemon to be ready")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


@pytest.fixture
async def daemon_process(
    pbx: Pbx, cluster: PgCluster, tmp_path: Path
) -> AsyncIterator[tuple[Process, PgCluster, Path]]:
    cluster.create_database("hotline")
    await migrate(cluster.dsn_for("hotline"))
    keys = tmp_path / "caller-keys"
    keys.write_text(f"3:{secrets.token_hex(32)}\n")
    (tmp_path / "ami-secret").write_text(pbx.secret)
    keys.chmod(0o600)
    (tmp_path / "ami-secret").chmod(0o600)
    port = free_port()
    config = tmp_path / "hotline.yaml"
    config.write_text(
        f"""
timezone: UTC
ami: {{port: {pbx.ami_port}, username: hotline, secret_file: ami-secret}}
http: {{listen: "127.0.0.1:{port}"}}
database: {{dsn: "{cluster.dsn_for("hotline")}", spool_dir: spool}}
privacy: {{keys_file: caller-keys}}
queues: {{crisis: {{min_responders: 1}}, spanish: {{min_responders: 0}}}}
responders:
  r-ana: {{name: Ana, interface: "{local(1001)}", queues: {{crisis: 0}}}}
  r-away: {{name: Away, interface: "{local(8001)}", queues: {{crisis: 1}}}}
shifts:
  - {{name: always, days: [daily], start: "00:00", end: "00:00", responders: [r-ana, r-away]}}
"""
    )
    process = Process(config, tmp_path / "daemon.log", port)
    yield process, cluster, keys
    await process.stop()


async def test_calls_in_progress_when_the_daemon_is_killed_are_closed_once_after_restart(
    ami: AmiTestClient, daemon_process: tuple[Process, PgCluster, Path]
) -> None:
    process, cluster, keys_file = daemon_process
    keys = load_keys(keys_file.read_text())

    def rows() -> list[dict[str, object]]:
        return cluster.json_rows(
            "SELECT row_to_json(c) FROM (SELECT caller_key, outcome, answered_by, rank"
            " FROM hotline.calls) c",
            "hotline",
        )

    def of(number: str, found: list[dict[str, object]]) -> list[dict[str, object]]:
        return [r for r in found if r["caller_key"] == keys.pseudonym(number)]

    async def poll() -> list[dict[str, object]]:
        return await asyncio.to_thread(rows)

    await process.start()
    # Talking: r-ana answers and talks 6 s. Waiting: r-away's phone rings on, the caller
    # gives up after 6 s. Both rows exist before the kill.
    await ami.call("988", caller="+15550300001", hold_s=40, talk_s=6)
    await wait_for(
        poll, lambda rs: any(r["answered_by"] == "r-ana" for r in rs), 10, "the answered row"
    )
    await ami.call("988", caller="+15550300002", hold_s=6)
    await wait_for(
        poll, lambda rs: len(of("+15550300002", rs)) == 1, 10, "the waiting caller's row"
    )

    await process.kill()
    # Both calls end while the daemon is away.
    await wait_for(ami.members, lambda ms: not any(m.in_call for m in ms), 15, "calls over")
    await process.start()
    # A call after the restart is recorded as usual (r-ana is in wrap-up: the caller gives up).
    await ami.call("988", caller="+15550300003", hold_s=4)

    found = await wait_for(
        poll,
        lambda rs: len(rs) == 3 and all(r["outcome"] for r in rs),
        20,
        "every call closed after the restart",
    )
    talking, waiting, after = (
        of(n, found) for n in ("+15550300001", "+15550300002", "+15550300003")
    )
    assert len(talking) == len(waiting) == len(after) == 1
    # Their ends were not seen: closed as unknown, never left open or recorded twice.
    assert talking[0]["outcome"] == "unknown"
    assert talking[0]["answered_by"] == "r-ana"
    assert waiting[0]["outcome"] == "unknown"
    assert after[0]["outcome"] == "abandoned"
