"""Training-gated eligibility against the real development PBX, on a driven clock: a responder
whose certification lapses at T is a member before T and out within 2 s after it, one who lacks
the certification is never added, and the daemon's metrics count the lapse ahead and the
coverage gap it opens, and follow an override at once."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from prometheus_client.parser import text_string_to_metric_families

from hotline.core.roster import ExceptionKind, Override
from hotline.daemon import Daemon
from tests.conftest import StartDaemon
from tests.harness import AmiTestClient, ManualClock, local, wait_for

NY = ZoneInfo("America/New_York")
LAPSE = datetime(2026, 12, 2, 12, 0, tzinfo=NY)  # T
BEFORE = datetime(2026, 12, 2, 11, 59, 50, tzinfo=NY)

ROSTER = f"""
timezone: America/New_York
queues:
  crisis: {{min_responders: 1}}
  spanish: {{min_responders: 2, requires: [spanish-line]}}
responders:
  r-ana: {{name: Ana, interface: "{local(1001)}", queues: {{crisis: 0, spanish: 0}},
          certifications: {{spanish-line: "2026-12-02T12:00"}}}}
  r-ben: {{name: Ben, interface: "{local(1002)}", queues: {{crisis: 0, spanish: 0}}}}
  r-cai: {{name: Cai, interface: "{local(1003)}", queues: {{spanish: 1}},
          certifications: {{spanish-line: 2027-06-30}}}}
shifts:
  - {{name: day, days: [daily], start: "08:00", end: "20:00", responders: [r-ana, r-ben, r-cai]}}
"""
OFF = ExceptionKind.OFF
CERTIFIED = {"crisis": ["r-ana", "r-ben"], "spanish": ["r-ana", "r-cai"]}
LAPSED = {"crisis": ["r-ana", "r-ben"], "spanish": ["r-cai"]}


def samples(hotline: Daemon, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The daemon's samples of metric `name`, by their sorted labels."""
    text = hotline.exposition().decode()
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def test_a_lapsing_certification_takes_the_responder_out_within_two_seconds_of_it(
    ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    clock = ManualClock(BEFORE)
    hotline = await start_daemon(ROSTER, clock)
    await wait_for(ami.names, lambda n: n == CERTIFIED, 5, "Ana and Cai in spanish")

    # Ten seconds before T: the lapse is counted, and the gap it opens in spanish (two needed,
    # Cai alone from T) is ten seconds away.
    assert samples(hotline, "hotline_certifications_lapsing") == {
        (("certification", "spanish-line"),): 1.0
    }

    async def spanish_gap() -> float | None:
        key = (("queue", "spanish"), ("short_of", "minimum"))
        return samples(hotline, "hotline_coverage_next_gap_seconds").get(key)

    await wait_for(spanish_gap, lambda s: s == 10.0, 5, "the gap at T, 10 s ahead")

    clock.set(LAPSE)
    await wait_for(ami.names, lambda n: n == LAPSED, 2, "Ana out of spanish within 2 s of T")
    await wait_for(spanish_gap, lambda s: s == 0.0, 5, "the gap under way")
    assert samples(hotline, "hotline_certifications_lapsing") == {
        (("certification", "spanish-line"),): 0.0
    }

    # Ben, who never held the certification, was never added to spanish, nor Ana after T.
    added = [
        (event.fields.get("Queue"), event.fields.get("MemberName"))
        for event in ami.events
        if event.name == "QueueMemberAdded"
    ]
    assert ("spanish", "r-ana") in added  # the events are seen
    assert ("spanish", "r-ben") not in added
    assert added.count(("spanish", "r-ana")) == 1


async def test_the_coverage_gap_metric_follows_an_override_within_a_second(
    ami: AmiTestClient, start_daemon: StartDaemon
) -> None:
    clock = ManualClock(BEFORE)
    hotline = await start_daemon(ROSTER, clock)
    await wait_for(ami.names, lambda n: n == CERTIFIED, 5, "the day shift")

    async def crisis_gap() -> float | None:
        key = (("queue", "crisis"), ("short_of", "minimum"))
        return samples(hotline, "hotline_coverage_next_gap_seconds").get(key)

    # Crisis is covered until the day shift ends at 20:00, 8 h and 10 s ahead.
    await wait_for(crisis_gap, lambda s: s == 8 * 3600 + 10, 5, "the gap at 20:00")
    off = [
        Override(n, rid, LAPSE + timedelta(hours=1), LAPSE + timedelta(hours=2), OFF, None)
        for n, rid in enumerate(("r-ana", "r-ben"))
    ]
    hotline.keeper.set_overrides(tuple(off))
    await wait_for(crisis_gap, lambda s: s == 3600 + 10, 2, "the gap the overrides open")
