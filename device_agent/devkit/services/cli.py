"""The Greengrass CLI's IPC operations: ListComponents, GetComponentDetails, RestartComponent, StopComponent.

They exist only when the device has the Greengrass CLI (`aws.greengrass.Cli`) deployed; a virtual device
started without `--with-cli` does not register these handlers, so the client gets the nucleus's
"not supported" ServiceError. Authorization is under the `aws.greengrass.Cli` destination: resource `*` for
ListComponents, the target component's name otherwise (CLIEventStreamAgent.authorizeRequest).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from device_agent.devkit.ipc.errors import InvalidArgumentsError, ResourceNotFoundError
from device_agent.devkit.ipc.server import CallContext, Handler
from device_agent.devkit.services.common import Authorizing, authorize, optional_str

DESTINATION = "aws.greengrass.Cli"
NS = "aws.greengrass#"


@dataclass(frozen=True, slots=True)
class ComponentInfo:
    name: str
    version: str
    state: str
    configuration: dict[str, Any]

    def as_details(self) -> dict[str, Any]:
        return {
            "componentName": self.name,
            "version": self.version,
            "state": self.state,
            "configuration": self.configuration,
        }


class ComponentControl(Protocol):
    def component_infos(self) -> list[ComponentInfo]: ...
    async def restart_component(self, name: str) -> None: ...
    async def stop_component(self, name: str) -> None: ...


class CliService:
    def __init__(self, authorizer: Authorizing, control: ComponentControl) -> None:
        self._authorizer = authorizer
        self._control = control

    def handlers(self) -> dict[str, Handler]:
        return {
            NS + "ListComponents": self.list_components,
            NS + "GetComponentDetails": self.get_component_details,
            NS + "RestartComponent": self.restart_component,
            NS + "StopComponent": self.stop_component,
        }

    def _check(self, ctx: CallContext, resource: str) -> None:
        authorize(
            self._authorizer,
            component=ctx.component,
            destination=DESTINATION,
            operation=ctx.operation.model_name,
            resource=resource,
        )

    def _find(self, name: str) -> ComponentInfo:
        for info in self._control.component_infos():
            if info.name == name:
                return info
        raise ResourceNotFoundError(
            f"Component {name} not found", resource_type="Component", resource_name=name
        )

    async def list_components(self, ctx: CallContext, _request: dict[str, Any]) -> dict[str, Any]:
        self._check(ctx, "*")
        return {"components": [info.as_details() for info in self._control.component_infos()]}

    async def get_component_details(self, ctx: CallContext, request: dict[str, Any]) -> dict[str, Any]:
        name = _component_name(request)
        self._check(ctx, name)
        return {"componentDetails": self._find(name).as_details()}

    async def restart_component(self, ctx: CallContext, request: dict[str, Any]) -> dict[str, Any]:
        return await self._act(ctx, request, self._control.restart_component)

    async def stop_component(self, ctx: CallContext, request: dict[str, Any]) -> dict[str, Any]:
        return await self._act(ctx, request, self._control.stop_component)

    async def _act(
        self, ctx: CallContext, request: dict[str, Any], action: Callable[[str], Awaitable[None]]
    ) -> dict[str, Any]:
        name = _component_name(request)
        self._check(ctx, name)
        self._find(name)
        status_key = "restartStatus" if ctx.operation.name == "RestartComponent" else "stopStatus"
        await action(name)
        return {status_key: "SUCCEEDED", "message": f"{ctx.operation.name} requested for {name}"}


def _component_name(request: dict[str, Any]) -> str:
    name = optional_str(request, "componentName")
    if not name:
        raise InvalidArgumentsError("componentName is required")
    return name
