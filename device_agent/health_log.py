"""The health log: bounded, durable JSON lines that the health monitor writes and `device-health` reads.

Standard library only (with `device_agent.errors` and `device_agent.fileio`, which are too): the reader
runs in the technician's tool, which must work when the component's environment is broken.

One JSON object per line, each with `"schema": "health-log/1"`, a `kind` and a UTC `time`
(docs/schemas/health-log.schema.json):

- `state`: a check changed state (old and new state, value, threshold, evidence, since when);
- `snapshot`: every check's state, value, since and when it was last verified;
- `lifecycle`: the monitor started or stopped, a reboot was detected, the log could not be shared;
- `incident`: an event at a point in time (an integrity failure, a rejected configuration ...).

Writing. `HealthLogWriter` appends to `health.log` and rotates it to `health.log.1`, `health.log.2` ...
so that no file exceeds `max_file_bytes` and there are at most `max_files` files: the log never holds
more than `max_files * max_file_bytes` bytes. State changes, lifecycle notes and incidents are synced
(fsync) before `append` returns; snapshots are synced every `sync_every` snapshots, or with the next
durable record. Rotation removes the oldest file first, renames the others down the chain from the
oldest end, and only then creates the new `health.log`, so at every instant the files on disk are a valid
set: each is a whole log file, the total stays within the bound, and a crash leaves at worst a gap in the
numbers (which readers skip) or no `health.log` (which the next writer creates).

Power loss can leave a torn last line. A reader skips it (and any other line that is not a valid record)
and reports it as a `Problem`; a writer that reopens a file whose last byte is not a newline starts on a
new line, so the torn bytes stay one bad line and never corrupt the next record. A last line caught while
it is still being written is read again for a moment first, so a live writer is not mistaken for a torn one.

Sharing. With a technician `group`, files are 0640 and the directory 0750, group-owned by that group. If
the group does not exist, or the process may not give files to it (it is neither root nor a member),
files stay 0600 and the directory 0700, and a `log.group_not_applied` lifecycle note says so, once per
open. Without a group, the log is private (0600/0700): read it as its owner or with sudo.

Privacy. Records are typed: a field the schema does not have cannot be written. Identifiers (check,
event, component names) must match their patterns or the record is refused; free text is clipped, has
control characters replaced, and anything that looks like a token, a key or an e-mail address redacted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import grp
import json
import math
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, Self, TypeVar

from device_agent.errors import InvalidInputError, NotFoundError, StorageError, UnsafeFileError
from device_agent.fileio import OS_FILE_IO, FileIO, StrPath

SCHEMA: Final = "health-log/1"
LOG_NAME: Final = "health.log"
#: The component's work folder on a Greengrass device; `device-health --log-dir` or the variable overrides it.
DEFAULT_LOG_DIR: Final = "/greengrass/v2/work/com.deviceagent.HealthMonitor/health"
LOG_DIR_ENV: Final = "DEVICE_HEALTH_LOG_DIR"

DEFAULT_MAX_FILE_BYTES: Final = 1 << 20
DEFAULT_MAX_FILES: Final = 5
MIN_FILE_BYTES: Final = 64 << 10
MAX_FILE_BYTES: Final = 64 << 20
MIN_FILES: Final = 2  # with one file, each rotation would empty the log
MAX_FILES: Final = 100
MAX_LINE_BYTES: Final = 48 << 10
MAX_SNAPSHOT_CHECKS: Final = 200
# A reader reads at most this much of one file (a file this big was not written by a bounded writer).
MAX_READ_BYTES: Final = 128 << 20
MAX_PROBLEMS: Final = 50

SHARED_FILE_MODE: Final = 0o640
SHARED_DIR_MODE: Final = 0o750
PRIVATE_FILE_MODE: Final = 0o600
PRIVATE_DIR_MODE: Final = 0o700

MAX_TEXT: Final = 240  # evidence, messages, details
MAX_SHORT_TEXT: Final = 64  # subjects, string values
MAX_UNIT: Final = 12

_CHECK = re.compile(r"[a-z][a-z0-9_]{0,47}")
_EVENT = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_UNIT = re.compile(r"[ -~]{1,12}")
_FILE_NAME = re.compile(r"health\.log(?:\.([1-9][0-9]{0,2}))?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# What must never reach the log even if a caller put it in a message: key and certificate blocks, JWTs,
# long token-like runs (base64, hex, SVCUID-sized strings; an absolute path is not one) and e-mail addresses.
_REDACT = re.compile(
    r"-----BEGIN[^-]*-----.*?(?:-----END[^-]*-----|$)"
    r"|eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9._-]*"
    r"|(?<![A-Za-z0-9+/=_-])(?!/)[A-Za-z0-9+/=_-]{32,}(?:\.[A-Za-z0-9+/=_-]+)*"
    r"|[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
)
REDACTED: Final = "[redacted]"


class State(enum.StrEnum):
    """A check's state. Ordered by how much attention it needs: see `RANK`."""

    OK = "OK"
    WARN = "WARN"
    CRITICAL = "CRITICAL"
    UNKNOWN = "UNKNOWN"


