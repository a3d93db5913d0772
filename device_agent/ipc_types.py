"""Plain, typed values that the IPC session hands to components, converted from the SDK's model shapes.

Components never see `awsiot` objects: events and results are small frozen dataclasses, so handlers are
easy to type and test, and a secret value cannot leak through an SDK `repr`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Qos(enum.IntEnum):
    """MQTT quality of service for IoT Core through the nucleus (it sends the strings "0" and "1")."""

    AT_MOST_ONCE = 0
    AT_LEAST_ONCE = 1


class ReceiveMode(enum.StrEnum):
    ALL = "RECEIVE_ALL_MESSAGES"
    FROM_OTHERS = "RECEIVE_MESSAGES_FROM_OTHERS"


class ReportedState(enum.StrEnum):
    RUNNING = "RUNNING"
    ERRORED = "ERRORED"


class Validity(enum.StrEnum):
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"


@dataclass(frozen=True)
class LocalMessage:
    """A local pub/sub message: `payload` is the decoded JSON for JSON messages, bytes for binary ones."""

    topic: str | None
    payload: Any
    binary: bool


@dataclass(frozen=True)
class IotCoreMessage:
    topic: str
    payload: bytes = field(repr=False)
    retain: bool = False


@dataclass(frozen=True)
class IotCoreConnectionStatus:
    connected: bool


@dataclass(frozen=True)
class ConfigurationUpdate:
    """One changed node; `key_path` is relative to the component's `configuration`."""

    component: str | None
    key_path: tuple[str, ...]


@dataclass(frozen=True)
class ValidationRequest:
    """A deployment asks whether the proposed configuration is acceptable; answer with `send_validity`."""

    deployment_id: str
    configuration: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class ComponentUpdate:
    """`pre` events may be deferred (`defer_update`); `post` events say the deployment finished."""

    deployment_id: str
    pre: bool
    ggc_restarting: bool = False


@dataclass(frozen=True)
class ComponentInfo:
    name: str
    version: str | None
    state: str | None


@dataclass(frozen=True)
class Secret:
    """A secret from the secret manager. Its repr never shows the value; read `.text` or `.binary`."""

    secret_id: str | None
    version_id: str | None
    text: str | None = field(repr=False)
    binary: bytes | None = field(repr=False)

    def __str__(self) -> str:
        return f"Secret(secret_id={self.secret_id!r}, value=<hidden>)"


# ---- conversions from SDK shapes (untyped at the boundary) -----------------------------------------------


def local_message(event: Any) -> LocalMessage:
    if event.json_message is not None:
        message = event.json_message
        return LocalMessage(topic=_topic(message.context), payload=message.message, binary=False)
    message = event.binary_message
    payload = bytes(message.message) if message.message is not None else b""
    return LocalMessage(topic=_topic(message.context), payload=payload, binary=True)


def iot_core_message(event: Any) -> IotCoreMessage:
    message = event.message
    return IotCoreMessage(
        topic=str(message.topic_name),
        payload=bytes(message.payload) if message.payload is not None else b"",
        retain=bool(message.retain),
    )


def connection_status(event: Any) -> IotCoreConnectionStatus:
    status = event.connection_status_event.status if event.connection_status_event is not None else None
    return IotCoreConnectionStatus(connected=status == "CONNECTED")


def configuration_update(event: Any) -> ConfigurationUpdate:
    update = event.configuration_update_event
    return ConfigurationUpdate(component=update.component_name, key_path=tuple(update.key_path or ()))


def validation_request(event: Any) -> ValidationRequest:
    request = event.validate_configuration_update_event
    return ValidationRequest(
        deployment_id=str(request.deployment_id), configuration=request.configuration or {}
    )


def component_update(event: Any) -> ComponentUpdate:
    if event.pre_update_event is not None:
        pre = event.pre_update_event
        return ComponentUpdate(
            deployment_id=str(pre.deployment_id), pre=True, ggc_restarting=bool(pre.is_ggc_restarting)
        )
    return ComponentUpdate(deployment_id=str(event.post_update_event.deployment_id), pre=False)


def secret(response: Any) -> Secret:
    value = response.secret_value
    return Secret(
        secret_id=response.secret_id,
        version_id=response.version_id,
        text=value.secret_string if value is not None else None,
        binary=bytes(value.secret_binary) if value is not None and value.secret_binary is not None else None,
    )


def component_info(details: Any) -> ComponentInfo:
    return ComponentInfo(name=str(details.component_name), version=details.version, state=details.state)


def _topic(context: Any) -> str | None:
    return None if context is None else context.topic
