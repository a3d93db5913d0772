"""Validators for the documented schemas: telemetry messages refer to the metrics sample schema."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def _load(name: str) -> dict[str, object]:
    schema: dict[str, object] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


@functools.cache
def _registry() -> Registry:
    resources = [
        Resource.from_contents(_load(name))
        for name in ("metrics-sample.schema.json", "telemetry.schema.json")
    ]
    return Registry().with_resources((str(r.contents["$id"]), r) for r in resources)


def telemetry_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_load("telemetry.schema.json"), registry=_registry())


def local_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_load("metrics-sample.schema.json"), registry=_registry())
