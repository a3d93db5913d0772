"""The one way to write a component's `main`: configuration, lifecycle, heartbeats, events, shutdown.

    class Hello(Component[HelloConfig]):
        name = "com.example.Hello"
        config_model = HelloConfig

        async def run(self, ctx: Context[HelloConfig]) -> None:
            while not ctx.stopping.is_set():
                await ctx.ipc.publish("hello/out", {"n": ctx.config.greeting})
                await ctx.sleep(ctx.config.interval_seconds)

    if __name__ == "__main__":
        run_component(Hello)

What the runtime does, so that no component has to (and none gets it wrong):
- `umask 077`, structured log lines on stdout/stderr (the nucleus captures both), the token redacted;
- reads and validates the configuration; an invalid one at start is reported (event, UpdateState ERRORED)
  and the process exits with EXIT_CONFIG, so the nucleus shows the component BROKEN after its retries;
- votes on deployments: the proposed configuration is validated and the deployment is rejected with the
  key path and what was expected; a bad value that still arrives leaves the last good configuration in
  force, and the rejection is logged and reported as an event;
- applies accepted updates atomically (one swap of a frozen object) and tells the component;
- UpdateState RUNNING once `start()` returned; a heartbeat on `device-agent/heartbeat/<component>`;
- on SIGTERM: `stopping` is set, `run()` gets `shutdown_grace` seconds (well inside the nucleus's 5) to
  finish in-flight work, then its tasks are cancelled, and a last heartbeat in state STOPPING says the
  silence that follows is on purpose; exit code EXIT_OK;
- an unhandled error: logged, an event, UpdateState ERRORED, exit code EXIT_FATAL (the nucleus restarts it).

Exit codes: 0 stopped cleanly; 1 fatal error; 2 not running under a nucleus; 78 invalid configuration.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

from device_agent import __version__
from device_agent.config import parse_config
from device_agent.errors import ConfigurationError, DeviceAgentError, UnavailableError
from device_agent.ipc import IpcSession
from device_agent.ipc_types import (
    ComponentUpdate,
    ConfigurationUpdate,
    ReportedState,
    ValidationRequest,
    Validity,
)
from device_agent.log import configure_logging
from device_agent.messages import EVENTS_TOPIC, Category, Severity, event, heartbeat, heartbeat_topic

logger = logging.getLogger(__name__)

C = TypeVar("C")

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_NO_NUCLEUS = 2
EXIT_CONFIG = 78  # sysexits EX_CONFIG

DEFAULT_HEARTBEAT_SECONDS = 30.0
FINAL_HEARTBEAT_SECONDS = 2.0  # how long a stopping component waits to send its STOPPING heartbeat
# Several leaf events arrive for one deployment: wait this long for the burst to end, then reload once.
CONFIG_SETTLE_SECONDS = 0.2


class Component(abc.ABC, Generic[C]):
    """Subclass with `name`, `config_model` and `run`; override the other hooks when needed."""

    name: ClassVar[str]
    config_model: ClassVar[type[Any]]
    version: ClassVar[str] = __version__
    #: Seconds `run()` gets after SIGTERM to finish in-flight work before its tasks are cancelled.
    shutdown_grace: ClassVar[float] = 3.0

    def check(self, config: C) -> None:
        """Rules the model cannot express; raise ConfigurationError (with a key path) to refuse `config`."""

    async def start(self, ctx: Context[C]) -> None:
        """Set up before the component reports RUNNING (open files, subscribe). Runs once."""

    @abc.abstractmethod
    async def run(self, ctx: Context[C]) -> None:
        """The component's work. Return (or see `ctx.stopping`) to stop; raise to fail."""

    async def on_config(self, ctx: Context[C], old: C, new: C) -> None:
        """A new configuration is in force (`ctx.config` is already `new`)."""

    def defer_update_for(self, ctx: Context[C]) -> float:  # noqa: ARG002
        """Seconds to hold a pending deployment back (e.g. while a batch is in flight); 0 lets it go."""
        return 0.0

    def heartbeat_interval(self, config: C) -> float:
        """Seconds between heartbeats: the configuration's `heartbeat_interval_seconds` when it has one."""
        value = getattr(config, "heartbeat_interval_seconds", DEFAULT_HEARTBEAT_SECONDS)
        return float(value)


