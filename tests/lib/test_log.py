"""Structured log lines and the redaction filter."""

from __future__ import annotations

import logging
import re

import pytest

from device_agent.log import MAX_VALUE_CHARS, REDACTED, LineFormatter, RedactingFilter, configure_logging

TOKEN = "ABCDEFGH12345678"


def record(
    msg: str, *args: object, level: int = logging.INFO, exc: BaseException | None = None, **extra: object
):
    rec = logging.LogRecord("x", level, __file__, 1, msg, args, (type(exc), exc, None) if exc else None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_line_has_time_level_event_and_extras():
    line = LineFormatter().format(record("store.opened", records=12, path="/var/x y"))
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO store\.opened records=12 path=\"/var/x y\"", line
    )


def test_values_are_bounded_and_newlines_never_split_a_line():
    line = LineFormatter().format(record("evt", blob="a" * 10_000, text="two\nlines"))
    assert "\n" not in line
    assert len(line) < MAX_VALUE_CHARS + 200
    assert 'text="two\\nlines"' in line


def test_exception_type_and_text_on_the_same_line():
    line = LineFormatter().format(record("ipc.failed", exc=ValueError("bad value")))
    assert "error=ValueError" in line
    assert 'detail="bad value"' in line


@pytest.mark.parametrize(
    "rec",
    [
        record("token is %s", TOKEN),
        record(f"token is {TOKEN}"),
        record("evt", header=f"Bearer {TOKEN}"),
    ],
)
def test_secrets_are_redacted_wherever_they_appear(rec):
    RedactingFilter([TOKEN]).filter(rec)
    line = LineFormatter().format(rec)
    assert TOKEN not in line
    assert REDACTED in line


def test_an_exception_carrying_a_secret_is_withheld():
    rec = record("call.failed", exc=RuntimeError(f"auth {TOKEN} refused"))
    RedactingFilter([TOKEN]).filter(rec)
    line = LineFormatter().format(rec)
    assert TOKEN not in line
    assert "withheld" in line


def test_short_strings_are_not_treated_as_secrets():
    f = RedactingFilter(["abc"])
    rec = record("abc is a word")
    f.filter(rec)
    assert rec.getMessage() == "abc is a word"


def test_configure_routes_warnings_to_stderr_and_redacts_the_token(monkeypatch, capsys):
    monkeypatch.setenv("SVCUID", TOKEN)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging()
        logging.getLogger("device_agent.test").info("hello %s", TOKEN)
        logging.getLogger("device_agent.test").warning("careful")
        out, err = capsys.readouterr()
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
    assert "INFO hello [redacted]" in out
    assert "careful" not in out
    assert "WARNING careful" in err
    assert TOKEN not in out + err
