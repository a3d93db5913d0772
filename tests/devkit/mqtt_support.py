"""Shared MQTT test helpers: an independent awscrt peer, a callback recorder, a test PKI."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from awscrt import io, mqtt5

from device_agent.devkit.iot_bridge import IotMessage, MqttBridge, parse_endpoint
from device_agent.devkit.pki import IssuedIdentity, LocalCa

WAIT_S = 5.0


# -- helpers (shared fixtures; candidates for a conftest) --------------------------------------------------


async def eventually(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


class Recorder:
    """The bridge's callbacks: messages in a queue, connection changes in a list, and the threads used."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[IotMessage] = asyncio.Queue()
        self.events: list[bool] = []
        self.threads: set[int] = set()

    def on_message(self, message: IotMessage) -> None:
        self.threads.add(threading.get_ident())
        self.messages.put_nowait(message)

    def on_connection_change(self, connected: bool) -> None:
        self.threads.add(threading.get_ident())
        self.events.append(connected)

    async def next_message(self, timeout: float = WAIT_S) -> IotMessage:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def wait_events(self, expected: list[bool], timeout: float = WAIT_S) -> None:
        await eventually(
            lambda: self.events == expected, f"connection events {expected} (have {self.events})", timeout
        )


class Peer:
    """An independent MQTT5 client (raw awscrt), standing in for the cloud side."""

    def __init__(self, endpoint: str, client_id: str, identity: IssuedIdentity | None = None) -> None:
        self.endpoint = parse_endpoint(endpoint)
        self.client_id = client_id
        self.identity = identity
        self.received: asyncio.Queue[Any] = asyncio.Queue()
        self._client: Any = None
        self._connected = asyncio.Event()
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        tls = None
        if self.identity is not None:
            options = io.TlsContextOptions.create_client_with_mtls_from_path(
                str(self.identity.cert), str(self.identity.key)
            )
            options.override_default_trust_store_from_path(None, str(self.identity.ca_cert))
            tls = io.ClientTlsContext(options)
        self._client = mqtt5.Client(
            mqtt5.ClientOptions(
                host_name=self.endpoint.host,
                port=self.endpoint.port,
                tls_ctx=tls,
                connect_options=mqtt5.ConnectPacket(client_id=self.client_id, keep_alive_interval_sec=30),
                disable_metrics=True,
                on_publish_callback_fn=lambda d: loop.call_soon_threadsafe(
                    self.received.put_nowait, d.publish_packet
                ),
                on_lifecycle_event_connection_success_fn=lambda _d: loop.call_soon_threadsafe(
                    self._connected.set
                ),
                on_lifecycle_event_stopped_fn=lambda _d: loop.call_soon_threadsafe(self._stopped.set),
            )
        )
        self._client.start()
        await asyncio.wait_for(self._connected.wait(), WAIT_S)

    async def stop(self) -> None:
        if self._client is not None:
            self._client.stop()
            await asyncio.wait_for(self._stopped.wait(), WAIT_S)
            self._client = None

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        packet = mqtt5.SubscribePacket(
            subscriptions=[mqtt5.Subscription(topic_filter=topic_filter, qos=mqtt5.QoS(qos))]
        )
        suback = await asyncio.wait_for(asyncio.wrap_future(self._client.subscribe(packet)), WAIT_S)
        assert all(int(code) < 0x80 for code in suback.reason_codes), suback

    async def publish(self, topic: str, payload: bytes, qos: int = 1, **properties: Any) -> Any:
        packet = mqtt5.PublishPacket(topic=topic, payload=payload, qos=mqtt5.QoS(qos), **properties)
        return await asyncio.wait_for(asyncio.wrap_future(self._client.publish(packet)), WAIT_S)

    async def next_packet(self, timeout: float = WAIT_S) -> Any:
        return await asyncio.wait_for(self.received.get(), timeout)


@dataclass
class Pki:
    ca: LocalCa
    server: IssuedIdentity
    thing_a: IssuedIdentity
    thing_b: IssuedIdentity
    observer: IssuedIdentity
    stranger: IssuedIdentity  # from another CA


BridgeFactory = Callable[..., Awaitable[tuple[MqttBridge, Recorder]]]
