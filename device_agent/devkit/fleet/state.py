"""The fleet's state file, `<root>/state.json` (0600): written by the supervisor, read by every other
command. It holds pids and the broker's port (so `fleet down` finds everything from another shell), each
device's group and what the observer saw. Replaced atomically: a reader sees the old or the new state.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from device_agent.devkit.fleet.components import QUARANTINE_GROUP
from device_agent.devkit.fleet.spec import FleetError
from device_agent.files import atomic_write

SCHEMA = "virtual-fleet-state/1"


@dataclass
class DeviceRecord:
    pid: int | None = None
    group: str = QUARANTINE_GROUP  # the group whose deployment the device runs
    wanted_group: str = QUARANTINE_GROUP  # the group its last verdict names (the keeper deploys it)
    components: list[str] = field(default_factory=list)
    restarts: int = 0
    revoked: bool = False
    offline: bool = False
    expect_rejection: bool = False
    promoted_at: float | None = None
    last_error: str | None = None
    group_change_failures: int = 0


@dataclass
class FleetState:
    supervisor_pid: int | None = None
    broker_pid: int | None = None
    broker_port: int | None = None
    verifier_pid: int | None = None
    phase: str = "starting"  # starting | running | stopping | stopped | failed
    error: str | None = None
    started_at: float | None = None
    updated_at: float | None = None
    devices: dict[str, DeviceRecord] = field(default_factory=dict)
    observed: dict[str, dict[str, Any]] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        document = {"schema": SCHEMA, **asdict(self)}
        atomic_write(path, json.dumps(document, indent=1, sort_keys=True).encode())

    @classmethod
    def load(cls, path: Path) -> FleetState:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FleetError(f"no fleet state at {path}: is a fleet up on this root?") from None
        except (OSError, ValueError) as exc:
            raise FleetError(f"cannot read the fleet state {path}: {exc}") from exc
        if not isinstance(document, dict) or document.pop("schema", None) != SCHEMA:
            raise FleetError(f"{path} is not a fleet state file")
        devices = {name: DeviceRecord(**record) for name, record in document.pop("devices", {}).items()}
        try:
            return cls(devices=devices, **document)
        except TypeError as exc:
            raise FleetError(f"{path} is not a fleet state file: {exc}") from exc
