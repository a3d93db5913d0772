"""The parsed form of a Greengrass component recipe, as the local nucleus uses it.

Only what the nucleus acts on is modelled; everything is frozen so that a recipe, once loaded and
validated, can be shared between the deployment, lifecycle and authorization code without copies.
Parsing lives in `device_agent.devkit.recipes`; this module has no behaviour beyond small helpers.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any

EMPTY_ENV: Mapping[str, str] = MappingProxyType({})


class DependencyType(enum.StrEnum):
    HARD = "HARD"
    SOFT = "SOFT"


class Unarchive(enum.StrEnum):
    NONE = "NONE"
    ZIP = "ZIP"


class StepName(enum.StrEnum):
    """Lifecycle steps in the order the nucleus may run them."""

    BOOTSTRAP = "bootstrap"
    INSTALL = "install"
    STARTUP = "startup"
    RUN = "run"
    SHUTDOWN = "shutdown"
    RECOVER = "recover"


# The nucleus's default timeouts per step, in seconds (None: no timeout). Reference §6.2.
DEFAULT_STEP_TIMEOUTS: Mapping[StepName, float | None] = MappingProxyType(
    {
        StepName.BOOTSTRAP: 120.0,
        StepName.INSTALL: 120.0,
        StepName.STARTUP: 120.0,
        StepName.RUN: None,
        StepName.SHUTDOWN: 15.0,
        StepName.RECOVER: 60.0,
    }
)


@dataclass(frozen=True, kw_only=True)
class LifecycleStep:
    """One lifecycle step: a script run with `sh -c` in the component's work directory."""

    script: str
    requires_privilege: bool = False
    # "exists PATH" / "onpath EXE", optionally prefixed with "!"; None when absent.
    skipif: str | None = None
    # Seconds; None means the step's nucleus default (see DEFAULT_STEP_TIMEOUTS).
    timeout: float | None = None
    setenv: Mapping[str, str] = field(default_factory=lambda: EMPTY_ENV)


@dataclass(frozen=True, kw_only=True)
class Lifecycle:
    """The Linux lifecycle of a component (from its selected manifest)."""

    setenv: Mapping[str, str] = field(default_factory=lambda: EMPTY_ENV)
    steps: Mapping[StepName, LifecycleStep] = field(default_factory=lambda: MappingProxyType({}))

    def step(self, name: StepName) -> LifecycleStep | None:
        return self.steps.get(name)


@dataclass(frozen=True, kw_only=True)
class Dependency:
    name: str
    version_requirement: str = "*"
    dependency_type: DependencyType = DependencyType.HARD


@dataclass(frozen=True, kw_only=True)
class Artifact:
    uri: str
    unarchive: Unarchive = Unarchive.NONE
    # Recipe "Permission": who may read/execute the installed artifact ("OWNER", "ALL" or "NONE").
    read: str = "OWNER"
    execute: str = "NONE"

    @property
    def file_name(self) -> str:
        """The artifact's file name: the last segment of its URI (as the nucleus stores it)."""
        return PurePosixPath(self.uri.split("://", 1)[-1]).name


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """A validated recipe, with the manifest for this platform already selected."""

    name: str
    version: str
    description: str = ""
    publisher: str = ""
    component_type: str = "aws.greengrass.generic"
    dependencies: Mapping[str, Dependency] = field(default_factory=lambda: MappingProxyType({}))
    # DefaultConfiguration as written (JSON-like values). accessControl lives in here, as on the nucleus.
    default_configuration: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    artifacts: tuple[Artifact, ...] = ()

    @property
    def ref(self) -> str:
        """NAME=VERSION, as the Greengrass CLI writes a component reference."""
        return f"{self.name}={self.version}"


def thaw_json(value: Any) -> Any:
    """A deep mutable copy of a (possibly frozen) JSON-like value, for `json.dumps` or a config store."""
    if isinstance(value, Mapping):
        return {str(k): thaw_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw_json(v) for v in value]
    return value
