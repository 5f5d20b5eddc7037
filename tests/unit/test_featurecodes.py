"""The responders' feature codes: the dialplan rendered from pauses.reasons, and the CLI that
prints it from a configuration file."""

from __future__ import annotations

from pathlib import Path

import pytest

from hotline.cli import main
from hotline.config import EXIT_CONFIG
from hotline.core.featurecodes import render_dialplan

CONFIG = """
timezone: UTC
ami: {host: 127.0.0.1, port: 5038, username: hotline, secret_env: UNUSED}
queues: {crisis: {}}
responders: {}
pauses:
  reasons:
    lunch: {digit: 7, max_minutes: 30}
    debrief: {digit: 0}
    hidden: {}
  hard_call_reason: debrief
"""


def _codes(text: str) -> dict[str, str]:
    """Feature code -> the reason it sets, from a rendered dialplan."""
    codes = {}
    for line in text.splitlines():
        if line.startswith("exten => "):
            code, _, action = line.removeprefix("exten => ").partition(",1,")
            codes[code] = action.removeprefix("Set(HOTLINE_PAUSE_REASON=").removesuffix(")")
    return codes


def test_every_reason_with_a_digit_has_its_code_and_the_hard_call_code_its_reason() -> None:
    text = render_dialplan({"break": 1, "admin": 3, "quiet": None}, "break", "hotline.yaml")
    assert _codes(text) == {"*211": "break", "*213": "admin", "*22": "break"}
    assert text.count("Goto(hotline-responder-pause,s,1)") == 3
    assert "[hotline-responder-codes]" in text


@pytest.mark.parametrize(
    ("digits", "hard", "problem"),
    [
        ({"a": 1, "b": 1}, "a", "digit 1 is both 'a' and 'b'"),
        ({"a": 10}, "a", "digit 10 is not 0-9"),
        ({"a),Dial(PJSIP/x": 1}, "a),Dial(PJSIP/x", "cannot be written into the dialplan"),
        ({"a": 1}, "b", "'b' is not one of the reasons"),
    ],
)
def test_what_the_dialplan_cannot_carry_is_refused(
    digits: dict[str, int | None], hard: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        render_dialplan(digits, hard, "x")


def test_the_cli_prints_the_dialplan_of_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "hotline.yaml"
    config.write_text(CONFIG)
    assert main(["pbx-dialplan", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert _codes(out) == {"*210": "debrief", "*217": "lunch", "*22": "debrief"}
    assert f"from pauses.reasons in {config}" in out


def test_the_cli_refuses_a_bad_configuration_with_exit_78(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "hotline.yaml"
    config.write_text(CONFIG.replace("digit: 0", "digit: 7"))
    assert main(["pbx-dialplan", "-c", str(config)]) == EXIT_CONFIG
    assert "digit 7" in capsys.readouterr().err
