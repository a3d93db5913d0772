"""Sample health logs for the tool's tests and goldens, written by the real writer with fixed times.

Each scenario is six hours of a monitor's life up to `NOW`: a snapshot every five minutes, and the state
changes, incidents and lifecycle notes of its story. Files are small (64 KiB), so every sample spans
several rotated files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from device_agent.health_log import (
    MIN_FILE_BYTES,
    CheckStatus,
    HealthLogWriter,
    Incident,
    Lifecycle,
    LifecycleEvent,
    Record,
    Severity,
    Snapshot,
    State,
    StateChange,
    worst,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
START = NOW - timedelta(hours=6)
INTERVAL = 300.0
STORE = "com.deviceagent.EncryptedStore"
PUBLISHER = "com.deviceagent.TelemetryPublisher"
SCENARIOS = ("healthy", "warning", "critical")

Checks = dict[tuple[str, str | None], CheckStatus]
Event = Callable[[datetime, Checks], list[Record]]


def healthy_checks() -> Checks:
    rows: list[tuple[str, str | None, float, str | None]] = [
        ("cpu", None, 12.5, "%"),
        ("memory", None, 41.0, "%"),
        ("swap", None, 0.0, "%"),
        ("disk_space", "/", 62.0, "% free"),
        ("disk_space", "/data", 48.3, "% free"),
        ("inodes", "/", 91.0, "% free"),
        ("temperature", "cpu_thermal", 52.3, "C"),
        ("throttling", None, 0, None),
        ("undervoltage", None, 0, None),
        ("heartbeat", STORE, 0.2, "intervals"),
        ("heartbeat", PUBLISHER, 0.4, "intervals"),
        ("cloud_connection", None, 0, "s"),
        ("last_publish", None, 8, "s"),
        ("certificate", None, 301, "days"),
        ("clock_jump", None, 0, "s"),
        ("store", None, 0, "s"),
        ("integrity", None, 0, "events"),
    ]
    statuses = [
        CheckStatus(check=check, subject=subject, state=State.OK, value=value, unit=unit, since=START)
        for check, subject, value, unit in rows
    ]
    return {status.key: status for status in statuses}


def write_log(directory: Path, scenario: str, *, snapshots_until: datetime = NOW) -> None:
    """Write `scenario` (one of SCENARIOS) into `directory`; no snapshot after `snapshots_until`."""
    checks = healthy_checks()
    story = _story(scenario)
    with HealthLogWriter(directory, max_file_bytes=MIN_FILE_BYTES, now=lambda: START) as log:
        log.append(Lifecycle(time=START, event=LifecycleEvent.MONITOR_STARTED, detail="version 0.1.0"))
        at = START
        while at < NOW:
            for when, happen in story:
                if at <= when < at + timedelta(seconds=INTERVAL):
                    for record in happen(when, checks):
                        log.append(record)
            at += timedelta(seconds=INTERVAL)
            if at <= snapshots_until:
                stamp = at - timedelta(seconds=1)
                statuses = tuple(dataclasses.replace(s, verified=stamp) for s in checks.values())
                overall = worst(s.state for s in statuses)
                log.append(Snapshot(time=stamp, overall=overall, interval_seconds=INTERVAL, checks=statuses))


def _change(
    checks: Checks, at: datetime, key: tuple[str, str | None], new: State, **fields: object
) -> StateChange:
    """A state change of `key` to `new` with `value`, `threshold` and `evidence`; `checks` follows it."""
    old = checks[key]
    value = fields.get("value")
    threshold = fields.get("threshold")
    assert value is None or isinstance(value, int | float)
    assert threshold is None or isinstance(threshold, int | float)
    checks[key] = dataclasses.replace(
        old, state=new, value=value if value is not None else old.value, threshold=threshold, since=at
    )
    return StateChange(
        time=at,
        check=key[0],
        subject=key[1],
        old=old.state,
        new=new,
        value=value,
        unit=old.unit,
        threshold=threshold,
        evidence=str(fields.get("evidence", "")),
        since=at,
    )


def _at(hours: int, minutes: int) -> datetime:
    return START + timedelta(hours=hours, minutes=minutes)


def _story(scenario: str) -> list[tuple[datetime, Event]]:
    story: list[tuple[datetime, Event]] = [
        (
            _at(1, 2),
            lambda at, c: [
                _change(
                    c,
                    at,
                    ("cpu", None),
                    State.WARN,
                    value=93.4,
                    threshold=90,
                    evidence="at or above 90 for 300 s (31 readings, worst 97.1)",
                )
            ],
        ),
        (
            _at(1, 11),
            lambda at, c: [
                _change(
                    c,
                    at,
                    ("cpu", None),
                    State.OK,
                    value=21.0,
                    threshold=85,
                    evidence="below 85 for 120 s (13 readings, worst 84.2)",
                )
            ],
        ),
    ]
    if scenario in {"warning", "critical"}:
        story += [
            (
                _at(2, 0),
                lambda at, c: [
                    _change(
                        c,
                        at,
                        ("certificate", None),
                        State.WARN,
                        value=21,
                        threshold=30,
                        evidence="at or below 30 for 0 s (1 readings, worst 21)",
                    )
                ],
            ),
            (
                _at(3, 3),
                lambda at, c: [
                    Incident(
                        time=at,
                        check="config_rejected",
                        event="config.rejected",
                        severity=Severity.WARNING,
                        component=PUBLISHER,
                        message="intervalSeconds: expected a number between 1 and 3600, got 0",
                    )
                ],
            ),
            (
                _at(4, 40),
                lambda at, c: [
                    _change(
                        c,
                        at,
                        ("disk_space", "/data"),
                        State.WARN,
                        value=8.2,
                        threshold=10,
                        evidence="at or below 10 for 60 s (7 readings, worst 8.2)",
                    )
                ],
            ),
            (
                _at(5, 20),
                lambda at, c: [
                    _change(
                        c,
                        at,
                        ("temperature", "cpu_thermal"),
                        State.UNKNOWN,
                        evidence="no reading for 600 s (UNKNOWN after 600 s)",
                    )
                ],
            ),
        ]
    if scenario == "critical":
        story += [
            (
                _at(5, 31),
                lambda at, c: [
                    Lifecycle(
                        time=at, event=LifecycleEvent.REBOOT_DETECTED, detail="no clean shutdown before it"
                    )
                ],
            ),
            (
                _at(5, 33),
                lambda at, c: [
                    Incident(
                        time=at,
                        check="integrity",
                        event="store.integrity_failed",
                        severity=Severity.CRITICAL,
                        component=STORE,
                        message="a record of namespace telemetry-spool failed its check and was refused",
                    ),
                    _change(
                        c,
                        at,
                        ("integrity", None),
                        State.CRITICAL,
                        value=1,
                        threshold=1,
                        evidence="at or above 1 for 0 s (1 readings, worst 1)",
                    ),
                ],
            ),
            (
                _at(5, 41),
                lambda at, c: [
                    _change(
                        c,
                        at,
                        ("heartbeat", STORE),
                        State.WARN,
                        value=1.6,
                        threshold=1.5,
                        evidence="at or above 1.5 for 0 s (1 readings, worst 1.6)",
                    )
                ],
            ),
            (
                _at(5, 44),
                lambda at, c: [
                    _change(
                        c,
                        at,
                        ("heartbeat", STORE),
                        State.CRITICAL,
                        value=3.1,
                        threshold=3,
                        evidence="at or above 3 for 0 s (1 readings, worst 3.1)",
                    ),
                    _change(
                        c,
                        at,
                        ("store", None),
                        State.CRITICAL,
                        value=620,
                        threshold=600,
                        evidence="at or above 600 for 0 s (11 readings, worst 620)",
                    ),
                ],
            ),
        ]
    return story
