"""The local nucleus's per-component configuration store: `services.<name>.configuration` in the nucleus.

What it mirrors (aws-greengrass-nucleus, `com.aws.greengrass`):

- `config/Topics.java`, `config/Topic.java`: a tree of containers and leaves. Keys match case-insensitively
  (`CaseInsensitiveString`, Java `toLowerCase`) and keep the spelling they were created with. Lists are leaf
  values: a merge replaces a list, never merges into it. Every leaf has a modtime in epoch milliseconds; a
  container's modtime is the newest modtime beneath it (`Topics.childChanged`).
- `Topics.updateFromMap` + `UpdateBehaviorTree`: MERGE keeps keys the update does not name, REPLACE removes
  them. A leaf takes a proposed value only when the proposed timestamp is not older than its modtime
  (`Topic.withNewerValue(ts, v, false, true)`); an equal value only moves the modtime forward, no change.
  A leaf that becomes a container (or the reverse) is replaced whatever the timestamps.
- `builtin/services/configstore/ConfigStoreIPCEventStreamAgent.java`: GetConfiguration (a leaf answers
  `{leafName: value}`, a container its `toPOJO()`, which leaves out keys starting with `_`);
  UpdateConfiguration (MERGE at keyPath, `accessControl` refused, a new keyPath merged at the current time,
  FailedUpdateConditionCheckError when the request's timestamp is older than the modtime of the container
  at keyPath, checked *after* the merge, so leaves that were not newer are already updated when raised);
  SubscribeToConfigurationUpdate (a missing path is ResourceNotFoundError; no event on subscribe).
- `componentmanager/KernelConfigResolver.resolveConfigurationToApply`: a deployment starts from the running
  configuration, removes the RESET JSON pointers (`""` empties everything and ends the list; a pointer with a
  segment that could be an array index is skipped, Jackson's `mayMatchElement`), merges the recipe defaults
  at timestamp 1 ("the dawn of time", so they never overwrite a set value), then MERGE at the deployment time.
- `deployment/activator/DeploymentActivator.createDeploymentMergeBehavior`: the result then replaces the
  configuration (REPLACE at the deployment timestamp).

Deliberate differences, each on the safe side (what works here works on a device):

- `accessControl` is refused in any spelling; the nucleus compares the exact string only.
- One change event per changed leaf (or removed empty container), deduplicated. The nucleus sends one event
  for a removed subtree, at its root path, and may send two for a newly created leaf.
- Subscriptions follow a key path, not a node object, so they survive a node removed and created again.
- Values compare by JSON type as Java's `Objects.equals` does: `1`, `1.0` and `true` are different values.
- RESET pointers must be valid RFC 6901 (start with `/`; `~` only as `~0`, `~1`); Jackson lets a stray `~` by.
- Hostile documents are refused: nesting deeper than `MAX_DEPTH` containers, more than `MAX_NODES` values,
  or a component configuration over `MAX_CONFIG_BYTES` of JSON (the IPC payload limit).

The store is synchronous and single-threaded (the nucleus calls it from its asyncio loop). Subscribers are
called synchronously after a change is committed; an exception in one is logged and never reaches the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from device_agent.devkit.errors import (
    ConfigKeyNotFoundError,
    ConfigStoreError,
    InvalidUpdateError,
    StaleUpdateError,
)

logger = logging.getLogger(__name__)

KeyPath = tuple[str, ...]
Subscriber = Callable[[KeyPath], None]

ACCESS_CONTROL = "accessControl"
KEY_NOT_FOUND = "Key not found"
ACCESS_CONTROL_REFUSED = f"Config update is not allowed for following fields [{ACCESS_CONTROL}]"
STALE_MESSAGE = "Proposed timestamp is older than the config's latest modified timestamp"
# Topic.DEFAULT_VALUE_TIMESTAMP: recipe defaults "come from the dawn of time", never winning over a set value.
DEFAULT_VALUE_TIMESTAMP_MS = 1

# Nesting, counted in containers (maps and lists) from the configuration root; a key path counts one per key.
# Jackson stops at 1000; this store recurses, so it stays well below Python's recursion limit.
MAX_DEPTH = 100
MAX_NODES = 100_000  # values of any kind in one component's configuration
MAX_CONFIG_BYTES = 16 * 1024 * 1024  # one component's configuration as JSON; the IPC payload limit
MAX_FILE_BYTES = 256 * 1024 * 1024  # a saved store

FILE_FORMAT = "device-agent.configstore"
FILE_VERSION = 1


class ConfigStoreCorruptError(ConfigStoreError):
    """A saved store that cannot be read back: unreadable, not JSON, or not the shape `save` writes."""


class StaleConfigUpdateError(StaleUpdateError):
    """UpdateConfiguration older than the node at its key path. As in the nucleus, leaves that were not newer
    than the request have already taken the new values (and subscribers were told); `changed` lists them."""

    def __init__(self, message: str, changed: list[KeyPath]) -> None:
        super().__init__(message)
        self.changed = changed


# ---- the tree ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Leaf:
    name: str
    value: Any
    modtime: int


@dataclass(slots=True)
class _Branch:
    name: str
    modtime: int  # only meaningful while empty; otherwise the newest modtime beneath wins
    children: dict[str, _Leaf | _Branch] = field(default_factory=dict)  # folded key -> node

    def child(self, key: str) -> _Leaf | _Branch | None:
        return self.children.get(_fold(key))


_Node = _Leaf | _Branch


def _fold(key: str) -> str:
    # CaseInsensitiveString uses String.toLowerCase(), not a Unicode case fold ("ß" stays "ß").
    return key.lower()


def _clone(node: _Node) -> _Node:
    if isinstance(node, _Leaf):
        return _Leaf(node.name, _copy_value(node.value), node.modtime)
    return _Branch(node.name, node.modtime, {k: _clone(c) for k, c in node.children.items()})


def _find(root: _Branch, key_path: Sequence[str]) -> _Node | None:
    """Topics.findNode: every key but the last must name a container."""
    node: _Node = root
    for key in key_path:
        if not isinstance(node, _Branch):
            return None
        found = node.child(key)
        if found is None:
            return None
        node = found
    return node


def _modtime(node: _Node) -> int:
    """A container's modtime is its newest descendant's, as Topics.childChanged leaves it; an empty container
    keeps the time it was created."""
    if isinstance(node, _Leaf):
        return node.modtime
    if not node.children:
        return node.modtime
    return max(_modtime(c) for c in node.children.values())


def _to_pojo(node: _Node, *, nucleus_view: bool) -> Any:
    """Plain JSON-like copy. `nucleus_view` is Topics.toPOJO: no `_`-prefixed keys, case-insensitive order."""
    if isinstance(node, _Leaf):
        return _copy_value(node.value)
    children: Iterator[_Node] = iter(node.children.values())
    if nucleus_view:
        kept = [c for c in node.children.values() if not c.name.startswith("_")]
        children = iter(sorted(kept, key=lambda c: _fold(c.name)))
    return {c.name: _to_pojo(c, nucleus_view=nucleus_view) for c in children}


def _count_nodes(node: _Node) -> int:
    if isinstance(node, _Leaf):
        return 1 + _count_value_nodes(node.value)
    return 1 + sum(_count_nodes(c) for c in node.children.values())


def _count_value_nodes(value: Any) -> int:
    if isinstance(value, list):
        return sum(1 + _count_value_nodes(v) for v in value)
    if isinstance(value, dict):
        return sum(1 + _count_value_nodes(v) for v in value.values())
    return 0


# ---- values ------------------------------------------------------------------------------------------------


def _copy_value(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy_value(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _copy_value(v) for k, v in value.items()}
    return value


def _same_value(a: Any, b: Any) -> bool:
    """Java Objects.equals over Jackson values: types must match, so 1, 1.0 and True all differ."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_value(v, b[k]) for k, v in a.items())
    return bool(a == b)


