"""The health monitor's check thresholds and health log settings, as configuration models.

Each check has a model of its kind (the kind fixes the direction and the scale of its values), and
`CheckThresholds` holds one per check with the defaults below; `CheckThresholds().rules()` gives the
evaluator's `Rule`s. The component's configuration nests these as `checks` and `log`; the recipe's
DefaultConfiguration is `defaults_document(...)` of it. Every model's `validate()` refuses what could not
work: warn and critical in the wrong order for the direction, a hysteresis that no value on the scale
could ever clear, a check enabled with no threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol

from device_agent.config import setting
from device_agent.errors import ConfigurationError
from device_agent.health_log import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_FILES,
    MAX_FILE_BYTES,
    MAX_FILES,
    MIN_FILE_BYTES,
    MIN_FILES,
)
from health_monitor.evaluate import Direction, Rule

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
# A group name as useradd/groupadd accept it.
GROUP_PATTERN = r"[a-z_][a-z0-9_-]{0,30}\$?"


class CheckSettings(Protocol):
    """What the monitor needs of any check's settings."""

    @property
    def enabled(self) -> bool: ...

    def rule(self) -> Rule: ...


@dataclass(frozen=True, kw_only=True)
class _Durations:
    """What every check has: on/off, how long a level must hold, how long to recover, when to give up."""

    enabled: bool = setting(default=True, doc="Evaluate this check.")
    for_seconds: float = setting(
        default=0.0, minimum=0, maximum=DAY, doc="How long a threshold must hold before the state rises."
    )
    recover_seconds: float = setting(
        default=0.0, minimum=0, maximum=DAY, doc="How long values must stay clear before the state falls."
    )
    unknown_after_seconds: float = setting(
        default=600.0, minimum=1, maximum=30 * DAY, doc="UNKNOWN after this long without a reading."
    )


class _Thresholds:
    """Rules shared by the threshold models: `validate()` and the evaluator's `Rule`.

    A subclass declares `warn`, `critical` and `hysteresis` with the limits of its scale, and sets
    `direction` and the scale's ends (`scale_min`, `scale_max`).
    """

    direction: ClassVar[Direction]
    scale_min: ClassVar[float]
    scale_max: ClassVar[float]
    enabled: bool
    warn: float | None
    critical: float | None
    hysteresis: float
    for_seconds: float
    recover_seconds: float
    unknown_after_seconds: float

    def validate(self) -> None:
        if self.warn is None and self.critical is None:
            if self.enabled:
                raise ConfigurationError(("warn",), "a warn or critical threshold, or enabled: false")
            return
        above = self.direction is Direction.ABOVE
        if self.warn is not None and self.critical is not None:
            if above and self.warn >= self.critical:
                raise ConfigurationError(
                    ("warn",), f"a value below critical ({self.critical:g}): higher values are worse here"
                )
            if not above and self.warn <= self.critical:
                raise ConfigurationError(
                    ("warn",), f"a value above critical ({self.critical:g}): lower values are worse here"
                )
        thresholds = [t for t in (self.warn, self.critical) if t is not None]
        # The hysteresis must leave room on the scale for a value that clears the nearest threshold.
        room = min(thresholds) - self.scale_min if above else self.scale_max - max(thresholds)
        if self.hysteresis >= room:
            raise ConfigurationError(
                ("hysteresis",), f"less than {room:g}, or no value could clear it and the check never recover"
            )

    def rule(self) -> Rule:
        return Rule(
            direction=self.direction,
            warn=self.warn,
            critical=self.critical,
            hysteresis=self.hysteresis,
            for_seconds=self.for_seconds,
            recover_seconds=self.recover_seconds,
            unknown_after_seconds=self.unknown_after_seconds,
        )


@dataclass(frozen=True, kw_only=True)
class PercentUsed(_Durations, _Thresholds):
    """Percent used (CPU, memory, swap): higher is worse."""

    direction: ClassVar[Direction] = Direction.ABOVE
    scale_min: ClassVar[float] = 0.0
    scale_max: ClassVar[float] = 100.0
    warn: float | None = setting(default=90.0, minimum=0, maximum=100, doc="Percent; null: no warning.")
    critical: float | None = setting(default=97.0, minimum=0, maximum=100, doc="Percent; null: none.")
    hysteresis: float = setting(default=5.0, minimum=0, maximum=100, doc="Percentage points.")


