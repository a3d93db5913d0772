"""The health monitor end to end under faults: a sibling killed outright, a log rotating many times on a
tiny bound, a torn last line after the monitor stopped, and a log folder it may not write.

Real components on the local nucleus, built as they ship; readings are real, faults are real (SIGKILL,
truncation, a symbolic link where the log folder goes).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from device_agent.devkit.testing import VirtualDevice
from tests.conftest import component_pid
from tests.health_component.conftest import HEALTH
from tests.health_component.test_health_e2e import (
    LOCAL_TOPIC,
    device_health,
    health_config,
    log_dir,
    log_lines,
    states,
    summaries,
    tool_copy,
    wait_for_summary,
)
from tests.lib.runtime_probe import write_runtime_probe

pytestmark = pytest.mark.slow

PROBE = "com.test.KilledProbe"
RESTART_DELAY = 3.0  # seconds the probe's Run waits: a silence long enough to judge before it is back
EXIT_NO_LOG = 3


def delay_probe_start(base: Path, name: str, seconds: float) -> None:
    """The probe's Run waits `seconds` before starting, so a restart after a kill is a visible silence."""
    path = base / "recipes" / f"{name}-1.0.0.json"
    recipe = json.loads(path.read_text())
    lifecycle = recipe["Manifests"][0]["Lifecycle"]
    lifecycle["Run"] = f"sleep {seconds:g}; exec {lifecycle['Run']}"
    path.write_text(json.dumps(recipe, indent=2))


def heartbeats(device: VirtualDevice, component: str) -> list[dict[str, Any]]:
    return [r.message for r in device.local_messages(f"device-agent/heartbeat/{component}")]


async def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_killed_sibling_is_stale_within_two_intervals_and_its_restart_counts_as_unexpected(
    start_device, health_base: Path
):
    write_runtime_probe(health_base, PROBE, config={"heartbeatIntervalSeconds": 1.0})
    delay_probe_start(health_base, PROBE, RESTART_DELAY)

    def probe(check: str, state: str) -> Callable[[dict[str, Any]], bool]:
        return lambda s: states(s, check).get(PROBE if check == "heartbeat" else None) == state

    async with start_device(
        health_base, update_config=health_config(), interpolate_component_configuration=True
    ) as device:
        await wait_for_summary(device, probe("heartbeat", "OK"), 40, "the probe's heartbeat never judged")
        await wait_until(lambda: len(heartbeats(device, PROBE)) >= 2, 10, "too few heartbeats")
        os.kill(component_pid(device, "code.py"), signal.SIGKILL)
        killed_at = time.monotonic()
        warned = await wait_for_summary(
            device, probe("heartbeat", "WARN"), 10, "the silence was not reported"
        )
        beats = device.local_messages(f"device-agent/heartbeat/{PROBE}")
        last_beat = max(b.time for b in beats)
        reported = next(
            r.time for r in device.local_messages(LOCAL_TOPIC) if probe("heartbeat", "WARN")(r.message)
        )
        # Judged within two intervals of silence, by the monitor's own measure (the silence in intervals
        # when it judged); delivered before it would have been CRITICAL (three).
        [value] = [
            c["value"] for c in warned["checks"] if c["check"] == "heartbeat" and c.get("subject") == PROBE
        ]
        assert 1.5 <= value < 2.0, value
        assert reported - last_beat < 3.0, (reported - last_beat, time.monotonic() - killed_at)
        # The nucleus starts it again; its heartbeats begin again at 1, with no STOPPING in between.
        await wait_for_summary(device, probe("unexpected_restart", "WARN"), 30, "the restart not counted")
        await wait_for_summary(
            device,
            lambda s: probe("heartbeat", "OK")(s) and probe("unexpected_restart", "WARN")(s),
            15,
            "no recovery once the heartbeats came back",
        )
        assert heartbeats(device, PROBE)[-1]["sequence"] < max(
            b["sequence"] for b in heartbeats(device, PROBE)
        )
        lines = log_lines(device)
    restarts = [
        line for line in lines if line["kind"] == "incident" and line["check"] == "unexpected_restart"
    ]
    assert [(r["event"], r["component"]) for r in restarts] == [("component.restarted", PROBE)]
    assert "began again at 1" in restarts[0]["message"]


