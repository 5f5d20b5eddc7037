"""The capacity drill's rig: a PBX instance of its own with the drill's SIP endpoints, SIPp as the
carrier and as the responders' phones, a real `hotline run` process with Postgres, and the
readings the drill takes from them (/proc, /metrics, the call records).

Addresses and transport. The drill talks plain SIP over UDP on loopback, on a transport of its
own (`drill-udp`, 127.0.0.1 on a free port) that only the drill's PBX instance has: SIPp over TLS
costs more than the PBX it is meant to load, and the drill measures capacity, not encryption.
The carrier sends from 127.0.88.1, which identifies it (PJSIP `identify` by IP) as the trunk
`drill-carrier`, whose calls go to the crisis line's inbound context as a carrier's do. The
responders' phones are one SIPp process on 127.0.88.2 answering for every responder: each
responder is a PJSIP endpoint of its own (`drill-<id>`, from the shipped phone templates) with a
static contact `sip:<id>@127.0.88.2:<port>`, so Asterisk keeps a device state per responder and
the queue rings each as its own interface. Loopback addresses of their own keep the drill apart
from anything else on 127.0.0.1 (Asterisk's RTP ports included).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Pbx, free_port, wait_ready
from tests.pg import PgCluster

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CARRIER_IP = "127.0.88.1"
PHONES_IP = "127.0.88.2"
QUEUE = "crisis"
PBX_ROOT = Path(os.environ.get("HOTLINE_PBX_ROOT", "/var/cache/hotline/pbx-root"))
GREETING = "usr/share/asterisk/sounds/custom/hotline-greeting.gsm"
GSM_BYTES_PER_S = 1650  # 50 frames of 33 bytes
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def udp_port(ip: str) -> int:
    """A UDP port free on `ip` now (the drill's own loopback addresses see little contention)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def media_port(ip: str) -> int:
    """An even UDP port on `ip` free with the three after it: SIPp's audio and video RTP and
    RTCP ports."""
    for _ in range(100):
        port = udp_port(ip) & ~1
        try:
            with contextlib.ExitStack() as held:
                for p in (port, port + 1, port + 2, port + 3):
                    s = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                    s.bind((ip, p))
            return port
        except OSError:
            continue
    raise RuntimeError(f"no free media ports on {ip}")


def greeting_s() -> float:
    """How long the crisis line's greeting plays before a caller joins the queue."""
    return (PBX_ROOT / GREETING).stat().st_size / GSM_BYTES_PER_S


def queue_setting(name: str, queue: str = QUEUE) -> str:
    """A setting of a queue as the shipped queues.conf gives it."""
    section = ""
    for raw in (REPO / "asterisk-config" / "queues.conf").read_text().splitlines():
        line = raw.split(";", 1)[0].strip()
        if line.startswith("["):
            section = line[1 : line.index("]")]
        elif section == queue and "=" in line:
            key, _, value = line.partition("=")
            if key.strip() == name:
                return value.strip()
    raise LookupError(f"queues.conf sets no {name} for [{queue}]")


def responder_ids(count: int) -> list[str]:
    return [f"d{i:04d}" for i in range(1, count + 1)]


def _shipped(name: str) -> str:
    return (REPO / "asterisk-config" / name).read_text()


def _templates() -> set[str]:
    """The template sections (`[name](!)`) of the shipped pjsip.conf."""
    return set(re.findall(r"^\[([\w-]+)\]\(!\)", _shipped("pjsip.conf"), re.MULTILINE))


def _section(name: str, template: str | None, fallback: Sequence[str], *lines: str) -> list[str]:
    """A section from the shipped template if there is one, else with the `fallback` lines."""
    if template is not None and template in _templates():
        return [f"[{name}]({template})", *lines, ""]
    return [f"[{name}]", *fallback, *lines, ""]


def render_overlay(directory: Path, *, sip_port: int, phones_port: int, ids: Sequence[str]) -> None:
    """The drill's SIP endpoints, appended by deploy/pbx.sh (HOTLINE_PBX_OVERLAY) to the
    instance's pjsip_site.conf, the file the shipped pjsip.conf includes for what a site renders:
    the drill's own transport, the carrier trunk identified by its address, and one phone per
    responder, from the shipped carrier and responder templates, here on plain UDP without SRTP
    and without qualify (the SIPp phones answer INVITEs, nothing else)."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "; ---- capacity drill (bench/drill): loopback only, plain UDP, signalling only ----",
        "[drill-udp]",
        "type = transport",
        "protocol = udp",
        f"bind = 127.0.0.1:{sip_port}",
        "",
        *_section(
            "drill-carrier",
            "carrier-endpoint",
            ["type = endpoint", "context = hotline-inbound", "direct_media = no"],
            "transport = drill-udp",
            "disallow = all",
            "allow = ulaw",
        ),
        *_section(
            "drill-carrier",
            "carrier-identify",
            ["type = identify"],
            "endpoint = drill-carrier",
            f"match = {CARRIER_IP}",
        ),
    ]
    for rid in ids:
        lines += [
            *_section(
                f"drill-{rid}",
                "responder-endpoint",
                ["type = endpoint", "direct_media = no", "device_state_busy_at = 1"],
                "transport = drill-udp",
                f"aors = drill-{rid}",
                "media_encryption = no",
                "disallow = all",
                "allow = ulaw",
            ),
            *_section(
                f"drill-{rid}",
                "responder-aor",
                ["type = aor", "max_contacts = 1"],
                f"contact = sip:{rid}@{PHONES_IP}:{phones_port}",
                "qualify_frequency = 0",
            ),
        ]
    (directory / "pjsip_site.conf").write_text("\n".join(lines))
    # Identifying the carrier by its address needs this module; loaded here unless shipped.
    module = "res_pjsip_endpoint_identifier_ip.so"
    if not re.search(rf"^load => {re.escape(module)}", _shipped("modules.conf"), re.MULTILINE):
        (directory / "modules.conf").write_text(
            f"; ---- capacity drill (bench/drill) ----\n[modules](+)\nload => {module}\n"
        )


@dataclass
class DrillPbx(Pbx):
    """A development-PBX instance with the drill's endpoints (`overlay`) on its own ports."""

    overlay: Path = field(default_factory=Path)
    drill_sip_port: int = 0

    def env(self) -> dict[str, str]:
        return {**super().env(), "HOTLINE_PBX_OVERLAY": str(self.overlay)}

    @property
    def pid(self) -> int:
        run = PBX_ROOT / "srv" / "hotline" / self.name / "run" / "asterisk.pid"
        return int(run.read_text().strip())


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    after = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(after[11]) + int(after[12])) / CLOCK_TICKS


