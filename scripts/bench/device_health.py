"""Benchmark: how long `device-health` takes on a health log at its full configured size.

Writes a log with the real writer at the default bound (5 files of 1 MiB) with what a monitor writes: a
snapshot of 20 checks every 5 minutes, state changes and incidents now and then; it keeps writing until
the oldest file has been rotated away, so the log is as full as it ever gets. Then it times, as separate
processes (what a technician waits for), interleaved so that the machine's noise hits all alike:

- `device-health` (the text screen) and `device-health --json`;
- baseline: a bare `python -c "import json"`, the floor of any Python tool's start on this machine.

The goal is an answer in under half a second. Prints one result line.

Usage: python scripts/bench/device_health.py [--runs 7] [--dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from device_agent.health_log import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_FILES,
    CheckStatus,
    HealthLogWriter,
    Incident,
    Severity,
    Snapshot,
    State,
    StateChange,
    log_files,
)

PROJECT = Path(__file__).resolve().parents[2]
GOAL_SECONDS = 0.5
CHANGE_EVERY, CHANGE_AT = 6, 3  # a state change every half hour (six snapshots), alternating WARN and OK
INCIDENT_EVERY, INCIDENT_AT = 50, 7
CHECKS = [
    ("cpu", None, "%"),
    ("memory", None, "%"),
    ("swap", None, "%"),
    ("disk_space", "/", "% free"),
    ("disk_space", "/data", "% free"),
    ("disk_space", "/boot", "% free"),
    ("inodes", "/", "% free"),
    ("inodes", "/data", "% free"),
    ("temperature", "cpu_thermal", "C"),
    ("throttling", None, None),
    ("undervoltage", None, None),
    ("heartbeat", "com.deviceagent.EncryptedStore", "intervals"),
    ("heartbeat", "com.deviceagent.TelemetryPublisher", "intervals"),
    ("heartbeat", "com.deviceagent.BootstrapReporter", "intervals"),
    ("cloud_connection", None, "s"),
    ("last_publish", None, "s"),
    ("certificate", None, "days"),
    ("clock_jump", None, "s"),
    ("store", None, "s"),
    ("integrity", None, "events"),
]


def fill(directory: Path) -> tuple[int, int, int]:
    """Write a full log; returns (files, bytes, lines)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    bound = DEFAULT_MAX_FILE_BYTES * DEFAULT_MAX_FILES
    since = {(check, subject): start for check, subject, _ in CHECKS}
    states = dict.fromkeys(since, State.OK)
    n = 0
    with HealthLogWriter(directory) as log:
        while True:
            at = start + timedelta(seconds=300 * n)
            if n % CHANGE_EVERY == CHANGE_AT:
                check, subject, unit = CHECKS[n % len(CHECKS)]
                key = (check, subject)
                new = State.WARN if states[key] is State.OK else State.OK
                log.append(
                    StateChange(
                        time=at,
                        check=check,
                        subject=subject,
                        old=states[key],
                        new=new,
                        value=91.5,
                        unit=unit,
                        threshold=90,
                        evidence="at or above 90 for 300 s (31 readings, worst 97.1)",
                        since=at,
                    )
                )
                states[key], since[key] = new, at
            if n % INCIDENT_EVERY == INCIDENT_AT:
                log.append(
                    Incident(
                        time=at,
                        check="config_rejected",
                        event="config.rejected",
                        severity=Severity.WARNING,
                        component="com.deviceagent.TelemetryPublisher",
                        message="intervalSeconds: expected a number between 1 and 3600, got 0",
                    )
                )
            checks = tuple(
                CheckStatus(
                    check=check,
                    subject=subject,
                    state=states[check, subject],
                    value=round(10 + (n * 7 + i) % 80 + 0.25, 2),
                    unit=unit,
                    threshold=90,
                    since=since[check, subject],
                    verified=at,
                )
                for i, (check, subject, unit) in enumerate(CHECKS)
            )
            log.append(Snapshot(time=at, overall=State.OK, interval_seconds=300, checks=checks))
            n += 1
            files = log_files(directory)
            # Full: every file there, the oldest already rotated away once, the total near the bound.
            total = sum(path.stat().st_size for path in files)
            if len(files) == DEFAULT_MAX_FILES and total > bound - 2 * DEFAULT_MAX_FILE_BYTES // 100:
                break
    files = log_files(directory)
    data = b"".join(path.read_bytes() for path in files)
    return len(files), len(data), data.count(b"\n")


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, check=False, cwd=PROJECT)
    elapsed = time.perf_counter() - started
    if done.returncode not in {0, 1, 2}:
        raise SystemExit(f"{command} failed ({done.returncode}): {done.stderr.decode()[-400:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dir", type=Path, help="where to write the log (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        directory = Path(scratch) / "health"
        files, size, lines = fill(directory)
        tool = [sys.executable, "-m", "device_agent.health_cli", "--log-dir", str(directory)]
        commands = {
            "text": tool,
            "json": [*tool, "--json"],
            "baseline": [sys.executable, "-c", "import json"],
        }
        for command in commands.values():  # warm the page cache and the bytecode cache
            timed(command)
        results: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                results[name].append(timed(command))
    median = {name: statistics.median(times) for name, times in results.items()}
    worst = max(median["text"], median["json"])
    own = worst - median["baseline"]
    verdict = "met" if worst < GOAL_SECONDS else "NOT met"
    print(
        f"device_health: text {median['text']:.3f} s, json {median['json']:.3f} s"
        f" (median of {args.runs}) on a full log ({files} files, {size / (1 << 20):.2f} MiB, {lines} lines);"
        f" python start {median['baseline']:.3f} s, so the tool's own work {own:.3f} s;"
        f" goal < {GOAL_SECONDS} s: {verdict}"
    )


if __name__ == "__main__":
    main()
