"""Running one lifecycle script as the nucleus does, and writing the component log as the nucleus writes it.

Mirrors, in the Greengrass nucleus:
- `util/platforms/unix/UnixExec` + `UnixPlatform.killProcessAndChildren`: `sh -c SCRIPT`; stop = SIGTERM to
  the process tree, wait a grace period (5 s), then SIGKILL. Here every script gets its own session (so its
  own process group) and the *group* is signalled: that reaches grandchildren as the nucleus's tree walk
  does, and also daemons whose parent already exited (which the nucleus would leave behind).
- `lifecyclemanager/ShellRunner.Default`: stdout lines are logged at INFO with event type `stdout`, stderr at
  WARN with `stderr`, each trimmed, with `scriptName` in the context.
- `aws-greengrass-logging-java` `GreengrassLogMessage.getTextMessage`: `TIME [LEVEL] (THREAD) LOGGER:
  EVENT. MESSAGE. {k=v, ...}` with empty parts left out. The component logger is named after the component and
  carries `serviceName` and `currentState` (`GenericExternalService.separateLogger`).
- `GenericExternalService.shouldSkip`: `Skipif` is `[!] (exists|onpath) +TARGET`; anything else is invalid.

Nothing here writes an environment variable anywhere: the environment carries SVCUID, a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import psutil

logger = logging.getLogger(__name__)

_SKIP_COMMAND = re.compile(r"(exists|onpath) +(.+)")
_READ_CHUNK = 65536
# A line longer than this is logged in pieces rather than buffered without bound.
_MAX_LINE = 256 * 1024
_POLL_INTERVAL = 0.05


class InvalidSkipifError(ValueError):
    """A Skipif expression the nucleus would refuse (the step then errors with an invalid-config status)."""


def should_skip(expression: str, *, env: Mapping[str, str], cwd: Path) -> bool:
    """Evaluate a Skipif expression; raise InvalidSkipifError on bad syntax.

    `onpath` looks the executable up on the step's PATH; a relative `exists` path is taken from the work
    directory (the nucleus resolves it against its own working directory, which a recipe cannot rely on).
    """
    expr = expression.strip()
    negate = expr.startswith("!")
    if negate:
        expr = expr[1:].strip()
    match = _SKIP_COMMAND.fullmatch(expr)
    if match is None:
        raise InvalidSkipifError(f"invalid Skipif {expression!r}: expected [!](exists|onpath) TARGET")
    operator, target = match.group(1), match.group(2)
    if operator == "onpath":
        found = shutil.which(target, path=env.get("PATH")) is not None
    else:
        found = (cwd / target).exists()
    return found != negate


def step_environment(base: Mapping[str, str], *layers: Mapping[str, str]) -> dict[str, str]:
    """The base environment with each setenv layer applied in order (later wins), as `addEnv` does."""
    env = dict(base)
    for layer in layers:
        env.update({str(k): str(v) for k, v in layer.items()})
    return env


def _timestamp() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _exit_code(returncode: int) -> int:
    """Java's Process.exitValue for a signalled child is 128+signal; asyncio reports -signal."""
    return 128 - returncode if returncode < 0 else returncode


class ComponentLog:
    """`logs/<component>.log`: append-only, mode 0600, one flushed line per event."""

    def __init__(self, path: Path, component: str, state: Callable[[], str]) -> None:
        self.path = path
        self._component = component
        self._state = state
        self._file: IO[str] | None = None

    def open(self) -> None:
        if self._file is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.fchmod(
            fd, 0o600
        )  # an existing file keeps its mode on open; logs may hold secrets a script printed
        self._file = os.fdopen(fd, "a", encoding="utf-8", errors="replace", buffering=1)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def write(
        self,
        *,
        level: str,
        thread: str,
        message: str = "",
        event: str = "",
        context: Mapping[str, object] | None = None,
    ) -> None:
        if self._file is None:
            return
        contexts = {**(context or {}), "serviceName": self._component, "currentState": self._state()}
        rendered = "{" + ", ".join(f"{k}={v}" for k, v in contexts.items()) + "}"
        body = ". ".join(part for part in (event, message, rendered) if part)
        self._file.write(f"{_timestamp()} [{level}] ({thread}) {self._component}: {body}\n")


