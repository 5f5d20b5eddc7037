"""Adapters: everything that does I/O (AMI, Postgres, HTTP, logs, metrics, the clock). An adapter
never imports another one; the composition root wires them."""
