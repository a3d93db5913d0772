"""Typed, frozen component configuration, parsed from what Greengrass `GetConfiguration` returns.

A component declares its configuration as a frozen dataclass whose defaults match its recipe's
`ComponentConfiguration.DefaultConfiguration`, and parses every document it receives with it:

    @dataclass(frozen=True, kw_only=True)
    class Batch:
        max_message_bytes: int = setting(default=65536, minimum=1024, maximum=120000)

    @dataclass(frozen=True, kw_only=True)
    class PublisherConfig:
        interval_seconds: int = setting(default=10, minimum=1, maximum=3600, doc="Seconds between samples.")
        topic: str = setting(default="dt/{thing}/telemetry", max_length=256)
        batch: Batch = Batch()  # a frozen instance is a safe shared default

    parsed = parse_config(PublisherConfig, {"intervalSeconds": 30.0, "colour": "red"})
    parsed.value.interval_seconds  # 30
    parsed.unknown_keys  # (("colour",),)
    parse_config(PublisherConfig, {"batch": {"maxMessageBytes": 1}})
    # InvalidConfigurationError: batch.maxMessageBytes: expected an integer between 1024 and 120000, got 1

The rules, and why:

- Keys are the camelCase of field names unless `key=` says otherwise. Every field needs a default: the
  recipe's DefaultConfiguration must be complete and a component must be able to start on it. Defaults are
  checked against their own limits the first time a model is used (a `TypeError` names the model's bug).
- Missing keys take defaults. Unknown keys are reported in `Parsed.unknown_keys`, never fatal (a deployment
  may be older or newer than the component). Keys starting with `_` (comments) are ignored everywhere, and
  so is the top-level `accessControl` (it is the nucleus's).
- JSON types are strict: a bool is not a number; an `int` accepts an integral float (`10.0`, as Greengrass
  may deliver it); a `float` accepts an int. Strings are never converted to numbers or booleans: the nucleus
  keeps what was merged, so a quoted `"10"` is a deployment mistake, and failing the deployment with the key
  path is better than a component that silently differs from what `GetConfiguration` shows.
- Limits (`minimum`, `maximum`, `choices`, `pattern`, `max_length`) on a tuple or mapping field apply to
  each item or value; `max_items` and `key_pattern` to the container. Strings default to at most 4096
  characters, lists and mappings to 1000 items, and keys are at most 128 characters.
- Every problem (up to 20) is collected into one `InvalidConfigurationError`, a `ConfigurationError` whose
  `key_path` and `expected` are the first problem's. Messages show at most 60 characters of a value, and
  never the value of a `secret=True` setting.
- A document is walked only along the model's shape (an unknown key's value is never visited), so hostile
  documents cost time linear in what is visited, capped at `MAX_NODES` values, and their depth cannot
  matter beyond the model's own (at most `MAX_DEPTH`).
- A model may define `validate(self) -> None` for cross-field rules, raising `ConfigurationError` with a key
  path relative to itself; `parse_config` prefixes the model's own path.
- Declare models at module level (annotations are resolved with `typing.get_type_hints`). A nested model's
  default is best a frozen instance (`batch: Batch = Batch()`): ruff's RUF009 flags `setting()` on fields
  whose type it cannot prove immutable, unless `device_agent.config.setting` is in `extend-immutable-calls`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import logging
import math
import re
import threading
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar, Unpack, overload

from device_agent.errors import ConfigurationError, format_key_path

__all__ = [
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MAX_LENGTH",
    "MAX_DEPTH",
    "MAX_KEY_LENGTH",
    "MAX_NODES",
    "MAX_PROBLEMS",
    "InvalidConfigurationError",
    "KeyInfo",
    "KeyPath",
    "Parsed",
    "SettingOptions",
    "defaults_document",
    "describe",
    "parse_config",
    "setting",
    "to_document",
]

_log = logging.getLogger(__name__)

T = TypeVar("T")
KeyPath = tuple[str | int, ...]

MAX_DEPTH: Final = 32
MAX_NODES: Final = 100_000
MAX_PROBLEMS: Final = 20
MAX_KEY_LENGTH: Final = 128
DEFAULT_MAX_LENGTH: Final = 4096
DEFAULT_MAX_ITEMS: Final = 1000

_SHOWN: Final = 60  # characters of a value a message may echo
_MESSAGE: Final = 300  # characters of one problem's text
_SHOWN_CHOICES: Final = 10
_META: Final = "device_agent.config"
_LIMITS: Final = ("minimum", "maximum", "choices", "pattern", "max_length", "max_items", "key_pattern")


class InvalidConfigurationError(ConfigurationError):
    """Every problem found in one document. `key_path` and `expected` are the first problem's.

    `problems` holds at most `MAX_PROBLEMS`; `truncated` says parsing stopped there (or at `MAX_NODES`).
    """

    def __init__(self, problems: Sequence[ConfigurationError], *, truncated: bool = False) -> None:
        if not problems:
            raise ValueError("InvalidConfigurationError needs at least one problem")
        super().__init__(problems[0].key_path, problems[0].expected)
        self.problems = tuple(problems)
        self.truncated = truncated

    def __str__(self) -> str:
        text = _clip(f"{format_key_path(self.key_path)}: {self.expected}", _MESSAGE)
        more = len(self.problems) - 1
        if more or self.truncated:
            text += f" (and {more}{'+' if self.truncated else ''} more)"
        return text


@dataclass(frozen=True)
class Parsed(Generic[T]):
    """A parsed configuration and the paths of the keys the model does not know (in document order)."""

    value: T
    unknown_keys: tuple[KeyPath, ...] = ()


@dataclass(frozen=True, kw_only=True)
class KeyInfo:
    """One documented key: `key_path` uses `*` for any mapping key or list index, e.g. `thresholds.*.warn`."""

    key_path: str
    type_name: str
    expected: str
    default: Any
    doc: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    pattern: str | None = None
    max_length: int | None = None
    max_items: int | None = None
    secret: bool = False


@dataclass(frozen=True)
class _Setting:
    key: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    choices: Sequence[Any] | None = None
    pattern: str | None = None
    max_length: int | None = None
    max_items: int | None = None
    key_pattern: str | None = None
    secret: bool = False
    doc: str = ""


class SettingOptions(typing.TypedDict, total=False):
    """The keyword options of `setting()`. Limits on a tuple or mapping apply to its items or values."""

    key: str  # the document key; camelCase of the field name by default
    minimum: float  # int and float
    maximum: float
    choices: Sequence[Any]  # int, float and str
    pattern: str  # str, matched in full
    max_length: int  # str; DEFAULT_MAX_LENGTH by default
    max_items: int  # tuple and Mapping; DEFAULT_MAX_ITEMS by default
    key_pattern: str  # Mapping keys, matched in full
    secret: bool  # never show the value in messages
    doc: str  # for documentation tables


# --- declaring -------------------------------------------------------------------------------------------


@overload
def setting(default: T, **options: Unpack[SettingOptions]) -> T: ...


@overload
def setting(*, default_factory: Callable[[], T], **options: Unpack[SettingOptions]) -> T: ...


def setting(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    **options: Unpack[SettingOptions],
) -> Any:
    """A configuration field: its default, its document key and its limits (see `SettingOptions`).

    A dict or list default is frozen (to a read-only mapping or a tuple) and copied per instance.
    """
    if (default is dataclasses.MISSING) == (default_factory is dataclasses.MISSING):
        raise TypeError("setting() needs exactly one of default or default_factory")
    if default_factory is not dataclasses.MISSING:
        factory = default_factory
        default_factory = lambda: _freeze(factory())  # noqa: E731
    elif type(default).__hash__ is None:  # mutable: dataclasses refuse it as a shared default
        value = default
        default, default_factory = dataclasses.MISSING, lambda: _freeze(value)
    meta = _Setting(**options)
    return dataclasses.field(default=default, default_factory=default_factory, metadata={_META: meta})


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return types.MappingProxyType(dict(value))
    if isinstance(value, list | set | frozenset):
        return tuple(value)
    return value


# --- messages --------------------------------------------------------------------------------------------


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _literal(value: object) -> str:
    """A JSON spelling of a model's own value (choices), clipped."""
    if isinstance(value, enum.Enum):
        value = value.value
    if value is None or isinstance(value, bool | int | float | str):
        return _clip(json.dumps(value), _SHOWN)
    return _clip(repr(value), _SHOWN)


