"""The fleet's pieces without a broker: specification, identities reused, the ACL file, sequence ranges, the
state file, the observer's parsing and the status table."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from device_agent.devkit.fleet.acl import write_fleet_acl
from device_agent.devkit.fleet.cli import _spec
from device_agent.devkit.fleet.identity import ensure_identities
from device_agent.devkit.fleet.layout import OBSERVER, VERIFIER, FleetLayout, thing_name
from device_agent.devkit.fleet.mqtt import Received
from device_agent.devkit.fleet.observer import Observer, SeqRanges
from device_agent.devkit.fleet.spec import FleetError, FleetSpec
from device_agent.devkit.fleet.state import DeviceRecord, FleetState
from device_agent.devkit.fleet.status import render_table
from device_agent.devkit.pki import PkiError, load_certificate, sha256_fingerprint


def test_things_are_numbered_and_the_last_ones_rejected() -> None:
    spec = FleetSpec(devices=4, reject=1)
    assert spec.things == ("vdev-001", "vdev-002", "vdev-003", "vdev-004")
    assert spec.rejected == frozenset({"vdev-004"})
    assert FleetSpec(devices=2).rejected == frozenset()
    assert thing_name(12, "lab") == "lab-012"


@pytest.mark.parametrize(
    "options",
    [
        {"devices": 0},
        {"devices": 2, "reject": 3},
        {"devices": 1, "telemetry_interval": 0.5},
        {"devices": 1, "report_settle": -1},
    ],
)
def test_a_specification_out_of_bounds_is_refused(options: dict[str, float]) -> None:
    with pytest.raises(FleetError):
        FleetSpec(**options)  # type: ignore[arg-type]


def test_an_existing_fleet_keeps_its_specification(tmp_path: Path) -> None:
    import argparse  # noqa: PLC0415

    layout = FleetLayout.at(tmp_path / "fleet")

    def args(devices: int | None) -> argparse.Namespace:
        return argparse.Namespace(
            devices=devices,
            reject=0,
            telemetry_interval=5.0,
            health_interval=None,
            report_settle=None,
            log_deliveries=False,
        )

    with pytest.raises(FleetError, match="needs --devices"):
        _spec(layout, args(None))
    created = _spec(layout, args(3))
    assert stat.S_IMODE(layout.spec_file.stat().st_mode) == 0o600
    assert _spec(layout, args(None)) == created  # reused, not rewritten
    with pytest.raises(FleetError, match="has 3 devices"):
        _spec(layout, args(5))
    assert FleetSpec.load(layout.spec_file) == created


def test_identities_are_created_once_and_reused(tmp_path: Path) -> None:
    layout = FleetLayout.at(tmp_path / "fleet")
    first = ensure_identities(layout, ("vdev-001", "vdev-002"))
    cert = load_certificate(first.devices["vdev-001"].cert)
    assert cert.subject.rfc4514_string() == "CN=vdev-001"
    assert load_certificate(first.verifier.cert).subject.rfc4514_string() == f"CN={VERIFIER}"
    assert load_certificate(first.observer.cert).subject.rfc4514_string() == f"CN={OBSERVER}"
    key = first.devices["vdev-001"].key
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    before = {p: p.read_bytes() for p in (layout.pki / "things").rglob("*") if p.is_file()}
    first.ca.revoke(first.devices["vdev-002"].cert)
    again = ensure_identities(layout, ("vdev-001", "vdev-002", "vdev-003"))
    for path, data in before.items():
        assert path.read_bytes() == data, f"{path} was rewritten"
    assert again.ca.is_revoked(load_certificate(again.devices["vdev-002"].cert))  # revocations stay
    assert "vdev-003" in again.devices


def test_a_rejected_device_presents_a_certificate_of_its_name_that_is_not_the_registered_one(
    tmp_path: Path,
) -> None:
    layout = FleetLayout.at(tmp_path / "fleet")
    identities = ensure_identities(layout, ("vdev-001", "vdev-002"), unregistered=("vdev-002",))
    assert identities.presented("vdev-001") == identities.devices["vdev-001"]
    presented, registered = identities.presented("vdev-002"), identities.devices["vdev-002"]
    assert presented.cert == layout.pki / "unregistered" / "vdev-002" / "certificate.pem.crt"
    assert stat.S_IMODE(presented.key.stat().st_mode) == 0o600
    clone, own = load_certificate(presented.cert), load_certificate(registered.cert)
    assert clone.subject == own.subject  # the same thing name: the broker takes it as vdev-002
    assert sha256_fingerprint(clone) != sha256_fingerprint(own)  # but not the certificate registered
    clone.verify_directly_issued_by(identities.ca.certificate)
    again = ensure_identities(layout, ("vdev-001", "vdev-002"), unregistered=("vdev-002",))
    assert again.presented("vdev-002").cert.read_bytes() == presented.cert.read_bytes()  # issued once
    with pytest.raises(PkiError, match="folder"):
        identities.ca.issue_client("vdev-003", folder="ca")


def test_the_acl_confines_devices_and_names_the_two_services(tmp_path: Path) -> None:
    text = write_fleet_acl(tmp_path / "acl").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == [
        "pattern write dt/device-agent/%u/#",
        "pattern read cmd/device-agent/%u/#",
        f"user {VERIFIER}",
        "topic read dt/device-agent/+/bootstrap",
        "topic write cmd/device-agent/+/verdict",
        f"user {OBSERVER}",
        "topic read dt/device-agent/#",
        "topic read cmd/device-agent/+/verdict",
    ]
    assert not any("readwrite" in line for line in lines)


def test_sequence_ranges_count_what_is_missing_and_ignore_redeliveries() -> None:
    seqs = SeqRanges()
    for seq in (5, 7, 6, 1, 2, 9, 3, 3, 7):
        seqs.add(seq)
    assert seqs.ranges == [[1, 3], [5, 7], [9, 9]]
    assert (seqs.first, seqs.last, seqs.missing) == (1, 9, 2)
    seqs.add(4)
    seqs.add(8)
    assert seqs.ranges == [[1, 9]]
    assert seqs.missing == 0


def test_the_observer_reads_verdicts_telemetry_and_health_per_thing() -> None:
    verdicts: list[tuple[str, str]] = []
    observer = Observer(on_verdict=lambda thing, verdict: verdicts.append((thing, verdict["verdict"])))

    def deliver(topic: str, document: object) -> None:
        observer(Received(topic, json.dumps(document).encode()))

    deliver(
        "cmd/device-agent/vdev-001/verdict", {"verdict": "approved", "group": "production", "reason": "ok"}
    )
    deliver("dt/device-agent/vdev-001/telemetry", {"samples": [{"seq": 1}, {"seq": 2}], "backfill": True})
    deliver("dt/device-agent/vdev-001/health", {"overall": "OK"})
    deliver("dt/device-agent/vdev-002/bootstrap", {"reportId": "x"})
    observer(Received("dt/device-agent/vdev-002/telemetry", b"not json"))
    deliver("dt/other/vdev-002/telemetry", {"samples": [{"seq": 1}]})
    assert verdicts == [("vdev-001", "approved")]
    one = observer.things["vdev-001"].as_json()
    assert (one["verdict"], one["verdictGroup"], one["health"]) == ("approved", "production", "OK")
    assert one["seq"] == {"first": 1, "last": 2, "missing": 0}
    assert one["backfilledMessages"] == 1
    two = observer.things["vdev-002"]
    assert (two.reports, two.telemetry_messages) == (1, 0)


def test_the_state_file_round_trips_and_is_private(tmp_path: Path) -> None:
    state = FleetState(supervisor_pid=os.getpid(), broker_port=1234, phase="running")
    state.devices["vdev-001"] = DeviceRecord(pid=42, group="production", components=["a"], restarts=1)
    path = tmp_path / "state.json"
    state.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert FleetState.load(path) == state
    path.write_text('{"schema": "something-else"}')
    with pytest.raises(FleetError, match="not a fleet state"):
        FleetState.load(path)
    with pytest.raises(FleetError, match="no fleet state"):
        FleetState.load(tmp_path / "absent.json")


def test_the_status_table_has_a_row_per_device() -> None:
    approved = {
        "thing": "vdev-001",
        "group": "production",
        "wantedGroup": "production",
        "verdict": "approved",
        "verdictReason": "approved by the default rules",
        "nucleus": {"pid": 9, "running": True, "restarts": 1},
        "offline": False,
        "revoked": True,
        "components": {"com.deviceagent.EncryptedStore": "RUNNING"},
        "telemetryAgeSeconds": 2.0,
        "seq": {"first": 1, "last": 30, "missing": 0},
        "health": "OK",
    }
    rejected = {
        **approved,
        "thing": "vdev-002",
        "group": "quarantine",
        "wantedGroup": "quarantine",
        "verdict": "rejected",
        "verdictReason": "rejected by the default rules: certificate: the reported certificate is not one",
        "revoked": False,
        "telemetryAgeSeconds": None,
        "seq": {},
        "health": None,
    }
    moving = {**approved, "thing": "vdev-003", "group": "quarantine", "revoked": False}
    status: dict[str, Any] = {
        "root": "/r",
        "phase": "running",
        "error": None,
        "broker": {"pid": 7, "port": 1883, "running": True},
        "verifier": {"pid": 8, "running": True},
        "devices": [approved, rejected, moving],
    }
    table = render_table(status).splitlines()
    assert table[0] == "fleet /r: running; broker pid 7 on 127.0.0.1:1883; verifier pid 8"
    assert table[2].split() == [
        "vdev-001", "production", "approved", "9", "r1", "2s", "ago", "30", "-0", "OK",
        "EncryptedStore=RUNNING", "[revoked]",
    ]  # fmt: skip
    assert table[3].split()[:3] == ["vdev-002", "quarantine", "rejected"]
    assert (
        table[4].strip() == f"rejected: {rejected['verdictReason']}"
    )  # the verifier's reason, on its own line
    assert table[5].endswith("[moving to production]")
    assert len(table) == 6  # no reason line under an approved device
    status["verifier"] = {"pid": None, "running": False}
    assert render_table(status).splitlines()[0].endswith("NO VERIFIER: no device is verified")
    status["verifier"] = {"pid": 8, "running": False}
    assert render_table(status).splitlines()[0].endswith("VERIFIER pid 8 NOT RUNNING")


def test_up_says_loudly_when_the_fleet_runs_without_a_verifier(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from device_agent.devkit.fleet import cli  # noqa: PLC0415

    assert not cli.warn_without_verifier()  # installed here: nothing said
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(cli, "verifier_installed", lambda: False)
    assert cli.warn_without_verifier()
    assert "WARNING: the verifier (device_agent_cloud) is not installed" in capsys.readouterr().err


def test_mosquitto_is_installed_from_debian_packages_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    from device_agent.devkit.fleet import broker  # noqa: PLC0415
    from device_agent.devkit.mosquitto import MosquittoNotFoundError  # noqa: PLC0415

    installed: list[list[str]] = []
    binary = Path("/usr/sbin/mosquitto")

    def find() -> Path:
        if not any("install" in command for command in installed):
            raise MosquittoNotFoundError("missing")
        return binary

    def run(command: list[str], **_options: object) -> subprocess.CompletedProcess[bytes]:
        installed.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(broker, "find_mosquitto", find)
    monkeypatch.setattr(broker, "mosquitto_version", lambda _binary: (2, 0, 11))
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert broker.ensure_mosquitto() == binary
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    assert installed[:2] == [
        [*sudo, "apt-get", "update", "-qq"],
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "mosquitto"],
    ]
    assert installed[2] == [*sudo, "systemctl", "stop", "mosquitto"]  # the fleet never uses the system broker

    monkeypatch.setattr(broker, "find_mosquitto", lambda: (_ for _ in ()).throw(MosquittoNotFoundError("x")))
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(FleetError, match="no apt-get"):
        broker.ensure_mosquitto()


@pytest.mark.mosquitto
def test_a_mosquitto_other_than_2_x_is_refused_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from device_agent.devkit.fleet import broker  # noqa: PLC0415
    from device_agent.devkit.mosquitto import MosquittoError, mosquitto_version  # noqa: PLC0415

    found = broker.ensure_mosquitto()  # the real one on this machine is 2.x
    assert mosquitto_version(found)[0] == broker.REQUIRED_MAJOR
    monkeypatch.setattr(broker, "mosquitto_version", lambda _binary: (1, 6, 9))
    with pytest.raises(FleetError, match=r"is mosquitto 1\.6\.9; the fleet needs mosquitto 2\.x"):
        broker.ensure_mosquitto()

    def unknown(_binary: Path) -> tuple[int, int, int]:
        raise MosquittoError("mosquitto -h did not print a mosquitto version")

    monkeypatch.setattr(broker, "mosquitto_version", unknown)
    with pytest.raises(FleetError, match="cannot tell the version"):
        broker.ensure_mosquitto()


def test_a_root_too_long_for_the_devices_sockets_is_refused_before_anything_starts(
    fleet_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from device_agent.devkit.cli import main as gg_virtual  # noqa: PLC0415

    # Each device's nucleus binds <root>/devices/<thing>/control.socket: 32 bytes past the root.
    base = fleet_root.parent  # a short temporary directory
    short = FleetLayout.at(base / ("s" * (107 - 32 - len(str(base)) - 1)))
    assert short.socket_path_problem(["vdev-001"]) is None
    long = FleetLayout.at(Path(str(short.root) + "x"))
    assert long.socket_path_problem(["vdev-001"]) is not None
    code = gg_virtual(["fleet", "up", "--root", str(long.root), "--devices", "2"])
    assert code == 1
    assert "is too long: vdev-001's control.socket would be 108 bytes" in capsys.readouterr().err
    assert not long.root.exists()  # refused before the root, its identities or any process
