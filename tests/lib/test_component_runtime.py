"""The shared component runtime, end to end: a component written on it runs as a process on the local nucleus.

Covers the issue's "done means": invalid deployments rejected with the key path while the old configuration
stays in force; accepted updates applied without a restart; a bad value that still arrives keeps the last
good configuration and is reported; SIGTERM with work in flight exits cleanly in under 4 seconds;
heartbeats at the configured rate; an invalid configuration at start; no token in any log.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from device_agent.devkit.lifecycle import ComponentState
from device_agent.devkit.testing import VirtualDevice
from tests.lib.runtime_probe import write_runtime_probe

NAME = "com.test.RuntimeProbe"
SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def schema(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads((SCHEMAS / name).read_text()))


async def reports(
    device: VirtualDevice, kind: str, count: int = 1, timeout: float = 30.0
) -> list[dict[str, Any]]:
    records = await device.wait_for_published(f"probe/{NAME}/{kind}", count=count, timeout=timeout)
    return [json.loads(r.payload) for r in records]


def exit_codes(device: VirtualDevice) -> list[int]:
    log = device.log(NAME)
    return [
        int(part.split("exitCode=")[1].split("}")[0].split(",")[0])
        for part in log.split("\n")
        if "exitCode=" in part
    ]


async def test_heartbeats_arrive_at_the_configured_rate_and_match_the_schema(tmp_path, start_device):
    write_runtime_probe(tmp_path, NAME, config={"heartbeatIntervalSeconds": 0.5})
    async with start_device(tmp_path) as device:
        first = await device.wait_for_local(f"device-agent/heartbeat/{NAME}", timeout=30)
        start = first[0].time
        await device.wait_for_local(f"device-agent/heartbeat/{NAME}", count=8, timeout=30)
        beats = device.local_messages(f"device-agent/heartbeat/{NAME}")
    validator = schema("heartbeat.schema.json")
    for beat in beats:
        validator.validate(beat.message)
        assert beat.publisher == NAME
    window = beats[7].time - start
    # Seven intervals of 0.5 s: allow for scheduling, but not for a wrong rate (0.25 s or 1 s would fail).
    assert 2.8 <= window <= 5.0, window
    assert [b.message["sequence"] for b in beats[:8]] == list(range(1, 9))
    assert beats[-1].message["state"] == "RUNNING"


async def test_invalid_deployment_is_rejected_with_the_key_path_and_the_old_configuration_stays(
    tmp_path, start_device
):
    write_runtime_probe(tmp_path, NAME)
    async with start_device(tmp_path) as device:
        [started] = await reports(device, "config")
        result = await device.deploy(update_config={NAME: {"MERGE": {"intervalSeconds": -1}}})
        assert not result.succeeded
        assert "intervalSeconds" in result.reason
        # A rule across keys (low < high) is the component's own check, and names its key too.
        result = await device.deploy(update_config={NAME: {"MERGE": {"low": 50}}})
        assert not result.succeeded
        assert "low" in result.reason
        assert device.nucleus.config_store.get(NAME, ["intervalSeconds"]) == 1.0
        assert device.state(NAME) is ComponentState.RUNNING
        # Still the same process, still on its old configuration.
        result = await device.deploy(update_config={NAME: {"MERGE": {"label": "second"}}})
        assert result.succeeded
        changed = await reports(device, "config", count=2)
    assert changed[1] == {"pid": started["pid"], "label": "second", "interval": 1.0, "was": "first"}


async def test_accepted_update_is_applied_without_a_restart(tmp_path, start_device):
    write_runtime_probe(tmp_path, NAME)
    async with start_device(tmp_path) as device:
        [started] = await reports(device, "config")
        result = await device.deploy(
            update_config={NAME: {"MERGE": {"label": "fast", "intervalSeconds": 0.2}}}
        )
        assert result.succeeded
        configs = await reports(device, "config", count=2)
        assert configs[1]["pid"] == started["pid"]
        assert configs[1]["label"] == "fast"
        assert configs[1]["interval"] == 0.2
        assert device.log().count(f"component={NAME} from=STARTING to=RUNNING") == 1


async def test_a_bad_value_that_still_arrives_keeps_the_last_good_configuration(tmp_path, start_device):
    write_runtime_probe(tmp_path, NAME)
    async with start_device(tmp_path) as device:
        await reports(device, "config")
        # The component's own UpdateConfiguration skips deployment validation: low=99 breaks low < high.
        device.publish_local(f"probe/{NAME}/poke", {"low": 99})
        [rejected] = await device.wait_for_local("device-agent/events", timeout=30)
        schema("event.schema.json").validate(rejected.message)
        assert rejected.message["event"] == "config.rejected"
        assert rejected.message["details"]["keyPath"] == "low"
        assert "must be below high" in rejected.message["details"]["reason"]
        assert len(device.published(f"probe/{NAME}/config")) == 1  # no new configuration was applied
        # It keeps working: a good value afterwards is applied.
        device.publish_local(f"probe/{NAME}/poke", {"low": 2, "label": "fixed"})
        configs = await reports(device, "config", count=2)
        assert configs[1]["label"] == "fixed"
        assert device.state(NAME) is ComponentState.RUNNING


async def test_sigterm_with_work_in_flight_exits_cleanly_within_four_seconds(tmp_path, start_device):
    write_runtime_probe(tmp_path, NAME, config={"workSeconds": 1.0, "intervalSeconds": 0.2})
    async with start_device(tmp_path) as device:
        await reports(device, "config")
        started = time.monotonic()
        await device.nucleus.stop_component(NAME)
        elapsed = time.monotonic() - started
        assert device.state(NAME) is ComponentState.FINISHED
        [stopped] = await reports(device, "stopped")
        assert stopped["finished"] is True
        assert elapsed < 4.0, elapsed
        log = device.log(NAME)
    # The script's shell is signalled with its group (so its own exit code is 143, as on a device); the
    # Python process finished its work and stopped by itself rather than being abandoned or killed.
    assert "runtime.stopped" in log
    assert "runtime.abandoning_work" not in log


async def test_invalid_configuration_at_start_is_reported_and_the_component_breaks(tmp_path, start_device):
    write_runtime_probe(tmp_path, NAME, config={"intervalSeconds": "fast"})
    async with start_device(tmp_path) as device:
        state = await device.wait_for_state(NAME, ComponentState.BROKEN, timeout=60)
        assert state is ComponentState.BROKEN
        events = [r.message for r in device.local_messages("device-agent/events")]
        log = device.log(NAME)
    assert len(events) == 3
    assert all(e["event"] == "config.invalid_at_start" for e in events)
    assert events[0]["details"]["keyPath"] == "intervalSeconds"
    # Three attempts, each refusing to start (it reports ERRORED, then exits with EXIT_CONFIG unless the
    # nucleus's restart signal gets there first), and then BROKEN.
    assert log.count("config.invalid_at_start") == 3
    assert all(code in (78, 143) for code in exit_codes(device))


@pytest.mark.parametrize("scenario", ["run"])
async def test_no_token_in_any_log_of_the_run(tmp_path, start_device, scenario):
    write_runtime_probe(tmp_path, NAME)
    async with start_device(tmp_path) as device:
        await reports(device, "config")
        await device.deploy(update_config={NAME: {"MERGE": {"intervalSeconds": -1}}})
        device.publish_local(f"probe/{NAME}/poke", {"low": 99})
        await device.wait_for_local("device-agent/events", timeout=30)
        await device.nucleus.stop_component(NAME)
        tokens = list(device.nucleus._component_tokens.values())
        logs = {p.name: p.read_text() for p in (device.root / "logs").iterdir()}
    assert tokens
    assert NAME + ".log" in logs
    for name, text in logs.items():
        for token in tokens:
            assert token not in text, f"{scenario}: token in {name}"


async def test_a_stopping_component_sends_a_last_heartbeat_marked_stopping(tmp_path, start_device):
    # Without it, a component stopped on purpose looks stale to the health monitor until it is forgotten.
    write_runtime_probe(tmp_path, NAME, config={"heartbeatIntervalSeconds": 30.0})
    topic = f"device-agent/heartbeat/{NAME}"
    async with start_device(tmp_path) as device:
        await device.wait_for_local(topic, timeout=30)
        await device.nucleus.stop_component(NAME)
        await device.wait_for_local(topic, count=2, timeout=10)
        beats = device.local_messages(topic)
    assert [beat.message["state"] for beat in beats] == ["RUNNING", "STOPPING"]
    assert [beat.message["sequence"] for beat in beats] == [1, 2]
    validator = schema("heartbeat.schema.json")
    for beat in beats:
        validator.validate(beat.message)
