"""What each device runs: the suite built once into the fleet root, and the two deployments.

Quarantine is the bootstrap reporter and the store; production is all four components, as the deployment
templates (`deployments/quarantine.json`, `deployments/production.json`) define them. `component_sets` is the
seam: it reads the templates when the loader is there, else uses the same sets, limited to the components
whose recipe was built (a component still being written is left out, not invented).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_agent.devkit.build import build_components
from device_agent.devkit.fleet.layout import FleetLayout
from device_agent.devkit.fleet.spec import FleetError, FleetSpec
from device_agent.devkit.recipes import RECIPE_SUFFIXES

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[3]

REPORTER = "com.deviceagent.BootstrapReporter"
STORE = "com.deviceagent.EncryptedStore"
TELEMETRY = "com.deviceagent.TelemetryPublisher"
HEALTH = "com.deviceagent.HealthMonitor"

QUARANTINE: tuple[str, ...] = (REPORTER, STORE)
PRODUCTION: tuple[str, ...] = (REPORTER, STORE, TELEMETRY, HEALTH)

QUARANTINE_GROUP = "quarantine"
PRODUCTION_GROUP = "production"


@dataclass(frozen=True, slots=True)
class BuiltSuite:
    recipe_dir: Path
    artifact_dir: Path

    def available(self) -> frozenset[str]:
        return frozenset(p.stem for p in self.recipe_dir.iterdir() if p.suffix.lower() in RECIPE_SUFFIXES)


@dataclass(frozen=True, slots=True)
class ComponentSets:
    quarantine: tuple[str, ...]
    production: tuple[str, ...]

    def for_group(self, group: str) -> tuple[str, ...]:
        return self.production if group == PRODUCTION_GROUP else self.quarantine


def build_suite(layout: FleetLayout, project: Path = PROJECT_ROOT) -> BuiltSuite:
    """Build every component of the project into `<root>/build` (again at each `fleet up`: current code)."""
    built = build_components(project, layout.build)
    if not built:
        raise FleetError(f"no component to deploy: {project / 'recipes'} holds no recipe")
    return BuiltSuite(layout.build / "recipes", layout.build / "artifacts")


def component_sets(suite: BuiltSuite) -> ComponentSets:
    available = suite.available()
    quarantine = tuple(name for name in QUARANTINE if name in available)
    production = tuple(name for name in PRODUCTION if name in available)
    if not quarantine:
        raise FleetError(
            "neither the bootstrap reporter nor the store was built: nothing to run in quarantine"
        )
    return ComponentSets(quarantine=quarantine, production=production)


def configuration(spec: FleetSpec, thing: str, components: tuple[str, ...]) -> dict[str, Any]:
    """The `--update-config` of a device's deployment: the fleet's intervals, a rejected device's facts."""
    merges: dict[str, dict[str, Any]] = {}
    if spec.telemetry_interval is not None:
        merges[TELEMETRY] = {"intervalSeconds": spec.telemetry_interval}
    if spec.health_interval is not None:
        merges[HEALTH] = {"summaryIntervalSeconds": spec.health_interval}
    if thing in spec.rejected:
        merges.update(reject_overrides())
    return {name: {"MERGE": merge} for name, merge in merges.items() if name in components}


def reject_overrides() -> Mapping[str, dict[str, Any]]:
    """Configuration that makes the reporter report facts the verifier's policy refuses.

    The seam for the bootstrap reporter: until it offers a way to report other facts, a rejected device is
    one the verifier has no verdict source for (see docs/virtual-fleet.md).
    """
    return {}
