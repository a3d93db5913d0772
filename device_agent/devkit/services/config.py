"""Configuration over IPC, as the nucleus's ConfigStoreIPCEventStreamAgent serves it.

GetConfiguration, UpdateConfiguration and SubscribeToConfigurationUpdate work on the configuration store;
SubscribeToValidateConfigurationUpdates and SendConfigurationValidityReport let a component vote on a
deployment's configuration before it is applied (the deployment code asks through `validate`). None of these
operations is authorized by policy in the nucleus: any authenticated component may call them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from typing import Any

from device_agent.devkit.configstore import ConfigStore
from device_agent.devkit.errors import ConfigKeyNotFoundError, InvalidUpdateError, StaleUpdateError
from device_agent.devkit.ipc.errors import (
    FailedUpdateConditionCheckError,
    InvalidArgumentsError,
    ResourceNotFoundError,
)
from device_agent.devkit.ipc.server import CallContext, Handler, ServerStream
from device_agent.devkit.services.common import collect_answers, key_path, optional_str

logger = logging.getLogger(__name__)

NS = "aws.greengrass#"


@dataclass(frozen=True, slots=True)
class ValidityReport:
    component: str
    accepted: bool
    message: str


class ConfigService:
    def __init__(self, store: ConfigStore) -> None:
        self._store = store
        self._validators: dict[str, ServerStream] = {}
        # deployment id -> component -> future for its report
        self._pending: dict[str, dict[str, asyncio.Future[ValidityReport]]] = {}
        self._event_counter = itertools.count(1)

    def handlers(self) -> dict[str, Handler]:
        return {
            NS + "GetConfiguration": self.get_configuration,
            NS + "UpdateConfiguration": self.update_configuration,
            NS + "SubscribeToConfigurationUpdate": self.subscribe_to_configuration_update,
            NS + "SubscribeToValidateConfigurationUpdates": self.subscribe_to_validate_configuration_updates,
            NS + "SendConfigurationValidityReport": self.send_configuration_validity_report,
        }

    async def get_configuration(self, ctx: CallContext, request: dict[str, Any]) -> dict[str, Any]:
        component = optional_str(request, "componentName") or ctx.component
        path = key_path(request)
        try:
            # A leaf comes back as {leafName: value}, and `_`-prefixed keys stay hidden, as on the nucleus.
            value = self._store.get_for_ipc(component, path)
        except ConfigKeyNotFoundError as exc:
            raise ResourceNotFoundError("Key not found", resource_type="Configuration") from exc
        return {"componentName": component, "value": value}

    async def update_configuration(self, ctx: CallContext, request: dict[str, Any]) -> dict[str, Any]:
        timestamp = request.get("timestamp")
        if timestamp is None:
            raise InvalidArgumentsError("Timestamp is required")
        if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
            raise InvalidArgumentsError("Timestamp must be a number of seconds")
        value = request.get("valueToMerge")
        if value is None:
            raise InvalidArgumentsError("ValueToMerge is required")
        path = key_path(request)
        if not isinstance(value, dict):
            raise InvalidArgumentsError("ValueToMerge must be an object")
        try:
            self._store.update_from_ipc(ctx.component, path, value, float(timestamp))
        except InvalidUpdateError as exc:
            raise InvalidArgumentsError(str(exc)) from exc
        except StaleUpdateError as exc:
            raise FailedUpdateConditionCheckError(str(exc)) from exc
        except ConfigKeyNotFoundError as exc:
            raise ResourceNotFoundError(str(exc), resource_type="Configuration") from exc
        return {}

    async def subscribe_to_configuration_update(
        self, ctx: CallContext, request: dict[str, Any]
    ) -> dict[str, Any]:
        component = optional_str(request, "componentName") or ctx.component
        path = key_path(request)
        stream = ctx.stream

        def on_change(changed: tuple[str, ...]) -> None:
            event = {"configurationUpdateEvent": {"componentName": component, "keyPath": list(changed)}}
            if not stream.send_event(event):
                unsubscribe()

        try:
            unsubscribe = self._store.subscribe(component, path, on_change)
        except ConfigKeyNotFoundError as exc:
            raise ResourceNotFoundError("Key not found", resource_type="Configuration") from exc
        stream.on_close(unsubscribe)
        return {}

    async def subscribe_to_validate_configuration_updates(
        self, ctx: CallContext, _request: dict[str, Any]
    ) -> dict[str, Any]:
        stream = ctx.stream
        component = ctx.component
        self._validators[component] = stream  # one validator per component: the latest wins

        def forget() -> None:
            if self._validators.get(component) is stream:
                del self._validators[component]

        stream.on_close(forget)
        return {}

    async def send_configuration_validity_report(
        self, ctx: CallContext, request: dict[str, Any]
    ) -> dict[str, Any]:
        report = request.get("configurationValidityReport")
        if not isinstance(report, dict):
            raise InvalidArgumentsError("configurationValidityReport is required")
        deployment_id = report.get("deploymentId")
        if not isinstance(deployment_id, str) or not deployment_id:
            raise InvalidArgumentsError(
                "Cannot accept configuration validity report, the deployment ID provided was null"
            )
        status = report.get("status")
        if status not in ("ACCEPTED", "REJECTED"):
            raise InvalidArgumentsError(f"Invalid status {status}")
        future = self._pending.get(deployment_id, {}).get(ctx.component)
        if future is None or future.done():
            raise InvalidArgumentsError("Validation request either timed out or was never made")
        message = report.get("message")
        future.set_result(
            ValidityReport(ctx.component, status == "ACCEPTED", message if isinstance(message, str) else "")
        )
        return {}

    def has_validator(self, component: str) -> bool:
        return component in self._validators

    async def validate(
        self, deployment_id: str, proposals: dict[str, dict[str, Any]], *, timeout: float
    ) -> list[ValidityReport]:
        """Ask each subscribed component to validate its proposed configuration; gather the reports.

        A component that does not answer within `timeout` is taken as accepting, as the nucleus does.
        """
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future[ValidityReport]] = {}
        for component, configuration in proposals.items():
            stream = self._validators.get(component)
            if stream is None:
                continue
            futures[component] = loop.create_future()
            event = {
                "validateConfigurationUpdateEvent": {
                    "deploymentId": deployment_id,
                    "configuration": configuration,
                }
            }
            stream.send_event(event)
        answers = await collect_answers(self._pending, deployment_id, futures, timeout=timeout)
        for component in futures.keys() - answers.keys():
            logger.info("config.validation_timeout component=%s deployment=%s", component, deployment_id)
        return list(answers.values())
