"""The partner centre's metrics: calls rolled over to it counted by result, once per visit, from
the call records the ledger reports; and its trunk's reachability from ContactStatus events."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hotline.adapters.metrics.flow import CallFlow
from hotline.adapters.metrics.partner import PartnerCollector
from hotline.config import QueueService
from hotline.core.phones import PhoneBook
from hotline.core.records import CallRecord, Outcome, PartnerResult

T0 = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)


def _partner_calls(flow: CallFlow) -> dict[tuple[str, str], float]:
    return {
        (s.labels["queue"], s.labels["result"]): s.value
        for family in text_string_to_metric_families(flow.render())
        for s in family.samples
        if s.name == "hotline_partner_calls_total"
    }


def _visit(
    visit: int, revision: int, outcome: Outcome, partner: PartnerResult | None = None
) -> CallRecord:
    """A closed visit; rolled over unless answered here."""
    return CallRecord(
        "1796.1",
        "crisis",
        visit,
        T0,
        outcome=outcome,
        rolled_over=outcome is not Outcome.ANSWERED,
        rank=4,
        revision=revision,
        partner_result=partner,
    )


def test_partner_results_are_counted_once_per_visit_even_when_reported_after_it_closed() -> None:
    flow = CallFlow(CollectorRegistry(), {"crisis": QueueService(20.0, 0.8, 30.0)})
    assert set(_partner_calls(flow).values()) == {0.0}  # every result exists from the start
    assert {r for _, r in _partner_calls(flow)} == {r.value for r in PartnerResult}

    flow.call(_visit(1, 1, Outcome.JOINEMPTY), 0.0)
    flow.call(_visit(1, 2, Outcome.JOINEMPTY, PartnerResult.UNAVAILABLE), 1.0)
    flow.call(_visit(1, 3, Outcome.JOINEMPTY, PartnerResult.UNAVAILABLE), 2.0)  # replayed
    flow.call(_visit(2, 1, Outcome.ANSWERED), 30.0)
    flow.call(_visit(3, 1, Outcome.TIMEOUT), 40.0)
    flow.call(_visit(3, 2, Outcome.ROLLOVER, PartnerResult.ANSWERED), 90.0)

    counted = {k: v for k, v in _partner_calls(flow).items() if v}
    assert counted == {("crisis", "unavailable"): 1.0, ("crisis", "answered"): 1.0}


def _reachable(book: PhoneBook) -> list[float]:
    registry = CollectorRegistry()
    registry.register(PartnerCollector(book))
    text = generate_latest(registry).decode()
    return [
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "hotline_partner_reachable"
    ]


def test_the_partner_trunk_is_reachable_as_its_contact_status_says_and_unknown_until_then() -> None:
    book = PhoneBook({}, ["crisis"])
    assert _reachable(book) == []
    book.on_event("ContactStatus", {"EndpointName": "partner", "ContactStatus": "Reachable"})
    assert _reachable(book) == [1.0]
    book.on_event("ContactStatus", {"EndpointName": "1001", "ContactStatus": "Unreachable"})
    assert _reachable(book) == [1.0]  # another endpoint's contact
    book.on_event("ContactStatus", {"EndpointName": "partner", "ContactStatus": "Unreachable"})
    assert _reachable(book) == [0.0]
    book.on_event("ContactStatus", {"EndpointName": "partner", "ContactStatus": "Updated"})
    assert _reachable(book) == [0.0]  # says nothing new