def _show(value: object, secret: bool) -> str:
    """What a message may say about a document's value: its JSON spelling, clipped, or only its kind."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean" if secret else json.dumps(value)
    if isinstance(value, int | float):
        if secret:
            return "a number"
        if isinstance(value, int) and value.bit_length() > 64:  # noqa: PLR2004 - str() of huge ints is slow
            return "a very large integer"
        return json.dumps(int(value) if isinstance(value, int) else float(value))
    if isinstance(value, str):
        if secret:
            return "a string"
        shown = json.dumps(value[:_SHOWN])
        if len(value) <= _SHOWN and len(shown) <= _SHOWN + 2:
            return shown
        return f"{shown[:_SHOWN]}… ({len(value)} characters)"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} items"
    if isinstance(value, Mapping):
        return "an object"
    return f"a value of type {_clip(type(value).__name__, 40)}"


def _range(noun: str, minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{noun} between {_literal(minimum)} and {_literal(maximum)}"
    if minimum is not None:
        return f"{noun} of at least {_literal(minimum)}"
    if maximum is not None:
        return f"{noun} of at most {_literal(maximum)}"
    return noun


def _one_of(choices: Sequence[object]) -> str:
    shown = ", ".join(_literal(choice) for choice in choices[:_SHOWN_CHOICES])
    return f"one of {shown}{', …' if len(choices) > _SHOWN_CHOICES else ''}"


# --- parsing ---------------------------------------------------------------------------------------------


class _Abort(Exception):  # noqa: N818 - internal control flow, never escapes
    """Stop parsing: too many problems, or too large a document."""


_INVALID: Final = object()  # a value failed; its problem is recorded in the run


class _Run:
    """The state of one parse: problems, unknown keys and the node budget."""

    __slots__ = ("aborted", "max_nodes", "nodes", "problems", "unknown")

    def __init__(self, max_nodes: int) -> None:
        self.max_nodes = max_nodes
        self.nodes = 0
        self.aborted = False
        self.problems: list[ConfigurationError] = []
        self.unknown: list[KeyPath] = []

    def fail(self, path: KeyPath, expected: str) -> object:
        self.problems.append(ConfigurationError(path, _clip(expected, _MESSAGE)))
        if len(self.problems) >= MAX_PROBLEMS:
            self.aborted = True
            raise _Abort
        return _INVALID

    def count(self, path: KeyPath, nodes: int) -> None:
        self.nodes += nodes
        if self.nodes > self.max_nodes:
            self.problems.append(ConfigurationError(path, f"expected at most {self.max_nodes} values in all"))
            self.aborted = True
            raise _Abort

    def check_key(self, path: KeyPath, key: object) -> bool:
        """Whether `key` may be looked at; records why not. `_comment`-style keys are silently skipped."""
        if not isinstance(key, str):
            self.fail(
                path,
                f"expected an object with string keys, got a key of type {_clip(type(key).__name__, 40)}",
            )
            return False
        if len(key) > MAX_KEY_LENGTH:
            self.fail(path, f"expected keys of at most {MAX_KEY_LENGTH} characters, got one of {len(key)}")
            return False
        return not key.startswith("_")


class _Kind:
    """How one declared type is parsed, dumped and described."""

    nullable = False
    type_name = "value"
    depth = 0

    def parse(self, value: object, path: KeyPath, run: _Run) -> object:
        if value is None and self.nullable:
            return None
        return self._parse(value, path, run)

    def dump(self, value: object) -> object:
        return None if value is None else self._dump(value)

    def expected(self) -> str:
        return self._phrase() + (" or null" if self.nullable else "")

    def full_type_name(self) -> str:
        return self.type_name + (" or null" if self.nullable else "")

    def reject(self, value: object, path: KeyPath, run: _Run, *, secret: bool = False) -> object:
        return run.fail(path, f"expected {self.expected()}, got {_show(value, secret)}")

    def _parse(self, value: object, path: KeyPath, run: _Run) -> object:
        raise NotImplementedError

    def _dump(self, value: object) -> object:
        return value

    def _phrase(self) -> str:
        raise NotImplementedError


class _Bool(_Kind):
    type_name = "boolean"

    def __init__(self, secret: bool) -> None:
        self.secret = secret

    def _parse(self, value: object, path: KeyPath, run: _Run) -> object:
        return value if isinstance(value, bool) else self.reject(value, path, run, secret=self.secret)

    def _phrase(self) -> str:
        return "true or false"


class _Number(_Kind):
    """`int` (integral floats accepted) or `float` (ints accepted); never bool, NaN or infinity."""

    def __init__(self, integral: bool, meta: _Setting) -> None:
        self.integral = integral
        self.type_name = "integer" if integral else "number"
        self.minimum, self.maximum, self.choices, self.secret = (
            meta.minimum,
            meta.maximum,
            None if meta.choices is None else tuple(meta.choices),
            meta.secret,
        )

    def _parse(self, value: object, path: KeyPath, run: _Run) -> object:
        number = self._coerce(value)
        if number is None or not self._fits(number):
            return self.reject(value, path, run, secret=self.secret)
        return number

    def _coerce(self, value: object) -> int | float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if self.integral:
            return int(value) if isinstance(value, int) or value.is_integer() else None
        try:
            return float(value)
        except OverflowError:  # an int beyond float range
            return None

    def _fits(self, number: float) -> bool:
        return (
            (self.minimum is None or number >= self.minimum)
            and (self.maximum is None or number <= self.maximum)
            and (self.choices is None or number in self.choices)
        )

    def _dump(self, value: object) -> object:
        return value if self.integral else float(typing.cast("float", value))

    def _phrase(self) -> str:
        if self.choices is not None:
            return _one_of(self.choices)
        return _range("an integer" if self.integral else "a number", self.minimum, self.maximum)


class _Str(_Kind):
    type_name = "string"

    def __init__(self, meta: _Setting) -> None:
        self.max_length = DEFAULT_MAX_LENGTH if meta.max_length is None else meta.max_length
        self.pattern = None if meta.pattern is None else re.compile(meta.pattern)
        self.choices = None if meta.choices is None else tuple(meta.choices)
        self.secret = meta.secret

    def _parse(self, value: object, path: KeyPath, run: _Run) -> object:
        if not isinstance(value, str):
            return self.reject(value, path, run, secret=self.secret)
        if len(value) > self.max_length:
            got = _show(value, self.secret) if self.secret else f"one of {len(value)} characters"
            return run.fail(path, f"expected a string of at most {self.max_length} characters, got {got}")
        if self.pattern is not None and self.pattern.fullmatch(value) is None:
            return self.reject(value, path, run, secret=self.secret)
        if self.choices is not None and value not in self.choices:
            return self.reject(value, path, run, secret=self.secret)
        return str(value)

    def _phrase(self) -> str:
        if self.choices is not None:
            return _one_of(self.choices)
        text = "a string"
        if self.pattern is not None:
            text += f" matching {_literal(self.pattern.pattern)}"
        if self.max_length != DEFAULT_MAX_LENGTH:
            text += f" of at most {self.max_length} characters"
        return text


def _tag(value: object) -> str | None:
    """Matching choices by JSON type: `true` is not `1`, but `1.0` is `1`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else None


