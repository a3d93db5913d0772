"""`device-health`: the field technician's view of the health log. Standard library only.

It reads the health log alone (no network, no IPC, nothing beyond the standard library), so it works on a
device whose network is down and whose component environment is broken: `device-health`, or
`python3 -m device_agent.health_cli` from the component's artifact folder. docs/field-guide.md is the
technician's page, docs/health.md the reference (`--json`: docs/schemas/device-health.schema.json).

Exit codes, for scripts: 0 healthy, 1 warning (UNKNOWN counts as a warning: a state no one can vouch for
needs a look), 2 critical, 3 no log or unreadable log, 64 wrong usage, 73 `--export` could not create its
file. argparse's own exit code for usage errors (2) would read as "critical", so usage errors exit 64.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import gzip
import hashlib
import io
import json
import os
import re
import stat
import sys
import tarfile
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, NoReturn, TextIO

from device_agent import __version__
from device_agent.errors import NotFoundError, StorageError
from device_agent.health_log import (
    DEFAULT_LOG_DIR,
    LOG_DIR_ENV,
    LOG_NAME,
    RANK,
    BadLineError,
    CheckStatus,
    Incident,
    Lifecycle,
    LifecycleEvent,
    LogContents,
    Problem,
    Record,
    Severity,
    Snapshot,
    State,
    StateChange,
    current_checks,
    log_files,
    parse_line,
    read_log,
    worst,
)

EXIT_OK: Final = 0
EXIT_WARNING: Final = 1
EXIT_CRITICAL: Final = 2
EXIT_NO_LOG: Final = 3
EXIT_USAGE: Final = 64  # sysexits.h EX_USAGE
EXIT_CANNOT_CREATE: Final = 73  # sysexits.h EX_CANTCREAT

JSON_SCHEMA: Final = "device-health/1"
EXPORT_SCHEMA: Final = "device-health-export/1"
WIDTH: Final = 80
DEFAULT_WINDOW: Final = timedelta(hours=24)
TIMELINE_LINES: Final = 15  # the text screen; --json lists the whole window
JSON_TIMELINE_MAX: Final = 1000
DEFAULT_SNAPSHOT_INTERVAL: Final = 300.0
STALE_INTERVALS: Final = 3  # a snapshot older than this many intervals makes the log stale
FOLLOW_POLL_SECONDS: Final = 1.0

EXIT_CODES: Final[Mapping[State, int]] = {
    State.OK: EXIT_OK,
    State.UNKNOWN: EXIT_WARNING,
    State.WARN: EXIT_WARNING,
    State.CRITICAL: EXIT_CRITICAL,
}
STATUS_WORDS: Final[Mapping[State, str]] = {
    State.OK: "HEALTHY",
    State.WARN: "WARNING",
    State.CRITICAL: "CRITICAL",
    State.UNKNOWN: "UNKNOWN",
}
_COLOURS: Final = {State.OK: "32", State.WARN: "33", State.CRITICAL: "1;31", State.UNKNOWN: "35"}
GG_CLI: Final = "sudo /greengrass/v2/bin/greengrass-cli"
STALE_CHECK: Final = "monitor_stale"


# --- the triage catalogue -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Hint:
    """Plain words for a technician: what it means, what to look at, what to do."""

    meaning: str
    look: str
    action: str


@dataclasses.dataclass(frozen=True)
class Triage:
    title: str
    source: str  # where the monitor gets this check's readings (for UNKNOWN)
    hint: Hint
    critical: Hint | None = None  # when CRITICAL means something different from WARN
    unknown: Hint | None = None  # when no reading has a better reason than a silent component

    def for_state(self, state: State) -> Hint:
        if state is State.UNKNOWN and self.unknown is not None:
            return self.unknown
        if state is State.UNKNOWN:
            return Hint(
                meaning="The monitor has had no reading for this check for a while, so its state is not"
                " known. The last known value is shown.",
                look=f"Where the readings come from: {self.source}. Is it running? ({GG_CLI} component list)",
                action="Restart the component that provides the readings. If they do not come back,"
                " export the log and report it.",
            )
        return self.critical if state is State.CRITICAL and self.critical is not None else self.hint


_RESOURCES = "the telemetry publisher's samples (com.deviceagent.TelemetryPublisher)"
_EVENTS = "events from the device agent's components"
_COMPONENT_LOG = "/greengrass/v2/logs/NAME.log"

TRIAGE: Final[Mapping[str, Triage]] = {
    "cpu": Triage(
        "Processor (CPU) busy",
        _RESOURCES,
        Hint(
            "The processor has been busy for minutes. The device may answer slowly and its programs may"
            " fall behind.",
            "Which program uses the processor: run `top` and read the first lines. A program stuck in a"
            " loop, or more work than this device can do, are the usual causes.",
            "If one program is stuck, restart it (a component: "
            f"`{GG_CLI} component restart --names NAME`). If the load is the device's normal work,"
            " report it: the device may be too small for its job.",
        ),
    ),
    "memory": Triage(
        "Memory nearly full",
        _RESOURCES,
        Hint(
            "Almost all memory is in use. The system may kill programs (out of memory), and they restart.",
            "`free -m` for what is left; `top`, then press M, for the largest programs; `dmesg | grep -i"
            " oom` for programs already killed.",
            "Restart the program that keeps growing, or the device if you cannot find it. Report it"
            " with the exported log.",
        ),
    ),
    "swap": Triage(
        "Swap heavily used",
        _RESOURCES,
        Hint(
            "The device is short of memory and moves memory to storage, which is slow and wears out"
            " SD cards.",
            "`free -m`; `vmstat 5` (numbers above 0 in the si and so columns mean active swapping).",
            "As for memory: find and restart the program that uses the most memory. Report it if it"
            " happens again.",
        ),
    ),
    "disk_space": Triage(
        "Disk nearly full",
        _RESOURCES,
        Hint(
            "This file system is running out of space. When it is full, logs, updates and stored data"
            " cannot be written, and components fail.",
            "`df -h` for the mount point shown; `sudo du -xh --max-depth=2 MOUNT | sort -h | tail` for"
            " what is large. Old logs in /greengrass/v2/logs and /var/log are common causes.",
            "Delete what is safe to delete: old rotated logs, core dumps, downloads. Do not delete"
            " anything else under /greengrass/v2. If it fills up again, report it.",
        ),
    ),
    "inodes": Triage(
        "No room for more files (inodes)",
        _RESOURCES,
        Hint(
            "A file system can hold only so many files, and this one is nearly there, usually because"
            " of very many small files. New files cannot be created, even with space free.",
            "`df -i` for the mount point shown; look for folders with huge numbers of files (caches,"
            " temporary files, mail queues).",
            "Remove the small files that are safe to remove, and report which program makes them.",
        ),
    ),
    "temperature": Triage(
        "Device too hot",
        _RESOURCES,
        Hint(
            "A temperature sensor reads above its limit. A hot device slows itself down, may switch"
            " off, and ages faster.",
            "Airflow: blocked vents, a stopped fan, direct sun, a closed cabinet, dust. `cat"
            " /sys/class/thermal/thermal_zone*/temp` shows millidegrees.",
            "Restore airflow or shade, clean the dust, check the fan. If it stays hot with good"
            " airflow, report it: the enclosure may need ventilation.",
        ),
    ),
    "throttling": Triage(
        "Processor slowed down (throttled)",
        _RESOURCES,
        Hint(
            "The board lowered the processor's speed to protect itself, usually from heat or a weak"
            " power supply. Everything runs slower.",
            "The temperature and power supply checks. On a Raspberry Pi: `vcgencmd get_throttled`"
            " (0x0 is good); elsewhere `dmesg | grep -i throttl`.",
            "Fix the cause: cooling, or the right power supply and cable.",
        ),
    ),
    "undervoltage": Triage(
        "Power supply too weak (undervoltage)",
        _RESOURCES,
        Hint(
            "The supply voltage dropped below the safe level. This causes random crashes, reboots and"
            " damaged SD cards.",
            "The adapter's rating, the cable (long or thin cables lose voltage), loose connectors, USB"
            " devices drawing power. `dmesg | grep -i voltage`; on a Raspberry Pi `vcgencmd"
            " get_throttled`.",
            "Use the specified power adapter and a short, thick cable; unplug power-hungry USB"
            " devices. Report it if it continues.",
        ),
    ),
    "heartbeat": Triage(
        "Component not responding",
        "the component's own heartbeat",
        Hint(
            "A component of the device agent stopped sending its regular heartbeat: it crashed, hung"
            " or was stopped.",
            f"`{GG_CLI} component list` for its state (RUNNING, ERRORED, BROKEN); the last lines of"
            f" its log, {_COMPONENT_LOG}.",
            f"Restart it: `{GG_CLI} component restart --names NAME`. If it is BROKEN or keeps"
            " stopping, export the logs and report it.",
        ),
    ),
    "integrity": Triage(
        "Stored data failed its integrity check",
        _EVENTS,
        Hint(
            "Data in the encrypted store did not pass its check: it was damaged (failing storage, a"
            " power cut) or changed. The damaged data is refused, never used.",
            "`dmesg | grep -i -e error -e mmc -e ext4` for storage errors; the reboot check for"
            " recent power cuts.",
            "Do not try to repair the store. Export the health log and the component logs and report"
            " it. A failing SD card or disk should be replaced.",
        ),
    ),
    "config_rejected": Triage(
        "Configuration refused",
        _EVENTS,
        Hint(
            "A deployment sent a configuration that a component refused as invalid. The component"
            " keeps working with its last good configuration.",
            f"The component's log ({_COMPONENT_LOG}) names the setting and what was expected.",
            "Nothing to fix on the device: tell the operator who made the deployment, with the"
            " setting's name from the log.",
        ),
    ),
    "unauthorized": Triage(
        "Requests refused (not authorized)",
        _EVENTS,
        Hint(
            "A program asked Greengrass for something its permissions do not allow. Usually a"
            " deployment mistake; many refusals may mean something is probing the device.",
            "The components' logs for `unauthorized`, and which component asked.",
            "Report it to the operator. If there is software on the device that should not be there,"
            " disconnect the network and report a security incident.",
        ),
    ),
    "cloud_connection": Triage(
        "Not connected to the cloud",
        "the Greengrass nucleus's connection status",
        Hint(
            "The device has been offline from AWS IoT Core for a while. It keeps working and keeps its"
            " data, which it sends when the connection returns.",
            "The network: cable, Wi-Fi or modem signal; `ping -c 3 8.8.8.8`; DNS (`getent hosts"
            " amazonaws.com`); the clock (a wrong clock breaks secure connections); a firewall that"
            " must allow port 8883 or 443.",
            "Restore the network. If the network works and the device stays offline, check the clock"
            " and report it with the exported log.",
        ),
    ),
    "last_publish": Triage(
        "Health reports not reaching the cloud",
        "the health monitor's own reports to the cloud (com.deviceagent.HealthMonitor)",
        Hint(
            "The health monitor's reports have not reached the cloud for a while, even if the device"
            " looks connected, so the operator sees old news. The checks here are still up to date.",
            "The cloud connection check first; the health monitor's log"
            " (/greengrass/v2/logs/com.deviceagent.HealthMonitor.log) for `health.summary_not_sent` or"
            " `health.publish_unauthorized`; /greengrass/v2/logs/greengrass.log for MQTT errors.",
            "Fix the network first. If the device is online and it goes on, restart the health monitor"
            f" (`{GG_CLI} component restart --names com.deviceagent.HealthMonitor`). A report refused as"
            " not authorized is for the operator (the device's cloud policy): report it.",
        ),
    ),
    "certificate": Triage(
        "Device certificate expiring",
        "the device certificate file",
        Hint(
            "The device's certificate, its identity for the cloud, expires soon (the value is days"
            " left). Once it expires the device cannot connect.",
            "Nothing on the device; a wrong clock can make the date look wrong (`date -u`).",
            "Tell the operator now, so the certificate is renewed remotely before it expires.",
        ),
        critical=Hint(
            "The certificate expires within days, or has expired (negative days): the device cannot"
            " connect, or soon will not.",
            "The date: `date -u`. A clock far in the future makes a valid certificate look expired.",
            "If the date is wrong, fix the clock first. Otherwise report it urgently: the certificate"
            " must be replaced.",
        ),
        unknown=Hint(
            "The monitor cannot read the device certificate file, or cannot make sense of it, so its"
            " expiry is not known. The events below say why (certificate.unreadable).",
            "Whether the file named in the monitor's setting certificatePath exists: `sudo ls -l` of"
            " that path. The device itself still connects if the nucleus has its certificate.",
            "Nothing to repair on the device: report it, so the operator corrects certificatePath.",
        ),
    ),
    "clock_unset": Triage(
        "Clock not set",
        "the system clock",
        Hint(
            "The system clock was never set: it shows a date long past, usually because the device"
            " has no clock battery and could not reach a time server. Secure connections fail, and the"
            " times in this report are wrong.",
            "`date -u`; `timedatectl status` (System clock synchronized: yes); access to a time"
            " server (NTP, UDP port 123).",
            "Restore access to a time server, or set the time: `sudo timedatectl set-time 'YYYY-MM-DD"
            " HH:MM:SS'`.",
        ),
    ),
    "clock_jump": Triage(
        "Clock jumped",
        "the system clock",
        Hint(
            "The system time changed suddenly (a time sync after a long time off, or someone set it)."
            " Times before the jump may not line up with times after it.",
            "`timedatectl status`; `journalctl -u systemd-timesyncd` (or chrony) for the correction.",
            "Usually nothing, if it happened once after power-on. Repeated jumps point to a failing"
            " clock battery or a bad time source: report them.",
        ),
    ),
    "reboot": Triage(
        "Device restarted without a clean shutdown",
        "the health monitor's own records",
        Hint(
            "The device went down without shutting down first: a power cut, a crash or a watchdog."
            " A clean reboot (a command, an update) is only noted in the events, not counted here.",
            "The power supply and undervoltage checks; `last -x | head`; `journalctl --list-boots`.",
            "Find the cause of the power loss or crash. Report it if it happens again.",
        ),
    ),
    "unexpected_restart": Triage(
        "Component restarted unexpectedly",
        "the health monitor's own records",
        Hint(
            "A component stopped without being asked and Greengrass restarted it. Several restarts in"
            " a short time mean it is crash-looping.",
            f"The last lines of the component's log before the restart ({_COMPONENT_LOG}).",
            "If it keeps restarting, export the logs and report it. Greengrass gives up on a"
            " component after repeated errors (state BROKEN).",
        ),
    ),
    "store": Triage(
        "Encrypted store not answering",
        "the encrypted store's answers",
        Hint(
            "The component that keeps the device's data (com.deviceagent.EncryptedStore) does not"
            " answer. Other components cannot save or read their data.",
            f"`{GG_CLI} component list` for its state; its log; free disk space (a full disk stops"
            " the store).",
            "Free disk space if needed, then restart it: "
            f"`{GG_CLI} component restart --names com.deviceagent.EncryptedStore`. Report it if it"
            " does not recover.",
        ),
    ),
    STALE_CHECK: Triage(
        "Health log not updated",
        "the health monitor (com.deviceagent.HealthMonitor)",
        Hint(
            "The health monitor has not written to its log recently, so what this report shows may"
            " be out of date. The monitor may be stopped, or the device was off.",
            f"`{GG_CLI} component list` for com.deviceagent.HealthMonitor; its log,"
            " /greengrass/v2/logs/com.deviceagent.HealthMonitor.log.",
            f"Restart it (`{GG_CLI} component restart --names com.deviceagent.HealthMonitor`), wait"
            " a few minutes and run device-health again.",
        ),
    ),
}

_GENERIC = Triage(
    "Check needs attention",
    "the health monitor",
    Hint(
        "This check is outside its limits.",
        "The value and threshold shown, and the log of the component concerned.",
        "Export the log and report it.",
    ),
)


def triage(check: str) -> Triage:
    return TRIAGE.get(check, _GENERIC)


# --- the report ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Attention:
    """A check that needs attention, with its triage hint and the evidence of its last state change."""

    status: CheckStatus
    triage: Triage
    hint: Hint
    evidence: str | None


@dataclasses.dataclass(frozen=True)
class Report:
    generated_at: datetime
    log_dir: str
    status: State
    checks: tuple[CheckStatus, ...]
    attention: tuple[Attention, ...]
    snapshot_time: datetime | None
    snapshot_interval: float
    stale: bool
    window_start: datetime
    timeline: tuple[Record, ...]
    problems: tuple[Problem, ...]
    more_problems: int
    since: str | None
    check: str | None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    @property
    def snapshot_age(self) -> float | None:
        if self.snapshot_time is None:
            return None
        return (self.generated_at - self.snapshot_time).total_seconds()


def _matches(pattern: str | None, check: str, subject: str | None) -> bool:
    if pattern is None:
        return True
    return pattern in (check, f"{check}:{subject}")


def _record_check(record: Record) -> tuple[str, str | None] | None:
    if isinstance(record, StateChange):
        return record.key
    if isinstance(record, Incident):
        return (record.check, None)
    return None


def _newest_snapshot(records: Sequence[Record]) -> Snapshot | None:
    for record in reversed(records):
        if isinstance(record, Snapshot):
            return record
    return None


def _last_evidence(records: Sequence[Record]) -> dict[tuple[str, str | None], str]:
    evidence: dict[tuple[str, str | None], str] = {}
    for record in records:
        if isinstance(record, StateChange):
            evidence[record.key] = record.evidence
    return evidence


def build_report(
    contents: LogContents,
    *,
    log_dir: str,
    now: datetime,
    since: datetime | None = None,
    since_text: str | None = None,
    check: str | None = None,
) -> Report:
    records = contents.records
    snapshot = _newest_snapshot(records)
    interval = (snapshot.interval_seconds if snapshot else None) or DEFAULT_SNAPSHOT_INTERVAL
    stale = snapshot is None or (now - snapshot.time).total_seconds() > STALE_INTERVALS * interval
    checks = sorted(
        (s for s in current_checks(records).values() if _matches(check, s.check, s.subject)),
        key=lambda s: (-RANK[s.state], s.check, s.subject or ""),
    )
    evidence = _last_evidence(records)
    attention = [
        Attention(s, triage(s.check), triage(s.check).for_state(s.state), evidence.get(s.key) or None)
        for s in checks
        if s.state is not State.OK
    ]
    status = worst(s.state for s in checks) if checks else State.UNKNOWN
    if stale and records:
        status = worst((status, State.UNKNOWN))
        stale_status = CheckStatus(
            check=STALE_CHECK, state=State.UNKNOWN, since=snapshot.time if snapshot else None
        )
        attention.insert(0, Attention(stale_status, TRIAGE[STALE_CHECK], TRIAGE[STALE_CHECK].hint, None))
    newest = records[-1].time if records else now
    window_start = since if since is not None else newest - DEFAULT_WINDOW
    timeline = tuple(
        record
        for record in records
        if not isinstance(record, Snapshot)
        and record.time >= window_start
        and (check is None or ((key := _record_check(record)) is not None and _matches(check, *key)))
    )
    return Report(
        generated_at=now,
        log_dir=log_dir,
        status=status,
        checks=tuple(checks),
        attention=tuple(attention),
        snapshot_time=snapshot.time if snapshot else None,
        snapshot_interval=interval,
        stale=stale,
        window_start=window_start,
        timeline=timeline,
        problems=contents.problems,
        more_problems=contents.more_problems,
        since=since_text,
        check=check,
    )


# --- formatting ---------------------------------------------------------------------------------------------


def _clock(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _short_clock(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%m-%d %H:%M:%S")


def _duration(seconds: float, *, compact: bool = False) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if compact:
        parts = [(days, "d"), (hours, "h"), (minutes, "m")] if seconds >= 60 else [(secs, "s")]  # noqa: PLR2004
        shown = [f"{n}{unit}" for n, unit in parts if n][:2]
        return "".join(shown) or "0m"
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def _value(value: object, unit: str | None) -> str:
    if value is None:
        return "-"
    text = f"{value:g}" if isinstance(value, int | float) else str(value)
    if unit:
        text += unit if unit.startswith("%") else f" {unit}"
    return text


def _name(check: str, subject: str | None) -> str:
    return check if subject is None else f"{check} {subject}"


class _Style:
    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def state(self, state: State, text: str) -> str:
        return f"\x1b[{_COLOURS[state]}m{text}\x1b[0m" if self.colour else text

    def bold(self, text: str) -> str:
        return f"\x1b[1m{text}\x1b[0m" if self.colour else text


# A number stays on the line of its unit ("0 s", not "0" at the end of one line and "s" on the next).
_NUMBER_UNIT = re.compile(r"(?<=\d) (?=(?:s|min|h|d|days|C|intervals|events|readings)\b)")


def _wrap(text: str, *, indent: str, first: str | None = None) -> list[str]:
    lines = textwrap.wrap(
        _NUMBER_UNIT.sub("\xa0", text),
        width=WIDTH,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
        break_on_hyphens=False,
    ) or [first or indent]
    return [line.replace("\xa0", " ") for line in lines]


def _summary(report: Report) -> str:
    counts = dict.fromkeys(State, 0)
    for status in report.checks:
        counts[status.state] += 1
    parts = [
        f"{counts[State.CRITICAL]} critical" if counts[State.CRITICAL] else "",
        f"{counts[State.WARN]} warning" if counts[State.WARN] else "",
        f"{counts[State.UNKNOWN]} unknown" if counts[State.UNKNOWN] else "",
        f"{counts[State.OK]} OK" if counts[State.OK] else "",
    ]
    if report.stale:
        parts.append("log stale")
    return ", ".join(part for part in parts if part) or "no checks in the log"


def _snapshot_line(report: Report) -> str:
    if report.snapshot_time is None:
        return "No snapshot in the log yet: the states below come from state changes alone."
    age = report.snapshot_age or 0.0
    when = f"Newest snapshot {_clock(report.snapshot_time)} UTC"
    if age < -60:  # noqa: PLR2004 - a minute of disagreement between clocks is normal
        return f"{when}, in the future (clock changed?)"
    line = f"{when}, {_duration(age)} ago"
    if report.stale:
        line += f" - STALE (expected every {_duration(report.snapshot_interval)})"
    return line


_NAME_WIDTH: Final = 27


def _table(report: Report, style: _Style) -> list[str]:
    header = f"{'CHECK':<{_NAME_WIDTH}} {'STATE':<9} {'VALUE':<15} SINCE (UTC)"
    lines = [style.bold(header)]
    for status in report.checks:
        name = _name(status.check, status.subject)
        since = "-"
        if status.since is not None:
            ago = _duration((report.generated_at - status.since).total_seconds(), compact=True)
            since = f"{status.since.astimezone(UTC):%Y-%m-%d %H:%M} ({ago})"
        if len(name) > _NAME_WIDTH:
            lines.extend(_wrap(name, indent="  ", first=""))
            name = ""
        state = style.state(status.state, f"{status.state.value:<9}")
        value = _value(status.value, status.unit)[:15]
        lines.append(f"{name:<{_NAME_WIDTH}} {state} {value:<15} {since}".rstrip())
    return lines


def _labelled(label: str, coloured: str, text: str, *, indent: str) -> list[str]:
    """`text` wrapped after `label`, with the label then coloured (wrapping counts visible width only)."""
    lines = _wrap(text, indent=indent, first=label)
    lines[0] = coloured + lines[0][len(label) :]
    return lines


def _attention(report: Report, style: _Style) -> list[str]:
    lines: list[str] = [style.bold("WHAT NEEDS ATTENTION")]
    for item in report.attention:
        status = item.status
        label = f"[{status.state.value}] "
        if status.check == STALE_CHECK:
            heading = f"{item.triage.title}: newest snapshot {_duration(report.snapshot_age or 0)} old"
            if report.snapshot_time is None:
                heading = f"{item.triage.title}: no snapshot in the log"
        else:
            title = "No recent readings" if status.state is State.UNKNOWN else item.triage.title
            heading = f"{title}: {_name(status.check, status.subject)}"
        lines.extend(_labelled(label, style.state(status.state, label), heading, indent="  "))
        facts = []
        if status.check != STALE_CHECK:
            facts.append(f"Value {_value(status.value, status.unit)}")
            if status.threshold is not None:
                facts.append(f"threshold {_value(status.threshold, status.unit)}")
            if status.since is not None:
                facts.append(f"since {_clock(status.since)} UTC")
        text = ", ".join(facts) + "." if facts else ""
        if item.evidence:
            text += f" Evidence: {item.evidence}."
        if text:
            lines.extend(_wrap(text.strip(), indent="  "))
        hint = item.hint
        for label, body in (("Means:", hint.meaning), ("Check:", hint.look), ("Do:", hint.action)):
            lines.extend(_wrap(body, indent=" " * 10, first=f"  {label:<8}"))
        lines.append("")
    return lines[:-1]


_LIFECYCLE_TEXT: Final[Mapping[LifecycleEvent, str]] = {
    LifecycleEvent.MONITOR_STARTED: "health monitor started",
    LifecycleEvent.MONITOR_STOPPED: "health monitor stopped",
    LifecycleEvent.REBOOT_DETECTED: "device reboot detected",
    LifecycleEvent.GROUP_NOT_APPLIED: "log not shared with the technician group",
    LifecycleEvent.TRIMMED: "old log files removed to fit the size limit",
    LifecycleEvent.SNAPSHOT_TRIMMED: "some checks left out of a snapshot to fit the line limit",
    LifecycleEvent.EVENTS_REJECTED: "malformed events ignored",
    LifecycleEvent.LOG_RESUMED: "the log can be written again; what waited follows",
}
_SEVERITY_STATE: Final = {
    Severity.INFO: None,
    Severity.WARNING: State.WARN,
    Severity.CRITICAL: State.CRITICAL,
}


def _event_text(record: Record) -> tuple[State | None, str]:
    """The level (None: information) and the words of one timeline entry."""
    match record:
        case StateChange():
            text = f"{_name(record.check, record.subject)}: {record.old.value} -> {record.new.value}"
            if record.value is not None:
                text += f", {_value(record.value, record.unit)}"
            if record.evidence:
                text += f"; {record.evidence}"
            return record.new, text
        case Incident():
            text = f"{record.check}: {record.event}"
            if record.component:
                text += f" ({record.component})"
            if record.message:
                text += f": {record.message}"
            return _SEVERITY_STATE[record.severity], text
        case Lifecycle():
            text = _LIFECYCLE_TEXT[record.event]
            return None, f"{text}: {record.detail}" if record.detail else text
        case _:
            return None, ""


def _timeline(report: Report, style: _Style) -> list[str]:
    window = f"since {_clock(report.window_start)} UTC"
    lines = [style.bold(f"RECENT EVENTS ({window}, oldest first)")]
    shown = report.timeline[-TIMELINE_LINES:]
    if len(report.timeline) > len(shown):
        hidden = len(report.timeline) - len(shown)
        lines.append(f"({hidden} earlier events not shown: use --since, --check or --json)")
    if not shown:
        lines.append("No events in this period.")
    lines.extend(line for record in shown for line in _event_lines(record, style))
    return lines


def _event_lines(record: Record, style: _Style) -> list[str]:
    level, text = _event_text(record)
    word = f"{level.value if level else 'info':<8}"
    label = f"{_short_clock(record.time)}  {word}  "
    coloured = label if level is None else label.replace(word, style.state(level, word))
    return _labelled(label, coloured, text, indent=" " * len(label))


def _problems(report: Report) -> list[str]:
    lines = ["LOG PROBLEMS (these lines were skipped; the rest was read)"]
    for problem in report.problems:
        where = problem.file if problem.line == 0 else f"{problem.file} line {problem.line}"
        lines.extend(_wrap(f"{where}: {problem.reason}", indent="  ", first=""))
    if report.more_problems:
        lines.append(f"... and {report.more_problems} more")
    return lines


def render_text(report: Report, *, colour: bool = False) -> str:
    style = _Style(colour)
    status = style.state(report.status, STATUS_WORDS[report.status])
    lines = [
        f"{style.bold('DEVICE HEALTH:')} {status} ({_summary(report)})",
        *_wrap(_snapshot_line(report), indent="  ", first=""),
        *_wrap(f"Log {report.log_dir}", indent="  ", first=""),
    ]
    if report.check is not None:
        lines.append(f"Only check {report.check}")
    lines += ["", *_table(report, style)]
    if report.attention:
        lines += ["", *_attention(report, style)]
    lines += ["", *_timeline(report, style)]
    if report.problems:
        lines += ["", *_problems(report)]
    if report.status is not State.OK:
        lines += ["", "To send the log to support: device-health --export FILE.tar.gz"]
    return "\n".join(lines) + "\n"


# --- JSON ---------------------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_json(status: CheckStatus) -> dict[str, Any]:
    return {
        "check": status.check,
        "subject": status.subject,
        "state": status.state.value,
        "value": status.value,
        "unit": status.unit,
        "threshold": status.threshold,
        "since": _iso(status.since),
        "verified": _iso(status.verified),
    }


def _event_json(record: Record) -> dict[str, Any]:
    level, text = _event_text(record)
    entry: dict[str, Any] = {
        "time": _iso(record.time),
        "level": level.value if level else "INFO",
        "text": text,
    }
    match record:
        case StateChange():
            entry |= {"kind": "state", "check": record.check, "subject": record.subject}
            entry |= {
                "from": record.old.value,
                "to": record.new.value,
                "value": record.value,
                "unit": record.unit,
            }
            entry |= {"threshold": record.threshold, "evidence": record.evidence, "since": _iso(record.since)}
        case Incident():
            entry |= {"kind": "incident", "check": record.check, "event": record.event}
            entry |= {
                "severity": record.severity.value,
                "component": record.component,
                "message": record.message,
            }
        case Lifecycle():
            entry |= {"kind": "lifecycle", "event": record.event.value, "detail": record.detail}
    return entry


def render_json(report: Report) -> dict[str, Any]:
    age = report.snapshot_age
    snapshot = None
    if report.snapshot_time is not None and age is not None:
        snapshot = {
            "time": _iso(report.snapshot_time),
            "ageSeconds": round(age, 3),
            "intervalSeconds": report.snapshot_interval,
        }
    return {
        "schema": JSON_SCHEMA,
        "generatedAt": _iso(report.generated_at),
        "logDir": report.log_dir,
        "status": report.status.value,
        "exitCode": report.exit_code,
        "stale": report.stale,
        "newestSnapshot": snapshot,
        "filters": {"since": report.since, "check": report.check, "windowStart": _iso(report.window_start)},
        "checks": [_check_json(status) for status in report.checks],
        "attention": [
            {
                "check": item.status.check,
                "subject": item.status.subject,
                "state": item.status.state.value,
                "title": item.triage.title,
                "meaning": item.hint.meaning,
                "whatToCheck": item.hint.look,
                "whatToDo": item.hint.action,
                "evidence": item.evidence,
            }
            for item in report.attention
        ],
        "timeline": [_event_json(record) for record in report.timeline[-JSON_TIMELINE_MAX:]],
        "logProblems": [{"file": p.file, "line": p.line, "problem": p.reason} for p in report.problems],
        "moreLogProblems": report.more_problems,
    }


def _error_json(log_dir: str, now: datetime, message: str) -> dict[str, Any]:
    return {
        "schema": JSON_SCHEMA,
        "generatedAt": _iso(now),
        "logDir": log_dir,
        "status": State.UNKNOWN.value,
        "exitCode": EXIT_NO_LOG,
        "error": message,
    }


# --- options ------------------------------------------------------------------------------------------------

_SPAN = re.compile(r"(\d+)([smhdw])")
_SPAN_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: datetime) -> datetime:
    """`2h`, `30m`, `1d12h` (back from now) or an ISO time (UTC unless it says otherwise)."""
    compact = text.strip().lower()
    if compact and _SPAN.sub("", compact) == "":
        seconds = sum(int(n) * _SPAN_SECONDS[unit] for n, unit in _SPAN.findall(compact))
        return now - timedelta(seconds=seconds)
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r}: use a span like 2h, 30m or 1d, or a time like 2026-03-01T08:00"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="device-health",
        description="Show the device's health from the health monitor's log (no network needed).",
        epilog="Exit codes: 0 healthy, 1 warning or unknown, 2 critical, 3 no readable log, 64 wrong usage,"
        " 73 export file not created. Colour only on a terminal; NO_COLOR turns it off.",
    )
    parser.add_argument(
        "--log-dir",
        help=f"the health log's folder (default: ${LOG_DIR_ENV}, else {DEFAULT_LOG_DIR})",
    )
    parser.add_argument("--since", help="events since a time span ago (2h, 30m, 1d) or an ISO time (UTC)")
    parser.add_argument("--check", metavar="NAME", help="only this check (e.g. cpu, or disk_space:/data)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--json", action="store_true", help="a machine-readable report (schema device-health/1)"
    )
    output.add_argument(
        "--follow", action="store_true", help="then show new entries as they come (Ctrl-C stops)"
    )
    output.add_argument(
        "--export", metavar="FILE", help="write the log files and a manifest to FILE (.tar.gz)"
    )
    parser.add_argument("--version", action="version", version=f"device-health {__version__}")
    return parser


def _use_colour(stream: TextIO, environ: Mapping[str, str]) -> bool:
    if environ.get("NO_COLOR") or environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


# --- follow -------------------------------------------------------------------------------------------------


def _open_log_file(path: Path) -> io.BufferedReader | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    return open(fd, "rb")  # noqa: PTH123 - wraps a descriptor opened without following links


class _Tail:
    """New complete lines of the log as the monitor appends them, across rotations.

    When `health.log` has been rotated since the last poll, the rest of the file we were reading is read
    first, then every file the rotations made after it (several, if the log rotated more than once), then
    the new `health.log`. Files are removed oldest first, so if ours is gone, every file left is newer.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._file: io.BufferedReader | None = None
        self._inode: int | None = None
        self._pending = b""

    def start_at_end(self) -> None:
        self._file = _open_log_file(self.directory / LOG_NAME)
        if self._file is not None:
            self._inode = os.fstat(self._file.fileno()).st_ino
            self._file.seek(0, os.SEEK_END)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _split(self, data: bytes, *, end_of_file: bool) -> list[bytes]:
        *complete, self._pending = (self._pending + data).split(b"\n")
        if end_of_file and self._pending:  # a torn tail: one bad line, never glued to the next file
            complete.append(self._pending)
            self._pending = b""
        return [line for line in complete if line.strip()]

    def lines(self) -> list[bytes]:
        current = self.directory / LOG_NAME
        try:
            inode: int | None = current.lstat().st_ino
        except OSError:
            inode = None
        if self._file is not None and inode == self._inode:
            if self._file.tell() > os.fstat(self._file.fileno()).st_size:
                self._file.seek(0)  # truncated by hand: start over
            return self._split(self._file.read(), end_of_file=False)
        lines: list[bytes] = []
        if self._file is not None:  # rotated: finish the file we had
            lines += self._split(self._file.read(), end_of_file=True)
            self.close()
        try:
            paths = log_files(self.directory)
        except (NotFoundError, StorageError):
            paths = []
        inodes = []
        for path in paths:
            with contextlib.suppress(OSError):
                inodes.append((path, path.lstat().st_ino))
        seen = [index for index, (_, number) in enumerate(inodes) if number == self._inode]
        for path, number in inodes[seen[0] + 1 if seen else 0 :]:
            file = _open_log_file(path)
            if file is None:
                continue
            if path.name == LOG_NAME:
                self._file, self._inode = file, number
                lines += self._split(file.read(), end_of_file=False)
            else:
                with file:
                    lines += self._split(file.read(), end_of_file=True)
        return lines


