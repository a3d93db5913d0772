"""The suite's local messages: heartbeats and security/health events (schemas in docs/schemas/).

Builders validate what they can cheaply (names, lengths, value types) so that a component cannot emit a
message the health monitor would have to reject; the JSON Schemas are the contract, and tests validate these
builders' output against them.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from device_agent.errors import InvalidInputError

HEARTBEAT_SCHEMA = "heartbeat/1"
EVENT_SCHEMA = "event/1"
HEARTBEAT_TOPIC = "device-agent/heartbeat/{component}"
EVENTS_TOPIC = "device-agent/events"
MAX_MESSAGE_CHARS = 512
MAX_DETAILS = 32
_EVENT_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")


class Category(enum.StrEnum):
    SECURITY = "security"
    INTEGRITY = "integrity"
    CONFIGURATION = "configuration"
    HEALTH = "health"
    LIFECYCLE = "lifecycle"


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def heartbeat_topic(component: str) -> str:
    return HEARTBEAT_TOPIC.format(component=component)


def heartbeat(
    *,
    component: str,
    thing: str,
    sequence: int,
    uptime_seconds: float,
    interval_seconds: float,
    state: str = "RUNNING",
    version: str | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "schema": HEARTBEAT_SCHEMA,
        "component": component,
        "thing": thing,
        "time": utc_now(),
        "sequence": sequence,
        "uptimeSeconds": round(uptime_seconds, 3),
        "intervalSeconds": interval_seconds,
        "state": state,
    }
    if version is not None:
        message["version"] = version
    if detail is not None:
        message["detail"] = detail[:256]
    return message


def event(
    *,
    component: str,
    thing: str,
    name: str,
    category: Category,
    severity: Severity,
    message: str,
    details: Mapping[str, str | int | float | bool | None] | None = None,
) -> dict[str, Any]:
    if not _EVENT_NAME.fullmatch(name):
        raise InvalidInputError(
            f"event name {name[:64]!r} is not a dotted lower-case name like 'config.rejected'"
        )
    body: dict[str, Any] = {
        "schema": EVENT_SCHEMA,
        "component": component,
        "thing": thing,
        "time": utc_now(),
        "event": name,
        "category": str(category),
        "severity": str(severity),
        "message": message[:MAX_MESSAGE_CHARS],
    }
    if details:
        if len(details) > MAX_DETAILS:
            raise InvalidInputError(f"event {name}: at most {MAX_DETAILS} details")
        for key, value in details.items():
            if not isinstance(value, str | int | float | bool | type(None)):
                raise InvalidInputError(f"event {name}: detail {key!r} must be a scalar")
        body["details"] = {k: (v[:256] if isinstance(v, str) else v) for k, v in details.items()}
    return body
