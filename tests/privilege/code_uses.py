"""What a component's code does over IPC, read from its source with `ast`: operations and the resources named.

- The session's map (`session_operations`): each public method of `IpcSession` (and `IpcCore`) and the SDK
  operations its body starts (`_call("publish_to_topic", ...)`, `_subscribe(operation=...)`), named as the
  nucleus names them (`aws.greengrass#PublishToTopic`) by asking the SDK's generated client. Nothing is
  written by hand, so a new session method is mapped the day it appears; `destination_of` then refuses an
  operation it cannot classify as authorized (and under which service) or as never authorized.
- A component's reach (`reached_modules`): its package plus every `device_agent` module those import,
  transitively (never `devkit`), lazily imported ones included.
- Call sites (`call_sites`): calls of a session method on an `ipc`/`_ipc` receiver (the suite's one name for
  the session, `ctx.ipc`, `self._ipc`, ...).
- Resources (`Resolver`): the first argument of each authorized call, evaluated against the real modules'
  constants and functions (`store_protocol`, `messages`, the component's own; a parameter through what
  each call of its function in the same module passes), with `config` the recipe's
  `DefaultConfiguration` parsed by the component's model and the thing name `{iot:thingName}`, as the
  nucleus interpolates it into the recipe. What cannot be evaluated is an error that names the call site.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import itertools
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from device_agent.config import parse_config
from device_agent.devkit.authz import DESTINATIONS
from device_agent.devkit.recipe_lint import run_package

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
SESSION_FILES = (ROOT / "device_agent" / "ipc.py", ROOT / "device_agent" / "ipc_core.py")
SESSION_CLASSES = frozenset({"IpcSession", "IpcCore"})
SESSION_NAMES = frozenset({"ipc", "_ipc"})
THING = "{iot:thingName}"
MAX_DEPTH = 12  # assignments followed before an expression counts as circular
#: Session methods whose call names no resource, and the resource the nucleus checks them against:
#: ListComponents is authorized on the literal `*` (aws-greengrass-cli CLIEventStreamAgent).
FIXED_RESOURCES: Mapping[str, str] = types.MappingProxyType({"list_components": "*"})

#: Operations the nucleus never authorizes: any component that connected may call them (greengrass-ipc.md
#: §4.2; the local nucleus registers no destination for them either). Anything else must be classified.
UNGOVERNED = frozenset(
    f"aws.greengrass#{name}"
    for name in (
        "GetConfiguration",
        "UpdateConfiguration",
        "SubscribeToConfigurationUpdate",
        "SubscribeToValidateConfigurationUpdates",
        "SendConfigurationValidityReport",
        "UpdateState",
        "SubscribeToComponentUpdates",
        "DeferComponentUpdate",
        "SubscribeToIoTCoreConnectionStatus",
    )
)


class UnknownOperationError(AssertionError):
    """A session operation that is neither authorized under a known service nor known to be ungoverned."""


class UnresolvedError(AssertionError):
    """An expression the resolver cannot evaluate (the message names the call site)."""


# ---- the session's map ---------------------------------------------------------------------------------


def model_name(sdk_operation: str) -> str:
    """`publish_to_topic` -> `aws.greengrass#PublishToTopic`, as the SDK's generated client names it."""
    from awsiot.greengrasscoreipc import client  # noqa: PLC0415

    factory = getattr(client.GreengrassCoreIPCClient, f"new_{sdk_operation}")
    returned = inspect.signature(factory).return_annotation
    operation_class = getattr(client, returned) if isinstance(returned, str) else returned
    name: str = operation_class._model_name()  # the SDK's own record of the model name
    return name


def _sdk_operations(function: ast.AST) -> list[str]:
    found: list[str] = []
    for node in ast.walk(function):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        if node.func.attr == "_call" and node.args and isinstance(node.args[0], ast.Constant):
            found.append(str(node.args[0].value))
        elif node.func.attr == "_subscribe":
            found.extend(
                str(k.value.value)
                for k in node.keywords
                if k.arg == "operation" and isinstance(k.value, ast.Constant)
            )
    return found


