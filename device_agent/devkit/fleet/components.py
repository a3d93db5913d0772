"""What each device runs: the suite built once into the fleet root, and the two deployments of the suite's
templates, `deployments/quarantine.json` (reporter and store) and `deployments/production.json` (all four),
filled with the device's certificate path as Greengrass fills them for a thing group.

The fleet adds its own settings on top of a template's configuration: shorter intervals when asked (tests),
and the reporter's first wait.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_agent.devkit.build import WHEELHOUSE_ENV, build_components
from device_agent.devkit.deployment_templates import load_template
from device_agent.devkit.errors import DeploymentError
from device_agent.devkit.fleet.layout import FleetLayout
from device_agent.devkit.fleet.spec import FleetError, FleetSpec
from device_agent.devkit.recipes import RECIPE_SUFFIXES, load_recipe

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[3]

REPORTER = "com.deviceagent.BootstrapReporter"
STORE = "com.deviceagent.EncryptedStore"
TELEMETRY = "com.deviceagent.TelemetryPublisher"
HEALTH = "com.deviceagent.HealthMonitor"

QUARANTINE_GROUP = "quarantine"
PRODUCTION_GROUP = "production"
GROUPS = (QUARANTINE_GROUP, PRODUCTION_GROUP)  # also the templates' names in deployments/


@dataclass(frozen=True, slots=True)
class BuiltSuite:
    recipe_dir: Path
    artifact_dir: Path

    def available(self) -> dict[str, str]:
        """Name -> version of every built component."""
        recipes = (load_recipe(p) for p in self.recipe_dir.iterdir() if p.suffix.lower() in RECIPE_SUFFIXES)
        return {recipe.name: recipe.version for recipe in recipes}


@dataclass(frozen=True, slots=True)
class ComponentSets:
    """Name -> version for each group's deployment."""

    quarantine: dict[str, str]
    production: dict[str, str]

    def for_group(self, group: str) -> dict[str, str]:
        return self.production if group == PRODUCTION_GROUP else self.quarantine


def wheelhouse(project: Path = PROJECT_ROOT) -> Path:
    """The locked wheels for this machine: $DEVICE_AGENT_WHEELHOUSE, else the project's dev wheelhouse.

    The fleet always builds offline: Install then takes every wheel from the artifact and never reaches a
    package index (everything stays on the machine).
    """
    named = os.environ.get(WHEELHOUSE_ENV)
    found = Path(named) if named else project / ".venv" / "wheelhouse" / "host"
    if not found.is_dir():
        raise FleetError(
            f"no wheelhouse at {found}: `bash scripts/_venv.sh` downloads the locked wheels once "
            f"(or set {WHEELHOUSE_ENV}); the fleet installs offline only"
        )
    return found


def build_suite(layout: FleetLayout, project: Path = PROJECT_ROOT) -> BuiltSuite:
    """Build every component offline into `<root>/build` (again at each `fleet up`: the current code)."""
    built = build_components(project, layout.build, wheels=wheelhouse(project))
    if not built:
        raise FleetError(f"no component to deploy: {project / 'recipes'} holds no recipe")
    return BuiltSuite(layout.build / "recipes", layout.build / "artifacts")


def component_sets(suite: BuiltSuite) -> ComponentSets:
    """Each template's components, checked against what was built (a missing one fails here, not later)."""
    available = suite.available()
    sets = {}
    for group in GROUPS:
        try:
            wanted = load_template(group).suite_components()
        except DeploymentError as exc:
            raise FleetError(str(exc)) from exc
        missing = sorted(f"{n} {v}" for n, v in wanted.items() if available.get(n) != v)
        if missing:
            raise FleetError(f"the {group} template names components that were not built: {missing}")
        sets[group] = wanted
    return ComponentSets(quarantine=sets[QUARANTINE_GROUP], production=sets[PRODUCTION_GROUP])


def configuration(spec: FleetSpec, group: str, certificate: Path) -> dict[str, Any]:
    """The `--update-config` of a device's deployment: its group's template, then the fleet's settings."""
    try:
        updates = load_template(group, {"CERTIFICATE_PATH": str(certificate)}).update_config()
    except DeploymentError as exc:
        raise FleetError(str(exc)) from exc
    fleet: dict[str, dict[str, Any]] = {}
    if spec.telemetry_interval is not None:
        fleet[TELEMETRY] = {"intervalSeconds": spec.telemetry_interval}
    if spec.health_interval is not None:
        fleet[HEALTH] = {"summaryIntervalSeconds": spec.health_interval}
    if spec.report_settle is not None:
        fleet[REPORTER] = {"components": {"settleSeconds": spec.report_settle}}
    names = set(load_template(group).suite_components())
    for name, merge in fleet.items():
        if name in names:
            update = updates.setdefault(name, {})
            update["MERGE"] = {**update.get("MERGE", {}), **merge}
    return updates