def _check_document(doc: Any, *, what: str, base_depth: int = 0) -> None:
    """Refuse anything but a JSON object of JSON values, or one too deep or too large. Iterative, so a
    hostile (or self-referencing) document is refused before any recursive code walks it."""
    if not isinstance(doc, Mapping):
        raise InvalidUpdateError(f"{what} must be an object, not {type(doc).__name__}")
    stack: list[tuple[Any, int, str]] = [(doc, base_depth + 1, "")]
    nodes = 0
    while stack:
        value, depth, where = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise InvalidUpdateError(f"{what} has more than {MAX_NODES} values")
        if isinstance(value, Mapping | list):
            if depth > MAX_DEPTH:
                raise InvalidUpdateError(f"{what} nests deeper than {MAX_DEPTH} levels at '{where or '/'}'")
            stack.extend(_container_items(value, depth, where, what))
        elif not _is_scalar(value):
            raise InvalidUpdateError(f"{what} holds a {type(value).__name__} at '{where}', not a JSON value")


def _container_items(value: Mapping[Any, Any] | list[Any], depth: int, where: str, what: str) -> list[Any]:
    if isinstance(value, list):
        return [(v, depth + 1, f"{where}/{i}") for i, v in enumerate(value)]
    items = []
    for key, child in value.items():
        if not isinstance(key, str):
            raise InvalidUpdateError(f"{what} has a non-string key {key!r} at '{where or '/'}'")
        items.append((child, depth + 1, f"{where}/{_escape_pointer(key)}"))
    return items


