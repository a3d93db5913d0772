"""The lifecycle manager on tiny shell-script recipes: states, retries, BROKEN, gating, processes, logs."""

from __future__ import annotations

import asyncio
import os
import re
import stat
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from types import MappingProxyType

import psutil
import pytest

from device_agent.devkit.errors import LifecycleError
from device_agent.devkit.lifecycle import ComponentSpec, ComponentState, LifecycleManager
from device_agent.devkit.processes import InvalidSkipifError, should_skip
from device_agent.devkit.recipe_model import (
    Dependency,
    DependencyType,
    Lifecycle,
    LifecycleStep,
    Recipe,
    StepName,
)

S = ComponentState
Steps = Mapping[StepName, LifecycleStep | str]
GRACE = 0.3
SECRET = "svcuid-secret-value-1234"


class Recorder:
    def __init__(self) -> None:
        self.transitions: list[tuple[str, ComponentState, ComponentState]] = []

    def __call__(self, name: str, old: ComponentState, new: ComponentState) -> None:
        self.transitions.append((name, old, new))

    def path(self, name: str) -> list[ComponentState]:
        return [new for n, _, new in self.transitions if n == name]

    def entries(self, name: str, state: ComponentState) -> int:
        return self.path(name).count(state)


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def step(script: str, **kwargs: object) -> LifecycleStep:
    return LifecycleStep(script=script, **kwargs)  # type: ignore[arg-type]