@dataclass(frozen=True, kw_only=True)
class PercentFree(_Durations, _Thresholds):
    """Percent free (disk space, inodes, per mount): lower is worse."""

    direction: ClassVar[Direction] = Direction.BELOW
    scale_min: ClassVar[float] = 0.0
    scale_max: ClassVar[float] = 100.0
    warn: float | None = setting(default=10.0, minimum=0, maximum=100, doc="Percent free; null: none.")
    critical: float | None = setting(default=5.0, minimum=0, maximum=100, doc="Percent free; null: none.")
    hysteresis: float = setting(default=2.0, minimum=0, maximum=100, doc="Percentage points.")


@dataclass(frozen=True, kw_only=True)
class Temperature(_Durations, _Thresholds):
    """Degrees Celsius, per sensor: higher is worse."""

    direction: ClassVar[Direction] = Direction.ABOVE
    scale_min: ClassVar[float] = -60.0
    scale_max: ClassVar[float] = 200.0
    warn: float | None = setting(default=75.0, minimum=-40, maximum=150, doc="Degrees C; null: none.")
    critical: float | None = setting(default=82.0, minimum=-40, maximum=150, doc="Degrees C; null: none.")
    hysteresis: float = setting(default=5.0, minimum=0, maximum=100, doc="Degrees C.")


@dataclass(frozen=True, kw_only=True)
class Seconds(_Durations, _Thresholds):
    """Seconds (offline for, since the last publish, of a clock jump): higher is worse."""

    direction: ClassVar[Direction] = Direction.ABOVE
    scale_min: ClassVar[float] = 0.0
    scale_max: ClassVar[float] = 365 * DAY
    warn: float | None = setting(default=300.0, minimum=1, maximum=30 * DAY, doc="Seconds; null: none.")
    critical: float | None = setting(default=3600.0, minimum=1, maximum=30 * DAY, doc="Seconds; null: none.")
    hysteresis: float = setting(default=0.0, minimum=0, maximum=DAY, doc="Seconds.")


@dataclass(frozen=True, kw_only=True)
class Intervals(_Durations, _Thresholds):
    """Silence counted in a component's own heartbeat intervals (2.0: two intervals without one)."""

    direction: ClassVar[Direction] = Direction.ABOVE
    scale_min: ClassVar[float] = 0.0
    scale_max: ClassVar[float] = 1e6
    warn: float | None = setting(default=1.5, minimum=1, maximum=1000, doc="Intervals; null: none.")
    critical: float | None = setting(default=3.0, minimum=1, maximum=1000, doc="Intervals; null: none.")
    hysteresis: float = setting(default=0.5, minimum=0, maximum=100, doc="Intervals.")


@dataclass(frozen=True, kw_only=True)
class DaysLeft(_Durations, _Thresholds):
    """Days until a certificate expires: lower is worse (negative once expired)."""

    direction: ClassVar[Direction] = Direction.BELOW
    scale_min: ClassVar[float] = -100_000.0
    scale_max: ClassVar[float] = 100_000.0
    warn: float | None = setting(default=30.0, minimum=-3650, maximum=3650, doc="Days; null: none.")
    critical: float | None = setting(default=7.0, minimum=-3650, maximum=3650, doc="Days; null: none.")
    hysteresis: float = setting(default=1.0, minimum=0, maximum=365, doc="Days.")


@dataclass(frozen=True, kw_only=True)
class EventCount(_Durations, _Thresholds):
    """Events counted over the last `windowSeconds` (integrity failures, restarts ...): more is worse."""

    direction: ClassVar[Direction] = Direction.ABOVE
    scale_min: ClassVar[float] = 0.0
    scale_max: ClassVar[float] = 1e9
    warn: float | None = setting(default=1.0, minimum=1, maximum=1e6, doc="Events in the window; null: none.")
    critical: float | None = setting(default=None, minimum=1, maximum=1e6, doc="Events in the window; null.")
    hysteresis: float = setting(default=0.0, minimum=0, maximum=1e6, doc="Events.")
    window_seconds: float = setting(
        default=HOUR, minimum=1, maximum=30 * DAY, doc="The window events are counted over."
    )


@dataclass(frozen=True, kw_only=True)
class Flag(_Durations):
    """A yes/no condition (throttled now, undervoltage seen, clock never set): 1 is the problem."""

    direction: ClassVar[Direction] = Direction.ABOVE
    severity: str = setting(default="warn", choices=("warn", "critical"), doc="The state while raised.")

    def rule(self) -> Rule:
        raised = self.severity == "warn"
        return Rule(
            direction=Direction.ABOVE,
            warn=1.0 if raised else None,
            critical=None if raised else 1.0,
            hysteresis=0.5,  # 0 clears, 1 raises
            for_seconds=self.for_seconds,
            recover_seconds=self.recover_seconds,
            unknown_after_seconds=self.unknown_after_seconds,
        )