class _Choice(_Kind):
    """An `Enum` (matched by value) or a `Literal[...]`."""

    def __init__(self, members: Sequence[object], values: Sequence[object], secret: bool) -> None:
        self.members = tuple(members)
        self.values = tuple(values)
        self.secret = secret
        self.table = {(_tag(value), value): member for member, value in zip(members, values, strict=True)}
        kinds = {_tag(value) for value in values}
        only = kinds.pop() if len(kinds) == 1 else None
        self.type_name = {"string": "string", "number": "number", "bool": "boolean"}.get(only or "", "value")

    def _parse(self, value: object, path: KeyPath, run: _Run) -> object:
        tag = _tag(value)
        if tag is not None and not (isinstance(value, float) and math.isnan(value)):
            member = self.table.get((tag, value), _INVALID)
            if member is not _INVALID:
                return member
        return self.reject(value, path, run, secret=self.secret)

    def _dump(self, value: object) -> object:
        return value.value if isinstance(value, enum.Enum) else value

    def _phrase(self) -> str:
        return _one_of(self.values)


class _Tuple(_Kind):
    def __init__(self, item: _Kind, max_items: int) -> None:
        self.item, self.max_items = item, max_items
        self.type_name = f"list of {item.full_type_name()}"
        self.depth = item.depth + 1

    def _parse(self, value: object, path: KeyPath, run: _Run) -> object:
        if not isinstance(value, list | tuple):
            return self.reject(value, path, run)
        if len(value) > self.max_items:
            return run.fail(
                path, f"expected a list of at most {self.max_items} items, got one of {len(value)} items"
            )
        run.count(path, len(value))
        items = [self.item.parse(item, (*path, index), run) for index, item in enumerate(value)]
        return _INVALID if any(item is _INVALID for item in items) else tuple(items)

    def _dump(self, value: object) -> object:
        return [self.item.dump(item) for item in typing.cast("Sequence[object]", value)]

    def _phrase(self) -> str:
        return (
            "a list" if self.max_items == DEFAULT_MAX_ITEMS else f"a list of at most {self.max_items} items"
        )