class StepProcess:
    """One running lifecycle script: its own session, output pumped line by line into the component log."""

    def __init__(self, proc: asyncio.subprocess.Process, script_name: str, step: str) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.pgid = proc.pid  # start_new_session: the child leads its own session and group
        self.script_name = script_name
        self.step = step
        self.pumps: list[asyncio.Task[None]] = []

    @classmethod
    async def spawn(
        cls, *, shell: str, script: str, cwd: Path, env: Mapping[str, str], script_name: str, step: str
    ) -> StepProcess:
        proc = await asyncio.create_subprocess_exec(
            shell,
            "-c",
            script,
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        return cls(proc, script_name, step)

    def __repr__(self) -> str:
        return f"<StepProcess {self.script_name} pid={self.pid}>"

    async def pump(self, stream: str, log: ComponentLog) -> None:
        """Copy one output stream into the log until EOF (the nucleus's `Copier` thread)."""
        reader = self.proc.stdout if stream == "stdout" else self.proc.stderr
        if reader is None:
            return
        level = "INFO" if stream == "stdout" else "WARN"
        context = {"scriptName": self.script_name}
        pending = b""
        while chunk := await reader.read(_READ_CHUNK):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > _MAX_LINE:
                lines.append(pending)
                pending = b""
            for line in lines:
                text = line.decode("utf-8", errors="replace").strip()
                log.write(level=level, thread="Copier", event=stream, message=text, context=context)
        if pending:
            text = pending.decode("utf-8", errors="replace").strip()
            log.write(level=level, thread="Copier", event=stream, message=text, context=context)

    async def wait(self) -> int:
        """Wait for the script's own process to exit (not for its output to end) and return its exit code."""
        return _exit_code(await self.proc.wait())

    @property
    def exited(self) -> bool:
        return self.proc.returncode is not None

    def group_alive(self) -> bool:
        """True while any live (non-zombie) process remains in the script's process group."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # Orphans that already died linger as zombies until init reaps them; they count as gone.
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if os.getpgid(proc.pid) == self.pgid and proc.status() != psutil.STATUS_ZOMBIE:
                    return True
        return False

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    async def terminate(self, grace_period: float) -> None:
        """SIGTERM the whole group, wait up to `grace_period`, then SIGKILL what is left; reap the leader."""
        if self.group_alive():
            self._signal_group(signal.SIGTERM)
            deadline = time.monotonic() + grace_period
            # No event tells us a group emptied (its members are not our children): poll.
            while self.group_alive() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(_POLL_INTERVAL)
            if self.group_alive():
                logger.warning(
                    "%r did not stop within %.1f s of SIGTERM; killing its process group", self, grace_period
                )
                self._signal_group(signal.SIGKILL)
        await self.close()

    async def close(self) -> None:
        """Reap the leader and release the pipes (after the group was signalled or has exited)."""
        await self.proc.wait()
        await self._finish_pumps()

    def kill_now(self) -> None:
        """SIGKILL the group at once (cancellation path: no time left for grace)."""
        self._signal_group(signal.SIGKILL)

    async def _finish_pumps(self) -> None:
        """Let the pumps read to EOF, then close the pipes' transport.

        If a process escaped the group (its own setsid) and holds a pipe, EOF never comes: stop reading after
        a second rather than hang. Closing the transport explicitly keeps asyncio from warning about it later.
        """
        pending = [t for t in self.pumps if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=1.0)
            for task in still:
                task.cancel()
            if still:
                await asyncio.wait(still)
        transport = getattr(self.proc, "_transport", None)
        if transport is not None:
            transport.close()