def _is_scalar(value: Any) -> bool:
    if value is None or isinstance(value, str | bool | int):
        return True
    return isinstance(value, float) and math.isfinite(value)  # JSON has no NaN or Infinity


def _check_key_path(key_path: Any) -> KeyPath:
    if isinstance(key_path, str) or not isinstance(key_path, Sequence):
        raise InvalidUpdateError(f"a key path must be a list of strings, not {type(key_path).__name__}")
    if not all(isinstance(k, str) for k in key_path):
        raise InvalidUpdateError("a key path must be a list of strings")
    if len(key_path) > MAX_DEPTH:
        raise InvalidUpdateError(f"a key path longer than {MAX_DEPTH} keys")
    return tuple(key_path)


def _to_millis(timestamp: object) -> int:
    """Epoch seconds (float) to the nucleus's epoch milliseconds (Instant.toEpochMilli truncates)."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float) or not math.isfinite(timestamp):
        raise InvalidUpdateError(f"a timestamp must be a finite number of seconds, not {timestamp!r}")
    # Decimal of the shortest repr, so 1.001 s is 1001 ms and not 1000.9999...
    return math.floor(Decimal(repr(timestamp)) * 1000)


def _escape_pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


# ---- JSON pointers (RESET) ---------------------------------------------------------------------------------


def _parse_pointer(pointer: Any) -> KeyPath:
    """RFC 6901 pointer to keys. Raises InvalidUpdateError naming a malformed pointer."""
    if not isinstance(pointer, str):
        raise InvalidUpdateError(f"a RESET path must be a JSON pointer string, not {pointer!r}")
    if not pointer.startswith("/"):
        raise InvalidUpdateError(f"invalid RESET JSON pointer {pointer!r}: it must be \"\" or start with '/'")
    keys = []
    for raw in pointer[1:].split("/"):
        stripped = raw.replace("~0", "").replace("~1", "")
        if "~" in stripped:
            raise InvalidUpdateError(
                f"invalid RESET JSON pointer {pointer!r}: '~' must be followed by 0 or 1"
            )
        keys.append(raw.replace("~1", "/").replace("~0", "~"))
    return tuple(keys)


def _may_match_element(segment: str) -> bool:
    """Jackson JsonPointer._parseIndex: could this segment index an array (digits, no leading 0, int32)?"""
    if not segment or len(segment) > 10 or not segment.isascii() or not segment.isdigit():  # noqa: PLR2004
        return False
    if len(segment) > 1 and segment[0] == "0":
        return False
    return int(segment) <= 2**31 - 1


# ---- merging -----------------------------------------------------------------------------------------------


class _Changes:
    """Changed leaf paths in order, each once; a removed empty container counts as a leaf."""

    def __init__(self) -> None:
        self.paths: list[KeyPath] = []
        self._seen: set[KeyPath] = set()

    def add(self, path: KeyPath) -> None:
        if path not in self._seen:
            self._seen.add(path)
            self.paths.append(path)

    def removed(self, path: KeyPath, node: _Node) -> None:
        if isinstance(node, _Leaf) or not node.children:
            self.add(path)
            return
        for child in node.children.values():
            self.removed((*path, child.name), child)


@dataclass(slots=True)
class _Merge:
    """One Topics.updateFromMap pass: the timestamp for leaves, REPLACE or MERGE, and wall-clock time for new
    containers (Topics.createInteriorChild stamps them with System.currentTimeMillis)."""

    timestamp: int
    replace: bool
    now: int
    changes: _Changes

    def update_from_map(self, branch: _Branch, path: KeyPath, mapping: Mapping[str, Any]) -> None:
        named = set()
        for key, value in mapping.items():
            named.add(_fold(key))
            self.update_child(branch, path, key, value)
        if self.replace:
            for folded in [k for k in branch.children if k not in named]:
                gone = branch.children.pop(folded)
                self.changes.removed((*path, gone.name), gone)

    def update_child(self, branch: _Branch, path: KeyPath, key: str, value: Any) -> None:
        folded = _fold(key)
        existing = branch.children.get(folded)
        if isinstance(value, Mapping):
            if isinstance(existing, _Branch):
                self.update_from_map(existing, (*path, existing.name), value)
                return
            # A new container; one replacing a leaf takes the update's timestamp and the incoming spelling.
            if existing is not None:
                self.changes.removed((*path, existing.name), existing)
            target = _Branch(key, self.timestamp if existing is not None else self.now)
            branch.children[folded] = target
            self.update_from_map(target, (*path, key), value)
            return
        if isinstance(existing, _Branch):
            del branch.children[folded]
            self.changes.removed((*path, existing.name), existing)
            existing = None
        if existing is None:
            # createLeafChild announces the new leaf (even with a null value) before its value is set.
            existing = _Leaf(key, None, 0)
            branch.children[folded] = existing
            self.changes.add((*path, key))
        if self._with_newer_value(existing, value):
            self.changes.add((*path, existing.name))

    def _with_newer_value(self, leaf: _Leaf, value: Any) -> bool:
        """Topic.withNewerValue(ts, value, allowTimestampToDecrease=false, increaseWhenUnchanged=true)."""
        if self.timestamp < leaf.modtime:
            return False
        if _same_value(value, leaf.value):
            leaf.modtime = self.timestamp  # timestampUpdated: no event
            return False
        leaf.value = _copy_value(value)
        leaf.modtime = self.timestamp
        return True


# ---- the store ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Subscription:
    component: str  # folded
    prefix: KeyPath  # folded
    callback: Subscriber


class ConfigStore:
    """Every component's configuration, keyed by component name (case-insensitive, as `services` is a Topics).

    Paths given to and returned by the store are relative to the component's `configuration`. Values are
    copies: nothing returned aliases the store, nothing passed in is kept.
    """

    def __init__(self) -> None:
        self._components: dict[str, _Branch] = {}  # folded component name -> configuration root
        self._subscriptions: list[_Subscription] = []

    # ---- components ----

    def components(self) -> list[str]:
        return [root.name for root in self._components.values()]

    def set_component(
        self, name: str, configuration: Mapping[str, Any], *, timestamp: float
    ) -> list[KeyPath]:
        """Install a component's effective configuration at a deployment. Same as `apply`."""
        return self.apply(name, configuration, timestamp=timestamp)

    def remove_component(self, name: str) -> None:
        """Forget a component and its subscriptions, without events (the nucleus drops the node's watchers).
        Unknown names are ignored."""
        folded = _fold(name)
        self._components.pop(folded, None)
        self._subscriptions = [s for s in self._subscriptions if s.component != folded]

    # ---- reading ----

    def get(self, name: str, key_path: Sequence[str]) -> Any:
        """A copy of the value (leaf) or subtree (dict) at key_path; `[]` is the whole configuration.
        Everything stored is returned, `_` keys included. ConfigKeyNotFoundError("Key not found") if not
        there."""
        return _to_pojo(self._node(name, key_path), nucleus_view=False)

    def get_for_ipc(self, name: str, key_path: Sequence[str]) -> dict[str, Any]:
        """Exactly GetConfigurationResponse.value: `{leafName: value}` for a leaf (the stored spelling of the
        name), `Topics.toPOJO()` for a container (keys starting with `_` left out, case-insensitive order)."""
        node = self._node(name, key_path)
        if isinstance(node, _Leaf):
            return {node.name: _copy_value(node.value)}
        result: dict[str, Any] = _to_pojo(node, nucleus_view=True)
        return result

    def modtime(self, name: str, key_path: Sequence[str]) -> float:
        """Modification time in epoch seconds of the node at key_path (a container: its newest leaf)."""
        return _modtime(self._node(name, key_path)) / 1000

    def _root(self, name: object) -> _Branch | None:
        # Callers pass what came off the wire; a non-string name is simply not a component.
        return self._components.get(_fold(name)) if isinstance(name, str) else None

    def _node(self, name: str, key_path: Sequence[str]) -> _Node:
        root = self._root(name)
        if root is None:
            raise ConfigKeyNotFoundError(KEY_NOT_FOUND)
        try:
            path = _check_key_path(key_path)
        except InvalidUpdateError:
            raise ConfigKeyNotFoundError(KEY_NOT_FOUND) from None
        node = _find(root, path)
        if node is None:
            raise ConfigKeyNotFoundError(KEY_NOT_FOUND)
        return node

    # ---- IPC: UpdateConfiguration ----

    def update_from_ipc(
        self,
        name: str,
        key_path: Sequence[str],
        value_to_merge: Mapping[str, Any],
        timestamp: float,
        *,
        now: float | None = None,
    ) -> list[KeyPath]:
        """UpdateConfiguration by component `name` (its own configuration): MERGE value_to_merge at key_path.

        - InvalidUpdateError: touches `accessControl` (first key of key_path, or a top-level key of the value
          when key_path is empty; any case), an unknown component, a key path through a leaf, a bad document.
        - StaleConfigUpdateError (a StaleUpdateError): `timestamp` is older than the container at key_path
          (its newest leaf). Checked after the merge: leaves not newer than `timestamp` are updated anyway,
          and subscribers told, as in the nucleus.
        - A key path that does not exist yet is created and merged at `now` (default: the wall clock), the
          request's timestamp being ignored, as the nucleus does.
        - A key path naming a leaf replaces that leaf with a container holding value_to_merge.

        Returns the changed leaf paths; subscribers have been called for them.
        """
        path = _check_key_path(key_path)
        if _touches_access_control(path, value_to_merge):
            raise InvalidUpdateError(ACCESS_CONTROL_REFUSED)
        root = self._root(name)
        if root is None:
            raise InvalidUpdateError(f"Component config not found for component {name}")
        _check_document(value_to_merge, what="valueToMerge", base_depth=len(path))
        requested = _to_millis(timestamp)
        now_ms = _to_millis(time.time() if now is None else now)

        work = _clone(root)
        assert isinstance(work, _Branch)  # noqa: S101  (a clone of a branch is a branch)
        changes = _Changes()
        # The nucleus compares with the node's modtime right after the merge, but merged leaves reach their
        # container only later, through its publish queue: in effect the container's modtime before the
        # merge. A leaf at key_path becomes a container stamped `requested`, a new key path one stamped `now`:
        # neither is stale.
        before = _find(root, path)
        newest = _modtime(before) if isinstance(before, _Branch) else None
        used = _merge_at(work, path, value_to_merge, requested=requested, now_ms=now_ms, changes=changes)
        stale = newest is not None and used < newest
        self._commit(root.name, work, changes.paths)
        if stale:
            raise StaleConfigUpdateError(STALE_MESSAGE, changes.paths)
        return changes.paths

    # ---- deployments ----

    def propose(
        self,
        name: str,
        *,
        defaults: Mapping[str, Any] | None,
        merge: Mapping[str, Any] | None = None,
        reset: Sequence[str] | None = None,
        timestamp: float | None = None,
    ) -> dict[str, Any]:
        """The configuration a deployment would give `name`, without applying it (validators see this).

        From the running configuration (empty for a new component): RESET pointers removed, recipe defaults
        merged at timestamp 1, then MERGE at `timestamp` (default: now; a leaf newer than it keeps its value).
        The result is Topics.toPOJO(): `_` keys are dropped. InvalidUpdateError for a malformed pointer or
        document.
        """
        if defaults is not None:
            _check_document(defaults, what="default configuration")
        if merge is not None:
            _check_document(merge, what="MERGE")
        pointers = _check_reset(reset)
        now_ms = _to_millis(time.time())
        ts = now_ms if timestamp is None else _to_millis(timestamp)
        current = self._components.get(_fold(name))
        work = _clone(current) if current is not None else _Branch(name, now_ms)
        assert isinstance(work, _Branch)  # noqa: S101  (a clone of a branch is a branch)
        _apply_reset(work, pointers)
        scratch = _Changes()
        if defaults:
            _Merge(DEFAULT_VALUE_TIMESTAMP_MS, replace=False, now=now_ms, changes=scratch).update_from_map(
                work, (), defaults
            )
        if merge:
            _Merge(ts, replace=False, now=now_ms, changes=scratch).update_from_map(work, (), merge)
        _check_limits(work, name)
        proposal: dict[str, Any] = _to_pojo(work, nucleus_view=True)
        return proposal

    def will_change(self, name: str, proposal: Mapping[str, Any], *, timestamp: float) -> bool:
        """DynamicComponentConfigurationValidator.willNodeChange: does a deployment at `timestamp` change this
        configuration (so a validator must be asked)? Newer than the configuration and a different value."""
        current = self._components.get(_fold(name))
        if current is None:
            return True
        if _to_millis(timestamp) <= _modtime(current):
            return False
        return not _same_value(_copy_value(proposal), _to_pojo(current, nucleus_view=True))

    def apply(
        self, name: str, new_configuration: Mapping[str, Any], *, timestamp: float, now: float | None = None
    ) -> list[KeyPath]:
        """Replace the configuration of `name` (created if new) as a deployment does: REPLACE at `timestamp`.
        Keys absent from new_configuration are removed; a leaf newer than `timestamp` keeps its value (the
        proposal already kept it). Returns every changed, added or removed leaf path; subscribers are told."""
        _check_document(new_configuration, what="configuration")
        ts = _to_millis(timestamp)
        now_ms = _to_millis(time.time() if now is None else now)
        current = self._components.get(_fold(name))
        work = _clone(current) if current is not None else _Branch(name, now_ms)
        assert isinstance(work, _Branch)  # noqa: S101  (a clone of a branch is a branch)
        changes = _Changes()
        _Merge(ts, replace=True, now=now_ms, changes=changes).update_from_map(work, (), new_configuration)
        self._commit(work.name, work, changes.paths)
        return changes.paths

    # ---- subscriptions ----

    def subscribe(self, name: str, key_path: Sequence[str], callback: Subscriber) -> Callable[[], None]:
        """Call `callback(changed_path)` once per changed leaf at or below key_path, after each change.
        ConfigKeyNotFoundError("Key not found") if the component or path does not exist (the nucleus answers
        ResourceNotFoundError). No call for the subscription itself. Returns an idempotent unsubscribe."""
        self._node(name, key_path)
        subscription = _Subscription(_fold(name), tuple(_fold(k) for k in key_path), callback)
        self._subscriptions.append(subscription)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscriptions.remove(subscription)

        return unsubscribe

    def _commit(self, name: str, root: _Branch, changed: list[KeyPath]) -> None:
        _check_limits(root, name)
        self._components[_fold(name)] = root
        if changed:
            self._notify(_fold(name), changed)

    def _notify(self, component: str, changed: list[KeyPath]) -> None:
        subscribers = [
            s for s in self._subscriptions if s.component == component
        ]  # a callback may unsubscribe
        for path in changed:
            folded = tuple(_fold(k) for k in path)
            for sub in subscribers:
                if folded[: len(sub.prefix)] == sub.prefix:
                    _call(sub.callback, path)

    # ---- persistence ----

    def save(self, path: Path) -> None:
        """Write every configuration with its modtimes: temp file beside it, fsync, rename, fsync the folder;
        mode 0600. ConfigStoreError if it cannot be written."""
        document = {
            "format": FILE_FORMAT,
            "version": FILE_VERSION,
            "components": [_dump_node(root) for root in self._components.values()],
        }
        data = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            _write_atomically(path, data)
        except OSError as exc:
            raise ConfigStoreError(f"cannot save the configuration to {path}: {exc}") from exc

    @classmethod
    def load(cls, path: Path) -> ConfigStore:
        """Read what `save` wrote. A missing file is an empty store (first boot); anything unreadable or
        malformed is ConfigStoreCorruptError naming the file and the problem."""
        store = cls()
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except FileNotFoundError:
            logger.info("configstore.load no saved configuration at %s", path)
            return store
        except OSError as exc:
            raise ConfigStoreCorruptError(f"{path}: cannot read: {exc}") from exc
        if len(data) > MAX_FILE_BYTES:
            raise ConfigStoreCorruptError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ConfigStoreCorruptError(f"{path}: not a JSON document: {exc}") from None
        try:
            for root in _parse_document(document):
                folded = _fold(root.name)
                if folded in store._components:
                    raise ConfigStoreCorruptError(f"component {root.name!r} appears twice")
                _check_limits(root, root.name)
                store._components[folded] = root
        except (ConfigStoreCorruptError, InvalidUpdateError) as exc:
            raise ConfigStoreCorruptError(f"{path}: {exc}") from None
        return store


