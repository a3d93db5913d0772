"""Lifecycle over IPC: UpdateState, SubscribeToComponentUpdates and DeferComponentUpdate.

As in the nucleus's LifecycleIPCEventStreamAgent, none of these is authorized by policy. Component-update
events arrive only during deployments: the deployment code calls `notify_pre_update` and waits for
deferrals, then `notify_post_update`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from device_agent.devkit.errors import LifecycleError
from device_agent.devkit.ipc.errors import InvalidArgumentsError, ResourceNotFoundError, ServiceError
from device_agent.devkit.ipc.server import CallContext, Handler, ServerStream
from device_agent.devkit.services.common import collect_answers, optional_str

logger = logging.getLogger(__name__)

NS = "aws.greengrass#"
REPORTABLE_STATES = ("RUNNING", "ERRORED")


@dataclass(frozen=True, slots=True)
class Deferral:
    component: str
    recheck_after_ms: int
    message: str


class LifecycleService:
    def __init__(self, report_state: Callable[[str, str], None]) -> None:
        self._report_state = report_state
        self._update_streams: dict[str, set[ServerStream]] = {}
        # deployment id -> component -> future of its answer to the pre-update event
        self._pending: dict[str, dict[str, asyncio.Future[Deferral]]] = {}

    def handlers(self) -> dict[str, Handler]:
        return {
            NS + "UpdateState": self.update_state,
            NS + "SubscribeToComponentUpdates": self.subscribe_to_component_updates,
            NS + "DeferComponentUpdate": self.defer_component_update,
        }

    async def update_state(self, ctx: CallContext, request: dict[str, Any]) -> dict[str, Any]:
        state = optional_str(request, "state")
        if state not in REPORTABLE_STATES:
            raise InvalidArgumentsError(f"Invalid state {state}; expected RUNNING or ERRORED")
        try:
            self._report_state(ctx.component, state)
        except LifecycleError as exc:
            raise ResourceNotFoundError(
                str(exc), resource_type="Component", resource_name=ctx.component
            ) from exc
        return {}

    async def subscribe_to_component_updates(
        self, ctx: CallContext, _request: dict[str, Any]
    ) -> dict[str, Any]:
        streams = self._update_streams.setdefault(ctx.component, set())
        stream = ctx.stream
        streams.add(stream)
        stream.on_close(lambda: streams.discard(stream))
        return {}

    async def defer_component_update(self, ctx: CallContext, request: dict[str, Any]) -> dict[str, Any]:
        if not self._update_streams.get(ctx.component):
            raise InvalidArgumentsError("Component is not subscribed to component update events")
        deployment_id = optional_str(request, "deploymentId")
        if not deployment_id:
            raise InvalidArgumentsError("Deployment ID is required")
        recheck = request.get("recheckAfterMs", 0)
        if isinstance(recheck, bool) or not isinstance(recheck, int) or recheck < 0:
            raise InvalidArgumentsError("recheckAfterMs must be a non-negative integer")
        future = self._pending.get(deployment_id, {}).get(ctx.component)
        if future is None or future.done():
            raise ServiceError("Time limit to respond to PreComponentUpdateEvent exceeded")
        future.set_result(Deferral(ctx.component, recheck, optional_str(request, "message") or ""))
        return {}

    def subscribers(self) -> list[str]:
        return [name for name, streams in self._update_streams.items() if streams]

    async def notify_pre_update(self, deployment_id: str, *, timeout: float) -> list[Deferral]:
        """Send the pre-update event and collect answers; a deferral has recheck_after_ms > 0.

        Components that do not answer within `timeout` are taken as agreeing, as the nucleus does.
        """
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future[Deferral]] = {}
        event = {"preUpdateEvent": {"deploymentId": deployment_id, "isGgcRestarting": False}}
        for component, streams in self._update_streams.items():
            sent = [stream.send_event(event) for stream in list(streams)]
            if any(sent):
                futures[component] = loop.create_future()
        answers = await collect_answers(self._pending, deployment_id, futures, timeout=timeout)
        return [answer for answer in answers.values() if answer.recheck_after_ms > 0]

    def notify_post_update(self, deployment_id: str) -> None:
        event = {"postUpdateEvent": {"deploymentId": deployment_id}}
        for streams in self._update_streams.values():
            for stream in list(streams):
                stream.send_event(event)
