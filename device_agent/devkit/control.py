"""The control socket of a running virtual device, for `gg-virtual component|deployment|iot ...`.

A second Unix socket beside the IPC socket (`<root>/control.socket`, owner-only), speaking one JSON object
per line each way: `{"command": "component.list", ...}` → `{"ok": true, "result": ...}` or
`{"ok": false, "error": "..."}`. It plays the part of the Greengrass CLI's own channel to the nucleus; it is
never exposed to components (they have no token for it, and it is not the IPC protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from device_agent.devkit.deployment import DeploymentRequest
from device_agent.devkit.errors import ControlError, DevkitError
from device_agent.devkit.iot_bridge import IotMessage
from device_agent.devkit.services.iotcore import LoopbackLink

if TYPE_CHECKING:
    from device_agent.devkit.nucleus import Nucleus

logger = logging.getLogger(__name__)

MAX_LINE = 1024 * 1024


class ControlServer:
    def __init__(self, nucleus: Nucleus) -> None:
        self._nucleus = nucleus
        self._server: asyncio.Server | None = None
        self.path = nucleus.root / "control.socket"
        self._commands: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "status": self._status,
            "component.list": self._status,
            "component.restart": self._restart,
            "component.stop": self._stop,
            "deployment.create": self._deploy,
            "iot.publish": self._iot_publish,
            "iot.offline": self._offline,
            "iot.online": self._online,
        }

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_LINE)
        self.path.chmod(0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                reply = await self._answer(line)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            command = self._commands.get(request.get("command", "")) if isinstance(request, dict) else None
            if command is None:
                return {"ok": False, "error": f"unknown command; known: {sorted(self._commands)}"}
            return {"ok": True, "result": await command(request)}
        except (DevkitError, ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": str(exc)}

    async def _status(self, _request: dict[str, Any]) -> dict[str, Any]:
        nucleus = self._nucleus
        return {
            "thingName": nucleus.thing_name,
            "online": nucleus.iot.online,
            "spooled": nucleus.iot.spooled,
            "published": len(nucleus.iot.published),
            "components": [
                {"name": info.name, "version": info.version, "state": info.state}
                for info in nucleus.component_infos()
            ],
            "deployments": [result.as_json() for result in nucleus.deployer.history[-10:]],
        }

    async def _restart(self, request: dict[str, Any]) -> str:
        await self._nucleus.restart_component(str(request["name"]))
        return "restart requested"

    async def _stop(self, request: dict[str, Any]) -> str:
        await self._nucleus.stop_component(str(request["name"]))
        return "stop requested"

    async def _deploy(self, request: dict[str, Any]) -> dict[str, str]:
        deployment = DeploymentRequest(
            recipe_dir=Path(request["recipeDir"]) if request.get("recipeDir") else None,
            artifact_dir=Path(request["artifactDir"]) if request.get("artifactDir") else None,
            merge=dict(request.get("merge") or {}),
            remove=list(request.get("remove") or []),
            update_config=dict(request.get("updateConfig") or {}),
        )
        return (await self._nucleus.deploy(deployment)).as_json()

    async def _iot_publish(self, request: dict[str, Any]) -> str:
        link = self._nucleus.link
        if not isinstance(link, LoopbackLink):
            raise ControlError(
                "iot publish injects into the loopback; with a broker, publish to the broker itself"
            )
        payload = request.get("payload", "")
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        link.inject(IotMessage(topic=str(request["topic"]), payload=data, qos=int(request.get("qos", 1))))
        return "delivered"

    async def _offline(self, _request: dict[str, Any]) -> str:
        await self._nucleus.set_offline(True)
        return "offline"

    async def _online(self, _request: dict[str, Any]) -> str:
        await self._nucleus.set_offline(False)
        return "online"


def call(root: Path, command: str, **arguments: Any) -> Any:
    """Send one command to the virtual device running on `root`; return its result or raise ControlError."""
    import socket  # noqa: PLC0415 - the CLI path only

    path = root / "control.socket"
    if not path.exists():
        raise ControlError(f"no virtual device is running on {root} (no control socket)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(600)
        try:
            sock.connect(str(path))
        except OSError as exc:
            raise ControlError(f"cannot reach the virtual device on {root}: {exc}") from exc
        sock.sendall(json.dumps({"command": command, **arguments}).encode() + b"\n")
        with sock.makefile("rb") as stream:
            line = stream.readline(MAX_LINE)
    if not line:
        raise ControlError("the virtual device closed the control connection")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error")))
    return reply.get("result")
