"""Fixtures: the store and the telemetry publisher built as they ship, on a device that pins topics; and a
way to fill the publisher's spool with a long outage's samples before the publisher starts."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from telemetry_publisher.payload import encode_sample

from device_agent import store_protocol as protocol
from device_agent.devkit.testing import VirtualDevice
from tests.conftest import install_built

STORE = "com.deviceagent.EncryptedStore"
TELEMETRY = "com.deviceagent.TelemetryPublisher"
SPOOL = "telemetry-spool"


@pytest.fixture
def telemetry_base(tmp_path: Path, built_suite: Path) -> Path:
    return install_built(built_suite, tmp_path / "base", (STORE, TELEMETRY))


def outage_records(count: int, interval: float = 1.0) -> list[bytes]:
    """`count` sample records, seq 1 to `count`, `interval` apart and ending now: an outage's backlog."""
    now = time.time()
    return [
        encode_sample(seq, {"at": round(now - (count - seq + 1) * interval, 3), "cpu": {"usedPct": 1.0}})
        for seq in range(1, count + 1)
    ]


async def fill_spool(device: VirtualDevice, records: list[bytes], chunk: int = 100) -> None:
    """Append `records` to the running store's spool namespace over local pub/sub, as the publisher does."""
    ids = itertools.count(1)
    pending: dict[str, asyncio.Future[protocol.Response]] = {}

    def on_message(topic: str, event: dict[str, Any], _publisher: str | None) -> None:
        if topic == protocol.response_topic(SPOOL):
            response = protocol.parse_response(event.get("jsonMessage", {}).get("message"))
            if response is not None and (future := pending.get(response.id)) and not future.done():
                future.set_result(response)

    device.nucleus.pubsub.listeners.append(on_message)
    try:
        for start in range(0, len(records), chunk):
            request_id = f"fill-{next(ids)}"
            future = pending[request_id] = asyncio.get_running_loop().create_future()
            values = [protocol.encode_value(r) for r in records[start : start + chunk]]
            document = protocol.request_document(request_id, protocol.Op.APPEND, values=values)
            while not future.done():  # resent until answered: the store answers a repeat from its cache
                device.publish_local(protocol.request_topic(SPOOL), document)
                await asyncio.wait({future}, timeout=2.0)
            assert future.result().ok, future.result()
    finally:
        device.nucleus.pubsub.listeners.remove(on_message)
