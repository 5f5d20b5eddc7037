"""The AMI link: up, connection attempts and disconnects, actions and their round-trip time, the
last message received, malformed messages, actions refused before sending, inbox overflows, the
watchdog Ping's round trip and the AMI version Asterisk announces. LinkMetrics is the observer
`hotline.adapters.ami.AmiLink` reports to."""

from __future__ import annotations

import re
import time
from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from hotline.core.ami import ActionName, ConnectResult, DisconnectReason, RefusedReason, Result

# Actions we send keep their name; anything else is "other", so the label set stays bounded.
ActionLabel = Literal[ActionName, "other"]
_ACTION_LABEL: dict[str, ActionLabel] = {name: name for name in get_args(ActionName)}
# What a version label may hold; anything else in the banner is "unknown".
_VERSION = re.compile(r"[0-9]{1,4}(?:\.[0-9]{1,4}){0,3}")


class LinkMetrics:
    def __init__(self, registry: CollectorRegistry, synced: Gauge) -> None:
        r = registry
        # The membership keeper's "in sync" gauge: a link that goes down takes it to 0.
        self._synced = synced
        self.ami_up = Gauge(
            "hotline_ami_up", "1 when logged in to AMI and Asterisk is fully booted", registry=r
        )
        self.connect_attempts = Counter(
            "hotline_ami_connect_attempts",
            "AMI connection attempts by result",
            ["result"],
            registry=r,
        )
        for result in get_args(ConnectResult):
            self.connect_attempts.labels(result)
        self.disconnects = Counter(
            "hotline_ami_disconnects", "AMI sessions lost, by reason", ["reason"], registry=r
        )
        for reason in get_args(DisconnectReason):
            self.disconnects.labels(reason)
        self.last_message = Gauge(
            "hotline_ami_last_message_timestamp_seconds",
            "Time of the last AMI response or event received",
            registry=r,
        )
        self._last_message = 0.0
        self.last_message.set_function(lambda: self._last_message)
        self.malformed = Counter(
            "hotline_ami_malformed_messages",
            "AMI messages that could not be parsed or matched, dropped",
            registry=r,
        )
        self.refused = Counter(
            "hotline_ami_actions_refused",
            "AMI actions refused before sending: a header with a line break or NUL, or unencodable",
            ["reason"],
            registry=r,
        )
        for refused in get_args(RefusedReason):
            self.refused.labels(refused)
        self.inbox_overflows = Counter(
            "hotline_event_queue_overflows",
            "AMI events lost because the event queue was full (each forces a resync)",
            registry=r,
        )
        self.actions = Counter(
            "hotline_ami_actions",
            "AMI actions by action and result",
            ["action", "result"],
            registry=r,
        )
        self.action_seconds = Histogram(
            "hotline_ami_action_duration_seconds",
            "AMI action round-trip time",
            ["action"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.ping_rtt = Gauge(
            "hotline_ami_ping_rtt_seconds",
            "Round trip of the last watchdog Ping Asterisk answered",
            registry=r,
        )
        self.asterisk_info = Gauge(
            "hotline_asterisk_info",
            "1, labelled with the AMI protocol version in Asterisk's banner (not Asterisk's own)",
            ["ami_version"],
            registry=r,
        )
        self._ami_version: str | None = None

    def connect_attempt(self, result: str) -> None:
        self.connect_attempts.labels(result).inc()

    def disconnected(self, reason: str) -> None:
        self.disconnects.labels(reason).inc()

    def link_up(self, up: bool) -> None:
        self.ami_up.set(1 if up else 0)
        if not up:
            self._synced.set(0)

    def action_done(self, action: str, result: Result, seconds: float) -> None:
        name = _ACTION_LABEL.get(action, "other")
        self.actions.labels(name, result.value).inc()
        self.action_seconds.labels(name).observe(seconds)

    def message_received(self) -> None:
        # Every AMI message: a plain store, read by the gauge at scrape time.
        self._last_message = time.time()

    def malformed_message(self) -> None:
        self.malformed.inc()

    def action_refused(self, reason: str) -> None:
        self.refused.labels(reason).inc()

    def inbox_overflow(self) -> None:
        self.inbox_overflows.inc()

    def ping_answered(self, seconds: float) -> None:
        self.ping_rtt.set(seconds)

    def ami_version(self, version: str) -> None:
        # One series, for the Asterisk the link last reached.
        label = version if _VERSION.fullmatch(version) else "unknown"
        if label != self._ami_version:
            self.asterisk_info.clear()
            self.asterisk_info.labels(label).set(1)
            self._ami_version = label
