"""Authorization of IPC calls from recipe `accessControl` policies, as the Greengrass nucleus does it.

What this mirrors (nucleus source, `com/aws/greengrass/authorization/`):

- Parsing, `AuthorizationPolicyParser`: `accessControl` is a mapping (or a string holding JSON) of
  destination -> policy id -> `{policyDescription, operations, resources}`. Property names are
  case-insensitive (Jackson `ACCEPT_CASE_INSENSITIVE_PROPERTIES`); destination names and policy ids are
  exact. The principal of every policy is the declaring component.
- Registered destinations and operations, `AuthorizationHandler` constructor (plus `aws.greengrass.Cli`,
  whose list there omits CancelLocalDeployment, so no policy can grant it). `*` is a valid operation
  everywhere.
- Lookup, `AuthorizationHandler.isAuthorized` and `AuthorizationModule.isPresent`: an operation the
  destination does not register is denied; then (principal, operation), (principal, `*`), (`*`, operation),
  (`*`, `*`) are tried in that order, each an exact key whose resource set must match. A null resource
  matches any policy; a policy without resources matches only a null resource; an empty resource is denied.
- Resource patterns, `WildcardTrie` and `AuthorizationModule.validateResource`: STANDARD has only the `*`
  glob (spans `/`); MQTT_STYLE adds `+` (one level, only when it fills a level) and `#` (only alone or as a
  final `/#`, and `abc/#` also matches `abc`); misplaced `+`/`#` are literals. `${*}`, `${$}`, `${?}` are
  escapes. We compile each resource to one regex instead of walking a trie: see "Deviations".
- The CLI bypass, `aws-greengrass-cli` `CLIEventStreamAgent.authorizeRequest`: `aws.greengrass.Cli` itself
  and principals starting with `greengrass-cli#` may call any CLI operation.
- The TES default policy, `AuthorizationHandler.getDefaultPolicies`: every component may `getCredentials`.

What the nucleus merely logs, `strict=True` (the default) refuses with a PolicyError that names the
component, the policy id and the key; `strict=False` logs a warning and keeps exactly what the nucleus would
keep:

| problem                                   | nucleus (and `strict=False`)                                   |
|-------------------------------------------|----------------------------------------------------------------|
| not a mapping / JSON, unknown property,   | the component's whole accessControl is dropped                 |
| wrong value type                          | (`load-authorization-config-deserialization-error`)            |
| destination not registered                | that destination's policies are ignored                        |
| empty policy id                           | the destination's policies are ignored (the nucleus ignores    |
|                                           | every component's; we drop only the declaring component's)     |
| missing or empty `operations`             | the policy is skipped                                          |
| operation not registered                  | logged only: the policy loads, the operation can never match   |
| empty resource, unescaped `?`, bad `${c}` | that resource is dropped (a policy whose resources are all     |
|                                           | dropped grants nothing, not even null resources)               |

Deviations, all where the nucleus's trie gives answers that depend on its own layout, never on the policy:
resources that share a (destination, principal, operation) share trie nodes, so a valid `+` in one resource
can turn a literal `+` of another into a wildcard, and its `HashMap` of candidate suffixes can drop a match;
and `a/+/b/#` matches `a/x/bc/d/b` because of how the trie handles the level before `#`. We match each
resource on its own, which is what the documented rules say.

Observing: `add_decision_listener` registers a callable that gets every `Decision` the lookup makes (the
least-privilege tests record what each component was granted or refused while it ran). Listeners must be
cheap and must not raise; none are registered by default.

Recipe variables in resources are interpolated only when an `interpolate` callable is given (the nucleus's
`interpolateComponentConfiguration`, default off), once at load time; `${c}` is an escape, never a variable.
"""

from __future__ import annotations

import enum
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from device_agent.devkit.errors import PolicyError

logger = logging.getLogger(__name__)

