"""The health log: what a line may hold, the byte bound across rotations, durability, torn lines, crash
safety at every file operation, and the modes and group that let a technician read it."""

from __future__ import annotations

import dataclasses
import errno
import grp
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_agent import health_log
from device_agent.errors import InvalidInputError, NotFoundError, StorageError, UnsafeFileError
from device_agent.fileio import CrashPoint, Fault, FaultyFileIO, SimulatedCrash
from device_agent.health_log import (
    MAX_LINE_BYTES,
    MIN_FILE_BYTES,
    REDACTED,
    SCHEMA,
    BadLineError,
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
    _Collector,
    _parse_lines,
    clean_text,
    current_checks,
    encode,
    fit_snapshot,
    from_json,
    is_component_name,
    is_event_name,
    log_files,
    parse_line,
    read_log,
    to_json,
    worst,
)

PROJECT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
IS_ROOT = os.geteuid() == 0
requires_root = pytest.mark.skipif(not IS_ROOT, reason="needs root to act as another user")


@pytest.fixture
def memory_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder on tmpfs when there is one: for tests of thousands of synced appends, where a real disk's
    fsync would only cost time (what a crash leaves is simulated by FaultyFileIO, not by the disk)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    base = Path(tempfile.mkdtemp(prefix="health-log-", dir=shm))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def line_schema() -> jsonschema.Draft202012Validator:
    schema = json.loads((PROJECT / "docs/schemas/health-log.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def change(n: int = 0, *, evidence: str = "at or above 90 for 300 s", at: datetime = T0) -> StateChange:
    return StateChange(
        time=at,
        check="cpu",
        old=State.OK,
        new=State.WARN,
        value=90.0 + n % 10,
        unit="%",
        threshold=90,
        evidence=f"{evidence} #{n}",
        since=at,
    )


def snapshot(n: int = 0, checks: int = 3) -> Snapshot:
    statuses = tuple(
        CheckStatus(check="disk_space", subject=f"/m{i}", state=State.OK, value=50.5, unit="% free", since=T0)
        for i in range(checks)
    )
    return Snapshot(time=T0 + timedelta(seconds=n), overall=State.OK, interval_seconds=300, checks=statuses)


def evidences(records: tuple[Record, ...] | list[Record]) -> list[str]:
    return [r.evidence for r in records if isinstance(r, StateChange)]


def sizes(directory: Path) -> dict[str, int]:
    return {path.name: path.stat().st_size for path in log_files(directory)}


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# --- lines --------------------------------------------------------------------------------------------------


def every_kind() -> list[Record]:
    return [
        change(),
        snapshot(),
        Lifecycle(time=T0, event=LifecycleEvent.MONITOR_STARTED, detail="version 0.1.0"),
        Lifecycle(time=T0, event=LifecycleEvent.REBOOT_DETECTED),
        Incident(
            time=T0,
            check="integrity",
            event="store.integrity_failed",
            severity=Severity.CRITICAL,
            component="com.deviceagent.EncryptedStore",
            message="a record failed its check",
        ),
        StateChange(
            time=T0,
            check="temperature",
            subject="cpu_thermal",
            old=State.WARN,
            new=State.UNKNOWN,
            evidence="no reading for 600 s",
            since=T0,
        ),
    ]


@pytest.mark.parametrize("record", every_kind(), ids=lambda r: type(r).__name__)
def test_every_kind_of_line_validates_and_reads_back(record: Record, line_schema) -> None:
    line = encode(record)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    obj = json.loads(line)
    line_schema.validate(obj)
    assert obj["schema"] == SCHEMA
    assert list(obj)[:3] == ["schema", "kind", "time"]  # greppable
    assert parse_line(line[:-1]) == record


def test_time_is_utc_with_milliseconds() -> None:
    local = datetime(2026, 3, 1, 14, 0, 0, 123456, tzinfo=UTC).astimezone()
    obj = to_json(change(at=local))
    assert obj["time"] == "2026-03-01T14:00:00.123Z"


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="timezone"):
        encode(change(at=datetime(2026, 3, 1, 12, 0)))  # noqa: DTZ001 - the point of the test


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("check", "CPU"),
        ("check", "cpu load"),
        ("check", ""),
        ("unit", "\u00b0C"),
        ("unit", "a very long unit name"),
        ("value", float("nan")),
        ("value", float("inf")),
        ("value", True),
        ("threshold", float("nan")),
    ],
)
def test_fields_outside_their_pattern_are_refused(field: str, value: object) -> None:
    changes: dict[str, Any] = {field: value}
    record = dataclasses.replace(change(), **changes)
    with pytest.raises(InvalidInputError):
        encode(record)


