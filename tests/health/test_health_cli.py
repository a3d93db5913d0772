"""`device-health`: golden screens, `--json` against its schema, exit codes, `--since`, `--check`,
`--follow`, `--export`, colour, and the 80-column rule.

Goldens live in tests/health/goldens/; after a deliberate change of the screen, regenerate them with
`UPDATE_GOLDENS=1 .venv/bin/python -m pytest tests/health/test_health_cli.py` and review the diff.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from device_agent.health_cli import (
    EXIT_CANNOT_CREATE,
    EXIT_CRITICAL,
    EXIT_NO_LOG,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_WARNING,
    TRIAGE,
    WIDTH,
    main,
    parse_since,
)
from device_agent.health_log import (
    MIN_FILE_BYTES,
    CheckStatus,
    HealthLogWriter,
    Incident,
    Severity,
    Snapshot,
    State,
    StateChange,
    encode,
)
from tests.health import samples

PROJECT = Path(__file__).resolve().parents[2]
GOLDENS = Path(__file__).with_name("goldens")
UPDATE = os.environ.get("UPDATE_GOLDENS") == "1"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
IS_ROOT = os.geteuid() == 0


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def report_schema() -> jsonschema.Draft202012Validator:
    schema = json.loads((PROJECT / "docs/schemas/device-health.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder per scenario, written once: healthy, warning, critical, torn and stale."""
    base = tmp_path_factory.mktemp("logs")
    for scenario in samples.SCENARIOS:
        samples.write_log(base / scenario, scenario)
    samples.write_log(base / "stale", "healthy", snapshots_until=samples.NOW - timedelta(hours=3))
    torn = base / "torn"
    samples.write_log(torn, "healthy")
    rotated = torn / "health.log.1"
    data = bytearray(rotated.read_bytes())
    middle = data.index(b"\n", len(data) // 2) + 1
    data[middle : middle + 40] = b"\x00" * 40  # a damaged line in a rotated file
    rotated.write_bytes(bytes(data))
    with (torn / "health.log").open("ab") as file:
        file.write(b'{"schema":"health-log/1","kind":"snapshot","time":"2026-03-01T12:0')  # power lost
    return base


def run(args: list[str], *, cwd: Path, stdout: io.StringIO | None = None, **kw: Any) -> tuple[int, str, str]:
    out = stdout if stdout is not None else io.StringIO()
    err = io.StringIO()
    previous = Path.cwd()
    os.chdir(cwd)  # a relative --log-dir keeps the screen free of this machine's paths
    try:
        code = main(
            args, now=kw.pop("now", samples.NOW), stdout=out, stderr=err, environ=kw.pop("environ", {}), **kw
        )
    finally:
        os.chdir(previous)
    return code, out.getvalue(), err.getvalue()


def check_golden(name: str, text: str) -> None:
    path = GOLDENS / name
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"missing golden {name}: run with UPDATE_GOLDENS=1"
    assert text == path.read_text()


# --- goldens --------------------------------------------------------------------------------------------

GOLDEN_RUNS = {
    "healthy": (["--log-dir", "healthy"], EXIT_OK),
    "warning": (["--log-dir", "warning"], EXIT_WARNING),
    "critical": (["--log-dir", "critical"], EXIT_CRITICAL),
    "torn": (["--log-dir", "torn"], EXIT_OK),
    "stale": (["--log-dir", "stale"], EXIT_WARNING),
    "check": (["--log-dir", "warning", "--check", "disk_space"], EXIT_WARNING),
    "check-subject": (["--log-dir", "critical", "--check", "disk_space:/"], EXIT_OK),
    "since": (["--log-dir", "critical", "--since", "30m"], EXIT_CRITICAL),
    "since-iso": (["--log-dir", "warning", "--since", "2026-03-01T10:00"], EXIT_WARNING),
}


@pytest.mark.parametrize("name", list(GOLDEN_RUNS))
def test_golden_screens(logs: Path, name: str) -> None:
    args, expected = GOLDEN_RUNS[name]
    code, out, err = run(args, cwd=logs)
    assert err == ""
    check_golden(f"{name}.txt", out)
    assert code == expected


def test_the_goldens_fit_an_80_column_screen() -> None:
    goldens = sorted(GOLDENS.glob("*.txt"))
    assert len(goldens) >= len(GOLDEN_RUNS)
    for golden in goldens:
        for number, line in enumerate(golden.read_text().splitlines(), start=1):
            assert len(line) <= WIDTH, f"{golden.name}:{number} is {len(line)} columns"
            assert line.isascii(), f"{golden.name}:{number} is not plain ASCII"


def test_a_torn_log_is_read_past_with_warnings_and_loses_only_the_bad_lines(logs: Path) -> None:
    _, out, _ = run(["--log-dir", "torn"], cwd=logs)
    assert "LOG PROBLEMS" in out
    assert "health.log.1 line" in out
    assert "incomplete last line" in out
    _, healthy, _ = run(["--log-dir", "healthy"], cwd=logs)
    table = healthy.split("\n\n")[1]
    assert table in out  # every check is still read, from the last whole snapshot


def test_the_healthy_screen_shows_status_checks_and_timeline(logs: Path) -> None:
    _, out, _ = run(["--log-dir", "healthy"], cwd=logs)
    assert out.startswith("DEVICE HEALTH: HEALTHY (17 OK)\n")
    assert "Newest snapshot 2026-03-01 11:59:59 UTC, 1 s ago" in out
    assert "WHAT NEEDS ATTENTION" not in out
    assert "cpu: OK -> WARN" in out  # the timeline shows the blip that recovered
    assert "--export" not in out


def test_every_problem_comes_with_its_triage_hint(logs: Path) -> None:
    _, out, _ = run(["--log-dir", "critical"], cwd=logs)
    text = " ".join(out.split())
    for check in ("heartbeat", "integrity", "store", "certificate", "disk_space"):
        hint = TRIAGE[check].for_state(
            State.CRITICAL if check in {"heartbeat", "integrity", "store"} else State.WARN
        )
        assert " ".join(hint.meaning.split()) in text, check
        assert " ".join(hint.action.split()) in text, check


def test_unknown_has_its_own_hint(logs: Path) -> None:
    _, out, _ = run(["--log-dir", "warning"], cwd=logs)
    assert "[UNKNOWN] No recent readings: temperature cpu_thermal" in out
    assert "telemetry publisher's samples" in out


def test_a_stale_log_says_how_old_it_is_and_is_not_healthy(logs: Path) -> None:
    code, out, _ = run(["--log-dir", "stale"], cwd=logs)
    assert code == EXIT_WARNING
    assert out.startswith("DEVICE HEALTH: UNKNOWN (17 OK, log stale)")
    assert "3 h 0 min ago - STALE" in out
    assert "[UNKNOWN] Health log not updated: newest snapshot 3 h 0 min old" in out
    # The same log read soon after its last snapshot is fresh and healthy.
    code, out, _ = run(["--log-dir", "stale"], cwd=logs, now=samples.NOW - timedelta(hours=2, minutes=58))
    assert code == EXIT_OK
    assert "STALE" not in out


def test_a_snapshot_from_the_future_is_flagged_not_stale(logs: Path) -> None:
    code, out, _ = run(["--log-dir", "healthy"], cwd=logs, now=samples.NOW - timedelta(hours=1))
    assert "UTC, in the future (clock changed?)" in out
    assert code == EXIT_OK


# --- JSON -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", [*samples.SCENARIOS, "torn", "stale"])
def test_json_validates_against_its_schema_and_agrees_with_the_exit_code(
    logs: Path, scenario: str, report_schema: jsonschema.Draft202012Validator
) -> None:
    code, out, err = run(["--log-dir", scenario, "--json"], cwd=logs)
    assert err == ""
    document = json.loads(out)
    report_schema.validate(document)
    assert document["exitCode"] == code
    assert document["logDir"] == scenario
    expected = {"healthy": "OK", "warning": "WARN", "critical": "CRITICAL", "torn": "OK", "stale": "UNKNOWN"}
    assert document["status"] == expected[scenario]


def test_json_golden(logs: Path) -> None:
    _, out, _ = run(["--log-dir", "critical", "--json"], cwd=logs)
    check_golden("critical.json", out)


def test_json_lists_attention_worst_first_with_hints(logs: Path) -> None:
    _, out, _ = run(["--log-dir", "critical", "--json"], cwd=logs)
    document = json.loads(out)
    states = [item["state"] for item in document["attention"]]
    assert states == ["CRITICAL", "CRITICAL", "CRITICAL", "WARN", "WARN", "UNKNOWN"]
    first = document["attention"][0]
    assert first["check"] == "heartbeat"
    assert first["subject"] == samples.STORE
    assert first["whatToDo"] == TRIAGE["heartbeat"].hint.action
    assert first["evidence"] == "at or above 3 for 0 s (1 readings, worst 3.1)"
    kinds = {entry["kind"] for entry in document["timeline"]}
    assert kinds == {"state", "incident", "lifecycle"}


def test_json_for_a_missing_log_is_valid_and_exits_3(tmp_path: Path, report_schema) -> None:
    code, out, err = run(["--log-dir", "absent", "--json"], cwd=tmp_path)
    assert code == EXIT_NO_LOG
    document = json.loads(out)
    report_schema.validate(document)
    assert document["exitCode"] == EXIT_NO_LOG
    assert "no health log in absent" in document["error"]
    assert "no health log in absent" in err


# --- filters --------------------------------------------------------------------------------------------


def test_check_filters_the_table_the_timeline_and_the_exit_code(logs: Path) -> None:
    code, out, _ = run(["--log-dir", "critical", "--check", "certificate", "--json"], cwd=logs)
    document = json.loads(out)
    assert [c["check"] for c in document["checks"]] == ["certificate"]
    assert {e.get("check") for e in document["timeline"]} == {"certificate"}
    assert code == EXIT_WARNING  # the device is critical, but this check only warns


def test_check_with_a_subject_selects_one(logs: Path) -> None:
    _, out, _ = run(["--log-dir", "warning", "--check", "disk_space:/data", "--json"], cwd=logs)
    assert [(c["check"], c["subject"]) for c in json.loads(out)["checks"]] == [("disk_space", "/data")]


def test_a_catalogue_check_absent_from_the_log_is_unknown(logs: Path) -> None:
    code, out, _ = run(["--log-dir", "healthy", "--check", "clock_unset"], cwd=logs)
    assert code == EXIT_WARNING
    assert out.startswith("DEVICE HEALTH: UNKNOWN (no checks in the log)")


def test_an_unknown_check_name_is_a_usage_error_listing_the_known_ones(logs: Path) -> None:
    code, out, err = run(["--log-dir", "healthy", "--check", "cpuu"], cwd=logs)
    assert code == EXIT_USAGE
    assert out == ""
    assert "no check named 'cpuu'; the log has: certificate, clock_jump" in err


def test_since_limits_the_timeline_not_the_status(logs: Path) -> None:
    _, out, _ = run(["--log-dir", "critical", "--since", "20m", "--json"], cwd=logs)
    document = json.loads(out)
    assert document["filters"]["windowStart"] == "2026-03-01T11:40:00.000Z"
    times = [entry["time"] for entry in document["timeline"]]
    assert times
    assert all(t >= "2026-03-01T11:40:00.000Z" for t in times)
    assert document["status"] == "CRITICAL"
    assert len(document["checks"]) == 17


def test_the_default_window_is_a_day_back_from_the_newest_entry(logs: Path) -> None:
    _, out, _ = run(["--log-dir", "stale", "--json"], cwd=logs, now=samples.NOW + timedelta(days=30))
    document = json.loads(out)
    assert document["filters"]["windowStart"] == "2026-02-28T08:59:59.000Z"
    assert len(document["timeline"]) == 3  # an old log still shows its last events


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", samples.NOW - timedelta(hours=2)),
        ("30m", samples.NOW - timedelta(minutes=30)),
        ("90s", samples.NOW - timedelta(seconds=90)),
        ("1d12h", samples.NOW - timedelta(days=1, hours=12)),
        ("1w", samples.NOW - timedelta(weeks=1)),
        (" 2H ", samples.NOW - timedelta(hours=2)),
        ("2026-03-01T08:00", datetime(2026, 3, 1, 8, 0, tzinfo=UTC)),
        ("2026-03-01", datetime(2026, 3, 1, tzinfo=UTC)),
        ("2026-03-01T10:00:00+02:00", datetime(2026, 3, 1, 8, 0, tzinfo=UTC)),
    ],
)
def test_since_accepts_spans_and_times(text: str, expected: datetime) -> None:
    assert parse_since(text, samples.NOW) == expected


