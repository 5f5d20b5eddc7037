"""SIPp's own timings of every drill call, and the check of each call's record against them.

Matching a call to its record without the caller's number. Every call of a step dials the line's
number followed by a prefix of the step and SIPp's call number (`98801` + `17`), and the shipped
dialplan keeps the number dialled as the call's campaign, so `hotline.calls.campaign` names the
call exactly: no timing guess, and a duplicated, missing or stray row is seen as such. The
responder's leg is matched to the call by what Asterisk itself tells the phone: the carrier
gives each call that same tag as its calling number, and Asterisk presents the caller's number
to the responder's phone in the From header (the SIPp phone logs it with the responder's id from
the To header). The tag is synthetic: no real number is involved, and the daemon stores only its
keyed pseudonym, as for any caller.

What is compared, per answered call (the phone that answered is known from SIPp):
- outcome `answered`, answered_by = the responder whose phone answered;
- answered_at and ended_at within the tolerance of the phone's 200 OK and its BYE (wall clock;
  Asterisk's event Timestamp and SIPp's gettimeofday read the same clock);
- talk_s within the tolerance of the phone's BYE - its 200 OK;
- wait_s within the tolerance of the phone's 200 OK - the moment the caller joined the queue,
  which SIPp sees as the carrier's 200 OK (Asterisk answers first) plus Answer()'s 0.5 s wait
  for a first audio frame (the carrier sends none) plus the greeting's length.
Asterisk reports HoldTime and TalkTime in whole seconds, each the difference of two truncated
clock readings, so they differ from the true span by less than a second: the drill's ring and
talk times are chosen half a second off whole seconds so that this error stays near 0.5 s.
A call no phone answered must have a record that is not `answered`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

TOLERANCE_S = 1.0


@dataclass
class CallerLeg:
    """One carrier call, as SIPp's carrier logged it (wall-clock seconds)."""

    tag: str
    invite: float | None = None
    answered: float | None = None
    ended: float | None = None
    hung_up_first: bool = False  # the caller's hold ran out before anyone hung up on it


@dataclass
class PhoneLeg:
    """One INVITE to a responder's phone, as SIPp's phones logged it."""

    responder: str
    caller: str
    rung: float
    answered: float | None = None
    hung_up: float | None = None


def _stamp(seconds: str, micros: str) -> float:
    return int(float(seconds)) + int(float(micros)) / 1e6


def caller_legs(log: Path, prefix: str) -> dict[str, CallerLeg]:
    """The carrier's log: `<call number> <step> <seconds> <microseconds>` per line."""
    legs: dict[str, CallerLeg] = {}
    if not log.exists():
        return legs
    for line in log.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) != 4 or not parts[0].isdigit():
            continue
        number, step, at = parts[0], parts[1], _stamp(parts[2], parts[3])
        leg = legs.setdefault(prefix + number, CallerLeg(prefix + number))
        if step == "invite":
            leg.invite = at
        elif step == "answered":
            leg.answered = at
        elif step == "bye_sent":
            leg.hung_up_first = True
        elif step == "ended":
            leg.ended = at
    return legs


def phone_legs(log: Path) -> list[PhoneLeg]:
    """The phones' log: `sip:<responder> sip:<caller> <step> <seconds> <microseconds>`."""
    legs: list[PhoneLeg] = []
    open_legs: dict[tuple[str, str], PhoneLeg] = {}
    if not log.exists():
        return legs
    for line in log.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) != 5 or not parts[0].startswith("sip:") or not parts[1].startswith("sip:"):
            continue
        responder, caller, step = parts[0][4:], parts[1][4:], parts[2]
        at = _stamp(parts[3], parts[4])
        key = (responder, caller)
        if step == "rung":
            leg = PhoneLeg(responder, caller, at)
            legs.append(leg)
            open_legs[key] = leg
        elif key in open_legs:
            if step == "answered":
                open_legs[key].answered = at
            elif step == "hung_up":
                open_legs[key].hung_up = at
    return legs


def _time(value: object) -> float | None:
    return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


