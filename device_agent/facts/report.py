"""The report's hash: SHA-256 of the canonical JSON of the facts (docs/schemas/bootstrap-report.schema.json).

Canonical JSON: keys sorted, separators "," and ":", UTF-8, no ASCII escaping. `uptimeSeconds` is left
out of the hash, as the schema says: it changes every second, and the hash must change only when a fact
that matters does (that is what makes a new report, and a new report id).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from device_agent.facts.fact import Fact

UNHASHED = frozenset({"uptimeSeconds"})  # excluded from factsHash by the schema: it always changes


def shape(value: Any, depth: int = 1) -> tuple[int, int]:
    """(nesting depth, elements) of a JSON value: containers, scalars and object keys all count, so the
    figures are never below what a verifier counting tokens would find."""
    if isinstance(value, dict):
        inner = [shape(v, depth + 1) for v in value.values()]
        return max([depth, *(d for d, _ in inner)]), 1 + len(value) + sum(n for _, n in inner)
    if isinstance(value, list):
        inner = [shape(v, depth + 1) for v in value]
        return max([depth, *(d for d, _ in inner)]), 1 + sum(n for _, n in inner)
    return depth - 1, 1


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def facts_document(facts: Mapping[str, Fact]) -> dict[str, Any]:
    return {name: fact.to_document() for name, fact in facts.items()}


def facts_hash(document: Mapping[str, Any]) -> str:
    """`sha256:<hex>` of the facts' JSON form, without the facts in UNHASHED."""
    hashed = {name: value for name, value in document.items() if name not in UNHASHED}
    return "sha256:" + hashlib.sha256(canonical_json(hashed)).hexdigest()
