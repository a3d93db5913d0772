"""Parse and validate a bootstrap report by hand, as `docs/schemas/bootstrap-report.schema.json` says.

AWS Lambda has no jsonschema, and a report is hostile input until proved otherwise, so the checks run in
this order, each cheap before the next: size (64 KiB, before any parsing), UTF-8, nesting depth and
element count (a scan over the text, before the parser could recurse or call back per number), strict JSON
(no NaN or Infinity, no duplicate keys, no integer longer than 20 digits, no float that overflows), the exact
element count, then the schema's exact types and patterns
(a boolean is not an integer here), then the thing named by the topic against the body, then the facts hash
recomputed over the facts. Every refusal is an `InvalidReportError` whose `field` names where (`facts.tpm`,
`reportId`, ...) and whose reason never repeats the offending value.

The facts hash: SHA-256 over the canonical JSON of `facts` without `uptimeSeconds` (keys sorted, separators
`,` and `:`, UTF-8, no ASCII escaping), written `sha256:<hex>`. The device computes it the same way.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from device_agent_cloud.errors import InvalidReportError

SCHEMA: Final = "bootstrap-report/1"
MAX_REPORT_BYTES: Final = 64 * 1024
MAX_DEPTH: Final = 12  # the deepest documented fact (extra.<collector>.value.<object>) needs 6
MAX_ELEMENTS: Final = 4096  # objects, arrays and scalars together
MAX_INT_DIGITS: Final = 20  # a 64-bit memory size fits; a 4,000-digit integer does not
UNHASHED_FACTS: Final = frozenset({"uptimeSeconds"})

TOPIC_PREFIX: Final = "dt/device-agent/"
TOPIC_SUFFIX: Final = "/bootstrap"

REPORT_ID = re.compile(r"[0-9a-f]{32}")
THING_NAME = re.compile(r"[A-Za-z0-9:_-]{1,128}")
FACTS_HASH = re.compile(r"sha256:[0-9a-f]{64}")
FACT_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9]{0,63}")
# RFC 3339 date-time, as JSON Schema's `date-time` format means it: a zone is required.
DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")
REASONS: Final = frozenset({"initial", "changed", "periodic", "requested"})
STATUSES: Final = frozenset({"ok", "unavailable", "error"})
MAX_FACTS: Final = 64
_TOP_KEYS: Final = frozenset(
    {"schema", "reportId", "thing", "time", "reason", "factsHash", "facts", "reporter"}
)
_FACT_KEYS: Final = frozenset({"status", "value", "source", "reason"})
_STRINGS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # "unrolled": no per-character alternation
_BRACKETS = re.compile(r"[\[\]{}]")


@dataclass(frozen=True, kw_only=True, slots=True)
class Fact:
    status: str
    value: Any = None  # meaningful only when status is ok
    source: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True, kw_only=True, slots=True)
class Report:
    """A report that passed every check; `facts_hash` is verified against `facts`."""

    report_id: str
    thing: str
    time: dt.datetime  # aware, UTC
    reason: str
    facts_hash: str
    facts: Mapping[str, Fact]
    reporter_component: str
    reporter_version: str

    def fact(self, name: str) -> Fact | None:
        return self.facts.get(name)


def compute_facts_hash(facts: Mapping[str, Any]) -> str:
    """`sha256:<hex>` over the canonical JSON of `facts` (plain JSON values) without the unhashed facts."""
    hashed = {name: value for name, value in facts.items() if name not in UNHASHED_FACTS}
    canonical = json.dumps(hashed, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def thing_from_topic(topic: str) -> str:
    """The thing in `dt/device-agent/<thing>/bootstrap`, checked against AWS IoT's thing name pattern."""
    if not (topic.startswith(TOPIC_PREFIX) and topic.endswith(TOPIC_SUFFIX)):
        raise InvalidReportError("topic", "is not dt/device-agent/<thing>/bootstrap")
    thing = topic[len(TOPIC_PREFIX) : -len(TOPIC_SUFFIX)]
    if not THING_NAME.fullmatch(thing):
        raise InvalidReportError("topic", "the thing name in the topic is not a valid thing name")
    return thing