def test_an_incident_with_a_bad_event_or_component_name_is_refused() -> None:
    good = every_kind()[4]
    assert isinstance(good, Incident)
    for bad in (
        Incident(**{**good.__dict__, "event": "IntegrityFailed"}),
        Incident(**{**good.__dict__, "component": "../etc/passwd"}),
    ):
        with pytest.raises(InvalidInputError):
            encode(bad)


SECRETS = [
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "AKIAIOSFODNN7EXAMPLEwJalrXUtnFEMIK7MDENGbPxRfiCY",
    "0123456789abcdef0123456789abcdef0123456789abcdef",
    "technician.bob@example.com",
]


@pytest.mark.parametrize("secret", SECRETS)
def test_secrets_and_personal_data_never_reach_a_line(secret: str, tmp_path: Path) -> None:
    records: list[Record] = [
        change(evidence=f"value was {secret} then"),
        Incident(
            time=T0, check="unauthorized", event="ipc.unauthorized", severity=Severity.WARNING, message=secret
        ),
        Lifecycle(time=T0, event=LifecycleEvent.MONITOR_STARTED, detail=secret),
        Snapshot(time=T0, overall=State.OK, checks=(CheckStatus(check="x", state=State.OK, subject=secret),)),
    ]
    with HealthLogWriter(tmp_path / "log") as log:
        for record in records:
            log.append(record)
    data = (tmp_path / "log" / "health.log").read_bytes()
    for fragment in (secret, secret[:32], secret[-32:], "BEGIN PRIVATE", "@example.com"):
        assert fragment.encode() not in data
    assert data.count(REDACTED.encode()) >= len(records)


def test_redaction_spares_paths_and_component_names() -> None:
    text = "com.deviceagent.TelemetryPublisher wrote /greengrass/v2/work/com.deviceagent.HealthMonitor/health"
    assert clean_text(text) == text


def test_free_text_is_one_clipped_line() -> None:
    obj = to_json(change(evidence="line one\nline two\r\x1b[31mred\x00" + "x " * 500))
    assert "\n" not in obj["evidence"]
    assert "\x1b" not in obj["evidence"]
    assert "\x00" not in obj["evidence"]
    assert len(obj["evidence"]) <= 240
    assert obj["evidence"].startswith("line one line two")


def test_a_line_over_the_limit_is_refused() -> None:
    huge = Snapshot(
        time=T0,
        overall=State.OK,
        checks=tuple(
            CheckStatus(
                check="c" * 48, subject="a mount " * 8, state=State.OK, value="a value " * 8, unit="u" * 12
            )
            for _ in range(200)
        ),
    )
    with pytest.raises(InvalidInputError, match=str(MAX_LINE_BYTES)):
        encode(huge)


def test_a_snapshot_holds_at_most_200_checks() -> None:
    with pytest.raises(InvalidInputError, match="200"):
        encode(snapshot(checks=201))


def long_status(i: int, state: State = State.OK) -> CheckStatus:
    # A subject is clipped to 64 characters, but each one outside ASCII takes 6 bytes (\u00e9) on the line.
    return CheckStatus(
        check="temperature",
        subject="\u00e9" * 60 + f"{i:03d}",
        state=state,
        value=0.25,
        unit="C",
        since=T0,
        verified=T0,
    )


def test_fit_snapshot_cuts_a_snapshot_over_the_line_limit_keeping_the_worst_checks() -> None:
    statuses = [long_status(i) for i in range(200)]
    statuses[150] = long_status(150, State.CRITICAL)
    statuses[199] = long_status(199, State.UNKNOWN)
    big = Snapshot(time=T0, overall=State.CRITICAL, interval_seconds=300, checks=tuple(statuses))
    with pytest.raises(InvalidInputError):
        encode(big)  # what the monitor used to write, and die of
    fitted, left_out = fit_snapshot(big)
    assert len(encode(fitted)) <= MAX_LINE_BYTES
    assert left_out
    assert len(fitted.checks) + len(left_out) == 200
    assert {s.state for s in left_out} == {State.OK}  # the problems are kept
    assert {statuses[150], statuses[199]} <= set(fitted.checks)
    kept = [statuses.index(s) for s in fitted.checks]
    assert kept == sorted(kept)  # in their order