class CpuMeter:
    """CPU of a process over a window, as a share of one core."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu = cpu_s(pid)
        self.wall = time.monotonic()
        self.last = float("nan")

    def share(self) -> float:
        """So far; once the process has ended, as of the last call made while it ran."""
        try:
            used = cpu_s(self.pid) - self.cpu
        except OSError:
            return self.last
        self.last = used / max(1e-9, time.monotonic() - self.wall)
        return self.last


# -- SIPp -----------------------------------------------------------------------------------------


def _scenario(workdir: Path, name: str, values: dict[str, int]) -> Path:
    text = (HERE / f"{name}.xml").read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    missing = re.findall(r"@[A-Z_]+@", text)
    if missing:
        raise ValueError(f"{name}.xml: no value for {missing}")
    path = workdir / f"{name}.xml"
    path.write_text(text)
    return path


@dataclass
class SippRun:
    """One SIPp process; its per-call log (-trace_logs) and its error file."""

    proc: asyncio.subprocess.Process
    log: Path
    errors: Path
    screen: Path
    cpu: CpuMeter

    async def wait(self, within: float) -> int:
        try:
            async with asyncio.timeout(within):
                return await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(
                f"SIPp ({self.log.name}) did not finish within {within:.0f} s"
            ) from None

    async def stop(self, within: float = 15) -> int:
        """SIGUSR1 is SIPp's graceful stop: no new calls, the current ones end, then it exits."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGUSR1)
        try:
            return await self.wait(within)
        except AssertionError:
            return -9

    async def kill(self) -> None:
        """End it at once if it still runs (after a failure elsewhere)."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def error_lines(self) -> list[str]:
        if not self.errors.exists():
            return []
        return [line for line in self.errors.read_text(errors="replace").splitlines() if line]


async def _sipp(workdir: Path, tag: str, scenario: Path, args: Sequence[str]) -> SippRun:
    log, errors, screen = (workdir / f"{tag}.{ext}" for ext in ("log", "err", "screen"))
    with screen.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            "sipp",
            "-sf",
            str(scenario),
            "-nostdin",
            "-trace_logs",
            "-log_file",
            str(log),
            "-trace_err",
            "-error_file",
            str(errors),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            cwd=workdir,
        )
    return SippRun(proc, log, errors, screen, CpuMeter(proc.pid))


async def start_phones(
    workdir: Path, tag: str, port: int, *, ring_ms: int, talk_ms: int
) -> SippRun:
    """The responders' phones: SIPp as the UAS every responder's contact points at."""
    scenario = _scenario(workdir, "responders", {"RING_MS": ring_ms, "TALK_MS": talk_ms})
    ip = PHONES_IP
    run = await _sipp(
        workdir,
        tag,
        scenario,
        ["-i", ip, "-p", str(port), "-mi", ip, "-mp", str(media_port(ip)), "-l", "10000"],
    )
    # Ready when its SIP socket is bound: a UDP bind on the same port then fails.
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((ip, port))
        except OSError:
            return run
        if run.proc.returncode is not None or time.monotonic() > deadline:
            raise AssertionError(
                f"the SIPp phones did not start (exit {run.proc.returncode}):"
                f" {run.screen.read_text(errors='replace')[-2000:]}"
            )
        await asyncio.sleep(0.05)


async def start_carrier(
    workdir: Path,
    tag: str,
    *,
    prefix: str,
    pbx_port: int,
    rate: float,
    limit: int,
    calls: int,
    hold_ms: int,
) -> SippRun:
    """The carrier: `calls` calls at `rate` calls/s, at most `limit` at once, each dialling
    `prefix` followed by its call number."""
    scenario = _scenario(workdir, "carrier", {"HOLD_MS": hold_ms})
    ip = CARRIER_IP
    per_10s = max(1, round(rate * 10))
    return await _sipp(
        workdir,
        tag,
        scenario,
        [
            "-s", prefix,
            "-i", ip, "-p", str(udp_port(ip)), "-mi", ip, "-mp", str(media_port(ip)),
            "-r", str(per_10s), "-rp", "10000", "-l", str(limit), "-m", str(calls),
            f"127.0.0.1:{pbx_port}",
        ],
    )  # fmt: skip


# -- the daemon -----------------------------------------------------------------------------------


@dataclass
class HotlineProcess:
    """`hotline run` as a process, with its configuration, roster and Postgres."""

    workdir: Path
    pbx: Pbx
    dsn: str
    ids: Sequence[str]
    http_port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0

    @property
    def config(self) -> Path:
        return self.workdir / "hotline.yaml"

    def write_config(self) -> None:
        secret = self.workdir / "ami-secret"
        secret.write_text(self.pbx.secret + "\n")
        secret.chmod(0o600)
        keys = self.workdir / "caller-keys"
        if not keys.exists():
            keys.write_text(f"1:{os.urandom(32).hex()}\n")
            keys.chmod(0o600)
        responders = "\n".join(
            f"  {rid}: {{name: Drill {rid}, interface: PJSIP/drill-{rid}, queues: {{{QUEUE}: 0}}}}"
            for rid in self.ids
        )
        self.config.write_text(
            "timezone: UTC\n"
            f"ami: {{host: 127.0.0.1, port: {self.pbx.ami_port}, username: hotline,"
            f" secret_file: {secret}}}\n"
            f'http: {{listen: "127.0.0.1:{self.http_port}"}}\n'
            f"database: {{dsn: '{self.dsn}', spool_dir: {self.workdir / 'spool'}}}\n"
            f"privacy: {{keys_file: {keys}}}\n"
            f"queues: {{{QUEUE}: {{min_responders: 1}}}}\n"
            f"responders:\n{responders}\n"
            'shifts: [{name: round the clock, days: [daily], start: "00:00", end: "00:00",'
            f" responders: [{', '.join(self.ids)}]}}]\n"
        )

    async def _hotline(self, *args: str) -> asyncio.subprocess.Process:
        """A hotline command; its JSON log goes to hotline-<start>.log."""
        with (self.workdir / f"hotline-{self.starts}.log").open("ab") as log:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hotline", *args, "-c", str(self.config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
                cwd=self.workdir,
            )  # fmt: skip

    async def migrate(self) -> None:
        proc = await self._hotline("migrate")
        if await proc.wait() != 0:
            raise AssertionError(f"hotline migrate failed ({proc.returncode}): {self.log_tail()}")

    async def start(self, within: float = 90) -> None:
        self.starts += 1
        self.proc = await self._hotline("run")
        try:
            await wait_ready(self.http_port, within)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the daemon's log: {self.log_tail()}") from None

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                code = await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError("hotline run did not stop within 30 s of SIGTERM") from None
        if code != 0:
            raise AssertionError(f"hotline run exited {code}: {self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the daemon is not running"
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        log = self.workdir / f"hotline-{self.starts}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def problems(self) -> list[str]:
        """The daemon's log lines at warning or above, as written (JSON), over every run."""
        found: list[str] = []
        for log in sorted(self.workdir.glob("hotline-*.log")):
            for line in log.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    found.append(line[:200])
                    continue
                if entry.get("level") in ("warning", "error", "critical"):
                    found.append(line)  # the daemon's log is redacted at its source
        return found


