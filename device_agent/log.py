"""Structured logging for components: one line per event, stable event names, no secrets.

The nucleus captures a component's stdout and stderr line by line into `logs/<component>.log`, so a
component logs plain lines: `TIME LEVEL EVENT key=value ...`. Library modules only ever call
`logging.getLogger(__name__)` with a stable event name as the message and details in `extra`; only the
component runtime calls `configure_logging`, once, at start.

    logger.info("telemetry.published", extra={"samples": 12, "bytes": 3400})
    → 2026-11-24T14:00:00.123Z INFO telemetry.published samples=12 bytes=3400

WARNING and above go to stderr, the rest to stdout. Every line passes through a redaction filter that
removes the component's IPC token (and any other registered secret) even if a bug tried to log it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable

# LogRecord attributes that are not structured extras.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
MAX_VALUE_CHARS = 200
REDACTED = "[redacted]"
# Shorter strings would redact ordinary words; tokens and keys are much longer than this.
MIN_SECRET_CHARS = 8


def _format_value(value: object) -> str:
    text = str(value)
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS] + "…"
    if not text or any(c in text for c in ' ="\n'):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


class LineFormatter(logging.Formatter):
    """`TIME LEVEL EVENT key=value ...`, UTC with milliseconds, one physical line per record."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [
            f"{stamp}.{int(record.msecs):03d}Z",
            record.levelname,
            record.getMessage().replace("\n", "\\n"),
        ]
        parts.extend(
            f"{key}={_format_value(value)}" for key, value in record.__dict__.items() if key not in _STANDARD
        )
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type and message on the same line; tracebacks only at DEBUG.
            exc = record.exc_info[1]
            parts.append(f"error={_format_value(type(exc).__name__)}")
            parts.append(f"detail={_format_value(exc)}")
        return " ".join(parts)


class RedactingFilter(logging.Filter):
    """Replaces registered secrets in the rendered message and extras; the last line of defence."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = {s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}

    def add(self, secret: str) -> None:
        if secret and len(secret) >= MIN_SECRET_CHARS:
            self._secrets.add(secret)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        if any(secret in message for secret in self._secrets):
            record.msg = self._scrub(message)
            record.args = ()
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str) and any(s in value for s in self._secrets):
                setattr(record, key, self._scrub(value))
        if (
            record.exc_info
            and record.exc_info[1] is not None
            and any(s in str(record.exc_info[1]) for s in self._secrets)
        ):
            record.exc_info = None
            record.msg = f"{record.getMessage()} (exception text withheld: it contained a secret)"
            record.args = ()
        return True

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


class _MaxLevel(logging.Filter):
    def __init__(self, below: int) -> None:
        super().__init__()
        self._below = below

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self._below


def configure_logging(level: int = logging.INFO) -> RedactingFilter:
    """Route the root logger to stdout/stderr as lines; returns the redaction filter to register secrets."""
    redactor = RedactingFilter(
        [os.environ.get("SVCUID", ""), os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN", "")]
    )
    formatter = LineFormatter()
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(_MaxLevel(logging.WARNING))
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in (out, err):
        handler.setFormatter(formatter)
        handler.addFilter(redactor)
        root.addHandler(handler)
    root.setLevel(level)
    # The SDK is chatty at INFO and may echo requests; it speaks up only for real problems.
    logging.getLogger("awsiot").setLevel(logging.WARNING)
    logging.getLogger("awscrt").setLevel(logging.WARNING)
    return redactor
