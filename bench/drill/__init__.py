"""Capacity drill: real SIP calls through Asterisk's crisis line with hotline running as in
production, ramped up step by step (`python -m bench.drill --help`; README, "Capacity drill").

SIPp (Debian's sip-tester) is the carrier, placing calls over SIP into the inbound context at a
rate that holds a given number of calls up at once; SIPp also answers as every responder's phone
(rings, answers, talks a set time, hangs up). hotline is a `hotline run` process with a roster of
those responders on duty, Postgres and the PBX's AMI. Each step reports calls/s, the daemon's CPU
as a share of one core, its AMI event lag p50/p99, the time a /metrics scrape takes, its Postgres
write latency, and whether every call has exactly one record that agrees with SIPp's timings; a
baseline step with the daemon stopped gives what the same load does without it.
"""
