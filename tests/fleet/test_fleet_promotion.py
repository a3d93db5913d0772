"""A promotion that comes while the device's nucleus is down, on a fleet of its own (`gg-virtual fleet`): the
verdict is kept as the device's wanted group, the failing restarts are retried, and once the nucleus runs
again the production deployment is applied; the fleet never stops.

The order is made, not hoped for: the verifier process is paused (SIGSTOP) so that the device's report waits
at the broker; the nucleus is killed while the suite's built recipes are moved away, so that its restarts
fail; then the verifier resumes and its verdict arrives with no nucleus to deploy to.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_agent.devkit.fleet.layout import FleetLayout
from device_agent.devkit.fleet.state import FleetState
from device_agent.devkit.fleet.verifier import verifier_installed
from tests.fleet.fleet_support import device_rows, fleet, fleet_async, wait_for

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]

THING = "vdev-001"


@pytest.fixture
def one_device_fleet() -> Iterator[FleetLayout]:
    assert verifier_installed(), "the verifier (device_agent_cloud) must be installed: `pip install -e .`"
    base = Path(tempfile.mkdtemp(prefix="fl-"))  # short: the devices' socket paths stay under 108 bytes
    layout = FleetLayout.at(base / "fleet")
    try:
        # The reporter waits 5 s before its first report: time to pause the verifier first.
        code = fleet(layout, "up", "--devices", "1", "--telemetry-interval", "1", "--report-settle", "5")
        assert code == 0
        yield layout
    finally:
        fleet(layout, "down")
        shutil.rmtree(base, ignore_errors=True)


async def test_a_verdict_while_the_nucleus_is_down_is_applied_once_it_runs_again(
    one_device_fleet: FleetLayout,
) -> None:
    layout = one_device_fleet
    verifier = FleetState.load(layout.state_file).verifier_pid
    assert verifier is not None
    recipes = layout.build / "recipes"
    away = layout.build / "recipes.away"
    os.kill(verifier, signal.SIGSTOP)
    try:
        await wait_for(layout, lambda rows: rows[THING]["reports"] >= 1, "the device's report at the broker")
        assert device_rows(layout)[THING]["verdict"] is None  # the verifier has not read it
        recipes.rename(away)  # the nucleus cannot start again until they are back
        assert await fleet_async(layout, "chaos", "kill-nucleus", THING) == 0
        supervisor_log = layout.supervisor_log
        await wait_for(
            layout,
            lambda _rows: "fleet.device_restart_failed thing=vdev-001" in supervisor_log.read_text(),
            "a failed restart",
        )
    finally:
        os.kill(verifier, signal.SIGCONT)
    rows = await wait_for(layout, lambda rows: rows[THING]["verdict"] == "approved", "the verdict")
    down = rows[THING]
    assert not down["nucleus"]["running"]
    assert (down["group"], down["wantedGroup"]) == ("quarantine", "production")  # kept, not dropped
    away.rename(recipes)  # the next restart succeeds
    rows = await wait_for(
        layout,
        lambda rows: rows[THING]["group"] == "production" and rows[THING]["telemetryMessages"] >= 2,
        "the restarted nucleus promoted and its telemetry at the broker",
        timeout=120,
        components=True,
    )
    after = rows[THING]
    assert after["nucleus"]["running"]
    assert after["nucleus"]["restarts"] == 1
    assert {"com.deviceagent.TelemetryPublisher", "com.deviceagent.HealthMonitor"} <= set(after["components"])
    state = FleetState.load(layout.state_file)
    assert state.phase == "running"  # one device's failures did not stop the fleet
