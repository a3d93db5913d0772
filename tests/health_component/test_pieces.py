"""The monitor's pure pieces: readings from a sample, the board and a certificate; event routing; the
evaluators by check and subject; the summary against its schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from health_monitor.config import HealthConfig
from health_monitor.monitor import Monitor
from health_monitor.readings import (
    ClockWatch,
    board_readings,
    certificate_days_left,
    clock_unset,
    event_check,
    read_certificate,
    sample_readings,
)
from health_monitor.settings import CheckThresholds, EventCount, PercentUsed
from health_monitor.summary import summary

from device_agent.config import parse_config
from device_agent.errors import ConfigurationError
from device_agent.health_log import State

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def test_a_metrics_sample_gives_every_resource_reading_and_skips_what_is_not_a_number():
    sample = {
        "seq": 1,
        "at": 1.0,
        "cpu": {"usedPct": 12.5},
        "memory": {"totalB": 100, "availB": 40, "usedPct": 60.0, "swapTotalB": 0, "swapUsedPct": 0.0},
        "disk": {"/": {"totalB": 1000, "freeB": 80, "usedPct": 92.0}, "/data": {"totalB": 0, "freeB": 0}},
        "temperature": {"cpu_thermal": 71.5, "bad": "hot"},
    }
    assert sample_readings(sample) == [
        ("cpu", None, 12.5),
        ("memory", None, 60.0),
        ("disk_space", "/", 8.0),
        ("temperature", "cpu_thermal", 71.5),
    ]
    with_swap = {"memory": {"usedPct": 1.0, "swapTotalB": 10, "swapUsedPct": 30.0}}
    assert ("swap", None, 30.0) in sample_readings(with_swap)
    assert sample_readings({"cpu": {"usedPct": True}, "disk": "nonsense"}) == []


def test_the_monitors_own_samples_hold_every_resource_it_judges_temperature_included():
    from health_monitor.component import SELF_SAMPLED  # noqa: PLC0415

    from device_agent.metrics import Sampler, SamplerSettings  # noqa: PLC0415
    from device_agent.metrics.source import CpuTimes  # noqa: PLC0415
    from tests.metrics.fakes import FakeSource  # noqa: PLC0415

    source, clock = FakeSource(), FakeClock()
    sampler = Sampler(SamplerSettings(groups=SELF_SAMPLED), source=source, clock=clock)
    sampler.sample()  # the CPU's share needs a second sample, some time later
    clock.now += 10.0
    source.cpu = CpuTimes(total=1030.0, idle=815.0, iowait=10.0)  # 4 CPUs: at most 40 s in 10 s
    readings = sample_readings(sampler.sample())
    assert {check for check, _, _ in readings} == {"cpu", "memory", "disk_space", "temperature"}
    assert ("temperature", "cpu_thermal", 48.2) in readings  # to a tenth of a degree


def test_the_board_flags_are_read_where_the_board_reports_them(tmp_path: Path):
    flags = tmp_path / "get_throttled"
    flags.write_text("0x50005\n")
    assert board_readings(flags) == [("throttling", None, 1.0), ("undervoltage", None, 1.0)]
    flags.write_text("0x50000\n")  # happened since boot, not now
    assert board_readings(flags) == [("throttling", None, 0.0), ("undervoltage", None, 0.0)]
    assert board_readings(tmp_path / "absent") == []


def test_certificate_days_left_counts_to_not_after_and_goes_negative_once_expired():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=10))
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(Encoding.PEM)
    assert certificate_days_left(pem, NOW) == pytest.approx(10.0)
    assert certificate_days_left(pem, NOW + timedelta(days=12)) == pytest.approx(-2.0)
    with pytest.raises(ValueError, match=r"."):
        certificate_days_left(b"not a certificate", NOW)


def test_a_certificate_that_cannot_be_read_gives_the_reason_never_the_contents(tmp_path: Path):
    path = tmp_path / "device.pem.crt"
    assert read_certificate(path, NOW) == "the certificate file cannot be read: No such file or directory"
    secret = "-----BEGIN CERTIFICATE-----\nTUlJQ2VqQ0NBZUNnQXdJQkFnSVVTZWNyZXQ\n-----END CERTIFICATE-----\n"
    path.write_text(secret)
    reason = read_certificate(path, NOW)
    assert reason == "the certificate file holds no PEM certificate that can be parsed"
    path.write_bytes(b"x" * (64 * 1024 + 1))
    assert read_certificate(path, NOW) == "the certificate file is over 64 KiB: not a certificate"
    assert read_certificate(tmp_path, NOW) == "the certificate file cannot be read: Is a directory"


def test_a_check_that_cannot_be_read_is_unknown_at_once():
    clock = FakeClock()
    monitor = Monitor(CheckThresholds(), clock=clock, wall=lambda: NOW)
    assert monitor.unknown("certificate", "unreadable") == []  # shown, UNKNOWN from the start
    [status] = monitor.statuses()
    assert (status.check, status.state, status.verified) == ("certificate", State.UNKNOWN, NOW)
    # Readable again: from UNKNOWN it resumes (OK at the very start), then WARN at once (under 30 days).
    changes = monitor.observe("certificate", 20.0)
    assert [(c.old, c.new) for c in changes] == [(State.UNKNOWN, State.OK), (State.OK, State.WARN)]
    [change] = monitor.unknown("certificate", "the file cannot be read")
    assert (change.old, change.new, change.evidence) == (State.WARN, State.UNKNOWN, "the file cannot be read")
    assert monitor.unknown("disabled", "reason") == []


def test_a_wall_clock_jump_either_way_is_measured_and_judged_then_recovers():
    mono, wall = [100.0], [1_800_000_000.0]
    watch = ClockWatch(mono=lambda: mono[0], wall=lambda: wall[0])
    clock = FakeClock()
    monitor = Monitor(CheckThresholds(), clock=clock, wall=lambda: NOW)

    def tick(seconds: float, jump: float = 0.0) -> list[State]:
        mono[0] += seconds
        wall[0] += seconds + jump
        clock.now += seconds
        return [change.new for change in monitor.observe("clock_jump", watch.jump())]

    assert tick(5.0) == []  # kept pace: 0, the first reading settles OK silently
    assert watch.jump() == 0.0
    assert tick(5.0, jump=0.5) == []  # an NTP slew-sized step is no jump (warn at 300 s)
    assert tick(5.0, jump=-3600.0) == [State.WARN]  # set back an hour
    assert monitor.statuses()[0].value == 3600.0
    assert tick(5.0) == []  # holds: recovery needs an hour of steady readings
    for _ in range(720):
        tick(5.0)
    assert monitor.statuses()[0].state is State.OK
    assert tick(5.0, jump=400.0) == [State.WARN]  # forward too


def test_clock_unset_and_event_routing():
    assert clock_unset(datetime(1970, 1, 1, tzinfo=UTC)) == 1.0
    assert clock_unset(NOW) == 0.0
    assert event_check({"event": "store.integrity_failed", "category": "integrity"}) == "integrity"
    assert event_check({"event": "store.records_dropped", "category": "integrity"}) is None
    assert event_check({"event": "config.rejected", "category": "configuration"}) == "config_rejected"
    assert event_check({"event": "ipc.unauthorized", "category": "security"}) == "unauthorized"
    assert event_check({"event": "lifecycle.fatal_error", "category": "health"}) == "unexpected_restart"
    assert event_check({"event": "store.erased", "category": "lifecycle"}) is None
    assert event_check({"category": "security"}) is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_monitor_reports_real_changes_only_and_counts_events_in_their_window():
    clock = FakeClock()
    thresholds = CheckThresholds(
        cpu=PercentUsed(warn=80.0, critical=95.0, hysteresis=5.0, for_seconds=10.0),
        integrity=EventCount(warn=None, critical=1.0, window_seconds=60.0),
    )
    monitor = Monitor(thresholds, clock=clock, wall=lambda: NOW + timedelta(seconds=clock.now - 1000.0))
    assert monitor.observe("cpu", 50.0) == []  # the first reading settles the state silently
    assert monitor.observe("cpu", 85.0) == []
    clock.now += 10.0
    [change] = monitor.observe("cpu", 86.0)
    assert (change.old, change.new, change.threshold, change.unit) == (State.OK, State.WARN, 80.0, "%")
    assert change.time == NOW + timedelta(seconds=10.0)
    assert monitor.overall() is State.WARN
    monitor.count_event("integrity")
    [raised] = [c for c in monitor.tick() if c.check == "integrity"]
    assert raised.new is State.CRITICAL
    clock.now += 61.0
    [cleared] = [c for c in monitor.tick() if c.check == "integrity"]
    assert cleared.new is State.OK
    statuses = {s.check: s for s in monitor.statuses()}
    assert statuses["cpu"].state is State.WARN
    assert statuses["cpu"].threshold == 80.0
    assert statuses["integrity"].value == 0
    # A check turned off is forgotten, and readings for it are ignored.
    monitor.configure(CheckThresholds(cpu=PercentUsed(enabled=False, warn=None, critical=None)))
    assert monitor.observe("cpu", 99.0) == []
    assert "cpu" not in {s.check for s in monitor.statuses()}


def test_a_summary_validates_against_its_schema():
    clock = FakeClock()
    monitor = Monitor(CheckThresholds(), clock=clock, wall=lambda: NOW)
    monitor.observe("disk_space", 42.0, "/data")
    monitor.observe("heartbeat", 0.3, "com.deviceagent.EncryptedStore")
    body = summary(
        thing="thing-1",
        component="com.deviceagent.HealthMonitor",
        version="0.1.0",
        time=NOW,
        sequence=1,
        reason="periodic",
        overall=monitor.overall(),
        interval_seconds=300.0,
        checks=monitor.statuses(),
    )
    schema = json.loads((SCHEMAS / "health-summary.schema.json").read_text())
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(body)
    assert body["counts"] == {"OK": 2, "WARN": 0, "CRITICAL": 0, "UNKNOWN": 0}
    assert body["time"] == "2026-03-01T10:00:00.000Z"


def test_the_configuration_refuses_wildcard_topics_and_relative_paths():
    assert parse_config(HealthConfig, {}).value == HealthConfig()
    for document, key in (
        ({"topic": "dt/device-agent/+/health"}, "topic"),
        ({"localTopic": "device-agent/#"}, "localTopic"),
        ({"certificatePath": "certs/device.pem"}, "certificatePath"),
        ({"checks": {"cpu": {"warn": 99, "critical": 90}}}, "checks"),
    ):
        with pytest.raises(ConfigurationError, match=key):
            parse_config(HealthConfig, document)


def test_the_recipe_holds_every_default_and_grants_exactly_the_topics_used():
    import yaml  # noqa: PLC0415
    from health_monitor import component  # noqa: PLC0415

    from device_agent.config import defaults_document  # noqa: PLC0415

    recipe = yaml.safe_load(
        (SCHEMAS.parents[1] / "recipes" / "com.deviceagent.HealthMonitor.yaml").read_text()
    )
    defaults = dict(recipe["ComponentConfiguration"]["DefaultConfiguration"])
    access = defaults.pop("accessControl")
    assert defaults == json.loads(json.dumps(defaults_document(HealthConfig)))
    pubsub = access["aws.greengrass.ipc.pubsub"].values()
    granted = {(op, r) for policy in pubsub for op in policy["operations"] for r in policy["resources"]}
    subscribe, publish = "aws.greengrass#SubscribeToTopic", "aws.greengrass#PublishToTopic"
    assert granted == {
        (subscribe, component.METRICS_TOPIC),
        (subscribe, component.HEARTBEATS_TOPIC),  # the filter as written: the nucleus matches it so
        (subscribe, component.EVENTS_TOPIC),
        (subscribe, component.STORE_STATS_TOPIC),
        (publish, HealthConfig().local_topic),
        (publish, f"device-agent/heartbeat/{component.NAME}"),
        (publish, "device-agent/events"),
    }
    [mqtt] = access["aws.greengrass.ipc.mqttproxy"].values()
    assert mqtt["operations"] == ["aws.greengrass#PublishToIoTCore"]
    assert mqtt["resources"] == [HealthConfig().topic.replace("{thing}", "{iot:thingName}")]
