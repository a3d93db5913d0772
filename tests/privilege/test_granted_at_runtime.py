"""Least privilege, observed: each component runs on the local nucleus with only its own recipe's grants,
every request it makes is granted, and every grant is exercised (or listed below with the reason it is not).

The nucleus's authorizer records each decision (`Authorizer.add_decision_listener`) from before the first
deployment, so the subscriptions a component makes while it starts are seen too. Each run waits until every
grant outside the allow-list has been used (or times out), then asserts. Every recipe in `recipes/` runs;
a new component needs a `RUNS` entry only to speed it up, or an `UNEXERCISED` entry for a grant it uses on
an error path. The checks are one function (`observe`), also run on the telemetry publisher's recipe with one
topic too many (seen unexercised) and one too few (seen refused), so the test is seen to fail both ways.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from device_agent import store_protocol as protocol
from device_agent.devkit.authz import DESTINATIONS, Decision, resource_matches
from device_agent.devkit.lifecycle import ComponentState
from device_agent.devkit.testing import VirtualDevice
from tests.conftest import install_built

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STORE = "com.deviceagent.EncryptedStore"
TELEMETRY = "com.deviceagent.TelemetryPublisher"
HEALTH = "com.deviceagent.HealthMonitor"
REPORTER = "com.deviceagent.BootstrapReporter"
PUBLISH = "aws.greengrass#PublishToTopic"
SUBSCRIBE = "aws.greengrass#SubscribeToTopic"
EVENTS = "device-agent/events"
WAIT_SECONDS = 60.0


def ask_the_store_for_telemetry_keys(device: VirtualDevice) -> None:
    """A client's request, so that the store answers on a namespace's response topic."""
    request = protocol.request_document(f"probe-{time.monotonic_ns()}", protocol.Op.KEYS)
    device.publish_local(protocol.request_topic("telemetry"), request)


@dataclass(frozen=True)
class Run:
    """How to run a component briefly: its companions, fast settings, the device's options, and a nudge
    repeated while waiting."""

    companions: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    nudge: Callable[[VirtualDevice], None] | None = None
    device: dict[str, Any] = field(default_factory=dict)


RUNS: dict[str, Run] = {
    STORE: Run(
        config={"statsIntervalSeconds": 1.0, "heartbeatIntervalSeconds": 1.0},
        nudge=ask_the_store_for_telemetry_keys,
    ),
    TELEMETRY: Run(companions=(STORE,), config={"intervalSeconds": 1.0, "heartbeatIntervalSeconds": 1.0}),
    HEALTH: Run(config={"summaryIntervalSeconds": 1.0, "heartbeatIntervalSeconds": 1.0}),
    REPORTER: Run(
        companions=(STORE,),
        config={"components": {"settleSeconds": 0.0}, "heartbeatIntervalSeconds": 1.0},
        # With the Greengrass CLI, so that its ListComponents grant is exercised (the components fact).
        device={"with_cli": True},
    ),
}

#: Grants a brief, healthy run does not exercise, each with the reason it is still needed.
UNEXERCISED: dict[str, dict[tuple[str, str], str]] = {
    component: {
        # Every component publishes security, configuration and lifecycle events only when one happens
        # (a refused publish, a rejected configuration, a fatal error): an error path.
        (PUBLISH, EVENTS): "events are sent on error paths only",
    }
    for component in (STORE, TELEMETRY, HEALTH, REPORTER)
}
UNEXERCISED[REPORTER].update(
    {
        # The whole-store wipe, sent only when eraseOnReject is true and a verdict rejects the device.
        (PUBLISH, "device-agent/store/_admin/request"): "only when a rejected device erases its store",
        (SUBSCRIBE, "device-agent/store/_admin/response"): "only when a rejected device erases its store",
    }
)


def recipe_names() -> list[str]:
    return sorted(yaml.safe_load(p.read_text())["ComponentName"] for p in (ROOT / "recipes").glob("*.yaml"))


@dataclass
class Recorder:
    principal: str
    decisions: list[Decision] = field(default_factory=list)

    def __call__(self, decision: Decision) -> None:
        if decision.principal == self.principal:
            self.decisions.append(decision)

    def refused(self) -> list[Decision]:
        return [d for d in self.decisions if not d.allowed]

    def exercised(self, destination: str, operation: str, pattern: str) -> bool:
        lookup = DESTINATIONS[destination].lookup
        return any(
            d.allowed
            and d.destination == destination
            and d.operation == operation
            and d.resource is not None
            and resource_matches(pattern, d.resource, lookup)
            for d in self.decisions
        )


def grants(device: VirtualDevice, component: str) -> set[tuple[str, str, str]]:
    """(destination, operation, resource) of the component's loaded policies (thing name interpolated)."""
    return {
        (policy.destination, operation, resource)
        for policy in device.nucleus.authorizer.policies(component)
        for operation in policy.operations
        for resource in policy.resources
    }


def as_written(device: VirtualDevice, resource: str) -> str:
    return resource.replace(device.nucleus.thing_name, "{iot:thingName}")