class _Map(_Kind):
    """`Mapping[str, T]` from a JSON object, kept read-only."""

    def __init__(self, value: _Kind, max_items: int, key_pattern: str | None) -> None:
        self.value, self.max_items = value, max_items
        self.key_pattern = None if key_pattern is None else re.compile(key_pattern)
        self.type_name = f"map of {value.full_type_name()}"
        self.depth = value.depth + 1

    def _parse(self, value: object, path: KeyPath, run: _Run) -> object:
        if not isinstance(value, Mapping):
            return self.reject(value, path, run)
        if len(value) > self.max_items:
            return run.fail(
                path, f"expected an object of at most {self.max_items} keys, got one of {len(value)} keys"
            )
        run.count(path, len(value))
        parsed: dict[str, object] = {}
        for key, item in value.items():
            if not run.check_key(path, key):
                continue
            if self.key_pattern is not None and self.key_pattern.fullmatch(key) is None:
                parsed[key] = run.fail(
                    (*path, key), f"expected a key matching {_literal(self.key_pattern.pattern)}"
                )
                continue
            parsed[key] = self.value.parse(item, (*path, key), run)
        if any(item is _INVALID for item in parsed.values()):
            return _INVALID
        return types.MappingProxyType(parsed)

    def _dump(self, value: object) -> object:
        return {
            key: self.value.dump(item) for key, item in typing.cast("Mapping[str, object]", value).items()
        }

    def _phrase(self) -> str:
        return "an object"


