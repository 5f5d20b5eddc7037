"""Benchmark: time for the daemon to bring 1,000 members into a real, empty Asterisk.

Starts a PBX instance of its own (deploy/pbx.sh, free loopback ports), gives the daemon a roster
of 1,000 responders on duty in `crisis`, and measures from the AMI session going live to Asterisk
reporting all 1,000 members. Run: `make bench` or `python -m bench.membership` (as root).
Target: under 2 s.

Baseline, in the same run: the same 1,000 QueueAdd actions sent straight from a bare AMI
session, pipelined as the daemon does, until Asterisk reports them all: what Asterisk itself
takes; the ratio is the daemon's time over it."""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry

from hotline import daemon
from hotline.adapters.clock import SystemClock
from hotline.config import parse_config
from tests.harness import AmiTestClient, Pbx, free_port, wait_for

MEMBERS = 1_000
RUNS = 5


def roster_yaml(secret_file: Path, ami_port: int) -> str:
    lines = [
        f"ami: {{port: {ami_port}, username: hotline, secret_file: {secret_file}}}",
        f'http: {{listen: "127.0.0.1:{free_port()}"}}',
        "timezone: UTC",
        "queues: {crisis: {min_responders: 2}}",
        "responders:",
    ]
    lines += [
        f'  r-{i}: {{name: R{i}, interface: "Local/{1000 + i}@hotline-dev-responders/n",'
        f" queues: {{crisis: 0}}}}"
        for i in range(MEMBERS)
    ]
    ids = ", ".join(f"r-{i}" for i in range(MEMBERS))
    lines.append(
        f'shifts: [{{name: all, days: [daily], start: "00:00", end: "00:00", responders: [{ids}]}}]'
    )
    return "\n".join(lines) + "\n"


async def _empty(ami: AmiTestClient) -> None:
    for m in await ami.members("crisis"):
        await ami.action({"Action": "QueueRemove", "Queue": "crisis", "Interface": m.interface})
    assert await ami.members("crisis") == []


async def baseline_run(pbx: Pbx) -> float:
    """The members added by a bare AMI session, 256 actions in flight as the daemon has."""
    async with AmiTestClient(pbx) as ami:
        await _empty(ami)
        window = asyncio.Semaphore(256)

        async def add(i: int) -> None:
            async with window:
                await ami.action(
                    {"Action": "QueueAdd", "Queue": "crisis", "Interface": f"Local/{i}@x/n",
                     "MemberName": f"r-{i}", "StateInterface": f"Local/{i}@x/n"}
                )  # fmt: skip

        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(add(i) for i in range(MEMBERS)))
        await wait_for(
            lambda: ami.members("crisis"), lambda ms: len(ms) == MEMBERS, 30, "all members", 0.01
        )
        elapsed = loop.time() - started
        await _empty(ami)
        return elapsed


async def one_run(pbx: Pbx, workdir: Path) -> float:
    async with AmiTestClient(pbx) as ami:
        await _empty(ami)
        secret_file = workdir / "ami-secret"
        secret_file.write_text(pbx.secret)
        secret_file.chmod(0o600)
        config = parse_config(roster_yaml(secret_file, pbx.ami_port), workdir / "hotline.yaml")
        stop = asyncio.Event()
        started: asyncio.Future[daemon.Daemon] = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(
            daemon.run(
                config,
                daemon.Secrets(pbx.secret),
                SystemClock(),
                stop,
                registry=CollectorRegistry(),
                started=started,
            )
        )
        hotline = await started

        async def live() -> bool:
            return hotline.link.up

        await wait_for(live, bool, 30, "the daemon's AMI session", interval=0.001)
        live_at = loop.time()
        await wait_for(
            lambda: ami.members("crisis"), lambda ms: len(ms) == MEMBERS, 30, "all members", 0.01
        )
        elapsed = loop.time() - live_at
        stop.set()
        await task
        return elapsed


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pbx = Pbx(f"bench-{os.getpid()}", free_port(), free_port(), Path(tmp) / "pbx")
        pbx.state_dir.mkdir()
        await asyncio.to_thread(pbx.start)
        try:
            times, bare = [], []
            for _ in range(RUNS):  # alternating, so both see the same machine
                times.append(await one_run(pbx, Path(tmp)))
                bare.append(await baseline_run(pbx))
        finally:
            await asyncio.to_thread(pbx.run, "reset")
    median, baseline = statistics.median(times), statistics.median(bare)
    print(
        f"{MEMBERS} members into an empty Asterisk: median {median:.3f} s, "
        f"max {max(times):.3f} s over {RUNS} runs ({', '.join(f'{t:.3f}' for t in times)})\n"
        f"baseline, the same QueueAdds from a bare AMI session: median {baseline:.3f} s; "
        f"ratio {median / baseline:.2f}"
    )


if __name__ == "__main__":
    import structlog

    from hotline.adapters import log

    log.configure(level="warning")
    structlog.get_logger()
    asyncio.run(main())