def parse_report(payload: bytes, *, topic_thing: str | None = None) -> Report:
    """Validate `payload` (the raw MQTT payload) and return the report, or raise `InvalidReportError`.

    With `topic_thing` (the thing in the topic the report arrived on), the body's `thing` must match it.
    """
    document = load_strict_json(payload)
    report = _validate(document)
    if topic_thing is not None and not hmac.compare_digest(topic_thing, report.thing):
        raise InvalidReportError("thing", "does not match the thing in the topic")
    return report


def load_strict_json(payload: bytes, *, max_bytes: int = MAX_REPORT_BYTES) -> Any:
    """Parse untrusted JSON with the caps above; returns plain dicts, lists, str, int, float, bool, None."""
    if not isinstance(payload, bytes | bytearray):
        raise InvalidReportError("payload", "is not bytes")
    if len(payload) > max_bytes:
        raise InvalidReportError("payload", f"is larger than {max_bytes} bytes")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidReportError("payload", "is not valid UTF-8") from None
    _check_shape(text)
    try:
        document = json.loads(
            text,
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_refuse_constant,
            parse_int=_bounded_int,
            parse_float=_finite_float,
        )
    except InvalidReportError:
        raise
    except (ValueError, RecursionError) as error:
        where = f" at character {error.pos}" if isinstance(error, json.JSONDecodeError) else ""
        raise InvalidReportError("payload", f"is not valid JSON{where}") from None
    _check_elements(document)
    return document