@dataclass(frozen=True)
class _Field:
    name: str
    key: str
    kind: _Kind
    meta: _Setting


class _Plan:
    """What a model's introspection yields, computed once per model."""

    def __init__(self, model: type, fields: tuple[_Field, ...]) -> None:
        self.model = model
        self.fields = fields
        self.by_key = {field.key: field for field in fields}
        self.validate = callable(getattr(model, "validate", None))
        self.depth = 1 + max((field.kind.depth for field in fields), default=0)


class _Model(_Kind):
    type_name = "object"

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.depth = plan.depth

    def _parse(self, value: object, path: KeyPath, run: _Run) -> object:
        if not isinstance(value, Mapping):
            return self.reject(value, path, run)
        run.count(path, len(value))
        values: dict[str, object] = {}
        for key, item in value.items():
            if not run.check_key(path, key) or (not path and key == "accessControl"):
                continue
            field = self.plan.by_key.get(key)
            if field is None:
                run.unknown.append((*path, key))
            else:
                values[field.name] = field.kind.parse(item, (*path, key), run)
        if any(item is _INVALID for item in values.values()):
            return _INVALID
        return self._build(values, path, run)

    def _build(self, values: dict[str, object], path: KeyPath, run: _Run) -> object:
        try:
            instance = self.plan.model(**values)
            if self.plan.validate:
                instance.validate()
        except ConfigurationError as error:
            for problem in getattr(error, "problems", (error,)):
                run.fail((*path, *problem.key_path), problem.expected)
            return _INVALID
        except ValueError as error:  # a __post_init__ or validate() written in the stdlib's idiom
            return run.fail(path, str(error) or "a valid combination of values")
        return instance

    def _dump(self, value: object) -> object:
        return {field.key: field.kind.dump(getattr(value, field.name)) for field in self.plan.fields}

    def _phrase(self) -> str:
        return "an object"


