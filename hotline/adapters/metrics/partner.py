"""Whether the partner centre's trunk can be reached, at scrape time: PJSIP's qualify of endpoint
`partner`, as the ContactStatus events kept in the phone book report it (docs/metrics.md,
"Rollover to the partner centre"). The partner's call results are counted with the call flow
(flow.py, hotline_partner_calls_total). Memory only, no awaits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hotline.core.phones import PhoneState

# The interface the rollover dials: CRISIS_ROLLOVER in asterisk-config/extensions.conf, the
# endpoint the site renders from pjsip.conf's partner templates.
PARTNER_INTERFACE: Final = "PJSIP/partner"


class Contacts(Protocol):
    """What is known of a PJSIP endpoint's contacts (hotline.core.phones.PhoneBook)."""

    def state(self, interface: str) -> PhoneState: ...


class PartnerCollector(Collector):
    def __init__(self, contacts: Contacts) -> None:
        self.contacts = contacts

    def collect(self) -> Iterator[Metric]:
        reachable = GaugeMetricFamily(
            "hotline_partner_reachable",
            "1 if the partner centre's trunk (endpoint partner) answers PJSIP's qualify, 0 if it "
            "does not; absent until Asterisk has reported its contact since hotline started",
        )
        state = self.contacts.state(PARTNER_INTERFACE)
        if state != "unknown":
            reachable.add_metric([], 0 if state == "unreachable" else 1)
        yield reachable
