"""Caller confidentiality at ingress: a caller's number becomes a keyed pseudonym, and only an
allow-list of AMI fields survives, before an event is queued, logged, spooled or stored.

Pseudonym: "k<key id>:" + base32(HMAC-SHA256(key, "hotline-cid-v1|" + E.164))[:26] — keyed, so it
cannot be reversed by hashing every phone number (docs metrics-kpis-ops.md §9.3).
"""

from __future__ import annotations

import base64
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
        # QueueStatus list items (member name and interface use these names there)
        "Name", "Location", "Max", "Strategy", "Calls", "Holdtime", "Completed", "Abandoned",
        "ServiceLevel", "ServicelevelPerf", "ServicelevelPerf2", "Weight", "Wait", "Priority",
    }
)  # fmt: skip
WITHHELD = frozenset({"", "<unknown>", "unknown", "anonymous", "restricted", "private", "withheld"})
_CAMPAIGN_VAR = "HOTLINE_CAMPAIGN="
_NOT_DIGITS = re.compile(r"[^0-9]")
_RECENT = 512


class KeyFileError(ValueError):
    """The pseudonym key file is missing, malformed or too weak."""


@dataclass(frozen=True)
class Pseudonymiser:
    key_id: str
    key: bytes = field(repr=False)
    default_country_code: str = "1"
    # A caller's number arrives on every event of their call: the last few hundred pseudonyms
    # are kept, in memory only, beside the numbers of the calls Asterisk is handling anyway.
    _recent: dict[str, str | None] = field(default_factory=dict, repr=False, compare=False)

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
        if number in self._recent:
            return self._recent[number]
        if len(self._recent) >= _RECENT:
            self._recent.clear()
        e164 = self.normalise(number)
        key = None
        if e164 is not None:
            mac = hmac.new(self.key, b"hotline-cid-v1|" + e164.encode(), hashlib.sha256).digest()
            # 26 base32 characters come from the first 17 bytes; encode 20, not all 32.
            key = f"k{self.key_id}:" + base64.b32encode(mac[:20]).decode()[:26]
        self._recent[number] = key
        return key

    def scrub(self, fields: Mapping[str, str]) -> dict[str, str]:
        """The allow-listed fields of an AMI message, with the caller replaced by a pseudonym."""
        out = {k: v for k, v in fields.items() if k in ALLOWED}
        if "CallerIDNum" in fields:
            key = self.pseudonym(fields["CallerIDNum"])
            out["CallerWithheld"] = "0" if key else "1"
            if key:
                out["CallerKey"] = key
                out["CallerKeyId"] = self.key_id
        for line in fields.get("ChanVariable", "").split("\n"):
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
