"""The supervision API: requests refused before their handler, by reason (no credentials, a bad
token, over the failure limit, cross-site, a role that does not allow it). ApiMetrics is the
observer `hotline.adapters.api` reports to (docs/api.md)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from hotline.core.access import AUTH_FAILURES, AuthFailure


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.refused = Counter(
            "hotline_api_auth_refused",
            "API and console requests refused before their handler, by reason: "
            "no_credentials, bad_token, rate_limited, cross_site, no_role",
            ["reason"],
            registry=registry,
        )
        for reason in AUTH_FAILURES:
            self.refused.labels(reason)

    def auth_failed(self, reason: AuthFailure) -> None:
        self.refused.labels(reason).inc()
