"""The load forecast: how many calls each queue can expect in each 15-minute slot of a week, and
how long each one keeps a responder busy. Built from the call records of the trailing weeks
(docs/reports.md, "Forecast"), for the coverage look-ahead's staffing requirement.

Slots are local wall-clock slots in the roster's zone: slot 0 of a Monday is 00:00-00:15 local
time on a Monday. A slot that a DST change skips has no history; one it repeats counts both
passes, which is the load a wall-clock roster has to cover at that time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Final

SLOT: Final = timedelta(minutes=15)
SLOTS_PER_DAY: Final = 96
_SLOT_MINUTES: Final = 15


def slot_of(local: datetime) -> tuple[int, int]:
    """(weekday Mon=0, slot 0..95) of a local wall-clock time."""
    return local.weekday(), (local.hour * 60 + local.minute) // _SLOT_MINUTES


@dataclass(frozen=True, slots=True)
class SlotHistory:
    """What the records hold for one queue and one local weekday slot, summed over the weeks
    read: the rows the store reads for the forecast."""

    queue: str
    weekday: int  # Mon=0
    slot: int  # 0..95
    offered: int  # calls that entered the queue in this slot
    answered: int  # of those, answered
    talk_s: float  # their total talk time


@dataclass(frozen=True, slots=True)
class Forecast:
    # queue -> (local weekday Mon=0, slot 0..95) -> expected calls in that slot; slots without
    # history are absent (calls() gives them the floor).
    arrivals: Mapping[str, Mapping[tuple[int, int], float]]
    handle_s: Mapping[str, float]  # queue -> mean talk seconds + the queue's wrap-up
    floor: float  # expected calls in a slot without history

    def calls(self, queue: str, weekday: int, slot: int) -> float:
        """Expected calls in a slot: the history's mean, never below the floor."""
        return max(self.arrivals.get(queue, {}).get((weekday, slot), 0.0), self.floor)


def build_forecast(
    history: Iterable[SlotHistory],
    *,
    weeks: int,
    floor: float,
    wrapup: Mapping[str, float],
    default_talk_s: float,
) -> Forecast:
    """The forecast from `weeks` weeks of history. `wrapup` maps every configured queue to its
    wrap-up seconds; a queue that answered no call in the history is given `default_talk_s`."""
    if weeks < 1:
        raise ValueError("weeks must be at least 1")
    arrivals: dict[str, dict[tuple[int, int], float]] = defaultdict(dict)
    answered: dict[str, int] = defaultdict(int)
    talk: dict[str, float] = defaultdict(float)
    for row in history:
        if row.queue not in wrapup:  # a queue since removed from the configuration
            continue
        key = (row.weekday, row.slot)
        arrivals[row.queue][key] = arrivals[row.queue].get(key, 0.0) + row.offered / weeks
        answered[row.queue] += row.answered
        talk[row.queue] += row.talk_s
    handle_s = {
        queue: (talk[queue] / answered[queue] if answered[queue] else default_talk_s) + seconds
        for queue, seconds in wrapup.items()
    }
    return Forecast(
        arrivals=MappingProxyType(
            {queue: MappingProxyType(slots) for queue, slots in arrivals.items()}
        ),
        handle_s=MappingProxyType(handle_s),
        floor=floor,
    )
