"""Which processes the `processes` group reports: the Greengrass nucleus and this suite's components.

A `ProcessMatcher` names a process by what is stable about it on every device: a substring of its command
line (the nucleus runs `java ... -jar .../Greengrass.jar`; each component of the suite runs
`python3 -u -m <package>`, started with `exec` by its recipe), and optionally its exact process name. All
given criteria must hold. A matcher that matches several processes reports their sum, with their count.

Scanning every process costs a read of each one's command line, so `ProcessFinder` scans only when it
must: at the first sample, every `rescan_seconds` (a component restarted, a matcher that found nothing),
and at once after a matched process ended. Command lines never leave this module: only the matcher's
name is published. A process that another nucleus started (its environment names another IPC socket:
several virtual devices on one machine) is never counted as this device's.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable, Mapping
from typing import Final

from device_agent.errors import InvalidInputError
from device_agent.metrics.source import NUCLEUS_SOCKET_ENV, ProcessInfo, Source, resolve_socket

logger = logging.getLogger(__name__)

MATCHER_NAME: Final = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}")
DEFAULT_RESCAN_SECONDS: Final = 60.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProcessMatcher:
    """Report the processes whose command line contains `cmdline_contains` (and whose name is
    `process_name`, when given) under `name`."""

    name: str
    cmdline_contains: str = ""
    process_name: str = ""

    def __post_init__(self) -> None:
        if not MATCHER_NAME.fullmatch(self.name):
            raise InvalidInputError(f"process matcher name {self.name[:40]!r} is not a short identifier")
        if not (self.cmdline_contains or self.process_name):
            raise InvalidInputError(f"process matcher {self.name!r} needs cmdline_contains or process_name")

    def matches(self, process: ProcessInfo) -> bool:
        if self.process_name and process.name != self.process_name:
            return False
        return not self.cmdline_contains or self.cmdline_contains in process.cmdline


# The nucleus and the suite's four components, as their recipes start them.
DEFAULT_MATCHERS: Final = (
    ProcessMatcher(name="nucleus", cmdline_contains="Greengrass.jar"),
    ProcessMatcher(name="store", cmdline_contains="-m encrypted_store"),
    ProcessMatcher(name="telemetry", cmdline_contains="-m telemetry_publisher"),
    ProcessMatcher(name="health", cmdline_contains="-m health_monitor"),
    ProcessMatcher(name="bootstrap", cmdline_contains="-m bootstrap_reporter"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessRef:
    pid: int
    create_time: float


class ProcessFinder:
    """The processes each matcher matches, rescanning only when needed (module docstring)."""

    def __init__(
        self,
        matchers: Iterable[ProcessMatcher],
        *,
        rescan_seconds: float = DEFAULT_RESCAN_SECONDS,
        own_nucleus: str | None = None,
    ) -> None:
        self.matchers = tuple(matchers)
        self.rescan_seconds = rescan_seconds
        if own_nucleus is None:
            named = os.environ.get(NUCLEUS_SOCKET_ENV)
            own_nucleus = resolve_socket(named, os.getcwd) if named else None
        self.own_nucleus = own_nucleus
        self.scans = 0
        self._found: dict[str, list[ProcessRef]] = {}
        self._scanned_at: float | None = None

    def find(self, source: Source, mono: float) -> Mapping[str, list[ProcessRef]]:
        last = self._scanned_at
        if last is None or not last <= mono < last + self.rescan_seconds:
            self._scan(source, mono)
        return self._found

    def forget(self) -> None:
        """A matched process ended: scan again at the next sample."""
        self._scanned_at = None

    def _under_our_nucleus(self, source: Source, process: ProcessInfo) -> bool:
        """False only for a process known to run under another nucleus: several virtual devices on one
        machine each run the suite, and each device reports its own. Unknown (no nucleus of our own, the
        nucleus itself, another user's process) counts as ours, as on a device with one nucleus."""
        if not self.own_nucleus:
            return True
        theirs = source.nucleus_socket(process.pid)
        return theirs is None or theirs == self.own_nucleus

    def _scan(self, source: Source, mono: float) -> None:
        found: dict[str, list[ProcessRef]] = {m.name: [] for m in self.matchers}
        if self.matchers:
            for process in source.processes():
                for matcher in self.matchers:
                    if matcher.matches(process) and self._under_our_nucleus(source, process):
                        found[matcher.name].append(ProcessRef(process.pid, process.create_time))
        self._found = found
        self._scanned_at = mono
        self.scans += 1
        logger.debug(
            "metrics.processes_scanned", extra={"matched": sum(len(refs) for refs in found.values())}
        )