def _follow(directory: Path, report: Report, style: _Style, streams: _Io) -> int:
    """Print new entries until Ctrl-C; returns the exit code of the status at that moment."""
    out, sleep, now = streams.out, streams.sleep, streams.clock
    records = list(report.timeline)
    checks = {status.key: status for status in report.checks}
    check = report.check
    tail = _Tail(directory)
    tail.start_at_end()  # before saying so: a line written once the words are out is followed
    out.write(f"Following {directory / LOG_NAME} (Ctrl-C to stop)...\n")
    out.flush()
    last_snapshot = report.snapshot_time
    try:
        while True:
            sleep(FOLLOW_POLL_SECONDS)
            for line in tail.lines():
                try:
                    record = parse_line(line)
                except BadLineError as error:
                    out.write(f"{_short_clock(now())}  (skipped a bad line: {error})\n")
                    continue
                if isinstance(record, Snapshot):
                    last_snapshot = record.time
                    checks = {s.key: s for s in record.checks}
                    continue
                records.append(record)
                if isinstance(record, StateChange):
                    checks.update(current_checks([record]))
                key = _record_check(record)
                if check is not None and (key is None or not _matches(check, *key)):
                    continue
                out.write("\n".join(_event_lines(record, style)) + "\n")
            out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        tail.close()
    states = [s.state for s in checks.values() if _matches(check, s.check, s.subject)]
    status = worst(states) if states else State.UNKNOWN
    interval = report.snapshot_interval
    if last_snapshot is None or (now() - last_snapshot).total_seconds() > STALE_INTERVALS * interval:
        status = worst((status, State.UNKNOWN))
    out.write(f"Stopped. Status {STATUS_WORDS[status]}.\n")
    out.flush()
    return EXIT_CODES[status]


