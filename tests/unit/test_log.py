"""The one logging pipeline: hotline's events and every library's stdlib records reach stderr as
JSON lines, and no secret reaches it, whatever carries it: panoramisk's repr of a Login action
that failed to send, a traceback, a DSN, a record that cannot even be formatted."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import structlog
from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol

from hotline.adapters import log

SECRET = "Zq-7s3cret!x"  # printable ASCII, as a validated secret is
PASSWORD = "pg/pa:ss@word"  # URL-quoted in a DSN


@pytest.fixture
def pipeline(capfd: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    """The pipeline as `hotline run` sets it up, undone after the test."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, sys.excepthook, threading.excepthook, log._known[:])
    levels = {name: logging.getLogger(name).level for name in log._LIBRARIES}
    log.configure(json=True)
    log.conceal(SECRET, PASSWORD)
    try:
        yield capfd
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        sys.excepthook, threading.excepthook = saved[2], saved[3]
        log._known[:] = saved[4]
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        logging.captureWarnings(False)
        structlog.reset_defaults()


def lines(capfd: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    out, err = capfd.readouterr()
    assert out == ""
    for secret in (SECRET, PASSWORD, "pa:ss", "pa%3Ass"):
        assert secret not in err
    return [json.loads(line) for line in err.splitlines()]  # every line is JSON


class BrokenTransport:
    def write(self, _data: bytes) -> None:
        raise AssertionError("nothing may be written after the encode failed")


async def test_a_login_panoramisk_fails_to_encode_is_logged_as_json_without_its_secret(
    pipeline: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Force the encode to fail in panoramisk's own send(): it then logs "Fail to send %r" with
    # the whole action, Secret header included, and its traceback.
    as_text = Action.__str__
    monkeypatch.setattr(Action, "__str__", lambda self: as_text(self) + "\ud800")
    protocol = AMIProtocol()
    protocol.connection_made(BrokenTransport())
    login = Action({"Action": "Login", "Username": "hotline", "Secret": SECRET, "Events": "on"})
    protocol.send(login)
    (line,) = lines(pipeline)
    assert line["event"].startswith("Fail to send {'Action': 'Login'")
    assert "'Secret': [redacted]" in line["event"]
    assert line["logger"] == "panoramisk.ami_protocol"
    assert line["level"] == "error"
    assert "UnicodeEncodeError" in line["exception"]


async def test_an_ami_action_as_text_or_repr_loses_its_secret_even_if_it_was_never_concealed(
    pipeline: pytest.CaptureFixture[str],
) -> None:
    other = "An0ther-account's"
    action = Action({"Action": "Login", "Username": "hotline-test", "Secret": other})
    panoramisk = logging.getLogger("panoramisk.manager")
    panoramisk.warning("as text: %s", str(action))
    panoramisk.warning("as repr: %r", action)
    panoramisk.warning("a message: <Message secret='%s'>", other)
    panoramisk.warning("manager.conf: secret = %s; password=%s", other, other)
    found = lines(pipeline)
    assert len(found) == 4
    assert all(other not in line["event"] and "An0ther" not in line["event"] for line in found)
    assert "Secret: [redacted]\r\n" in found[0]["event"]


def test_a_concealed_secret_is_scrubbed_from_events_fields_and_tracebacks(
    pipeline: pytest.CaptureFixture[str],
) -> None:
    logger = structlog.get_logger("hotline.test")
    logger.warning(f"the value {SECRET} in a message", detail=[f"x{SECRET}x", {"k": SECRET}])
    logger.info("an object", value=RuntimeError(SECRET))
    dsn = f"postgresql://hotline:{quote(PASSWORD, safe='')}@db/hotline"
    logger.info("connecting", dsn=dsn)
    try:
        raise ValueError(f"bad secret {SECRET}")
    except ValueError:
        logger.exception("failed")
        logging.getLogger("asyncio").exception("Task exception was never retrieved")
    first, second, third, fourth, fifth = lines(pipeline)
    assert first["event"] == "the value [redacted] in a message"
    assert first["detail"] == ["x[redacted]x", {"k": "[redacted]"}]
    assert second["value"] == "RuntimeError('[redacted]')"
    assert third["dsn"] == "postgresql://hotline:[redacted]@db/hotline"
    assert fourth["exception"].endswith("ValueError: bad secret [redacted]")
    assert fifth["logger"] == "asyncio"
    assert fifth["exception"].endswith("ValueError: bad secret [redacted]")


def test_fields_named_like_secrets_or_caller_data_are_redacted(
    pipeline: pytest.CaptureFixture[str],
) -> None:
    structlog.get_logger("hotline.test").info("x", secret="a", CallerIDNum="+15551234567", ok=1)
    (line,) = lines(pipeline)
    assert (line["secret"], line["CallerIDNum"], line["ok"]) == ("[redacted]", "[redacted]", 1)


def test_library_records_are_json_and_their_info_is_kept_out(
    pipeline: pytest.CaptureFixture[str],
) -> None:
    logging.getLogger("aiohttp.server").info("access line")
    logging.getLogger("panoramisk.ami_protocol").info("protocol version: '11.0.0'")
    logging.getLogger("asyncpg").info("pool opened")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(True)
        warnings.warn("deprecated", DeprecationWarning, stacklevel=1)
    found = lines(pipeline)
    assert [(line["logger"], line["level"]) for line in found] == [
        ("aiohttp.server", "error"),
        ("py.warnings", "warning"),
    ]
    assert "ZeroDivisionError" in found[0]["exception"]


def test_a_record_that_cannot_be_formatted_gives_one_fixed_line_not_its_arguments(
    pipeline: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # pytest's own capture handler would fail the test on the bad record otherwise.
    monkeypatch.setattr(logging, "raiseExceptions", False)
    logging.getLogger("panoramisk.manager").error("two %s %s", SECRET)  # noqa: PLE1206
    assert lines(pipeline) == [
        {"event": "log_record_unformattable", "logger": "panoramisk.manager", "level": "error"}
    ]


def test_an_uncaught_exception_is_one_scrubbed_json_line(
    pipeline: pytest.CaptureFixture[str],
) -> None:
    try:
        raise KeyError(SECRET)
    except KeyError as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    thread = threading.Thread(target=lambda: (_ for _ in ()).throw(OSError(SECRET)), name="t1")
    thread.start()
    thread.join()
    main, worker = lines(pipeline)
    assert (main["event"], main["level"]) == ("uncaught_exception", "critical")
    assert main["exception"].endswith("KeyError: '[redacted]'")
    assert (worker["thread"], worker["exception"].splitlines()[-1]) == (
        "t1",
        "OSError: [redacted]",
    )


def test_concealing_keeps_the_longest_form_first() -> None:
    saved = log._known[:]
    try:
        log.conceal("abc", "abcdef")
        assert log.scrub_text("xabcdefx abc") == "x[redacted]x [redacted]"
    finally:
        log._known[:] = saved


async def test_the_pipeline_writes_to_the_current_stderr(
    pipeline: pytest.CaptureFixture[str],
) -> None:
    await asyncio.sleep(0)
    structlog.get_logger("hotline.test").info("first")
    assert [line["event"] for line in lines(pipeline)] == ["first"]