@pytest.mark.parametrize("text", ["", "2", "h", "2 hours", "yesterday", "2026-13-01", "-2h"])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="--since"):
        parse_since(text, samples.NOW)


# --- exit codes and usage -------------------------------------------------------------------------------


def test_no_log_exits_3_and_says_what_to_do(tmp_path: Path) -> None:
    code, out, err = run(["--log-dir", "nowhere"], cwd=tmp_path)
    assert (code, out) == (EXIT_NO_LOG, "")
    assert "no health log in nowhere" in err
    assert "Is the health monitor installed and running?" in err


def test_an_empty_or_wholly_damaged_log_exits_3(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert run(["--log-dir", "empty"], cwd=tmp_path)[0] == EXIT_NO_LOG
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "health.log").write_bytes(b"\x00\x00\ngarbage\n")
    code, _, err = run(["--log-dir", "junk"], cwd=tmp_path)
    assert code == EXIT_NO_LOG
    assert "no readable record (2 bad lines)" in err


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["--json", "--follow"],
        ["--json", "--export", "x.tar.gz"],
        ["--since", "soon"],
        ["--since"],
    ],
)
def test_usage_errors_exit_64_never_2(
    tmp_path: Path, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    samples.write_log(tmp_path / "log", "healthy")
    try:
        code, _, _ = run(["--log-dir", "log", *args], cwd=tmp_path)
    except SystemExit as exit_:
        code = exit_.code  # type: ignore[assignment]
    assert code == EXIT_USAGE


def test_the_log_dir_comes_from_the_option_then_the_variable_then_the_default(tmp_path: Path) -> None:
    samples.write_log(tmp_path / "from-env", "healthy")
    code, out, _ = run([], cwd=tmp_path, environ={"DEVICE_HEALTH_LOG_DIR": "from-env"})
    assert code == EXIT_OK
    assert "Log from-env" in out
    code, _, err = run([], cwd=tmp_path)
    assert code == EXIT_NO_LOG
    assert "/greengrass/v2/work/com.deviceagent.HealthMonitor/health" in err


@pytest.fixture
def unreachable_log() -> Iterator[Path]:
    """A log only root may read, in a folder outside pytest's own (those are 0700 root's)."""
    base = Path(tempfile.mkdtemp(prefix="health-denied-"))
    base.chmod(0o755)
    samples.write_log(base / "log", "healthy")  # the writer's default: private, 0700/0600
    yield base / "log"
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(not IS_ROOT, reason="needs root to act as another user")
def test_permission_denied_says_to_use_sudo_or_the_group(unreachable_log: Path) -> None:
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(PROJECT)!r})
        from device_agent.health_cli import main
        # The interpreter may live where `nobody` cannot read (e.g. under /root): import what the tool
        # loads lazily while still root; the test is about the log's permissions, not Python's.
        import argparse, gettext, locale, json, tarfile
        os.setgid(65534); os.setgroups([]); os.setuid(65534)
        sys.exit(main(["--log-dir", {str(unreachable_log)!r}]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == EXIT_NO_LOG, done.stderr
    assert "permission denied. Run `sudo device-health`" in done.stderr
    assert "technician group" in done.stderr


# --- colour ---------------------------------------------------------------------------------------------


def test_colour_only_on_a_terminal(logs: Path) -> None:
    _, plain, _ = run(["--log-dir", "critical"], cwd=logs)
    assert "\x1b[" not in plain
    _, coloured, _ = run(["--log-dir", "critical"], cwd=logs, stdout=Tty())
    assert "\x1b[1;31mCRITICAL\x1b[0m" in coloured
    assert "\x1b[33m[WARN] \x1b[0m" in coloured
    # Colour changes nothing but the escapes: same words, same wrapping, same width.
    assert ANSI.sub("", coloured) == plain


@pytest.mark.parametrize("environ", [{"NO_COLOR": "1"}, {"TERM": "dumb"}])
def test_no_color_and_dumb_terminals_get_plain_text(logs: Path, environ: dict[str, str]) -> None:
    _, out, _ = run(["--log-dir", "critical"], cwd=logs, stdout=Tty(), environ=environ)
    assert "\x1b[" not in out


def test_an_empty_no_color_does_not_turn_colour_off(logs: Path) -> None:
    _, out, _ = run(["--log-dir", "critical"], cwd=logs, stdout=Tty(), environ={"NO_COLOR": ""})
    assert "\x1b[" in out


def test_long_names_and_messages_still_fit_80_columns(tmp_path: Path) -> None:
    at = samples.NOW - timedelta(minutes=5)
    long_subject = "/media/a-rather-long-mount-point-name/that-goes-on-and-on"
    with HealthLogWriter(tmp_path / "log") as log:
        log.append(
            Snapshot(
                time=at,
                overall=State.WARN,
                interval_seconds=300,
                checks=(
                    CheckStatus(
                        check="disk_space",
                        subject=long_subject,
                        state=State.WARN,
                        value=3.14159,
                        unit="% free",
                    ),
                    CheckStatus(
                        check="a_check_the_catalogue_does_not_know", state=State.CRITICAL, value="odd"
                    ),
                ),
            )
        )
        log.append(
            Incident(
                time=at,
                check="unauthorized",
                event="ipc.unauthorized",
                severity=Severity.WARNING,
                component="com.example.AVeryLongComponentNameThatKeepsGoingAndGoingAndGoingAndGoing",
                message="word " * 60,
            )
        )
    for stdout in (io.StringIO(), Tty()):
        _, out, _ = run(["--log-dir", "log"], cwd=tmp_path, stdout=stdout)
        for line in ANSI.sub("", out).splitlines():
            assert len(line) <= WIDTH, line
    assert "Check needs attention: a_check_the_catalogue_does_not_know" in out


# --- follow ---------------------------------------------------------------------------------------------


def test_follow_prints_new_entries_across_a_rotation_and_exits_with_the_status(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    samples.write_log(directory, "healthy")
    appended: list[int] = []

    def sleep(_: float) -> None:
        # Each poll: the monitor writes more; on the fourth, the technician presses Ctrl-C.
        step = len(appended)
        appended.append(step)
        with HealthLogWriter(directory, max_file_bytes=MIN_FILE_BYTES) as log:
            if step == 0:
                log.append(state_change("disk_space", "/data", State.OK, State.WARN, 8.0))
            elif step == 1:
                # Enough to rotate health.log at least once between two polls.
                for n in range(400):
                    log.append(state_change("cpu", None, State.OK, State.OK, float(n), evidence="x" * 150))
                log.append(state_change("store", None, State.OK, State.CRITICAL, 700.0))
            elif step == 2:
                with (directory / "health.log").open("ab") as file:
                    file.write(b"damaged line\n")
            else:
                raise KeyboardInterrupt

    before = {p.name: p.stat().st_ino for p in directory.iterdir()}
    code, out, _ = run(["--log-dir", "log", "--follow"], cwd=tmp_path, sleep=sleep)
    after = {p.name: p.stat().st_ino for p in directory.iterdir()}
    assert before["health.log"] != after["health.log"]  # it did rotate under the tail
    follow = out.split("Following ", 1)[1]
    assert "disk_space /data: OK -> WARN, 8% free" in follow
    assert follow.count("cpu: OK -> OK") == 400  # nothing lost across the rotation
    assert "store: OK -> CRITICAL, 700 s" in follow
    assert "(skipped a bad line: not valid JSON" in follow
    assert follow.rstrip().endswith("Stopped. Status CRITICAL.")
    assert code == EXIT_CRITICAL


def test_follow_honours_check(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    samples.write_log(directory, "healthy")
    calls: list[None] = []

    def sleep(_: float) -> None:
        if calls:
            raise KeyboardInterrupt
        calls.append(None)
        with HealthLogWriter(directory) as log:
            log.append(state_change("memory", None, State.OK, State.CRITICAL, 99.0))
            log.append(state_change("cpu", None, State.OK, State.WARN, 95.0))

    code, out, _ = run(["--log-dir", "log", "--follow", "--check", "cpu"], cwd=tmp_path, sleep=sleep)
    follow = out.split("Following ", 1)[1]
    assert "cpu: OK -> WARN" in follow
    assert "memory" not in follow
    assert code == EXIT_WARNING


def state_change(
    check: str,
    subject: str | None,
    old: State,
    new: State,
    value: float,
    *,
    evidence: str = "",
    at: datetime | None = None,
) -> StateChange:
    at = at or samples.NOW
    unit = {"disk_space": "% free", "store": "s"}.get(check, "%")
    return StateChange(
        time=at,
        check=check,
        subject=subject,
        old=old,
        new=new,
        value=value,
        unit=unit,
        evidence=evidence,
        since=at,
    )


def read_line(stream: Any, deadline: float) -> str:
    """One line from a child's stdout, waiting at most until `deadline` (select: no sleep-polling)."""
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([stream], [], [], max(left, 0))
        if not ready:
            raise AssertionError(f"no line in time; got {line!r}")
        chunk = os.read(stream.fileno(), 1)
        if not chunk:
            raise AssertionError(f"the tool exited; got {line!r}")
        line += chunk
    return line.decode()


def test_follow_in_a_real_process_stops_on_ctrl_c_with_the_status_code(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    now = datetime.now(UTC)
    with HealthLogWriter(directory) as log:
        checks = (CheckStatus(check="cpu", state=State.OK, value=10.0, unit="%", since=now),)
        log.append(Snapshot(time=now, overall=State.OK, interval_seconds=300, checks=checks))
    child = subprocess.Popen(
        [sys.executable, "-m", "device_agent.health_cli", "--follow", "--log-dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=PROJECT,
        env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while not read_line(child.stdout, deadline).startswith("Following "):
            pass
        with HealthLogWriter(directory) as log:
            log.append(state_change("cpu", None, State.OK, State.CRITICAL, 99.0, at=datetime.now(UTC)))
        assert "cpu: OK -> CRITICAL, 99%" in read_line(child.stdout, deadline)
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=30) == EXIT_CRITICAL
        assert child.stdout is not None
        assert child.stdout.read().decode().strip() == "Stopped. Status CRITICAL."
        assert child.stderr is not None
        assert child.stderr.read() == b""  # no traceback
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdout, child.stderr):
            if stream is not None:
                stream.close()


# --- export ---------------------------------------------------------------------------------------------


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        result = {}
        for member in tar.getmembers():
            assert member.isfile()
            assert not member.name.startswith("/")
            assert ".." not in member.name.split("/")
            extracted = tar.extractfile(member)
            assert extracted is not None
            result[member.name] = extracted.read()
        return result


def test_export_writes_every_log_file_and_a_manifest(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    samples.write_log(directory, "critical")
    (directory / "notes.txt").write_text("not part of the log")
    outside = tmp_path / "outside"
    outside.write_text("a secret elsewhere")
    (directory / "health.log.4").symlink_to(outside)
    code, out, err = run(["--log-dir", "log", "--export", "support.tar.gz"], cwd=tmp_path)
    assert (code, err) == (EXIT_OK, "")
    assert out == "Wrote support.tar.gz: 3 log files (" + out.split("(", 1)[1]
    archive = tmp_path / "support.tar.gz"
    assert archive.stat().st_mode & 0o777 == 0o600
    found = members(archive)
    assert set(found) == {
        "health/MANIFEST.json",
        "health/health.log",
        "health/health.log.1",
        "health/health.log.2",
    }
    for name in ("health.log", "health.log.1", "health.log.2"):
        assert found[f"health/{name}"] == (directory / name).read_bytes()
    manifest = json.loads(found["health/MANIFEST.json"])
    assert manifest["schema"] == "device-health-export/1"
    assert manifest["status"] == "CRITICAL"
    assert manifest["logDir"] == "log"
    for entry in manifest["files"]:
        assert entry["sha256"] == hashlib.sha256(found[f"health/{entry['name']}"]).hexdigest()
        assert entry["bytes"] == len(found[f"health/{entry['name']}"])
    assert b"a secret elsewhere" not in archive.read_bytes()


def test_export_never_overwrites(tmp_path: Path) -> None:
    samples.write_log(tmp_path / "log", "healthy")
    (tmp_path / "support.tar.gz").write_bytes(b"precious")
    code, _, err = run(["--log-dir", "log", "--export", "support.tar.gz"], cwd=tmp_path)
    assert code == EXIT_CANNOT_CREATE
    assert "already exists" in err
    assert (tmp_path / "support.tar.gz").read_bytes() == b"precious"


def test_export_refuses_to_write_into_the_log_folder(tmp_path: Path) -> None:
    samples.write_log(tmp_path / "log", "healthy")
    code, _, err = run(["--log-dir", "log", "--export", "log/support.tar.gz"], cwd=tmp_path)
    assert code == EXIT_USAGE
    assert "log's own folder" in err
    assert not (tmp_path / "log" / "support.tar.gz").exists()


def test_export_of_a_damaged_log_still_sends_the_files(tmp_path: Path) -> None:
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "health.log").write_bytes(b"garbage\n")
    code, _, _ = run(["--log-dir", "log", "--export", "x.tar.gz"], cwd=tmp_path)
    assert code == EXIT_OK
    found = members(tmp_path / "x.tar.gz")
    assert found["health/health.log"] == b"garbage\n"
    assert json.loads(found["health/MANIFEST.json"])["status"] is None


def test_export_without_a_log_exits_3_and_leaves_nothing(tmp_path: Path) -> None:
    code, _, _ = run(["--log-dir", "absent", "--export", "x.tar.gz"], cwd=tmp_path)
    assert code == EXIT_NO_LOG
    assert not (tmp_path / "x.tar.gz").exists()


def test_export_into_a_missing_folder_exits_73(tmp_path: Path) -> None:
    samples.write_log(tmp_path / "log", "healthy")
    code, _, err = run(["--log-dir", "log", "--export", "no/such/dir/x.tar.gz"], cwd=tmp_path)
    assert code == EXIT_CANNOT_CREATE
    assert "cannot write" in err


# --- odds and ends --------------------------------------------------------------------------------------


class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError


def test_a_closed_pipe_is_not_a_traceback(logs: Path) -> None:
    code, _, err = run(["--log-dir", "healthy"], cwd=logs, stdout=ClosedPipe())
    assert code == EXIT_WARNING
    assert err == ""


def test_every_catalogue_entry_is_written_for_people(logs: Path) -> None:
    for name, entry in TRIAGE.items():
        for state in (State.WARN, State.CRITICAL, State.UNKNOWN):
            hint = entry.for_state(state)
            for text in (hint.meaning, hint.look, hint.action):
                assert text.strip() == text, name
                assert text[-1] in ".)`", (name, text[-12:])
                assert "  " not in text, name


def test_an_unreadable_certificate_has_its_own_advice_not_restart_a_component() -> None:
    unknown = TRIAGE["certificate"].for_state(State.UNKNOWN)
    assert "certificatePath" in unknown.look
    assert "certificate.unreadable" in unknown.meaning
    assert TRIAGE["cpu"].for_state(State.UNKNOWN).action.startswith("Restart the component")


def test_a_line_written_by_the_writer_is_what_the_tool_reads(tmp_path: Path) -> None:
    # The tool reads the log alone: a hand-made log of one durable line is enough.
    (tmp_path / "log").mkdir()
    line = encode(
        state_change("cpu", None, State.OK, State.WARN, 95.0, at=samples.NOW - timedelta(minutes=1))
    )
    (tmp_path / "log" / "health.log").write_bytes(line)
    code, out, _ = run(["--log-dir", "log"], cwd=tmp_path)
    assert code == EXIT_WARNING
    assert "No snapshot in the log yet" in out
    assert "cpu                         WARN      95%" in out


def test_the_field_guide_names_every_problem_the_tool_can_show() -> None:
    guide = (PROJECT / "docs/field-guide.md").read_text()
    for name, entry in TRIAGE.items():
        assert f"| {entry.title} | `{name}` |" in guide, name
