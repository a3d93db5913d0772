"""Outside its grant, a component is refused by the nucleus and reports it, rather than crashing.

Each component runs on the local nucleus with only its own recipe's grants, configured to use a topic the
recipe does not grant. What "reports" means (security-checks.md GG-7): a `security` event on
`device-agent/events` (once, not per attempt), an error log line, DEGRADED in its heartbeat, and the
component keeps RUNNING. Every component does all of it, through `device_agent.refusals`; the
bootstrap reporter also retries a refused verdict subscription with capped backoff instead of failing.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from device_agent.devkit.lifecycle import ComponentState
from device_agent.devkit.testing import LocalRecord, VirtualDevice
from tests.conftest import install_built

pytestmark = pytest.mark.slow

STORE = "com.deviceagent.EncryptedStore"
TELEMETRY = "com.deviceagent.TelemetryPublisher"
HEALTH = "com.deviceagent.HealthMonitor"
REPORTER = "com.deviceagent.BootstrapReporter"
EVENTS = "device-agent/events"


def events(device: VirtualDevice, component: str, name: str) -> list[dict[str, Any]]:
    return [
        r.message
        for r in device.local_messages(EVENTS)
        if r.message.get("component") == component and r.message.get("event") == name
    ]


async def heartbeats_after(device: VirtualDevice, component: str, count: int) -> list[LocalRecord]:
    topic = f"device-agent/heartbeat/{component}"
    seen = len(device.local_messages(topic))
    return (await device.wait_for_local(topic, count=seen + count, timeout=30))[seen:]


async def started(
    start_device, built_suite: Path, tmp_path: Path, names: tuple[str, ...], config: dict[str, Any]
):
    base = install_built(built_suite, tmp_path / "base", names)
    return start_device(
        base, update_config={names[-1]: {"MERGE": config}}, interpolate_component_configuration=True
    )


@pytest.mark.parametrize(
    "case",
    [
        ("topic", "dt/device-agent/{thing}/elsewhere", "iot"),
        ("localTopic", "device-agent/metrics-elsewhere", "local"),
    ],
)
async def test_telemetry_refused_a_topic_reports_it_once_and_degrades_without_crashing(
    case: tuple[str, str, str], start_device, built_suite: Path, tmp_path: Path
):
    setting, value, destination = case
    config = {"intervalSeconds": 1.0, "heartbeatIntervalSeconds": 1.0, setting: value}
    async with await started(start_device, built_suite, tmp_path, (STORE, TELEMETRY), config) as device:
        await device.wait_for_state(TELEMETRY, ComponentState.RUNNING, timeout=60)
        await device.wait_for_local(EVENTS, timeout=30)
        topic = value.replace("{thing}", device.nucleus.thing_name)
        [event] = events(device, TELEMETRY, "telemetry.publish_unauthorized")
        assert (event["category"], event["severity"]) == ("security", "critical")
        assert event["details"] == {"topic": topic, "destination": destination}
        beats = await heartbeats_after(device, TELEMETRY, 3)
        assert beats[-1].message["state"] == "DEGRADED"
        assert topic in beats[-1].message["detail"]
        # Several samples later: still one event (reported at most hourly), still running, logged as an error.
        assert len(events(device, TELEMETRY, "telemetry.publish_unauthorized")) == 1
        assert device.state(TELEMETRY) is ComponentState.RUNNING
        assert "telemetry.publish_unauthorized" in device.log(TELEMETRY)
        if destination == "local":  # the cloud side is unaffected
            await device.wait_for_published("dt/device-agent/+/telemetry", timeout=30)
        else:
            assert device.published("dt/device-agent/+/elsewhere") == []


async def health_with_a_foreign_topic(start_device, built_suite: Path, tmp_path: Path):
    config = {
        "topic": "dt/device-agent/{thing}/elsewhere",
        "summaryIntervalSeconds": 1.0,
        "heartbeatIntervalSeconds": 1.0,
    }
    return await started(start_device, built_suite, tmp_path, (HEALTH,), config)


async def test_health_refused_its_summary_topic_keeps_running_and_logs_it(
    start_device, built_suite: Path, tmp_path: Path
):
    async with await health_with_a_foreign_topic(start_device, built_suite, tmp_path) as device:
        await device.wait_for_state(HEALTH, ComponentState.RUNNING, timeout=60)
        await device.wait_for_local("device-agent/health", count=3, timeout=30)
        assert device.state(HEALTH) is ComponentState.RUNNING
        assert device.published("dt/device-agent/+/elsewhere") == []
        assert "health.publish_unauthorized" in device.log(HEALTH)


async def test_health_refused_its_summary_topic_sends_a_security_event_once_and_degrades(
    start_device, built_suite: Path, tmp_path: Path
):
    async with await health_with_a_foreign_topic(start_device, built_suite, tmp_path) as device:
        await device.wait_for_local("device-agent/health", count=3, timeout=30)
        topic = f"dt/device-agent/{device.nucleus.thing_name}/elsewhere"
        [event] = events(device, HEALTH, "health.publish_unauthorized")
        assert (event["category"], event["severity"]) == ("security", "critical")
        assert event["details"] == {"topic": topic, "destination": "iot"}
        beats = await heartbeats_after(device, HEALTH, 2)
        assert beats[-1].message["state"] == "DEGRADED"
        assert topic in beats[-1].message["detail"]
        await device.wait_for_local("device-agent/health", count=5, timeout=30)
        assert len(events(device, HEALTH, "health.publish_unauthorized")) == 1  # at most hourly
        assert "health.publish_unauthorized" in device.log(HEALTH)


REPORTER_PRESENT = (Path(__file__).resolve().parents[2] / "recipes" / f"{REPORTER}.yaml").exists()
needs_reporter = pytest.mark.skipif(
    not REPORTER_PRESENT, reason="the bootstrap reporter's recipe has not landed"
)


async def reporter_with(start_device, built_suite: Path, tmp_path: Path, **config: Any):
    fast = {"components": {"settleSeconds": 0.0}, "heartbeatIntervalSeconds": 1.0, **config}
    return await started(start_device, built_suite, tmp_path, (STORE, REPORTER), fast)


@needs_reporter
async def test_the_reporter_refused_its_report_topic_keeps_running_and_logs_it(
    start_device, built_suite: Path, tmp_path: Path
):
    async with await reporter_with(
        start_device, built_suite, tmp_path, topic="dt/device-agent/{thing}/x"
    ) as device:
        await device.wait_for_state(REPORTER, ComponentState.RUNNING, timeout=60)
        await heartbeats_after(device, REPORTER, 3)
        assert device.state(REPORTER) is ComponentState.RUNNING
        assert "bootstrap.publish_unauthorized" in device.log(REPORTER)


@needs_reporter
async def test_the_reporter_refused_its_report_topic_sends_a_security_event_once_and_degrades(
    start_device, built_suite: Path, tmp_path: Path
):
    async with await reporter_with(
        start_device, built_suite, tmp_path, topic="dt/device-agent/{thing}/x"
    ) as device:
        topic = f"dt/device-agent/{device.nucleus.thing_name}/x"
        deadline = time.monotonic() + 60
        while not events(device, REPORTER, "bootstrap.publish_unauthorized"):
            assert time.monotonic() < deadline, "no event for the refused report"
            await asyncio.sleep(0.1)
        [event] = events(device, REPORTER, "bootstrap.publish_unauthorized")
        assert (event["category"], event["severity"]) == ("security", "critical")
        assert event["details"] == {"topic": topic, "destination": "iot"}
        beats = await heartbeats_after(device, REPORTER, 2)
        assert beats[-1].message["state"] == "DEGRADED"
        assert topic in beats[-1].message["detail"]
        assert len(events(device, REPORTER, "bootstrap.publish_unauthorized")) == 1  # resends: no more events


@needs_reporter
async def test_the_reporter_refused_its_verdict_topic_keeps_running_reports_it_and_still_reports(
    start_device, built_suite: Path, tmp_path: Path
):
    async with await reporter_with(
        start_device, built_suite, tmp_path, verdictTopic="cmd/device-agent/{thing}/elsewhere"
    ) as device:
        topic = f"device-agent/heartbeat/{REPORTER}"
        deadline = time.monotonic() + 60
        while len(device.local_messages(topic)) < 5 and device.state(REPORTER) is not ComponentState.BROKEN:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert device.state(REPORTER) is ComponentState.RUNNING
        sequences = [r.message["sequence"] for r in device.local_messages(topic)]
        assert sequences == sorted(set(sequences))  # one process throughout: no restart began again at 1
        [event] = events(device, REPORTER, "bootstrap.subscribe_unauthorized")
        assert event["category"] == "security"
        assert "elsewhere" in event["details"]["topic"]
        beat = device.local_messages(topic)[-1].message
        assert beat["state"] == "DEGRADED"
        assert "subscribe to" in beat["detail"]
        # Reports still go out: the verifier can see the device even if its verdicts cannot come back.
        await device.wait_for_published("dt/device-agent/+/bootstrap", timeout=30)


SECRET_ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:device-agent/store-kek-AbCdEf"
SECRET_VALUE = "kek-material-for-the-test-0123456789abcdef"


async def test_the_store_refused_its_secret_sends_a_security_event_once_degrades_and_recovers_when_granted(
    start_device, built_suite: Path, tmp_path: Path
):
    secrets = tmp_path / "secrets.json"
    secrets.write_text(
        json.dumps({"secrets": [{"arn": SECRET_ARN, "name": "store-kek", "secretString": SECRET_VALUE}]})
    )
    base = install_built(built_suite, tmp_path / "base", (STORE,))
    config = {"keySource": "secret", "secretId": SECRET_ARN, "heartbeatIntervalSeconds": 1.0}
    async with start_device(base, update_config={STORE: {"MERGE": config}}, secrets_file=secrets) as device:
        await device.wait_for_state(STORE, ComponentState.RUNNING, timeout=60)
        deadline = time.monotonic() + 30
        while not events(device, STORE, "store.secret_unauthorized"):
            assert time.monotonic() < deadline, "no event for the refused secret"
            await asyncio.sleep(0.1)
        [event] = events(device, STORE, "store.secret_unauthorized")
        assert (event["category"], event["severity"]) == ("security", "critical")
        assert event["details"] == {"secret": SECRET_ARN, "destination": "secretManager"}
        assert "secret manager" in event["message"]
        beats = await heartbeats_after(
            device, STORE, 5
        )  # the store retries opening meanwhile (1 s, 2 s, ...)
        assert beats[-1].message["state"] == "DEGRADED"
        assert f"not authorized to read the secret {SECRET_ARN}" in beats[-1].message["detail"]
        assert len(events(device, STORE, "store.secret_unauthorized")) == 1  # at most hourly
        assert device.state(STORE) is ComponentState.RUNNING
        assert "store.secret_unauthorized" in device.log(STORE)

        grant = {
            "aws.greengrass.SecretManager": {
                f"{STORE}:secrets:1": {
                    "operations": ["aws.greengrass#GetSecretValue"],
                    "resources": [SECRET_ARN],
                }
            }
        }
        result = await device.deploy(
            merge={STORE: ""}, update_config={STORE: {"MERGE": {"accessControl": grant}}}
        )
        assert result.succeeded, result.reason
        deadline = time.monotonic() + 60
        while device.local_messages(f"device-agent/heartbeat/{STORE}")[-1].message["state"] != "RUNNING":
            assert time.monotonic() < deadline, "the store stayed DEGRADED after the grant"
            await asyncio.sleep(0.2)
        assert SECRET_VALUE not in device.log() + device.log(STORE)