# --- export -------------------------------------------------------------------------------------------------


def _read_for_export(path: Path) -> tuple[bytes, os.stat_result] | None:
    """A log file's bytes as they are now, never through a link; None if it is gone or not a file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        # Read what is there when we looked: the writer may append meanwhile, or rotate (our descriptor
        # keeps the renamed file).
        chunks, left = [], st.st_size
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def _tar_member(name: str, data: bytes, mtime: float) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(f"health/{name}")
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o640
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info, io.BytesIO(data)


def export(directory: Path, target: Path, *, now: datetime, report: Report | None) -> tuple[int, int]:
    """Write the log files and MANIFEST.json to `target` (a new .tar.gz); returns (files, bytes).

    Only the log's own files (`health.log`, `health.log.N`) are archived, read without following links.
    `target` must not exist (FileExistsError) and must not be inside the log's folder (ValueError).
    """
    if Path(os.path.realpath(target.parent)) == Path(os.path.realpath(directory)):
        raise ValueError("the archive must not be written into the log's own folder")
    files: list[tuple[str, bytes, os.stat_result]] = []
    for path in log_files(directory):
        found = _read_for_export(path)
        if found is not None:
            files.append((path.name, *found))
    if not files:
        raise NotFoundError(f"no health log files in {directory}")
    manifest = {
        "schema": EXPORT_SCHEMA,
        "createdAt": _iso(now),
        "tool": f"device-health {__version__}",
        "logDir": str(directory),
        "status": report.status.value if report else None,
        "files": [
            {
                "name": name,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "modified": _iso(datetime.fromtimestamp(st.st_mtime, UTC)),
            }
            for name, data, st in files
        ],
    }
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(target, flags, 0o600)
    try:
        with (
            open(fd, "wb") as raw,  # noqa: PTH123 - a descriptor made with O_EXCL: never overwrite
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=int(now.timestamp())) as zipped,
        ):
            with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive:
                data = json.dumps(manifest, indent=2).encode() + b"\n"
                archive.addfile(*_tar_member("MANIFEST.json", data, now.timestamp()))
                for name, content, st in files:
                    archive.addfile(*_tar_member(name, content, st.st_mtime))
            raw.flush()
            os.fsync(raw.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            target.unlink()
        raise
    return len(files), sum(len(data) for _, data, _ in files)


# --- main ---------------------------------------------------------------------------------------------------


def _no_log_message(log_dir: str, error: Exception) -> str:
    if isinstance(error, StorageError) and error.errno in {errno.EACCES, errno.EPERM}:
        return (
            f"cannot read the health log in {log_dir}: permission denied. Run `sudo device-health`, or ask"
            " for your account to join the technician group the monitor is configured with."
        )
    return (
        f"no health log in {log_dir}: {error}. Is the health monitor installed and running? Use --log-dir"
        f" or ${LOG_DIR_ENV} if the log is elsewhere."
    )


@dataclasses.dataclass(frozen=True)
class _Io:
    out: TextIO
    err: TextIO
    env: Mapping[str, str]
    sleep: Callable[[float], None]
    clock: Callable[[], datetime]


def main(
    argv: Sequence[str] | None = None,
    *,
    now: datetime | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Run `device-health`; returns the exit code. The keyword arguments are seams for tests."""
    args = _parser().parse_args(argv)

    def clock() -> datetime:
        return now if now is not None else datetime.now(UTC)

    streams = _Io(
        out=stdout if stdout is not None else sys.stdout,
        err=stderr if stderr is not None else sys.stderr,
        env=environ if environ is not None else os.environ,
        sleep=sleep,
        clock=clock,
    )
    try:
        return _run(args, streams)
    except BrokenPipeError:
        # The reader went away (`device-health | head`): no traceback, and no failing flush at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), streams.out.fileno())
        return EXIT_WARNING