def _check_shape(text: str) -> None:
    # Strings may hold brackets; drop them first. An unterminated string makes the parser fail later anyway.
    skeleton = _STRINGS.sub('""', text)
    # Every element after the first in a container follows a comma: too many commas is too many elements,
    # found before the parser spends time (and a Python callback per number) on them.
    if skeleton.count(",") >= MAX_ELEMENTS:
        raise InvalidReportError("payload", f"has more than {MAX_ELEMENTS} elements")
    depth = 0
    for match in _BRACKETS.finditer(skeleton):
        depth += 1 if match.group() in "[{" else -1
        if depth > MAX_DEPTH:
            raise InvalidReportError("payload", f"nests deeper than {MAX_DEPTH} levels")


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidReportError("payload", "an object has a duplicate key")
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise InvalidReportError("payload", f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise InvalidReportError("payload", f"an integer has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidReportError("payload", "a number is too large for a double")
    return value


def _check_elements(document: Any) -> None:
    count = 0
    stack = [document]
    while stack:
        item = stack.pop()
        count += 1
        if count > MAX_ELEMENTS:
            raise InvalidReportError("payload", f"has more than {MAX_ELEMENTS} elements")
        if isinstance(item, dict):
            for key, value in item.items():
                _check_text(key)
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            _check_text(item)


def _check_text(text: str) -> None:
    # JSON escapes can spell a lone surrogate, which no UTF-8 encoder (nor the facts hash) accepts.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidReportError("payload", "a string holds a lone surrogate") from None


def _validate(document: Any) -> Report:
    if not isinstance(document, dict):
        raise InvalidReportError("<root>", "is not an object")
    _check_keys(document, "<root>", required=_TOP_KEYS, allowed=_TOP_KEYS)
    if document["schema"] != SCHEMA:
        raise InvalidReportError("schema", f"is not {SCHEMA!r}")
    report_id = _string(document, "reportId", pattern=REPORT_ID)
    thing = _string(document, "thing", pattern=THING_NAME)
    when = _date_time(document, "time")
    reason = _string(document, "reason")
    if reason not in REASONS:
        raise InvalidReportError("reason", "is not one of " + ", ".join(sorted(REASONS)))
    facts_hash = _string(document, "factsHash", pattern=FACTS_HASH)
    raw_facts = document["facts"]
    facts = _facts(raw_facts)
    reporter = document["reporter"]
    if not isinstance(reporter, dict):
        raise InvalidReportError("reporter", "is not an object")
    keys = frozenset({"component", "version"})
    _check_keys(reporter, "reporter", required=keys, allowed=keys)
    component = _string(reporter, "component", where="reporter.component", max_length=128)
    version = _string(reporter, "version", where="reporter.version", max_length=64)
    if not hmac.compare_digest(compute_facts_hash(raw_facts), facts_hash):
        raise InvalidReportError("factsHash", "does not match the facts")
    return Report(
        report_id=report_id,
        thing=thing,
        time=when,
        reason=reason,
        facts_hash=facts_hash,
        facts=facts,
        reporter_component=component,
        reporter_version=version,
    )


def _facts(raw: Any) -> dict[str, Fact]:
    if not isinstance(raw, dict):
        raise InvalidReportError("facts", "is not an object")
    if len(raw) > MAX_FACTS:
        raise InvalidReportError("facts", f"has more than {MAX_FACTS} facts")
    facts: dict[str, Fact] = {}
    for name, fact in raw.items():
        if not FACT_NAME.fullmatch(name):
            raise InvalidReportError("facts", "a fact name does not match ^[a-zA-Z][a-zA-Z0-9]{0,63}$")
        facts[name] = _fact(fact, f"facts.{name}")
    return facts


def _fact(raw: Any, where: str) -> Fact:
    if not isinstance(raw, dict):
        raise InvalidReportError(where, "is not an object")
    _check_keys(raw, where, required=frozenset({"status"}), allowed=_FACT_KEYS)
    status = raw["status"]
    if not isinstance(status, str) or status not in STATUSES:
        raise InvalidReportError(f"{where}.status", "is not one of error, ok, unavailable")
    source = _string(raw, "source", where=f"{where}.source", max_length=64) if "source" in raw else None
    reason = _string(raw, "reason", where=f"{where}.reason", max_length=256) if "reason" in raw else None
    if status == "ok":
        if "value" not in raw:
            raise InvalidReportError(where, "status ok needs a value")
        if reason is not None:
            raise InvalidReportError(where, "status ok must not carry a reason")
        return Fact(status=status, value=raw["value"], source=source)
    if reason is None:
        raise InvalidReportError(where, f"status {status} needs a reason")
    if "value" in raw:
        raise InvalidReportError(where, f"status {status} must not carry a value")
    return Fact(status=status, source=source, reason=reason)


def _check_keys(
    obj: dict[str, Any], where: str, *, required: frozenset[str], allowed: frozenset[str]
) -> None:
    missing = sorted(required - obj.keys())
    if missing:
        raise InvalidReportError(where, "is missing " + ", ".join(missing))
    unknown = obj.keys() - allowed
    if unknown:
        # Name the first unknown key only when it is a plain identifier: it is attacker-chosen text.
        first = min(unknown)
        named = f" {first!r}" if FACT_NAME.fullmatch(first) else ""
        raise InvalidReportError(where, f"has an unknown key{named}")


def _string(
    obj: dict[str, Any],
    key: str,
    *,
    where: str | None = None,
    pattern: re.Pattern[str] | None = None,
    max_length: int | None = None,
) -> str:
    where = where or key
    value = obj[key]
    if not isinstance(value, str):
        raise InvalidReportError(where, "is not a string")
    if pattern is not None and not pattern.fullmatch(value):
        raise InvalidReportError(where, f"does not match ^{pattern.pattern}$")
    if max_length is not None and len(value) > max_length:
        raise InvalidReportError(where, f"is longer than {max_length} characters")
    return value


def _date_time(obj: dict[str, Any], key: str) -> dt.datetime:
    value = _string(obj, key)
    if not DATE_TIME.fullmatch(value):
        raise InvalidReportError(key, "is not an RFC 3339 date-time with a zone")
    try:
        parsed = dt.datetime.fromisoformat(value.upper())  # 3.11 reads a Z
    except ValueError:
        raise InvalidReportError(key, "is not a valid date-time") from None
    return parsed.astimezone(dt.UTC)