@dataclass(frozen=True, kw_only=True)
class CheckThresholds:
    """One entry per check; the field name is the check's name in the health log and in `device-health`."""

    cpu: PercentUsed = PercentUsed(
        warn=90.0, critical=98.0, for_seconds=5 * MINUTE, recover_seconds=2 * MINUTE
    )
    memory: PercentUsed = PercentUsed(
        warn=90.0, critical=95.0, for_seconds=2 * MINUTE, recover_seconds=MINUTE
    )
    swap: PercentUsed = PercentUsed(
        warn=80.0, critical=95.0, for_seconds=5 * MINUTE, recover_seconds=2 * MINUTE
    )
    disk_space: PercentFree = PercentFree(
        warn=10.0, critical=5.0, for_seconds=MINUTE, recover_seconds=MINUTE, unknown_after_seconds=HOUR
    )
    inodes: PercentFree = PercentFree(
        warn=10.0, critical=5.0, for_seconds=MINUTE, recover_seconds=MINUTE, unknown_after_seconds=HOUR
    )
    temperature: Temperature = Temperature(
        warn=75.0, critical=82.0, for_seconds=MINUTE, recover_seconds=2 * MINUTE
    )
    throttling: Flag = Flag(severity="warn", for_seconds=MINUTE, recover_seconds=5 * MINUTE)
    undervoltage: Flag = Flag(severity="warn", recover_seconds=10 * MINUTE)
    heartbeat: Intervals = Intervals(warn=1.5, critical=3.0, hysteresis=0.5)
    integrity: EventCount = EventCount(
        warn=None, critical=1.0, window_seconds=DAY, unknown_after_seconds=HOUR
    )
    config_rejected: EventCount = EventCount(warn=1.0, window_seconds=HOUR, unknown_after_seconds=HOUR)
    unauthorized: EventCount = EventCount(
        warn=1.0, critical=10.0, window_seconds=HOUR, unknown_after_seconds=HOUR
    )
    cloud_connection: Seconds = Seconds(warn=5 * MINUTE, critical=HOUR, unknown_after_seconds=HOUR)
    last_publish: Seconds = Seconds(warn=15 * MINUTE, critical=2 * HOUR, unknown_after_seconds=HOUR)
    certificate: DaysLeft = DaysLeft(warn=30.0, critical=7.0, unknown_after_seconds=2 * DAY)
    clock_unset: Flag = Flag(severity="critical", unknown_after_seconds=HOUR)
    clock_jump: Seconds = Seconds(
        warn=5 * MINUTE, critical=None, recover_seconds=HOUR, unknown_after_seconds=HOUR
    )
    reboot: EventCount = EventCount(warn=1.0, critical=3.0, window_seconds=DAY, unknown_after_seconds=DAY)
    unexpected_restart: EventCount = EventCount(
        warn=1.0, critical=5.0, window_seconds=HOUR, unknown_after_seconds=HOUR
    )
    store: Seconds = Seconds(warn=MINUTE, critical=10 * MINUTE, unknown_after_seconds=HOUR)

    def rules(self) -> dict[str, Rule]:
        """The enabled checks' rules, by check name."""
        return {name: check.rule() for name, check in self.checks().items() if check.enabled}

    def checks(self) -> Mapping[str, CheckSettings]:
        """Every check's settings by check name, enabled or not."""
        return {name: getattr(self, name) for name in type(self).__dataclass_fields__}


@dataclass(frozen=True, kw_only=True)
class LogSettings:
    max_file_bytes: int = setting(
        default=DEFAULT_MAX_FILE_BYTES,
        minimum=MIN_FILE_BYTES,
        maximum=MAX_FILE_BYTES,
        doc="Largest size of one health log file; the log rotates before a write would pass it.",
    )
    max_files: int = setting(
        default=DEFAULT_MAX_FILES,
        minimum=MIN_FILES,
        maximum=MAX_FILES,
        doc="Files kept (health.log and health.log.1 ...); the log never holds more than maxFiles x"
        " maxFileBytes.",
    )
    technician_group: str = setting(
        default="",
        max_length=32,
        pattern=f"|{GROUP_PATTERN}",
        doc="A Unix group that may read the log (files 0640, directory 0750); empty: private (0600/0700).",
    )
    snapshot_interval_seconds: float = setting(
        default=300.0,
        minimum=10,
        maximum=DAY,
        doc="A snapshot of every check this often; device-health calls the log stale after 3 intervals.",
    )
