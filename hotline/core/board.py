"""The supervisors' live board, pure: each queue now (callers waiting, members by state and for how
long, pauses over their limit), who is scheduled now and at the next change of the plan, coverage
against `min_responders`, and the open overrides, as a JSON-ready dict for the API and the console.

Callers appear only as their waits: never a number, a pseudonym or a channel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Final

from hotline.core.queuestate import QueueDetail
from hotline.core.roster import ExceptionKind, Override, Roster, desired_at, explain, next_change

# Members in these states can take a call now or soon: they count towards min_responders.
_PRESENT: Final = frozenset({"available", "ringing", "in_call", "wrapup"})


@dataclass(frozen=True, slots=True)
class Schedule:
    """Who the roster puts in each queue from `start` until its next change `until` (None:
    never), and who at that change: the same for every instant in between, so the board can
    reuse it (`holds`) instead of explaining the roster every second."""

    roster: Roster
    surging: frozenset[str]
    start: datetime
    until: datetime | None
    now: Mapping[str, Mapping[str, list[str]]]  # queue -> why (shift, override_on...) -> ids
    next: Mapping[str, list[str]]  # queue -> responder ids at `until`

    def holds(self, roster: Roster, surging: frozenset[str], at: datetime) -> bool:
        """Whether this schedule is the roster's at `at`."""
        return (
            roster is self.roster
            and surging == self.surging
            and self.start <= at
            and (self.until is None or at < self.until)
        )


def schedule(roster: Roster, at: datetime, surging: frozenset[str]) -> Schedule:
    standings = explain(roster, at, surging, members_only=True)
    upcoming = next_change(roster, at)
    later = desired_at(roster, upcoming, surging) if upcoming is not None else {}
    now: dict[str, dict[str, list[str]]] = {queue: {} for queue in standings}
    for queue, found in standings.items():
        for standing in found:
            if standing.member is not None:
                now[queue].setdefault(standing.why, []).append(standing.responder)
    return Schedule(roster, surging, at, upcoming, now, {q: sorted(m) for q, m in later.items()})


def build_board(
    details: Mapping[str, QueueDetail],
    plan: Schedule,
    at: datetime,
    *,
    pause_limits: Mapping[str, float | None],
    wall: float,
) -> dict[str, object]:
    """The board at `at` (aware, on the roster's clock; `plan` must hold at `at`) and at `wall`
    (epoch seconds, the clock of the times in `details`, which durations are measured on).
    `pause_limits`: each configured pause reason's maximum in seconds, or None for no limit."""
    now = wall
    roster, surging, upcoming = plan.roster, plan.surging, plan.until
    tz = roster.tz
    next_at = upcoming.astimezone(tz).isoformat() if upcoming is not None else None
    queues: list[dict[str, object]] = []
    for queue, policy in roster.queues.items():
        detail = details.get(queue, QueueDetail((), ()))
        members: list[dict[str, object]] = []
        present = 0
        # Whole seconds, and the fewest keys that say it all: the board is sent every second
        # to every console, with thousands of members on a large line.
        # The pause's reason and length only while paused.
        for _interface, name, state, since, reason, paused_since in detail.members:
            present += state in _PRESENT
            shown: dict[str, object] = {
                "responder": name,
                "state": state,
                "for_s": max(0, int(now - since)) if since else None,
                "over_limit": False,
            }
            if paused_since is not None:
                paused_for = max(0, int(now - paused_since))
                limit = pause_limits.get(reason or "")
                shown["over_limit"] = limit is not None and paused_for > limit
                shown["paused_reason"] = reason
                shown["paused_for_s"] = paused_for
            members.append(shown)
        queues.append(
            {
                "name": queue,
                "callers": {
                    "waiting": len(detail.waits_s),
                    "longest_wait_s": int(detail.waits_s[0]) if detail.waits_s else 0,
                    "waits_s": [int(wait) for wait in detail.waits_s],
                },
                "min_responders": policy.min_responders,
                "present": present,
                "covered": present >= policy.min_responders,
                "surging": queue in surging,
                "members": members,
                "scheduled_now": plan.now.get(queue, {}),
                "next_change": {"at": next_at, "responders": plan.next.get(queue, [])},
            }
        )
    return {
        "at": at.astimezone(tz).isoformat(),
        "queues": queues,
        "overrides": overrides_json(roster.overrides, at, tz),
    }


def overrides_json(
    overrides: Sequence[Override], at: datetime, tz: tzinfo
) -> list[dict[str, object]]:
    """The overrides that have not ended at `at`, soonest end first."""
    open_ = sorted((o for o in overrides if o.end > at), key=lambda o: (o.end, o.id))
    return [override_json(o, tz) for o in open_]


def override_json(override: Override, tz: tzinfo) -> dict[str, object]:
    return {
        "id": override.id,
        "responder": override.responder,
        "on": override.kind is ExceptionKind.ON,
        "queues": sorted(override.queues) if override.queues is not None else None,
        "start": override.start.astimezone(tz).isoformat(),
        "end": override.end.astimezone(tz).isoformat(),
    }