def spec(
    tmp_path: Path,
    name: str,
    steps: Steps,
    *,
    setenv: Mapping[str, str] | None = None,
    deps: Mapping[str, DependencyType] | None = None,
    env: Mapping[str, str] | None = None,
) -> ComponentSpec:
    lifecycle = Lifecycle(
        setenv=MappingProxyType(dict(setenv or {})),
        steps=MappingProxyType({k: step(v) if isinstance(v, str) else v for k, v in steps.items()}),
    )
    recipe = Recipe(
        name=name,
        version="1.0.0",
        lifecycle=lifecycle,
        dependencies=MappingProxyType(
            {d: Dependency(name=d, dependency_type=t) for d, t in (deps or {}).items()}
        ),
    )
    base = {"PATH": os.environ["PATH"], "SVCUID": SECRET, "AWS_IOT_THING_NAME": "thing-1"}
    return ComponentSpec(
        recipe=recipe,
        work_dir=tmp_path / "work" / name,
        env={**base, **(env or {})},
        log_path=tmp_path / "logs" / f"{name}.log",
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def gone(pid: int) -> bool:
    try:
        status: str = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return True
    return bool(status == psutil.STATUS_ZOMBIE)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def manager(recorder: Recorder) -> AsyncIterator[LifecycleManager]:
    lm = LifecycleManager(on_state_change=recorder, grace_period=GRACE)
    yield lm
    await lm.shutdown()


def work(tmp_path: Path, name: str) -> Path:
    return tmp_path / "work" / name


# ---- happy paths -------------------------------------------------------------------------------------------


async def test_install_run_finished(tmp_path: Path, manager: LifecycleManager, recorder: Recorder) -> None:
    name = "com.example.Hello"
    await manager.add(
        spec(
            tmp_path,
            name,
            {
                StepName.INSTALL: "echo installed > installed.txt",
                StepName.RUN: "echo Hello world; echo oops >&2",
                StepName.SHUTDOWN: "echo bye > shutdown.txt",
            },
        )
    )
    assert manager.state(name) == S.NEW
    await manager.start()
    await manager.wait_for_state(name, S.FINISHED, 10)
    assert recorder.path(name) == [S.INSTALLED, S.STARTING, S.RUNNING, S.STOPPING, S.FINISHED]
    assert (work(tmp_path, name) / "installed.txt").read_text() == "installed\n"
    assert (work(tmp_path, name) / "shutdown.txt").exists()
    assert manager.states() == {name: S.FINISHED}


async def test_startup_vs_run(tmp_path: Path, manager: LifecycleManager) -> None:
    # Startup: RUNNING only once the script exits 0, and it stays RUNNING with no process.
    await manager.add(spec(tmp_path, "startup", {StepName.STARTUP: "sleep 0.3"}))
    # Run: RUNNING as soon as the process spawns.
    await manager.add(spec(tmp_path, "run", {StepName.RUN: "sleep 30"}))
    await manager.start()
    assert await manager.wait_for_state("run", S.RUNNING, 5) == S.RUNNING
    assert manager.state("startup") == S.STARTING
    await manager.wait_for_state("startup", S.RUNNING, 5)
    await asyncio.sleep(0.3)
    assert manager.state("startup") == S.RUNNING


async def test_neither_startup_nor_run_finishes(
    tmp_path: Path, manager: LifecycleManager, recorder: Recorder
) -> None:
    await manager.add(spec(tmp_path, "empty", {}))
    await manager.start(["empty"])
    await manager.wait_for_state("empty", S.FINISHED, 5)
    assert recorder.path("empty") == [S.INSTALLED, S.STARTING, S.FINISHED]


async def test_both_startup_and_run_startup_wins(tmp_path: Path, manager: LifecycleManager) -> None:
    await manager.add(spec(tmp_path, "both", {StepName.STARTUP: "touch startup", StepName.RUN: "touch run"}))
    await manager.start()
    await manager.wait_for_state("both", S.RUNNING, 5)
    await asyncio.sleep(0.2)
    assert (work(tmp_path, "both") / "startup").exists()
    assert not (work(tmp_path, "both") / "run").exists()


async def test_startup_skipped_falls_back_to_run(tmp_path: Path, manager: LifecycleManager) -> None:
    steps: Steps = {
        StepName.STARTUP: step("touch startup", skipif="onpath sh"),
        StepName.RUN: "touch run; sleep 30",
    }
    await manager.add(spec(tmp_path, "c", steps))
    await manager.start()
    await manager.wait_for_state("c", S.RUNNING, 5)
    await eventually((work(tmp_path, "c") / "run").exists)
    assert not (work(tmp_path, "c") / "startup").exists()


async def test_skip_install(tmp_path: Path, recorder: Recorder) -> None:
    async with LifecycleManager(on_state_change=recorder, grace_period=GRACE, skip_install=True) as lm:
        await lm.add(spec(tmp_path, "c", {StepName.INSTALL: "touch installed", StepName.STARTUP: "true"}))
        await lm.start()
        await lm.wait_for_state("c", S.RUNNING, 5)
        assert not (work(tmp_path, "c") / "installed").exists()


# ---- errors, retries and BROKEN ------------------------------------------------------------------------


async def test_install_failure_reinstalls_then_broken(
    tmp_path: Path, manager: LifecycleManager, recorder: Recorder
) -> None:
    bad = spec(tmp_path, "c", {StepName.INSTALL: "echo x >> installs; exit 3", StepName.RUN: "sleep 30"})
    await manager.add(bad)
    await manager.start()
    await manager.wait_for_state("c", S.BROKEN, 10)
    assert len(lines(work(tmp_path, "c") / "installs")) == 3
    assert recorder.path("c") == [S.ERRORED, S.NEW, S.ERRORED, S.NEW, S.BROKEN]
    # BROKEN stays down: a restart does nothing...
    await manager.restart("c")
    await asyncio.sleep(0.3)
    assert manager.state("c") == S.BROKEN
    # ...a new deployment (replace) gives it a new chance.
    await manager.replace(spec(tmp_path, "c", {StepName.INSTALL: "true", StepName.RUN: "sleep 30"}))
    await manager.wait_for_state("c", S.RUNNING, 5)


async def test_run_crash_restarts_then_broken_with_recover(
    tmp_path: Path, manager: LifecycleManager, recorder: Recorder
) -> None:
    steps: Steps = {StepName.RUN: "echo x >> runs; exit 2", StepName.RECOVER: "echo r >> recovers"}
    await manager.add(spec(tmp_path, "c", steps))
    await manager.start()
    await manager.wait_for_state("c", S.BROKEN, 10)
    assert len(lines(work(tmp_path, "c") / "runs")) == 3
    # Recover runs on entering ERRORED; the third error goes straight to BROKEN.
    assert len(lines(work(tmp_path, "c") / "recovers")) == 2
    assert recorder.path("c")[-3:] == [S.STARTING, S.RUNNING, S.BROKEN]
    assert recorder.entries("c", S.ERRORED) == 2


async def test_startup_failure_is_errored_and_retried(tmp_path: Path, manager: LifecycleManager) -> None:
    await manager.add(spec(tmp_path, "c", {StepName.STARTUP: "echo x >> starts; exit 1"}))
    await manager.start()
    await manager.wait_for_state("c", S.BROKEN, 10)
    assert len(lines(work(tmp_path, "c") / "starts")) == 3


async def _error_while_starting(manager: LifecycleManager, recorder: Recorder, name: str) -> None:
    before = recorder.entries(name, S.STARTING)
    manager.report_state(name, "ERRORED")
    await eventually(lambda: recorder.entries(name, S.STARTING) > before or manager.state(name) == S.BROKEN)


async def test_reporting_running_resets_the_error_counter(
    tmp_path: Path, manager: LifecycleManager, recorder: Recorder
) -> None:
    await manager.add(spec(tmp_path, "c", {StepName.STARTUP: "sleep 30"}))
    await manager.start()
    await manager.wait_for_state("c", S.STARTING, 5)
    await _error_while_starting(manager, recorder, "c")
    await _error_while_starting(manager, recorder, "c")
    manager.report_state("c", "RUNNING")  # a non-error report from STARTING clears its counter
    await manager.wait_for_state("c", S.RUNNING, 5)
    await manager.restart("c")
    await manager.wait_for_state("c", S.STARTING, 5)
    await _error_while_starting(manager, recorder, "c")
    await _error_while_starting(manager, recorder, "c")
    assert manager.state("c") == S.STARTING  # four errors, but never three in a row
    manager.report_state("c", "ERRORED")
    await manager.wait_for_state("c", S.BROKEN, 5)


async def test_error_reset_time(tmp_path: Path, recorder: Recorder) -> None:
    async with LifecycleManager(on_state_change=recorder, grace_period=GRACE, error_reset_time=0.4) as lm:
        await lm.add(spec(tmp_path, "c", {StepName.STARTUP: "sleep 30"}))
        await lm.start()
        await lm.wait_for_state("c", S.STARTING, 5)
        for _ in range(4):
            await _error_while_starting(lm, recorder, "c")
            await asyncio.sleep(0.5)  # longer than errorResetTime: the list starts over
        assert lm.state("c") == S.STARTING
        assert recorder.entries("c", S.BROKEN) == 0


async def test_report_state_table(tmp_path: Path, manager: LifecycleManager, recorder: Recorder) -> None:
    with pytest.raises(LifecycleError):
        manager.report_state("nope", "RUNNING")
    await manager.add(spec(tmp_path, "c", {StepName.RUN: "sleep 30"}))
    with pytest.raises(LifecycleError):
        manager.report_state("c", "DANCING")
    manager.report_state("c", "RUNNING")  # NEW may only report ERRORED: ignored
    await manager.start()
    await manager.wait_for_state("c", S.RUNNING, 5)
    manager.report_state("c", "RUNNING")  # RUNNING -> RUNNING is not allowed: ignored
    manager.report_state("c", "FINISHED")  # allowed: the component says it is done
    await manager.wait_for_state("c", S.FINISHED, 5)
    # As on the nucleus, a reported FINISHED goes straight there (no STOPPING, the process is left alone).
    assert recorder.path("c") == [S.INSTALLED, S.STARTING, S.RUNNING, S.FINISHED]


# ---- skipif, timeouts, environment ---------------------------------------------------------------------


def test_skipif_forms(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"]}
    (tmp_path / "marker").touch()
    assert should_skip("exists marker", env=env, cwd=tmp_path)
    assert should_skip(f"exists {tmp_path / 'marker'}", env=env, cwd=tmp_path)
    assert not should_skip("exists missing", env=env, cwd=tmp_path)
    assert should_skip("! exists missing", env=env, cwd=tmp_path)
    assert should_skip("onpath sh", env=env, cwd=tmp_path)
    assert not should_skip("onpath no-such-tool-here", env=env, cwd=tmp_path)
    assert should_skip("!onpath no-such-tool-here", env=env, cwd=tmp_path)
    for bad in ("", "exists", "isfile x", "exists\tx", "EXISTS x"):
        with pytest.raises(InvalidSkipifError):
            should_skip(bad, env=env, cwd=tmp_path)


async def test_skipif_in_steps(tmp_path: Path, manager: LifecycleManager) -> None:
    skipped: Steps = {StepName.INSTALL: step("touch installed", skipif="onpath sh"), StepName.STARTUP: "true"}
    ran: Steps = {StepName.INSTALL: step("touch installed", skipif="!onpath sh"), StepName.STARTUP: "true"}
    invalid: Steps = {StepName.INSTALL: step("touch installed", skipif="sometimes"), StepName.STARTUP: "true"}
    await manager.add(spec(tmp_path, "skipped", skipped))
    await manager.add(spec(tmp_path, "ran", ran))
    await manager.add(spec(tmp_path, "invalid", invalid))
    await manager.start()
    await manager.wait_for_state("skipped", S.RUNNING, 5)
    await manager.wait_for_state("ran", S.RUNNING, 5)
    await manager.wait_for_state("invalid", S.BROKEN, 5)  # invalid config errors every time
    assert not (work(tmp_path, "skipped") / "installed").exists()
    assert (work(tmp_path, "ran") / "installed").exists()
    assert not (work(tmp_path, "invalid") / "installed").exists()


async def test_timeouts(tmp_path: Path, recorder: Recorder) -> None:
    timeouts = {StepName.STARTUP: 0.3, StepName.INSTALL: 0.3}
    async with LifecycleManager(on_state_change=recorder, grace_period=GRACE, step_timeouts=timeouts) as lm:
        await lm.add(spec(tmp_path, "startup", {StepName.STARTUP: "sleep 30"}))
        await lm.add(spec(tmp_path, "install", {StepName.INSTALL: "sleep 30"}))
        await lm.add(spec(tmp_path, "run", {StepName.RUN: step("echo x >> runs; sleep 30", timeout=1.0)}))
        await lm.start()
        await lm.wait_for_state("startup", S.ERRORED, 5)
        await lm.wait_for_state("install", S.ERRORED, 5)
        await lm.wait_for_state("run", S.ERRORED, 5)
        assert recorder.path("startup")[:3] == [S.INSTALLED, S.STARTING, S.ERRORED]
        assert recorder.path("install")[:1] == [S.ERRORED]
        assert recorder.path("run")[:4] == [S.INSTALLED, S.STARTING, S.RUNNING, S.ERRORED]
        await lm.wait_for_state("run", S.BROKEN, 15)
        assert len(lines(work(tmp_path, "run") / "runs")) == 3


async def test_shutdown_timeout_errors_then_finishes(
    tmp_path: Path, manager: LifecycleManager, recorder: Recorder
) -> None:
    steps: Steps = {StepName.RUN: "sleep 30", StepName.SHUTDOWN: step("sleep 30", timeout=0.3)}
    await manager.add(spec(tmp_path, "c", steps))
    await manager.start()
    await manager.wait_for_state("c", S.RUNNING, 5)
    await manager.stop("c")
    assert recorder.path("c")[-3:] == [S.STOPPING, S.ERRORED, S.FINISHED]


async def test_setenv_layering(tmp_path: Path, manager: LifecycleManager) -> None:
    script = 'printf "%s|%s|%s|%s|%s|%s\\n" "$A" "$B" "$C" "$SVCUID" "$AWS_IOT_THING_NAME" "$PWD" > env.txt'
    component = spec(
        tmp_path,
        "c",
        {StepName.RUN: step(script, setenv=MappingProxyType({"C": "step"}))},
        setenv={"B": "lifecycle", "C": "lifecycle"},
        env={"A": "base", "B": "base", "C": "base"},
    )
    await manager.add(component)
    await manager.start()
    await manager.wait_for_state("c", S.FINISHED, 5)
    values = (work(tmp_path, "c") / "env.txt").read_text().strip().split("|")
    assert values[:5] == ["base", "lifecycle", "step", SECRET, "thing-1"]
    assert values[5] == str(work(tmp_path, "c"))


async def test_requires_privilege_runs_as_current_user(
    tmp_path: Path, manager: LifecycleManager, caplog: pytest.LogCaptureFixture
) -> None:
    await manager.add(spec(tmp_path, "c", {StepName.RUN: step("id -u > uid", requires_privilege=True)}))
    await manager.start()
    await manager.wait_for_state("c", S.FINISHED, 5)
    assert (work(tmp_path, "c") / "uid").read_text().strip() == str(os.getuid())
    assert "privilege is not elevated" in caplog.text


# ---- dependencies ------------------------------------------------------------------------------------------


async def test_dependency_gating_hard_and_soft(
    tmp_path: Path, manager: LifecycleManager, recorder: Recorder
) -> None:
    gate = tmp_path / "go"
    await manager.add(
        spec(tmp_path, "dep", {StepName.STARTUP: f"while [ ! -f {gate} ]; do sleep 0.02; done"})
    )
    await manager.add(spec(tmp_path, "hard", {StepName.RUN: "sleep 30"}, deps={"dep": DependencyType.HARD}))
    await manager.add(spec(tmp_path, "soft", {StepName.RUN: "sleep 30"}, deps={"dep": DependencyType.SOFT}))
    await manager.start(["hard", "soft"])  # pulls in "dep"
    await manager.wait_for_state("dep", S.STARTING, 5)
    await manager.wait_for_state("soft", S.RUNNING, 5)
    await asyncio.sleep(0.3)
    assert manager.state("hard") == S.INSTALLED
    gate.touch()
    await manager.wait_for_state("hard", S.RUNNING, 5)
    assert manager.state("dep") == S.RUNNING


async def test_dependent_restarted_when_dependency_restarts(
    tmp_path: Path, manager: LifecycleManager, recorder: Recorder
) -> None:
    await manager.add(spec(tmp_path, "dep", {StepName.RUN: "sleep 30"}))
    await manager.add(
        spec(tmp_path, "app", {StepName.RUN: "echo x >> runs; sleep 30"}, deps={"dep": DependencyType.HARD})
    )
    await manager.start()
    await manager.wait_for_state("app", S.RUNNING, 5)
    await manager.restart("dep")
    await eventually(lambda: recorder.entries("app", S.RUNNING) == 2 and manager.state("dep") == S.RUNNING)
    assert recorder.entries("app", S.STOPPING) == 1
    await until(lambda: len(lines(work(tmp_path, "app") / "runs")) == 2)


async def test_dependency_cycle_is_refused(tmp_path: Path, manager: LifecycleManager) -> None:
    await manager.add(spec(tmp_path, "a", {}, deps={"b": DependencyType.HARD}))
    with pytest.raises(LifecycleError, match="circular"):
        await manager.add(spec(tmp_path, "b", {}, deps={"a": DependencyType.SOFT}))
    with pytest.raises(LifecycleError, match="already"):
        await manager.add(spec(tmp_path, "a", {}))


# ---- processes, logs and files -----------------------------------------------------------------------------


async def test_sigterm_ignoring_group_is_killed_after_grace(
    tmp_path: Path, manager: LifecycleManager
) -> None:
    script = "trap '' TERM; sleep 300 & echo $! > grandchild.pid; echo $$ > main.pid; wait"
    await manager.add(spec(tmp_path, "stubborn", {StepName.RUN: script}))
    await manager.start()
    await manager.wait_for_state("stubborn", S.RUNNING, 5)
    pid_file = work(tmp_path, "stubborn") / "grandchild.pid"
    await eventually(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    grandchild = int(pid_file.read_text())
    main = int((work(tmp_path, "stubborn") / "main.pid").read_text())
    assert os.getpgid(grandchild) == main  # its own process group, led by the script's shell
    assert os.getsid(main) == main  # and its own session
    started = time.monotonic()
    await manager.stop("stubborn")
    assert time.monotonic() - started >= GRACE
    assert gone(grandchild)
    assert gone(main)
    assert manager.state("stubborn") == S.FINISHED


async def test_daemon_left_by_startup_is_killed_on_stop(tmp_path: Path, manager: LifecycleManager) -> None:
    script = "sleep 300 > /dev/null 2>&1 & echo $! > daemon.pid"
    await manager.add(spec(tmp_path, "daemon", {StepName.STARTUP: script}))
    await manager.start()
    await manager.wait_for_state("daemon", S.RUNNING, 5)
    daemon = int((work(tmp_path, "daemon") / "daemon.pid").read_text())
    assert not gone(daemon)
    await manager.stop("daemon")
    assert gone(daemon)


LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[(INFO|WARN)\] \((Copier)\) com\.example\.Hello: "
    r"(stdout|stderr)\. (.*)\. \{scriptName=services\.com\.example\.Hello\.lifecycle\.Run, "
    r"serviceName=com\.example\.Hello, currentState=(STARTING|RUNNING)\}$"
)


async def test_log_format_modes_and_no_secret(tmp_path: Path, manager: LifecycleManager) -> None:
    name = "com.example.Hello"
    run = 'echo "Hello world"; echo "careful" >&2; env > /dev/null; sleep 30'
    await manager.add(spec(tmp_path, name, {StepName.RUN: run}))
    await manager.start()
    await manager.wait_for_state(name, S.RUNNING, 5)
    log = tmp_path / "logs" / f"{name}.log"
    await eventually(lambda: "careful" in log.read_text())
    parsed = [m.groups() for line in lines(log) if (m := LINE.match(line))]
    assert ("INFO", "Copier", "stdout", "Hello world", "RUNNING") in parsed
    assert ("WARN", "Copier", "stderr", "careful", "RUNNING") in parsed
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(work(tmp_path, name).stat().st_mode) == 0o700
    await manager.stop(name)
    text = log.read_text()
    assert SECRET not in text
    assert "Run script exited. {exitCode=143" in text  # SIGTERM, reported as Java does: 128 + 15


async def test_shutdown_leaves_no_process(tmp_path: Path, recorder: Recorder) -> None:
    lm = LifecycleManager(on_state_change=recorder, grace_period=GRACE)
    await lm.add(spec(tmp_path, "dep", {StepName.RUN: "sleep 300 & echo $! > child.pid; wait"}))
    await lm.add(
        spec(
            tmp_path,
            "app",
            {StepName.RUN: "trap '' TERM; sleep 300 & echo $! > child.pid; wait"},
            deps={"dep": DependencyType.HARD},
        )
    )
    await lm.add(
        spec(tmp_path, "daemon", {StepName.STARTUP: "sleep 300 >/dev/null 2>&1 & echo $! > child.pid"})
    )
    await lm.start()
    for name in ("dep", "app", "daemon"):
        await lm.wait_for_state(name, S.RUNNING, 5)
    await eventually(
        lambda: all((work(tmp_path, n) / "child.pid").exists() for n in ("dep", "app", "daemon"))
    )
    await asyncio.sleep(0.05)
    children = [int((work(tmp_path, n) / "child.pid").read_text()) for n in ("dep", "app", "daemon")]
    await lm.shutdown()
    assert all(gone(pid) for pid in children)
    assert lm.states() == {}
    # Dependers stop before what they depend on.
    finished = [n for n, _, new in recorder.transitions if new == S.FINISHED]
    assert finished.index("app") < finished.index("dep")


async def test_remove_and_unknown(tmp_path: Path, manager: LifecycleManager) -> None:
    await manager.add(spec(tmp_path, "c", {StepName.RUN: "sleep 300 & echo $! > child.pid; wait"}))
    await manager.start()
    await manager.wait_for_state("c", S.RUNNING, 5)
    await eventually((work(tmp_path, "c") / "child.pid").exists)
    await asyncio.sleep(0.05)
    child = int((work(tmp_path, "c") / "child.pid").read_text())
    await manager.remove("c")
    assert gone(child)
    for call in (manager.remove("c"), manager.restart("c"), manager.start(["c"])):
        with pytest.raises(LifecycleError):
            await call
    with pytest.raises(LifecycleError):
        manager.state("c")


async def test_stopped_component_stays_stopped_until_started(
    tmp_path: Path, manager: LifecycleManager
) -> None:
    await manager.add(spec(tmp_path, "c", {StepName.RUN: "echo x >> runs; sleep 30"}))
    await manager.start()
    await manager.wait_for_state("c", S.RUNNING, 5)
    runs = work(tmp_path, "c") / "runs"
    # RUNNING is reported when the process spawns, before the script has run a line: wait for the file.
    await until(lambda: runs.exists() and len(lines(runs)) == 1)
    await manager.stop("c")
    await asyncio.sleep(0.3)
    assert manager.state("c") == S.FINISHED
    assert len(lines(runs)) == 1
    await manager.restart("c")
    await manager.wait_for_state("c", S.RUNNING, 5)
    await until(lambda: len(lines(runs)) == 2)


async def test_wait_for_state_times_out(tmp_path: Path, manager: LifecycleManager) -> None:
    await manager.add(spec(tmp_path, "c", {}))
    with pytest.raises(TimeoutError):
        await manager.wait_for_state("c", [S.RUNNING], 0.1)
