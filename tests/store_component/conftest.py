"""Fixtures: the store component built as it ships (its ZIP artifact and recipe), and test clients."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from device_agent.devkit.testing import VirtualDevice
from tests.conftest import install_built

STORE = "com.deviceagent.EncryptedStore"


@pytest.fixture
def store_base(tmp_path: Path, built_suite: Path) -> Path:
    """A recipe folder and artifact folder holding the built store component (clients are added to it)."""
    return install_built(built_suite, tmp_path / "base", (STORE,))


class ClientHandle:
    """Drive a client probe: send a command on local pub/sub, wait for its result in the IoT Core log."""

    _ids = itertools.count(1)

    def __init__(self, device: VirtualDevice, name: str) -> None:
        self.device = device
        self.name = name

    async def ready(self, starts: int = 1, timeout: float = 30.0) -> None:
        """Wait until the probe has subscribed to its command topic `starts` times (it says so on start)."""
        await self.device.wait_for_published(
            f"storeclient/{self.name}/result",
            where=lambda r: json.loads(r.payload)["id"] == "ready",
            count=starts,
            timeout=timeout,
        )

    async def do(self, op: str, *, wait: float = 30.0, **fields: Any) -> dict[str, Any]:
        command_id = next(self._ids)
        self.device.publish_local(f"storeclient/{self.name}/do", {"id": command_id, "op": op, **fields})
        records = await self.device.wait_for_published(
            f"storeclient/{self.name}/result",
            where=lambda r: json.loads(r.payload)["id"] == command_id,
            timeout=wait,
        )
        answer: dict[str, Any] = json.loads(records[-1].payload)
        return answer

    async def ok(self, op: str, **fields: Any) -> Any:
        answer = await self.do(op, **fields)
        assert answer["ok"], answer
        return answer["result"]


@pytest.fixture
def client() -> Callable[[VirtualDevice, str], ClientHandle]:
    return ClientHandle