# ---- helpers of the store ----------------------------------------------------------------------------------


def _touches_access_control(path: KeyPath, value: Any) -> bool:
    """validateRequest's restricted fields, matched case-insensitively (the keys are, once stored)."""
    restricted = _fold(ACCESS_CONTROL)
    if path:
        return _fold(path[0]) == restricted
    return isinstance(value, Mapping) and any(isinstance(k, str) and _fold(k) == restricted for k in value)


def _merge_at(
    work: _Branch, path: KeyPath, value: Mapping[str, Any], *, requested: int, now_ms: int, changes: _Changes
) -> int:
    """Merge as the three branches of UpdateConfigurationOperationHandler do; returns the timestamp used."""
    node = _find(work, path)
    if node is None:
        target = _create_branches(work, path, now_ms)
        _Merge(now_ms, replace=False, now=now_ms, changes=changes).update_from_map(target, path, value)
        return now_ms
    merge = _Merge(requested, replace=False, now=now_ms, changes=changes)
    if isinstance(node, _Leaf):
        parent = _find(work, path[:-1])
        assert isinstance(parent, _Branch)  # noqa: S101  (a leaf's parent is a container)
        merge.update_child(parent, _stored_path(work, path[:-1]), node.name, value)
    else:
        merge.update_from_map(node, _stored_path(work, path), value)
    return requested


