"""One virtual device: a local nucleus in its own process (`gg-virtual nucleus`), bridged to the fleet's
broker with the device's own certificate, so that chaos can kill it like a real device's nucleus.

The nucleus runs in its own session; its console goes to `<root>/logs/<thing>.console.log`. Deployments after
the first go through its control socket, as `gg-virtual deployment create` sends them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from device_agent.devkit import control
from device_agent.devkit.errors import ControlError
from device_agent.devkit.fleet import processes
from device_agent.devkit.fleet.components import BuiltSuite
from device_agent.devkit.fleet.layout import FleetLayout
from device_agent.devkit.fleet.spec import FleetError
from device_agent.devkit.pki import IssuedIdentity
from device_agent.files import ensure_private_dir
from device_agent.install import CACHE_ENV

logger = logging.getLogger(__name__)

_READY_POLL_S = 0.1
_STOP_GRACE_S = 10.0  # the nucleus gives each component its own grace period (5 s) when it stops


@dataclass(frozen=True, kw_only=True, slots=True)
class DeviceLaunch:
    """Everything a device's nucleus is started with, except the deployment."""

    thing: str
    identity: IssuedIdentity
    suite: BuiltSuite
    broker_port: int


class DeviceProcess:
    def __init__(self, layout: FleetLayout, launch: DeviceLaunch) -> None:
        self.layout = layout
        self.launch = launch
        self.thing = launch.thing
        self.root = layout.device_root(launch.thing)
        self._process: subprocess.Popen[bytes] | None = None
        self.stopping = False  # set while the fleet itself stops it: an exit then is no crash

    def __repr__(self) -> str:
        return f"DeviceProcess(thing={self.thing!r}, pid={self.pid})"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def exited(self) -> bool:
        """True when the nucleus exited without the fleet asking it to (the process is reaped here)."""
        return self._process is not None and self._process.poll() is not None and not self.stopping

    def command(self, components: dict[str, str], update_config: dict[str, Any]) -> list[str]:
        launch = self.launch
        command = [
            sys.executable,
            "-m",
            "device_agent.devkit.cli",
            "--root",
            str(self.root),
            "nucleus",
            "--recipe-dir",
            str(launch.suite.recipe_dir),
            "--artifact-dir",
            str(launch.suite.artifact_dir),
            "--thing-name",
            launch.thing,
            # As the suite's deployment templates configure the nucleus: {iot:thingName} in access control.
            "--interpolate-component-configuration",
            "--iot-endpoint",
            f"mqtts://127.0.0.1:{launch.broker_port}",
            "--iot-ca",
            str(launch.identity.ca_cert),
            "--iot-cert",
            str(launch.identity.cert),
            "--iot-key",
            str(launch.identity.key),
        ]
        for name, version in components.items():
            command += ["--merge", f"{name}={version}"]
        if update_config:
            command += ["--update-config", json.dumps(update_config)]
        return command

    async def start(self, components: dict[str, str], update_config: dict[str, Any], timeout: float) -> None:
        """Start the nucleus with its first deployment and wait until that deployment is done."""
        if self.running:
            raise FleetError(f"{self.thing}: the nucleus is already running")
        self.stopping = False
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Install builds each component's environment once for the whole fleet, not once per device: in the
        # cache the caller names (scripts/_venv.sh names one for the whole checkout), else in the fleet root.
        env = dict(os.environ)
        if not env.get(CACHE_ENV):
            env[CACHE_ENV] = str(ensure_private_dir(self.layout.environments))
        (self.root / "control.socket").unlink(missing_ok=True)  # a killed nucleus leaves its socket behind
        console = os.open(
            self.layout.device_console(self.thing),
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
            0o600,
        )
        try:
            self._process = subprocess.Popen(  # noqa: ASYNC220 - fork/exec is quick; no child watcher needed
                self.command(components, update_config),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=console,
                start_new_session=True,
                cwd=self.root,
                env=env,
            )
        finally:
            os.close(console)
        logger.info("fleet.device_started thing=%s pid=%d", self.thing, self._process.pid)
        await self._wait_ready(timeout)

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise FleetError(
                    f"{self.thing}: the nucleus exited; see {self.layout.device_console(self.thing)}"
                )
            try:
                status = await asyncio.to_thread(control.call, self.root, "status")
            except ControlError:
                status = {}
            # Ready once its first deployment is done (the control socket opens before it).
            deployments = status.get("deployments") or []
            if deployments and deployments[-1].get("status") == "SUCCEEDED":
                return
            if deployments:
                raise FleetError(
                    f"{self.thing}: the first deployment failed: {deployments[-1].get('reason')}"
                )
            await asyncio.sleep(_READY_POLL_S)
        raise FleetError(f"{self.thing}: the nucleus did not answer within {timeout:.0f}s")

    async def call(self, command: str, **arguments: Any) -> Any:
        return await asyncio.to_thread(control.call, self.root, command, **arguments)

    async def deploy(
        self, components: dict[str, str], update_config: dict[str, Any], remove: list[str]
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "deployment.create", merge=components, remove=remove, updateConfig=update_config
        )
        if result.get("status") != "SUCCEEDED":
            raise FleetError(f"{self.thing}: deployment failed: {result.get('reason')}")
        return result

    async def stop(self) -> None:
        """SIGTERM the nucleus (it stops its components), SIGKILL after the grace; then end any orphan."""
        self.stopping = True
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + _STOP_GRACE_S
            while process.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110 - a Popen
                await asyncio.sleep(_READY_POLL_S)
            if process.poll() is None:
                process.kill()
                await asyncio.to_thread(process.wait)
        await self.end_orphans()

    def kill(self) -> None:
        """SIGKILL the nucleus alone, as a crash would (the supervisor notices and restarts it)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            logger.info("fleet.device_killed thing=%s pid=%d", self.thing, self._process.pid)

    async def end_orphans(self) -> None:
        """End the components a dead nucleus left running (they hold its spool's store open)."""
        orphans = await asyncio.to_thread(processes.components_of, self.root)
        if orphans:
            logger.info("fleet.device_orphans thing=%s count=%d", self.thing, len(orphans))
            survivors = await asyncio.to_thread(processes.terminate, orphans, 5.0)
            if survivors:
                raise FleetError(f"{self.thing}: component processes {survivors} survived SIGKILL")
