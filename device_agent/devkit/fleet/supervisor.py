"""The fleet's supervisor: one long-running process that owns the broker, the observer, the verifier and the
devices' nucleus processes, started detached by `fleet up` and stopped by `fleet down`.

    python -m device_agent.devkit.fleet.supervisor ROOT

It keeps `<root>/state.json` current (pids, port, groups, observations), restarts a nucleus that dies
without being asked to (after ending the components it left behind), applies the production deployment when
a verdict approves a device (and the quarantine one when a verdict demotes it), and serves chaos commands on
`<root>/fleet.socket`. SIGTERM or the `stop` command stops everything it started, devices first.

Group changes are desired state, as in Greengrass: a verdict sets the group a device should be in, and a
keeper task per device deploys that group's set whenever it differs from what the device runs: after the
verdict, and after every (re)start of the device's nucleus. A deployment that fails (the nucleus is down,
restarting, or refuses it) is retried with capped, jittered backoff; one device's failure never ends the
fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from device_agent import retry
from device_agent.devkit.errors import DevkitError
from device_agent.devkit.fleet import components as parts
from device_agent.devkit.fleet.broker import fleet_broker
from device_agent.devkit.fleet.components import (
    PRODUCTION_GROUP,
    QUARANTINE_GROUP,
    BuiltSuite,
    ComponentSets,
    build_suite,
    component_sets,
)
from device_agent.devkit.fleet.control import FleetControlServer
from device_agent.devkit.fleet.device import DeviceLaunch, DeviceProcess
from device_agent.devkit.fleet.identity import FleetIdentities, ensure_identities
from device_agent.devkit.fleet.layout import OBSERVER, FleetLayout
from device_agent.devkit.fleet.mqtt import FleetMqttClient
from device_agent.devkit.fleet.observer import SUBSCRIPTIONS, Observer
from device_agent.devkit.fleet.processes import terminate
from device_agent.devkit.fleet.spec import FleetError, FleetSpec
from device_agent.devkit.fleet.state import DeviceRecord, FleetState
from device_agent.devkit.fleet.verifier import prepare, start_verifier, verifier_installed
from device_agent.devkit.mosquitto import MosquittoBroker
from device_agent.files import ensure_private_dir
from device_agent.retry import Backoff

logger = logging.getLogger(__name__)

STATE_INTERVAL_S = 1.0
DEVICE_START_TIMEOUT_S = 120.0
CONCURRENT_STARTS = 4  # nucleus start-ups at once: each imports, builds a venv or not, and deploys
OBSERVER_SESSION_S = 24 * 3600
RESTART_BACKOFF = Backoff(initial=1.0, maximum=60.0)
GROUP_BACKOFF = Backoff(initial=0.5, maximum=30.0)
# What a device's control socket can fail with: ControlError and FleetError (both DevkitError), a socket
# error, or a reply that is not JSON.
DEVICE_FAILURES = (DevkitError, OSError, ValueError)


class Supervisor:
    def __init__(self, layout: FleetLayout, spec: FleetSpec) -> None:
        self.layout = layout
        self.spec = spec
        self.state = FleetState(supervisor_pid=os.getpid(), started_at=time.time())
        self.devices: dict[str, DeviceProcess] = {}
        self.observer = Observer(on_verdict=self._on_verdict)
        self._stop = asyncio.Event()
        # Wakes a device's keeper: its wanted group changed, or its nucleus (re)started.
        self._group_changed: dict[str, asyncio.Event] = {}
        # Held while a device's nucleus starts or deploys: a deployment never races a restart.
        self._device_locks: dict[str, asyncio.Lock] = {}
        self._identities: FleetIdentities | None = None
        self._broker: MosquittoBroker | None = None
        self._sets: ComponentSets | None = None
        self._verifier: subprocess.Popen[bytes] | None = None
        self._mqtt: FleetMqttClient | None = None
        self._restarting: set[str] = set()

    # -- the whole run ------------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        control = FleetControlServer(self.layout.control_socket, self._commands())
        self._save()  # at once: `fleet up` learns our pid from it
        try:
            await self._start_all(control)
            self.state.phase = "running"
            self._save()
            logger.info("fleet.running devices=%d", len(self.devices))
            async with asyncio.TaskGroup() as tasks:
                self.watch_devices(tasks)
                await self._stop.wait()
                raise _Stopping
        except* _Stopping:
            pass
        except* Exception as group:
            self.state.phase = "failed"
            self.state.error = "; ".join(str(e) for e in group.exceptions)[:2000]
            logger.exception("fleet.failed")
        finally:
            if self.state.phase != "failed":
                self.state.phase = "stopping"
            self._save()
            await self._stop_all(control)
        return 1 if self.state.phase == "failed" else 0

    async def _start_all(self, control: FleetControlServer) -> None:
        layout, spec = self.layout, self.spec
        problem = layout.socket_path_problem(spec.things)
        if problem:
            raise FleetError(problem)
        self._identities = identities = await asyncio.to_thread(
            ensure_identities, layout, spec.things, spec.rejected
        )
        suite: BuiltSuite = await asyncio.to_thread(build_suite, layout)
        self._sets = component_sets(suite)
        self._broker = broker = fleet_broker(layout, identities, log_deliveries=spec.log_deliveries)
        await broker.start()
        self.state.broker_pid, self.state.broker_port = broker.pid, broker.port
        self._save()
        await control.start()
        # Before the observer subscribes: a verdict the broker kept (retained) from an earlier run arrives at
        # once, and must find its device (then it is applied once the devices run).
        for thing in spec.things:
            launch = DeviceLaunch(
                thing=thing, identity=identities.presented(thing), suite=suite, broker_port=broker.port
            )
            self.add_device(thing, DeviceProcess(layout, launch))
        self._mqtt = FleetMqttClient(
            broker.port,
            identities.observer,
            client_id=OBSERVER,
            session_expiry_s=OBSERVER_SESSION_S,
            on_message=self.observer,
        )
        await self._mqtt.start()
        for topic_filter in SUBSCRIPTIONS:
            code = await self._mqtt.subscribe(topic_filter)
            if FleetMqttClient.refused(code):
                raise FleetError(
                    f"the broker refused the observer's subscription to {topic_filter} ({code:#x})"
                )
        if verifier_installed():
            files = await asyncio.to_thread(prepare, layout, identities)
            self._verifier = start_verifier(files, identities, broker.port)
            self.state.verifier_pid = self._verifier.pid
        else:
            logger.warning(
                "fleet.no_verifier: device_agent_cloud is not installed; no device is verified, every one "
                "stays in quarantine unless a verdict reaches the broker"
            )
        gate = asyncio.Semaphore(CONCURRENT_STARTS)

        async def start(thing: str) -> None:
            async with gate:
                await self._start_device(thing)

        async with asyncio.TaskGroup() as tasks:
            for thing in spec.things:
                tasks.create_task(start(thing))

    def add_device(self, thing: str, device: DeviceProcess) -> None:
        self.state.devices[thing] = DeviceRecord(expect_rejection=thing in self.spec.rejected)
        self.devices[thing] = device
        self._group_changed[thing] = asyncio.Event()
        self._device_locks[thing] = asyncio.Lock()

    async def _start_device(self, thing: str) -> None:
        record = self.state.devices[thing]
        assert self._sets is not None  # noqa: S101 - set in _start_all before any device starts
        wanted = self._sets.for_group(record.group)
        await self.devices[thing].start(
            wanted, self._configuration(thing, record.group), DEVICE_START_TIMEOUT_S
        )
        record.pid, record.components, record.offline = self.devices[thing].pid, list(wanted), False
        self._save()
        self._group_changed[thing].set()  # a verdict that came while it was down is applied now

    def _configuration(self, thing: str, group: str) -> dict[str, Any]:
        return parts.configuration(self.spec, group, self.devices[thing].launch.identity.cert)

    async def _stop_all(self, control: FleetControlServer) -> None:
        await control.close()
        async with asyncio.TaskGroup() as tasks:
            for device in self.devices.values():
                tasks.create_task(device.stop())
        for record in self.state.devices.values():
            record.pid = None
        if self._mqtt is not None:
            await self._mqtt.stop()
        if self._verifier is not None:
            await asyncio.to_thread(terminate, [self._verifier.pid])
            await asyncio.to_thread(self._verifier.wait)
            self.state.verifier_pid = None
        if self._broker is not None:
            await self._broker.stop()
        self.state.broker_pid = None
        self.state.phase = "stopped" if self.state.phase != "failed" else "failed"
        self._save()
        logger.info("fleet.stopped")

    # -- background work ----------------------------------------------------------------------------------

    def watch_devices(self, tasks: asyncio.TaskGroup) -> None:
        """The devices' background work, in `tasks`: the watcher that restarts a dead nucleus, and the
        keeper of each device's group."""
        tasks.create_task(self._watch_devices(tasks))
        for thing in self.devices:
            tasks.create_task(self._keep_group(thing))

    async def _watch_devices(self, tasks: asyncio.TaskGroup) -> None:
        """Restart a nucleus that died on its own (each in a task of its own); save the state every second."""
        while True:
            for thing, device in self.devices.items():
                if thing not in self._restarting and device.exited():
                    self._restarting.add(thing)
                    tasks.create_task(self._restart_crashed(thing, device))
            self._save()
            await asyncio.sleep(STATE_INTERVAL_S)

    async def _restart_crashed(self, thing: str, device: DeviceProcess) -> None:
        """End what the dead nucleus left, start it again; retry with capped, jittered backoff."""
        record = self.state.devices[thing]
        logger.warning("fleet.device_died thing=%s; restarting it", thing)
        record.restarts += 1
        delays = RESTART_BACKOFF.delays()
        try:
            while True:
                try:
                    async with self._device_locks[thing]:
                        await device.end_orphans()
                        await self._start_device(thing)
                except DEVICE_FAILURES as exc:
                    record.last_error = str(exc)
                    logger.warning("fleet.device_restart_failed thing=%s error=%s", thing, exc)
                    with contextlib.suppress(*DEVICE_FAILURES):
                        await device.stop()  # a half-started nucleus, if any
                    await retry.sleep(next(delays))
                else:
                    return
        finally:
            self._restarting.discard(thing)

    def _on_verdict(self, thing: str, verdict: dict[str, Any]) -> None:
        record = self.state.devices.get(thing)
        if record is None:
            return
        group = verdict.get("group")
        if group not in {QUARANTINE_GROUP, PRODUCTION_GROUP}:
            group = PRODUCTION_GROUP if verdict.get("verdict") == "approved" else None
        if group is not None:
            record.wanted_group = group
            self._group_changed[thing].set()

    def _deployable(self, thing: str) -> bool:
        return thing not in self._restarting and self.devices[thing].running

    async def _keep_group(self, thing: str) -> None:
        """Deploy the set of the group the device should be in whenever it runs another, as Greengrass does
        after a thing-group move; a failure is retried with capped, jittered backoff until it succeeds, the
        wanted group changes back, or the nucleus goes down (its restart wakes this task again)."""
        record, changed = self.state.devices[thing], self._group_changed[thing]
        while True:
            await changed.wait()
            changed.clear()
            delays = GROUP_BACKOFF.delays()
            while (group := record.wanted_group) != record.group:
                try:
                    async with self._device_locks[thing]:
                        if not self._deployable(thing):
                            break  # its restart (the watcher's) wakes this task once it runs again
                        await self._move(thing, group)
                except DEVICE_FAILURES as exc:
                    record.last_error = str(exc)
                    record.group_change_failures += 1
                    logger.warning("fleet.group_change_failed thing=%s group=%s error=%s", thing, group, exc)
                    self._save()
                    await retry.sleep(next(delays))

    async def _move(self, thing: str, group: str) -> None:
        assert self._sets is not None  # noqa: S101 - set before the devices start
        record, device = self.state.devices[thing], self.devices[thing]
        wanted = self._sets.for_group(group)
        removed = [name for name in record.components if name not in wanted]
        await device.deploy(wanted, self._configuration(thing, group), removed)
        record.group, record.components = group, list(wanted)
        record.promoted_at = time.time() if group == PRODUCTION_GROUP else None
        logger.info("fleet.group_changed thing=%s group=%s", thing, group)
        self._save()

    # -- chaos and control --------------------------------------------------------------------------------

    def _commands(self) -> dict[str, Any]:
        return {
            "ping": self._ping,
            "stop": self._stop_command,
            "chaos.restart-broker": self._restart_broker,
            "chaos.offline": self._offline,
            "chaos.online": self._online,
            "chaos.kill-nucleus": self._kill_nucleus,
            "chaos.revoke": self._revoke,
        }

    def _device(self, request: dict[str, Any]) -> tuple[str, DeviceProcess]:
        thing = str(request.get("thing"))
        device = self.devices.get(thing)
        if device is None:
            raise FleetError(f"no device {thing!r} in this fleet")
        return thing, device

    async def _ping(self, _request: dict[str, Any]) -> str:
        return self.state.phase

    async def _stop_command(self, _request: dict[str, Any]) -> str:
        self._stop.set()
        return "stopping"

    async def _restart_broker(self, _request: dict[str, Any]) -> dict[str, Any]:
        assert self._broker is not None  # noqa: S101 - the control socket opens after the broker starts
        await self._broker.restart()
        self.state.broker_pid = self._broker.pid
        self._save()
        return {"pid": self._broker.pid, "port": self._broker.port}

    async def _offline(self, request: dict[str, Any]) -> str:
        thing, device = self._device(request)
        await device.call("iot.offline")
        self.state.devices[thing].offline = True
        self._save()
        return f"{thing} offline"

    async def _online(self, request: dict[str, Any]) -> str:
        thing, device = self._device(request)
        await device.call("iot.online")
        self.state.devices[thing].offline = False
        self._save()
        return f"{thing} online"

    async def _kill_nucleus(self, request: dict[str, Any]) -> dict[str, Any]:
        thing, device = self._device(request)
        killed = device.pid
        device.kill()  # the watcher sees the exit, ends the orphans and starts it again
        return {"thing": thing, "killed": killed}

    async def _revoke(self, request: dict[str, Any]) -> str:
        thing, _device = self._device(request)
        assert self._identities is not None  # noqa: S101
        assert self._broker is not None  # noqa: S101
        self._identities.ca.revoke(self._identities.presented(thing).cert)  # what it connects with
        await self._broker.restart()  # mosquitto reads the CRL when its listener starts
        self.state.broker_pid = self._broker.pid
        self.state.devices[thing].revoked = True
        self._save()
        return f"{thing} revoked; broker restarted with the new CRL"

    def _save(self) -> None:
        self.state.updated_at = time.time()
        self.state.observed = {thing: seen.as_json() for thing, seen in self.observer.things.items()}
        self.state.save(self.layout.state_file)


class _Stopping(Exception):  # noqa: N818 - a signal between tasks, not an error
    pass


def _detach() -> None:
    """Fork once and let the parent exit: the supervisor is nobody's child, so no caller has to reap it,
    and it outlives the shell that ran `fleet up` (in a session of its own)."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m device_agent.devkit.fleet.supervisor ROOT\n")
        return 2
    layout = FleetLayout.at(Path(args[0]))
    ensure_private_dir(layout.logs)
    os.close(os.open(layout.supervisor_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.FileHandler(layout.supervisor_log, encoding="utf-8")],
    )
    spec = FleetSpec.load(layout.spec_file)
    _detach()
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(Supervisor(layout, spec).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