ANY = "*"
PUBSUB = "aws.greengrass.ipc.pubsub"
MQTT_PROXY = "aws.greengrass.ipc.mqttproxy"
LIFECYCLE = "aws.greengrass.ipc.lifecycle"
COMPONENT_METRIC = "aws.greengrass.ipc.componentmetric"
CLI = "aws.greengrass.Cli"
SECRET_MANAGER = "aws.greengrass.SecretManager"  # noqa: S105 (a service name)
SHADOW_MANAGER = "aws.greengrass.ShadowManager"
CLIENT_DEVICE_AUTH = "aws.greengrass.clientdevices.Auth"
TOKEN_EXCHANGE = "aws.greengrass.TokenExchangeService"  # noqa: S105 (a service name)
TES_GET_CREDENTIALS = "getCredentials"  # TokenExchangeService.AUTHZ_TES_OPERATION: not an IPC model name
CLI_CLIENT_PREFIX = "greengrass-cli#"  # CLIService.GREENGRASS_CLI_CLIENT_ID_PREFIX

_SPECIAL_ESCAPES = frozenset("*$?")
_PROPERTIES = {"policydescription": "policyDescription", "operations": "operations", "resources": "resources"}

Interpolate = Callable[[str, str], str]
_Key = tuple[str, str, str]  # destination, principal, operation


class ResourceLookupPolicy(enum.Enum):
    STANDARD = "STANDARD"
    MQTT_STYLE = "MQTT_STYLE"


@dataclass(frozen=True, slots=True)
class Destination:
    name: str
    operations: frozenset[str]  # always includes "*"
    lookup: ResourceLookupPolicy = ResourceLookupPolicy.STANDARD


@dataclass(frozen=True, slots=True)
class Policy:
    """One loaded policy. `resources` are as matched (interpolated); empty means "null resource only"."""

    component: str
    destination: str
    policy_id: str
    operations: tuple[str, ...]
    resources: tuple[str, ...]
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """One answer of `Authorizer.is_authorized`, as a decision listener sees it."""

    destination: str
    principal: str
    operation: str
    resource: str | None
    allowed: bool


DecisionListener = Callable[[Decision], None]


def _destination(name: str, ops: Iterable[str], lookup: ResourceLookupPolicy) -> Destination:
    return Destination(name, frozenset((*ops, ANY)), lookup)


def _model(*names: str) -> tuple[str, ...]:
    return tuple(f"aws.greengrass#{name}" for name in names)


_STANDARD = ResourceLookupPolicy.STANDARD
DESTINATIONS: Mapping[str, Destination] = MappingProxyType(
    {
        d.name: d
        for d in (
            _destination(PUBSUB, _model("PublishToTopic", "SubscribeToTopic"), _STANDARD),
            _destination(
                MQTT_PROXY, _model("PublishToIoTCore", "SubscribeToIoTCore"), ResourceLookupPolicy.MQTT_STYLE
            ),
            _destination(LIFECYCLE, _model("PauseComponent", "ResumeComponent"), _STANDARD),
            _destination(COMPONENT_METRIC, _model("PutComponentMetric"), _STANDARD),
            _destination(
                CLI,
                _model(
                    "GetComponentDetails",
                    "ListComponents",
                    "RestartComponent",
                    "StopComponent",
                    "CreateLocalDeployment",
                    "GetLocalDeploymentStatus",
                    "ListLocalDeployments",
                    "CreateDebugPassword",
                ),
                _STANDARD,
            ),
            _destination(SECRET_MANAGER, _model("GetSecretValue"), _STANDARD),
            _destination(
                SHADOW_MANAGER,
                _model(
                    "GetThingShadow", "UpdateThingShadow", "DeleteThingShadow", "ListNamedShadowsForThing"
                ),
                _STANDARD,
            ),
            _destination(
                CLIENT_DEVICE_AUTH,
                _model(
                    "SubscribeToCertificateUpdates",
                    "VerifyClientDeviceIdentity",
                    "GetClientDeviceAuthToken",
                    "AuthorizeClientDeviceAction",
                ),
                _STANDARD,
            ),
            _destination(TOKEN_EXCHANGE, (TES_GET_CREDENTIALS,), _STANDARD),
        )
    }
)