def unexercised(device: VirtualDevice, component: str, recorder: Recorder) -> set[tuple[str, str]]:
    return {
        (operation, as_written(device, resource))
        for destination, operation, resource in grants(device, component)
        if not recorder.exercised(destination, operation, resource)
    }


@dataclass(frozen=True)
class Observation:
    """What a run showed: refused requests, grants not exercised (beyond the allow-list), stale excuses."""

    refused: tuple[Decision, ...]
    unexercised: frozenset[tuple[str, str]]
    stale_excuses: frozenset[tuple[str, str]]
    state: ComponentState

    def problems(self) -> list[str]:
        return [
            *(f"refused: {d.operation} on {d.resource}" for d in self.refused),
            *(f"unexercised: {op} on {resource}" for op, resource in sorted(self.unexercised)),
            # The allow-list names real grants only (a grant removed from the recipe leaves no stale excuse).
            *(f"allow-listed but not granted: {op} on {res}" for op, res in sorted(self.stale_excuses)),
            *([f"not running: {self.state.name}"] if self.state is not ComponentState.RUNNING else []),
        ]


async def observe(
    component: str,
    start_device: Any,
    built_suite: Path,
    tmp_path: Path,
    *,
    edit_recipe: Callable[[dict[str, Any]], None] | None = None,
    expected_idle: frozenset[tuple[str, str]] = frozenset(),
) -> Observation:
    """Run `component` as built (its recipe first changed by `edit_recipe`) and record what it was granted.

    The wait ends once every grant outside the allow-list and `expected_idle` has been exercised, or after
    WAIT_SECONDS; `expected_idle` only shortens the wait for a grant a fixture knows is never used.
    """
    run = RUNS.get(component, Run())
    names = (*run.companions, component)
    base = install_built(built_suite, tmp_path / "base", names)
    if edit_recipe is not None:
        path = base / "recipes" / f"{component}.yaml"
        recipe = yaml.safe_load(path.read_text())
        edit_recipe(recipe)
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    allowed_idle = set(UNEXERCISED.get(component, {}))
    async with start_device(interpolate_component_configuration=True, **run.device) as device:
        recorder = Recorder(component)
        device.nucleus.authorizer.add_decision_listener(recorder)
        result = await device.deploy(
            recipe_dir=base / "recipes",
            artifact_dir=base / "artifacts",
            merge=dict.fromkeys(names, ""),
            update_config={component: {"MERGE": run.config}} if run.config else {},
        )
        assert result.succeeded, result.reason
        await device.wait_for_state(component, ComponentState.RUNNING, timeout=WAIT_SECONDS)
        deadline = time.monotonic() + WAIT_SECONDS
        while (
            unexercised(device, component, recorder) - allowed_idle - expected_idle
            and time.monotonic() < deadline
        ):
            if run.nudge is not None:
                run.nudge(device)
            await asyncio.sleep(0.5)
        granted = {(op, as_written(device, r)) for _, op, r in grants(device, component)}
        return Observation(
            refused=tuple(recorder.refused()),
            unexercised=frozenset(unexercised(device, component, recorder) - allowed_idle),
            stale_excuses=frozenset(allowed_idle - granted),
            state=device.state(component),
        )


@pytest.mark.parametrize("component", recipe_names())
async def test_every_request_is_granted_and_every_grant_is_used(
    component: str, start_device, built_suite: Path, tmp_path: Path
):
    observation = await observe(component, start_device, built_suite, tmp_path)
    assert observation.problems() == []


def policy(recipe: dict[str, Any], policy_id: str) -> dict[str, Any]:
    access = recipe["ComponentConfiguration"]["DefaultConfiguration"]["accessControl"]
    found: dict[str, Any] = access["aws.greengrass.ipc.pubsub"][policy_id]
    return found


async def test_a_recipe_that_grants_one_topic_too_many_is_seen_unexercised(
    start_device, built_suite: Path, tmp_path: Path
):
    def grant_more(recipe: dict[str, Any]) -> None:
        policy(recipe, f"{TELEMETRY}:pubsub:3")["resources"].append("device-agent/debug")

    extra = (PUBLISH, "device-agent/debug")
    observation = await observe(
        TELEMETRY,
        start_device,
        built_suite,
        tmp_path,
        edit_recipe=grant_more,
        expected_idle=frozenset({extra}),
    )
    assert observation.problems() == ["unexercised: aws.greengrass#PublishToTopic on device-agent/debug"]


async def test_a_recipe_without_a_topic_the_code_uses_is_seen_refused(
    start_device, built_suite: Path, tmp_path: Path
):
    def grant_less(recipe: dict[str, Any]) -> None:
        policy(recipe, f"{TELEMETRY}:pubsub:3")["resources"].remove("device-agent/metrics")

    observation = await observe(TELEMETRY, start_device, built_suite, tmp_path, edit_recipe=grant_less)
    problems = observation.problems()
    assert problems, "the refused publish went unseen"
    assert set(problems) == {"refused: aws.greengrass#PublishToTopic on device-agent/metrics"}
