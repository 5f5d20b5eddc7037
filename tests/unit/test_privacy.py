"""Caller pseudonyms and the field allow-list: nothing that could identify a caller gets through."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hotline.core.privacy import KeyFileError, Pseudonymiser, load_keys

KEY = Pseudonymiser("1", bytes(range(32)))
OTHER_KEY = Pseudonymiser("2", bytes(range(1, 33)))


def test_the_same_caller_in_any_format_gets_the_same_pseudonym() -> None:
    forms = ["+1 (555) 010-0001", "15550100001", "5550100001", "001-555-010-0001", "+15550100001"]
    assert len({KEY.pseudonym(f) for f in forms}) == 1


def test_a_pseudonym_names_its_key_and_differs_between_keys() -> None:
    one, two = KEY.pseudonym("+15550100001"), OTHER_KEY.pseudonym("+15550100001")
    assert one is not None
    assert two is not None
    assert one.startswith("k1:")
    assert len(one) == 3 + 26
    assert two.startswith("k2:")
    assert one[3:] != two[3:]


@pytest.mark.parametrize("withheld", ["", "<unknown>", "anonymous", "Restricted", "PRIVATE", "--"])
def test_withheld_caller_ids_are_recorded_as_withheld_without_a_key(withheld: str) -> None:
    out = KEY.scrub({"Event": "QueueCallerJoin", "CallerIDNum": withheld})
    assert out["CallerWithheld"] == "1"
    assert "CallerKey" not in out


def test_scrub_keeps_only_allowed_fields_and_the_campaign() -> None:
    raw = {
        "Event": "QueueCallerJoin",
        "Queue": "crisis",
        "Uniqueid": "1700000000.1",
        "Position": "1",
        "Channel": "Local/988@hotline-inbound-0000;2",
        "CallerIDNum": "+15550100001",
        "CallerIDName": "Jane Doe",
        "ConnectedLineNum": "+15550100001",
        "Exten": "988",
        "ChanVariable": "HOTLINE_CAMPAIGN=988\nOTHER=x",
    }
    out = KEY.scrub(raw)
    assert set(out) == {
        "Event", "Queue", "Uniqueid", "Position", "CallerWithheld", "CallerKey", "CallerKeyId",
        "Campaign",
    }  # fmt: skip
    assert out["Campaign"] == "988"


PHONE = st.from_regex(r"\+?[1-9][0-9]{9,13}", fullmatch=True)
NAME = st.from_regex(r"[A-Z][a-z]{3,9} [A-Z][a-z]{3,9}", fullmatch=True)


@given(number=PHONE, name=NAME, extra=st.dictionaries(
    st.sampled_from(["CallerIDNum", "CallerIDName", "ConnectedLineNum", "ConnectedLineName",
                     "DestCallerIDNum", "DestConnectedLineNum", "Channel", "DestChannel", "Exten",
                     "Variable", "Data", "AppData"]),
    st.just(""), max_size=6))  # fmt: skip
def test_no_raw_number_or_name_survives_scrubbing(
    number: str, name: str, extra: dict[str, str]
) -> None:
    raw = {key: f"{number} {name}" for key in extra} | {
        "Event": "AgentConnect",
        "CallerIDNum": number,
        "CallerIDName": name,
        "Channel": f"Local/{number}@ctx-0001;2",
    }
    text = repr(KEY.scrub(raw))
    digits = re.sub(r"\D", "", number)
    assert digits not in re.sub(r"[^0-9]", "", text.replace(KEY.pseudonym(number) or "", ""))
    assert name not in text


def test_a_key_file_takes_the_last_key_and_rejects_weak_ones() -> None:
    text = "# quarterly keys\n1:" + "ab" * 32 + "\n2:" + "cd" * 32 + "\n"
    assert load_keys(text).key_id == "2"
    with pytest.raises(KeyFileError, match="256 bits"):
        load_keys("1:abcd\n")
    with pytest.raises(KeyFileError, match="no key"):
        load_keys("# nothing\n")
