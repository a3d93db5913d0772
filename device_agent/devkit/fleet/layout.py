"""Where a fleet keeps its files: everything under one root directory (0700), so that `fleet status`,
`fleet chaos` and `fleet down` work from any shell given the same `--root`.

    <root>/fleet.json             the fleet's specification (written once by `fleet up`)
    <root>/state.json             pids, broker port, groups and verdicts (the supervisor keeps it current)
    <root>/fleet.socket           the supervisor's control socket (owner-only)
    <root>/pki/                   the local CA, the broker's server identity and every client identity
    <root>/broker/                mosquitto's configuration, ACL, log and persistence file
    <root>/build/                 the suite built once (recipes/ and artifacts/)
    <root>/environments/          the components' environments, one per lock (unless the caller names a cache)
    <root>/devices/<thing>/       each device's nucleus root (short: Unix socket paths stay under 108 bytes)
    <root>/logs/                  the supervisor's log and each nucleus's console output
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path(".virtual-fleet")
THING_PREFIX = "vdev"
VERIFIER = "device-agent-verifier"  # the verifier's certificate common name (its MQTT username)
OBSERVER = "device-agent-observer"  # the fleet tool's own read-only identity
# A Unix socket path holds at most 107 bytes (sun_path, with its NUL). Each device's nucleus listens on two.
SOCKET_PATH_MAX = 107
DEVICE_SOCKETS = ("ipc.socket", "control.socket")


def thing_name(index: int, prefix: str = THING_PREFIX) -> str:
    """The thing name of device `index` (1-based): vdev-001, vdev-002, ..."""
    return f"{prefix}-{index:03d}"


@dataclass(frozen=True, slots=True)
class FleetLayout:
    root: Path

    @classmethod
    def at(cls, root: Path) -> FleetLayout:
        return cls(root.resolve())

    @property
    def spec_file(self) -> Path:
        return self.root / "fleet.json"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def control_socket(self) -> Path:
        return self.root / "fleet.socket"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def broker(self) -> Path:
        return self.root / "broker"

    @property
    def acl_file(self) -> Path:
        return self.broker / "acl"

    @property
    def build(self) -> Path:
        return self.root / "build"

    @property
    def environments(self) -> Path:
        """The components' virtual environments, built once per lock and shared by every device."""
        return self.root / "environments"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def supervisor_log(self) -> Path:
        return self.logs / "supervisor.log"

    @property
    def devices(self) -> Path:
        return self.root / "devices"

    def device_root(self, thing: str) -> Path:
        return self.devices / thing

    def device_console(self, thing: str) -> Path:
        return self.logs / f"{thing}.console.log"

    def socket_path_problem(self, things: Iterable[str]) -> str | None:
        """Why a device's sockets could not be bound under this root, or None. (Its nucleus would refuse to
        start; a real nucleus hands its components a relative path instead, the same on every device.)"""
        for thing in things:
            for name in DEVICE_SOCKETS:
                size = len(os.fsencode(self.device_root(thing) / name))
                if size > SOCKET_PATH_MAX:
                    return (
                        f"the fleet root {self.root} is too long: {thing}'s {name} would be {size} bytes, "
                        f"and a Unix socket path holds at most {SOCKET_PATH_MAX}; use a shorter --root"
                    )
        return None
