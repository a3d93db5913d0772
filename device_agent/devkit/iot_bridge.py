"""The nucleus's bridge to a real MQTT broker ("IoT Core"), on awscrt's MQTT5 client.

Threads: awscrt calls us back on its own event-loop threads. Those callbacks only convert packets into plain
values and hand them to the asyncio loop captured in `start()` (`call_soon_threadsafe`); every piece of state
is then read and written on that loop, and `on_message` / `on_connection_change` always run there.

Connection: awscrt keeps the link up by itself (exponential backoff with full jitter, capped; set explicitly
below). Sessions are clean, so the bridge remembers its subscriptions and re-subscribes after every CONNACK;
`on_connection_change(True)` is reported only once those SUBACKs are in (or timed out), so a caller that sees
"connected" also receives what it subscribed to. A loss or stop reports False. The bridge does not spool:
publishing while offline fails at once with IotBridgeError (the nucleus spools above it).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from awscrt import io, mqtt5

from device_agent.devkit.errors import IotBridgeError

logger = logging.getLogger(__name__)

_LOOPBACK_NAMES = frozenset({"localhost"})
_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_STOP_TIMEOUT_S = 5.0
_RESUBSCRIBE_TIMEOUT_S = 10.0
_FAILED_REASON = 0x80  # MQTT 5: reason codes from 0x80 are failures


@dataclass(frozen=True, kw_only=True)
class IotMessage:
    topic: str
    payload: bytes
    qos: int  # 0 or 1
    retain: bool = False
    user_properties: tuple[tuple[str, str], ...] = ()
    message_expiry_interval_seconds: int | None = None
    correlation_data: bytes | None = None
    response_topic: str | None = None
    payload_format: int | None = None  # 0 bytes, 1 utf-8
    content_type: str | None = None


class AckRefusedError(IotBridgeError):
    """The broker answered PUBLISH, SUBSCRIBE or UNSUBSCRIBE with a failure reason (e.g. NOT_AUTHORIZED)."""

    def __init__(self, message: str, *, reason_code: int | None, reason_name: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.reason_name = reason_name


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str  # mqtt | mqtts
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_endpoint(endpoint: str) -> Endpoint:
    """mqtt://HOST[:1883] (plain, loopback only) or mqtts://HOST[:8883]."""
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError as exc:
        raise IotBridgeError(f"invalid endpoint {endpoint!r}") from exc
    if parts.scheme not in _DEFAULT_PORTS:
        raise IotBridgeError(
            f"unsupported endpoint scheme in {endpoint!r}: use mqtt://HOST:PORT or mqtts://HOST:PORT"
        )
    if not parts.hostname or parts.path not in {"", "/"} or parts.query or parts.username:
        raise IotBridgeError(f"invalid endpoint {endpoint!r}: expected {parts.scheme}://HOST:PORT")
    result = Endpoint(parts.scheme, parts.hostname, port or _DEFAULT_PORTS[parts.scheme])
    if not result.tls and not is_loopback(result.host):
        # Plain MQTT carries credentials and data in clear: only for a broker on this machine.
        raise IotBridgeError(
            f"plain mqtt:// is only allowed to a loopback host, not {result.host!r}; use mqtts://"
        )
    return result


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MqttBridge:
    """One MQTT5 connection to a broker, kept up by awscrt, driven from one asyncio loop."""

    def __init__(
        self,
        *,
        endpoint: str,
        client_id: str,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        on_message: Callable[[IotMessage], None],
        on_connection_change: Callable[[bool], None],
        keep_alive_s: int = 30,
        min_reconnect_delay_s: float = 0.25,
        max_reconnect_delay_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        stop_timeout_s: float = _STOP_TIMEOUT_S,
    ) -> None:
        self.endpoint = parse_endpoint(endpoint)
        if not client_id:
            raise IotBridgeError("client_id must not be empty")
        if (cert_file is None) != (key_file is None):
            raise IotBridgeError("give both cert_file and key_file (mutual TLS) or neither")
        if not self.endpoint.tls and (ca_file or cert_file):
            raise IotBridgeError("TLS files were given for a plain mqtt:// endpoint; use mqtts://")
        if not 0 < min_reconnect_delay_s <= max_reconnect_delay_s:
            raise IotBridgeError("reconnect delays must satisfy 0 < min <= max")
        self.client_id = client_id
        self._ca_file = ca_file
        self._cert_file = cert_file
        self._key_file = key_file
        self._on_message = on_message
        self._on_connection_change = on_connection_change
        self._keep_alive_s = keep_alive_s
        self._min_reconnect_ms = int(min_reconnect_delay_s * 1000)
        self._max_reconnect_ms = int(max_reconnect_delay_s * 1000)
        self._connect_timeout_ms = int(connect_timeout_s * 1000)
        self._stop_timeout_s = stop_timeout_s

        # Loop-side state (only touched on self._loop).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None  # mqtt5.Client: untyped
        self._session: object | None = None  # identifies the current client; stale callbacks are dropped
        self._subscriptions: dict[str, int] = {}
        self._link_up = False  # CONNACK received, not yet lost
        self._connected = False  # what was last reported through on_connection_change
        self._connected_event = asyncio.Event()
        self._stopped_event = asyncio.Event()
        self._client_started = False
        self._resubscribe: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Future[Any]] = set()
        self._last_failure: BaseException | None = None  # written on awscrt threads, read on the loop

    def __repr__(self) -> str:
        return (
            f"MqttBridge(endpoint={self.endpoint}, client_id={self.client_id!r}, connected={self._connected})"
        )

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def subscriptions(self) -> dict[str, int]:
        """The remembered topic filters and their QoS (re-subscribed after every reconnect)."""
        return dict(self._subscriptions)

    async def start(self, *, wait_connected: float | None = 10.0) -> None:
        """Create the client and start connecting; with `wait_connected`, wait that long to be connected.

        `wait_connected=None` returns at once: the bridge keeps trying in the background.
        """
        if self._client is not None:
            raise IotBridgeError("the bridge is already started")
        self._loop = asyncio.get_running_loop()
        self._session = session = object()
        self._last_failure = None
        self._connected_event.clear()
        try:
            self._client = mqtt5.Client(self._client_options(session))
            self._start_client()
        except IotBridgeError:
            self._client = self._session = None
            raise
        except Exception as exc:  # awscrt raises its own errors and plain ones for bad options
            self._client = self._session = None
            raise IotBridgeError(f"cannot create the MQTT client for {self.endpoint}: {exc}") from exc
        logger.info("iot_bridge.starting endpoint=%s client_id=%s", self.endpoint, self.client_id)
        if wait_connected is None:
            return
        try:
            async with asyncio.timeout(wait_connected):
                await self._connected_event.wait()
        except TimeoutError as exc:
            failure = self._failure()  # set meanwhile on an awscrt thread
            await self.stop()
            detail = f"; last attempt: {_describe(failure)}" if failure is not None else ""
            raise IotBridgeError(
                f"not connected to {self.endpoint} within {wait_connected:.1f}s{detail}"
            ) from failure or exc

    async def stop(self) -> None:
        """Disconnect, stop reconnecting and release the client. Idempotent."""
        if self._client is None:
            return
        await self._stop_client()
        self._session = None
        self._client = None  # drops the native client; any late callback carries a stale session
        self._link_up = False
        await self._cancel_resubscribe()
        self._report(connected=False)
        for future in list(self._pending):
            if not future.done():
                future.set_exception(IotBridgeError("the bridge was stopped"))
        self._pending.clear()
        logger.info("iot_bridge.stopped endpoint=%s", self.endpoint)

    async def set_offline(self, offline: bool) -> None:
        """For tests: take the link down (the client is stopped, no reconnects) or bring it back up."""
        if self._client is None:
            raise IotBridgeError("the bridge is not started")
        if offline:
            await self._stop_client()
            self._link_up = False
            await self._cancel_resubscribe()
            self._report(connected=False)
        elif not self._client_started:
            self._start_client()

    async def publish(self, message: IotMessage, *, timeout: float = 10.0) -> None:
        """Send one message; QoS 1 returns once the broker's PUBACK says it was accepted."""
        _check_qos(message.qos)
        client = self._require_connected(f"publish to {message.topic!r}")
        packet = mqtt5.PublishPacket(
            topic=message.topic,
            payload=message.payload,
            qos=mqtt5.QoS(message.qos),
            retain=message.retain,
            user_properties=[mqtt5.UserProperty(name=k, value=v) for k, v in message.user_properties] or None,
            message_expiry_interval_sec=message.message_expiry_interval_seconds,
            correlation_data_bytes=message.correlation_data,
            response_topic=message.response_topic,
            payload_format_indicator=(
                mqtt5.PayloadFormatIndicator(message.payload_format)
                if message.payload_format is not None
                else None
            ),
            content_type=message.content_type,
        )
        what = f"publish to {message.topic!r}"
        result = await self._call(lambda: client.publish(packet), what, timeout)
        if message.qos == 1:
            puback = getattr(result, "puback", None)
            _check_reason(getattr(puback, "reason_code", None), what, getattr(puback, "reason_string", None))

    async def subscribe(self, topic_filter: str, qos: int, *, timeout: float = 10.0) -> None:
        """Subscribe now when connected; remembered either way and restored after every reconnect."""
        _check_qos(qos)
        if not topic_filter:
            raise IotBridgeError("the topic filter must not be empty")
        previous = self._subscriptions.get(topic_filter)
        self._subscriptions[topic_filter] = qos
        if not self._link_up:
            return
        client = self._client
        packet = mqtt5.SubscribePacket(
            subscriptions=[mqtt5.Subscription(topic_filter=topic_filter, qos=mqtt5.QoS(qos))]
        )
        what = f"subscribe to {topic_filter!r}"
        try:
            suback = await self._call(lambda: client.subscribe(packet), what, timeout)
            for code in getattr(suback, "reason_codes", None) or [None]:
                _check_reason(code, what, getattr(suback, "reason_string", None))
        except IotBridgeError:
            # A refused filter is not restored later; a failed change keeps what was there.
            if previous is None:
                self._subscriptions.pop(topic_filter, None)
            else:
                self._subscriptions[topic_filter] = previous
            raise

    async def unsubscribe(self, topic_filter: str, *, timeout: float = 10.0) -> None:
        """Forget a subscription, and unsubscribe now when connected."""
        if self._subscriptions.pop(topic_filter, None) is None or not self._link_up:
            return
        client = self._client
        packet = mqtt5.UnsubscribePacket(topic_filters=[topic_filter])
        what = f"unsubscribe from {topic_filter!r}"
        unsuback = await self._call(lambda: client.unsubscribe(packet), what, timeout)
        for code in getattr(unsuback, "reason_codes", None) or [None]:
            _check_reason(
                code, what, getattr(unsuback, "reason_string", None)
            )  # 0x11 "no subscription" is fine

    # -- client construction and lifecycle ------------------------------------------------------------------

    def _client_options(self, session: object) -> Any:
        return mqtt5.ClientOptions(
            host_name=self.endpoint.host,
            port=self.endpoint.port,
            tls_ctx=self._tls_context() if self.endpoint.tls else None,
            socket_options=self._socket_options(),
            connect_options=mqtt5.ConnectPacket(
                client_id=self.client_id, keep_alive_interval_sec=self._keep_alive_s
            ),
            session_behavior=mqtt5.ClientSessionBehaviorType.CLEAN,  # we restore subscriptions ourselves
            # Fail everything awscrt would otherwise queue while offline: the nucleus spools, not the client.
            offline_queue_behavior=mqtt5.ClientOperationQueueBehaviorType.FAIL_ALL_ON_DISCONNECT,
            retry_jitter_mode=mqtt5.ExponentialBackoffJitterMode.FULL,
            min_reconnect_delay_ms=self._min_reconnect_ms,
            max_reconnect_delay_ms=self._max_reconnect_ms,
            # min_connected_time_to_reset_reconnect_delay_ms is left unset on purpose (default 30 s suits):
            # awscrt 0.36.1 stores it as the *minimum reconnect delay*, which turned a 250 ms first retry into
            # 30 s (seen in awscrt's debug log).
            connack_timeout_ms=self._connect_timeout_ms,
            ping_timeout_ms=min(self._connect_timeout_ms, self._keep_alive_s * 1000 // 2),
            ack_timeout_sec=60,  # a backstop: every caller's wait is bounded by its own, shorter timeout
            disable_metrics=True,  # otherwise awscrt appends SDK metrics to the MQTT username
            on_publish_callback_fn=lambda data: self._crt_publish(session, data),
            on_lifecycle_event_connection_success_fn=lambda data: self._crt_connected(session, data),
            on_lifecycle_event_connection_failure_fn=lambda data: self._crt_failed(session, data),
            on_lifecycle_event_disconnection_fn=lambda data: self._crt_disconnected(session, data),
            on_lifecycle_event_stopped_fn=lambda _data: self._post(session, self._stopped_event.set),
        )

    def _socket_options(self) -> Any:
        options = io.SocketOptions()
        options.connect_timeout_ms = self._connect_timeout_ms
        return options

    def _tls_context(self) -> Any:
        try:
            if self._cert_file is not None and self._key_file is not None:
                options = io.TlsContextOptions.create_client_with_mtls_from_path(
                    str(self._cert_file), str(self._key_file)
                )
            else:
                options = io.TlsContextOptions()
            if self._ca_file is not None:
                options.override_default_trust_store_from_path(None, str(self._ca_file))
            return io.ClientTlsContext(options)
        except Exception as exc:
            # Name the files only: awscrt's own message never includes their contents, but keep it that way.
            raise IotBridgeError(
                f"cannot load TLS credentials (ca_file={self._ca_file}, cert_file={self._cert_file}, "
                f"key_file={self._key_file}): {type(exc).__name__}"
            ) from exc

    def _start_client(self) -> None:
        self._stopped_event.clear()
        self._client.start()
        self._client_started = True

    async def _stop_client(self) -> None:
        if not self._client_started:
            return
        self._client_started = False
        self._client.stop()
        try:
            async with asyncio.timeout(self._stop_timeout_s):
                await self._stopped_event.wait()
        except TimeoutError:
            # Seen when *we* refused the server's certificate: s2n then delays closing the socket by 10-30 s
            # ("blinding", against timing attacks), and awscrt reports "stopped" only after that. The client
            # is released anyway; its late callbacks carry a stale session and are dropped.
            logger.warning(
                "iot_bridge.stop_timeout endpoint=%s after=%.1fs", self.endpoint, self._stop_timeout_s
            )

    # -- awscrt threads: convert, then hand over to the loop ----------------------------------------------

    def _post(self, session: object, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
            loop.call_soon_threadsafe(self._run_posted, session, callback, *args)

    def _run_posted(self, session: object, callback: Callable[..., None], *args: Any) -> None:
        if session is not self._session:
            return  # from a client that has been stopped and released
        try:
            callback(*args)
        except Exception:
            logger.exception(
                "iot_bridge.callback_failed callback=%s", getattr(callback, "__name__", callback)
            )

    def _crt_publish(self, session: object, data: Any) -> None:
        try:
            message = _message_from_packet(data.publish_packet)
        except Exception:
            logger.exception("iot_bridge.bad_incoming_publish")
            return
        self._post(session, self._deliver, message)

    def _crt_connected(self, session: object, data: Any) -> None:
        settings = getattr(data, "negotiated_settings", None)
        self._post(session, self._handle_link_up, getattr(settings, "rejoined_session", None))

    def _crt_failed(self, session: object, data: Any) -> None:
        exc = getattr(data, "exception", None)
        connack = getattr(data, "connack_packet", None)
        reason = getattr(connack, "reason_code", None)
        if isinstance(exc, BaseException):
            self._last_failure = exc
        self._post(
            session,
            self._handle_failure,
            _describe(exc),
            _reason_name(reason) if reason is not None else None,
        )

    def _crt_disconnected(self, session: object, data: Any) -> None:
        exc = getattr(data, "exception", None)
        packet = getattr(data, "disconnect_packet", None)
        reason = getattr(packet, "reason_code", None)
        self._post(
            session,
            self._handle_link_down,
            _describe(exc),
            _reason_name(reason) if reason is not None else None,
        )

    # -- loop side ----------------------------------------------------------------------------------------

    def _deliver(self, message: IotMessage) -> None:
        if self._client is not None:
            self._on_message(message)

    def _handle_failure(self, error: str, reason: str | None) -> None:
        logger.info("iot_bridge.connect_failed endpoint=%s error=%s connack=%s", self.endpoint, error, reason)

    def _handle_link_up(self, rejoined: bool | None) -> None:
        logger.info("iot_bridge.connack endpoint=%s rejoined=%s", self.endpoint, rejoined)
        self._link_up = True
        if self._resubscribe is not None:
            self._resubscribe.cancel()
        self._resubscribe = asyncio.get_running_loop().create_task(
            self._restore_subscriptions(dict(self._subscriptions)), name="iot-bridge.resubscribe"
        )

    def _handle_link_down(self, error: str, reason: str | None) -> None:
        logger.info(
            "iot_bridge.disconnected endpoint=%s error=%s disconnect=%s", self.endpoint, error, reason
        )
        self._link_up = False
        if self._resubscribe is not None:
            self._resubscribe.cancel()
            self._resubscribe = None
        self._report(connected=False)

    async def _restore_subscriptions(self, subscriptions: dict[str, int]) -> None:
        if subscriptions:
            client = self._client
            packet = mqtt5.SubscribePacket(
                subscriptions=[
                    mqtt5.Subscription(topic_filter=f, qos=mqtt5.QoS(q)) for f, q in subscriptions.items()
                ]
            )
            try:
                suback = await self._call(
                    lambda: client.subscribe(packet), "re-subscribe", _RESUBSCRIBE_TIMEOUT_S
                )
                codes = list(getattr(suback, "reason_codes", None) or [])
                for topic_filter, code in zip(subscriptions, codes, strict=False):
                    if code is None or int(code) >= _FAILED_REASON:
                        logger.warning(
                            "iot_bridge.resubscribe_refused filter=%s reason=%s", topic_filter, code
                        )
            except IotBridgeError as exc:
                # Still connected, and reported so; the loss that usually causes this is reported separately.
                logger.warning("iot_bridge.resubscribe_failed count=%d error=%s", len(subscriptions), exc)
        self._resubscribe = None
        if self._link_up:
            self._report(connected=True)

    async def _cancel_resubscribe(self) -> None:
        task, self._resubscribe = self._resubscribe, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _report(self, *, connected: bool) -> None:
        if connected:
            self._connected_event.set()
        else:
            self._connected_event.clear()
        if connected == self._connected:
            return
        self._connected = connected
        logger.info("iot_bridge.connection connected=%s endpoint=%s", connected, self.endpoint)
        try:
            self._on_connection_change(connected)
        except Exception:
            logger.exception("iot_bridge.on_connection_change_failed")

    def _failure(self) -> BaseException | None:
        return self._last_failure

    def _require_connected(self, what: str) -> Any:
        if self._client is None:
            raise IotBridgeError(f"cannot {what}: the bridge is not started")
        if not self._link_up:
            raise IotBridgeError(f"cannot {what}: not connected to {self.endpoint}")
        return self._client

    async def _call(
        self,
        submit: Callable[[], concurrent.futures.Future[Any]],
        what: str,
        timeout: float,
    ) -> Any:
        """Submit one awscrt operation and await its completion on the loop, bounded by `timeout`."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        try:
            crt_future = submit()
        except Exception as exc:
            raise IotBridgeError(f"cannot {what}: {exc}") from exc
        session = self._session

        def settle(done: concurrent.futures.Future[Any]) -> None:
            if waiter.done():
                return
            exc = done.exception()
            if exc is None:
                waiter.set_result(done.result())
                return
            error = IotBridgeError(f"cannot {what}: {_describe(exc)}")
            error.__cause__ = exc  # what `raise ... from exc` would chain
            waiter.set_exception(error)

        crt_future.add_done_callback(lambda done: self._post(session, settle, done))
        self._pending.add(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError as exc:
            raise IotBridgeError(f"cannot {what}: no acknowledgement within {timeout:.1f}s") from exc
        finally:
            self._pending.discard(waiter)
            if not waiter.done():
                waiter.cancel()


def _check_qos(qos: int) -> None:
    if qos not in {0, 1}:
        raise IotBridgeError(f"unsupported QoS {qos!r}: 0 or 1")


def _check_reason(code: Any, what: str, reason_string: str | None) -> None:
    if code is not None and int(code) < _FAILED_REASON:
        return
    name = _reason_name(code) if code is not None else "UNKNOWN"
    detail = f" ({reason_string})" if reason_string else ""
    raise AckRefusedError(
        f"cannot {what}: the broker answered {name}{detail}",
        reason_code=int(code) if code is not None else None,
        reason_name=name,
    )


def _reason_name(code: Any) -> str:
    name = getattr(code, "name", None)
    return f"{name}({int(code)})" if isinstance(name, str) else str(code)


def _describe(exc: Any) -> str:
    if exc is None:
        return "none"
    name = getattr(exc, "name", None)  # AwsCrtError: a stable code name and a short message
    return (
        f"{name}: {getattr(exc, 'message', '')}" if isinstance(name, str) else f"{type(exc).__name__}: {exc}"
    )


def _message_from_packet(packet: Any) -> IotMessage:
    payload = packet.payload
    properties = packet.user_properties or ()
    correlation = packet.correlation_data_bytes
    payload_format = packet.payload_format_indicator
    expiry = packet.message_expiry_interval_sec
    qos = packet.qos
    return IotMessage(
        topic=str(packet.topic),
        payload=bytes(payload) if payload is not None else b"",
        qos=int(qos) if qos is not None else 0,
        retain=bool(packet.retain),
        user_properties=tuple((str(p.name), str(p.value)) for p in properties),
        message_expiry_interval_seconds=int(expiry) if expiry is not None else None,
        correlation_data=bytes(correlation) if correlation is not None else None,
        response_topic=packet.response_topic,
        payload_format=int(payload_format) if payload_format is not None else None,
        content_type=packet.content_type,
    )
