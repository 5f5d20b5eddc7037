"""The coverage watch: the look-ahead (core/coverage.py) recomputed at start, whenever the roster
in force changes (a reload, a supervisor's override) and at every slot boundary, and handed to
an observer (the metrics). The forecast comes from the call records when the daemon has a
database and it answers, and is re-read once a day; otherwise it is the floor forecast
(docs/staffing.md, "Coverage look-ahead")."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import date, datetime, timedelta
from typing import Protocol

import structlog

from hotline.config import Config
from hotline.config.problems import MAX_PROBLEMS
from hotline.core.clock import Clock
from hotline.core.coverage import (
    Coverage,
    ForecastSource,
    Target,
    coverage,
    lapsing,
    short_rests,
    slot_floor,
)
from hotline.core.forecast import SLOT, SLOTS_PER_DAY, Forecast, build_forecast
from hotline.core.roster import Roster

log = structlog.get_logger("hotline.coverage")

# The look-ahead covers the coming week: what the dashboard shows.
WATCH_SLOTS = 7 * SLOTS_PER_DAY
# How often the roster in force is compared with the one last computed: an identity check.
_POLL_S = 1.0

ForecastLoader = Callable[[datetime], Awaitable[Forecast]]


class Observer(Protocol):
    def coverage_computed(self, result: Coverage, source: ForecastSource) -> None: ...


def floor_forecast(config: Config) -> Forecast:
    """The forecast without history: `reports.forecast_floor` calls in every slot, each taking
    `reports.forecast_talk_seconds` plus the queue's wrap-up."""
    return build_forecast(
        [],
        weeks=1,
        floor=config.reports.forecast_floor,
        wrapup={queue: service.wrapup_s for queue, service in config.service.items()},
        default_talk_s=config.reports.forecast_talk_s,
    )


def targets(config: Config) -> dict[str, Target]:
    """Each queue's service level, which the forecast need is computed for."""
    return {q: Target(s.sl_seconds, s.sl_target) for q, s in config.service.items()}


class CoverageWatch:
    def __init__(
        self,
        config: Config,
        roster: Callable[[], Roster],
        clock: Clock,
        observer: Observer,
        load_forecast: ForecastLoader | None,
        *,
        poll_s: float = _POLL_S,
    ) -> None:
        self._roster = roster
        self._clock = clock
        self._observer = observer
        self._load_forecast = load_forecast
        self._poll_s = poll_s
        # Service levels and wrap-up only change with a restart (config/live.py).
        self._targets: Mapping[str, Target] = targets(config)
        self._forecast = floor_forecast(config)
        self._source: ForecastSource = "floor"
        self._forecast_day: date | None = None
        self.computed = 0  # look-aheads computed, for tests

    async def run(self) -> None:
        while True:
            now = self._clock.now()
            await self._refresh_forecast(now)
            roster = self._roster()
            try:
                # Off the event loop: a large roster takes a good part of a second.
                result = await asyncio.to_thread(
                    coverage, roster, now, WATCH_SLOTS, self._forecast, self._targets
                )
            except Exception as exc:  # a bug here must not stop the daemon
                log.error("coverage_failed", error=type(exc).__name__)
            else:
                self._observer.coverage_computed(result, self._source)
                self.computed += 1
            boundary = slot_floor(now) + SLOT
            while self._roster() is roster and self._clock.now() < boundary:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_s):
                        await self._clock.sleep_until(boundary)

    async def _refresh_forecast(self, now: datetime) -> None:
        """Read the forecast once a (UTC) day; a failure keeps the previous one, or the floor,
        and is tried again at the next slot."""
        if self._load_forecast is None or self._forecast_day == now.date():
            return
        try:
            self._forecast = await self._load_forecast(now)
        except Exception as exc:  # whatever the store raises, the look-ahead goes on
            log.warning("coverage_forecast_unavailable", error=type(exc).__name__, reason=str(exc))
            return
        self._source = "history"
        self._forecast_day = now.date()


def roster_warnings(config: Config, now: datetime) -> list[str]:
    """check-config's warnings about the time ahead, one line each, by kind then soonest: the
    certifications that lapse within `roster_checks.certification_warn_days`, and the responders
    whose shifts leave them less than `roster_checks.min_rest_hours` of rest in the coming week
    (docs/staffing.md). At most MAX_PROBLEMS lines, then a count of the rest."""
    roster, checks = config.roster, config.roster_checks
    tz = roster.tz
    lines = [
        f"responders.{item.responder}.certifications.{item.certification}: lapses at"
        f" {_minute(item.lapses.astimezone(tz))}, in {_span(item.lapses - now)}"
        f" (roster_checks.certification_warn_days: {checks.certification_warn_days})"
        for item in lapsing(roster, now, timedelta(days=checks.certification_warn_days))
    ]
    if checks.min_rest_hours > 0:
        for rest in short_rests(roster, now, timedelta(hours=checks.min_rest_hours)):
            times = "once" if rest.count == 1 else f"{rest.count} times"
            lines.append(
                f"responders.{rest.responder}: {_span(rest.rest)} of rest between"
                f" {_minute(rest.end)} and {_minute(rest.next_start)}, less than"
                f" roster_checks.min_rest_hours ({checks.min_rest_hours:g} h); {times} in the"
                " coming week"
            )
    if len(lines) > MAX_PROBLEMS:
        more = len(lines) - MAX_PROBLEMS
        return [*lines[:MAX_PROBLEMS], f"... and {more} more warnings"]
    return lines


def _minute(at: datetime) -> str:
    return at.isoformat(timespec="minutes")


def _span(delay: timedelta) -> str:
    minutes = int(delay.total_seconds() // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return f"{days} d {hours} h {minutes:02d} min" if days else f"{hours} h {minutes:02d} min"