# ---- resources -------------------------------------------------------------------------------------------


def _escaped_char(text: str, index: int) -> str | None:
    """The `c` of a `${c}` starting at `index` (WildcardTrie.getActualChar), else None."""
    if text.startswith("${", index) and index + 3 < len(text) and text[index + 3] == "}":
        return text[index + 2]
    return None


def validate_resource(resource: str) -> None:
    """Raise ValueError, worded as AuthorizationModule.validateResource, for a resource the nucleus drops."""
    if not resource:
        raise ValueError("Resource cannot be empty")
    index = 0
    while index < len(resource):
        char = resource[index]
        if resource.startswith("${", index):
            actual = _escaped_char(resource, index)
            if actual is None:
                raise ValueError(
                    "Resource contains an invalid escape sequence. You can use ${*}, ${$}, or ${?}"
                )
            if actual not in _SPECIAL_ESCAPES:
                raise ValueError(
                    f"Resource contains an invalid escape sequence: ${{{actual}}}. "
                    "You can use ${*}, ${$}, or ${?}"
                )
            index += 4
            continue
        if char == "?":
            raise ValueError(
                "Resource contains invalid character: '?'. Use an escape sequence: ${?}. "
                "The '?' character isn't supported as a wildcard"
            )
        index += 1


def _plus_fills_level(text: str, index: int) -> bool:
    before_ok = index == 0 or text[index - 1] == "/"
    after_ok = index == len(text) - 1 or text[index + 1] == "/"
    return before_ok and after_ok


def resource_regex(resource: str, lookup: ResourceLookupPolicy) -> str:
    """Regex source (for `fullmatch` with DOTALL) equivalent to one validated resource pattern."""
    mqtt = lookup is ResourceLookupPolicy.MQTT_STYLE
    if mqtt and resource == "#":
        return ".*"
    tail = ""
    if mqtt and len(resource) >= 2 and resource.endswith("/#"):  # noqa: PLR2004
        # "abc/#" matches "abc" and anything under "abc/" (WildcardTrie isTerminalLevel).
        resource, tail = resource[:-2], "(?:/.*)?"
    parts: list[str] = []
    index = 0
    while index < len(resource):
        char = resource[index]
        escaped = _escaped_char(resource, index) if char == "$" else None
        if escaped is not None:
            parts.append(re.escape(escaped))
            index += 4
            continue
        if char == "*":
            parts.append(".*")
        elif char == "+" and mqtt and _plus_fills_level(resource, index):
            parts.append("[^/]*")
        else:
            parts.append(re.escape(char))
        index += 1
    return "".join(parts) + tail


@dataclass(frozen=True, slots=True)
class _ResourceMatcher:
    """The resources granted for one (destination, principal, operation); None pattern = no resources."""

    pattern: re.Pattern[str] | None
    resources: tuple[str, ...]

    @classmethod
    def compile(cls, resources: Iterable[str], lookup: ResourceLookupPolicy) -> _ResourceMatcher:
        unique = tuple(dict.fromkeys(resources))
        if not unique:
            return cls(None, ())
        source = "|".join(f"(?:{resource_regex(r, lookup)})" for r in unique)
        return cls(re.compile(source, re.DOTALL), unique)

    def matches(self, resource: str | None) -> bool:
        if resource is None:
            return True  # WildcardTrie.matchesStandard(null)
        return self.pattern is not None and self.pattern.fullmatch(resource) is not None


def resource_matches(pattern: str, resource: str, lookup: ResourceLookupPolicy) -> bool:
    """Whether one policy resource `pattern` grants `resource` (validates the pattern first)."""
    validate_resource(pattern)
    return _ResourceMatcher.compile((pattern,), lookup).matches(resource)


