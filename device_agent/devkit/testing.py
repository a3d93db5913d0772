"""Run a virtual device inside a test: an async context manager and the pytest fixture built on it.

    async with virtual_device(tmp_path, recipe_dir=..., artifact_dir=...) as device:
        await device.wait_for_state("com.example.Publisher", ComponentState.RUNNING)
        record = await device.wait_for_published("dt/example/+/counter")
        await device.go_offline()

Everything goes through the real nucleus and real component processes; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_agent.devkit.deployment import DeploymentRequest, DeploymentResult
from device_agent.devkit.errors import DevkitError
from device_agent.devkit.iot_bridge import IotMessage
from device_agent.devkit.lifecycle import ComponentState
from device_agent.devkit.nucleus import Nucleus, NucleusOptions
from device_agent.devkit.services.iotcore import LoopbackLink, PublishedRecord
from device_agent.devkit.topics import topic_matches


@dataclass(frozen=True)
class LocalRecord:
    """A message seen on local pub/sub: topic, publishing component (None: the test) and JSON payload."""

    topic: str
    publisher: str | None
    message: Any
    time: float


@dataclass
class VirtualDevice:
    nucleus: Nucleus
    local: list[LocalRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nucleus.pubsub.listeners.append(self._record_local)

    def _record_local(self, topic: str, event: dict[str, Any], publisher: str | None) -> None:
        json_message = event.get("jsonMessage")
        message = json_message.get("message") if isinstance(json_message, dict) else None
        self.local.append(LocalRecord(topic, publisher, message, time.monotonic()))

    def local_messages(self, topic_filter: str = "#") -> list[LocalRecord]:
        return [r for r in self.local if topic_matches(topic_filter, r.topic)]

    async def wait_for_local(
        self, topic_filter: str = "#", *, count: int = 1, timeout: float = 30.0
    ) -> list[LocalRecord]:
        deadline = time.monotonic() + timeout
        while len(found := self.local_messages(topic_filter)) < count:
            if time.monotonic() > deadline:
                msg = f"only {len(found)} of {count} local messages on {topic_filter} within {timeout}s"
                raise TimeoutError(msg)
            await asyncio.sleep(0.05)
        return found

    @property
    def root(self) -> Path:
        return self.nucleus.root

    def published(self, topic_filter: str = "#") -> list[PublishedRecord]:
        return [r for r in self.nucleus.iot.published if topic_matches(topic_filter, r.topic)]

    def published_json(self, topic_filter: str = "#") -> list[Any]:
        return [json.loads(r.payload) for r in self.published(topic_filter)]

    async def wait_for_published(
        self,
        topic_filter: str = "#",
        *,
        count: int = 1,
        timeout: float = 30.0,
        where: Callable[[PublishedRecord], bool] | None = None,
    ) -> list[PublishedRecord]:
        """Wait until at least `count` messages matching the filter (and predicate) reached the cloud side."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.published(topic_filter) if where is None or where(r)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                msg = f"only {len(found)} of {count} messages on {topic_filter} within {timeout}s"
                raise TimeoutError(msg)
            await asyncio.sleep(0.05)

    def state(self, component: str) -> ComponentState:
        return self.nucleus.lifecycle.state(component)

    async def wait_for_state(
        self, component: str, *states: ComponentState, timeout: float = 30.0
    ) -> ComponentState:
        return await self.nucleus.wait_for_state(component, tuple(states), timeout)

    async def deploy(self, **request: Any) -> DeploymentResult:
        return await self.nucleus.deploy(DeploymentRequest(**request))

    def inject(self, topic: str, payload: bytes | str | Mapping[str, Any], *, qos: int = 1) -> None:
        """A cloud-to-device message through the loopback."""
        link = self.nucleus.link
        if not isinstance(link, LoopbackLink):
            msg = "inject works with the loopback; with a broker, publish to the broker"
            raise DevkitError(msg)
        data = (
            payload
            if isinstance(payload, bytes)
            else (payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
        )
        link.inject(IotMessage(topic=topic, payload=data, qos=qos))

    def publish_local(self, topic: str, message: Any) -> int:
        """Publish a JSON message on local pub/sub, as another component would; returns deliveries."""
        event = {"jsonMessage": {"message": message, "context": {"topic": topic}}}
        return self.nucleus.pubsub.deliver(topic, event, publisher=None)

    async def restart_ipc(self, downtime: float = 1.0) -> None:
        """As a nucleus restart looks to components: connections drop, the socket is away for a while."""
        await self.nucleus.restart_ipc(downtime)

    async def go_offline(self) -> None:
        await self.nucleus.set_offline(True)

    async def go_online(self) -> None:
        await self.nucleus.set_offline(False)

    def log(self, component: str | None = None) -> str:
        path = self.root / "logs" / (f"{component}.log" if component else "greengrass.log")
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


@contextlib.asynccontextmanager
async def virtual_device(
    root: Path,
    *,
    recipe_dir: Path | None = None,
    artifact_dir: Path | None = None,
    merge: Mapping[str, str] | Sequence[str] | None = None,
    update_config: Mapping[str, Mapping[str, Any]] | None = None,
    expect_success: bool = True,
    **options: Any,
) -> AsyncIterator[VirtualDevice]:
    """Start a nucleus on `root`, deploy the given components (all recipes in the folder by default)."""
    async with Nucleus(NucleusOptions(root=root, **options)) as nucleus:
        device = VirtualDevice(nucleus)
        if recipe_dir is not None:
            nucleus.deployer.add_recipes(recipe_dir, artifact_dir)
            if merge is None:
                targets = dict.fromkeys(nucleus.deployer.catalog_names(), "")
            elif isinstance(merge, Mapping):
                targets = dict(merge)
            else:
                targets = dict.fromkeys(merge, "")
            result = await nucleus.deploy(
                DeploymentRequest(artifact_dir=artifact_dir, merge=targets, update_config=update_config or {})
            )
            if expect_success and not result.succeeded:
                msg = f"initial deployment failed: {result.reason}"
                raise DevkitError(msg)
        yield device