def _create_branches(root: _Branch, path: KeyPath, now_ms: int) -> _Branch:
    """Topics.lookupTopics: create the missing containers; a leaf in the way cannot become a container."""
    node = root
    for depth, key in enumerate(path):
        child = node.child(key)
        if child is None:
            child = _Branch(key, now_ms)
            node.children[_fold(key)] = child
        elif isinstance(child, _Leaf):
            where = "/".join(path[: depth + 1])
            raise InvalidUpdateError(f"{key} in {where} is already a leaf, cannot become a container")
        node = child
    return node


def _stored_path(root: _Branch, path: KeyPath) -> KeyPath:
    """The stored spelling of an existing path: events carry the node's own names (Node.path())."""
    names: list[str] = []
    node: _Node = root
    for key in path:
        assert isinstance(node, _Branch)  # noqa: S101  (the caller found this path)
        child = node.child(key)
        assert child is not None  # noqa: S101
        names.append(child.name)
        node = child
    return tuple(names)


def _check_reset(reset: Sequence[str] | None) -> list[KeyPath | None]:
    """Parse every RESET pointer up front; None stands for "" (the whole configuration)."""
    if reset is None:
        return []
    if isinstance(reset, str) or not isinstance(reset, Sequence):
        raise InvalidUpdateError("RESET must be a list of JSON pointers")
    if len(reset) > MAX_NODES:
        raise InvalidUpdateError(f"RESET has more than {MAX_NODES} pointers")
    return [None if pointer == "" else _parse_pointer(pointer) for pointer in reset]