#: Worse is higher. UNKNOWN (no data) ranks between OK and WARN: it needs a look, not an alarm.
RANK: Final[Mapping[State, int]] = {State.OK: 0, State.UNKNOWN: 1, State.WARN: 2, State.CRITICAL: 3}


def worst(states: Iterable[State]) -> State:
    """The state needing most attention; OK for none."""
    return max(states, key=RANK.__getitem__, default=State.OK)


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class LifecycleEvent(enum.StrEnum):
    MONITOR_STARTED = "monitor.started"
    MONITOR_STOPPED = "monitor.stopped"
    REBOOT_DETECTED = "reboot.detected"
    GROUP_NOT_APPLIED = "log.group_not_applied"
    TRIMMED = "log.trimmed"
    SNAPSHOT_TRIMMED = "log.snapshot_trimmed"
    EVENTS_REJECTED = "events.rejected"
    LOG_RESUMED = "log.resumed"  # the log can be written again; what waited in memory follows


Value = int | float | str | None
_E = TypeVar("_E", bound=enum.Enum)


# --- records ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckStatus:
    """One check as a snapshot sees it. `verified` is when the monitor last evaluated it."""

    check: str
    subject: str | None = None
    state: State
    value: Value = None
    unit: str | None = None
    threshold: float | None = None
    since: datetime | None = None
    verified: datetime | None = None

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.check, self.subject)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StateChange:
    time: datetime
    check: str
    subject: str | None = None
    old: State
    new: State
    value: Value = None
    unit: str | None = None
    threshold: float | None = None
    evidence: str = ""
    since: datetime

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.check, self.subject)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Snapshot:
    time: datetime
    overall: State
    interval_seconds: float | None = None  # when to expect the next one: a reader judges staleness by it
    checks: tuple[CheckStatus, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Lifecycle:
    time: datetime
    event: LifecycleEvent
    detail: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Incident:
    time: datetime
    check: str  # the check it counts towards, e.g. `integrity` for `store.integrity_failed`
    event: str
    severity: Severity
    component: str | None = None
    message: str = ""


Record = StateChange | Snapshot | Lifecycle | Incident


def utc_now() -> datetime:
    return datetime.now(UTC)


# --- encoding (what the writer lets through) ----------------------------------------------------------------


def clean_text(text: str, limit: int = MAX_TEXT) -> str:
    """Free text made safe for the log: one line, no control characters, secrets redacted, clipped."""
    text = _REDACT.sub(REDACTED, _CONTROL.sub(" ", text[: limit * 4])).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_event_name(value: object) -> bool:
    """Whether an incident may carry `value` as its event name (`store.integrity_failed`)."""
    return isinstance(value, str) and _EVENT.fullmatch(value) is not None


def is_component_name(value: object) -> bool:
    """Whether an incident may carry `value` as its component name."""
    return isinstance(value, str) and _COMPONENT.fullmatch(value) is not None


def _identifier(value: object, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        shown = value[:40] if isinstance(value, str) else type(value).__name__
        raise InvalidInputError(f"health log: {what} {shown!r} does not match {pattern.pattern}")
    return value


def _time(value: object, what: str) -> str:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidInputError(f"health log: {what} must be a timezone-aware datetime")
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _number(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"health log: {what} must be a finite number")
    return value if isinstance(value, int) else float(f"{value:.6g}")


def _value(value: Value) -> Value:
    if isinstance(value, str):
        return clean_text(value, MAX_SHORT_TEXT)
    return _number(value, "value")


def _optional(value: str | None, clean: Callable[[str], str]) -> str | None:
    return None if value is None else clean(value)


def _unit(value: str | None) -> str | None:
    return None if value is None else _identifier(value, _UNIT, "unit")


def _subject(value: str | None) -> str | None:
    return _optional(value, lambda text: clean_text(text, MAX_SHORT_TEXT) or "-")


def _status_fields(status: CheckStatus | StateChange) -> dict[str, Any]:
    fields: dict[str, Any] = {"check": _identifier(status.check, _CHECK, "check")}
    if status.subject is not None:
        fields["subject"] = _subject(status.subject)
    return fields


def _compact(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _encode_check(status: CheckStatus) -> dict[str, Any]:
    return _compact(
        {
            **_status_fields(status),
            "state": State(status.state).value,
            "value": _value(status.value),
            "unit": _unit(status.unit),
            "threshold": _number(status.threshold, "threshold"),
            "since": None if status.since is None else _time(status.since, "since"),
            "verified": None if status.verified is None else _time(status.verified, "verified"),
        }
    )


def to_json(record: Record) -> dict[str, Any]:
    """The JSON object of a record, validated and cleaned; raises `InvalidInputError` for what it refuses."""
    head: dict[str, Any] = {"schema": SCHEMA}
    match record:
        case StateChange():
            body = {
                "kind": "state",
                "time": _time(record.time, "time"),
                **_status_fields(record),
                "from": State(record.old).value,
                "to": State(record.new).value,
                "value": _value(record.value),
                "unit": _unit(record.unit),
                "threshold": _number(record.threshold, "threshold"),
                "evidence": clean_text(record.evidence),
                "since": _time(record.since, "since"),
            }
        case Snapshot():
            if len(record.checks) > MAX_SNAPSHOT_CHECKS:
                raise InvalidInputError(f"health log: a snapshot holds at most {MAX_SNAPSHOT_CHECKS} checks")
            body = {
                "kind": "snapshot",
                "time": _time(record.time, "time"),
                "overall": State(record.overall).value,
                "intervalSeconds": _number(record.interval_seconds, "intervalSeconds"),
                "checks": [_encode_check(status) for status in record.checks],
            }
        case Lifecycle():
            body = {
                "kind": "lifecycle",
                "time": _time(record.time, "time"),
                "event": LifecycleEvent(record.event).value,
                "detail": _optional(record.detail, clean_text),
            }
        case Incident():
            body = {
                "kind": "incident",
                "time": _time(record.time, "time"),
                "check": _identifier(record.check, _CHECK, "check"),
                "event": _identifier(record.event, _EVENT, "event"),
                "severity": Severity(record.severity).value,
                "component": None
                if record.component is None
                else _identifier(record.component, _COMPONENT, "component"),
                "message": clean_text(record.message),
            }
        case _:
            raise InvalidInputError(f"health log: not a record: {type(record).__name__}")
    return head | _compact(body)


def encode(record: Record) -> bytes:
    """One log line, newline included."""
    line = json.dumps(to_json(record), separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    data = line.encode("ascii") + b"\n"
    if len(data) > MAX_LINE_BYTES:
        raise InvalidInputError(f"health log: a line of {len(data)} bytes is over {MAX_LINE_BYTES}")
    return data


def fit_snapshot(snapshot: Snapshot, max_bytes: int = MAX_LINE_BYTES) -> tuple[Snapshot, list[CheckStatus]]:
    """The snapshot cut down to fit one line of `max_bytes` and `MAX_SNAPSHOT_CHECKS`; and what was cut.

    The checks needing most attention are kept first (CRITICAL, WARN, UNKNOWN, then OK), each group in its
    order; a check the log would refuse (a name that is not a check name) is left out too.
    """
    empty = dataclasses.replace(snapshot, checks=())
    budget = max_bytes - len(encode(empty))
    ranked = sorted(range(len(snapshot.checks)), key=lambda i: -RANK[snapshot.checks[i].state])
    kept: set[int] = set()
    for index in ranked:
        if len(kept) >= MAX_SNAPSHOT_CHECKS:
            break
        try:
            size = len(json.dumps(_encode_check(snapshot.checks[index]), separators=(",", ":"))) + 1
        except InvalidInputError:
            continue
        if size <= budget:
            kept.add(index)
            budget -= size
    left_out = [status for i, status in enumerate(snapshot.checks) if i not in kept]
    if not left_out:
        return snapshot, []
    checks = tuple(status for i, status in enumerate(snapshot.checks) if i in kept)
    return dataclasses.replace(snapshot, checks=checks), left_out


# --- decoding (what a reader accepts) -----------------------------------------------------------------------


class BadLineError(ValueError):
    """A line that is not a valid record; the message says why in plain words."""


def _get_str(obj: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise BadLineError(f"field {key!r} missing or not text")
    return value


def _req_str(obj: Mapping[str, Any], key: str) -> str:
    value = _get_str(obj, key)
    assert value is not None  # noqa: S101 - required=True never returns None
    return value


def _get_time(obj: Mapping[str, Any], key: str, *, required: bool = True) -> datetime | None:
    text = _get_str(obj, key, required=required)
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadLineError(f"field {key!r} is not a time") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _req_time(obj: Mapping[str, Any], key: str) -> datetime:
    value = _get_time(obj, key)
    assert value is not None  # noqa: S101 - required=True never returns None
    return value


def _get_number(obj: Mapping[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadLineError(f"field {key!r} is not a number")
    return value


def _get_value(obj: Mapping[str, Any]) -> Value:
    value = obj.get("value")
    if value is None or isinstance(value, str):
        return value
    return _get_number(obj, "value")


def _get_enum(obj: Mapping[str, Any], key: str, kind: type[_E]) -> _E:
    try:
        return kind(obj.get(key))
    except ValueError:
        raise BadLineError(f"field {key!r} has an unknown value") from None


def _decode_check(obj: object) -> CheckStatus:
    if not isinstance(obj, dict):
        raise BadLineError("a snapshot check is not an object")
    return CheckStatus(
        check=_req_str(obj, "check"),
        subject=_get_str(obj, "subject", required=False),
        state=_get_enum(obj, "state", State),
        value=_get_value(obj),
        unit=_get_str(obj, "unit", required=False),
        threshold=_get_number(obj, "threshold"),
        since=_get_time(obj, "since", required=False),
        verified=_get_time(obj, "verified", required=False),
    )


def from_json(obj: object) -> Record:
    """A record from a decoded line; unknown fields are ignored (a newer writer may add some)."""
    if not isinstance(obj, dict):
        raise BadLineError("not a JSON object")
    schema = obj.get("schema")
    if schema != SCHEMA:
        if isinstance(schema, str) and schema.startswith("health-log/"):
            raise BadLineError(f"written in a newer format ({schema[:24]}) than this tool reads")
        raise BadLineError("not a health log record")
    time = _req_time(obj, "time")
    match obj.get("kind"):
        case "state":
            return StateChange(
                time=time,
                check=_req_str(obj, "check"),
                subject=_get_str(obj, "subject", required=False),
                old=_get_enum(obj, "from", State),
                new=_get_enum(obj, "to", State),
                value=_get_value(obj),
                unit=_get_str(obj, "unit", required=False),
                threshold=_get_number(obj, "threshold"),
                evidence=_get_str(obj, "evidence", required=False) or "",
                since=_get_time(obj, "since", required=False) or time,
            )
        case "snapshot":
            checks = obj.get("checks", [])
            if not isinstance(checks, list):
                raise BadLineError("field 'checks' is not a list")
            return Snapshot(
                time=time,
                overall=_get_enum(obj, "overall", State),
                interval_seconds=_get_number(obj, "intervalSeconds"),
                checks=tuple(_decode_check(item) for item in checks),
            )
        case "lifecycle":
            return Lifecycle(
                time=time,
                event=_get_enum(obj, "event", LifecycleEvent),
                detail=_get_str(obj, "detail", required=False),
            )
        case "incident":
            return Incident(
                time=time,
                check=_req_str(obj, "check"),
                event=_req_str(obj, "event"),
                severity=_get_enum(obj, "severity", Severity),
                component=_get_str(obj, "component", required=False),
                message=_get_str(obj, "message", required=False) or "",
            )
        case _:
            raise BadLineError("unknown record kind")


def _load(line: bytes) -> object:
    if b"\x00" in line:
        raise BadLineError("holds NUL bytes (written during a power loss?)")
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        raise BadLineError("not valid JSON (cut short or damaged)") from None


def parse_line(line: bytes) -> Record:
    """One line (without its newline) as a record, or `BadLineError` saying why not."""
    return from_json(_load(line))


# --- reading ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Problem:
    """Something a reader skipped: `line` is 1-based, 0 for the file as a whole."""

    file: str
    line: int
    reason: str


@dataclasses.dataclass(frozen=True)
class LogContents:
    """Every record, oldest first, and what was skipped. `more_problems` counts those beyond `problems`."""

    records: tuple[Record, ...]
    problems: tuple[Problem, ...]
    files: tuple[str, ...]
    more_problems: int = 0


def _file_number(name: str) -> int | None:
    """0 for `health.log`, N for `health.log.N`, None for anything else."""
    match = _FILE_NAME.fullmatch(name)
    if match is None:
        return None
    return int(match.group(1) or 0)


def log_files(directory: StrPath) -> list[Path]:
    """The log's files, oldest first (`health.log.N` ... `health.log.1`, `health.log`); gaps are skipped.

    Raises `NotFoundError` when the directory does not exist, `StorageError` when it cannot be listed.
    """
    path = Path(directory)
    try:
        names = [entry.name for entry in os.scandir(path)]
    except FileNotFoundError:
        raise NotFoundError(f"no health log directory at {path}") from None
    except NotADirectoryError:
        raise NotFoundError(f"{path} is not a directory") from None
    except OSError as error:
        raise StorageError(
            f"cannot list {path}: {error.strerror or 'error'}", errno_value=error.errno
        ) from error
    numbered = [(number, name) for name in names if (number := _file_number(name)) is not None]
    return [path / name for _, name in sorted(numbered, reverse=True)]


def _read_file(path: Path) -> bytes:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadLineError("not a regular file")
        chunks = []
        left = MAX_READ_BYTES
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 20))):
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


# A reader can catch a line in flight: Linux copies a write into the page cache a page at a time, so a line
# crossing a page boundary is briefly half there. A tail that is complete a moment later was a write, not a
# torn line; one that stays incomplete is reported.
IN_FLIGHT_CHECKS: Final = 3
IN_FLIGHT_PAUSE: Final = 0.01  # seconds


def _incomplete_tail(data: bytes) -> bool:
    return bool(data.rpartition(b"\n")[2].strip(b"\x00 \t\r"))


def _read_settled(
    path: Path, read: Callable[[Path], bytes] = _read_file, pause: Callable[[float], None] = time.sleep
) -> bytes:
    """A file's bytes, read again (briefly) while its last line is incomplete and the file still grows."""
    data = read(path)
    for _ in range(IN_FLIGHT_CHECKS):
        if not _incomplete_tail(data) or len(data) >= MAX_READ_BYTES:
            break
        pause(IN_FLIGHT_PAUSE)
        try:
            again = read(path)
        except (OSError, BadLineError):
            break  # rotated away or replaced: what was read is what this file held
        if len(again) <= len(data) or not again.startswith(data):
            break  # not growing, or another file now: the tail is torn
        data = again
    return data


class _Collector:
    def __init__(self, max_problems: int) -> None:
        self.max_problems = max_problems
        self.problems: list[Problem] = []
        self.more = 0

    def add(self, problem: Problem) -> None:
        if len(self.problems) < self.max_problems:
            self.problems.append(problem)
        else:
            self.more += 1


@dataclasses.dataclass(frozen=True)
class _Deferred:
    """A snapshot line not decoded yet: only the newest is needed when `snapshots="newest"`."""

    obj: dict[str, Any]
    file: str
    line: int


def _parse_lines(
    data: bytes, name: str, problems: _Collector, *, defer_snapshots: bool
) -> list[Record | _Deferred]:
    """The records of one file's bytes; bad lines and a torn tail go to `problems`."""
    records: list[Record | _Deferred] = []
    lines = data.split(b"\n")
    lines.pop()  # the tail: b"" when the file ends with a newline, as a complete file does
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = _load(line)
            if defer_snapshots and isinstance(obj, dict) and obj.get("kind") == "snapshot":
                if obj.get("schema") != SCHEMA or not isinstance(obj.get("checks"), list):
                    from_json(obj)  # raises the reason
                records.append(_Deferred(obj, name, number))
            else:
                records.append(from_json(obj))
        except BadLineError as error:
            problems.add(Problem(name, number, str(error)))
    if _incomplete_tail(data):
        problems.add(Problem(name, len(lines) + 1, "incomplete last line (power lost while writing?)"))
    return records


def _newest_snapshot_only(items: list[Record | _Deferred], problems: _Collector) -> list[Record]:
    """Decode deferred snapshots from the newest back until one is valid; drop the others."""
    for index in range(len(items) - 1, -1, -1):
        item = items[index]
        if isinstance(item, _Deferred):
            try:
                items[index] = from_json(item.obj)
            except BadLineError as error:
                problems.add(Problem(item.file, item.line, str(error)))
                continue
            break
    return [item for item in items if not isinstance(item, _Deferred)]


def read_log(
    directory: StrPath, *, max_problems: int = MAX_PROBLEMS, snapshots: Literal["all", "newest"] = "all"
) -> LogContents:
    """Read every file of the log, oldest first, skipping (and reporting) what is not a valid record.

    With `snapshots="newest"` only the newest valid snapshot is decoded and kept (what a status needs;
    decoding every snapshot's checks is most of the cost of reading a full log); the others are still
    checked to be JSON lines of the right kind.

    Raises `NotFoundError` when there is no directory or no log file in it, and `StorageError` when
    nothing could be read (e.g. permission denied); a single unreadable file is only a `Problem`.
    """
    paths = log_files(directory)
    if not paths:
        raise NotFoundError(f"no health log files in {directory}")
    problems = _Collector(max_problems)
    items: list[Record | _Deferred] = []
    read: list[str] = []
    denied: OSError | None = None
    for path in paths:
        try:
            data = _read_settled(path)
        except FileNotFoundError:
            continue  # rotated away between listing and opening: its records are in the next file
        except BadLineError as error:
            problems.add(Problem(path.name, 0, str(error)))
            continue
        except OSError as error:
            denied = denied or error
            problems.add(Problem(path.name, 0, f"cannot read: {error.strerror or 'error'}"))
            continue
        read.append(path.name)
        items.extend(_parse_lines(data, path.name, problems, defer_snapshots=snapshots == "newest"))
    if not read and denied is not None:
        raise StorageError(
            f"cannot read the health log in {directory}: {denied.strerror or 'error'}",
            errno_value=denied.errno,
        )
    records = _newest_snapshot_only(items, problems)  # without deferral, there is nothing to drop
    return LogContents(tuple(records), tuple(problems.problems), tuple(read), problems.more)


def current_checks(records: Sequence[Record]) -> dict[tuple[str, str | None], CheckStatus]:
    """Each check's latest status: the newest snapshot's, updated by the state changes written after it.

    A check missing from the newest snapshot is gone (disabled or removed). Without any snapshot, the
    state changes alone tell what is known.
    """
    start = 0
    checks: dict[tuple[str, str | None], CheckStatus] = {}
    for index in range(len(records) - 1, -1, -1):
        record = records[index]
        if isinstance(record, Snapshot):
            checks = {status.key: status for status in record.checks}
            start = index + 1
            break
    for record in records[start:]:
        if isinstance(record, StateChange):
            checks[record.key] = CheckStatus(
                check=record.check,
                subject=record.subject,
                state=record.new,
                value=record.value,
                unit=record.unit,
                threshold=record.threshold,
                since=record.since,
                verified=record.time,
            )
    return checks


# --- writing ------------------------------------------------------------------------------------------------


def _storage_error(operation: str, path: StrPath, error: OSError) -> StorageError:
    if error.errno == errno.ELOOP:
        return UnsafeFileError(f"{operation} {os.fspath(path)}: is a symbolic link", errno_value=error.errno)
    reason = error.strerror or type(error).__name__
    return StorageError(f"{operation} {os.fspath(path)}: {reason}", errno_value=error.errno)


@contextlib.contextmanager
def _storage_errors(operation: str, path: StrPath) -> Any:
    try:
        yield
    except StorageError:
        raise
    except OSError as error:
        raise _storage_error(operation, path, error) from error


def _check_ours(st: os.stat_result, path: Path, *, directory: bool) -> None:
    """Refuse a link, the wrong kind of file, or someone else's: the log never writes through those."""
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeFileError(f"{path}: is a symbolic link", errno_value=errno.ELOOP)
    right_kind = stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)
    if not right_kind:
        raise UnsafeFileError(f"{path}: is not {'a directory' if directory else 'a regular file'}")
    if st.st_uid != os.geteuid():
        raise UnsafeFileError(f"{path}: owned by uid {st.st_uid}, not by us", errno_value=errno.EPERM)


class HealthLogWriter:
    """Appends records to the health log in `directory` (module docstring: bounds, durability, sharing).

    Synchronous, like the file system; from a coroutine call it with `asyncio.to_thread`. One writer per
    directory. Raises `StorageError` (with the OS's errno: ENOSPC ...) when a write or sync fails; a failed
    sync closes the file, which the next `append` reopens (an fsync error is never retried).
    """

    def __init__(
        self,
        directory: StrPath,
        *,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        max_files: int = DEFAULT_MAX_FILES,
        group: str | None = None,
        sync_every: int = 10,
        io: FileIO | None = None,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        if not MIN_FILE_BYTES <= max_file_bytes <= MAX_FILE_BYTES:
            raise ValueError(f"max_file_bytes must be between {MIN_FILE_BYTES} and {MAX_FILE_BYTES}")
        if not MIN_FILES <= max_files <= MAX_FILES:
            raise ValueError(f"max_files must be between {MIN_FILES} and {MAX_FILES}")
        if sync_every < 1:
            raise ValueError("sync_every must be at least 1")
        self.directory = Path(os.path.abspath(directory))  # noqa: PTH100 - resolve() would follow links
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.group = group or None
        self._sync_every = sync_every
        self._io = io if io is not None else OS_FILE_IO
        self._now = now
        self._fd: int | None = None
        self._size = 0
        self._needs_newline = False
        self._unsynced = 0
        self._gid: int | None = None
        self.group_problem: str | None = None  # why the group could not be applied, if it could not
        self.rotations = 0  # how many times this writer rotated the log

    @property
    def bound(self) -> int:
        """The most bytes the log's files hold together."""
        return self.max_file_bytes * self.max_files

    @property
    def current(self) -> Path:
        return self.directory / LOG_NAME

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    @property
    def shared_gid(self) -> int | None:
        """The group the log is shared with now (None: private), known once the log is open."""
        return self._gid

    def _numbered(self, number: int) -> Path:
        return self.directory / (LOG_NAME if number == 0 else f"{LOG_NAME}.{number}")

    @property
    def _file_mode(self) -> int:
        return PRIVATE_FILE_MODE if self._gid is None else SHARED_FILE_MODE

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- opening

    def open(self) -> None:
        """Prepare the directory and files (modes, group, bound) and open `health.log` for appending."""
        if self._fd is not None:
            return
        self._prepare_directory()
        self._gid, self.group_problem = self._resolve_group()
        self._apply_sharing()
        removed = self._trim()
        self._open_current()
        if self.group_problem is not None:
            files = "files stay 0600 and the directory 0700 (read them as root)"
            self.append(
                Lifecycle(
                    time=self._now(),
                    event=LifecycleEvent.GROUP_NOT_APPLIED,
                    detail=f"{self.group_problem}; {files}",
                )
            )
        if removed:
            self.append(
                Lifecycle(
                    time=self._now(),
                    event=LifecycleEvent.TRIMMED,
                    detail=f"removed {removed} old files to keep within {self.bound} bytes",
                )
            )

    def _prepare_directory(self) -> None:
        fs = self._io
        path = self.directory
        with _storage_errors("stat", path):
            try:
                st = fs.lstat(path)
            except FileNotFoundError:
                parent = path.parent
                if not parent.is_dir():
                    raise StorageError(f"{parent}: no such directory", errno_value=errno.ENOENT) from None
                with contextlib.suppress(FileExistsError):
                    fs.mkdir(path, PRIVATE_DIR_MODE)
                st = fs.lstat(path)
        _check_ours(st, path, directory=True)

    def _resolve_group(self) -> tuple[int | None, str | None]:
        if self.group is None:
            return None, None
        try:
            return grp.getgrnam(self.group).gr_gid, None
        except KeyError:
            return None, f"group {self.group} does not exist"

    def _apply_sharing(self) -> None:
        """Give the directory and the existing files the modes (and group) of the sharing in force.

        When the group cannot be given (not root and not a member: EPERM), sharing falls back to private.
        """
        fs = self._io
        files = self._existing()
        for path in files:
            with _storage_errors("stat", path):
                _check_ours(fs.lstat(path), path, directory=False)
        if self._gid is not None:
            try:
                for path in (self.directory, *files):
                    os.chown(path, -1, self._gid, follow_symlinks=False)
            except OSError as error:
                self._gid = None
                reason = error.strerror or type(error).__name__
                self.group_problem = f"cannot give the log to group {self.group}: {reason}"
        dir_mode = PRIVATE_DIR_MODE if self._gid is None else SHARED_DIR_MODE
        with _storage_errors("chmod", self.directory):
            fs.chmod(self.directory, dir_mode)
        for path in files:
            with _storage_errors("chmod", path):
                fs.chmod(path, self._file_mode)

    def _existing(self) -> list[Path]:
        """The log's files present now, newest first."""
        with _storage_errors("list", self.directory):
            names = self._io.listdir(self.directory)
        numbered = sorted((n, name) for name in names if (n := _file_number(name)) is not None)
        return [self.directory / name for _, name in numbered]

    def _trim(self) -> int:
        """Remove the oldest files beyond `max_files`, then beyond the byte bound; returns how many."""
        fs = self._io
        removed = 0
        sizes: list[tuple[Path, int]] = []
        for path in self._existing():
            number = _file_number(path.name) or 0
            if number >= self.max_files:
                with _storage_errors("unlink", path):
                    fs.unlink(path)
                removed += 1
                continue
            with _storage_errors("stat", path):
                sizes.append((path, fs.lstat(path).st_size))
        total = sum(size for _, size in sizes)
        while total > self.bound and sizes:
            path, size = sizes.pop()  # the oldest
            with _storage_errors("unlink", path):
                fs.unlink(path)
            removed += 1
            total -= size
        if removed:
            with _storage_errors("fsync", self.directory):
                fs.fsync_dir(self.directory)
        return removed

    def _open_current(self) -> None:
        fs = self._io
        path = self.current
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
        with _storage_errors("open", path):
            fd = fs.open(path, flags, PRIVATE_FILE_MODE)
        try:
            with _storage_errors("stat", path):
                st = fs.fstat(fd)
            _check_ours(st, path, directory=False)
            self._share(fd, st, path)
            self._size = st.st_size
            self._needs_newline = st.st_size > 0 and os.pread(fd, 1, st.st_size - 1) != b"\n"
        except BaseException:
            with contextlib.suppress(OSError):
                fs.close(fd)
            raise
        self._fd = fd

    def _share(self, fd: int, st: os.stat_result, path: Path) -> None:
        with _storage_errors("chmod", path):
            if self._gid is not None and st.st_gid != self._gid:
                os.fchown(fd, -1, self._gid)
            if stat.S_IMODE(st.st_mode) != self._file_mode:
                self._io.fchmod(fd, self._file_mode)

    # -- appending

    def append(self, record: Record) -> None:
        """Write one record; durable on return unless it is a snapshot (those are synced in batches)."""
        line = encode(record)
        if self._fd is None:
            self._open_current()
        prefix = b"\n" if self._needs_newline else b""
        if self._size > 0 and self._size + len(prefix) + len(line) > self.max_file_bytes:
            self._rotate()
            prefix = b""
        self._write(prefix + line)
        if isinstance(record, Snapshot):
            self._unsynced += 1
            if self._unsynced < self._sync_every:
                return
        self.sync()

    def _write(self, data: bytes) -> None:
        fd = self._fd
        assert fd is not None  # noqa: S101 - append opened it
        view = memoryview(data)
        try:
            while view:
                written = self._io.write(fd, view)
                if written <= 0:
                    raise OSError(errno.EIO, "write made no progress")
                self._size += written
                view = view[written:]
        except OSError as error:
            # Part of the line may be in the file: the next record starts on a new line.
            self._needs_newline = True
            with contextlib.suppress(OSError):
                self._size = self._io.fstat(fd).st_size
            raise _storage_error("write", self.current, error) from error
        self._needs_newline = False

    def sync(self) -> None:
        """Make everything appended so far durable."""
        if self._fd is None:
            return
        try:
            self._io.fsync(self._fd)
        except OSError as error:
            # The kernel may have dropped the dirty pages: never retry on this handle (FS-4).
            self._close_fd()
            raise _storage_error("fsync", self.current, error) from error
        self._unsynced = 0

    def _rotate(self) -> None:
        fs = self._io
        self.sync()
        self._close_fd()
        with _storage_errors("list", self.directory):
            present = set(fs.listdir(self.directory))
        # Oldest first: remove the last, then move each down the chain, so no rename ever replaces a file.
        oldest = self._numbered(self.max_files - 1)
        if oldest.name in present:
            with _storage_errors("unlink", oldest), contextlib.suppress(FileNotFoundError):
                fs.unlink(oldest)
        for number in range(self.max_files - 2, -1, -1):
            source, target = self._numbered(number), self._numbered(number + 1)
            if source.name in present:
                with _storage_errors("rename", source), contextlib.suppress(FileNotFoundError):
                    fs.replace(source, target)
        self._open_current()
        self.rotations += 1
        with _storage_errors("fsync", self.directory):
            fs.fsync_dir(self.directory)

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                self._io.close(fd)

    def close(self) -> None:
        """Sync what is pending and close; the writer can be opened again."""
        try:
            if self._unsynced:
                self.sync()
        finally:
            self._close_fd()