# -- readings -------------------------------------------------------------------------------------

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: aiohttp.ClientSession, port: int) -> tuple[float, Samples]:
    """/metrics, and how long the scrape took (request sent -> body read)."""
    started = time.perf_counter()
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
        response.raise_for_status()
    took = time.perf_counter() - started
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return took, samples


def histogram(samples: Samples, name: str) -> dict[float, float]:
    """Cumulative bucket counts by upper edge (+Inf included), summed over every other label."""
    out: dict[float, float] = {}
    for (sample, labels), value in samples.items():
        if sample != f"{name}_bucket":
            continue
        le = float(dict(labels)["le"])
        out[le] = out.get(le, 0.0) + value
    return out


def delta(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {le: n - before.get(le, 0.0) for le, n in after.items()}


def quantile(buckets: dict[float, float], q: float) -> float | None:
    """histogram_quantile's estimate: linear within the bucket the rank falls in; a rank in the
    +Inf bucket gives the highest finite edge. None without observations."""
    edges = sorted(buckets)
    if not edges or buckets[edges[-1]] <= 0:
        return None
    rank = q * buckets[edges[-1]]
    below_edge, below_count = 0.0, 0.0
    for le in edges:
        count = buckets[le]
        if count >= rank:
            if le == float("inf"):
                return below_edge
            if count == below_count:
                return le
            return below_edge + (le - below_edge) * (rank - below_count) / (count - below_count)
        below_edge, below_count = le, count
    return below_edge


def share_within(buckets: dict[float, float], edge: float) -> float | None:
    """The share of observations at most `edge` (an edge of the histogram: exact)."""
    total = buckets.get(float("inf"), 0.0)
    if total <= 0:
        return None
    return buckets[edge] / total


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def call_rows(cluster: PgCluster, database: str, prefix: str) -> list[dict[str, object]]:
    """The call records of the calls that dialled `prefix`..., as JSON objects."""
    if not prefix.isdigit():
        raise ValueError("a drill prefix is digits")
    out = cluster.psql(
        "SELECT row_to_json(c) FROM (SELECT uniqueid, queue, visit, campaign, outcome,"  # noqa: S608 (digits only, checked above)
        " answered_by, wait_s, talk_s, entered_at, answered_at, ended_at, rolled_over"
        f" FROM hotline.calls WHERE campaign LIKE '{prefix}%') c",
        database,
    )
    return [json.loads(line) for line in out.splitlines() if line.strip()]
