"""The health monitor end to end: built as it ships, on the local nucleus, judging real readings.

Thresholds are set so that the machine's real readings cross them; short intervals keep each test fast.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from device_agent.devkit.testing import VirtualDevice
from device_agent.metrics import Group, Sampler, SamplerSettings
from tests.conftest import component_pid
from tests.health_component.conftest import HEALTH
from tests.lib.runtime_probe import write_runtime_probe

pytestmark = pytest.mark.slow

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
CLOUD_TOPIC = "dt/device-agent/+/health"
LOCAL_TOPIC = "device-agent/health"
PROBE = "com.test.HeartbeatProbe"
FAST = {"evaluateIntervalSeconds": 0.2, "summaryIntervalSeconds": 2.0, "heartbeatIntervalSeconds": 1.0}


def health_config(**extra: Any) -> dict[str, dict[str, Any]]:
    return {HEALTH: {"MERGE": {**FAST, **extra}}}


def summaries(device: VirtualDevice) -> list[dict[str, Any]]:
    return [r.message for r in device.local_messages(LOCAL_TOPIC)]


def states(summary: dict[str, Any], check: str) -> dict[str | None, str]:
    return {c.get("subject"): c["state"] for c in summary["checks"] if c["check"] == check}


async def wait_for_summary(
    device: VirtualDevice, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        for summary in summaries(device):
            if predicate(summary):
                return summary
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


def log_dir(device: VirtualDevice) -> Path:
    return device.root / "work" / HEALTH / "health"


def log_lines(device: VirtualDevice) -> list[dict[str, Any]]:
    """The log's whole lines, oldest first; a last line still being written (no newline yet) is left out.
    A file rotated away between listing and reading (the monitor may be rotating) means reading again."""
    while True:
        lines = []
        try:
            for path in sorted(log_dir(device).glob("health.log*"), reverse=True):
                whole = path.read_text().rpartition("\n")[0]
                lines += [json.loads(line) for line in whole.splitlines() if line]
        except FileNotFoundError:
            continue
        return lines


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / "health-summary.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


async def test_summaries_reach_iot_core_and_the_local_topic_and_validate(start_device, health_base: Path):
    async with start_device(
        health_base, update_config=health_config(), interpolate_component_configuration=True
    ) as device:
        await device.wait_for_published(CLOUD_TOPIC, count=3, timeout=30)
        await device.wait_for_local(LOCAL_TOPIC, count=3, timeout=30)
        check = validator()
        cloud = device.published_json(CLOUD_TOPIC)
        for message in [*cloud, *summaries(device)]:
            check.validate(message)
        assert {r.topic for r in device.published(CLOUD_TOPIC)} == {
            f"dt/device-agent/{device.nucleus.thing_name}/health"
        }
        assert cloud[0]["reason"] == "start"
        assert any(m["reason"] == "periodic" for m in cloud)
        sequences = [m["sequence"] for m in cloud]
        assert sequences == sorted(sequences)
        # The store's stats and the clock were judged, and each check says when it was verified.
        last = cloud[-1]
        assert {"clock_unset", "clock_jump"} <= {c["check"] for c in last["checks"]}
        assert all("verified" in c for c in last["checks"])


def free_inodes_percent() -> float | None:
    stats = os.statvfs("/")
    return None if stats.f_files == 0 else 100.0 * stats.f_favail / stats.f_files


def device_health(device: VirtualDevice, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device_agent.health_cli", "--log-dir", str(log_dir(device)), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )


async def test_real_readings_cross_thresholds_then_recover_only_past_the_hysteresis(
    start_device, health_base: Path
):
    free = free_inodes_percent()
    if free is None or free > 98.0:
        pytest.skip("the root file system reports no inode count, or too few used to set thresholds above")
    timing = {"forSeconds": 0.5, "recoverSeconds": 0.5, "hysteresis": 0.0}

    async def set_inodes(**rule: float) -> None:
        result = await device.deploy(update_config=health_config(checks={"inodes": {**timing, **rule}}))
        assert result.succeeded, result.reason

    def inodes(state: str) -> Callable[[dict[str, Any]], bool]:
        return lambda s: states(s, "inodes").get("/") == state

    async with start_device(
        health_base, update_config=health_config(), interpolate_component_configuration=True
    ) as device:
        await wait_for_summary(device, inodes("OK"), 30, "inodes never judged")
        await set_inodes(warn=free + 1, critical=1.0)
        warn = await wait_for_summary(device, inodes("WARN"), 15, "no WARN with the reading below warn")
        await set_inodes(warn=free + 1, critical=free + 0.5)
        await wait_for_summary(device, inodes("CRITICAL"), 15, "no CRITICAL with the reading below critical")
        # Back above warn, but not by the hysteresis: CRITICAL falls to WARN, and WARN holds.
        count = len(summaries(device))
        await set_inodes(warn=free - 1, critical=1.0, hysteresis=2.0)
        await wait_for_summary(
            device,
            lambda s: s["sequence"] > count and inodes("WARN")(s) and s["reason"] == "change",
            15,
            "CRITICAL did not fall to WARN",
        )
        held = len(summaries(device))
        await device.wait_for_local(LOCAL_TOPIC, count=held + 2, timeout=15)
        assert all(inodes("WARN")(s) for s in summaries(device)[held:])
        await set_inodes(warn=free - 1, critical=1.0, hysteresis=0.5)
        ok = await wait_for_summary(
            device, lambda s: s["sequence"] > held and inodes("OK")(s), 15, "no recovery"
        )
        assert ok["overall"] in {"OK", "WARN", "UNKNOWN"}
        assert warn["overall"] in {"WARN", "CRITICAL"}
        changes = [
            (line["from"], line["to"])
            for line in log_lines(device)
            if line["kind"] == "state" and line["check"] == "inodes"
        ]
        assert changes == [("OK", "WARN"), ("WARN", "CRITICAL"), ("CRITICAL", "WARN"), ("WARN", "OK")]
        rising = next(line for line in log_lines(device) if line["kind"] == "state" and line["to"] == "WARN")
        assert rising["evidence"].startswith("at or below")


async def test_a_silent_sibling_is_reported_within_two_heartbeat_intervals(start_device, health_base: Path):
    write_runtime_probe(health_base, PROBE, config={"heartbeatIntervalSeconds": 1.0})

    def probe_heartbeat(state: str) -> Callable[[dict[str, Any]], bool]:
        return lambda s: states(s, "heartbeat").get(PROBE) == state

    async with start_device(
        health_base, update_config=health_config(), interpolate_component_configuration=True
    ) as device:
        await wait_for_summary(device, probe_heartbeat("OK"), 30, "the probe's heartbeat never judged")
        pid = component_pid(device, "code.py")
        os.kill(pid, signal.SIGSTOP)  # stuck: the nucleus still sees it running, only its silence tells
        try:
            stopped_at = time.monotonic()
            warned = await wait_for_summary(
                device, probe_heartbeat("WARN"), 10, "the silence was not reported"
            )
            # Read after the warning: a heartbeat sent just before the stop may reach the nucleus later.
            beats = device.local_messages(f"device-agent/heartbeat/{PROBE}")
            reported = next(
                r.time for r in device.local_messages(LOCAL_TOPIC) if probe_heartbeat("WARN")(r.message)
            )
            last_beat = max(b.time for b in beats)
            # Judged within two intervals of silence, by the monitor's own measure (its value is the silence
            # in intervals when it judged); delivered before it would have been CRITICAL (three).
            [value] = [
                c["value"]
                for c in warned["checks"]
                if c["check"] == "heartbeat" and c.get("subject") == PROBE
            ]
            assert 1.5 <= value < 2.0, value
            assert reported - last_beat < 3.0, (reported - last_beat, reported - stopped_at)
            await wait_for_summary(device, probe_heartbeat("CRITICAL"), 10, "no CRITICAL after 3 intervals")
        finally:
            os.kill(pid, signal.SIGCONT)
        await wait_for_summary(
            device,
            lambda s: s["time"] > reported_time(device) and probe_heartbeat("OK")(s),
            10,
            "no recovery when the heartbeats came back",
        )
        result = device_health(device, "--check", "heartbeat", "--json")
        report = json.loads(result.stdout)
        assert any(line["kind"] == "state" and line["to"] == "CRITICAL" for line in report["timeline"])


def tool_copy(device: VirtualDevice, *args: str) -> subprocess.CompletedProcess[str]:
    """`python3 -I -S <log folder>/device-health`: the copy the monitor keeps, on a bare interpreter."""
    return subprocess.run(
        [sys.executable, "-I", "-S", str(log_dir(device) / "device-health"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd="/",
        env={"PATH": os.environ.get("PATH", ""), "NO_COLOR": "1"},
    )


def reported_time(device: VirtualDevice) -> str:
    times: list[str] = [
        r.message["time"] for r in device.local_messages(LOCAL_TOPIC) if r.message["overall"] == "CRITICAL"
    ]
    return max(times)


async def test_going_offline_is_reported_and_recovers(start_device, health_base: Path):
    config = health_config(checks={"cloudConnection": {"warn": 1.0, "critical": 2.0}})

    def connection(state: str) -> Callable[[dict[str, Any]], bool]:
        return lambda s: states(s, "cloud_connection").get(None) == state

    async with start_device(
        health_base, update_config=config, interpolate_component_configuration=True
    ) as device:
        await wait_for_summary(device, connection("OK"), 30, "the connection was never judged")
        await device.go_offline()
        critical = await wait_for_summary(device, connection("CRITICAL"), 15, "going offline not reported")
        assert critical["overall"] == "CRITICAL"
        await device.go_online()
        await wait_for_summary(
            device, lambda s: s["time"] > critical["time"] and connection("OK")(s), 15, "no recovery online"
        )
        # The summaries made offline reach the cloud once the link is back (the nucleus spooled them).
        await device.wait_for_published(
            CLOUD_TOPIC, where=lambda r: json.loads(r.payload)["overall"] == "CRITICAL", timeout=15
        )
        reasons = {line.get("to") for line in log_lines(device) if line.get("check") == "cloud_connection"}
        assert {"WARN", "CRITICAL", "OK"} <= reasons


async def test_a_store_integrity_event_shows_up_and_device_health_reads_it(start_device, health_base: Path):
    from device_agent.messages import Category, Severity, event  # noqa: PLC0415

    async with start_device(
        health_base, update_config=health_config(), interpolate_component_configuration=True
    ) as device:
        await device.wait_for_local(LOCAL_TOPIC, timeout=30)
        device.publish_local(
            "device-agent/events",
            event(
                component="com.deviceagent.EncryptedStore",
                thing=device.nucleus.thing_name,
                name="store.integrity_failed",
                category=Category.INTEGRITY,
                severity=Severity.CRITICAL,
                message="A record failed its integrity check and was refused.",
                details={"namespace": "telemetry-spool"},
            ),
        )
        summary = await wait_for_summary(
            device, lambda s: states(s, "integrity").get(None) == "CRITICAL", 15, "no integrity CRITICAL"
        )
        assert summary["overall"] == "CRITICAL"
        await device.wait_for_published(
            CLOUD_TOPIC, where=lambda r: json.loads(r.payload)["overall"] == "CRITICAL", timeout=15
        )
        incidents = [line for line in log_lines(device) if line["kind"] == "incident"]
        assert [i["event"] for i in incidents] == ["store.integrity_failed"]
        assert incidents[0]["component"] == "com.deviceagent.EncryptedStore"
        # The technician's tool reads the same from the log alone.
        result = device_health(device, "--json")
        report = json.loads(result.stdout)
        assert result.returncode == 2, result.stdout
        assert report["status"] == "CRITICAL"
        assert any(a["check"] == "integrity" for a in report["attention"])
        screen = device_health(device)
        assert "integrity" in screen.stdout
        assert screen.returncode == 2
        # The copy the monitor keeps beside the log, on a bare interpreter, reads the same from its folder.
        copy = tool_copy(device, "--json")
        assert copy.returncode == 2, copy.stderr
        assert json.loads(copy.stdout)["status"] == "CRITICAL"


def write_certificate(path: Path, days_left: float) -> None:
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.hazmat.primitives.serialization import Encoding  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days_left))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(Encoding.PEM))


async def test_samples_from_the_publisher_count_and_the_monitor_samples_itself_when_none_arrive(
    start_device, health_base: Path, tmp_path: Path
):
    certificate = tmp_path / "device.pem.crt"
    write_certificate(certificate, days_left=5.0)
    config = health_config(
        selfSampleAfterSeconds=1.0,
        certificatePath=str(certificate),
        checks={"temperature": {"warn": 75.0, "critical": 100.0, "forSeconds": 0.0}},
    )
    async with start_device(
        health_base, update_config=config, interpolate_component_configuration=True
    ) as device:
        # No publisher here: the monitor samples by itself.
        itself = await wait_for_summary(
            device,
            lambda s: {"cpu", "memory", "disk_space"} <= {c["check"] for c in s["checks"]},
            30,
            "no self-sample",
        )
        assert set(states(itself, "disk_space")) == {"/"}
        # Temperature too, from every sensor the machine has (none at all on many virtual machines).
        sensors = (
            Sampler(SamplerSettings(groups=frozenset({Group.TEMPERATURE}))).sample().get("temperature", {})
        )
        assert set(states(itself, "temperature")) == set(sensors)
        cert = next(c for c in itself["checks"] if c["check"] == "certificate")
        assert cert["state"] == "CRITICAL"  # 5 days left, critical at 7
        assert 4.9 < cert["value"] <= 5.0
        # A sample from the publisher is judged as it comes.
        device.publish_local(
            "device-agent/metrics",
            {
                "schema": "metrics-sample/1",
                "thing": "t",
                "sample": {
                    "seq": 1,
                    "at": 1.0,
                    "temperature": {"probe": 90.5},
                    "disk": {str(tmp_path): {"totalB": 100, "freeB": 50}},
                },
            },
        )
        hot = await wait_for_summary(
            device, lambda s: states(s, "temperature").get("probe") == "WARN", 15, "sample not judged"
        )
        assert next(c for c in hot["checks"] if c["check"] == "temperature")["value"] == 90.5
        # The mounts the publisher samples have their inodes judged too (statvfs, as for `mounts`).
        await wait_for_summary(
            device, lambda s: str(tmp_path) in states(s, "inodes"), 15, "the publisher's mount not judged"
        )


async def test_an_unexpected_restart_of_the_monitor_itself_is_recorded(start_device, health_base: Path):
    async with start_device(
        health_base, update_config=health_config(), interpolate_component_configuration=True
    ) as device:
        await device.wait_for_local(LOCAL_TOPIC, timeout=30)
        os.kill(component_pid(device, "health_monitor"), signal.SIGKILL)
        restarted = await wait_for_summary(
            device,
            lambda s: s["reason"] != "stop" and states(s, "unexpected_restart").get(None) == "WARN",
            30,
            "the restart was not judged",
        )
        assert restarted["sequence"] >= 1
        incidents = [line for line in log_lines(device) if line["kind"] == "incident"]
        assert [(i["event"], i["component"]) for i in incidents] == [("monitor.restarted", HEALTH)]
        starts = [line for line in log_lines(device) if line.get("event") == "monitor.started"]
        assert len(starts) == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the log to another group")
async def test_a_technician_group_can_pass_through_the_work_folder_to_the_log(
    start_device, health_base: Path
):
    import grp  # noqa: PLC0415
    import stat  # noqa: PLC0415

    group = grp.getgrgid(65534).gr_name
    config = health_config(log={"technicianGroup": group})
    async with start_device(
        health_base, update_config=config, interpolate_component_configuration=True
    ) as device:
        await wait_for_summary(device, lambda s: s["overall"] != "UNKNOWN", 30, "no summary")
        work = log_dir(device).parent
        modes = {
            path.name: (stat.S_IMODE(path.stat().st_mode), path.stat().st_gid)
            for path in (
                work,
                log_dir(device),
                log_dir(device) / "health.log",
                log_dir(device) / "device-health",
            )
        }
    assert modes == {
        work.name: (0o710, 65534),  # the group passes through, cannot list
        "health": (0o750, 65534),
        "health.log": (0o640, 65534),
        "device-health": (0o640, 65534),  # the tool beside it, for `python3 .../device-health`
    }


async def test_malformed_events_and_an_oversized_snapshot_never_stop_the_monitor(
    start_device, health_base: Path
):
    from device_agent.messages import Category, Severity, event  # noqa: PLC0415

    def sent(name: str, component: str, category: Category) -> dict[str, Any]:
        body = event(
            component="com.deviceagent.EncryptedStore",
            thing=device.nucleus.thing_name,
            name="store.integrity_failed",
            category=category,
            severity=Severity.CRITICAL,
            message="sent by the test",
        )
        return {**body, "event": name, "component": component}

    async with start_device(
        health_base, update_config=health_config(), interpolate_component_configuration=True
    ) as device:
        await device.wait_for_local(LOCAL_TOPIC, timeout=30)
        for _ in range(3):  # each of these once killed the monitor; three kills in a row park it BROKEN
            device.publish_local("device-agent/events", sent("Probe", "com.test.Probe", Category.SECURITY))
            device.publish_local("device-agent/heartbeat/x", {"component": "bad name!", "sequence": 1})
        device.publish_local(
            "device-agent/events", sent("config.rejected", "bad name!", Category.CONFIGURATION)
        )
        # 200 sensors whose names are 6 bytes a character on a log line: a snapshot of them is over 48 KiB.
        sensors = {"\u00e9" * 60 + f"{i:03d}": 40.0 for i in range(200)}
        device.publish_local(
            "device-agent/metrics",
            {
                "schema": "metrics-sample/1",
                "thing": "t",
                "sample": {"seq": 1, "at": 1.0, "temperature": sensors},
            },
        )
        await wait_for_summary(
            device,
            lambda s: states(s, "config_rejected").get(None) == "WARN",
            15,
            "the valid event not judged",
        )
        await wait_for_summary(
            device, lambda s: len(states(s, "temperature")) == 200, 15, "sensors not judged"
        )
        # Still judging: a store integrity failure after all that is CRITICAL at once.
        device.publish_local("device-agent/events", sent("store.integrity_failed", "x", Category.INTEGRITY))
        await wait_for_summary(
            device,
            lambda s: states(s, "integrity").get(None) == "CRITICAL",
            15,
            "the monitor stopped judging",
        )
        assert device.state(HEALTH).value == "RUNNING"
    lines = log_lines(device)  # after the stop, which notes the rejects not yet noted
    assert [line.get("event") for line in lines].count("monitor.started") == 1  # never restarted
    incidents = [(i["event"], i.get("component")) for i in lines if i["kind"] == "incident"]
    assert incidents == [("config.rejected", None), ("store.integrity_failed", "x")]
    # Noted at most once a minute, and at the stop: every one is counted, with its reason.
    notes = [line["detail"] for line in lines if line.get("event") == "events.rejected"]
    assert sum(int(note.split(" ", 1)[0]) for note in notes) == 6
    assert any("x an event without a valid event name" in note for note in notes)
    assert any("x a heartbeat without a valid component name" in note for note in notes)
    trimmed = next(line for line in lines if line.get("event") == "log.snapshot_trimmed")
    assert "x temperature OK" in trimmed["detail"]
    snapshots = [line for line in lines if line["kind"] == "snapshot"]
    assert any(len(s["checks"]) < 200 for s in snapshots)
    assert all(len(path.read_bytes().splitlines()) for path in log_dir(device).glob("health.log*"))


async def test_without_connection_status_last_publish_follows_the_summaries_the_nucleus_takes(
    start_device, health_base: Path
):
    config = health_config(summaryIntervalSeconds=1.0, checks={"lastPublish": {"warn": 3.0, "critical": 6.0}})

    def last_publish(state: str) -> Callable[[dict[str, Any]], bool]:
        return lambda s: states(s, "last_publish").get(None) == state

    # A nucleus older than SubscribeToIoTCoreConnectionStatus: the monitor gets "not supported".
    async with start_device(
        health_base,
        merge=[],
        interpolate_component_configuration=True,
        unsupported_operations=frozenset({"aws.greengrass#SubscribeToIoTCoreConnectionStatus"}),
    ) as device:
        result = await device.deploy(
            artifact_dir=health_base / "artifacts", merge={HEALTH: ""}, update_config=config
        )
        assert result.succeeded, result.reason
        ok = await wait_for_summary(device, last_publish("OK"), 30, "last_publish never judged")
        assert "cloud_connection" not in {c["check"] for c in ok["checks"]}
        await device.go_offline()
        critical = await wait_for_summary(device, last_publish("CRITICAL"), 20, "going offline not seen")
        assert critical["overall"] == "CRITICAL"
        await device.go_online()
        await wait_for_summary(
            device, lambda s: s["time"] > critical["time"] and last_publish("OK")(s), 15, "no recovery online"
        )
        # What was published offline went at QoS 1: kept by the nucleus, sent once the link was back.
        await device.wait_for_published(
            CLOUD_TOPIC, where=lambda r: json.loads(r.payload)["overall"] == "CRITICAL", timeout=15
        )
    assert "health.no_connection_status" in device.log(HEALTH)


async def test_a_certificate_that_cannot_be_read_is_unknown_with_the_reason_and_never_its_contents(
    start_device, health_base: Path, tmp_path: Path
):
    certificate = tmp_path / "device.pem.crt"
    garbage = "-----BEGIN CERTIFICATE-----\nU2VjcmV0LWxvb2tpbmctYnl0ZXMtdGhhdC1hcmUtbm90LWEtY2VydA\n"
    certificate.write_text(garbage)
    config = health_config(certificatePath=str(certificate), certificateCheckSeconds=1.0)

    def cert(state: str) -> Callable[[dict[str, Any]], bool]:
        return lambda s: states(s, "certificate").get(None) == state

    async with start_device(
        health_base, update_config=config, interpolate_component_configuration=True
    ) as device:
        unknown = await wait_for_summary(device, cert("UNKNOWN"), 30, "an unparsable certificate not shown")
        assert unknown["overall"] != "OK"  # UNKNOWN needs a look
        write_certificate(certificate, days_left=20.0)
        await wait_for_summary(device, cert("WARN"), 15, "the readable certificate not judged")
        certificate.unlink()
        await wait_for_summary(
            device, lambda s: s["sequence"] > unknown["sequence"] and cert("UNKNOWN")(s), 15, "a gone file"
        )
        lines = log_lines(device)
        report = json.loads(device_health(device, "--json", "--check", "certificate").stdout)
    reasons = [i["message"] for i in lines if i["kind"] == "incident" and i["check"] == "certificate"]
    assert reasons == [
        "the certificate file holds no PEM certificate that can be parsed",
        "the certificate file cannot be read: No such file or directory",
    ]
    went = [line for line in lines if line["kind"] == "state" and line["check"] == "certificate"]
    assert (went[-1]["from"], went[-1]["to"]) == ("WARN", "UNKNOWN")
    assert went[-1]["evidence"] == reasons[-1]
    everything = "\n".join(path.read_text() for path in log_dir(device).glob("health.log*"))
    assert "U2VjcmV0" not in everything
    assert "BEGIN CERTIFICATE" not in everything
    assert "U2VjcmV0" not in device.log(HEALTH)
    assert report["status"] == "UNKNOWN"