# --- introspection (once per model) ----------------------------------------------------------------------

_plans: dict[type, _Plan] = {}
_building: set[type] = set()
_lock = threading.RLock()


def _plan_for(model: type) -> _Plan:
    plan = _plans.get(model)
    if plan is not None:
        return plan
    with _lock:
        plan = _plans.get(model)
        if plan is None:
            if model in _building:
                raise TypeError(f"{model.__name__}: recursive configuration models are not supported")
            _building.add(model)
            try:
                plan = _compile(model)
                _check_defaults(plan)
            finally:
                _building.discard(model)
            _plans[model] = plan
    return plan


def _compile(model: type) -> _Plan:
    if not dataclasses.is_dataclass(model):
        raise TypeError(f"{model!r} is not a dataclass")
    name = model.__name__
    params = getattr(model, "__dataclass_params__", None)
    if not getattr(params, "frozen", False):
        raise TypeError(f"{name}: configuration models must be frozen dataclasses")
    try:
        hints = typing.get_type_hints(model, include_extras=True)
    except NameError as error:
        raise TypeError(
            f"{name}: cannot resolve annotations ({error}); declare models at module level"
        ) from error
    fields = [_compile_field(model, f, hints[f.name]) for f in dataclasses.fields(model) if f.init]
    keys = [field.key for field in fields]
    if len(set(keys)) != len(keys):
        raise TypeError(f"{name}: two fields share a key: {sorted(keys)}")
    plan = _Plan(model, tuple(fields))
    if plan.depth > MAX_DEPTH:
        raise TypeError(f"{name}: nested deeper than {MAX_DEPTH} levels")
    return plan


def _compile_field(model: type, field: dataclasses.Field[Any], hint: object) -> _Field:
    where = f"{model.__name__}.{field.name}"
    if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
        raise TypeError(f"{where}: configuration fields need a default (the recipe's DefaultConfiguration)")
    meta = field.metadata.get(_META, _Setting())
    key = meta.key or _camel(field.name)
    if key.startswith("_") or key == "accessControl" or len(key) > MAX_KEY_LENGTH:
        raise TypeError(f"{where}: key {key!r} would be ignored or refused in a document")
    used: set[str] = set()
    kind = _kind_for(hint, meta, used, where)
    unused = [limit for limit in _LIMITS if getattr(meta, limit) is not None and limit not in used]
    if unused:
        raise TypeError(f"{where}: {', '.join(unused)} do not apply to {hint!r}")
    return _Field(field.name, key, kind, meta)


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def _kind_for(hint: object, meta: _Setting, used: set[str], where: str) -> _Kind:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _kind_for(args[0], meta, used, where)
    if origin in {typing.Union, types.UnionType}:
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) != 1 or len(rest) == len(args):
            raise TypeError(f"{where}: only `T | None` unions are supported, not {hint!r}")
        kind = _kind_for(rest[0], meta, used, where)
        kind.nullable = True
        return kind
    if origin is typing.Literal:
        return _Choice(args, args, meta.secret)
    if origin is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:  # noqa: PLR2004
            raise TypeError(f"{where}: use tuple[T, ...] for lists, not {hint!r}")
        used.add("max_items")
        item = _kind_for(args[0], meta, used, where)
        return _Tuple(item, DEFAULT_MAX_ITEMS if meta.max_items is None else meta.max_items)
    if origin is Mapping:
        if args[0] is not str:
            raise TypeError(f"{where}: mapping keys must be str, not {args[0]!r}")
        used.update(("max_items", "key_pattern"))
        value = _kind_for(args[1], meta, used, where)
        return _Map(value, DEFAULT_MAX_ITEMS if meta.max_items is None else meta.max_items, meta.key_pattern)
    return _scalar_kind(hint, meta, used, where)


def _scalar_kind(hint: object, meta: _Setting, used: set[str], where: str) -> _Kind:
    if hint is bool:
        return _Bool(meta.secret)
    if hint is int or hint is float:
        used.update(("minimum", "maximum", "choices"))
        return _Number(hint is int, meta)
    if hint is str:
        used.update(("pattern", "max_length", "choices"))
        return _Str(meta)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        members = list(hint)
        if not all(_tag(member.value) not in {None, "null"} for member in members):
            raise TypeError(f"{where}: enum values must be JSON strings, numbers or booleans")
        return _Choice(members, [member.value for member in members], meta.secret)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _Model(_plan_for(hint))
    hint_text = _clip(repr(hint), 80)
    raise TypeError(
        f"{where}: {hint_text} is not supported (use bool, int, float, str, Enum, Literal, "
        "T | None, tuple[T, ...], Mapping[str, T] or a model)"
    )


