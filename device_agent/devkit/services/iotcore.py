"""IoT Core through the nucleus: PublishToIoTCore, SubscribeToIoTCore, SubscribeToIoTCoreConnectionStatus.

Mirrors the nucleus's MqttProxyIPCAgent and MqttClient:
- a publish is *accepted* once it is in the spooler, not when the cloud acknowledges it: the IPC call
  succeeds while offline for QoS 1 (spooled) and fails for QoS 0 unless keepQos0WhenOffline is set
  ("Device is offline. Dropping QoS 0 message."); a full spool rejects new messages;
- the spool is in memory (the nucleus default), drained in order whenever the link is up;
- authorization uses MQTT-style matching under `aws.greengrass.ipc.mqttproxy`.

The link to "the cloud" is either the embedded loopback (messages are recorded in
`<root>/iot-core/published.jsonl` and also reach matching SubscribeToIoTCore subscribers, as a broker
would route them) or an MqttBridge to a real broker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from device_agent.devkit.errors import IotBridgeError
from device_agent.devkit.iot_bridge import AckRefusedError, IotMessage
from device_agent.devkit.ipc.errors import InvalidArgumentsError, ServiceError
from device_agent.devkit.ipc.server import CallContext, Handler, ServerStream
from device_agent.devkit.services.common import Authorizing, authorize, decode_blob, encode_blob, optional_str
from device_agent.devkit.topics import SubscriptionIndex, validate_topic_filter

logger = logging.getLogger(__name__)

DESTINATION = "aws.greengrass.ipc.mqttproxy"
PUBLISH = "aws.greengrass#PublishToIoTCore"
SUBSCRIBE = "aws.greengrass#SubscribeToIoTCore"
SUBSCRIBE_STATUS = "aws.greengrass#SubscribeToIoTCoreConnectionStatus"
DEFAULT_SPOOL_MAX_BYTES = int(2.5 * 1024 * 1024)  # the nucleus's in-memory spooler default
DEFAULT_MAX_MESSAGE_BYTES = 128 * 1024  # AWS IoT Core's message size limit


class IotLink(Protocol):
    """The connection to "the cloud": the loopback or an MqttBridge."""

    @property
    def connected(self) -> bool: ...
    async def start(self, *, wait_connected: float | None = 10.0) -> None: ...
    async def stop(self) -> None: ...
    async def publish(self, message: IotMessage, *, timeout: float = 10.0) -> None: ...
    async def subscribe(self, topic_filter: str, qos: int) -> None: ...
    async def unsubscribe(self, topic_filter: str) -> None: ...
    async def set_offline(self, offline: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class PublishedRecord:
    """One message as it reached the cloud side (what published.jsonl holds)."""

    time: str
    component: str
    topic: str
    qos: int
    payload: bytes

    def as_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"time": self.time, "component": self.component, "topic": self.topic}
        record["qos"] = self.qos
        try:
            record["payload"] = json.loads(self.payload)
            record["encoding"] = "json"
        except (ValueError, UnicodeDecodeError):
            record["payload"] = encode_blob(self.payload)
            record["encoding"] = "base64"
        return record


@dataclass(slots=True)
class _Spooled:
    component: str
    message: IotMessage
    size: int


@dataclass(eq=False, slots=True)
class _IotSubscription:
    topic_filter: str
    stream: ServerStream


class IotCoreService:
    def __init__(
        self,
        *,
        authorizer: Authorizing,
        published_log: Path,
        spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES,
        keep_qos0_when_offline: bool = False,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._authorizer = authorizer
        self._published_log = published_log
        self._spool_max_bytes = spool_max_bytes
        self._keep_qos0 = keep_qos0_when_offline
        self._max_message_bytes = max_message_bytes
        self._spool: collections.deque[_Spooled] = collections.deque()
        self._spool_bytes = 0
        self._wakeup = asyncio.Event()
        self._subscriptions: SubscriptionIndex[_IotSubscription] = SubscriptionIndex()
        self._filter_refs: collections.Counter[str] = collections.Counter()
        self._status_streams: set[ServerStream] = set()
        self._link: IotLink | None = None
        self.published: list[PublishedRecord] = []
        self.refused = 0  # messages the broker refused (dropped after a negative acknowledgement)
        # Observers of what reached the cloud side (tests, the status line); called on the loop.
        self.listeners: list[Callable[[PublishedRecord], None]] = []

    # ---- wiring -----------------------------------------------------------------------------------------

    def attach(self, link: IotLink) -> None:
        self._link = link

    @property
    def online(self) -> bool:
        return self._link is not None and self._link.connected

    @property
    def spooled(self) -> int:
        return len(self._spool)

    def handlers(self) -> dict[str, Handler]:
        return {
            PUBLISH: self.publish_to_iot_core,
            SUBSCRIBE: self.subscribe_to_iot_core,
            SUBSCRIBE_STATUS: self.subscribe_to_connection_status,
        }

    def on_connection_change(self, connected: bool) -> None:
        """Called on the loop by the link whenever the real connection goes up or down."""
        status = "CONNECTED" if connected else "DISCONNECTED"
        logger.info("iotcore.connection_%s spooled=%d", status.lower(), len(self._spool))
        if not connected and not self._keep_qos0:
            self._drop_spooled_qos0()
        for stream in list(self._status_streams):
            stream.send_event({"connectionStatusEvent": {"status": status}})
        self._wakeup.set()

    def on_cloud_message(self, message: IotMessage) -> None:
        """A message from the cloud side: deliver it to every matching SubscribeToIoTCore stream."""
        event = {"message": _mqtt_message_payload(message)}
        for subscription in self._subscriptions.match(message.topic):
            subscription.stream.send_event(event)

    # ---- operations ------------------------------------------------------------------------------------

    async def publish_to_iot_core(self, ctx: CallContext, request: dict[str, Any]) -> dict[str, Any]:
        topic = optional_str(request, "topicName")
        if not topic:
            raise InvalidArgumentsError("Topic is required")
        qos = _qos(request)
        if "payload" not in request or request["payload"] is None:
            raise InvalidArgumentsError("Payload is required")
        payload = decode_blob(request["payload"], "payload")
        authorize(
            self._authorizer,
            component=ctx.component,
            destination=DESTINATION,
            operation=PUBLISH,
            resource=topic,
            message="Not Authorized",
        )
        message = _message_from_request(topic, qos, payload, request)
        self._spool_message(ctx.component, message)
        return {}

    def _spool_message(self, component: str, message: IotMessage) -> None:
        size = len(message.payload)
        if size >= self._max_message_bytes:
            raise ServiceError(
                f"Publish to IoT Core failed: payload of {size} bytes exceeds the maximum message size"
            )
        if not self.online and message.qos == 0 and not self._keep_qos0:
            raise ServiceError("Publish to IoT Core failed: Device is offline. Dropping QoS 0 message.")
        if self._spool_bytes + size > self._spool_max_bytes:
            raise ServiceError("Publish to IoT Core failed: spooler queue is full")
        self._spool.append(_Spooled(component, message, size))
        self._spool_bytes += size
        self._wakeup.set()

    def _drop_spooled_qos0(self) -> None:
        kept = collections.deque(item for item in self._spool if item.message.qos > 0)
        self._spool_bytes = sum(item.size for item in kept)
        self._spool = kept

    async def subscribe_to_iot_core(self, ctx: CallContext, request: dict[str, Any]) -> dict[str, Any]:
        topic_filter = optional_str(request, "topicName")
        if not topic_filter:
            raise InvalidArgumentsError("Topic is required")
        qos = _qos(request)
        try:
            validate_topic_filter(topic_filter)
        except ValueError as exc:
            raise InvalidArgumentsError(f"Invalid topic filter: {exc}") from exc
        authorize(
            self._authorizer,
            component=ctx.component,
            destination=DESTINATION,
            operation=SUBSCRIBE,
            resource=topic_filter,
            message="Not Authorized",
        )
        if self._filter_refs[topic_filter] == 0 and self._link is not None:
            try:
                await self._link.subscribe(topic_filter, qos)
            except IotBridgeError as exc:
                raise ServiceError(f"Subscribe to IoT Core failed: {exc}") from exc
        self._filter_refs[topic_filter] += 1
        subscription = _IotSubscription(topic_filter, ctx.stream)
        self._subscriptions.add(topic_filter, subscription)
        ctx.stream.on_close(lambda: self._unsubscribe(subscription))
        return {}

    def _unsubscribe(self, subscription: _IotSubscription) -> None:
        self._subscriptions.remove(subscription.topic_filter, subscription)
        self._filter_refs[subscription.topic_filter] -= 1
        if self._filter_refs[subscription.topic_filter] <= 0:
            del self._filter_refs[subscription.topic_filter]
            if self._link is not None:
                task = asyncio.get_running_loop().create_task(
                    self._link.unsubscribe(subscription.topic_filter)
                )
                task.add_done_callback(_log_failure)

    async def subscribe_to_connection_status(
        self, ctx: CallContext, _request: dict[str, Any]
    ) -> dict[str, Any]:
        stream = ctx.stream
        self._status_streams.add(stream)
        stream.on_close(lambda: self._status_streams.discard(stream))
        # The current status as the first event, so a component never has to guess (held until the response).
        stream.send_event(
            {"connectionStatusEvent": {"status": "CONNECTED" if self.online else "DISCONNECTED"}}
        )
        return {}

    # ---- draining the spool ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Drain the spool to the link, in order, whenever the link is up. Runs until cancelled."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._spool and self.online and self._link is not None:
                item = self._spool[0]
                try:
                    await self._link.publish(item.message)
                except AckRefusedError as exc:
                    # The broker answered and said no (e.g. NOT_AUTHORIZED by its policy): retrying cannot
                    # help, and holding the head would block every later message. Drop it, as IoT Core would.
                    logger.warning(
                        "iotcore.publish_refused topic=%s reason=%s", item.message.topic, exc.reason_name
                    )
                    self._pop(item)
                    self.refused += 1
                    continue
                except IotBridgeError as exc:
                    logger.warning("iotcore.publish_failed topic=%s error=%s", item.message.topic, exc)
                    await asyncio.sleep(0.5)  # the link reconnects by itself; retry the head
                    continue
                self._pop(item)
                self._record(item)

    def _pop(self, item: _Spooled) -> None:
        if self._spool and self._spool[0] is item:
            self._spool.popleft()
            self._spool_bytes -= item.size

    def _record(self, item: _Spooled) -> None:
        record = PublishedRecord(
            time=datetime.now(UTC).isoformat(timespec="milliseconds"),
            component=item.component,
            topic=item.message.topic,
            qos=item.message.qos,
            payload=item.message.payload,
        )
        self.published.append(record)
        line = json.dumps(record.as_json(), separators=(",", ":")) + "\n"
        with self._published_log.open("a", encoding="utf-8") as log:
            log.write(line)
        for listener in list(self.listeners):
            try:
                listener(record)
            except Exception:
                logger.exception("iotcore.listener_failed")


class LoopbackLink:
    """The embedded "cloud": always reachable unless taken offline; routes publishes back to subscribers."""

    def __init__(self, service: IotCoreService) -> None:
        self._service = service
        self._offline = False
        self._started = False

    @property
    def connected(self) -> bool:
        return self._started and not self._offline

    async def start(self, *, wait_connected: float | None = 10.0) -> None:  # noqa: ARG002 - the bridge's shape
        self._started = True
        self._service.on_connection_change(self.connected)

    async def stop(self) -> None:
        was = self.connected
        self._started = False
        if was:
            self._service.on_connection_change(connected=False)

    async def publish(self, message: IotMessage, *, timeout: float = 10.0) -> None:  # noqa: ARG002
        if not self.connected:
            raise IotBridgeError("loopback link is offline")
        # As a broker would: a device subscribed to a topic it publishes to receives its own message.
        self._service.on_cloud_message(message)

    async def subscribe(self, topic_filter: str, qos: int) -> None:
        pass

    async def unsubscribe(self, topic_filter: str) -> None:
        pass

    async def set_offline(self, offline: bool) -> None:
        if offline == self._offline:
            return
        self._offline = offline
        if self._started:
            self._service.on_connection_change(not offline)

    def inject(self, message: IotMessage) -> None:
        """A cloud-to-device message (`gg-virtual iot publish`)."""
        if not self.connected:
            raise IotBridgeError("the virtual device is offline; the message cannot reach it")
        self._service.on_cloud_message(message)


def _log_failure(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        if (exc := task.exception()) is not None:
            logger.warning("iotcore.unsubscribe_failed error=%s", exc)


def _qos(request: dict[str, Any]) -> int:
    value = request.get("qos")
    if value is None:
        raise InvalidArgumentsError("QoS is required")
    if value not in ("0", "1"):
        raise InvalidArgumentsError(f"Invalid QoS value: {value}")
    return int(value)


def _message_from_request(topic: str, qos: int, payload: bytes, request: dict[str, Any]) -> IotMessage:
    properties = request.get("userProperties") or []
    if not isinstance(properties, list):
        raise InvalidArgumentsError("userProperties must be a list")
    pairs = []
    for item in properties:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("key"), str)
            or not isinstance(item.get("value"), str)
        ):
            raise InvalidArgumentsError("userProperties entries need a string key and value")
        pairs.append((item["key"], item["value"]))
    correlation = request.get("correlationData")
    payload_format = request.get("payloadFormat")
    expiry = request.get("messageExpiryIntervalSeconds")
    return IotMessage(
        topic=topic,
        payload=payload,
        qos=qos,
        retain=bool(request.get("retain", False)),
        user_properties=tuple(pairs),
        message_expiry_interval_seconds=int(expiry) if isinstance(expiry, int) else None,
        correlation_data=decode_blob(correlation, "correlationData") if correlation is not None else None,
        response_topic=optional_str(request, "responseTopic"),
        payload_format=int(payload_format) if payload_format in ("0", "1") else None,
        content_type=optional_str(request, "contentType"),
    )


def _mqtt_message_payload(message: IotMessage) -> dict[str, Any]:
    body: dict[str, Any] = {"topicName": message.topic, "payload": encode_blob(message.payload)}
    if message.retain:
        body["retain"] = True
    if message.user_properties:
        body["userProperties"] = [{"key": k, "value": v} for k, v in message.user_properties]
    if message.message_expiry_interval_seconds is not None:
        body["messageExpiryIntervalSeconds"] = message.message_expiry_interval_seconds
    if message.correlation_data is not None:
        body["correlationData"] = encode_blob(message.correlation_data)
    if message.response_topic is not None:
        body["responseTopic"] = message.response_topic
    if message.payload_format is not None:
        body["payloadFormat"] = str(message.payload_format)
    if message.content_type is not None:
        body["contentType"] = message.content_type
    return body
