"""Least privilege, proved from the code: each recipe grants exactly what its component's code requests.

For every recipe in `recipes/` (a new one is picked up as it lands): the authorized IPC operations the
component's package and the library code it imports call, with the resources they name, evaluated from the
recipe's defaults and the code's constants (`code_uses`), against the recipe's `accessControl` (`proof`).
A use the recipe does not grant fails, and so does a grant that no use needs.
"""

from __future__ import annotations

import ast
from typing import Any

import pytest

from tests.privilege import code_uses
from tests.privilege.code_uses import ComponentSource, Resolver, default_config
from tests.privilege.proof import Use, check, uses_of

COMPONENTS = code_uses.components()

#: Operations a component calls only when configured to; their grant comes with that configuration, so
#: neither direction is checked for them here (each entry says where the grant is made).
CONDITIONAL: dict[str, dict[str, str]] = {
    "com.deviceagent.EncryptedStore": {
        # keySource: secret. The deployment that sets secretId grants GetSecretValue on that secret's ARN
        # (docs/encrypted-store.md); the default keySource is a key file, which needs no grant.
        "aws.greengrass#GetSecretValue": "keySource: secret",
    },
    "com.deviceagent.HealthMonitor": {
        # The optional restart of a stale sibling (off by default): it needs aws.greengrass.Cli on the device
        # and a grant naming the siblings, which the deployment that enables it adds.
        "aws.greengrass#RestartComponent": "restart.enabled",
    },
}


#: Resources with a `*` that no use names exactly, each with the reason it must be a pattern (the proof
#: reports any other; a bare `*` is the recipe lint's). A deployment merges configuration, not code.
WILDCARDS: dict[str, dict[str, str]] = {
    "com.deviceagent.EncryptedStore": {
        "device-agent/store/*/response": (
            "the store answers on the namespace each request came in on, any namespace its configuration"
            " serves, and a deployment adds namespaces by merging configuration only"
        ),
    },
}


def bindings(component: ComponentSource) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Names the resolver cannot follow by itself: values that arrive in messages or as arguments."""
    bound: dict[tuple[str, str], tuple[Any, ...]] = {}
    if component.name == "com.deviceagent.EncryptedStore":
        # The store answers on the namespace a request came in on: any namespace its configuration serves.
        bound["encrypted_store.component", "namespace"] = tuple(default_config(component).namespaces)
    # A store client's namespace is the one its owner constructs it with.
    resolver = Resolver(component, bound)
    namespaces = code_uses.argument_values(component, resolver, "StoreClient", 1, "namespace")
    bound["device_agent.store_client", "namespace"] = namespaces
    return bound


def component_uses(component: ComponentSource) -> list[Use]:
    return uses_of(component, bindings=bindings(component), conditional=CONDITIONAL.get(component.name, {}))


def test_every_recipe_names_a_component_package():
    assert len(COMPONENTS) >= 3  # store, telemetry, health (and the bootstrap reporter)
    for component in COMPONENTS:
        assert (component.package_dir / "component.py").is_file(), component.name


def test_every_session_method_maps_to_operations_the_authorization_table_classifies():
    methods = code_uses.session_operations()
    assert methods["publish"] == ("aws.greengrass#PublishToTopic",)
    assert methods["subscribe_to_iot_core"] == ("aws.greengrass#SubscribeToIoTCore",)
    assert methods["get_secret"] == ("aws.greengrass#GetSecretValue",)
    for method, operations in methods.items():
        for operation in operations:
            code_uses.destination_of(operation)  # raises for an operation nobody classified
        assert method in {"open", "close", "connected", "thing_name"} or operations, method


def test_a_parameter_resolves_to_what_each_call_of_its_function_passes():
    source = """
class Sender:
    async def run(self, ctx):
        topic = "device-agent/a"
        await self._send(ctx, topic, b"x")
        await self._send(ctx, topic="device-agent/b", payload=b"y")

    async def _send(self, ctx, topic, payload):
        await ctx.ipc.publish(topic, payload)
"""
    module = code_uses.Module("fixture", code_uses.ROOT / "fixture.py", ast.parse(source))
    [site] = code_uses.call_sites([module])
    telemetry = next(c for c in COMPONENTS if c.name == "com.deviceagent.TelemetryPublisher")
    resolver = Resolver(telemetry, {})
    assert resolver.resource(site) == ("device-agent/a", "device-agent/b")


def test_an_unclassified_operation_is_refused():
    with pytest.raises(code_uses.UnknownOperationError, match="CreateDebugPassword2"):
        code_uses.destination_of("aws.greengrass#CreateDebugPassword2")


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_the_recipe_grants_exactly_what_the_code_uses(component: ComponentSource):
    uses = component_uses(component)
    assert uses, f"{component.name}: no authorized operation found in its code"
    findings = check(
        component.name,
        uses,
        component.access_control,
        conditional=CONDITIONAL.get(component.name, {}),
        wildcards=WILDCARDS.get(component.name, {}),
    )
    assert [str(f) for f in findings] == []


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_every_allowed_wildcard_is_a_real_grant_with_a_reason(component: ComponentSource):
    granted = {
        resource
        for policies in component.access_control.values()
        for policy in policies.values()
        for resource in policy.get("resources", ())
    }
    for resource, reason in WILDCARDS.get(component.name, {}).items():
        assert resource in granted, f"{component.name}: {resource!r} is allow-listed but not granted"
        assert reason.strip(), resource


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.name)
def test_every_conditional_operation_is_called_or_listed_for_a_reason(component: ComponentSource):
    for operation, gate in CONDITIONAL.get(component.name, {}).items():
        code_uses.destination_of(operation)
        assert gate