@cache
def session_operations() -> Mapping[str, tuple[str, ...]]:
    """Public session method -> the Greengrass operations it calls (empty for open/close and the like)."""
    methods: dict[str, tuple[str, ...]] = {}
    for path in SESSION_FILES:
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.ClassDef) or node.name not in SESSION_CLASSES:
                continue
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and not item.name.startswith("_"):
                    methods[item.name] = tuple(model_name(op) for op in _sdk_operations(item))
    return types.MappingProxyType(methods)


@cache
def _governed() -> Mapping[str, str]:
    by_operation: dict[str, str] = {}
    for destination in DESTINATIONS.values():
        for operation in destination.operations:
            if operation.startswith("aws.greengrass#"):
                by_operation[operation] = destination.name
    return by_operation


def destination_of(operation: str) -> str | None:
    """The service whose policies authorize `operation`; None when the nucleus never checks it."""
    if operation in UNGOVERNED:
        return None
    destination = _governed().get(operation)
    if destination is None:
        raise UnknownOperationError(
            f"{operation} is neither authorized under a service the nucleus registers nor known to be"
            " ungoverned: classify it in tests/privilege/code_uses.py"
        )
    return destination


# ---- components and their code ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ComponentSource:
    name: str
    recipe_path: Path
    recipe: Mapping[str, Any]
    package: str
    package_dir: Path

    @property
    def access_control(self) -> Mapping[str, Any]:
        defaults = self.recipe.get("ComponentConfiguration", {}).get("DefaultConfiguration", {})
        access: Mapping[str, Any] = defaults.get("accessControl", {})
        return access

    def default_configuration(self) -> dict[str, Any]:
        defaults = dict(self.recipe.get("ComponentConfiguration", {}).get("DefaultConfiguration", {}))
        defaults.pop("accessControl", None)
        return defaults


def load_component(recipe_path: Path) -> ComponentSource:
    recipe = yaml.safe_load(recipe_path.read_text())
    package = run_package(recipe)
    if package is None:
        raise AssertionError(f"{recipe_path.name}: no `python -m <package>` in its Run step")
    [package_dir] = ROOT.glob(f"components/*/{package}/__init__.py")
    return ComponentSource(recipe["ComponentName"], recipe_path, recipe, package, package_dir.parent)


def components() -> list[ComponentSource]:
    return [load_component(path) for path in sorted(RECIPES.glob("*.yaml"))]


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module


def _module_path(name: str, package: ComponentSource) -> Path | None:
    parts = name.split(".")
    if parts[0] == "device_agent":
        if len(parts) > 1 and parts[1] == "devkit":
            return None
        base = ROOT.joinpath(*parts)
    elif parts[0] == package.package:
        base = package.package_dir.parent.joinpath(*parts)
    else:
        return None
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(module: Module) -> Iterator[str]:
    package_parts = module.name.split(".")
    if module.path.name != "__init__.py":
        package_parts = package_parts[:-1]
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                prefix = package_parts[: len(package_parts) - node.level + 1]
                base = ".".join([*prefix, base]) if base else ".".join(prefix)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def reached_modules(component: ComponentSource) -> list[Module]:
    """The component's package and every suite module it imports, transitively."""
    start = [
        f"{component.package}.{p.stem}" if p.name != "__init__.py" else component.package
        for p in sorted(component.package_dir.glob("*.py"))
    ]
    seen: dict[str, Module] = {}
    queue = list(start)
    while queue:
        name = queue.pop()
        path = _module_path(name, component)
        if name in seen or path is None:
            continue
        module = Module(name, path, ast.parse(path.read_text(), filename=str(path)))
        seen[name] = module
        queue.extend(_imported_names(module))
    return sorted(seen.values(), key=lambda m: m.name)


@dataclass(frozen=True)
class CallSite:
    module: Module
    line: int
    method: str
    call: ast.Call
    function: ast.FunctionDef | ast.AsyncFunctionDef | None
    cls: ast.ClassDef | None

    @property
    def where(self) -> str:
        return f"{self.module.path.relative_to(ROOT)}:{self.line}"