def _run(args: argparse.Namespace, streams: _Io) -> int:
    out, err = streams.out, streams.err
    started = streams.clock()
    log_dir = args.log_dir or streams.env.get(LOG_DIR_ENV) or DEFAULT_LOG_DIR
    directory = Path(log_dir)
    try:
        since = parse_since(args.since, started) if args.since else None
    except ValueError as error:
        err.write(f"device-health: {error}\n")
        return EXIT_USAGE
    try:
        contents = read_log(directory, snapshots="newest")
        if not contents.records:
            raise NotFoundError(f"the log holds no readable record ({len(contents.problems)} bad lines)")
    except (NotFoundError, StorageError) as error:
        if args.export:  # a log that cannot be shown may still be worth sending
            return _export_command(directory, Path(args.export), started, None, streams)
        message = _no_log_message(log_dir, error)
        if args.json:
            out.write(json.dumps(_error_json(log_dir, started, message), indent=2) + "\n")
        err.write(f"device-health: {message}\n")
        return EXIT_NO_LOG
    if args.check is not None and not _known_check(args.check, contents, err):
        return EXIT_USAGE
    report = build_report(
        contents, log_dir=log_dir, now=started, since=since, since_text=args.since, check=args.check
    )
    if args.export:
        return _export_command(directory, Path(args.export), started, report, streams)
    if args.json:
        out.write(json.dumps(render_json(report), indent=2) + "\n")
        return report.exit_code
    style = _Style(_use_colour(out, streams.env))
    out.write(render_text(report, colour=style.colour))
    if not args.follow:
        return report.exit_code
    out.write("\n")
    return _follow(directory, report, style, streams)


