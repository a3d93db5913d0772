"""An asyncio session over Greengrass IPC that survives nucleus restarts.

    async with IpcSession() as ipc:
        await ipc.subscribe("commands/reboot", on_command)          # handlers run on the loop
        await ipc.publish_to_iot_core("dt/thing/status", b"{}", qos=Qos.AT_LEAST_ONCE)

Built on the SDK's event-stream `Connection` and its generated `GreengrassCoreIPCClient` operations (what
`GreengrassCoreIPCClientV2` wraps), driven without blocking the loop:

- Connecting retries with capped exponential backoff and full jitter (`device_agent.retry`).
- When the connection closes (the SDK's `LifecycleHandler.on_disconnect`), a watcher task reconnects with
  backoff and re-subscribes every live `Subscription` before calls go through again, so a component's
  handlers keep receiving after a nucleus restart without noticing.
- Calls made while disconnected **wait** for the reconnection, bounded by their timeout; then they raise
  `TimedOutError`. A call in flight when the connection drops fails with `ConnectionLostError` and is not
  repeated: a publish may or may not have reached the nucleus, only the caller can decide to retry.
- Every call has a timeout (the session default, or `timeout=` per call) → `TimedOutError`.
- SDK errors are translated into `device_agent.errors` (see `device_agent.ipc_errors`); the SVCUID token is
  read once, kept only inside the SDK's CONNECT amender, and never logged or put in a message.

One connection object (and one CRT event-loop thread) serves the whole session: the SDK supports
`connect()` again once a connection has closed. `close()` ends the streams, closes the connection, waits for
it to shut down and for the CRT thread to exit, so nothing native outlives the session.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from typing import Any

from device_agent import ipc_types as types
from device_agent.ipc_core import IpcCore
from device_agent.ipc_errors import OperationNotSupportedError
from device_agent.ipc_streams import Handler, Subscription
from device_agent.ipc_types import (
    ComponentInfo,
    ComponentUpdate,
    ConfigurationUpdate,
    IotCoreConnectionStatus,
    IotCoreMessage,
    LocalMessage,
    Qos,
    ReceiveMode,
    ReportedState,
    Secret,
    ValidationRequest,
    Validity,
)

__all__ = [
    "ComponentInfo",
    "ComponentUpdate",
    "ConfigurationUpdate",
    "IotCoreConnectionStatus",
    "IotCoreMessage",
    "IpcSession",
    "LocalMessage",
    "OperationNotSupportedError",
    "Qos",
    "ReceiveMode",
    "ReportedState",
    "Secret",
    "Subscription",
    "ValidationRequest",
    "Validity",
]


class IpcSession(IpcCore):
    """A Greengrass IPC session for one component process: `async with IpcSession() as ipc:`.

    Every call takes `timeout=` (seconds; the session's default when None) and raises the library's errors
    (`device_agent.errors`). Subscriptions survive reconnections; see `IpcCore` for the arguments.
    """

    # ---- local pub/sub ----------------------------------------------------------------------------------

    async def publish(self, topic: str, message: Mapping[str, Any], *, timeout: float | None = None) -> None:
        """Publish a JSON object on local pub/sub."""
        from awsiot.greengrasscoreipc import model  # noqa: PLC0415

        publish = model.PublishMessage(json_message=model.JsonMessage(message=dict(message)))
        await self._call(
            "publish_to_topic", model.PublishToTopicRequest(topic=topic, publish_message=publish), timeout
        )

    async def publish_binary(self, topic: str, payload: bytes, *, timeout: float | None = None) -> None:
        from awsiot.greengrasscoreipc import model  # noqa: PLC0415

        publish = model.PublishMessage(binary_message=model.BinaryMessage(message=bytes(payload)))
        await self._call(
            "publish_to_topic", model.PublishToTopicRequest(topic=topic, publish_message=publish), timeout
        )

    async def subscribe(
        self,
        topic: str,
        handler: Handler[LocalMessage],
        *,
        receive_mode: ReceiveMode | None = None,
        timeout: float | None = None,
    ) -> Subscription[LocalMessage]:
        """Subscribe to local pub/sub (JSON and binary messages alike; see `LocalMessage.binary`)."""
        from awsiot.greengrasscoreipc import model  # noqa: PLC0415

        mode = None if receive_mode is None else receive_mode.value
        return await self._subscribe(
            f"local:{topic}",
            operation="subscribe_to_topic",
            make_request=lambda: model.SubscribeToTopicRequest(topic=topic, receive_mode=mode),
            convert=types.local_message,
            handler=handler,
            timeout=timeout,
        )

    # ---- IoT Core -----------------------------------------------------------------------------------------

    async def publish_to_iot_core(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: Qos = Qos.AT_LEAST_ONCE,
        retain: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Returns when the nucleus accepted the message (it spools QoS 1 while offline)."""
        from awsiot.greengrasscoreipc import model  # noqa: PLC0415

        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        request = model.PublishToIoTCoreRequest(
            topic_name=topic, qos=str(int(qos)), payload=data, retain=retain or None
        )
        await self._call("publish_to_iot_core", request, timeout)

    async def subscribe_to_iot_core(
        self,
        topic: str,
        handler: Handler[IotCoreMessage],
        *,
        qos: Qos = Qos.AT_LEAST_ONCE,
        timeout: float | None = None,
    ) -> Subscription[IotCoreMessage]:
        from awsiot.greengrasscoreipc import model  # noqa: PLC0415

        return await self._subscribe(
            f"iot:{topic}",
            operation="subscribe_to_iot_core",
            make_request=lambda: model.SubscribeToIoTCoreRequest(topic_name=topic, qos=str(int(qos))),
            convert=types.iot_core_message,
            handler=handler,
            timeout=timeout,
        )

    async def subscribe_to_connection_status(
        self, handler: Handler[IotCoreConnectionStatus], *, timeout: float | None = None
    ) -> Subscription[IotCoreConnectionStatus]:
        """IoT Core connection status. Raises `OperationNotSupportedError` on a nucleus without it."""
        from awsiot.greengrasscoreipc import model  # noqa: PLC0415

        return await self._subscribe(
            "iot-status",
            operation="subscribe_to_iot_core_connection_status",
            make_request=model.SubscribeToIoTCoreConnectionStatusRequest,
            convert=types.connection_status,
            handler=handler,
            timeout=timeout,
        )

    # ---- configuration ----------------------------------------------------------------------------------

    async def get_configuration(
        self, key_path: Sequence[str] = (), *, component: str | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """The map at `key_path` (as the nucleus answers: a leaf comes back as `{leaf_name: value}`)."""
        from awsiot.greengrasscoreipc import model  # noqa: PLC0415

        request = model.GetConfigurationRequest(component_name=component, key_path=list(key_path) or None)
        response = await self._call("get_configuration", request, timeout)
        value = response.value
        return dict(value) if isinstance(value, Mapping) else {}

    async def update_configuration(
        self,
        value: Mapping[str, Any],
        *,
        key_path: Sequence[str] = (),
        timestamp: float | None = None,
        timeout: float | None = None,
    ) -> None:
        """Merge `value` at `key_path` into this component's configuration. The timestamp defaults to now."""
        from awsiot.greengrasscoreipc import model  # noqa: PLC0415

        stamp = dt.datetime.fromtimestamp(time.time() if timestamp is None else timestamp, tz=dt.UTC)
        request = model.UpdateConfigurationRequest(
            key_path=list(key_path) or None, timestamp=stamp, value_to_merge=dict(value)
        )
        await self._call("update_configuration", request, timeout)

    async def subscribe_to_configuration_updates(
        self,
        handler: Handler[ConfigurationUpdate],
        *,
        key_path: Sequence[str] = (),
        component: str | None = None,
        timeout: float | None = None,
    ) -> Subscription[ConfigurationUpdate]:
        from awsiot.greengrasscoreipc import model  # noqa: PLC0415

        path = list(key_path) or None
        return await self._subscribe(
            f"config:{component or ''}:{'/'.join(key_path)}",
            operation="subscribe_to_configuration_update",
            make_request=lambda: model.SubscribeToConfigurationUpdateRequest(
                component_name=component, key_path=path
            ),
            convert=types.configuration_update,
            handler=handler,
            timeout=timeout,
        )

    async def subscribe_to_validation(
        self, handler: Handler[ValidationRequest], *, timeout: float | None = None
    ) -> Subscription[ValidationRequest]:
        """Deployment validation requests; answer each with `send_validity`."""
        from awsiot.greengrasscoreipc import model  # noqa: PLC0415

        return await self._subscribe(
            "validation",
            operation="subscribe_to_validate_configuration_updates",
            make_request=model.SubscribeToValidateConfigurationUpdatesRequest,
            convert=types.validation_request,
            handler=handler,
            timeout=timeout,
        )

    async def send_validity(
        self,
        deployment_id: str,
        validity: Validity,
        message: str | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        from awsiot.greengrasscoreipc import model  # noqa: PLC0415

        report = model.ConfigurationValidityReport(
            status=validity.value, deployment_id=deployment_id, message=message
        )
        request = model.SendConfigurationValidityReportRequest(configuration_validity_report=report)
        await self._call("send_configuration_validity_report", request, timeout)

    # ---- lifecycle and deployments ----------------------------------------------------------------------

    async def update_state(self, state: ReportedState, *, timeout: float | None = None) -> None:
        from awsiot.greengrasscoreipc import model  # noqa: PLC0415

        await self._call("update_state", model.UpdateStateRequest(state=state.value), timeout)

    async def subscribe_to_component_updates(
        self, handler: Handler[ComponentUpdate], *, timeout: float | None = None
    ) -> Subscription[ComponentUpdate]:
        from awsiot.greengrasscoreipc import model  # noqa: PLC0415

        return await self._subscribe(
            "component-updates",
            operation="subscribe_to_component_updates",
            make_request=model.SubscribeToComponentUpdatesRequest,
            convert=types.component_update,
            handler=handler,
            timeout=timeout,
        )

    async def defer_update(
        self,
        deployment_id: str,
        *,
        recheck_after: float,
        message: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Ask the nucleus to wait `recheck_after` seconds before it asks again (0 lets the update go)."""
        from awsiot.greengrasscoreipc import model  # noqa: PLC0415

        request = model.DeferComponentUpdateRequest(
            deployment_id=deployment_id, message=message, recheck_after_ms=round(recheck_after * 1000)
        )
        await self._call("defer_component_update", request, timeout)

    # ---- secrets and the CLI ----------------------------------------------------------------------------

    async def get_secret(
        self,
        secret_id: str,
        *,
        version_id: str | None = None,
        version_stage: str | None = None,
        refresh: bool = False,
        timeout: float | None = None,
    ) -> Secret:
        from awsiot.greengrasscoreipc import model  # noqa: PLC0415

        request = model.GetSecretValueRequest(
            secret_id=secret_id, version_id=version_id, version_stage=version_stage, refresh=refresh or None
        )
        return types.secret(await self._call("get_secret_value", request, timeout))

    async def list_components(self, *, timeout: float | None = None) -> list[ComponentInfo]:
        """Needs `aws.greengrass.Cli` on the device (else `OperationNotSupportedError`)."""
        from awsiot.greengrasscoreipc import model  # noqa: PLC0415

        response = await self._call("list_components", model.ListComponentsRequest(), timeout)
        return [types.component_info(c) for c in response.components or ()]

    async def restart_component(self, name: str, *, timeout: float | None = None) -> bool:
        """Needs `aws.greengrass.Cli`; True when the nucleus accepted the restart."""
        from awsiot.greengrasscoreipc import model  # noqa: PLC0415

        request = model.RestartComponentRequest(component_name=name)
        response = await self._call("restart_component", request, timeout)
        return bool(response.restart_status == "SUCCEEDED")