def _walk_scoped(
    node: ast.AST,
    function: ast.FunctionDef | ast.AsyncFunctionDef | None = None,
    cls: ast.ClassDef | None = None,
) -> Iterator[tuple[ast.AST, ast.FunctionDef | ast.AsyncFunctionDef | None, ast.ClassDef | None]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.ClassDef):
            yield from _walk_scoped(child, None, child)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _walk_scoped(child, child, cls)
        else:
            yield child, function, cls
            yield from _walk_scoped(child, function, cls)


def call_sites(modules: list[Module]) -> list[CallSite]:
    methods = session_operations()
    sites: list[CallSite] = []
    for module in modules:
        if Path(module.path) in SESSION_FILES:
            continue
        for node, function, cls in _walk_scoped(module.tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in methods
                and ast.unparse(node.func.value).rsplit(".", 1)[-1] in SESSION_NAMES
            ):
                sites.append(CallSite(module, node.lineno, node.func.attr, node, function, cls))
    return sites


# ---- resources -------------------------------------------------------------------------------------------


def default_config(component: ComponentSource) -> Any:
    """The recipe's defaults, parsed by the component's own configuration model."""
    runtime = importlib.import_module(f"{component.package}.component")
    for value in vars(runtime).values():
        if isinstance(value, type) and getattr(value, "name", None) == component.name:
            model: type = getattr(value, "config_model")  # noqa: B009 - a class attribute of the component
            return parse_config(model, component.default_configuration()).value
    raise AssertionError(f"{component.package}.component defines no Component named {component.name}")


Values = tuple[Any, ...]


def _union(groups: Iterable[Iterable[Any]]) -> Values:
    """Distinct values in first-seen order (configuration objects need not be hashable)."""
    merged: list[Any] = []
    for group in groups:
        merged.extend(v for v in group if not any(v is m or v == m for m in merged))
    return tuple(merged)


@dataclass(frozen=True)
class _Context:
    """What a component's `ctx` holds, as far as resources go."""

    config: Any
    thing_name: str
    name: str


class Resolver:
    """Evaluates the resource argument of a call site; every result is a set (a name may hold several)."""

    def __init__(self, component: ComponentSource, bindings: Mapping[tuple[str, str], Values]) -> None:
        config = default_config(component)
        context = _Context(config=config, thing_name=THING, name=component.name)
        self._common: dict[str, Values] = {
            "ctx": (context,),
            "config": (config,),
            "new": (config,),
            "thing": (THING,),
            "thing_name": (THING,),
        }
        self._bindings = bindings

    def resource(self, site: CallSite) -> Values:
        if site.method in FIXED_RESOURCES:
            return (FIXED_RESOURCES[site.method],)
        call = site.call
        if call.args:
            expression = call.args[0]
        else:
            method = getattr(importlib.import_module("device_agent.ipc").IpcSession, site.method)
            first = next(p for p in inspect.signature(method).parameters if p != "self")
            expression = next(k.value for k in call.keywords if k.arg == first)
        return self.evaluate(expression, site, depth=0)

    def evaluate(self, node: ast.expr, site: CallSite, depth: int) -> Values:
        if depth > MAX_DEPTH:
            raise UnresolvedError(f"{site.where}: {ast.unparse(node)} is defined in terms of itself")
        deeper = depth + 1
        if isinstance(node, ast.Constant):
            return (node.value,)
        if isinstance(node, ast.JoinedStr):
            parts = [self.evaluate(v, site, deeper) for v in node.values]
            return _union(["".join(map(str, combo)) for combo in itertools.product(*parts)])
        if isinstance(node, ast.FormattedValue):
            return self.evaluate(node.value, site, deeper)
        if isinstance(node, ast.Name):
            return self._name(node.id, site, deeper)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self" and site.cls is not None:
                assigned = _self_assignments(site.cls, node.attr)
                if assigned:
                    return _union(self.evaluate(v, site, deeper) for v in assigned)
            owners = self.evaluate(node.value, site, deeper)
            try:
                return _union([[getattr(owner, node.attr) for owner in owners]])
            except AttributeError as exc:
                raise UnresolvedError(f"{site.where}: {ast.unparse(node)}: {exc}") from None
        if isinstance(node, ast.Call):
            functions = self.evaluate(node.func, site, deeper)
            arguments = [self.evaluate(a, site, deeper) for a in node.args]
            keywords = {k.arg: self.evaluate(k.value, site, deeper) for k in node.keywords if k.arg}
            results: list[Any] = []
            for function in functions:
                for args in itertools.product(*arguments):
                    for values in itertools.product(*keywords.values()):
                        results.append(function(*args, **dict(zip(keywords, values, strict=True))))
            return _union([results])
        raise UnresolvedError(f"{site.where}: cannot evaluate {ast.unparse(node)}")

    def _name(self, name: str, site: CallSite, depth: int) -> Values:
        for key in ((site.module.name, name), ("*", name)):
            if key in self._bindings:
                return self._bindings[key]
        if name in self._common:
            return self._common[name]
        if site.function is not None:
            assigned = _local_assignments(site.function, name)
            if assigned:
                return _union(self.evaluate(v, site, depth) for v in assigned)
            passed = self._passed_in(site, site.function, name, depth)
            if passed:
                return passed
        namespace = vars(importlib.import_module(site.module.name))
        if name in namespace:
            return (namespace[name],)
        raise UnresolvedError(
            f"{site.where}: cannot tell what {name!r} holds; bind it in test_least_privilege.bindings"
        )

    def _passed_in(
        self, site: CallSite, function: ast.FunctionDef | ast.AsyncFunctionDef, name: str, depth: int
    ) -> Values:
        """A parameter's values: what each call of its function in the same module passes for it."""
        positional = [a.arg for a in (*function.args.posonlyargs, *function.args.args)]
        if name not in positional and name not in {a.arg for a in function.args.kwonlyargs}:
            return ()
        method = bool(positional) and positional[0] in {"self", "cls"}
        index = positional.index(name) - (1 if method else 0) if name in positional else None
        values: list[Values] = []
        for node, caller, cls in _walk_scoped(site.module.tree):
            if not (isinstance(node, ast.Call) and _calls(node, function.name, method=method)):
                continue
            at = CallSite(site.module, node.lineno, site.method, node, caller, cls)
            if index is not None and len(node.args) > index:
                values.append(self.evaluate(node.args[index], at, depth + 1))
            values.extend(self.evaluate(k.value, at, depth + 1) for k in node.keywords if k.arg == name)
        return _union(values)