def test_fit_snapshot_keeps_at_most_200_checks_and_leaves_a_small_one_alone() -> None:
    fitted, left_out = fit_snapshot(snapshot(checks=230))
    assert (len(fitted.checks), len(left_out)) == (200, 30)
    encode(fitted)
    small = snapshot(checks=3)
    assert fit_snapshot(small) == (small, [])


def test_fit_snapshot_leaves_out_a_check_the_log_would_refuse() -> None:
    bad = CheckStatus(check="Not A Check!", state=State.WARN)
    fitted, left_out = fit_snapshot(dataclasses.replace(snapshot(checks=2), checks=(*snapshot().checks, bad)))
    assert left_out == [bad]
    encode(fitted)


@pytest.mark.parametrize(
    ("name", "event", "component"),
    [
        ("store.integrity_failed", True, True),
        ("com.deviceagent.EncryptedStore", False, True),
        ("Probe", False, True),
        ("bad name!", False, False),
        ("", False, False),
        (None, False, False),
        (42, False, False),
    ],
)
def test_event_and_component_names_are_checked_before_a_record_is_built(
    name: object, event: bool, component: bool
) -> None:
    assert (is_event_name(name), is_component_name(name)) == (event, component)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"schema":"health-log/1","kind":"sta', "not valid JSON"),
        (b"\x00\x00\x00\x00", "NUL"),
        (b'["a list"]', "not a JSON object"),
        (b'{"schema":"other/1","kind":"state"}', "not a health log record"),
        (b'{"schema":"health-log/2","kind":"state","time":"2026-03-01T12:00:00.000Z"}', "newer format"),
        (
            b'{"schema":"health-log/1","kind":"mystery","time":"2026-03-01T12:00:00.000Z"}',
            "unknown record kind",
        ),
        (b'{"schema":"health-log/1","kind":"state","time":"yesterday"}', "not a time"),
        (b'{"schema":"health-log/1","kind":"state","time":"2026-03-01T12:00:00Z","check":"cpu"}', "'from'"),
        (
            b'{"schema":"health-log/1","kind":"snapshot","time":"2026-03-01T12:00:00Z","overall":"OK","checks":[1]}',
            "not an object",
        ),
        (b"[" * 100000 + b"]" * 100000, "not valid JSON"),
    ],
)
def test_bad_lines_are_refused_with_a_reason(line: bytes, reason: str) -> None:
    with pytest.raises(BadLineError, match=reason):
        parse_line(line)


def test_a_reader_ignores_fields_it_does_not_know() -> None:
    obj = to_json(change()) | {"futureField": {"nested": True}}
    assert from_json(obj) == change()


# --- the bound ------------------------------------------------------------------------------------------


def assert_within_bound(writer: HealthLogWriter) -> None:
    found = sizes(writer.directory)
    assert sum(found.values()) <= writer.bound, found
    assert all(size <= writer.max_file_bytes for size in found.values()), found
    assert len(found) <= writer.max_files
    assert set(found) <= {"health.log", *(f"health.log.{n}" for n in range(1, writer.max_files))}


