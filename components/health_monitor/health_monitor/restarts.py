"""Restarting a stale sibling through RestartComponent: off by default, rate-limited, never in a loop.

The nucleus restarts only what exits; a component that hangs keeps its process and goes silent, and only
its heartbeat tells. With `restart.enabled`, a sibling whose heartbeat check turns CRITICAL is restarted
through RestartComponent. That is a Greengrass CLI operation: the device needs `aws.greengrass.Cli`, and
the monitor's recipe grants it for the suite's own components by name (never `*`). The limits:

- only components named in `restart.components`;
- one request per component per `cooldownSeconds`;
- at most `maxPerHour` requests on the whole device;
- after `maxAttempts` requests without the component turning healthy in between, no more until it does:
  a component that a restart does not cure is left to the technician, not restarted forever.

A restart is asked for only when the check turns CRITICAL, not while it stays there, so a component that
does not come back is asked for once per fall, and never in a loop. The planner is pure; the component
does the asking and writes each decision to the health log.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from device_agent.config import setting

HOUR: Final = 3600.0
# Greengrass component names: letters, digits, dots, dashes and underscores.
COMPONENT_NAME_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
SUITE_SIBLINGS: Final = (
    "com.deviceagent.BootstrapReporter",
    "com.deviceagent.EncryptedStore",
    "com.deviceagent.TelemetryPublisher",
)


@dataclass(frozen=True, kw_only=True)
class RestartSettings:
    enabled: bool = setting(
        default=False,
        doc="Restart a sibling whose heartbeat turns CRITICAL (needs aws.greengrass.Cli on the device).",
    )
    components: tuple[str, ...] = setting(
        default=SUITE_SIBLINGS,
        max_items=32,
        pattern=COMPONENT_NAME_PATTERN,
        doc="Components that may be restarted; the recipe must grant RestartComponent on each.",
    )
    cooldown_seconds: float = setting(
        default=HOUR, minimum=60, maximum=7 * 24 * HOUR, doc="At most one restart per component this often."
    )
    max_per_hour: int = setting(default=3, minimum=1, maximum=60, doc="At most this many restarts per hour.")
    max_attempts: int = setting(
        default=3,
        minimum=1,
        maximum=100,
        doc="Restarts of one component without it turning healthy in between, then no more until it does.",
    )


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str


@dataclass
class RestartPlanner:
    """Decides whether a stale component may be restarted now; remembers what was asked."""

    settings: RestartSettings
    clock: Callable[[], float] = time.monotonic
    unsupported: str | None = None  # why the device cannot restart components, once known
    _last: dict[str, float] = field(default_factory=dict)
    _attempts: dict[str, int] = field(default_factory=dict)
    _recent: deque[float] = field(default_factory=deque)

    def configure(self, settings: RestartSettings) -> None:
        if settings != self.settings:
            self.unsupported = None  # a new configuration (a CLI deployed, a grant added) deserves a try
        self.settings = settings

    def decide(self, component: str) -> Decision:
        settings, now = self.settings, self.clock()
        while self._recent and now - self._recent[0] >= HOUR:
            self._recent.popleft()
        if not settings.enabled:
            return Decision(allowed=False, reason="restarts are off (restart.enabled)")
        if self.unsupported is not None:
            return Decision(allowed=False, reason=self.unsupported)
        if component not in settings.components:
            return Decision(allowed=False, reason="not in restart.components")
        attempts = self._attempts.get(component, 0)
        if attempts >= settings.max_attempts:
            return Decision(
                allowed=False, reason=f"gave up after {attempts} restarts that did not make it healthy"
            )
        last = self._last.get(component)
        if last is not None and now - last < settings.cooldown_seconds:
            return Decision(allowed=False, reason=f"restarted {now - last:.0f} s ago (cooldown)")
        if len(self._recent) >= settings.max_per_hour:
            recent = len(self._recent)
            return Decision(allowed=False, reason=f"{recent} restarts in the last hour (maxPerHour)")
        return Decision(allowed=True, reason=f"heartbeat CRITICAL; restart {attempts + 1}")

    def requested(self, component: str) -> None:
        now = self.clock()
        self._last[component] = now
        self._attempts[component] = self._attempts.get(component, 0) + 1
        self._recent.append(now)

    def recovered(self, component: str) -> None:
        """The component turned healthy: its restarts that did not cure it are forgiven."""
        self._attempts.pop(component, None)
