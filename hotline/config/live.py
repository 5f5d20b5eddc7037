"""What a reload may change while the daemon runs, and what only a restart changes."""

from __future__ import annotations

from hotline.config.settings import Config

# Taken at start only: the AMI link and its secret, the HTTP listener, the call-record pipeline
# (database, pseudonym keys, call timings) and everything built per queue (metrics, service
# levels, surge rules, wellbeing guardrails), and what the coverage look-ahead and its metrics
# were built with (the forecast settings, the certification warning days). The roster itself
# (responders, shifts, exceptions, penalties, minimums, time zone) and the resync interval
# change live.
RESTART_ONLY = (
    "ami", "http", "database", "privacy", "calls", "service", "surge", "wellbeing", "reports",
    "roster_checks",
)  # fmt: skip


def restart_only_changes(running: Config, new: Config) -> list[str]:
    """The restart-only settings that differ between the running and the new configuration."""
    changed = [name for name in RESTART_ONLY if getattr(running, name) != getattr(new, name)]
    if set(running.roster.queues) != set(new.roster.queues):
        changed.append("queues (which queues exist)")
    return changed
