"""The health summary (`health-summary/1`, docs/schemas/health-summary.schema.json) sent to IoT Core and
locally: the overall state and every check with when it was last verified, so a stale summary shows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from device_agent.health_log import CheckStatus, State

SCHEMA: Final = "health-summary/1"


def _time(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check(status: CheckStatus) -> dict[str, Any]:
    out: dict[str, Any] = {"check": status.check, "state": status.state.value}
    if status.subject is not None:
        out["subject"] = status.subject
    if status.value is not None:
        out["value"] = status.value
    if status.unit is not None:
        out["unit"] = status.unit
    if status.threshold is not None:
        out["threshold"] = status.threshold
    if status.since is not None:
        out["since"] = _time(status.since)
    if status.verified is not None:
        out["verified"] = _time(status.verified)
    return out


def summary(
    *,
    thing: str,
    component: str,
    version: str,
    time: datetime,
    sequence: int,
    reason: str,
    overall: State,
    interval_seconds: float,
    checks: Sequence[CheckStatus],
) -> dict[str, Any]:
    counts = Counter(status.state.value for status in checks)
    return {
        "schema": SCHEMA,
        "thing": thing,
        "component": component,
        "version": version,
        "time": _time(time),
        "sequence": sequence,
        "reason": reason,
        "overall": overall.value,
        "intervalSeconds": interval_seconds,
        "counts": {state.value: counts.get(state.value, 0) for state in State},
        "checks": [_check(status) for status in checks],
    }
