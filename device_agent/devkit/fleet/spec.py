"""What a fleet is made of, decided once at `fleet up` and saved as `<root>/fleet.json`.

An existing fleet root keeps its specification: `fleet up` on it reuses the saved one (a different
`--devices` is refused rather than silently ignored), as it reuses the identities.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from device_agent.devkit.errors import DevkitError
from device_agent.devkit.fleet.layout import THING_PREFIX, thing_name
from device_agent.files import atomic_write

MAX_DEVICES = 500


class FleetError(DevkitError):
    """The fleet could not be created, started, inspected or stopped."""


@dataclass(frozen=True, kw_only=True, slots=True)
class FleetSpec:
    devices: int
    # The last `reject` devices present (and so report) a certificate that is not the one registered for their
    # thing, which the verifier's `certificate` rule refuses (identity.py).
    reject: int = 0
    prefix: str = THING_PREFIX
    # None keeps each component's default interval (what the scale benchmark measures); tests shorten them.
    telemetry_interval: float | None = None
    health_interval: float | None = None
    # How long the reporter listens to heartbeats before its first report (None: its default, 65 s).
    report_settle: float | None = None
    # The broker logs every message it delivers, to whom (mosquitto's debug log): what each device received.
    log_deliveries: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.devices <= MAX_DEVICES:
            raise FleetError(f"--devices must be between 1 and {MAX_DEVICES}, not {self.devices}")
        if not 0 <= self.reject <= self.devices:
            raise FleetError(f"--reject must be between 0 and --devices ({self.devices}), not {self.reject}")
        for name in ("telemetry_interval", "health_interval"):
            value = getattr(self, name)
            if value is not None and not 1.0 <= value <= 3600.0:  # noqa: PLR2004 - the components' own bounds
                raise FleetError(f"{name} must be between 1 and 3600 seconds")
        if self.report_settle is not None and not 0.0 <= self.report_settle <= 3600.0:  # noqa: PLR2004
            raise FleetError("report_settle must be between 0 and 3600 seconds")

    @property
    def things(self) -> tuple[str, ...]:
        return tuple(thing_name(i, self.prefix) for i in range(1, self.devices + 1))

    @property
    def rejected(self) -> frozenset[str]:
        return frozenset(self.things[self.devices - self.reject :]) if self.reject else frozenset()

    def save(self, path: Path) -> None:
        atomic_write(path, json.dumps(asdict(self), indent=2).encode())

    @classmethod
    def load(cls, path: Path) -> FleetSpec:
        try:
            document: Any = json.loads(path.read_text(encoding="utf-8"))
            return cls(**document)
        except FileNotFoundError:
            raise FleetError(
                f"no fleet at {path.parent} (no {path.name}): run `gg-virtual fleet up`"
            ) from None
        except (OSError, ValueError, TypeError) as exc:
            raise FleetError(f"cannot read the fleet specification {path}: {exc}") from exc
