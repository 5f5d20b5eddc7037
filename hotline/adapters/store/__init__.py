"""Postgres adapter, the only importer of asyncpg: the call records, member sessions and pauses
written by one batched writer task (writer.py), the on-disk spool that holds them while Postgres is
away (spool.py), the dead letters that keep the records that cannot be stored (deadletters.py),
their JSON and row forms (codec.py) and tables (tables.py), the schema's migrations
(migrations.py), retention (retention.py) and the failure classes (errors.py).

The composition root uses what is re-exported here."""

from hotline.adapters.store.errors import StoreUnavailable
from hotline.adapters.store.migrations import SCHEMA_VERSION, SchemaError, migrate
from hotline.adapters.store.reports import load_forecast, read_report
from hotline.adapters.store.retention import purge
from hotline.adapters.store.spool import Spool
from hotline.adapters.store.writer import Store, StoreObserver

__all__ = [
    "SCHEMA_VERSION",
    "SchemaError",
    "Spool",
    "Store",
    "StoreObserver",
    "StoreUnavailable",
    "load_forecast",
    "migrate",
    "purge",
    "read_report",
]
