"""The supervisor's control socket, `<root>/fleet.socket` (owner-only): one JSON object per line each way,
`{"command": "chaos.revoke", "thing": "vdev-002"}` → `{"ok": true, "result": ...}` or `{"ok": false,
"error": "..."}`, as the device's own control socket speaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from device_agent.devkit.errors import DevkitError
from device_agent.devkit.fleet.spec import FleetError

logger = logging.getLogger(__name__)

MAX_LINE = 64 * 1024
Command = Callable[[dict[str, Any]], Awaitable[Any]]


class FleetControlServer:
    def __init__(self, path: Path, commands: Mapping[str, Command]) -> None:
        self.path = path
        self._commands = dict(commands)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_LINE)
        self.path.chmod(0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(json.dumps(await self._answer(line)).encode() + b"\n")
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
            logger.warning("fleet.control_failed error=%s", exc)
            return {"ok": False, "error": str(exc)}


def fleet_call(path: Path, command: str, *, timeout: float = 120.0, **arguments: Any) -> Any:
    """Send one command to the fleet's supervisor; its result, or FleetError with the supervisor's reason."""
    if not path.exists():
        raise FleetError(f"no fleet supervisor is running (no {path.name} in {path.parent})")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(json.dumps({"command": command, **arguments}).encode() + b"\n")
            with sock.makefile("rb") as stream:
                line = stream.readline(MAX_LINE)
        except OSError as exc:
            raise FleetError(f"cannot reach the fleet supervisor: {exc}") from exc
    if not line:
        raise FleetError("the fleet supervisor closed the connection")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise FleetError(str(reply.get("error")))
    return reply.get("result")
