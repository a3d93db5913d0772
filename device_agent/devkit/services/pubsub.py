"""Local publish/subscribe (PublishToTopic, SubscribeToTopic), as the nucleus's PubSubIPCEventStreamAgent.

- Publishing to a topic that contains `+`, `#` or `*` is an InvalidArgumentsError; subscribing may use MQTT
  `+`/`#` filters. Authorization uses STANDARD matching on the topic (or filter) as written.
- JSON stays JSON and binary stays binary; `context.topic` is set on delivery.
- RECEIVE_MESSAGES_FROM_OTHERS skips the publishing component's own subscription. The default receive mode
  is FROM_OTHERS for wildcard filters and ALL for exact topics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from device_agent.devkit.ipc.errors import InvalidArgumentsError
from device_agent.devkit.ipc.server import CallContext, Handler, ServerStream
from device_agent.devkit.services.common import Authorizing, authorize, decode_blob, optional_str
from device_agent.devkit.topics import SubscriptionIndex, validate_topic_filter, validate_topic_name

logger = logging.getLogger(__name__)

DESTINATION = "aws.greengrass.ipc.pubsub"
PUBLISH = "aws.greengrass#PublishToTopic"
SUBSCRIBE = "aws.greengrass#SubscribeToTopic"
RECEIVE_ALL = "RECEIVE_ALL_MESSAGES"
RECEIVE_FROM_OTHERS = "RECEIVE_MESSAGES_FROM_OTHERS"


@dataclass(eq=False, slots=True)
class _Subscription:
    component: str
    stream: ServerStream
    from_others_only: bool


class PubSubService:
    def __init__(self, authorizer: Authorizing) -> None:
        self._authorizer = authorizer
        self._subscriptions: SubscriptionIndex[_Subscription] = SubscriptionIndex()
        # Observers of every local message (tests watch heartbeats and events this way); called on the loop.
        self.listeners: list[Callable[[str, dict[str, Any], str | None], None]] = []

    def handlers(self) -> dict[str, Handler]:
        return {PUBLISH: self.publish_to_topic, SUBSCRIBE: self.subscribe_to_topic}

    async def publish_to_topic(self, ctx: CallContext, request: dict[str, Any]) -> dict[str, Any]:
        topic = optional_str(request, "topic")
        if not topic:
            raise InvalidArgumentsError("Publish topic must not be null")
        try:
            validate_topic_name(topic)
        except ValueError as exc:
            raise InvalidArgumentsError(f"Publish topic must not contain a wildcard: {exc}") from exc
        authorize(
            self._authorizer,
            component=ctx.component,
            destination=DESTINATION,
            operation=PUBLISH,
            resource=topic,
        )
        event = self._event_for(request.get("publishMessage"), topic)
        self.deliver(topic, event, publisher=ctx.component)
        return {}

    def deliver(self, topic: str, event: dict[str, Any], *, publisher: str | None) -> int:
        """Send one event to every matching subscription; returns how many streams took it."""
        for listener in list(self.listeners):
            try:
                listener(topic, event, publisher)
            except Exception:
                logger.exception("pubsub.listener_failed")
        delivered = 0
        for subscription in self._subscriptions.match(topic):
            if subscription.from_others_only and subscription.component == publisher:
                continue
            if subscription.stream.send_event(event):
                delivered += 1
        return delivered

    @staticmethod
    def _event_for(message: object, topic: str) -> dict[str, Any]:
        if not isinstance(message, dict):
            raise InvalidArgumentsError("publishMessage is required")
        json_message = message.get("jsonMessage")
        binary_message = message.get("binaryMessage")
        if (json_message is None) == (binary_message is None):
            raise InvalidArgumentsError(
                "publishMessage must set exactly one of jsonMessage and binaryMessage"
            )
        if json_message is not None:
            if not isinstance(json_message, dict):
                raise InvalidArgumentsError("jsonMessage must be an object")
            return {"jsonMessage": {"message": json_message.get("message"), "context": {"topic": topic}}}
        if not isinstance(binary_message, dict):
            raise InvalidArgumentsError("binaryMessage must be an object")
        payload = binary_message.get("message", "")
        decode_blob(
            payload, "binaryMessage.message"
        )  # reject bad base64 at the publisher, not the subscriber
        return {"binaryMessage": {"message": payload, "context": {"topic": topic}}}

    async def subscribe_to_topic(self, ctx: CallContext, request: dict[str, Any]) -> dict[str, Any]:
        topic = optional_str(request, "topic")
        if not topic:
            raise InvalidArgumentsError("Subscribe topic must not be null")
        try:
            validate_topic_filter(topic)
        except ValueError as exc:
            raise InvalidArgumentsError(f"Invalid topic filter: {exc}") from exc
        authorize(
            self._authorizer,
            component=ctx.component,
            destination=DESTINATION,
            operation=SUBSCRIBE,
            resource=topic,
        )
        mode = optional_str(request, "receiveMode")
        if mode not in (None, RECEIVE_ALL, RECEIVE_FROM_OTHERS):
            raise InvalidArgumentsError(f"Invalid receiveMode {mode}")
        if mode is None:
            mode = RECEIVE_FROM_OTHERS if ("+" in topic or "#" in topic) else RECEIVE_ALL
        subscription = _Subscription(ctx.component, ctx.stream, mode == RECEIVE_FROM_OTHERS)
        self._subscriptions.add(topic, subscription)

        def unsubscribe() -> None:
            self._subscriptions.remove(topic, subscription)

        ctx.stream.on_close(unsubscribe)
        logger.debug("pubsub.subscribed component=%s topic=%s mode=%s", ctx.component, topic, mode)
        return {}
