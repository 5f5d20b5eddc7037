"""The system's wall clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

# Sleeps are capped so that a clock step (NTP) is noticed within this many seconds.
_MAX_SLEEP_S = 60.0


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, at: datetime) -> None:
        delay = (at - self.now()).total_seconds()
        await asyncio.sleep(min(max(delay, 0.0), _MAX_SLEEP_S))
