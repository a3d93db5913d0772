"""The supervisor's promotions against a fake device: a deployment that fails (the nucleus down, restarting
or refusing) is retried with backoff and never ends the fleet; a verdict that arrives while a nucleus is down
is applied once it runs again. The whole-fleet tests (test_fleet.py) show the same with real nuclei."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from device_agent import retry
from device_agent.devkit.errors import ControlError
from device_agent.devkit.fleet import supervisor as supervisor_module
from device_agent.devkit.fleet.components import (
    PRODUCTION_GROUP,
    QUARANTINE_GROUP,
    BuiltSuite,
    ComponentSets,
)
from device_agent.devkit.fleet.device import DeviceLaunch, DeviceProcess
from device_agent.devkit.fleet.layout import FleetLayout
from device_agent.devkit.fleet.spec import FleetSpec
from device_agent.devkit.fleet.supervisor import Supervisor
from device_agent.devkit.pki import IssuedIdentity

QUARANTINE = {"com.deviceagent.BootstrapReporter": "0.1.0", "com.deviceagent.EncryptedStore": "0.1.0"}
PRODUCTION = {
    **QUARANTINE,
    "com.deviceagent.TelemetryPublisher": "0.1.0",
    "com.deviceagent.HealthMonitor": "0.1.0",
}
APPROVED = {"verdict": "approved", "group": PRODUCTION_GROUP}


class FakeDevice(DeviceProcess):
    """A nucleus that is only state: it runs or not, and its deployments fail while `refusals` lasts."""

    def __init__(self, layout: FleetLayout, thing: str) -> None:
        cert = layout.root / "cert.pem"
        identity = IssuedIdentity(name=thing, cert=cert, key=cert, ca_cert=cert)
        suite = BuiltSuite(layout.build / "recipes", layout.build / "artifacts")
        super().__init__(layout, DeviceLaunch(thing=thing, identity=identity, suite=suite, broker_port=1))
        self.up = True
        self.dead = False
        self.refusals = 0
        self.failed_starts = 0
        self.deployments: list[tuple[list[str], list[str]]] = []
        self.starts: list[list[str]] = []

    @property
    def running(self) -> bool:
        return self.up

    def exited(self) -> bool:
        return self.dead

    def kill(self) -> None:
        self.up, self.dead = False, True

    async def start(self, components: dict[str, str], update_config: dict[str, Any], timeout: float) -> None:
        del update_config, timeout
        if self.failed_starts:
            self.failed_starts -= 1
            raise ControlError("no virtual device is running (no control socket)")
        self.starts.append(sorted(components))
        self.up, self.dead = True, False

    async def stop(self) -> None:
        self.up = False

    async def end_orphans(self) -> None:
        pass

    async def deploy(
        self, components: dict[str, str], update_config: dict[str, Any], remove: list[str]
    ) -> dict[str, Any]:
        del update_config
        if not self.up:
            raise ControlError("cannot reach the virtual device: connection refused")
        if self.refusals:
            self.refusals -= 1
            raise ControlError("the virtual device closed the control connection")
        self.deployments.append((sorted(components), sorted(remove)))
        return {"status": "SUCCEEDED"}


class _ScenarioDoneError(Exception):
    pass


async def run_devices(supervisor: Supervisor, scenario: Callable[[], Awaitable[None]]) -> None:
    """Run the devices' background work during `scenario`; anything else that ends it fails the test."""
    try:
        async with asyncio.TaskGroup() as tasks:
            supervisor.watch_devices(tasks)
            await scenario()
            raise _ScenarioDoneError
    except* _ScenarioDoneError:
        pass


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    retry.set_testing(True)  # backoff waits become a bare checkpoint (the autouse fixture resets this)
    monkeypatch.setattr(supervisor_module, "STATE_INTERVAL_S", 0.01)


def supervisor_with(tmp_path: Path, *things: str) -> tuple[Supervisor, dict[str, FakeDevice]]:
    layout = FleetLayout.at(tmp_path / "fleet")
    layout.root.mkdir()
    supervisor = Supervisor(layout, FleetSpec(devices=len(things)))
    supervisor._sets = ComponentSets(quarantine=QUARANTINE, production=PRODUCTION)
    devices = {thing: FakeDevice(layout, thing) for thing in things}
    for thing, device in devices.items():
        supervisor.add_device(thing, device)
        supervisor.state.devices[thing].components = sorted(QUARANTINE)
    return supervisor, devices


async def until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.mark.usefixtures("fast")
async def test_a_failing_promotion_is_retried_and_never_ends_the_fleet(tmp_path: Path) -> None:
    supervisor, devices = supervisor_with(tmp_path, "vdev-001", "vdev-002")
    failing, healthy = devices["vdev-001"], devices["vdev-002"]
    failing.refusals = 3
    record = supervisor.state.devices["vdev-001"]

    async def scenario() -> None:
        for thing in devices:
            supervisor._on_verdict(thing, APPROVED)  # what the observer calls on a verdict
        await until(lambda: record.group == PRODUCTION_GROUP, "the retried promotion")
        await until(lambda: supervisor.state.devices["vdev-002"].group == PRODUCTION_GROUP, "the other one")

    await run_devices(supervisor, scenario)
    assert record.group_change_failures == 3
    assert record.last_error == "the virtual device closed the control connection"
    assert failing.deployments == [(sorted(PRODUCTION), [])]
    assert healthy.deployments == [(sorted(PRODUCTION), [])]
    assert sorted(record.components) == sorted(PRODUCTION)
    assert record.promoted_at is not None


@pytest.mark.usefixtures("fast")
async def test_a_verdict_while_the_nucleus_is_down_is_applied_once_it_runs_again(tmp_path: Path) -> None:
    supervisor, devices = supervisor_with(tmp_path, "vdev-001")
    device = devices["vdev-001"]
    device.failed_starts = 2  # the first two restarts fail as well
    record = supervisor.state.devices["vdev-001"]

    async def scenario() -> None:
        device.kill()
        supervisor._on_verdict("vdev-001", APPROVED)
        await until(lambda: record.group == PRODUCTION_GROUP, "the promotion after the restart")

    await run_devices(supervisor, scenario)
    assert record.restarts == 1
    # Restarted with the group it ran (as a nucleus resumes its last deployment), then moved to production.
    assert device.starts == [sorted(QUARANTINE)]
    assert device.deployments == [(sorted(PRODUCTION), [])]
    assert record.wanted_group == record.group == PRODUCTION_GROUP


@pytest.mark.usefixtures("fast")
async def test_a_demotion_removes_what_production_added_and_a_repeated_verdict_deploys_nothing(
    tmp_path: Path,
) -> None:
    supervisor, devices = supervisor_with(tmp_path, "vdev-001")
    device = devices["vdev-001"]
    record = supervisor.state.devices["vdev-001"]

    async def scenario() -> None:
        supervisor._on_verdict("vdev-001", APPROVED)
        await until(lambda: record.group == PRODUCTION_GROUP, "the promotion")
        supervisor._on_verdict("vdev-001", APPROVED)  # the same again: nothing to deploy
        supervisor._on_verdict("vdev-001", {"verdict": "rejected", "group": QUARANTINE_GROUP})
        await until(lambda: record.group == QUARANTINE_GROUP, "the demotion")

    await run_devices(supervisor, scenario)
    removed = sorted(set(PRODUCTION) - set(QUARANTINE))
    assert device.deployments == [(sorted(PRODUCTION), []), (sorted(QUARANTINE), removed)]
    assert record.promoted_at is None