def test_the_log_never_exceeds_its_bound_across_many_rotations(memory_dir: Path) -> None:
    tmp_path = memory_dir
    writer = HealthLogWriter(tmp_path / "log", max_file_bytes=MIN_FILE_BYTES, max_files=3, sync_every=50)
    rotations = 0
    with writer:
        for n in range(6000):
            before = (tmp_path / "log" / "health.log").stat().st_size
            writer.append(change(n) if n % 7 else snapshot(n, checks=n % 40))
            rotations += (tmp_path / "log" / "health.log").stat().st_size < before
            assert_within_bound(writer)
    assert rotations >= 20
    assert writer.rotations == rotations  # the count the monitor uses to snapshot into a fresh file
    contents = read_log(tmp_path / "log")
    assert contents.problems == ()
    # The newest records survive, in order and without a gap.
    numbers = [int(r.evidence.rsplit("#", 1)[1]) for r in contents.records if isinstance(r, StateChange)]
    assert numbers == [n for n in range(numbers[0], 6000) if n % 7]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    max_files=st.integers(min_value=2, max_value=5),
    lengths=st.lists(st.integers(min_value=0, max_value=6000), min_size=1, max_size=120),
)
def test_any_mix_of_line_sizes_stays_within_the_bound(
    memory_dir: Path, max_files: int, lengths: list[int]
) -> None:
    tmp_path = memory_dir
    directory = tmp_path / f"log-{max_files}-{len(lengths)}-{sum(lengths)}"
    writer = HealthLogWriter(directory, max_file_bytes=MIN_FILE_BYTES, max_files=max_files)
    with writer:
        for n, length in enumerate(lengths):
            text = "x " * (length // 2)
            writer.append(
                Lifecycle(time=T0, event=LifecycleEvent.MONITOR_STARTED, detail=f"{n} {text}"[:200])
            )
            writer.append(snapshot(n, checks=length // 100))
            assert_within_bound(writer)
    assert read_log(directory).problems == ()


def test_a_lowered_bound_trims_the_oldest_files_at_open(memory_dir: Path) -> None:
    directory = memory_dir / "log"
    with HealthLogWriter(directory, max_file_bytes=MIN_FILE_BYTES, max_files=5) as log:
        for n in range(2500):
            log.append(change(n))
    assert len(sizes(directory)) == 5
    with HealthLogWriter(directory, max_file_bytes=MIN_FILE_BYTES, max_files=2) as log:
        assert_within_bound(log)
    contents = read_log(directory)
    trimmed = [r for r in contents.records if isinstance(r, Lifecycle) and r.event is LifecycleEvent.TRIMMED]
    assert len(trimmed) == 1
    assert "removed 3 old files" in (trimmed[0].detail or "")


def test_writer_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_file_bytes"):
        HealthLogWriter(tmp_path, max_file_bytes=1000)
    with pytest.raises(ValueError, match="max_files"):
        HealthLogWriter(tmp_path, max_files=1)
    with pytest.raises(ValueError, match="sync_every"):
        HealthLogWriter(tmp_path, sync_every=0)


# --- durability -----------------------------------------------------------------------------------------


def fsyncs(io: FaultyFileIO) -> int:
    return sum(1 for operation, _ in io.operations if operation == "fsync")


@pytest.mark.parametrize(
    "record",
    [change(), every_kind()[2], every_kind()[4]],
    ids=["state", "lifecycle", "incident"],
)
def test_state_changes_lifecycle_and_incidents_are_synced_before_append_returns(
    tmp_path: Path, record: Record
) -> None:
    io = FaultyFileIO()
    with HealthLogWriter(tmp_path / "log", io=io) as log:
        before = fsyncs(io)
        log.append(record)
        assert fsyncs(io) == before + 1
        assert io.operations[-1] == ("fsync", str(tmp_path / "log" / "health.log"))


def test_snapshots_are_synced_in_batches_and_on_close(tmp_path: Path) -> None:
    io = FaultyFileIO()
    log = HealthLogWriter(tmp_path / "log", io=io, sync_every=4)
    log.open()
    before = fsyncs(io)
    for n in range(3):
        log.append(snapshot(n))
    assert fsyncs(io) == before
    log.append(snapshot(3))
    assert fsyncs(io) == before + 1
    log.append(snapshot(4))
    log.append(change())  # a durable record syncs the snapshot before it too
    assert fsyncs(io) == before + 2
    log.append(snapshot(5))
    log.close()
    assert fsyncs(io) == before + 3


def test_a_failed_fsync_is_reported_never_retried_and_the_file_reopened(tmp_path: Path) -> None:
    io = FaultyFileIO(faults=[Fault("fsync", errno.EIO, call=1)])
    with HealthLogWriter(tmp_path / "log", io=io) as log:
        with pytest.raises(StorageError) as raised:
            log.append(change(1))
        assert raised.value.errno == errno.EIO
        opens = sum(1 for operation, _ in io.operations if operation == "open")
        log.append(change(2))
        assert sum(1 for operation, _ in io.operations if operation == "open") == opens + 1
    # The record whose sync failed is in the file all the same; it was only not known to be durable.
    assert evidences(read_log(tmp_path / "log").records) == [change(1).evidence, change(2).evidence]


def test_a_full_disk_mid_line_leaves_one_bad_line_and_the_next_record_whole(tmp_path: Path) -> None:
    budget = len(encode(change(0))) + 20  # the second line is cut after 20 bytes
    io = FaultyFileIO(enospc_after=budget)
    log = HealthLogWriter(tmp_path / "log", io=io)
    log.open()
    log.append(change(0))
    with pytest.raises(StorageError) as raised:
        log.append(change(1))
    assert raised.value.no_space
    log.close()
    with HealthLogWriter(tmp_path / "log") as again:  # space is back
        again.append(change(2))
    contents = read_log(tmp_path / "log")
    assert evidences(contents.records) == [change(0).evidence, change(2).evidence]
    assert [(p.line, p.reason) for p in contents.problems] == [(2, "not valid JSON (cut short or damaged)")]


# --- torn lines -----------------------------------------------------------------------------------------


def two_changes(directory: Path) -> tuple[Path, bytes]:
    """A log of two state changes in `directory`: its file and the file's bytes."""
    with HealthLogWriter(directory) as log:
        log.append(change(0))
        log.append(change(1))
    path = directory / "health.log"
    return path, path.read_bytes()


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    path, whole = two_changes(directory)
    path.write_bytes(whole[: len(whole) - 25])  # power lost in the middle of the second line
    contents = read_log(directory)
    assert evidences(contents.records) == [change(0).evidence]
    assert [(p.file, p.line) for p in contents.problems] == [("health.log", 2)]
    assert "incomplete last line" in contents.problems[0].reason


def test_a_line_caught_in_flight_is_read_whole_once_its_write_completes(tmp_path: Path) -> None:
    path, whole = two_changes(tmp_path / "log")
    views = [whole[: len(whole) - 25], whole[: len(whole) - 5], whole]  # a write landing page by page
    pauses: list[float] = []

    def read(_: Path) -> bytes:
        return views.pop(0)

    data = health_log._read_settled(path, read=read, pause=pauses.append)
    assert data == whole
    assert len(pauses) == 2
    assert all(0 < p <= 0.05 for p in pauses)


def test_a_tail_that_stays_incomplete_is_torn_after_a_brief_look(tmp_path: Path) -> None:
    path = tmp_path / "health.log"
    cut = b'{"schema":"health-log/1"}\n{"schema":"hea'
    pauses: list[float] = []
    reads = []

    def read(p: Path) -> bytes:
        reads.append(p)
        return cut

    assert health_log._read_settled(path, read=read, pause=pauses.append) == cut
    assert len(reads) == 2
    assert len(pauses) == 1


def test_a_file_replaced_while_its_tail_is_in_flight_keeps_what_was_read(tmp_path: Path) -> None:
    path = tmp_path / "health.log"
    first = b'{"a":1}\n{"b":'
    views = [first, b'{"new file, longer than the first":1}\n']
    data = health_log._read_settled(path, read=lambda _: views.pop(0), pause=lambda _: None)
    assert data == first


def test_a_complete_file_is_read_once(tmp_path: Path) -> None:
    reads: list[Path] = []
    data = b'{"a":1}\n'

    def read(p: Path) -> bytes:
        reads.append(p)
        return data

    assert health_log._read_settled(tmp_path / "x", read=read, pause=lambda _: None) == data
    assert len(reads) == 1


def test_a_writer_reopening_a_torn_file_starts_on_a_new_line(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    with HealthLogWriter(directory) as log:
        log.append(change(0))
    with (directory / "health.log").open("ab") as file:
        file.write(b'{"schema":"health-log/1","kind":"state","ti')
    with HealthLogWriter(directory) as log:
        log.append(change(1))
    contents = read_log(directory)
    assert evidences(contents.records) == [change(0).evidence, change(1).evidence]
    assert [(p.line, p.reason) for p in contents.problems] == [(2, "not valid JSON (cut short or damaged)")]


def test_zeros_from_a_power_loss_are_one_warning_not_a_crash(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    with HealthLogWriter(directory) as log:
        log.append(change(0))
    with (directory / "health.log").open("ab") as file:
        file.write(b"\x00" * 4096)  # ext4 can show zeros where data never reached the disk
    contents = read_log(directory)
    assert len(contents.records) == 1
    assert len(contents.problems) == 0  # a tail of zeros alone is no line at all
    with HealthLogWriter(directory) as log:
        log.append(change(1))
    contents = read_log(directory)
    assert evidences(contents.records) == [change(0).evidence, change(1).evidence]
    assert [p.reason for p in contents.problems] == ["holds NUL bytes (written during a power loss?)"]


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=3000), defer=st.booleans())
def test_the_reader_never_crashes_on_any_bytes(data: bytes, defer: bool) -> None:
    problems = _Collector(50)
    good = encode(change(7))
    records = _parse_lines(good + data + b"\n" + good, "health.log", problems, defer_snapshots=defer)
    assert records[0] == change(7)
    assert records[-1] == change(7)


def test_reading_only_the_newest_snapshot_keeps_everything_else(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    with HealthLogWriter(directory) as log:
        log.append(snapshot(1))
        log.append(change(1))
        log.append(snapshot(2))
        log.append(change(2))
    full = read_log(directory)
    newest = read_log(directory, snapshots="newest")
    assert [type(r).__name__ for r in full.records] == ["Snapshot", "StateChange", "Snapshot", "StateChange"]
    assert newest.records == (full.records[1], full.records[2], full.records[3])
    assert current_checks(newest.records) == current_checks(full.records)


def test_a_damaged_newest_snapshot_falls_back_to_the_one_before(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    with HealthLogWriter(directory) as log:
        log.append(snapshot(1))
        log.append(snapshot(2))
    bad = to_json(snapshot(3))
    bad["checks"][0]["state"] = "SIDEWAYS"  # valid JSON, wrong inside: found only when decoded
    with (directory / "health.log").open("ab") as file:
        file.write(json.dumps(bad).encode() + b"\n" + b'{"schema":"health-log/1","kind":"snapshot"}\n')
    contents = read_log(directory, snapshots="newest")
    assert contents.records == (snapshot(2),)
    assert [(p.line, p.reason) for p in contents.problems] == [
        (4, "field 'time' missing or not text"),
        (3, "field 'state' has an unknown value"),
    ]
    assert len(read_log(directory).problems) == 2  # the full read finds the same two


def test_problems_are_capped_and_counted(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    directory.mkdir()
    (directory / "health.log").write_bytes(b"junk\n" * 80 + encode(change()))
    contents = read_log(directory, max_problems=50)
    assert len(contents.problems) == 50
    assert contents.more_problems == 30
    assert contents.records == (change(),)


# --- reading a directory ----------------------------------------------------------------------------------


def test_files_are_read_oldest_first_and_gaps_and_strangers_are_skipped(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    directory.mkdir()
    for name, n in (("health.log.3", 3), ("health.log.1", 1), ("health.log", 0)):
        (directory / name).write_bytes(encode(change(n)))
    (directory / "health.log.x").write_bytes(b"not ours")
    (directory / "notes.txt").write_bytes(b"not ours")
    assert [p.name for p in log_files(directory)] == ["health.log.3", "health.log.1", "health.log"]
    contents = read_log(directory)
    assert evidences(contents.records) == [
        change(3).evidence,
        change(1).evidence,
        change(0).evidence,
    ]
    assert contents.files == ("health.log.3", "health.log.1", "health.log")


def test_a_missing_directory_or_empty_log_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        read_log(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError):
        read_log(tmp_path / "empty")


def test_a_symlink_among_the_files_is_not_followed(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    directory.mkdir()
    secret = tmp_path / "secret"
    secret.write_bytes(encode(change(99)))
    (directory / "health.log.1").symlink_to(secret)
    (directory / "health.log").write_bytes(encode(change(0)))
    contents = read_log(directory)
    assert contents.records == (change(0),)
    assert [p.file for p in contents.problems] == ["health.log.1"]


def test_current_checks_start_from_the_newest_snapshot_and_apply_later_changes() -> None:
    old = CheckStatus(check="cpu", state=State.OK, value=10, since=T0)
    gone = CheckStatus(check="swap", state=State.WARN, value=85, since=T0)
    records: list[Record] = [
        Snapshot(time=T0, overall=State.WARN, checks=(old, gone)),
        Snapshot(time=T0 + timedelta(minutes=5), overall=State.OK, checks=(old,)),
        change(at=T0 + timedelta(minutes=6)),
    ]
    checks = current_checks(records)
    assert set(checks) == {("cpu", None)}
    assert checks["cpu", None].state is State.WARN
    assert checks["cpu", None].verified == T0 + timedelta(minutes=6)
    assert current_checks(records[2:])["cpu", None].state is State.WARN  # no snapshot at all


def test_worst_ranks_unknown_between_ok_and_warn() -> None:
    assert worst([]) is State.OK
    assert worst([State.OK, State.UNKNOWN]) is State.UNKNOWN
    assert worst([State.UNKNOWN, State.WARN]) is State.WARN
    assert worst([State.CRITICAL, State.WARN, State.UNKNOWN]) is State.CRITICAL


# --- crash safety ---------------------------------------------------------------------------------------

WORKLOAD = 1400  # records of this size rotate 64 KiB files about six times
_ROTATION = {"replace", "unlink", "fsync_dir", "open", "chmod", "fchmod"}


def workload(n: int) -> Record:
    return change(n, evidence="x" * 200) if n % 5 else snapshot(n, checks=2)


def run_workload(directory: Path, io: FaultyFileIO | None = None, start: int = 0) -> None:
    directory.mkdir(exist_ok=True)  # so that every recorded operation succeeds and can be a crash point
    with HealthLogWriter(directory, max_file_bytes=MIN_FILE_BYTES, max_files=3, io=io, sync_every=3) as log:
        for n in range(start, WORKLOAD):
            log.append(workload(n))


def crash_points() -> Iterator[CrashPoint]:
    """Every operation of opening and rotating, the two before each (the last write and sync of a file),
    and a sample of the appends in between."""
    shm = Path("/dev/shm")  # as memory_dir: only for speed
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as scratch:
        io = FaultyFileIO()
        run_workload(Path(scratch) / "log", io)
    operations = [operation for operation, _ in io.operations]
    near = {i - k for i, op in enumerate(operations) if op in _ROTATION for k in range(3)}
    counts: dict[str, int] = {}
    for index, operation in enumerate(operations):
        counts[operation] = counts.get(operation, 0) + 1
        if index in near or index % 97 == 0:
            yield CrashPoint(operation, counts[operation])


def test_the_crash_workload_rotates() -> None:
    points = list(crash_points())
    assert sum(1 for p in points if p.operation == "replace") >= 9
    assert sum(1 for p in points if p.operation == "unlink") >= 3


@pytest.mark.parametrize("point", list(crash_points()), ids=lambda p: f"{p.operation}-{p.call}")
def test_a_crash_at_any_file_operation_leaves_a_valid_set(memory_dir: Path, point: CrashPoint) -> None:
    directory = memory_dir / "log"
    io = FaultyFileIO(crash=point, watch=directory)
    with pytest.raises(SimulatedCrash):
        run_workload(directory, io)
    # What the crash left: only the log's names, each file whole, within the bound, in order.
    image = io.crash_image or {}
    assert set(image) <= {"health.log", "health.log.1", "health.log.2"}
    assert sum(len(data) for data in image.values()) <= 3 * MIN_FILE_BYTES
    assert all(len(data) <= MIN_FILE_BYTES for data in image.values())
    written: list[int] = []
    if image:
        first = read_log(directory)
        assert first.problems == ()
        written = [int(r.evidence.rsplit("#", 1)[1]) for r in first.records if isinstance(r, StateChange)]
        assert written == sorted(written)
    else:
        with pytest.raises(NotFoundError):  # crashed before the first file: an empty log, also valid
            read_log(directory)
    # A new writer takes over, and the log goes on in order.
    resume = (written[-1] + 1) if written else 0
    run_workload(directory, start=resume)
    after = read_log(directory)
    assert after.problems == ()
    numbers = [int(r.evidence.rsplit("#", 1)[1]) for r in after.records if isinstance(r, StateChange)]
    assert numbers == sorted(numbers)
    assert numbers[-1] == WORKLOAD - 1


# --- modes, group, ownership ---------------------------------------------------------------------------


@pytest.fixture(params=[0o022, 0o000, 0o277], ids=["umask022", "umask000", "umask277"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def other_group() -> grp.struct_group:
    """A group the process may give files to: as root any; otherwise one of its own."""
    mine = set(os.getgroups()) | {os.getegid()}
    candidates = [g for g in grp.getgrall() if g.gr_gid != os.getegid() and (IS_ROOT or g.gr_gid in mine)]
    if not candidates:
        pytest.skip("no second group to give the log to")
    return candidates[0]


def test_without_a_group_the_log_is_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    with HealthLogWriter(tmp_path / "log", max_file_bytes=MIN_FILE_BYTES) as log:
        for n in range(700):
            log.append(change(n, evidence="y" * 200))
    assert mode_of(tmp_path / "log") == 0o700
    files = log_files(tmp_path / "log")
    assert len(files) >= 2  # rotated files too
    assert {mode_of(path) for path in files} == {0o600}


def test_with_a_group_files_are_0640_and_the_directory_0750_owned_by_it(tmp_path: Path, umask: int) -> None:
    group = other_group()
    with HealthLogWriter(tmp_path / "log", max_file_bytes=MIN_FILE_BYTES, group=group.gr_name) as log:
        for n in range(700):
            log.append(change(n, evidence="y" * 200))
        assert log.group_problem is None
    assert mode_of(tmp_path / "log") == 0o750
    assert (tmp_path / "log").stat().st_gid == group.gr_gid
    files = log_files(tmp_path / "log")
    assert len(files) >= 2
    assert {mode_of(path) for path in files} == {0o640}
    assert {path.stat().st_gid for path in files} == {group.gr_gid}
    notes = [r for r in read_log(tmp_path / "log").records if isinstance(r, Lifecycle)]
    assert notes == []


def test_sharing_follows_the_configuration_both_ways(tmp_path: Path) -> None:
    group = other_group()
    with HealthLogWriter(tmp_path / "log", group=group.gr_name) as log:
        log.append(change())
    assert mode_of(tmp_path / "log" / "health.log") == 0o640
    with HealthLogWriter(tmp_path / "log") as log:
        log.append(change())
    assert mode_of(tmp_path / "log") == 0o700
    assert mode_of(tmp_path / "log" / "health.log") == 0o600


def test_a_missing_group_keeps_the_log_private_and_says_so_once(tmp_path: Path) -> None:
    for _ in range(2):
        with HealthLogWriter(tmp_path / "log", group="no-such-group-here") as log:
            assert log.group_problem == "group no-such-group-here does not exist"
            log.append(change())
            log.sync()
            log.close()  # a close and reopen of the file does not repeat the note
            log.append(change())
    assert mode_of(tmp_path / "log") == 0o700
    assert mode_of(tmp_path / "log" / "health.log") == 0o600
    notes = [r for r in read_log(tmp_path / "log").records if isinstance(r, Lifecycle)]
    assert [n.event for n in notes] == [LifecycleEvent.GROUP_NOT_APPLIED] * 2  # once per open
    assert "files stay 0600" in (notes[0].detail or "")


@pytest.fixture
def nobodys_dir() -> Iterator[Path]:
    """A directory `nobody` owns and can reach (pytest's own temporary folders are root's, 0700)."""
    base = Path(tempfile.mkdtemp(prefix="health-nobody-"))
    base.chmod(0o755)
    work = base / "work"
    work.mkdir()
    os.chown(work, 65534, 65534)
    yield work
    shutil.rmtree(base, ignore_errors=True)


@requires_root
def test_a_group_the_user_may_not_use_keeps_the_log_private(nobodys_dir: Path) -> None:
    # As `nobody`, giving files to group root fails with EPERM: the log stays private and says why.
    # Everything is imported before the switch: the interpreter's own files may not be readable by nobody.
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(PROJECT)!r})
        from datetime import datetime, UTC
        from device_agent.health_log import HealthLogWriter, Lifecycle, LifecycleEvent
        os.setgid(65534); os.setgroups([]); os.setuid(65534)
        with HealthLogWriter({str(nobodys_dir / "log")!r}, group="root") as log:
            print(log.group_problem)
            log.append(Lifecycle(time=datetime.now(UTC), event=LifecycleEvent.MONITOR_STARTED))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cannot give the log to group root: Operation not permitted"
    assert mode_of(nobodys_dir / "log") == 0o700
    assert mode_of(nobodys_dir / "log" / "health.log") == 0o600
    records = read_log(nobodys_dir / "log").records
    assert [r.event for r in records if isinstance(r, Lifecycle)] == [
        LifecycleEvent.GROUP_NOT_APPLIED,
        LifecycleEvent.MONITOR_STARTED,
    ]


def test_a_symlink_planted_as_the_log_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    directory.mkdir()
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    (directory / "health.log").symlink_to(target)
    with pytest.raises(UnsafeFileError):
        HealthLogWriter(directory).open()
    assert target.read_bytes() == b""


def test_a_symlink_as_the_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "log").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafeFileError):
        HealthLogWriter(tmp_path / "log").open()


@requires_root
def test_files_of_another_owner_are_refused(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    directory.mkdir()
    (directory / "health.log.1").write_bytes(encode(change()))
    os.chown(directory / "health.log.1", 65534, 65534)
    with pytest.raises(UnsafeFileError, match="owned by uid 65534"):
        HealthLogWriter(directory).open()


def test_a_missing_parent_is_an_error_not_a_tree_of_directories(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no such directory"):
        HealthLogWriter(tmp_path / "a" / "b" / "log").open()
