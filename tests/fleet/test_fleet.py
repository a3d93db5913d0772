"""The whole loop on one machine: `gg-virtual fleet up` with three devices on a real broker, verdicts on the
broker, promotion, telemetry and health arriving, and the fault drills; then `fleet down` leaves nothing.

One fleet serves the module (starting one costs seconds per device); the tests run in file order and each
leaves the fleet as the next expects. The verdicts come from a stand-in that publishes with the verifier's
certificate when the verifier service is not installed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_agent.devkit.fleet.cli import fleet_pids
from device_agent.devkit.fleet.components import HEALTH, REPORTER, STORE, TELEMETRY
from device_agent.devkit.fleet.layout import FleetLayout
from device_agent.devkit.fleet.processes import alive
from device_agent.devkit.fleet.state import FleetState
from device_agent.devkit.fleet.verifier import verifier_installed
from tests.fleet.fleet_support import (
    device_rows,
    first_deployment,
    fleet,
    fleet_async,
    publish_verdict,
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
    if not verifier_installed():  # a stand-in decides as the verifier would, with its certificate
        port = _port(running_fleet)
        for thing in APPROVED:
            await publish_verdict(running_fleet, port, thing, "approved", "production")
        await publish_verdict(running_fleet, port, REJECTED, "rejected", "quarantine")
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


async def test_a_rejected_device_stays_in_quarantine_and_gets_nothing_else(
    running_fleet: FleetLayout,
) -> None:
    rows = await wait_for(running_fleet, lambda rows: rows[REJECTED]["verdict"] is not None, "the verdict")
    rows = device_rows(running_fleet, components=True)
    rejected = rows[REJECTED]
    assert rejected["verdict"] == "rejected"
    assert rejected["group"] == "quarantine"
    assert set(rejected["components"]) <= set(QUARANTINE)
    assert rejected["telemetryMessages"] == 0
    assert rejected["health"] is None
    assert not (running_fleet.device_root(REJECTED) / "work" / TELEMETRY).exists()


async def test_after_a_broker_restart_every_device_reconnects_and_no_sample_is_lost(
    running_fleet: FleetLayout,
) -> None:
    before = {t: row["seq"]["last"] for t, row in device_rows(running_fleet).items() if t in APPROVED}
    assert await fleet_async(running_fleet, "chaos", "restart-broker") == 0
    rows = await wait_for(
        running_fleet,
        lambda rows: all(rows[t]["seq"]["last"] >= before[t] + 5 for t in APPROVED),
        "five new samples from every approved device after the restart",
        timeout=60,
    )
    for thing in APPROVED:
        assert rows[thing]["seq"]["missing"] == 0, rows[thing]


async def test_a_killed_nucleus_is_restarted_and_resumes_from_its_spool(running_fleet: FleetLayout) -> None:
    thing = APPROVED[0]
    assert await fleet_async(running_fleet, "chaos", "offline", thing) == 0
    last_online = device_rows(running_fleet)[thing]["seq"]["last"]
    backfilled = device_rows(running_fleet)[thing].get("backfilledMessages", 0)
    # Samples taken while offline go to the spool; then the nucleus dies (and its components with it).
    await wait_for(running_fleet, lambda _rows: True, "a moment offline", timeout=1)
    old_pid = device_rows(running_fleet)[thing]["nucleus"]["pid"]
    import asyncio  # noqa: PLC0415

    await asyncio.sleep(4)  # four samples at one a second go to the spool while the device is offline
    assert await fleet_async(running_fleet, "chaos", "kill-nucleus", thing) == 0
    rows = await wait_for(
        running_fleet,
        lambda rows: (
            rows[thing]["nucleus"]["restarts"] == 1
            and rows[thing]["nucleus"]["running"]
            and (rows[thing]["seq"]["last"] or 0) >= last_online + 6
        ),
        "the nucleus restarted and the spooled samples delivered",
        timeout=90,
    )
    assert rows[thing]["nucleus"]["pid"] != old_pid
    assert not alive(old_pid)
    assert rows[thing]["group"] == "production"
    del backfilled


async def test_a_revoked_device_is_refused_by_the_broker(running_fleet: FleetLayout) -> None:
    thing, other = APPROVED[1], APPROVED[0]
    assert await fleet_async(running_fleet, "chaos", "revoke", thing) == 0
    import asyncio  # noqa: PLC0415

    await asyncio.sleep(2)
    before = device_rows(running_fleet)
    await asyncio.sleep(4)
    after = device_rows(running_fleet)
    assert after[thing]["telemetryMessages"] == before[thing]["telemetryMessages"]
    assert after[other]["telemetryMessages"] > before[other]["telemetryMessages"]  # the broker is up
    assert after[thing]["revoked"]


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


def test_down_stops_every_process_it_started(running_fleet: FleetLayout) -> None:
    pids = fleet_pids(running_fleet)
    assert pids
    assert fleet(running_fleet, "down") == 0
    assert [pid for pid in pids if alive(pid)] == []
    assert fleet_pids(running_fleet) == []
    assert fleet(running_fleet, "down") == 0  # idempotent