def _calls(call: ast.Call, function: str, *, method: bool) -> bool:
    """`call` is `self.<function>(...)` (a method) or `<function>(...)`."""
    if method:
        return (
            isinstance(call.func, ast.Attribute)
            and call.func.attr == function
            and isinstance(call.func.value, ast.Name)
            and call.func.value.id in {"self", "cls"}
        )
    return isinstance(call.func, ast.Name) and call.func.id == function


def _local_assignments(function: ast.AST, name: str) -> list[ast.expr]:
    values: list[ast.expr] = []
    for node in ast.walk(function):
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
        ) or (
            isinstance(node, ast.AnnAssign | ast.NamedExpr)
            and isinstance(node.target, ast.Name)
            and node.target.id == name
            and node.value is not None
        ):
            values.append(node.value)  # type: ignore[arg-type] # the conditions exclude a missing value
    return values


def _self_assignments(cls: ast.ClassDef, attribute: str) -> list[ast.expr]:
    values: list[ast.expr] = []
    for node in ast.walk(cls):
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = list(node.targets), node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
                and target.attr == attribute
                and value is not None
            ):
                values.append(value)
    return values


def argument_values(
    component: ComponentSource, resolver: Resolver, callee: str, position: int, keyword: str
) -> Values:
    """What the component's code passes as one argument of `callee(...)` (e.g. StoreClient's namespace)."""
    values: list[Values] = []
    for module in reached_modules(component):
        for node, function, cls in _walk_scoped(module.tree):
            if not isinstance(node, ast.Call) or ast.unparse(node.func).rsplit(".", 1)[-1] != callee:
                continue
            site = CallSite(module, node.lineno, callee, node, function, cls)
            if len(node.args) > position:
                values.append(resolver.evaluate(node.args[position], site, depth=0))
            values.extend(resolver.evaluate(k.value, site, 0) for k in node.keywords if k.arg == keyword)
    return _union(values)
