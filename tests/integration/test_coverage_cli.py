"""`hotline coverage` with a real Postgres holding two weeks of call records: the need comes from
the records' forecast (not the floor), and the output says so."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from hotline.adapters.store import load_forecast
from hotline.app.coverage import floor_forecast, targets
from hotline.cli import main
from hotline.config import load_config
from hotline.core.coverage import coverage
from tests import history
from tests.integration.conftest import Recorded

TZ = "America/New_York"


async def test_coverage_takes_the_need_from_the_forecast_of_the_call_records(
    recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = recorded.cluster.dsn_for(recorded.database)
    today = datetime.now(UTC).astimezone(ZoneInfo(TZ)).date()
    generated = history.generate(today - timedelta(days=14), 14, ZoneInfo(TZ), calls_per_day=600)
    conn = await asyncpg.connect(dsn)
    try:
        await history.load(conn, generated)
    finally:
        await conn.close()
    path = history.config_file(tmp_path, TZ, dsn)

    argv = ["coverage", "-c", str(path), "--from", f"{today}T00:00", "--days", "2", "--json"]
    status = await asyncio.to_thread(main, argv)
    out, _ = capsys.readouterr()
    assert status == 0
    shown: dict[str, Any] = json.loads(out)
    assert shown["forecast"] == {"source": "history", "why": "calls of the trailing 8 weeks"}

    config = load_config(path)
    start = datetime.fromisoformat(shown["from"])
    forecast = await load_forecast(dsn, config, datetime.now(UTC))
    expected = coverage(config.roster, start, 192, forecast, targets(config))
    floor = coverage(config.roster, start, 192, floor_forecast(config), targets(config))
    for queue in ("crisis", "youth"):
        needed = shown["queues"][queue]["needed"]
        assert needed == list(expected.queues[queue].needed)
        # Hundreds of calls a day need more than the floor's quarter of a call a slot.
        assert max(needed) > max(floor.queues[queue].needed)
