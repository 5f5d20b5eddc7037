"""The plan at an instant as JSON, one contract for `hotline plan --json` and the API's plan
endpoint: each queue's members with why they are in, the responders who serve it but are not in
with why not, the minimums, the overrides the plan applied, and the next change.

Fields are only ever added, never renamed: scripts read `at` and `queues` with each member's
`responder`, `interface` and `penalty` (the first version's contract)."""

from __future__ import annotations

from datetime import datetime

from hotline.core.roster import Override, Roster, explain, next_change


def plan_json(
    roster: Roster, at: datetime, surging: frozenset[str] = frozenset()
) -> dict[str, object]:
    """The plan at `at` (aware) with the roster's overrides, `surging` queues adding their
    standby responders; instants in the roster's zone."""
    tz = roster.tz
    standings = explain(roster, at, surging)
    queues: dict[str, list[dict[str, object]]] = {}
    excluded: dict[str, list[dict[str, object]]] = {}
    for queue in roster.queues:
        found = sorted(standings.get(queue, ()), key=lambda s: s.responder)
        queues[queue] = [
            {
                "responder": s.responder,
                "interface": s.member.interface,
                "penalty": s.member.penalty,
                "why": s.why,
            }
            for s in found
            if s.member is not None
        ]
        excluded[queue] = [
            {"responder": s.responder, "why": s.why, "lacking": list(s.lacking)}
            for s in found
            if s.member is None
        ]
    change = next_change(roster, at)
    policies = roster.queues
    ahead = sorted((o for o in roster.overrides if o.end > at), key=lambda o: (o.start, o.id))
    return {
        "at": at.astimezone(tz).isoformat(),
        "queues": queues,
        "excluded": excluded,
        "min_responders": {name: policy.min_responders for name, policy in policies.items()},
        "below_minimum": [
            name for name, policy in policies.items() if len(queues[name]) < policy.min_responders
        ],
        "surging": sorted(surging & policies.keys()),
        "overrides": [override_json(o, roster) for o in ahead],
        "next_change": change.astimezone(tz).isoformat() if change is not None else None,
    }


def override_json(override: Override, roster: Roster) -> dict[str, object]:
    """One override as the plan and the API show it; instants in the roster's zone."""
    tz = roster.tz
    return {
        "id": override.id,
        "responder": override.responder,
        "kind": override.kind.value,
        "queues": sorted(override.queues) if override.queues is not None else None,
        "start": override.start.astimezone(tz).isoformat(),
        "end": override.end.astimezone(tz).isoformat(),
    }