class Context(Generic[C]):
    """What a running component gets from the runtime."""

    def __init__(self, component: Component[C], ipc: IpcSession, config: C) -> None:
        self._component = component
        self.ipc = ipc
        self.name = component.name
        self.thing_name = ipc.thing_name or ""
        self._config = config
        self.stopping = asyncio.Event()
        self.config_changed = asyncio.Event()
        self.started = time.monotonic()
        self.health_state = "STARTING"
        self.health_detail: str | None = None

    @property
    def config(self) -> C:
        """The configuration in force: always a validated, frozen object."""
        return self._config

    async def sleep(self, seconds: float) -> bool:
        """Sleep, but wake up early when the component is stopping; True if it is stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=max(0.0, seconds))
        return self.stopping.is_set()

    def set_health(self, state: str, detail: str | None = None) -> None:
        """RUNNING or DEGRADED, carried by the next heartbeat."""
        self.health_state = state
        self.health_detail = detail

    async def emit_event(
        self,
        name: str,
        *,
        category: Category,
        severity: Severity,
        message: str,
        **details: str | float | bool | None,
    ) -> None:
        """Publish a security or health event on `device-agent/events`; never raises for delivery."""
        body = event(
            component=self.name,
            thing=self.thing_name,
            name=name,
            category=category,
            severity=severity,
            message=message,
            details=details,
        )
        try:
            await self.ipc.publish(EVENTS_TOPIC, body)
        except DeviceAgentError as exc:
            logger.warning("runtime.event_not_sent", extra={"event": name, "error": type(exc).__name__})

    def _swap(self, config: C) -> C:
        old, self._config = self._config, config
        self.config_changed.set()
        return old


class _Runtime(Generic[C]):
    def __init__(self, component: Component[C]) -> None:
        self.component = component
        self.ctx: Context[C] | None = None
        self._reload: asyncio.Task[None] | None = None

    # ---- configuration ----------------------------------------------------------------------------------

    def parse(self, document: Mapping[str, Any]) -> C:
        parsed = parse_config(self.component.config_model, document)
        value: C = parsed.value
        if parsed.unknown_keys:
            logger.warning(
                "config.unknown_keys",
                extra={"keys": ", ".join(".".join(map(str, k)) for k in parsed.unknown_keys)},
            )
        self.component.check(value)
        return value

    async def on_validation(self, request: ValidationRequest) -> None:
        assert self.ctx is not None  # noqa: S101 - subscribed after the context exists
        try:
            self.parse(request.configuration)
        except ConfigurationError as exc:
            logger.warning(
                "config.deployment_rejected", extra={"deployment": request.deployment_id, "reason": str(exc)}
            )
            await self.ctx.ipc.send_validity(request.deployment_id, Validity.REJECTED, str(exc))
            return
        await self.ctx.ipc.send_validity(request.deployment_id, Validity.ACCEPTED)

    def on_config_update(self, _update: ConfigurationUpdate) -> None:
        # One deployment changes several leaves: coalesce the burst into one reload.
        if self._reload is None or self._reload.done():
            self._reload = asyncio.get_running_loop().create_task(self.reload(), name="runtime.config-reload")

    async def reload(self) -> None:
        ctx = self.ctx
        assert ctx is not None  # noqa: S101
        await asyncio.sleep(CONFIG_SETTLE_SECONDS)
        try:
            document = await ctx.ipc.get_configuration()
            new = self.parse(document)
        except ConfigurationError as exc:
            # The deployment's validation should have caught it; it can still arrive (a validation timeout,
            # an UpdateConfiguration). Keep the last good configuration, and say so.
            logger.error("config.rejected_kept_last_good", extra={"reason": str(exc)})  # noqa: TRY400 - the reason names the key; a traceback adds nothing
            await ctx.emit_event(
                "config.rejected",
                category=Category.CONFIGURATION,
                severity=Severity.WARNING,
                message="An invalid configuration arrived; the last good configuration stays in force.",
                reason=str(exc)[:256],
                keyPath=".".join(map(str, exc.key_path)),
            )
            return
        except DeviceAgentError as exc:
            logger.warning("config.reload_failed", extra={"error": type(exc).__name__})
            return
        if new == ctx.config:
            return
        old = ctx._swap(new)  # noqa: SLF001 - the runtime owns the swap
        logger.info("config.applied")
        try:
            await self.component.on_config(ctx, old, new)
        except Exception:
            logger.exception("config.on_config_failed")

    async def _cancel_reload(self) -> None:
        """The reload task is the runtime's own: it never outlives the component."""
        if self._reload is not None and not self._reload.done():
            self._reload.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reload

    async def on_component_update(self, update: ComponentUpdate) -> None:
        ctx = self.ctx
        if ctx is None or not update.pre:
            return
        delay = self.component.defer_update_for(ctx)
        await ctx.ipc.defer_update(
            update.deployment_id, recheck_after=delay, message="busy" if delay else None
        )

    # ---- loops ------------------------------------------------------------------------------------------

    async def heartbeats(self) -> None:
        ctx = self.ctx
        assert ctx is not None  # noqa: S101
        sequence = 0
        topic = heartbeat_topic(ctx.name)
        while True:
            sequence += 1
            interval = self.component.heartbeat_interval(ctx.config)
            message = heartbeat(
                component=ctx.name,
                thing=ctx.thing_name,
                sequence=sequence,
                uptime_seconds=time.monotonic() - ctx.started,
                interval_seconds=interval,
                state="STOPPING" if ctx.stopping.is_set() else ctx.health_state,
                version=self.component.version,
                detail=ctx.health_detail,
            )
            try:
                await ctx.ipc.publish(topic, message)
            except DeviceAgentError as exc:
                logger.warning("runtime.heartbeat_not_sent", extra={"error": type(exc).__name__})
            if message["state"] == "STOPPING":
                return
            if await ctx.sleep(interval):
                # One last beat, marked STOPPING, so that the silence which follows is known to be on purpose
                # (the health monitor stops judging this component instead of reporting it stale).
                continue

    async def run(self) -> int:
        component = self.component
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            ipc_session = IpcSession()
        except UnavailableError as exc:
            logger.error("runtime.no_nucleus", extra={"reason": str(exc)})  # noqa: TRY400 - no traceback wanted
            return EXIT_NO_NUCLEUS
        async with ipc_session as ipc:
            try:
                config = self.parse(await ipc.get_configuration())
            except ConfigurationError as exc:
                return await self._refuse_start(ipc, exc)
            ctx = Context(component, ipc, config)
            self.ctx = ctx
            await ipc.subscribe_to_validation(self.on_validation)
            await ipc.subscribe_to_configuration_updates(self.on_config_update)
            await ipc.subscribe_to_component_updates(self.on_component_update)
            try:
                return await self._supervise(ctx, stop)
            finally:
                await self._cancel_reload()

    async def _refuse_start(self, ipc: IpcSession, exc: ConfigurationError) -> int:
        logger.error("config.invalid_at_start", extra={"reason": str(exc)})
        ctx: Context[Any] = Context(self.component, ipc, None)
        await ctx.emit_event(
            "config.invalid_at_start",
            category=Category.CONFIGURATION,
            severity=Severity.CRITICAL,
            message="The component cannot start: its configuration is invalid.",
            reason=str(exc)[:256],
            keyPath=".".join(map(str, exc.key_path)),
        )
        with contextlib.suppress(DeviceAgentError):
            await ipc.update_state(ReportedState.ERRORED)
        return EXIT_CONFIG

    async def _supervise(self, ctx: Context[C], stop: asyncio.Event) -> int:
        component = self.component
        failure: BaseException | None = None
        try:
            await component.start(ctx)
            ctx.health_state = "RUNNING"
            await ctx.ipc.update_state(ReportedState.RUNNING)
            logger.info("runtime.running", extra={"component": ctx.name, "version": component.version})
            async with asyncio.TaskGroup() as tasks:
                work = tasks.create_task(component.run(ctx), name=f"{ctx.name}.run")
                beats = tasks.create_task(self.heartbeats(), name=f"{ctx.name}.heartbeat")
                stopper = tasks.create_task(self._stop_when(stop, ctx, work), name=f"{ctx.name}.stopper")
                await asyncio.wait({work}, return_when=asyncio.FIRST_COMPLETED)
                ctx.stopping.set()  # run() returned or was cancelled: end the heartbeats too
                stopper.cancel()
                await asyncio.wait({beats}, timeout=FINAL_HEARTBEAT_SECONDS)  # the STOPPING beat
                beats.cancel()
        except* asyncio.CancelledError:
            pass
        except* Exception as group:  # noqa: BLE001 - any failure of run() is fatal by contract
            failure = group.exceptions[0]
        if failure is not None:
            return await self._fatal(ctx, failure)
        logger.info("runtime.stopped")
        return EXIT_OK

    async def _stop_when(self, stop: asyncio.Event, ctx: Context[C], work: asyncio.Task[None]) -> None:
        await stop.wait()
        logger.info("runtime.stopping", extra={"grace_s": self.component.shutdown_grace})
        ctx.stopping.set()
        done, _ = await asyncio.wait({work}, timeout=self.component.shutdown_grace)
        if not done:
            logger.warning("runtime.abandoning_work")
            work.cancel()

    async def _fatal(self, ctx: Context[C], error: BaseException) -> int:
        logger.error("runtime.fatal", exc_info=error)
        await ctx.emit_event(
            "lifecycle.fatal_error",
            category=Category.HEALTH,
            severity=Severity.CRITICAL,
            message="The component failed and will be restarted by the nucleus.",
            error=type(error).__name__,
        )
        with contextlib.suppress(DeviceAgentError):
            await ctx.ipc.update_state(ReportedState.ERRORED)
        return EXIT_FATAL


def run_component(factory: Callable[[], Component[Any]]) -> None:
    """Run a component until it stops; exits the process with the runtime's exit code."""
    os.umask(0o077)
    configure_logging()
    component = factory()
    try:
        code = asyncio.run(_Runtime(component).run())
    except KeyboardInterrupt:
        code = EXIT_OK
    logging.shutdown()
    sys.exit(code)
