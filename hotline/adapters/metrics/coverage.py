"""The coverage look-ahead and the certifications about to lapse, at scrape time
(docs/staffing.md; docs/metrics.md). CoverageMetrics is the observer
`hotline.app.coverage.CoverageWatch` reports to; it keeps the latest look-ahead and renders it
against the daemon's clock at each scrape, so "seconds until" is never stale.

- `hotline_coverage_next_gap_seconds{queue, short_of}`: seconds until the next slot, within the
  next 72 h, in which the queue has fewer responders scheduled than its minimum
  (`short_of="minimum"`) or than the forecast load needs (`short_of="need"`); 0 while one is
  under way, +Inf when there is none within 72 h.
- `hotline_coverage_shortfall{queue, slot, short_of}`: for the coming week, the responders
  missing in each short slot; `slot` counts quarter hours from the current one ("000" to
  "671"), and slots without a shortfall have no series.
- `hotline_coverage_forecast_from_history`: 1 when the need comes from the call records, 0
  when from the floor forecast.
- `hotline_certifications_lapsing{certification}`: responders whose certification lapses within
  `roster_checks.certification_warn_days` days.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hotline.core.coverage import SHORT_OF, SLOT_S, Coverage, ForecastSource, lapsing, slot_floor
from hotline.core.roster import Roster

# How far ahead the next gap is looked for: the alert fires for one within 24 h.
NEXT_GAP_HORIZON = timedelta(hours=72)


class CoverageMetrics(Collector):
    def __init__(
        self,
        registry: CollectorRegistry,
        now: Callable[[], datetime],
        roster: Callable[[], Roster],
        lapsing_within: timedelta,
    ) -> None:
        self._now = now
        self._roster = roster
        self._lapsing_within = lapsing_within
        self._result: Coverage | None = None
        self._source: ForecastSource = "floor"
        registry.register(self)

    def coverage_computed(self, result: Coverage, source: ForecastSource) -> None:
        self._result, self._source = result, source

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Without this, registering would call collect() before the first look-ahead.
        return iter(())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        # Every family from the start, empty until the first look-ahead is computed.
        now = self._now()
        yield self._lapsing(now)
        result = self._result
        next_gap = GaugeMetricFamily(
            "hotline_coverage_next_gap_seconds",
            "Seconds until the next slot (within 72 h) with fewer responders scheduled than the"
            " queue's minimum or its forecast need; 0 during one, +Inf if none",
            labels=["queue", "short_of"],
        )
        horizon = now + NEXT_GAP_HORIZON
        queues = result.queues if result is not None else {}
        for queue, short_of in itertools.product(queues, SHORT_OF):
            start = result.first_short(queue, short_of, now) if result is not None else None
            seconds = (
                max(0.0, (start - now).total_seconds())
                if start is not None and start < horizon
                else math.inf
            )
            next_gap.add_metric([queue, short_of], seconds)
        yield next_gap
        yield self._shortfall(result, now)
        from_history = GaugeMetricFamily(
            "hotline_coverage_forecast_from_history",
            "1 when the coverage need comes from the call records, 0 from the floor forecast",
        )
        if result is not None:
            from_history.add_metric([], 1.0 if self._source == "history" else 0.0)
        yield from_history

    @staticmethod
    def _shortfall(result: Coverage | None, now: datetime) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "hotline_coverage_shortfall",
            "Responders missing in each short slot of the coming week; slot: quarter hours"
            " from the current one",
            labels=["queue", "slot", "short_of"],
        )
        if result is None:
            return family
        # The look-ahead is recomputed at every slot boundary; should a scrape come first, the
        # slots already past are left out and the rest keep their distance from now.
        first = max(0, int((slot_floor(now) - result.start).total_seconds()) // SLOT_S)
        for queue, covered in result.queues.items():
            for slot in range(first, result.slots):
                scheduled = covered.scheduled[slot]
                needed = max(covered.minimum, covered.needed[slot])
                if scheduled < needed:
                    short_of = "minimum" if scheduled < covered.minimum else "need"
                    label = f"{slot - first:03d}"
                    family.add_metric([queue, label, short_of], float(needed - scheduled))
        return family

    def _lapsing(self, now: datetime) -> GaugeMetricFamily:
        roster = self._roster()
        family = GaugeMetricFamily(
            "hotline_certifications_lapsing",
            "Responders whose certification lapses within roster_checks.certification_warn_days",
            labels=["certification"],
        )
        names = {c for q in roster.queues.values() for c in q.requires}
        names.update(c for r in roster.responders.values() for c in r.certifications)
        counts = dict.fromkeys(sorted(names), 0)
        for item in lapsing(roster, now, self._lapsing_within):
            counts[item.certification] += 1
        for name, count in counts.items():
            family.add_metric([name], float(count))
        return family