@dataclass
class Verdict:
    """The check of one step's calls against their records."""

    calls: int = 0
    answered_by_phone: int = 0
    rows: int = 0
    correct: int = 0
    problems: list[str] = field(default_factory=list)
    # Largest |record - SIPp| seen, in seconds, per compared quantity.
    worst: dict[str, float] = field(default_factory=dict)
    sipp_waits: list[float] = field(default_factory=list)

    @property
    def all_correct(self) -> bool:
        return self.calls > 0 and self.correct == self.calls and not self.problems

    def note(self, what: str, error: float) -> None:
        self.worst[what] = max(self.worst.get(what, 0.0), abs(error))


def judge(
    callers: dict[str, CallerLeg],
    phones: Sequence[PhoneLeg],
    rows: Iterable[dict[str, object]] | None,
    *,
    joins_after_s: float,
    tolerance_s: float = TOLERANCE_S,
) -> Verdict:
    """Each call against its record; without records (`rows` None, a baseline without the
    daemon) only SIPp's own view: which calls a phone answered, and the waits it saw."""
    verdict = Verdict(calls=len(callers))
    by_campaign: dict[str, list[dict[str, object]]] = {}
    for row in rows or ():
        by_campaign.setdefault(str(row.get("campaign")), []).append(row)
        verdict.rows += 1
    answered_by: dict[str, PhoneLeg] = {}
    for leg in phones:
        if leg.answered is not None and leg.caller in callers:
            if leg.caller in answered_by:
                verdict.problems.append(f"{leg.caller}: answered by two phones")
            answered_by[leg.caller] = leg
    if rows is None:
        for tag, caller in callers.items():
            phone = answered_by.get(tag)
            if phone is not None and phone.answered is not None and caller.answered is not None:
                verdict.answered_by_phone += 1
                verdict.sipp_waits.append(phone.answered - caller.answered - joins_after_s)
        return verdict
    for campaign in by_campaign.keys() - callers.keys():
        verdict.problems.append(f"{campaign}: a record for a call the carrier never placed")
    for tag, caller in sorted(callers.items()):
        found = by_campaign.get(tag, [])
        if len(found) != 1:
            verdict.problems.append(f"{tag}: {len(found)} records, expected exactly one")
            continue
        row = found[0]
        phone = answered_by.get(tag)
        before = len(verdict.problems)
        if phone is None:
            if row.get("outcome") in ("answered", None) or row.get("answered_by") is not None:
                verdict.problems.append(
                    f"{tag}: no phone answered, but the record says {row.get('outcome')}"
                    f" by {row.get('answered_by')}"
                )
        else:
            verdict.answered_by_phone += 1
            _compare(
                verdict,
                tag,
                caller=caller,
                phone=phone,
                row=row,
                joins_after_s=joins_after_s,
                tolerance_s=tolerance_s,
            )
        if len(verdict.problems) == before:
            verdict.correct += 1
    return verdict


def _compare(
    verdict: Verdict,
    tag: str,
    *,
    caller: CallerLeg,
    phone: PhoneLeg,
    row: dict[str, object],
    joins_after_s: float,
    tolerance_s: float,
) -> None:
    def off(what: str, recorded: float | None, sipp: float | None) -> None:
        if recorded is None or sipp is None:
            verdict.problems.append(f"{tag}: {what} missing (record {recorded}, SIPp {sipp})")
            return
        verdict.note(what, recorded - sipp)
        if abs(recorded - sipp) > tolerance_s:
            verdict.problems.append(
                f"{tag}: {what} {recorded:.3f} vs SIPp {sipp:.3f} (off by {recorded - sipp:+.3f} s)"
            )

    if row.get("outcome") != "answered":
        verdict.problems.append(
            f"{tag}: outcome {row.get('outcome')}, but {phone.responder} answered"
        )
    if row.get("answered_by") != phone.responder:
        verdict.problems.append(
            f"{tag}: answered_by {row.get('answered_by')}, but {phone.responder} answered"
        )
    assert phone.answered is not None
    joined = caller.answered + joins_after_s if caller.answered is not None else None
    sipp_wait = phone.answered - joined if joined is not None else None
    if sipp_wait is not None:
        verdict.sipp_waits.append(sipp_wait)
    talk = phone.hung_up - phone.answered if phone.hung_up is not None else None
    off("wait_s", _number(row.get("wait_s")), sipp_wait)
    off("talk_s", _number(row.get("talk_s")), talk)
    off("answered_at", _time(row.get("answered_at")), phone.answered)
    off("ended_at", _time(row.get("ended_at")), phone.hung_up)