def _apply_reset(root: _Branch, pointers: list[KeyPath | None]) -> None:
    """KernelConfigResolver.removeKeysFromConfigWhichAreReset, on a copy of the running configuration."""
    for keys in pointers:
        if keys is None:
            root.children.clear()  # replaceAndWait(empty map), and the remaining pointers are not looked at
            return
        if any(_may_match_element(k) for k in keys):
            logger.warning(
                "configstore.reset skipped /%s: a pointer into a list element cannot be reset",
                "/".join(_escape_pointer(k) for k in keys),
            )
            continue
        parent = _find(root, keys[:-1])
        if isinstance(parent, _Branch):
            parent.children.pop(_fold(keys[-1]), None)


def _check_limits(root: _Branch, name: str) -> None:
    nodes = _count_nodes(root)
    if nodes > MAX_NODES:
        raise InvalidUpdateError(f"the configuration of {name} would hold more than {MAX_NODES} values")
    size = len(json.dumps(_to_pojo(root, nucleus_view=False), ensure_ascii=False).encode())
    if size > MAX_CONFIG_BYTES:
        raise InvalidUpdateError(f"the configuration of {name} would exceed {MAX_CONFIG_BYTES} bytes of JSON")


def _call(callback: Subscriber, path: KeyPath) -> None:
    try:
        callback(path)
    except Exception:
        logger.exception("configstore.subscriber failed for %s", "/".join(path))


