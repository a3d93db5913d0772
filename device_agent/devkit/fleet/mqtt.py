"""A small MQTT 5 client over mutual TLS (awscrt) for the fleet's own identities: the observer and tests.

Unlike the nucleus's bridge, it can keep a persistent session (`session_expiry_s`): the broker then queues
QoS 1 messages for it while it is disconnected, also across a broker restart (the fleet's broker persists
sessions), so the observer misses nothing a device published meanwhile. awscrt keeps reconnecting by itself
with capped, fully jittered backoff. Callbacks arrive on awscrt's threads and are handed to the asyncio loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from awscrt import io, mqtt5

from device_agent.devkit.errors import IotBridgeError
from device_agent.devkit.pki import IssuedIdentity

HOST = "127.0.0.1"
_FAILED = 0x80  # MQTT 5 reason codes from 0x80 are failures


@dataclass(frozen=True, slots=True)
class Received:
    topic: str
    payload: bytes


class ConnectionRefusedByBrokerError(IotBridgeError):
    """The TLS handshake or CONNECT failed (no, foreign or revoked certificate; or the broker is down)."""


class FleetMqttClient:
    def __init__(
        self,
        port: int,
        identity: IssuedIdentity | None,
        *,
        client_id: str,
        ca_file: str | None = None,
        session_expiry_s: int | None = None,
        on_message: Callable[[Received], None] | None = None,
        on_connection_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.port = port
        self.identity = identity
        self.client_id = client_id
        self._ca_file = ca_file or (str(identity.ca_cert) if identity else None)
        self._session_expiry_s = session_expiry_s
        self._on_message = on_message
        self._on_connection_change = on_connection_change
        self.received: asyncio.Queue[Received] = asyncio.Queue()
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = asyncio.Event()
        self._failed: asyncio.Future[str] | None = None
        self._stopped = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self, *, wait_connected: float | None = 10.0) -> None:
        """Start connecting; when waiting, raise ConnectionRefusedByBrokerError if the first attempt fails."""
        self._loop = loop = asyncio.get_running_loop()
        self._failed = loop.create_future()
        tls_options = (
            io.TlsContextOptions.create_client_with_mtls_from_path(
                str(self.identity.cert), str(self.identity.key)
            )
            if self.identity is not None
            else io.TlsContextOptions()
        )
        tls_options.override_default_trust_store_from_path(None, self._ca_file)
        persistent = self._session_expiry_s is not None
        self._client = mqtt5.Client(
            mqtt5.ClientOptions(
                host_name=HOST,
                port=self.port,
                tls_ctx=io.ClientTlsContext(tls_options),
                connect_options=mqtt5.ConnectPacket(
                    client_id=self.client_id,
                    keep_alive_interval_sec=30,
                    session_expiry_interval_sec=self._session_expiry_s,
                ),
                session_behavior=(
                    mqtt5.ClientSessionBehaviorType.REJOIN_ALWAYS
                    if persistent
                    else mqtt5.ClientSessionBehaviorType.CLEAN
                ),
                retry_jitter_mode=mqtt5.ExponentialBackoffJitterMode.FULL,
                min_reconnect_delay_ms=250,
                max_reconnect_delay_ms=5000,
                connack_timeout_ms=5000,
                disable_metrics=True,
                on_publish_callback_fn=self._crt_publish,
                on_lifecycle_event_connection_success_fn=lambda _d: self._post(
                    self._set_connected, connected=True
                ),
                on_lifecycle_event_connection_failure_fn=self._crt_failure,
                on_lifecycle_event_disconnection_fn=lambda _d: self._post(
                    self._set_connected, connected=False
                ),
                on_lifecycle_event_stopped_fn=lambda _d: self._post(self._stopped.set),
            )
        )
        self._client.start()
        if wait_connected is None:
            return
        connected = asyncio.ensure_future(self._connected.wait())
        waiters: set[asyncio.Future[Any]] = {connected, self._failed}
        try:
            await asyncio.wait(waiters, timeout=wait_connected, return_when="FIRST_COMPLETED")
        finally:
            connected.cancel()
        if self._connected.is_set():
            return
        reason = (
            self._failed.result() if self._failed.done() else f"no connection within {wait_connected:.1f}s"
        )
        await self.stop()
        raise ConnectionRefusedByBrokerError(f"{self.client_id}: {reason}")

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        client.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), 5.0)

    async def subscribe(self, topic_filter: str, qos: int = 1, timeout: float = 5.0) -> int:
        """Subscribe; returns the SUBACK reason code (>= 0x80 means refused)."""
        packet = mqtt5.SubscribePacket(
            subscriptions=[mqtt5.Subscription(topic_filter=topic_filter, qos=mqtt5.QoS(qos))]
        )
        suback = await asyncio.wait_for(asyncio.wrap_future(self._client.subscribe(packet)), timeout)
        return int(suback.reason_codes[0])

    async def publish(self, topic: str, payload: bytes, qos: int = 1, timeout: float = 5.0) -> int:
        """Publish; for QoS 1 returns the PUBACK reason code (>= 0x80 means refused), else 0."""
        packet = mqtt5.PublishPacket(topic=topic, payload=payload, qos=mqtt5.QoS(qos))
        result = await asyncio.wait_for(asyncio.wrap_future(self._client.publish(packet)), timeout)
        puback = getattr(result, "puback", None)
        return int(puback.reason_code) if puback is not None else 0

    @staticmethod
    def refused(code: int) -> bool:
        return code >= _FAILED

    # -- awscrt threads -> loop --------------------------------------------------------------------------

    def _post(self, callback: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(lambda: callback(*args, **kwargs))

    def _crt_publish(self, data: Any) -> None:
        packet = data.publish_packet
        self._post(self._deliver, Received(packet.topic, bytes(packet.payload or b"")))

    def _crt_failure(self, data: Any) -> None:
        exc = getattr(data, "exception", None)
        self._post(self._set_failed, type(exc).__name__ + (f": {exc}" if exc else ""))

    def _deliver(self, message: Received) -> None:
        if self._on_message is not None:
            self._on_message(message)
        else:
            self.received.put_nowait(message)

    def _set_connected(self, *, connected: bool) -> None:
        if connected:
            self._connected.set()
        else:
            self._connected.clear()
        if self._on_connection_change is not None:
            self._on_connection_change(connected)

    def _set_failed(self, reason: str) -> None:
        if self._failed is not None and not self._failed.done():
            self._failed.set_result(reason)
