"""Queue state at scrape time, from the live model that AMI events keep current: callers waiting,
the longest wait, members by state, configuration, and the responders Erlang C requires. Memory
only, no awaits: the scrape runs on the event loop."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hotline.adapters.metrics.flow import CallFlow
from hotline.config import QueueService
from hotline.core import staffing
from hotline.core.queuestate import STATES, QueueBoard

# Erlang C at 2,000 responders costs about a millisecond and its inputs move slowly: each queue's
# requirement is recomputed at most this often.
_STAFFING_EVERY_S = 15.0


class QueueCollector(Collector):
    """Queue gauges computed at scrape time from the live model: memory only, no awaits."""

    def __init__(
        self,
        board: QueueBoard,
        flow: CallFlow,
        service: Mapping[str, QueueService],
        clock: Callable[[], float],
    ) -> None:
        self.board = board
        self.flow = flow
        self.service = service
        self.clock = clock
        self._staffing: dict[str, tuple[float, int]] = {}

    def _required(self, queue: str, now: float) -> int:
        cached = self._staffing.get(queue)
        if cached is not None and now - cached[0] < _STAFFING_EVERY_S:
            return cached[1]
        target = self.service[queue]
        rate, talk = self.flow.load(queue, now)
        agents = (
            staffing.required(rate, talk, target.sl_seconds, target.sl_target).agents if talk else 0
        )
        self._staffing[queue] = (now, agents)
        return agents

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        views = self.board.view(now)
        callers = GaugeMetricFamily(
            "hotline_queue_callers", "Callers waiting now", labels=["queue"]
        )
        longest = GaugeMetricFamily(
            "hotline_queue_longest_wait_seconds",
            "Wait so far of the caller waiting longest; 0 when nobody waits",
            labels=["queue"],
        )
        members = GaugeMetricFamily(
            "hotline_queue_members",
            "Members by state (exclusive states)",
            labels=["queue", "state"],
        )
        logged_in = GaugeMetricFamily(
            "hotline_queue_members_logged_in",
            "Members present in the queue (any kind, any state)",
            labels=["queue"],
        )
        info = GaugeMetricFamily(
            "hotline_queue_info",
            "Queue configuration",
            labels=["queue", "strategy", "servicelevel_seconds"],
        )
        required = GaugeMetricFamily(
            "hotline_staffing_required_agents",
            "Responders Erlang C requires for the queue's service-level target, from the "
            "trailing 30 min arrival rate and mean talk time",
            labels=["queue", "target"],
        )
        for queue, view in views.items():
            callers.add_metric([queue], view.callers)
            longest.add_metric([queue], view.longest_wait_s)
            for state in STATES:
                members.add_metric([queue, state], view.members[state])
            logged_in.add_metric([queue], view.logged_in)
            target = self.service[queue]
            info.add_metric([queue, view.strategy, f"{target.sl_seconds:g}"], 1)
            label = f"{round(target.sl_target * 100)}_{target.sl_seconds:g}"
            required.add_metric([queue, label], self._required(queue, now))
        yield from (callers, longest, members, logged_in, info, required)
