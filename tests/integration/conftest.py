"""Fixtures for the integration tests that record calls: a Postgres cluster of the test's own and
a daemon configuration that turns recording on."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hotline.adapters.store.migrations import migrate
from hotline.core.privacy import Pseudonymiser, load_keys
from tests.pg import PgCluster

if TYPE_CHECKING:
    from hotline.daemon import Daemon

# A scrape of /metrics: (sample name, its labels sorted) -> value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Recorded:
    cluster: PgCluster
    database: str
    keys: Pseudonymiser
    spool: Path
    config: str  # the YAML that turns recording on

    def rows(self) -> list[dict[str, object]]:
        return self.select(
            "SELECT row_to_json(c) FROM (SELECT uniqueid, queue, visit, caller_key, "
            "caller_withheld, campaign, outcome, answered_by, wait_s, talk_s, rolled_over, "
            "partner_result, attempts FROM hotline.calls) c"
        )

    def select(self, sql: str) -> list[dict[str, object]]:
        """The rows of a `SELECT row_to_json(...)` query on the test's database."""
        return self.cluster.json_rows(sql, self.database)

    def by_caller(self, number: str) -> list[dict[str, object]]:
        key = self.keys.pseudonym(number)
        return [r for r in self.rows() if r["caller_key"] == key]


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    instance = PgCluster()
    try:
        instance.start()
    except Exception as exc:  # turned into a failure with the reason, never a skip
        instance.destroy()
        pytest.fail(f"PostgreSQL could not start: {exc}", pytrace=False)
    yield instance
    instance.destroy()


@pytest.fixture
async def recorded(cluster: PgCluster, tmp_path: Path) -> Recorded:
    cluster.create_database("hotline")
    await migrate(cluster.dsn_for("hotline"))
    keys_file = tmp_path / "caller-keys"
    keys_file.write_text(f"7:{secrets.token_hex(32)}\n")
    keys_file.chmod(0o600)
    spool = tmp_path / "spool"
    config = (
        f"database: {{dsn: '{cluster.dsn_for('hotline')}', spool_dir: {spool}}}\n"
        f"privacy: {{keys_file: {keys_file}}}\n"
        "calls: {abandon_grace: 2}\n"
    )
    return Recorded(cluster, "hotline", load_keys(keys_file.read_text()), spool, config)


async def scrape(hotline: Daemon) -> Samples:
    """Every sample the daemon exposes on its /metrics endpoint, read over HTTP."""
    url = f"http://127.0.0.1:{hotline.config.http.port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
