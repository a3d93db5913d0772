"""Drop-in collectors: executables in a configured directory whose JSON output becomes `extra` facts.

    facts = await run_collectors(Path("/etc/device-agent/collectors"), timeout=5.0, max_output_bytes=4096)

An operator adds a fact without a new release by dropping a script into the directory. Because the
reporter runs what it finds there, what it finds is checked first: the directory and each file must be
owned by this user or root and not writable by group or others (else anyone who can write there runs code
as the reporter), files must be regular (no symlinks) and executable. A refused file is reported as an
`error` fact with the reason, so the verifier sees the attempt.

Each runs with a timeout (its process group is killed when it passes), an empty stdin, a minimal
environment (never the IPC token: SVCUID stays with the component), and its stdout must be one JSON
value of at most `max_output_bytes`. The fact's name is the file name without its extension.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import stat
from pathlib import Path

from device_agent.facts.fact import Fact
from device_agent.facts.report import shape

logger = logging.getLogger(__name__)

MAX_COLLECTORS = 16
# The report nests a collector's value 5 levels deep (report, facts, extra, value, name, value) and the
# verifier refuses reports deeper than 12.
MAX_OUTPUT_DEPTH = 4
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
}


def collector_name(file_name: str) -> str | None:
    stem = file_name.split(".", 1)[0]
    return stem if _NAME.fullmatch(stem) else None


def unsafe_reason(info: os.stat_result, *, euid: int, what: str) -> str | None:
    """Why a file or directory may not be trusted to run code from, or None."""
    if info.st_uid not in (euid, 0):
        return f"{what} is owned by another user"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{what} is writable by group or others"
    return None


async def run_collectors(
    directory: Path, *, timeout: float, max_output_bytes: int, euid: int | None = None
) -> Fact:
    """The `extra` fact: collector name to fact, or why the directory itself was refused."""
    euid = os.geteuid() if euid is None else euid
    checked = await asyncio.to_thread(_choose, directory, euid)
    if isinstance(checked, Fact):
        return checked
    async with asyncio.TaskGroup() as tasks:
        running = {
            name: tasks.create_task(_run_one(path, timeout, max_output_bytes, euid))
            for name, path in checked.items()
        }
    results = {name: task.result().to_document() for name, task in sorted(running.items())}
    return Fact.ok(results, source="collectors")


def _choose(directory: Path, euid: int) -> Fact | dict[str, Path]:
    """The collectors to run, by name; or a fact saying why the directory is refused."""
    try:
        info = directory.lstat()
    except FileNotFoundError:
        return Fact.unavailable("the collectors directory does not exist")
    except OSError:
        return Fact.unavailable("the collectors directory is not readable")
    if not stat.S_ISDIR(info.st_mode):
        return Fact.error("the collectors path is not a directory")
    reason = unsafe_reason(info, euid=euid, what="the collectors directory")
    if reason is not None:
        logger.warning("facts.collectors_refused", extra={"reason": reason})
        return Fact.error(reason)
    try:
        names = sorted(p.name for p in directory.iterdir())
    except OSError:
        return Fact.unavailable("the collectors directory is not readable")
    chosen: dict[str, Path] = {}
    for file_name in names:
        if file_name.startswith("."):
            continue
        name = collector_name(file_name)
        if name is None or name in chosen:
            logger.warning("facts.collector_skipped", extra={"file": file_name[:64]})
            continue
        if len(chosen) >= MAX_COLLECTORS:
            logger.warning("facts.collectors_beyond_limit", extra={"limit": MAX_COLLECTORS})
            break
        chosen[name] = directory / file_name
    return chosen


async def _run_one(path: Path, timeout: float, max_output_bytes: int, euid: int) -> Fact:
    try:
        info = os.lstat(path)
    except OSError:
        return Fact.error("vanished before it ran")
    if stat.S_ISLNK(info.st_mode):
        return Fact.error("refused: a symlink")
    if not stat.S_ISREG(info.st_mode):
        return Fact.error("refused: not a regular file")
    reason = unsafe_reason(info, euid=euid, what="the file")
    if reason is not None:
        return Fact.error(f"refused: {reason}")
    if not info.st_mode & stat.S_IXUSR or not os.access(path, os.X_OK):
        return Fact.error("refused: not executable")
    try:
        process = await asyncio.create_subprocess_exec(
            str(path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=_ENVIRONMENT,
            cwd="/",
            start_new_session=True,  # its own process group: a timeout kills what it started too
        )
    except OSError as error:
        return Fact.error(f"could not start ({type(error).__name__})")
    try:
        async with asyncio.timeout(timeout):
            output = await _read_capped(process, max_output_bytes)
            code = await process.wait()
    except TimeoutError:
        _kill(process)
        await process.wait()
        return Fact.error(f"timed out after {timeout:g} s")
    except _TooLargeError:
        _kill(process)
        await process.wait()
        return Fact.error(f"printed more than {max_output_bytes} bytes")
    except asyncio.CancelledError:
        _kill(process)
        raise
    if code != 0:
        return Fact.error(f"exited with status {code}")
    try:
        value = json.loads(output.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return Fact.error("its output is not one JSON value")
    if shape(value)[0] > MAX_OUTPUT_DEPTH:
        return Fact.error(f"its output nests deeper than {MAX_OUTPUT_DEPTH} levels")
    return Fact.ok(value, source="collector")


class _TooLargeError(Exception):
    pass


async def _read_capped(process: asyncio.subprocess.Process, max_bytes: int) -> bytes:
    assert process.stdout is not None  # noqa: S101 - created with a pipe
    chunks: list[bytes] = []
    size = 0
    while chunk := await process.stdout.read(65536):
        size += len(chunk)
        if size > max_bytes:
            raise _TooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
