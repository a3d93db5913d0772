"""The local nucleus's lifecycle manager: each component's state machine, its lifecycle scripts as processes.

Mirrors, in `aws-greengrass/aws-greengrass-nucleus`:
- `lifecyclemanager/Lifecycle.java`: the per-service state loop (`startStateTransition`), the desired-state
  list (`requestStart`/`requestStop`/`requestRestart`/`requestReinstall`), the reporting table
  (`ALLOWED_STATE_TRANSITION_FOR_REPORTING`, checked against the *last reported* state), the per-source-state
  error counter that turns the third ERRORED within `errorResetTime` into BROKEN (`internalReportState`), and
  each `handleCurrentState*` (install at NEW, dependency gating at INSTALLED, startup timeout, shutdown at
  STOPPING, recover-then-retry at ERRORED, BROKEN stays down until a reinstall).
- `lifecyclemanager/GenericExternalService.java`: `install`, `startup` (a Startup step wins; Run is used only
  when there is no Startup step or it is skipped), `handleRunScript` (RUNNING once the Run process spawns,
  exit 0 → stop → FINISHED, non-zero → ERRORED, optional Timeout), `shutdown` (its exit code is ignored),
  `handleError` (the Recover step), `shouldSkip`, `addEnv`.
- `lifecyclemanager/GreengrassService.java`: `dependencyReady` (a HARD dependency is ready when RUNNING,
  FINISHED, or STOPPING not caused by a startup error; SOFT never blocks) and the listener that restarts a
  STARTING/RUNNING dependent when a HARD dependency stops being ready; `close` waits for hard dependers.

Differences, on purpose: every script runs as the current user (`RequiresPrivilege` is logged, not honoured);
stopping kills the script's whole process group, including daemons whose parent exited; unknown dependencies
(e.g. `aws.greengrass.Nucleus`, which this nucleus does not run as a component) count as ready.

Concurrency: one named supervising task per component, each owning an `asyncio.TaskGroup` for its process
watchers, output pumps and timers. `shutdown()` (or `remove()`) joins them; a supervisor that ends for any
reason kills whatever its scripts left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from device_agent.devkit.errors import LifecycleError
from device_agent.devkit.processes import (
    ComponentLog,
    InvalidSkipifError,
    StepProcess,
    should_skip,
    step_environment,
)
from device_agent.devkit.recipe_model import (
    DEFAULT_STEP_TIMEOUTS,
    DependencyType,
    LifecycleStep,
    Recipe,
    StepName,
)

logger = logging.getLogger(__name__)


class ComponentState(enum.StrEnum):
    NEW = "NEW"
    INSTALLED = "INSTALLED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"
    FINISHED = "FINISHED"
    ERRORED = "ERRORED"
    BROKEN = "BROKEN"


S = ComponentState
MAXIMUM_CONTINUAL_ERROR = 3
_ALLOWED_REPORTS: Mapping[ComponentState, frozenset[ComponentState]] = {
    S.NEW: frozenset({S.ERRORED}),
    S.STARTING: frozenset({S.RUNNING, S.ERRORED, S.FINISHED}),
    S.RUNNING: frozenset({S.ERRORED, S.FINISHED}),
    S.STOPPING: frozenset({S.ERRORED, S.FINISHED}),
}
# Only errors from these states say the service cannot work, so only they count towards BROKEN.
_COUNTED_SOURCES = frozenset({S.NEW, S.STARTING, S.RUNNING})
# State.isClosable: a closed service's loop may end in these.
_CLOSABLE = frozenset({S.ERRORED, S.BROKEN, S.FINISHED, S.NEW})
_STOPPED = frozenset({S.FINISHED, S.BROKEN})
# Recipe spelling of each step, as it appears in the nucleus's `scriptName` (services.X.lifecycle.Run).
_RECIPE_KEYS: Mapping[StepName, str] = {step: step.value.capitalize() for step in StepName}


@dataclass(frozen=True, kw_only=True)
class ComponentSpec:
    """What to run: an interpolated recipe, its work dir, its full base environment and its log file."""

    recipe: Recipe
    work_dir: Path
    env: Mapping[str, str]
    log_path: Path

    @property
    def name(self) -> str:
        return self.recipe.name


class _Status(enum.Enum):
    OK = "ok"
    NOTHING_DONE = "nothing done"
    ERRORED = "errored"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class _Transition:
    state: ComponentState


class _Wake(enum.Enum):
    DESIRED = "desired state updated"
    DEPENDENCY = "a dependency changed state"


_Event = _Transition | _Wake
_Finish = Callable[[_Event], bool]
_Work = Callable[[], Coroutine[Any, Any, None]]


def _always(_event: _Event) -> bool:
    return True


class _Component:
    """One service's lifecycle data (the fields of `Lifecycle.java` and `GenericExternalService.java`)."""

    def __init__(self, spec: ComponentSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.state = S.NEW
        self.last_reported: ComponentState | None = None
        self.desired: list[ComponentState] = []
        self.errors: dict[ComponentState, list[float]] = {}
        self.events: asyncio.Queue[_Event] = asyncio.Queue()
        self.generation = 0
        self.closed = False
        self.stopping_from_startup_error = False
        self.shutdown_spec: ComponentSpec | None = None  # cacheShutdownExec: stop with what was started
        self.procs: set[StepProcess] = set()
        self.aux: set[asyncio.Task[None]] = set()
        self.tg: asyncio.TaskGroup | None = None
        self.task: asyncio.Task[None] | None = None
        self.startup_timer: asyncio.Task[None] | None = None
        self.waiters: list[tuple[frozenset[ComponentState], asyncio.Future[ComponentState]]] = []
        self.warned: set[str] = set()
        self.log = ComponentLog(spec.log_path, self.name, lambda: self.state.value)

    # ---- the desired-state list (Lifecycle.requestX) ---------------------------------------------------

    def set_desired(self, *states: ComponentState) -> None:
        if list(states) == self.desired:
            return
        self.desired = list(states)
        self.events.put_nowait(_Wake.DESIRED)

    def peek_or_remove(self, active: ComponentState) -> ComponentState | None:
        if not self.desired:
            return None
        first = self.desired[0]
        if first == active:
            self.desired.pop(0)
        return first

    def request_start(self) -> None:
        self.closed = False
        if not self.desired or self.desired == [S.FINISHED]:
            self.set_desired(S.RUNNING)
        elif self.desired[-1] == S.FINISHED:
            self.desired[-1] = S.RUNNING
            self.events.put_nowait(_Wake.DESIRED)
        elif self.desired[-1] != S.RUNNING:
            self.desired.append(S.RUNNING)
            self.events.put_nowait(_Wake.DESIRED)

    def request_stop(self) -> None:
        if S.NEW not in self.desired:
            self.set_desired(S.FINISHED)
            return
        del self.desired[self.desired.index(S.NEW) + 1 :]
        self.desired.append(S.FINISHED)
        self.events.put_nowait(_Wake.DESIRED)

    def request_restart(self) -> bool:
        if self.closed or (not self.desired and self.state == S.NEW):
            return False
        if S.NEW not in self.desired:
            self.set_desired(S.INSTALLED, S.RUNNING)
            return True
        del self.desired[self.desired.index(S.NEW) + 1 :]
        self.desired.append(S.RUNNING)
        self.events.put_nowait(_Wake.DESIRED)
        return True

    def request_reinstall(self) -> None:
        self.closed = False
        self.set_desired(S.NEW, S.RUNNING)

    def warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self.warned:
            self.warned.add(key)
            logger.warning(message, *args)


class LifecycleManager:
    """Runs components' lifecycles like the Greengrass nucleus does (see the module docstring)."""

    def __init__(
        self,
        *,
        on_state_change: Callable[[str, ComponentState, ComponentState], None] | None = None,
        error_reset_time: float = 3600.0,
        grace_period: float = 5.0,
        skip_install: bool = False,
        step_timeouts: Mapping[StepName, float | None] | None = None,
        posix_shell: str = "sh",
    ) -> None:
        self._on_state_change = on_state_change
        self._error_reset_time = error_reset_time
        self._grace_period = grace_period
        self._skip_install = skip_install
        self._timeouts: dict[StepName, float | None] = {**DEFAULT_STEP_TIMEOUTS, **(step_timeouts or {})}
        self._shell = posix_shell
        self._components: dict[str, _Component] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()

    # ---- public API --------------------------------------------------------------------------------------

    async def add(self, spec: ComponentSpec) -> None:
        """Register a component in NEW (nothing runs until `start`)."""
        if spec.name in self._components:
            raise LifecycleError(f"component {spec.name} is already managed; use replace()")
        self._check_cycles({**self._specs(), spec.name: spec})
        component = _Component(spec)
        self._prepare(component, spec)
        self._components[spec.name] = component
        component.task = asyncio.create_task(self._supervise(component), name=f"lifecycle:{spec.name}")
        component.task.add_done_callback(self._supervisor_done)

    async def start(self, names: Iterable[str] | None = None) -> None:
        """Request RUNNING for `names` (default: all) and everything they depend on, dependencies first."""
        wanted = list(self._components) if names is None else list(names)
        for name in wanted:
            self._get(name)
        for name in self._closure_in_order(wanted):
            self._components[name].request_start()

    def state(self, name: str) -> ComponentState:
        return self._get(name).state

    def states(self) -> dict[str, ComponentState]:
        return {name: c.state for name, c in self._components.items()}

    def report_state(self, name: str, state: str) -> None:
        """A state the component reported (UpdateState). Disallowed transitions are logged and ignored."""
        component = self._get(name)
        try:
            new = ComponentState(state.upper())
        except ValueError:
            raise LifecycleError(f"{state!r} is not a lifecycle state") from None
        self._report(component, new)

    async def restart(self, name: str) -> None:
        """Request a restart (stop, then start again); returns without waiting, like the nucleus CLI."""
        component = self._get(name)
        if not component.request_restart():
            logger.info("lifecycle: %s was never started; restart ignored", name)

    async def stop(self, name: str, *, wait: bool = True) -> None:
        """Request FINISHED (STOPPING → Shutdown step → FINISHED); the component stays stopped."""
        component = self._get(name)
        component.request_stop()
        if wait:
            timeout = sum(
                t or 0.0 for t in (self._timeouts[StepName.INSTALL], self._timeouts[StepName.SHUTDOWN])
            )
            await self.wait_for_state(name, _STOPPED, timeout + 2 * self._grace_period + 5.0)

    async def replace(self, spec: ComponentSpec) -> None:
        """A new version or configuration: stop (with the old Shutdown), reinstall and start the new one."""
        component = self._get(spec.name)
        self._check_cycles({**self._specs(), spec.name: spec})
        if spec.log_path != component.spec.log_path:
            component.log.close()
            component.log = ComponentLog(spec.log_path, component.name, lambda: component.state.value)
        component.spec = spec
        self._prepare(component, spec)
        component.request_reinstall()

    async def remove(self, name: str) -> None:
        """Stop the component (Shutdown step), end its supervisor and forget it."""
        component = self._get(name)
        await self._close(component, self._close_timeout())
        self._forget(component)

    async def wait_for_state(
        self,
        name: str,
        states: ComponentState | Iterable[ComponentState],
        timeout: float | None,
    ) -> ComponentState:
        """Wait until the component enters one of `states` (even briefly); TimeoutError after `timeout`."""
        component = self._get(name)
        wanted = frozenset({states} if isinstance(states, ComponentState) else states)
        if component.state in wanted:
            return component.state
        future: asyncio.Future[ComponentState] = asyncio.get_running_loop().create_future()
        entry = (wanted, future)
        component.waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise TimeoutError(
                f"{name} did not reach {sorted(wanted)} within {timeout} s (it is {component.state})"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                component.waiters.remove(entry)

    async def shutdown(self) -> None:
        """Stop everything, dependers before their dependencies, then kill whatever is left."""
        components = list(self._components.values())
        if not components:
            return
        budget = self._close_timeout()
        try:
            async with asyncio.timeout(budget), asyncio.TaskGroup() as tg:
                for component in components:
                    tg.create_task(
                        self._close_after_dependers(component), name=f"lifecycle-close:{component.name}"
                    )
        except TimeoutError:
            logger.warning("lifecycle: shutdown took longer than %.1f s; killing what is left", budget)
        for component in components:
            await self._cancel_supervisor(component)
            self._forget(component)

    # ---- bookkeeping --------------------------------------------------------------------------------------

    def _get(self, name: str) -> _Component:
        try:
            return self._components[name]
        except KeyError:
            raise LifecycleError(f"component {name} is not managed by this nucleus") from None

    def _specs(self) -> dict[str, ComponentSpec]:
        return {name: c.spec for name, c in self._components.items()}

    def _prepare(self, component: _Component, spec: ComponentSpec) -> None:
        spec.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        spec.work_dir.chmod(0o700)  # mkdir's mode is masked by the umask
        component.log.open()
        lifecycle = spec.recipe.lifecycle
        if lifecycle.step(StepName.STARTUP) is not None and lifecycle.step(StepName.RUN) is not None:
            logger.warning(
                "lifecycle: %s defines both Startup and Run, which Greengrass documents as invalid; like the "
                "nucleus, Startup runs and Run is used only if Startup is skipped",
                spec.name,
            )

    def _close_timeout(self) -> float:
        return (self._timeouts[StepName.SHUTDOWN] or 0.0) + 2 * self._grace_period + 5.0

    def _forget(self, component: _Component) -> None:
        if self._components.get(component.name) is component:
            del self._components[component.name]
        component.log.close()
        for _, future in component.waiters:
            if not future.done():
                future.set_exception(LifecycleError(f"component {component.name} was removed"))
        for other in self._components.values():
            if component.name in self._dependency_names(other):
                other.events.put_nowait(_Wake.DEPENDENCY)

    @staticmethod
    def _dependency_names(component: _Component) -> set[str]:
        return {dep.name for dep in component.spec.recipe.dependencies.values()}

    def _check_cycles(self, specs: Mapping[str, ComponentSpec]) -> None:
        self._topological(specs, list(specs))

    def _closure_in_order(self, names: Iterable[str]) -> list[str]:
        return self._topological(self._specs(), names)

    @staticmethod
    def _topological(specs: Mapping[str, ComponentSpec], roots: Iterable[str]) -> list[str]:
        """Known dependencies of `roots`, then the roots, dependencies first; a cycle is an error."""
        order: list[str] = []
        done: set[str] = set()
        visiting: list[str] = []

        def visit(name: str) -> None:
            if name in done or name not in specs:
                return
            if name in visiting:
                cycle = [*visiting[visiting.index(name) :], name]
                raise LifecycleError(f"circular dependency: {' -> '.join(cycle)}")
            visiting.append(name)
            for dep in specs[name].recipe.dependencies.values():
                visit(dep.name)
            visiting.pop()
            done.add(name)
            order.append(name)

        for root in roots:
            visit(root)
        return order

    def _supervisor_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("lifecycle: supervisor %s failed", task.get_name(), exc_info=exc)

    async def _close(self, component: _Component, seconds: float) -> None:
        """GreengrassService.close: stop, let the state loop end, and kill anything left."""
        component.closed = True
        component.request_stop()
        component.events.put_nowait(_Wake.DESIRED)  # a loop parked in a closable state must notice
        task = component.task
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await asyncio.shield(task)
        await self._cancel_supervisor(component)

    async def _close_after_dependers(self, component: _Component) -> None:
        dependers = [
            other.task
            for other in self._components.values()
            if other.task is not None
            and any(
                dep.name == component.name and dep.dependency_type == DependencyType.HARD
                for dep in other.spec.recipe.dependencies.values()
            )
        ]
        if dependers:
            await asyncio.wait(dependers)
        await self._close(component, self._close_timeout())

    @staticmethod
    async def _cancel_supervisor(component: _Component) -> None:
        task = component.task
        if task is None:
            return
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # ---- the supervisor and its state loop (Lifecycle.startStateTransition) -----------------------------

    async def _supervise(self, c: _Component) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                c.tg = tg
                await self._state_loop(c)
                await self._stop_processes(c)  # e.g. a component that reported FINISHED but kept running
                self._abandon(c)
        finally:
            c.tg = None
            self._abandon(c)
            for proc in list(c.procs):
                await proc.close()
            c.procs.clear()

    def _abandon(self, c: _Component) -> None:
        """The loop is over: kill what is left at once and stop the helpers so the task group can end."""
        for proc in c.procs:
            proc.kill_now()
        for task in list(c.aux):
            task.cancel()

    async def _state_loop(self, c: _Component) -> None:
        previous = c.state
        fresh = True
        while not (c.closed and c.state in _CLOSABLE):
            current = c.state
            desired = c.peek_or_remove(current)
            while desired is not None and desired == current:
                desired = c.peek_or_remove(current)
            finish = await self._handle(c, current, desired, previous, fresh=fresh)
            fresh = False
            while True:
                event = await self._next_event(c)
                if isinstance(event, _Transition):
                    if event.state == current:
                        continue
                    self._set_state(c, event.state)
                    previous, fresh = current, True
                    break
                if finish(event):
                    break

    @staticmethod
    async def _next_event(c: _Component) -> _Event:
        event = await c.events.get()
        # Coalesce wake-ups queued behind one another; a transition is never skipped.
        while not isinstance(event, _Transition) and not c.events.empty():
            event = c.events.get_nowait()
        return event

    async def _handle(
        self,
        c: _Component,
        current: ComponentState,
        desired: ComponentState | None,
        previous: ComponentState,
        *,
        fresh: bool,
    ) -> _Finish:
        match current:
            case S.NEW:
                await self._handle_new(c, desired)
            case S.INSTALLED:
                return self._handle_installed(c, desired)
            case S.STARTING:
                return await self._handle_starting(c, desired)
            case S.RUNNING:
                if desired is not None:
                    self._internal_report(c, S.STOPPING)
            case S.STOPPING:
                await self._handle_stopping(c)
            case S.FINISHED:
                if desired is not None:
                    self._move_to_desired(c, desired)
            case S.ERRORED:
                await self._handle_errored(c, desired, previous)
            case S.BROKEN:
                await self._handle_broken(c, desired, previous, fresh=fresh)
        return _always

    async def _handle_new(self, c: _Component, desired: ComponentState | None) -> None:
        if desired is None:
            return
        c.generation += 1
        await self._stop_processes(c)
        if self._skip_install:
            logger.info("lifecycle: %s install skipped (skip_install)", c.name)
            status = _Status.NOTHING_DONE
        else:
            status = await self._run_foreground(c, c.spec, StepName.INSTALL)
        if status is _Status.TIMEOUT:
            self._service_errored(c, "Timeout in install")
        elif status is _Status.ERRORED:
            self._service_errored(c, "Script errored in install")
        elif c.last_reported != S.ERRORED:
            self._internal_report(c, S.INSTALLED)

    def _handle_installed(self, c: _Component, desired: ComponentState | None) -> _Finish:
        if desired is None:
            return _always
        if desired != S.RUNNING:
            self._move_to_desired(c, desired)
        elif self._dependencies_ready(c):
            self._internal_report(c, S.STARTING)
        else:
            logger.debug("lifecycle: %s waiting for its dependencies to start", c.name)
        return _always  # re-evaluate on any change (a dependency's state change wakes us)

    async def _handle_starting(self, c: _Component, desired: ComponentState | None) -> _Finish:
        if desired is None:
            return _always
        if desired != S.RUNNING:
            self._internal_report(c, S.STOPPING)
            return _always
        c.generation += 1
        generation = c.generation
        timeout = self._timeout(StepName.STARTUP, c.spec.recipe.lifecycle.step(StepName.STARTUP))
        if timeout is not None:
            c.startup_timer = self._spawn(
                c, functools.partial(self._startup_timer, c, generation, timeout), "startup-timeout"
            )
        if not self._dependencies_ready(c):
            self._internal_report(c, S.INSTALLED)
        else:
            await self._startup(c, generation)

        def finish(event: _Event) -> bool:
            # Only a new desired state other than RUNNING ends STARTING early; otherwise keep waiting.
            return event is _Wake.DESIRED and c.peek_or_remove(S.STARTING) != S.RUNNING

        return finish

    async def _handle_stopping(self, c: _Component) -> None:
        spec = c.shutdown_spec or c.spec
        status = await self._run_foreground(c, spec, StepName.SHUTDOWN)
        await self._stop_processes(c)
        c.shutdown_spec = None
        if status is _Status.TIMEOUT:
            self._service_errored(c, "Timeout in shutdown")
            return
        c.stopping_from_startup_error = False
        if c.last_reported != S.ERRORED:
            self._move_to_desired(c, c.peek_or_remove(S.FINISHED) or S.FINISHED)

    async def _handle_errored(
        self, c: _Component, desired: ComponentState | None, previous: ComponentState
    ) -> None:
        await self._recover(c)
        if desired is None:
            c.request_start()  # retry
        match previous:
            case S.STARTING:
                c.stopping_from_startup_error = True
                self._internal_report(c, S.STOPPING)
            case S.RUNNING:
                self._internal_report(c, S.STOPPING)
            case S.NEW:
                self._internal_report(c, S.NEW)  # reinstall
            case S.STOPPING:
                c.stopping_from_startup_error = False
                self._move_to_desired(c, c.peek_or_remove(S.FINISHED) or S.FINISHED)
            case _:
                logger.error("lifecycle: %s errored from unexpected state %s", c.name, previous)
                self._internal_report(c, S.FINISHED)

    async def _handle_broken(
        self, c: _Component, desired: ComponentState | None, previous: ComponentState, *, fresh: bool
    ) -> None:
        if fresh and previous in {S.STARTING, S.RUNNING, S.ERRORED}:
            logger.info("lifecycle: stopping %s in BROKEN state", c.name)
            await self._run_foreground(c, c.shutdown_spec or c.spec, StepName.SHUTDOWN)
            await self._stop_processes(c)
            c.shutdown_spec = None
        if desired is None:
            return
        if desired == S.NEW:
            self._internal_report(c, S.NEW)
            c.errors.clear()
        else:
            logger.error("lifecycle: %s is broken; a deployment (replace) or removal is needed", c.name)

    def _move_to_desired(self, c: _Component, desired: ComponentState) -> None:
        """Lifecycle.serviceTerminatedMoveToDesiredState."""
        if c.closed:
            self._internal_report(c, S.FINISHED)
            return
        match desired:
            case S.NEW:
                self._internal_report(c, S.NEW)
            case S.INSTALLED | S.RUNNING:
                self._internal_report(c, S.INSTALLED)
            case S.FINISHED:
                self._internal_report(c, S.FINISHED)
            case _:
                logger.error("lifecycle: %s has unexpected desired state %s", c.name, desired)

    # ---- reporting and state changes ----------------------------------------------------------------------

    def _report(self, c: _Component, new: ComponentState) -> bool:
        """Lifecycle.reportState: the reporting table is checked against the last *reported* state."""
        last = c.last_reported or c.state
        if new not in _ALLOWED_REPORTS.get(last, frozenset()):
            logger.warning(
                "lifecycle: %s: invalid reported state %s (last reported %s); ignored", c.name, new, last
            )
            return False
        self._internal_report(c, new)
        return True

    def _internal_report(self, c: _Component, new: ComponentState) -> None:
        """Lifecycle.internalReportState: count errors per source state; the third one is BROKEN."""
        c.last_reported = new
        if c.state == S.STARTING and new == S.FINISHED:
            c.request_stop()  # nothing to run: clear the desired RUNNING
        current = c.state
        if new == S.ERRORED and current in _COUNTED_SOURCES:
            stamps = c.errors.setdefault(current, [])
            now = time.monotonic()
            if stamps and now - stamps[-1] >= self._error_reset_time:
                stamps.clear()
            stamps.append(now)
        else:
            c.errors.pop(current, None)
        broken = len(c.errors.get(current, ())) >= MAXIMUM_CONTINUAL_ERROR
        c.events.put_nowait(_Transition(S.BROKEN if broken else new))

    def _service_errored(self, c: _Component, reason: str, exit_code: int | None = None) -> None:
        if exit_code is None:
            logger.error("lifecycle: %s errored: %s", c.name, reason)
        else:
            logger.error("lifecycle: %s errored: %s (exit code %d)", c.name, reason, exit_code)
        self._report(c, S.ERRORED)

    def _set_state(self, c: _Component, new: ComponentState) -> None:
        old, c.state = c.state, new
        logger.info("lifecycle: %s %s -> %s", c.name, old, new)
        if old == S.STARTING and c.startup_timer is not None:
            c.startup_timer.cancel()
            c.startup_timer = None
        if self._on_state_change is not None:
            try:
                self._on_state_change(c.name, old, new)
            except Exception:
                logger.exception("lifecycle: on_state_change failed for %s", c.name)
        for wanted, future in list(c.waiters):
            if new in wanted and not future.done():
                future.set_result(new)
        self._notify_dependents(c)

    def _notify_dependents(self, c: _Component) -> None:
        """GreengrassService.createDependencyListener: restart dependents whose HARD dependency went down."""
        for other in self._components.values():
            for dep in other.spec.recipe.dependencies.values():
                if dep.name != c.name:
                    continue
                if (
                    dep.dependency_type == DependencyType.HARD
                    and other.state in {S.STARTING, S.RUNNING}
                    and not self._ready(c)
                    and other.request_restart()
                ):
                    logger.info(
                        "lifecycle: restarting %s because dependency %s is %s", other.name, c.name, c.state
                    )
                other.events.put_nowait(_Wake.DEPENDENCY)

    @staticmethod
    def _ready(dependency: _Component) -> bool:
        state = dependency.state
        return state in {S.RUNNING, S.FINISHED} or (
            state == S.STOPPING and not dependency.stopping_from_startup_error
        )

    def _dependencies_ready(self, c: _Component) -> bool:
        for dep in c.spec.recipe.dependencies.values():
            if dep.dependency_type != DependencyType.HARD:
                continue
            other = self._components.get(dep.name)
            if other is None:
                c.warn_once(
                    f"unknown:{dep.name}",
                    "lifecycle: %s depends on %s, which this nucleus does not run; treated as ready",
                    c.name,
                    dep.name,
                )
            elif not self._ready(other):
                return False
        return True

    # ---- steps -------------------------------------------------------------------------------------------

    def _timeout(self, step_name: StepName, step: LifecycleStep | None) -> float | None:
        if step is not None and step.timeout is not None:
            return step.timeout
        return self._timeouts.get(step_name)

    async def _startup(self, c: _Component, generation: int) -> None:
        """GenericExternalService.startup: the Startup step, or the Run step when there is none."""
        c.shutdown_spec = c.spec
        await self._stop_processes(c)
        result = await self._launch(c, c.spec, StepName.STARTUP)
        if result is _Status.ERRORED:
            self._service_errored(c, "Script errored in startup")
        elif result is _Status.NOTHING_DONE:
            if generation == c.generation and c.state == S.STARTING:
                await self._run(c)
        elif isinstance(result, StepProcess):
            self._watch(c, result, lambda code: self._startup_exited(c, generation, code))

    def _startup_exited(self, c: _Component, generation: int, code: int) -> None:
        if generation != c.generation or c.state not in {S.STARTING, S.RUNNING}:
            return
        if code == 0 and c.state == S.STARTING:
            self._report(c, S.RUNNING)
        elif code != 0:
            self._service_errored(c, "Non-zero exit code in startup", code)

    async def _startup_timer(self, c: _Component, generation: int, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if c.state == S.STARTING and c.generation == generation:
            self._service_errored(c, f"startup timeout ({seconds:g} s)")

    async def _run(self, c: _Component) -> None:
        """GenericExternalService.handleRunScript."""
        await self._stop_processes(c)
        generation = c.generation
        step = c.spec.recipe.lifecycle.step(StepName.RUN)
        result = await self._launch(c, c.spec, StepName.RUN)
        if result is _Status.NOTHING_DONE:
            logger.info("lifecycle: %s has nothing to run", c.name)
            self._report(c, S.FINISHED)
            return
        if not isinstance(result, StepProcess):
            self._service_errored(c, "Script errored in run")
            return
        self._report(c, S.RUNNING)
        self._watch(c, result, lambda code: self._run_exited(c, generation, code))
        timeout = self._timeout(StepName.RUN, step)
        if timeout is not None:
            self._spawn(c, functools.partial(self._run_timer, c, result, timeout), "run-timeout")

    def _run_exited(self, c: _Component, generation: int, code: int) -> None:
        if generation != c.generation or S.RUNNING not in {c.state, c.last_reported}:
            return
        if code == 0:
            logger.info("lifecycle: %s finished running", c.name)
            c.request_stop()
        else:
            self._service_errored(c, "Non-zero exit code in run", code)

    async def _run_timer(self, c: _Component, proc: StepProcess, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if not proc.exited:
            logger.warning(
                "lifecycle: %s did not finish its Run step within %g s; stopping it", c.name, seconds
            )
            self._report(c, S.ERRORED)
            await self._terminate(c, proc)

    async def _recover(self, c: _Component) -> None:
        """GenericExternalService.handleError: the result is only logged."""
        result = await self._launch(c, c.spec, StepName.RECOVER)
        if not isinstance(result, StepProcess):
            return
        timeout = self._timeout(StepName.RECOVER, c.spec.recipe.lifecycle.step(StepName.RECOVER))
        code = await self._wait_within(result, timeout)
        if code is None:
            logger.error("lifecycle: %s: error recovery handler timed out after %g s", c.name, timeout)
            await self._terminate(c, result)
            return
        self._log_exit(c, StepName.RECOVER, code)
        await self._release_if_done(c, result)

    @staticmethod
    async def _wait_within(proc: StepProcess, seconds: float | None) -> int | None:
        """The script's exit code, or None if it is still running after `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                return await proc.wait()
        except TimeoutError:
            return None

    async def _run_foreground(self, c: _Component, spec: ComponentSpec, step_name: StepName) -> _Status:
        """Run a step to completion within its timeout (install, shutdown)."""
        result = await self._launch(c, spec, step_name)
        if not isinstance(result, StepProcess):
            return result
        timeout = self._timeout(step_name, spec.recipe.lifecycle.step(step_name))
        code = await self._wait_within(result, timeout)
        if code is None:
            logger.error(
                "lifecycle: %s: %s step timed out after %g s", c.name, _RECIPE_KEYS[step_name], timeout
            )
            await self._terminate(c, result)
            return _Status.TIMEOUT
        self._log_exit(c, step_name, code)
        await self._release_if_done(c, result)
        return _Status.OK if code == 0 else _Status.ERRORED

    async def _launch(self, c: _Component, spec: ComponentSpec, step_name: StepName) -> StepProcess | _Status:
        """GenericExternalService.run: resolve, skip, or spawn one step."""
        step = spec.recipe.lifecycle.step(step_name)
        if step is None or not step.script.strip():
            return _Status.NOTHING_DONE
        env = step_environment(spec.env, spec.recipe.lifecycle.setenv, step.setenv)
        if step.skipif is not None:
            skip = self._should_skip(c, step_name, step.skipif, env, spec.work_dir)
            if skip is None:
                return _Status.ERRORED
            if skip:
                logger.info("lifecycle: %s: %s step skipped (Skipif)", c.name, _RECIPE_KEYS[step_name])
                return _Status.NOTHING_DONE
        if step.requires_privilege:
            c.warn_once(
                "privilege",
                "lifecycle: %s asks for RequiresPrivilege; the virtual device runs it as the current user "
                "(privilege is not elevated)",
                c.name,
            )
        script_name = f"services.{c.name}.lifecycle.{_RECIPE_KEYS[step_name]}"
        proc = await self._spawn_step(
            c, spec=spec, step_name=step_name, script=step.script, env=env, script_name=script_name
        )
        if proc is None:
            return _Status.ERRORED
        c.procs.add(proc)
        c.log.write(
            level="INFO",
            thread=f"{c.name}-lifecycle",
            event="shell-runner-start",
            context={"scriptName": script_name},
        )
        tg = self._task_group(c)
        for stream in ("stdout", "stderr"):
            proc.pumps.append(
                tg.create_task(
                    self._guard(c, functools.partial(proc.pump, stream, c.log)),
                    name=f"lifecycle:{c.name}:{step_name}:{stream}",
                )
            )
        return proc

    async def _spawn_step(
        self,
        c: _Component,
        *,
        spec: ComponentSpec,
        step_name: StepName,
        script: str,
        env: Mapping[str, str],
        script_name: str,
    ) -> StepProcess | None:
        failure: OSError | None = None
        try:
            return await StepProcess.spawn(
                shell=self._shell,
                script=script,
                cwd=spec.work_dir,
                env=env,
                script_name=script_name,
                step=step_name.value,
            )
        except OSError as exc:  # the shell or the work dir is missing: the nucleus's IOException
            failure = exc
        logger.error(
            "lifecycle: %s: could not start the %s step: %s", c.name, _RECIPE_KEYS[step_name], failure
        )
        return None

    @staticmethod
    def _should_skip(
        c: _Component, step_name: StepName, expression: str, env: Mapping[str, str], cwd: Path
    ) -> bool | None:
        """Evaluate Skipif; None when it is invalid (the step then errors, as on the nucleus)."""
        problem: InvalidSkipifError | None = None
        try:
            return should_skip(expression, env=env, cwd=cwd)
        except InvalidSkipifError as exc:
            problem = exc
        logger.error("lifecycle: %s: %s step: %s", c.name, _RECIPE_KEYS[step_name], problem)
        return None

    def _log_exit(self, c: _Component, step_name: StepName, code: int) -> None:
        c.log.write(
            level="INFO",
            thread=f"{c.name}-lifecycle",
            message=f"{_RECIPE_KEYS[step_name]} script exited",
            context={"exitCode": code},
        )

    def _watch(self, c: _Component, proc: StepProcess, on_exit: Callable[[int], None]) -> None:
        async def watch() -> None:
            code = await proc.wait()
            self._log_exit(c, StepName(proc.step), code)
            on_exit(code)
            await self._release_if_done(c, proc)

        self._spawn(c, watch, f"{proc.step}-exit")

    # ---- processes and tasks -----------------------------------------------------------------------------

    async def _release_if_done(self, c: _Component, proc: StepProcess) -> None:
        """Forget an exited script unless it left processes in its group (those die at the next stop)."""
        if proc.group_alive():
            return
        c.procs.discard(proc)
        await proc.close()

    async def _terminate(self, c: _Component, proc: StepProcess) -> None:
        await proc.terminate(self._grace_period)
        c.procs.discard(proc)

    async def _stop_processes(self, c: _Component) -> None:
        """GenericExternalService.stopAllLifecycleProcesses, all groups at once."""
        procs = list(c.procs)
        if procs:
            await asyncio.gather(*(self._terminate(c, proc) for proc in procs))

    @staticmethod
    def _task_group(c: _Component) -> asyncio.TaskGroup:
        if c.tg is None:
            raise LifecycleError(f"component {c.name} is not supervised")
        return c.tg

    def _spawn(self, c: _Component, work: _Work, label: str) -> asyncio.Task[None]:
        task = self._task_group(c).create_task(self._guard(c, work), name=f"lifecycle:{c.name}:{label}")
        c.aux.add(task)
        task.add_done_callback(c.aux.discard)
        return task

    @staticmethod
    async def _guard(c: _Component, work: _Work) -> None:
        """A helper's failure is logged; it must not tear down the component's task group."""
        try:
            await work()  # created here, so a task cancelled before it starts leaves no stray coroutine
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("lifecycle: helper task for %s failed", c.name)
