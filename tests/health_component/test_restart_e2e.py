"""Restarting a stale sibling (off by default): on the local nucleus with the Greengrass CLI's operations.

The grant is not in the recipe: an operator who turns restarts on merges an `aws.greengrass.Cli` policy in
the same deployment, exactly as these tests do.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from device_agent.devkit.testing import VirtualDevice
from tests.conftest import component_pid
from tests.health_component.conftest import HEALTH
from tests.health_component.test_health_e2e import FAST, LOCAL_TOPIC, log_lines, states
from tests.lib.runtime_probe import write_runtime_probe

pytestmark = pytest.mark.slow

PROBE = "com.test.HeartbeatProbe"
RESTART_GRANT = {
    "aws.greengrass.Cli": {
        f"{HEALTH}:cli:restart": {
            "policyDescription": "Restart the probe when its heartbeat stops.",
            "operations": ["aws.greengrass#RestartComponent"],
            "resources": [PROBE],
        }
    }
}


def config(*, grant: bool) -> dict[str, dict[str, Any]]:
    merge: dict[str, Any] = {**FAST, "restart": {"enabled": True, "components": [PROBE]}}
    if grant:
        merge["accessControl"] = RESTART_GRANT
    return {HEALTH: {"MERGE": merge}}


async def wait_for_incident(
    device: VirtualDevice, event: str, count: int = 1, timeout: float = 30
) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in log_lines(device) if line["kind"] == "incident" and line["event"] == event]
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, f"no {event} in the health log: {log_lines(device)[-8:]}"
        await asyncio.sleep(0.1)


async def stall(device: VirtualDevice) -> int:
    """Freeze the probe once the monitor has judged its latest process healthy."""
    beats = device.local_messages(f"device-agent/heartbeat/{PROBE}")
    deadline = time.monotonic() + 30
    while not (
        beats
        and any(
            r.time > beats[-1].time and states(r.message, "heartbeat").get(PROBE) == "OK"
            for r in device.local_messages(LOCAL_TOPIC)
        )
    ):
        assert time.monotonic() < deadline, "the monitor never judged the probe healthy"
        await asyncio.sleep(0.1)
        beats = device.local_messages(f"device-agent/heartbeat/{PROBE}")
    pid = component_pid(device, "code.py")
    os.kill(pid, signal.SIGSTOP)  # the nucleus still sees it running; only its silence tells
    return pid


def probe_pid(device: VirtualDevice) -> int | None:
    try:
        return component_pid(device, "code.py")
    except AssertionError:  # between the old process and the new one
        return None


def resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


async def test_a_stalled_sibling_is_restarted_once_then_left_alone_within_the_cooldown(
    start_device, health_base: Path
):
    write_runtime_probe(health_base, PROBE, config={"heartbeatIntervalSeconds": 1.0})
    async with start_device(
        health_base, update_config=config(grant=True), interpolate_component_configuration=True, with_cli=True
    ) as device:
        first = await stall(device)
        try:
            [requested] = await wait_for_incident(device, "component.restart_requested")
            assert requested["component"] == PROBE
            # The nucleus restarted it: a new process whose heartbeats start again at 1.
            deadline = time.monotonic() + 30
            while probe_pid(device) in (first, None):
                assert time.monotonic() < deadline, "the probe was not restarted"
                await asyncio.sleep(0.1)
        finally:
            resume(first)
        deadline = time.monotonic() + 30
        while (
            sum(b.message["sequence"] == 1 for b in device.local_messages(f"device-agent/heartbeat/{PROBE}"))
            < 2
        ):
            assert time.monotonic() < deadline, "the restarted probe never sent a heartbeat"
            await asyncio.sleep(0.1)
        events = device.local_messages("device-agent/events")
        assert any(e.message["event"] == "health.component_restarted" for e in events)

        second = await stall(device)
        try:
            [skipped] = await wait_for_incident(device, "component.restart_skipped")
            assert "cooldown" in skipped["message"]
            assert component_pid(device, "code.py") == second  # left alone
        finally:
            resume(second)
        requested_again = [
            line
            for line in log_lines(device)
            if line["kind"] == "incident" and line["event"] == "component.restart_requested"
        ]
        assert len(requested_again) == 1
        # The restart the monitor asked for is not counted as an unexpected one.
        assert not any(line.get("event") == "component.restarted" for line in log_lines(device))


@pytest.mark.parametrize(
    ("with_cli", "grant", "reason"),
    [
        (True, False, "does not grant RestartComponent"),
        (False, True, "no aws.greengrass.Cli"),
    ],
    ids=["not-granted", "no-cli"],
)
async def test_a_restart_that_cannot_happen_is_reported_and_the_monitor_keeps_running(
    start_device, health_base: Path, with_cli: bool, grant: bool, reason: str
):
    write_runtime_probe(health_base, PROBE, config={"heartbeatIntervalSeconds": 1.0})
    async with start_device(
        health_base,
        update_config=config(grant=grant),
        interpolate_component_configuration=True,
        with_cli=with_cli,
    ) as device:
        pid = await stall(device)
        try:
            [failed] = await wait_for_incident(device, "component.restart_failed")
            assert reason in failed["message"]
            assert component_pid(device, "code.py") == pid
        finally:
            resume(pid)
        health_pid = component_pid(device, "health_monitor")
        await device.wait_for_local(f"device-agent/heartbeat/{HEALTH}", count=3, timeout=30)
        assert component_pid(device, "health_monitor") == health_pid
