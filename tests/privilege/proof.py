"""The least-privilege check: what a component's code uses against what its recipe grants, both ways.

`check` is pure (uses and an `accessControl` in, findings out) so that fixtures can show it failing; the
nucleus's own rules decide every match: a use is granted when the devkit's `Authorizer` (the port of the
nucleus's authorization) allows it, and a grant is used when `resource_matches` says one use falls under it.

A used grant can still be too broad: `device-agent/*` covers the publisher's topics and the store's
whole-store wipe as well. So a resource with a `*` (the glob of both services; `${*}` is a literal star) is
a finding unless a use names that very resource, or the allow-list (`wildcards`: resource -> the written
reason it must be a pattern) holds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from device_agent.devkit.authz import ANY, DESTINATIONS, Authorizer, resource_matches
from tests.privilege.code_uses import ComponentSource, Resolver, call_sites, destination_of, reached_modules
from tests.privilege.code_uses import session_operations as session_map


@dataclass(frozen=True, order=True)
class Use:
    destination: str
    operation: str
    resource: str
    where: str


@dataclass(frozen=True, order=True)
class Grant:
    destination: str
    operation: str  # one registered operation; a `*` policy is expanded into each, named in `policy`
    resource: str
    policy: str


@dataclass(frozen=True, order=True)
class Finding:
    kind: str  # "not granted", "never used" or "wildcard"
    destination: str
    operation: str
    resource: str
    where: str

    def __str__(self) -> str:
        text = f"{self.kind}: {self.destination} {self.operation} on {self.resource!r} ({self.where})"
        if self.kind == "wildcard":
            text += ": it grants every topic it matches; name the ones used, or allow-list it with a reason"
        return text


def uses_of(
    component: ComponentSource,
    *,
    bindings: Mapping[tuple[str, str], tuple[Any, ...]],
    conditional: Iterable[str] = (),
) -> list[Use]:
    """Every authorized (operation, resource) the component's code can request with its default settings."""
    skip = frozenset(conditional)
    resolver: Resolver | None = None
    uses: set[Use] = set()
    for site in call_sites(reached_modules(component)):
        for operation in session_map()[site.method]:
            destination = destination_of(operation)
            if destination is None or operation in skip:
                continue
            resolver = resolver or Resolver(component, bindings)
            for resource in resolver.resource(site):
                uses.add(Use(destination, operation, str(resource), site.where))
    return sorted(uses)


def grants_of(access_control: Mapping[str, Any], *, conditional: Iterable[str] = ()) -> list[Grant]:
    skip = frozenset(conditional)
    grants: list[Grant] = []
    for destination, policies in access_control.items():
        registered = DESTINATIONS[destination].operations - {ANY} if destination in DESTINATIONS else set()
        for policy_id, policy in policies.items():
            for operation in policy.get("operations", ()):
                expanded = sorted(registered) if operation == ANY else [operation]
                name = f"{policy_id} ({'*' if operation == ANY else operation})"
                grants.extend(
                    Grant(destination, op, resource, name)
                    for op in expanded
                    if op not in skip
                    for resource in policy.get("resources", ())
                )
    return grants


def is_pattern(resource: str) -> bool:
    """The resource has a `*` glob (an escaped `${*}` is the literal character)."""
    return ANY in resource.replace("${*}", "")


def check(
    component: str,
    uses: Iterable[Use],
    access_control: Mapping[str, Any],
    *,
    conditional: Iterable[str] = (),
    wildcards: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Findings: uses the recipe does not grant, grants no use needs, and patterns no use names exactly
    (unless `wildcards` gives the reason one is needed). Empty means least privilege."""
    uses = list(uses)
    reasons = {resource: reason for resource, reason in (wildcards or {}).items() if reason.strip()}
    authorizer = Authorizer()
    authorizer.set_component_policies(component, access_control)
    findings = [
        Finding("not granted", use.destination, use.operation, use.resource, use.where)
        for use in uses
        if not authorizer.is_authorized(
            destination=use.destination, principal=component, operation=use.operation, resource=use.resource
        )
    ]
    for grant in grants_of(access_control, conditional=conditional):
        lookup = DESTINATIONS[grant.destination].lookup
        if not any(
            use.destination == grant.destination
            and use.operation == grant.operation
            and resource_matches(grant.resource, use.resource, lookup)
            for use in uses
        ):
            findings.append(
                Finding("never used", grant.destination, grant.operation, grant.resource, grant.policy)
            )
        elif (
            is_pattern(grant.resource)
            and grant.resource not in reasons
            and not any(
                use.destination == grant.destination
                and use.operation == grant.operation
                and use.resource == grant.resource
                for use in uses
            )
        ):
            findings.append(
                Finding("wildcard", grant.destination, grant.operation, grant.resource, grant.policy)
            )
    return sorted(findings)
