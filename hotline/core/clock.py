"""The clock the core's callers are given: tests drive one, the daemon uses the system's."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...
    async def sleep_until(self, at: datetime) -> None:
        """Return at `at` or, for a clock that may jump, soon after the clock could have moved."""
        ...
