"""Caller confidentiality at ingress: a caller's number becomes a keyed pseudonym, and only an
allow-list of AMI fields survives, before an event is queued, logged, spooled or stored.

Pseudonym: "k<key id>:" + base32(HMAC-SHA256(key, "hotline-cid-v1|" + E.164))[:26] — keyed, so it
cannot be reversed by hashing every phone number
(docs/data-model.md, "Why keyed, and what a key leak means").
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# Fields that may leave the AMI adapter. Everything else is dropped: caller numbers and names also
# hide in CallerIDName, ConnectedLine*, Dest* caller ids, channel names and Exten.
ALLOWED = frozenset(
    {
        "Event", "UserEvent", "Timestamp", "ActionID",
        "Queue", "Uniqueid", "Linkedid", "DestUniqueid",
        "Position", "Count", "OriginalPosition", "HoldTime", "TalkTime", "RingTime", "Reason",
        "MemberName", "Interface", "StateInterface", "Membership", "Penalty", "CallsTaken",
        "LastCall", "LastPause", "LoginTime", "InCall", "Status", "Paused", "PausedReason",
        "Ringinuse", "Wrapuptime", "Cause", "DialStatus", "Campaign",
        "Uptime", "LastReload", "Module", "Shutdown", "Restart",
        # ContactStatus: a phone's (or trunk's) endpoint and its qualify result; not its URI
        "EndpointName", "ContactStatus",
        # QueueStatus list items (member name and interface use these names there)
        "Name", "Location", "Max", "Strategy", "Calls", "Holdtime", "Completed", "Abandoned",
        "ServiceLevel", "ServicelevelPerf", "ServicelevelPerf2", "Weight", "Wait", "Priority",
    }
)  # fmt: skip
WITHHELD = frozenset({"", "<unknown>", "unknown", "anonymous", "restricted", "private", "withheld"})
_CAMPAIGN_VAR = "HOTLINE_CAMPAIGN="
_NOT_DIGITS = re.compile(r"[^0-9]")
_RECENT = 512
_DOMAIN = b"hotline-cid-v1|"
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"  # RFC 4648's alphabet, as base64.b32encode's
_BASE32_PAIRS = tuple(a + b for a in _BASE32 for b in _BASE32)  # 10 bits -> two characters


def _base32_26(digest: bytes) -> str:
    """base64.b32encode(digest[:20]).decode()[:26], from the 130 bits it encodes (the first 17
    bytes less their last 6 bits), 10 at a time, without b32encode's pure-Python byte loop."""
    n = int.from_bytes(digest[:17], "big") >> 6
    t = _BASE32_PAIRS
    return (
        t[n >> 120] + t[n >> 110 & 1023] + t[n >> 100 & 1023] + t[n >> 90 & 1023]
        + t[n >> 80 & 1023] + t[n >> 70 & 1023] + t[n >> 60 & 1023] + t[n >> 50 & 1023]
        + t[n >> 40 & 1023] + t[n >> 30 & 1023] + t[n >> 20 & 1023] + t[n >> 10 & 1023]
        + t[n & 1023]
    )  # fmt: skip


class KeyFileError(ValueError):
    """The pseudonym key file is missing, malformed or too weak."""


@dataclass(frozen=True)
class Pseudonymiser:
    key_id: str
    key: bytes = field(repr=False)
    default_country_code: str = "1"
    # A caller's number arrives on every event of their call: the pseudonyms of the few hundred
    # numbers seen most recently are kept, in memory only, beside the numbers of the calls
    # Asterisk is handling anyway; when full, the number seen least recently is forgotten.
    _recent: dict[str, str | None] = field(default_factory=dict, repr=False, compare=False)
    # The HMAC's state after the key and the domain prefix, copied for each number.
    _mac: hmac.HMAC = field(init=False, repr=False, compare=False)
    _prefix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_mac", hmac.new(self.key, _DOMAIN, hashlib.sha256))
        object.__setattr__(self, "_prefix", f"k{self.key_id}:")

    def normalise(self, number: str) -> str | None:
        """E.164 form of a caller id, or None when it is withheld or holds no number."""
        raw = number.strip()
        if raw.lower() in WITHHELD:
            return None
        plus = raw.startswith("+")
        digits = _NOT_DIGITS.sub("", raw)
        if not digits:
            return None
        if plus:
            return "+" + digits
        if digits.startswith("00"):
            return "+" + digits[2:]
        cc = self.default_country_code
        if cc == "1" and len(digits) == 11 and digits.startswith("1"):
            return "+" + digits
        # A national number: drop a trunk prefix 0, then prefix the centre's country code.
        return "+" + cc + digits.removeprefix("0")

    def pseudonym(self, number: str) -> str | None:
        recent = self._recent
        if number in recent:
            key = recent.pop(number)  # put back below, as the most recent
        else:
            key = self._derive(number)
            if len(recent) >= _RECENT:
                del recent[next(iter(recent))]  # the least recently seen
        recent[number] = key
        return key

    def _derive(self, number: str) -> str | None:
        e164 = self.normalise(number)
        if e164 is None:
            return None
        mac = self._mac.copy()
        mac.update(e164.encode())
        return self._prefix + _base32_26(mac.digest())

    def scrub(self, fields: Mapping[str, str]) -> dict[str, str]:
        """The allow-listed fields of an AMI message, with the caller replaced by a pseudonym."""
        out = {k: v for k, v in fields.items() if k in ALLOWED}
        number = fields.get("CallerIDNum")
        if number is not None:
            key = self.pseudonym(number)
            if key:
                out["CallerWithheld"] = "0"
                out["CallerKey"] = key
                out["CallerKeyId"] = self.key_id
            else:
                out["CallerWithheld"] = "1"
        variables = fields.get("ChanVariable")
        if variables and _CAMPAIGN_VAR in variables:
            for line in variables.split("\n"):
                if line.startswith(_CAMPAIGN_VAR):
                    out["Campaign"] = line[len(_CAMPAIGN_VAR) :]
        return out


def load_keys(text: str, default_country_code: str = "1") -> Pseudonymiser:
    """The current key from a key file: lines "<key id>:<hex secret>", '#' comments; the last
    key is current (older lines document keys still in use for repeat-caller linkage)."""
    current: tuple[str, bytes] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key_id, sep, secret = line.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9]{1,16}", key_id):
            raise KeyFileError(f"line {number}: expected '<key id>:<hex secret>'")
        try:
            key = bytes.fromhex(secret.strip())
        except ValueError:
            raise KeyFileError(f"line {number}: the secret is not hexadecimal") from None
        if len(key) < 32:
            raise KeyFileError(f"line {number}: the key must be at least 256 bits")
        current = (key_id, key)
    if current is None:
        raise KeyFileError("no key in the file")
    return Pseudonymiser(current[0], current[1], default_country_code)


def allow_listed(fields: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed fields only, for a daemon that records no calls (no pseudonym key)."""
    return {k: v for k, v in fields.items() if k in ALLOWED}
