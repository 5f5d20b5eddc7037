"""The long-running tasks that decide: membership reconciliation and the call ledger. They talk to
the outside only through protocols that the adapters satisfy."""