async def test_the_log_stays_within_its_bound_across_many_rotations_on_the_nucleus(
    start_device, health_base: Path
):
    from device_agent.messages import Category, Severity, event  # noqa: PLC0415

    max_file_bytes, max_files = 64 * 1024, 2
    bound = max_file_bytes * max_files
    config = health_config(log={"maxFileBytes": max_file_bytes, "maxFiles": max_files})
    sent = 0
    rotated: set[bytes] = set()  # first lines health.log.1 has had: a new one at every rotation

    def written(last: int) -> Callable[[], bool]:
        mark = f"configuration {last:05d}"
        return lambda: any(mark in line.get("message", "") for line in log_lines(device))

    def look() -> None:
        while True:  # a file rotated away between listing and reading: look again
            try:
                names = {path.name for path in log_dir(device).iterdir()}
                assert names <= {"health.log", "health.log.1", "device-health"}, names
                sizes = [(log_dir(device) / name).stat().st_size for name in names if name != "device-health"]
                assert sum(sizes) <= bound, sizes
                older = log_dir(device) / "health.log.1"
                if older.exists():
                    with older.open("rb") as file:
                        rotated.add(file.readline())
            except FileNotFoundError:
                continue
            return

    async with start_device(
        health_base, update_config=config, interpolate_component_configuration=True
    ) as device:
        await device.wait_for_local(LOCAL_TOPIC, timeout=30)
        for batch in range(30):
            for _ in range(50):
                sent += 1
                device.publish_local(
                    "device-agent/events",
                    event(
                        component="com.deviceagent.TelemetryPublisher",
                        thing=device.nucleus.thing_name,
                        name="config.rejected",
                        category=Category.CONFIGURATION,
                        severity=Severity.WARNING,
                        message=f"rejected configuration {sent:05d} " + "padding " * 25,
                    ),
                )
            await wait_until(written(sent), 20, f"batch {batch} not written")
            look()
        assert device.state(HEALTH).value == "RUNNING"
        report = json.loads(device_health(device, "--json").stdout)
    assert len(rotated) >= 5, f"only {len(rotated)} rotations seen"
    incidents = [line for line in log_lines(device) if line["kind"] == "incident"]
    assert 0 < len(incidents) < sent  # the oldest rotated away ...
    assert incidents[-1]["message"].startswith(f"rejected configuration {sent:05d}")  # ... never the newest
    assert report["logProblems"] == []
    assert report["status"] in {"WARN", "CRITICAL"}


async def test_a_torn_last_line_of_the_real_log_is_read_past_with_a_warning(start_device, health_base: Path):
    async with start_device(
        health_base, update_config=health_config(), interpolate_component_configuration=True
    ) as device:
        await device.wait_for_local(LOCAL_TOPIC, count=3, timeout=30)
    # The monitor has stopped (its last line says so). A power cut in the middle of that line:
    current = log_dir(device) / "health.log"
    data = current.read_bytes()
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    assert json.loads(last)["event"] == "monitor.stopped"
    current.write_bytes(data[: len(data) - len(last) // 2 - 1])
    for result in (device_health(device, "--json"), tool_copy(device, "--json")):
        report = json.loads(result.stdout)
        assert result.returncode in {0, 1}, result.stderr
        [problem] = report["logProblems"]
        assert problem["file"] == "health.log"
        assert "incomplete last line" in problem["problem"]
        assert report["checks"], "the records before the torn line were lost"
    screen = device_health(device)
    assert "LOG PROBLEMS" in screen.stdout
    assert "incomplete last line" in screen.stdout


async def test_a_log_that_cannot_be_written_makes_the_monitor_degraded_and_summaries_go_on(
    start_device, health_base: Path, tmp_path: Path
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # A symbolic link where the log folder goes: the log never writes through one (UnsafeFileError).
    (health_base / "work" / HEALTH / "health").symlink_to(elsewhere)

    def own_heartbeats(state: str) -> list[dict[str, Any]]:
        return [beat for beat in heartbeats(device, HEALTH) if beat.get("state") == state]

    # Snapshots as often as allowed: a write comes soon after the fix, without waiting for a change.
    config = health_config(log={"snapshotIntervalSeconds": 10.0})
    async with start_device(
        health_base, update_config=config, interpolate_component_configuration=True
    ) as device:
        await wait_until(lambda: bool(own_heartbeats("DEGRADED")), 30, "the monitor never said DEGRADED")
        detail = own_heartbeats("DEGRADED")[0]["detail"]
        assert detail == "the health log cannot be written (UnsafeFileError)"
        count = len(summaries(device))
        await device.wait_for_local(LOCAL_TOPIC, count=count + 2, timeout=15)  # still judging, still telling
        assert list(elsewhere.iterdir()) == []  # nothing written through the link
        assert device_health(device).returncode == EXIT_NO_LOG  # a technician sees no log, not an old one
        assert device.state(HEALTH).value == "RUNNING"  # not a crash: restarting would not help
        log_dir(device).unlink()  # fixed: the next write creates the folder and the monitor is well again
        degraded = len(heartbeats(device, HEALTH))
        await wait_until(
            lambda: any(beat.get("state") == "RUNNING" for beat in heartbeats(device, HEALTH)[degraded:]),
            30,
            "the monitor did not recover once the log could be written",
        )
        await wait_for_summary(device, lambda s: s["sequence"] > count + 2, 15, "no summary after")
        result = device_health(device, "--json")
        lines = log_lines(device)
    assert result.returncode in {0, 1}, result.stderr
    assert json.loads(result.stdout)["checks"]
    # What the monitor could not write meanwhile came first, after a note: its start, with its own time.
    events = [(line["event"], line) for line in lines if line["kind"] == "lifecycle"]
    assert [name for name, _ in events][:2] == ["log.resumed", "monitor.started"]
    resumed, started = events[0][1], events[1][1]
    assert "(UnsafeFileError)" in resumed["detail"]
    assert started["time"] < resumed["time"]
