"""The pure core: domain types and rules, with no I/O, no clock and no third-party imports."""
