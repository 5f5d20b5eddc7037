"""Postgres adapter: schema migrations, the record codec, the batched writer and its spool."""
