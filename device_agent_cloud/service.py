"""The verifier as a local service for virtual devices: subscribed to an MQTT broker over mutual TLS.

    broker = BrokerSettings(host=..., port=..., ca_file=..., cert_file=..., key_file=...)
    service = VerifierService(verifier, broker)
    await service.run()   # until cancelled

It subscribes to `dt/device-agent/+/bootstrap` (QoS 1), decides on each report in a worker thread (the
registry and audit are file I/O), and publishes the verdict on `cmd/device-agent/<thing>/verdict` (QoS 1,
retained, as in AWS). awscrt's MQTT5 client keeps the connection up, reconnecting with capped exponential
backoff and full jitter; the session is clean, so the service subscribes again after every connection.

Threads: awscrt calls back on its own threads; the callbacks only hand plain values to the asyncio loop.
A report that arrives while the queue is full is dropped with a warning: the device resends until it has a
verdict, so load sheds itself instead of growing memory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from awscrt import io, mqtt5

from device_agent_cloud.errors import PublishError, VerifierError
from device_agent_cloud.verdicts import Verdict
from device_agent_cloud.verify import Decision, Verifier

logger = logging.getLogger(__name__)

REPORT_FILTER: Final = "dt/device-agent/+/bootstrap"
_FAILED_REASON: Final = 0x80
_STOP_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True, kw_only=True, slots=True)
class BrokerSettings:
    host: str
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    client_id: str = "device-agent-verifier"
    keep_alive_s: int = 30
    min_reconnect_delay_s: float = 0.5
    max_reconnect_delay_s: float = 30.0
    connect_timeout_s: float = 5.0
    publish_timeout_s: float = 10.0
    queue_size: int = 1000
    retain_verdicts: bool = True


class VerifierService:
    def __init__(self, verifier: Verifier, broker: BrokerSettings) -> None:
        if not 0 < broker.min_reconnect_delay_s <= broker.max_reconnect_delay_s:
            raise ValueError("reconnect delays must satisfy 0 < min <= max")
        self.verifier = verifier
        self.broker = broker
        self.decisions = 0  # reports decided (refusals included)
        self.subscriptions = 0  # successful subscriptions: one per connection
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(broker.queue_size)
        self._subscribed = asyncio.Event()
        self._stopped = asyncio.Event()
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        where = f"{self.broker.host}:{self.broker.port}"
        return f"VerifierService(broker={where}, client_id={self.broker.client_id!r})"

    @property
    def subscribed(self) -> asyncio.Event:
        """Set while the service is connected and subscribed (cleared when the connection drops)."""
        return self._subscribed

    async def run(self) -> None:
        """Serve until cancelled; the client is stopped on the way out."""
        self._loop = asyncio.get_running_loop()
        try:
            self._client = mqtt5.Client(self._options())
        except Exception as error:  # awscrt raises its own error types for unreadable files
            # Name the files only, never their contents.
            raise VerifierError(
                f"cannot set up the MQTT client (ca_file={self.broker.ca_file}, "
                f"cert_file={self.broker.cert_file}, key_file={self.broker.key_file}): {type(error).__name__}"
            ) from error
        self._stopped.clear()
        self._client.start()
        logger.info("verifier_service.starting broker=%s:%d", self.broker.host, self.broker.port)
        try:
            while True:
                topic, payload = await self._queue.get()
                await self._serve(topic, payload)
        finally:
            await self._stop_client()

    async def _serve(self, topic: str, payload: bytes) -> None:
        try:
            decision: Decision = await asyncio.to_thread(self.verifier.handle, payload, topic=topic)
        except VerifierError as error:
            # The registry or audit failed: no verdict without a record. The device resends later.
            logger.error("verifier_service.decision_failed topic=%s error=%s", topic, error)  # noqa: TRY400
            return
        self.decisions += 1
        if decision.verdict is None:
            return
        try:
            await self._publish(decision.verdict)
        except PublishError as error:
            logger.warning("verifier_service.publish_failed thing=%s error=%s", decision.thing, error)

    async def _publish(self, verdict: Verdict) -> None:
        packet = mqtt5.PublishPacket(
            topic=verdict.topic,
            payload=verdict.to_payload(),
            qos=mqtt5.QoS.AT_LEAST_ONCE,
            retain=self.broker.retain_verdicts,
        )
        try:
            async with asyncio.timeout(self.broker.publish_timeout_s):
                result = await self._crt_call(self._client.publish(packet))
        except TimeoutError as error:
            raise PublishError(f"no PUBACK for {verdict.topic} in time") from error
        except Exception as error:  # awscrt fails the future with its own error type
            raise PublishError(f"publish to {verdict.topic} failed: {type(error).__name__}") from error
        code = getattr(getattr(result, "puback", None), "reason_code", None)
        if code is not None and int(code) >= _FAILED_REASON:
            raise PublishError(
                f"the broker refused the verdict for {verdict.thing}: {getattr(code, 'name', code)}"
            )

    # -- awscrt ------------------------------------------------------------------------------------------

    def _options(self) -> Any:
        tls_options = io.TlsContextOptions.create_client_with_mtls_from_path(
            str(self.broker.cert_file), str(self.broker.key_file)
        )
        tls_options.override_default_trust_store_from_path(None, str(self.broker.ca_file))
        socket_options = io.SocketOptions()
        socket_options.connect_timeout_ms = int(self.broker.connect_timeout_s * 1000)
        return mqtt5.ClientOptions(
            host_name=self.broker.host,
            port=self.broker.port,
            tls_ctx=io.ClientTlsContext(tls_options),
            socket_options=socket_options,
            connect_options=mqtt5.ConnectPacket(
                client_id=self.broker.client_id, keep_alive_interval_sec=self.broker.keep_alive_s
            ),
            session_behavior=mqtt5.ClientSessionBehaviorType.CLEAN,
            retry_jitter_mode=mqtt5.ExponentialBackoffJitterMode.FULL,
            min_reconnect_delay_ms=int(self.broker.min_reconnect_delay_s * 1000),
            max_reconnect_delay_ms=int(self.broker.max_reconnect_delay_s * 1000),
            connack_timeout_ms=int(self.broker.connect_timeout_s * 1000),
            disable_metrics=True,
            on_publish_callback_fn=self._crt_publish,
            on_lifecycle_event_connection_success_fn=lambda _data: self._post(self._connected),
            on_lifecycle_event_disconnection_fn=lambda _data: self._post(self._disconnected),
            on_lifecycle_event_connection_failure_fn=lambda data: self._post(
                self._connect_failed, type(getattr(data, "exception", None)).__name__
            ),
            on_lifecycle_event_stopped_fn=lambda _data: self._post(self._stopped.set),
        )

    async def _crt_call(self, crt_future: concurrent.futures.Future[Any]) -> Any:
        """Await an awscrt future without ever cancelling it (awscrt completes it later from its thread, and
        a cancelled concurrent future would make that completion fail there)."""
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def settle(done: concurrent.futures.Future[Any]) -> None:
            if waiter.done():
                return
            error = done.exception()
            if error is None:
                waiter.set_result(done.result())
            else:
                waiter.set_exception(error)

        crt_future.add_done_callback(lambda done: self._post(settle, done))
        return await waiter

    def _post(self, callback: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback, *args)

    def _crt_publish(self, data: Any) -> None:
        packet = data.publish_packet
        payload = bytes(packet.payload) if packet.payload is not None else b""
        self._post(self._enqueue, str(packet.topic), payload)

    def _enqueue(self, topic: str, payload: bytes) -> None:
        try:
            self._queue.put_nowait((topic, payload))
        except asyncio.QueueFull:
            logger.warning(
                "verifier_service.report_dropped topic=%s queue_full=%d", topic, self._queue.maxsize
            )

    def _connected(self) -> None:
        logger.info("verifier_service.connected broker=%s:%d", self.broker.host, self.broker.port)
        task = asyncio.get_running_loop().create_task(self._subscribe(), name="verifier-service.subscribe")
        self._tasks.add(task)  # keep a reference until done: the loop holds only a weak one
        task.add_done_callback(self._tasks.discard)

    async def _subscribe(self) -> None:
        packet = mqtt5.SubscribePacket(
            subscriptions=[mqtt5.Subscription(topic_filter=REPORT_FILTER, qos=mqtt5.QoS.AT_LEAST_ONCE)]
        )
        try:
            async with asyncio.timeout(self.broker.publish_timeout_s):
                suback = await self._crt_call(self._client.subscribe(packet))
        except Exception as error:  # noqa: BLE001 - a lost link fails it; the next connection retries
            logger.warning("verifier_service.subscribe_failed error=%s", type(error).__name__)
            return
        codes = [int(code) for code in getattr(suback, "reason_codes", None) or []]
        if not codes or any(code >= _FAILED_REASON for code in codes):
            logger.error("verifier_service.subscribe_refused filter=%s codes=%s", REPORT_FILTER, codes)
            return
        self.subscriptions += 1
        self._subscribed.set()
        logger.info("verifier_service.subscribed filter=%s", REPORT_FILTER)

    def _disconnected(self) -> None:
        self._subscribed.clear()
        logger.info("verifier_service.disconnected broker=%s:%d", self.broker.host, self.broker.port)

    def _connect_failed(self, error: str) -> None:
        logger.info(
            "verifier_service.connect_failed broker=%s:%d error=%s", self.broker.host, self.broker.port, error
        )

    async def _stop_client(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        for task in list(self._tasks):
            task.cancel()
        client.stop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_STOP_TIMEOUT_S):
                await self._stopped.wait()
        self._subscribed.clear()
        logger.info("verifier_service.stopped")