def _write_atomically(path: Path, data: bytes) -> None:
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o600)  # noqa: PTH101  (explicit, whatever the umask did)
        Path(temp_name).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)  # noqa: PTH108
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# ---- the file format ---------------------------------------------------------------------------------------
# {"format": FILE_FORMAT, "version": 1, "components": [node...]}
# node: {"name": str, "modtime": int ms, "children": [node...]}
#     | {"name": str, "modtime": int ms, "value": any}


def _dump_node(node: _Node) -> dict[str, Any]:
    if isinstance(node, _Leaf):
        return {"name": node.name, "modtime": node.modtime, "value": _copy_value(node.value)}
    return {
        "name": node.name,
        "modtime": node.modtime,
        "children": [_dump_node(c) for c in node.children.values()],
    }


def _parse_document(document: Any) -> list[_Branch]:
    if not isinstance(document, dict) or document.get("format") != FILE_FORMAT:
        raise ConfigStoreCorruptError(f"not a {FILE_FORMAT} file")
    if document.get("version") != FILE_VERSION:
        raise ConfigStoreCorruptError(f"unsupported version {document.get('version')!r}")
    components = document.get("components")
    if not isinstance(components, list):
        raise ConfigStoreCorruptError("'components' must be a list")
    roots = []
    for entry in components:
        root = _parse_node(entry, depth=1)
        if not isinstance(root, _Branch):
            raise ConfigStoreCorruptError("a component's configuration must be a container")
        roots.append(root)
    return roots


def _parse_node(entry: Any, *, depth: int) -> _Node:
    if depth > MAX_DEPTH:
        raise ConfigStoreCorruptError(f"nests deeper than {MAX_DEPTH} levels")
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ConfigStoreCorruptError("a node must be an object with a string 'name'")
    name, modtime = entry["name"], entry.get("modtime")
    if isinstance(modtime, bool) or not isinstance(modtime, int):
        raise ConfigStoreCorruptError(f"node {name!r} has no integer 'modtime'")
    if "value" in entry and "children" not in entry:
        _check_document({name: entry["value"]}, what=f"value of {name!r}", base_depth=depth - 1)
        return _Leaf(name, entry["value"], modtime)
    children = entry.get("children")
    if not isinstance(children, list) or "value" in entry:
        raise ConfigStoreCorruptError(f"node {name!r} must have either 'value' or a 'children' list")
    branch = _Branch(name, modtime)
    for child_entry in children:
        child = _parse_node(child_entry, depth=depth + 1)
        if _fold(child.name) in branch.children:
            raise ConfigStoreCorruptError(f"key {child.name!r} appears twice under {name!r}")
        branch.children[_fold(child.name)] = child
    return branch
