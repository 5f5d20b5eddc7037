"""hotline: keeps an Asterisk crisis queue staffed from a shift roster, and reports on it."""

__version__ = "0.1.0"
