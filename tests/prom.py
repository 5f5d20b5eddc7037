"""Test harness: a real Prometheus (Debian's /usr/bin/prometheus) of the test's own, on a free
loopback port with a throwaway TSDB, scraping one target as job "hotline" with hotline's rule
files loaded; and every PromQL expression of those rule files and of the Grafana dashboard, with
the dashboard's template variables filled in, ready to check against it.

    async with Prometheus(target="127.0.0.1:9470") as prom:   # or prom.start() / prom.stop()
        await prom.wait_for_scrape()
        for e in expressions():
            print(e.where, await prom.query(e.expr))

Lifecycle is synchronous (`start()`, `stop()`, `with`) or asynchronous (`async with`, which
starts Prometheus in a thread so that a daemon on the same event loop keeps answering scrapes).
Queries are coroutines (aiohttp). If Prometheus cannot start, `PromError` says why: tests must
fail, never skip, when Prometheus is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiohttp
import yaml

from tests.harness import wait_for

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RECORDING_RULES = PROMETHEUS_DIR / "recording-rules.yml"
ALERT_RULES = PROMETHEUS_DIR / "alert-rules.yml"
RULE_FILES = (RECORDING_RULES, ALERT_RULES)
DASHBOARD = REPO / "deploy" / "grafana" / "hotline-dashboard.json"
JOB = "hotline"  # the alert rules and the dashboard select job="hotline"
READY_WITHIN_S = 30.0
STOP_WITHIN_S = 10.0

# What the dashboard's template variables stand for when its expressions are checked: every
# queue, and Grafana's built-in intervals at plausible values.
TEMPLATE_VARIABLES: dict[str, str] = {
    "queue": ".*",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__interval_ms": "15000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

T = TypeVar("T")
Json = dict[str, Any]


class PromError(RuntimeError):
    """Prometheus could not start, or refused a request; the message says why."""


class PromQueryError(PromError):
    """Prometheus refused an expression: `error_type` is e.g. "bad_data" (a parse error), and
    `error` Prometheus's own text."""

    def __init__(self, expr: str, error_type: str, error: str) -> None:
        super().__init__(f"{error_type}: {error}\n  in: {expr}")
        self.expr = expr
        self.error_type = error_type
        self.error = error


def binary(name: Literal["prometheus", "promtool"]) -> Path:
    """Debian's `prometheus` package provides both binaries in /usr/bin."""
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else "")
    if not found:
        raise PromError(
            f"{name} not found on PATH or in /usr/bin: run deploy/setup-host.sh, which installs"
            " Debian's `prometheus` package"
        )
    return Path(found)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def duration(seconds: float) -> str:
    """A Prometheus duration: 1.0 -> "1000ms"."""
    return f"{round(seconds * 1000)}ms"


