"""The verifier's verdict (docs/schemas/bootstrap-verdict.schema.json), parsed as untrusted input.

    verdict = parse_verdict(message.payload)   # raises InvalidInputError naming the field

A verdict arrives from the cloud on the device's own command topic; the IoT policy decides who may publish
there, but the payload is still checked field by field, and bounded, before anything acts on it.
"""

from __future__ import annotations

import enum
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

from device_agent.errors import InvalidInputError

SCHEMA: Final = "bootstrap-verdict/1"
MAX_VERDICT_BYTES: Final = 16 * 1024
MAX_FAILED_RULES: Final = 32
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_THING = re.compile(r"[A-Za-z0-9:_-]{1,128}")
_RULE = re.compile(r"[a-zA-Z][a-zA-Z0-9.]{0,63}")
_FIELDS: Final = frozenset(
    {
        "schema",
        "decisionId",
        "thing",
        "reportId",
        "factsHash",
        "verdict",
        "reason",
        "failedRules",
        "group",
        "demoted",
        "reverifyAfterSeconds",
        "time",
    }
)


class Decision(enum.StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    PENDING = "pending"


@dataclass(frozen=True, kw_only=True)
class Verdict:
    decision_id: str
    thing: str
    report_id: str
    facts_hash: str
    decision: Decision
    reason: str
    failed_rules: tuple[str, ...] = ()
    group: str | None = None
    demoted: bool = False
    reverify_after_seconds: float | None = None
    time: str = ""

    @property
    def final(self) -> bool:
        """Approved or rejected: the report is answered. Pending means: keep asking, less often."""
        return self.decision is not Decision.PENDING

    def to_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "schema": SCHEMA,
            "decisionId": self.decision_id,
            "thing": self.thing,
            "reportId": self.report_id,
            "factsHash": self.facts_hash,
            "verdict": str(self.decision),
            "reason": self.reason,
            "time": self.time,
        }
        if self.failed_rules:
            document["failedRules"] = list(self.failed_rules)
        if self.group is not None:
            document["group"] = self.group
        if self.demoted:
            document["demoted"] = True
        if self.reverify_after_seconds is not None:
            document["reverifyAfterSeconds"] = self.reverify_after_seconds
        return document


def parse_verdict(payload: bytes | str | dict[str, Any]) -> Verdict:
    document = _document(payload)
    if not isinstance(document, dict):
        raise InvalidInputError("the verdict is not a JSON object")
    unknown = set(document) - _FIELDS
    if unknown:
        raise InvalidInputError("the verdict has fields the schema does not define")
    if document.get("schema") != SCHEMA:
        raise InvalidInputError(f"schema: expected {SCHEMA}")
    try:
        decision = Decision(_string(document, "verdict", 16))
    except ValueError:
        raise InvalidInputError("verdict: expected approved, rejected or pending") from None
    failed = document.get("failedRules", [])
    if (
        not isinstance(failed, list)
        or len(failed) > MAX_FAILED_RULES
        or not all(isinstance(r, str) and _RULE.fullmatch(r) for r in failed)
    ):
        raise InvalidInputError("failedRules: expected up to 32 rule names")
    group = document.get("group")
    if group not in (None, "quarantine", "production"):
        raise InvalidInputError("group: expected quarantine or production")
    demoted = document.get("demoted", False)
    if not isinstance(demoted, bool):
        raise InvalidInputError("demoted: expected a boolean")
    reverify = document.get("reverifyAfterSeconds")
    if reverify is not None and (
        isinstance(reverify, bool)
        or not isinstance(reverify, int | float)
        or not math.isfinite(reverify)
        or reverify < 0
    ):
        raise InvalidInputError("reverifyAfterSeconds: expected a number, 0 or more")
    reason = _string(document, "reason", 512)
    if not reason:
        raise InvalidInputError("reason: expected a non-empty string")
    return Verdict(
        decision_id=_matching(document, "decisionId", _HEX32),
        thing=_matching(document, "thing", _THING),
        report_id=_matching(document, "reportId", _HEX32),
        facts_hash=_matching(document, "factsHash", _HASH),
        decision=decision,
        reason=reason,
        failed_rules=tuple(failed),
        group=group,
        demoted=demoted,
        reverify_after_seconds=None if reverify is None else float(reverify),
        time=_string(document, "time", 64),
    )


def _document(payload: bytes | str | dict[str, Any]) -> Any:
    if not isinstance(payload, bytes | str):
        return payload
    if len(payload) > MAX_VERDICT_BYTES:
        raise InvalidInputError(f"a verdict is at most {MAX_VERDICT_BYTES} bytes")
    try:
        return json.loads(payload)
    except ValueError:
        raise InvalidInputError("the verdict is not JSON") from None


def _string(document: dict[str, Any], field: str, max_chars: int) -> str:
    value = document.get(field)
    if not isinstance(value, str) or len(value) > max_chars:
        raise InvalidInputError(f"{field}: expected a string of at most {max_chars} characters")
    return value


def _matching(document: dict[str, Any], field: str, pattern: re.Pattern[str]) -> str:
    value = _string(document, field, 160)
    if not pattern.fullmatch(value):
        raise InvalidInputError(f"{field}: not in the schema's format")
    return value