def _known_check(name: str, contents: LogContents, err: TextIO) -> bool:
    """Whether `--check NAME` names a check of the catalogue or of the log; says which exist if not."""
    checks = current_checks(contents.records).values()
    names = {s.check for s in checks} | {f"{s.check}:{s.subject}" for s in checks if s.subject is not None}
    if name in names or name in TRIAGE:
        return True
    known = ", ".join(sorted({s.check for s in checks})) or "no checks"
    err.write(f"device-health: no check named {name!r}; the log has: {known}\n")
    return False


def _export_command(directory: Path, target: Path, now: datetime, report: Report | None, streams: _Io) -> int:
    err = streams.err
    try:
        count, size = export(directory, target, now=now, report=report)
    except FileExistsError:
        err.write(f"device-health: {target} already exists; choose another name (nothing was overwritten)\n")
        return EXIT_CANNOT_CREATE
    except ValueError as error:
        err.write(f"device-health: {error}\n")
        return EXIT_USAGE
    except (NotFoundError, StorageError) as error:
        err.write(f"device-health: {_no_log_message(str(directory), error)}\n")
        return EXIT_NO_LOG
    except OSError as error:
        err.write(f"device-health: cannot write {target}: {error.strerror or error}\n")
        return EXIT_CANNOT_CREATE
    streams.out.write(f"Wrote {target}: {count} log files ({size} bytes) and MANIFEST.json.\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
