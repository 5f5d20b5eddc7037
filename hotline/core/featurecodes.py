"""The responders' feature codes, pure: the dialplan that maps each pause reason's digit to the
reason, rendered from the configuration so the phones and the console offer the same reasons.
deploy/pbx.sh writes it into extensions_responder_codes.conf, which asterisk-config/extensions.conf
includes in the responders' context (docs/phones.md, "Feature codes")."""

from __future__ import annotations

import re
from collections.abc import Mapping

# What a responder dials: the pause prefix then a reason's digit; unpause; "last call was hard".
PAUSE_PREFIX = "*21"
UNPAUSE = "*20"
HARD_CALL = "*22"
# The context the responders' context includes, and the one that pauses the calling phone's
# member with ${HOTLINE_PAUSE_REASON} (both in asterisk-config/extensions.conf's terms).
CODES_CONTEXT = "hotline-responder-codes"
PAUSE_CONTEXT = "hotline-responder-pause"
# What a reason may be called in the dialplan: the configuration's names are already this narrow
# (hotline.config.schema.NAME); checked again here because the text becomes dialplan.
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def render_dialplan(digits: Mapping[str, int | None], hard_call_reason: str, source: str) -> str:
    """The extensions include for these reasons (name -> digit, None: no code) and the reason of
    the "last call was hard" code; `source` names the configuration in the header. ValueError
    for a name the dialplan could not carry, a digit out of 0-9 or used twice, or a hard-call
    reason that is not one of the reasons."""
    if hard_call_reason not in digits:
        raise ValueError(f"hard-call reason {hard_call_reason!r} is not one of the reasons")
    by_digit: dict[int, str] = {}
    for name, digit in digits.items():
        if not _SAFE.fullmatch(name):
            raise ValueError(f"pause reason {name!r} cannot be written into the dialplan")
        if digit is None:
            continue
        if not 0 <= digit <= 9:
            raise ValueError(f"pause reason {name!r}: digit {digit} is not 0-9")
        if digit in by_digit:
            raise ValueError(f"digit {digit} is both {by_digit[digit]!r} and {name!r}")
        by_digit[digit] = name
    lines = [
        f"; Rendered by `hotline pbx-dialplan` from pauses.reasons in {_comment(source)}.",
        "; Deploy renders it again whenever the configuration changes; never edit it.",
        f"[{CODES_CONTEXT}]",
    ]
    codes = [(f"{PAUSE_PREFIX}{d}", by_digit[d], f"pause: {by_digit[d]}") for d in sorted(by_digit)]
    codes.append((HARD_CALL, hard_call_reason, "the last call was hard"))
    for code, reason, what in codes:
        lines += [
            f"; {what}",
            f"exten => {code},1,Set(HOTLINE_PAUSE_REASON={reason})",
            f" same => n,Goto({PAUSE_CONTEXT},s,1)",
        ]
    return "\n".join(lines) + "\n"


def _comment(text: str) -> str:
    """`text` safe on one comment line."""
    return "".join(c if c.isprintable() else "?" for c in text)