def _check_defaults(plan: _Plan) -> None:
    """A model's defaults must satisfy its own limits, or `model()` is a configuration no one can deploy."""
    root = _Model(plan)
    run = _Run(MAX_NODES)
    try:
        default = plan.model()
    except ValueError as error:
        raise TypeError(f"{plan.model.__name__}: its default is invalid: {error}") from error
    with contextlib.suppress(_Abort):
        root.parse(root.dump(default), (), run)
    if run.problems:
        first = run.problems[0]
        raise TypeError(
            f"{plan.model.__name__}: its default is invalid: {format_key_path(first.key_path)}: "
            f"{first.expected}"
        )


# --- public entry points ---------------------------------------------------------------------------------


def parse_config(model: type[T], document: object, *, max_nodes: int = MAX_NODES) -> Parsed[T]:
    """Parse a `GetConfiguration` document into `model`, or raise `InvalidConfigurationError` (nothing else).

    A `TypeError` means the model itself is wrongly declared, never that the document is bad.
    """
    plan = _plan_for(model)
    run = _Run(max_nodes)
    try:
        value = _Model(plan).parse(document, (), run)
    except _Abort:
        value = _INVALID
    if run.problems:  # every _INVALID value recorded one
        raise InvalidConfigurationError(run.problems, truncated=run.aborted)
    if run.unknown:
        _log.debug("config.unknown_keys model=%s count=%d", plan.model.__name__, len(run.unknown))
    return Parsed(value=typing.cast("T", value), unknown_keys=tuple(run.unknown))


def to_document(value: object) -> dict[str, Any]:
    """The JSON document of a model instance (the inverse of `parse_config`), secrets included."""
    if isinstance(value, type) or not dataclasses.is_dataclass(value):
        raise TypeError(f"expected a configuration model instance, got {type(value).__name__}")
    return typing.cast("dict[str, Any]", _Model(_plan_for(type(value))).dump(value))


def defaults_document(model: type) -> dict[str, Any]:
    """The document of all defaults, keyed as the recipe's `DefaultConfiguration` must be."""
    _plan_for(model)  # checks the model before calling it
    return to_document(model())


def describe(model: type) -> list[KeyInfo]:
    """Every key of `model`, nested ones after their parent, for documentation tables."""
    rows: list[KeyInfo] = []
    _describe(_plan_for(model), "", defaults_document(model), rows)
    return rows


def _describe(plan: _Plan, prefix: str, defaults: Mapping[str, Any], rows: list[KeyInfo]) -> None:
    for field in plan.fields:
        path = f"{prefix}.{field.key}" if prefix else field.key
        default = defaults.get(field.key)
        rows.append(_key_info(path, field, default))
        kind, inner = field.kind, field.kind
        if isinstance(kind, _Tuple):
            inner, path = kind.item, f"{path}[*]"
        elif isinstance(kind, _Map):
            inner, path = kind.value, f"{path}.*"
        if isinstance(inner, _Model):
            nested = default if inner is kind and isinstance(default, Mapping) else None
            _describe(inner.plan, path, nested or defaults_document(inner.plan.model), rows)


def _key_info(path: str, field: _Field, default: Any) -> KeyInfo:
    kind, meta = field.kind, field.meta
    element = kind.item if isinstance(kind, _Tuple) else kind.value if isinstance(kind, _Map) else kind
    choices = element.values if isinstance(element, _Choice) else getattr(element, "choices", None)
    return KeyInfo(
        key_path=path,
        type_name=kind.full_type_name(),
        expected=kind.expected() if element is kind else f"{kind.expected()}, each {element.expected()}",
        default=default,
        doc=meta.doc,
        minimum=meta.minimum,
        maximum=meta.maximum,
        choices=choices,
        pattern=meta.pattern,
        max_length=meta.max_length,
        max_items=meta.max_items,
        secret=meta.secret,
    )