class Prometheus:
    """A Prometheus of its own that scrapes `target` (host:port, or None for none) as job
    "hotline" every `scrape_interval` seconds and evaluates `rule_files`.

    Unless `keep_group_intervals`, the rule files are loaded from copies whose groups all
    evaluate every `evaluation_interval` seconds (the real files give the KPI group 30 s), so
    that recorded series and alerts show up within seconds of the first scrapes; the
    expressions and `for:` durations are unchanged.
    """

    def __init__(
        self,
        target: str | None = None,
        rule_files: Sequence[Path] = RULE_FILES,
        *,
        scrape_interval: float = 1.0,
        evaluation_interval: float = 1.0,
        keep_group_intervals: bool = False,
        job: str = JOB,
        port: int | None = None,
        base: Path | None = None,
    ) -> None:
        self.bin = binary("prometheus")
        self.target = target
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.keep_group_intervals = keep_group_intervals
        self.job = job
        self.port = port or free_port()
        self._base = base
        self.root: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        if self.root is None:
            raise PromError("Prometheus has not been started")
        return self.root / "prometheus.log"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, within: float = READY_WITHIN_S) -> None:
        """Write the configuration, start Prometheus and wait until `/-/ready` answers 200."""
        if self._proc is not None:
            raise PromError("Prometheus is already running")
        for rule_file in self.rule_files:
            if not rule_file.is_file():
                raise PromError(f"rule file {rule_file} does not exist")
        self.root = Path(tempfile.mkdtemp(prefix="hotline-prom-", dir=self._base))
        config = self.root / "prometheus.yml"
        config.write_text(yaml.safe_dump(self._config(), sort_keys=False))
        with self.log.open("wb") as log:
            self._proc = subprocess.Popen(
                [
                    str(self.bin),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1d",
                    "--log.level=info",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,  # a Ctrl-C to pytest reaches us first; we stop it
            )
        try:
            self._wait_ready(within)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, within: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + within
        last = "no answer yet"
        while True:
            if self._proc.poll() is not None:
                raise PromError(
                    f"Prometheus exited with status {self._proc.returncode} before it was"
                    f" ready; its log:\n{self.log_tail()}"
                )
            try:
                # S310: the URL is always http://127.0.0.1:<port>, never a caller's input.
                ready = f"{self.url}/-/ready"
                with urllib.request.urlopen(ready, timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:  # 503 while the TSDB opens
                last = f"HTTP {exc.code}"
            except OSError as exc:  # not listening yet
                last = str(exc)
            if time.monotonic() > deadline:
                raise PromError(
                    f"Prometheus was not ready on {self.url} within {within} s ({last});"
                    f" its log:\n{self.log_tail()}"
                )
            time.sleep(0.05)  # between polls of a condition that has a deadline

    def stop(self) -> None:
        """Stop Prometheus (SIGTERM, then SIGKILL) and remove its directory."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_WITHIN_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, PromError) as exc:
            return f"(no log: {exc})"

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Prometheus:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    def _config(self) -> Json:
        assert self.root is not None
        rule_files = self.rule_files
        if not self.keep_group_intervals:
            rule_files = [self._retimed(p) for p in self.rule_files]
        scrape_configs: list[Json] = []
        if self.target is not None:
            scrape_configs.append(
                {"job_name": self.job, "static_configs": [{"targets": [self.target]}]}
            )
        return {
            "global": {
                "scrape_interval": duration(self.scrape_interval),
                "scrape_timeout": duration(self.scrape_interval),
                "evaluation_interval": duration(self.evaluation_interval),
            },
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": scrape_configs,
        }

    def _retimed(self, rule_file: Path) -> Path:
        assert self.root is not None
        content = yaml.safe_load(rule_file.read_text())
        for group in content.get("groups") or []:
            group["interval"] = duration(self.evaluation_interval)
        copy = self.root / "rules" / rule_file.name
        copy.parent.mkdir(exist_ok=True)
        copy.write_text(yaml.safe_dump(content, sort_keys=False))
        return copy

    # -- HTTP API (coroutines) ---------------------------------------------------------------

    async def _api(self, path: str, params: dict[str, str] | None = None) -> Any:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(f"{self.url}{path}", params=params) as response,
        ):
            text = await response.text()
        try:
            body = json.loads(text)
        except ValueError:
            raise PromError(f"GET {path}: HTTP {response.status}, not JSON: {text[:500]}") from None
        if body.get("status") != "success":
            error_type, error = str(body.get("errorType")), str(body.get("error"))
            if params is not None and "query" in params:
                raise PromQueryError(params["query"], error_type, error)
            raise PromError(f"GET {path}: HTTP {response.status}, {error_type}: {error}")
        return body["data"]

    async def query(self, expr: str, at: float | None = None) -> list[Json]:
        """An instant query (at `at`, a Unix time, default now). Returns the samples:
        `[{"metric": {...}, "value": [time, "value"]}, ...]`; a scalar or string result comes
        back as one sample with no labels. Raises PromQueryError with Prometheus's error text
        if the expression does not parse or cannot be evaluated."""
        params = {"query": expr}
        if at is not None:
            params["time"] = repr(at)
        data = await self._api("/api/v1/query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    async def values(self, expr: str) -> dict[frozenset[tuple[str, str]], float]:
        """An instant query as {labels: value}: `{frozenset({("queue", "crisis")}): 2.0}`."""
        return {
            frozenset(sample["metric"].items()): float(sample["value"][1])
            for sample in await self.query(expr)
        }

    async def alerts(self) -> list[Json]:
        """Active alerts (pending and firing): `[{"labels", "annotations", "state", "value",
        "activeAt"}, ...]`."""
        data = await self._api("/api/v1/alerts")
        return list(data["alerts"])

    async def rules(self, kind: Literal["alert", "record"] | None = None) -> list[Json]:
        """Every loaded rule, flattened, each with its group's name added as "group": `name`,
        `query`, `health` ("ok", "err", "unknown"), `lastError`, `lastEvaluation`, `type`
        ("alerting" or "recording") and, for alerts, `state` and `alerts`."""
        params: dict[str, str] | None = {"type": kind} if kind else None
        data = await self._api("/api/v1/rules", params)
        return [
            {**rule, "group": group["name"]} for group in data["groups"] for rule in group["rules"]
        ]

    async def targets(self) -> list[Json]:
        """The active scrape targets: `health` ("up", "down", "unknown"), `lastError`, ..."""
        data = await self._api("/api/v1/targets", {"state": "active"})
        return list(data["activeTargets"])

    # -- waiting -------------------------------------------------------------------------------

    async def wait_for_data(self, expr: str, within: float = 30.0) -> list[Json]:
        """Poll an instant query until it returns at least one sample; its samples."""
        return await _poll(
            lambda: self.query(expr), bool, within, f"data from {expr!r}", self.log_tail
        )

    async def wait_for_scrape(self, within: float = 30.0) -> None:
        """Wait until the target has been scraped successfully (`up == 1`). The first scrape
        comes about 5 s after start: Prometheus's service discovery hands targets to the
        scrape loop on a 5 s tick, even static ones."""
        if self.target is None:
            raise PromError("this Prometheus has no scrape target")
        await self.wait_for_data(f'up{{job="{self.job}"}} == 1', within)

    async def wait_for_rules_evaluated(self, within: float = 30.0) -> list[Json]:
        """Wait until every loaded rule has been evaluated at least once; the rules."""

        def evaluated(rules: list[Json]) -> bool:
            return bool(rules) and all(r["health"] != "unknown" for r in rules)

        return await _poll(self.rules, evaluated, within, "every rule evaluated", self.log_tail)


async def _poll(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    within: float,
    what: str,
    log_tail: Callable[[], str],
) -> T:
    """harness.wait_for, with Prometheus' own log in the failure."""
    try:
        return await wait_for(probe, accept, within, what, interval=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; Prometheus log:\n{log_tail()}") from None


# -- the expressions to check ---------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """One PromQL expression: where it comes from, as written, and as Prometheus gets it."""

    where: str  # "alert-rules.yml: alert HotlineBlind", "dashboard: panel 'Longest wait' A"
    raw: str
    expr: str

    def __str__(self) -> str:
        return self.where


_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")


def substitute(expr: str, variables: dict[str, str] = TEMPLATE_VARIABLES) -> str:
    """Fill in Grafana template variables ($name, ${name}, ${name:format}, [[name]]); an
    unknown variable is an error, not a silent pass."""

    def one(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group is not None)
        if name not in variables:
            raise PromError(f"unknown template variable {match.group(0)} in: {expr}")
        return variables[name]

    return _VARIABLE.sub(one, expr)


def rule_expressions(rule_files: Sequence[Path] = RULE_FILES) -> list[Expression]:
    """Every recording and alert rule's expression."""
    found = []
    for rule_file in rule_files:
        content = yaml.safe_load(rule_file.read_text())
        for group in content["groups"]:
            for rule in group["rules"]:
                kind, name = (
                    ("alert", rule["alert"]) if "alert" in rule else ("record", rule["record"])
                )
                expr = str(rule["expr"]).strip()
                found.append(Expression(f"{rule_file.name}: {kind} {name}", expr, expr))
    return found


def panels(dashboard: Json) -> Iterator[Json]:
    """Every panel of a dashboard, rows included, and the panels inside collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions(
    dashboard_file: Path = DASHBOARD, variables: dict[str, str] = TEMPLATE_VARIABLES
) -> list[Expression]:
    """Every panel target's expression, every Prometheus annotation's, and the metric behind
    every `label_values(metric, label)` template variable, with the variables filled in."""
    dashboard = json.loads(dashboard_file.read_text())
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            raw = str(target.get("expr", ""))
            where = f"dashboard: panel {panel.get('title')!r} {target.get('refId')}"
            found.append(Expression(where, raw, substitute(raw, variables)))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if "expr" in annotation:
            raw = str(annotation["expr"])
            where = f"dashboard: annotation {annotation.get('name')!r}"
            found.append(Expression(where, raw, substitute(raw, variables)))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = str(query.get("query", "") if isinstance(query, dict) else query)
        match = re.fullmatch(r"\s*label_values\((.+),\s*\w+\s*\)\s*", text)
        if match:
            raw = match.group(1)
            where = f"dashboard: variable {variable.get('name')!r}"
            found.append(Expression(where, raw, substitute(raw, variables)))
    return found


def expressions() -> list[Expression]:
    """Every expression to check: recording rules, alerts, then the dashboard's."""
    return [*rule_expressions(), *dashboard_expressions()]
