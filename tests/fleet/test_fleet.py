"""The whole loop on one machine: `gg-virtual fleet up` with three devices on a real broker, verdicts on the
broker, promotion, telemetry and health arriving, and the fault drills; then `fleet down` leaves nothing.

One fleet serves the module (starting one costs seconds per device); the tests run in file order and each
leaves the fleet as the next expects. The verdicts come from the real verifier service (device_agent_cloud,
part of this project): without it the module fails, it does not skip. The rejected device is refused for
what it reports: it connects with, and reports, a certificate of its name that is not the one registered
for its thing. The broker logs every delivery (`--log-deliveries`), so what reaches a device is read from
what the broker sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from device_agent.devkit import control
from device_agent.devkit.fleet.cli import fleet_pids
from device_agent.devkit.fleet.components import HEALTH, REPORTER, STORE, TELEMETRY
from device_agent.devkit.fleet.identity import UNREGISTERED, client_identity
from device_agent.devkit.fleet.layout import FleetLayout
from device_agent.devkit.fleet.processes import SOCKET_ENV, alive
from device_agent.devkit.fleet.state import FleetState
from device_agent.devkit.fleet.status import fleet_status, render_table
from device_agent.devkit.fleet.verifier import verifier_installed
from device_agent.devkit.pki import sha256_fingerprint
from tests.fleet.fleet_support import (
    broker_log_size,
    deliveries,
    device_rows,
    first_deployment,
    fleet,
    fleet_async,
    published,
    sockets_of,
    wait_for,
)

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

QUARANTINE = (REPORTER, STORE)
APPROVED = ("vdev-001", "vdev-002")
REJECTED = "vdev-003"


@pytest.fixture(scope="module")
def running_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetLayout]:
    import shutil  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    assert verifier_installed(), "the verifier (device_agent_cloud) must be installed: `pip install -e .`"
    base = Path(tempfile.mkdtemp(prefix="fl-"))  # short: the devices' socket paths stay under 108 bytes
    layout = FleetLayout.at(base / "fleet")
    code = fleet(
        layout,
        "up",
        "--devices",
        "3",
        "--reject",
        "1",
        "--telemetry-interval",
        "1",
        "--health-interval",
        "2",
        "--report-settle",
        "1",
        "--log-deliveries",
    )
    try:
        assert code == 0
        yield layout
    finally:
        fleet(layout, "down")
        shutil.rmtree(base, ignore_errors=True)
        del tmp_path_factory


def _port(layout: FleetLayout) -> int:
    port = FleetState.load(layout.state_file).broker_port
    assert port is not None
    return port


async def test_every_device_starts_in_quarantine(running_fleet: FleetLayout) -> None:
    rows = device_rows(running_fleet, components=True)
    assert sorted(rows) == [*APPROVED, REJECTED]
    for thing, row in rows.items():
        assert row["nucleus"]["running"]
        # The verifier may have promoted it already: what it started with is in its nucleus's log.
        assert first_deployment(running_fleet, thing) == sorted(QUARANTINE)
        assert {REPORTER, STORE} <= set(row["components"])
    assert rows[REJECTED]["expectRejection"]
    assert not any(rows[thing]["expectRejection"] for thing in APPROVED)


async def test_approved_devices_are_promoted_and_their_telemetry_and_health_arrive(
    running_fleet: FleetLayout,
) -> None:
    rows = await wait_for(
        running_fleet,
        lambda rows: all(
            rows[t]["group"] == "production" and rows[t]["telemetryMessages"] >= 2 and rows[t]["health"]
            for t in APPROVED
        ),
        "promotion, telemetry and health of the approved devices",
        timeout=90,
    )
    for thing in APPROVED:
        assert rows[thing]["verdict"] == "approved"
        assert rows[thing]["seq"]["missing"] == 0
    rows = device_rows(running_fleet, components=True)
    for thing in APPROVED:
        assert {TELEMETRY, HEALTH, STORE} <= set(rows[thing]["components"])


async def test_each_devices_processes_telemetry_counts_only_its_own_components(
    running_fleet: FleetLayout,
) -> None:
    """Every device runs the same components on one machine; each reports its own (0661dcd): the store and
    the reporter ran on all three devices before any telemetry started, so a device that counted the others'
    would report `n` processes for them instead of one pid."""
    for thing in APPROVED:
        samples = [
            sample
            for message in published(running_fleet, thing, f"dt/device-agent/{thing}/telemetry")
            for sample in message["samples"]
        ]
        assert samples, thing
        own_socket = str(running_fleet.device_root(thing) / "ipc.socket")
        for sample in samples:
            processes = sample["processes"]
            assert {"store", "bootstrap", "telemetry"} <= set(processes), (thing, processes)
            for name, entry in processes.items():
                assert "n" not in entry, (thing, name, entry)  # one process, not the fleet's
                with contextlib.suppress(psutil.NoSuchProcess):  # a restarted one is gone by now
                    assert psutil.Process(entry["pid"]).environ()[SOCKET_ENV] == own_socket, (thing, name)


async def test_a_rejected_device_is_refused_for_the_certificate_it_reports(
    running_fleet: FleetLayout,
) -> None:
    rows = await wait_for(running_fleet, lambda rows: rows[REJECTED]["verdict"] is not None, "the verdict")
    rejected = rows[REJECTED]
    assert rejected["verdict"] == "rejected"
    assert rejected["group"] == rejected["wantedGroup"] == "quarantine"
    assert (
        "certificate: the reported certificate is not one attached to the thing" in rejected["verdictReason"]
    )
    table = render_table(fleet_status(running_fleet, components=False))
    assert f"rejected: {rejected['verdictReason']}" in table  # the verifier's reason, in the status
    # Its report names the certificate it connects with, not the one registered for its thing; the approved
    # devices report their registered ones.
    reports = published(running_fleet, REJECTED, f"dt/device-agent/{REJECTED}/bootstrap")
    assert reports
    presented = client_identity(running_fleet, REJECTED, UNREGISTERED).cert
    assert {r["facts"]["certificate"]["value"]["sha256"] for r in reports} == {sha256_fingerprint(presented)}
    assert sha256_fingerprint(presented) != sha256_fingerprint(client_identity(running_fleet, REJECTED).cert)
    for thing in APPROVED:
        report = published(running_fleet, thing, f"dt/device-agent/{thing}/bootstrap")[-1]
        registered = sha256_fingerprint(client_identity(running_fleet, thing).cert)
        assert report["facts"]["certificate"]["value"]["sha256"] == registered


def assert_rejected_got_nothing_else(layout: FleetLayout) -> None:
    """What the broker delivered to the rejected device: its verdicts only (beside the approved ones, which
    received theirs: the log shows deliveries). Its nucleus ran one deployment, the quarantine one."""
    assert set(deliveries(layout, REJECTED)) == {f"cmd/device-agent/{REJECTED}/verdict"}
    for thing in APPROVED:
        assert f"cmd/device-agent/{thing}/verdict" in deliveries(layout, thing)
    status = control.call(layout.device_root(REJECTED), "status")
    assert {c["name"] for c in status["components"]} == set(QUARANTINE)
    assert len(status["deployments"]) == 1, status["deployments"]
    assert not (layout.device_root(REJECTED) / "work" / TELEMETRY).exists()
    row = device_rows(layout)[REJECTED]
    assert (row["group"], row["telemetryMessages"], row["health"]) == ("quarantine", 0, None)


async def test_a_rejected_device_stays_in_quarantine_and_gets_nothing_else(
    running_fleet: FleetLayout,
) -> None:
    await wait_for(running_fleet, lambda rows: rows[REJECTED]["verdict"] is not None, "the verdict")
    assert_rejected_got_nothing_else(running_fleet)


async def test_after_a_broker_restart_every_device_reconnects_and_no_sample_is_lost(
    running_fleet: FleetLayout,
) -> None:
    before = {t: row["seq"]["last"] for t, row in device_rows(running_fleet).items() if t in APPROVED}
    log_offset = broker_log_size(running_fleet)
    assert await fleet_async(running_fleet, "chaos", "restart-broker") == 0
    rows = await wait_for(
        running_fleet,
        lambda rows: all(rows[t]["seq"]["last"] >= before[t] + 5 for t in APPROVED),
        "five new samples from every approved device after the restart",
        timeout=60,
    )
    for thing in APPROVED:
        assert rows[thing]["seq"]["missing"] == 0, rows[thing]
    # The rejected device, which sends nothing the observer counts, reconnected too: the new broker saw it
    # connect, and its nucleus is online again.
    deadline = asyncio.get_running_loop().time() + 30
    while not control.call(running_fleet.device_root(REJECTED), "status")["online"]:
        assert asyncio.get_running_loop().time() < deadline, "the rejected device did not reconnect"
        await asyncio.sleep(0.5)
    with (running_fleet.broker / "mosquitto.log").open("rb") as log:
        log.seek(log_offset)
        assert f" as {REJECTED} ".encode() in log.read()  # "New client connected from ... as vdev-003 (...)"


async def test_a_device_taken_offline_delivers_its_samples_when_back_online(
    running_fleet: FleetLayout,
) -> None:
    thing = APPROVED[1]
    assert await fleet_async(running_fleet, "chaos", "offline", thing) == 0
    before = device_rows(running_fleet)[thing]
    assert before["offline"]
    await asyncio.sleep(3.5)  # three samples at one a second, spooled: nothing else witnesses them offline
    assert await fleet_async(running_fleet, "chaos", "online", thing) == 0
    rows = await wait_for(
        running_fleet,
        lambda rows: (
            rows[thing]["backfilledMessages"] > before["backfilledMessages"]
            and rows[thing]["seq"]["last"] >= before["seq"]["last"] + 5
        ),
        "the spooled samples as backfill, then live ones",
    )
    assert not rows[thing]["offline"]
    assert rows[thing]["seq"]["missing"] == 0, rows[thing]["seqRanges"]


async def test_a_killed_nucleus_is_restarted_and_resumes_from_its_spool(running_fleet: FleetLayout) -> None:
    thing = APPROVED[0]
    assert await fleet_async(running_fleet, "chaos", "offline", thing) == 0
    before = device_rows(running_fleet)[thing]
    # Offline, the publisher spools its samples in the store; three of them, then the nucleus dies (-9)
    # and the fleet ends the components it left behind.
    spooled_from = (before["seq"]["last"] or 0) + 1
    await asyncio.sleep(3.5)  # the samples have no other witness while the device is offline
    assert await fleet_async(running_fleet, "chaos", "kill-nucleus", thing) == 0
    rows = await wait_for(
        running_fleet,
        lambda rows: (
            rows[thing]["nucleus"]["restarts"] == 1
            and rows[thing]["backfilledMessages"] > before["backfilledMessages"]
            and (rows[thing]["seq"]["last"] or 0) > spooled_from + 3
        ),
        "the nucleus restarted and the spooled samples delivered as backfill",
        timeout=90,
    )
    after = rows[thing]
    assert after["nucleus"]["running"]
    assert after["nucleus"]["pid"] != before["nucleus"]["pid"]
    assert not alive(before["nucleus"]["pid"])
    assert after["group"] == "production"  # restarted with its group's deployment
    assert not after["offline"]  # a new nucleus starts online
    assert _covered(after["seqRanges"], spooled_from, spooled_from + 2), after["seqRanges"]


def _covered(ranges: list[list[int]], low: int, high: int) -> bool:
    return any(start <= low and high <= end for start, end in ranges)


async def test_a_revoked_device_is_refused_by_the_broker(running_fleet: FleetLayout) -> None:
    thing, other = APPROVED[1], APPROVED[0]
    broker_log = running_fleet.broker / "mosquitto.log"
    log_offset = broker_log.stat().st_size
    assert await fleet_async(running_fleet, "chaos", "revoke", thing) == 0

    def other_sent(count: int) -> Callable[[dict[str, dict[str, Any]]], bool]:
        return lambda rows: rows[other]["telemetryMessages"] >= count

    # Whatever the revoked device had in flight drains while the other one sends three more.
    settled = (await wait_for(running_fleet, other_sent(0), "the state"))[other]["telemetryMessages"] + 3
    before = await wait_for(running_fleet, other_sent(settled), "three messages from the other device")
    after = await wait_for(
        running_fleet,
        other_sent(before[other]["telemetryMessages"] + 3),
        "three more from the other device (the broker is up)",
    )
    assert after[thing]["telemetryMessages"] == before[thing]["telemetryMessages"]
    assert after[thing]["revoked"]
    with broker_log.open("rb") as log:
        log.seek(log_offset)
        assert b"certificate verify failed" in log.read()  # the device keeps trying; the CRL refuses it


def test_every_socket_the_fleet_opens_is_on_loopback_or_unix(running_fleet: FleetLayout) -> None:
    pids = fleet_pids(running_fleet)
    assert len(pids) >= 1 + 1 + 3  # supervisor, broker, three nuclei (and their components)
    found = sockets_of(pids)
    assert any(family == str(socket.AF_INET) for _, family, _, _ in found)  # the TLS links are seen
    for pid, family, local, remote in found:
        if family == str(socket.AF_UNIX):
            continue
        for address in (local, remote):
            if address:
                assert ipaddress.ip_address(address.ip).is_loopback, (pid, family, local, remote)


def test_through_every_drill_the_rejected_device_got_nothing_else(running_fleet: FleetLayout) -> None:
    assert_rejected_got_nothing_else(running_fleet)


def test_status_as_json_from_the_command_line(
    running_fleet: FleetLayout, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert fleet(running_fleet, "status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["phase"] == "running"
    assert status["broker"]["running"]
    assert [row["thing"] for row in status["devices"]] == [*APPROVED, REJECTED]
    approved = status["devices"][0]
    assert approved["components"][TELEMETRY] == "RUNNING"
    assert approved["telemetryAgeSeconds"] is not None


def test_down_stops_every_process_it_started(running_fleet: FleetLayout) -> None:
    pids = fleet_pids(running_fleet)
    assert pids
    assert fleet(running_fleet, "down") == 0
    assert [pid for pid in pids if alive(pid)] == []
    assert fleet_pids(running_fleet) == []
    assert fleet(running_fleet, "down") == 0  # idempotent


async def test_up_again_reuses_the_root_and_down_ends_it_even_without_its_supervisor(
    running_fleet: FleetLayout,
) -> None:
    certificates = {p: p.read_bytes() for p in (running_fleet.pki / "things").rglob("*.pem.crt")}
    registry = (running_fleet.root / "verifier" / "registry.json").read_bytes()
    try:
        assert await fleet_async(running_fleet, "up") == 0  # no --devices: the saved specification
        rows = device_rows(running_fleet)
        assert sorted(rows) == [*APPROVED, REJECTED]
        assert all(row["nucleus"]["running"] for row in rows.values())
        # The verdicts the broker kept bring the approved devices back to production (the revoked one
        # included: revocation refuses its connection, not its verdict); the rejected one stays.
        rows = await wait_for(
            running_fleet,
            lambda rows: all(rows[t]["group"] == "production" for t in APPROVED),
            "the approved devices promoted again",
        )
        assert rows[REJECTED]["group"] == "quarantine"
        for path, data in certificates.items():
            assert path.read_bytes() == data, f"{path} was re-issued"
        if verifier_installed():  # the registry is the verifier's record: kept, not re-created
            assert (running_fleet.root / "verifier" / "registry.json").read_bytes() == registry
        # A supervisor that dies leaves the broker, verifier, nuclei and components: down still finds them.
        pids = fleet_pids(running_fleet)
        supervisor = FleetState.load(running_fleet.state_file).supervisor_pid
        assert supervisor is not None
        assert supervisor in pids
        os.kill(supervisor, signal.SIGKILL)
    finally:
        assert await fleet_async(running_fleet, "down") == 0
    assert fleet_pids(running_fleet) == []
    assert [pid for pid in pids if alive(pid)] == []