# ---- parsing ---------------------------------------------------------------------------------------------


class _PolicyProblemError(Exception):
    """Internal: one thing wrong with a policy, before it becomes a PolicyError or a warning."""

    def __init__(
        self, key: str, reason: str, *, destination: str | None = None, policy_id: str | None = None
    ) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason
        self.destination = destination
        self.policy_id = policy_id


@dataclass(frozen=True, slots=True)
class _RawPolicy:
    destination: str
    policy_id: str
    description: str | None
    operations: tuple[str, ...] | None
    resources: tuple[str, ...] | None


def _scalar_text(value: object, key: str) -> str:
    # Jackson coerces JSON scalars to String; null and containers are deserialization errors.
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    raise _PolicyProblemError(key, f"must be a string, not {type(value).__name__}")


def _string_list(value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise _PolicyProblemError(key, f"must be a list of strings, not {type(value).__name__}")
    return tuple(_scalar_text(item, key) for item in value)


def _parse_policy(destination: str, policy_id: str, body: object) -> _RawPolicy:
    if not isinstance(body, Mapping):
        raise _PolicyProblemError(
            "policy", f"must be a mapping with operations and resources, not {type(body).__name__}"
        )
    values: dict[str, object] = {}
    for raw_key, value in body.items():
        canonical = _PROPERTIES.get(str(raw_key).lower())
        if canonical is None:
            known = "policyDescription, operations, resources"
            raise _PolicyProblemError(
                str(raw_key), f"is not a policy property (they are {known}, in any case)"
            )
        values[canonical] = value
    description = values.get("policyDescription")
    operations = values.get("operations")
    resources = values.get("resources")
    return _RawPolicy(
        destination=destination,
        policy_id=policy_id,
        description=None if description is None else _scalar_text(description, "policyDescription"),
        operations=None if operations is None else _string_list(operations, "operations"),
        resources=None if resources is None else _string_list(resources, "resources"),
    )


def _as_mapping(access_control: object) -> Mapping[object, object]:
    if isinstance(access_control, str):
        try:
            access_control = json.loads(access_control)
        except json.JSONDecodeError as exc:
            raise _PolicyProblemError("accessControl", f"is a string but not JSON: {exc}") from exc
    if not isinstance(access_control, Mapping):
        kind = type(access_control).__name__
        raise _PolicyProblemError(
            "accessControl", f"must be a mapping of destination to policies, not {kind}"
        )
    return access_control


def _parse_raw(access_control: object) -> list[_RawPolicy]:
    """Structure only, as Jackson sees it: a problem here drops the whole accessControl in the nucleus."""
    if access_control is None:
        return []
    raw: list[_RawPolicy] = []
    for destination, policies in _as_mapping(access_control).items():
        if not isinstance(destination, str):
            raise _PolicyProblemError(repr(destination), "is not a string destination name")
        if not isinstance(policies, Mapping):
            raise _PolicyProblemError(
                destination, "must be a mapping of policy id to policy", destination=destination
            )
        for policy_id, body in policies.items():
            if not isinstance(policy_id, str):
                raise _PolicyProblemError(
                    repr(policy_id), "is not a string policy id", destination=destination
                )
            try:
                raw.append(_parse_policy(destination, policy_id, body))
            except _PolicyProblemError as problem:
                problem.destination, problem.policy_id = destination, policy_id
                raise
    return raw


def _suggestion(value: str, known: Iterable[str]) -> str:
    folded = {k.lower(): k for k in known}
    match = folded.get(value.lower())
    return f" (did you mean {match!r}? names are case-sensitive)" if match else ""


# ---- the authorizer --------------------------------------------------------------------------------------


class Authorizer:
    """Policies of every component, and the nucleus's lookup over them.

    `set_component_policies` and `remove_component` rebuild a lookup table that `is_authorized` reads without
    locking: every table is built aside and swapped in whole.
    """

    def __init__(self, *, interpolate: Interpolate | None = None, strict: bool = True) -> None:
        self._interpolate = interpolate
        self._strict = strict
        self._destinations: dict[str, Destination] = dict(DESTINATIONS)
        self._policies: dict[str, tuple[Policy, ...]] = {}
        # principal -> its grants; "*" holds the nucleus's own default policies.
        self._grants: dict[str, dict[_Key, _ResourceMatcher]] = {
            ANY: {(TOKEN_EXCHANGE, ANY, TES_GET_CREDENTIALS): _ResourceMatcher(None, ())}
        }
        self._table: dict[_Key, _ResourceMatcher] = {}
        self._listeners: list[DecisionListener] = []
        self._rebuild()

    # -- configuration --

    def register_destination(
        self,
        name: str,
        operations: Iterable[str],
        lookup: ResourceLookupPolicy = ResourceLookupPolicy.STANDARD,
    ) -> None:
        """Add a destination or more operations to one (AuthorizationHandler.registerComponent).

        Policies refused earlier for an unknown destination are not revived: set them again.
        """
        current = self._destinations.get(name)
        if current is not None and current.lookup is not lookup:
            raise ValueError(f"destination {name} already uses {current.lookup.value} matching")
        known = current.operations if current is not None else frozenset()
        self._destinations[name] = _destination(name, (*known, *operations), lookup)

    def destinations(self) -> Mapping[str, Destination]:
        return MappingProxyType(dict(self._destinations))

    def policies(self, component: str) -> tuple[Policy, ...]:
        """The policies loaded for `component` (after lenient drops and interpolation)."""
        return self._policies.get(component, ())

    def set_component_policies(self, component: str, access_control: object) -> None:
        """Replace `component`'s policies with those in its `accessControl` value.

        Strict: raises PolicyError and keeps the previous policies. Lenient: keeps what the nucleus keeps.
        """
        if not component or component == ANY:
            raise PolicyError(f"accessControl: invalid component name {component!r}")
        try:
            raw = _parse_raw(access_control)
        except _PolicyProblemError as problem:
            self._report(component, problem)
            raw = []  # lenient: the nucleus drops the whole accessControl of this component
        policies = self._load(component, raw)
        grants = self._grants_for(component, policies)
        self._policies[component] = policies
        self._grants[component] = grants
        self._rebuild()
        logger.debug("authz.policies-loaded component=%s policies=%d", component, len(policies))

    def remove_component(self, component: str) -> None:
        if self._policies.pop(component, None) is not None and component != ANY:
            self._grants.pop(component, None)
            self._rebuild()
            logger.debug("authz.policies-removed component=%s", component)

    # -- observing --

    def add_decision_listener(self, listener: DecisionListener) -> None:
        """Call `listener` with every later decision (in the thread that asks, before the answer returns)."""
        self._listeners.append(listener)

    def remove_decision_listener(self, listener: DecisionListener) -> None:
        self._listeners.remove(listener)

    # -- lookup --

    def is_authorized(
        self, *, destination: str, principal: str, operation: str, resource: str | None
    ) -> bool:
        allowed = self._decide(destination, principal, operation, resource)
        for listener in tuple(self._listeners):
            listener(Decision(destination, principal, operation, resource, allowed))
        return allowed

    def _decide(self, destination: str, principal: str, operation: str, resource: str | None) -> bool:
        if not principal or not destination or not operation:
            return False  # AuthorizationModule: "Invalid arguments"
        if destination == CLI and (principal == CLI or principal.startswith(CLI_CLIENT_PREFIX)):
            return True
        target = self._destinations.get(destination)
        if target is None or operation not in target.operations or resource == "":
            return False
        table = self._table
        for key in (
            (destination, principal, operation),
            (destination, principal, ANY),
            (destination, ANY, operation),
            (destination, ANY, ANY),
        ):
            matcher = table.get(key)
            if matcher is not None and matcher.matches(resource):
                logger.debug("authz.allowed principal=%s resource=%s policy-key=%s", principal, resource, key)
                return True
        logger.debug(
            "authz.denied principal=%s %s:%s resource=%s", principal, destination, operation, resource
        )
        return False

    # -- internals --

    def _report(self, component: str, problem: _PolicyProblemError, where: _RawPolicy | None = None) -> None:
        destination = where.destination if where is not None else problem.destination
        policy_id = where.policy_id if where is not None else problem.policy_id
        place = "" if policy_id is None else f", policy {policy_id!r}"
        place += "" if destination is None else f" under {destination}"
        message = f"accessControl of component {component!r}{place}: {problem.key}: {problem.reason}"
        if self._strict:
            raise PolicyError(message)
        logger.warning("authz.policy-ignored %s", message)

    def _load(self, component: str, raw: list[_RawPolicy]) -> tuple[Policy, ...]:
        loaded: list[Policy] = []
        for policy in raw:
            target = self._destinations.get(policy.destination)
            if target is None:
                hint = _suggestion(policy.destination, self._destinations)
                reason = f"is not a destination the nucleus registers{hint}"
                self._report(component, _PolicyProblemError("destination", reason), policy)
                continue
            if not policy.policy_id:
                self._report(component, _PolicyProblemError("policy id", "must not be empty"), policy)
                continue
            if not policy.operations:
                self._report(component, _PolicyProblemError("operations", "missing or empty"), policy)
                continue
            self._check_operations(component, policy, target)
            resources = self._resources(component, policy)
            if resources is None:
                continue
            loaded.append(
                Policy(
                    component=component,
                    destination=policy.destination,
                    policy_id=policy.policy_id,
                    operations=policy.operations,
                    resources=resources,
                    description=policy.description,
                )
            )
        return tuple(loaded)

    def _check_operations(self, component: str, policy: _RawPolicy, target: Destination) -> None:
        for operation in policy.operations or ():
            if operation not in target.operations:
                hint = _suggestion(operation, target.operations)
                registered = ", ".join(sorted(target.operations))
                reason = f"{operation!r} is not registered for {target.name}{hint}; registered: {registered}"
                self._report(component, _PolicyProblemError("operations", reason), policy)

    def _resources(self, component: str, policy: _RawPolicy) -> tuple[str, ...] | None:
        """Valid resources, interpolated; None when all were dropped (then the policy grants nothing)."""
        if not policy.resources:
            return ()
        kept: list[str] = []
        for written in policy.resources:
            resource = self._interpolated(component, written)
            try:
                validate_resource(resource)
            except ValueError as exc:
                self._report(component, _PolicyProblemError("resources", f"{written!r}: {exc}"), policy)
                continue
            kept.append(resource)
        return tuple(kept) or None

    def _interpolated(self, component: str, text: str) -> str:
        if self._interpolate is None:
            return text
        # Keep `${c}` escapes away from the interpolator: they are never recipe variables.
        pieces = re.split(r"(\$\{.\})", text, flags=re.DOTALL)
        return "".join(p if i % 2 else self._interpolate(component, p) for i, p in enumerate(pieces))

    def _grants_for(self, component: str, policies: tuple[Policy, ...]) -> dict[_Key, _ResourceMatcher]:
        collected: dict[_Key, list[str]] = {}
        for policy in policies:
            for operation in policy.operations:
                collected.setdefault((policy.destination, component, operation), []).extend(policy.resources)
        return {
            key: _ResourceMatcher.compile(resources, self._destinations[key[0]].lookup)
            for key, resources in collected.items()
        }

    def _rebuild(self) -> None:
        table: dict[_Key, _ResourceMatcher] = {}
        for grants in self._grants.values():
            table.update(grants)  # keys are disjoint: the principal is part of the key
        self._table = table
