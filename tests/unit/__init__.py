"""Unit tests of the pure core, the configuration and the command line; no services needed."""
