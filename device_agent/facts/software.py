"""Software facts from the environment the nucleus gives and the running interpreter: thing name, nucleus
version (GGC_VERSION), Python, awsiotsdk, awscrt and the suite's own version.

They take the environment (a mapping) instead of a tree: that is where the nucleus puts them.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Mapping

from device_agent import __version__
from device_agent.facts.fact import Fact, Garbage, Unreadable, collect

_THING = re.compile(r"[A-Za-z0-9:_-]{1,128}")
_VERSION = re.compile(r"[0-9A-Za-z.+~-]{1,64}")


def thing_name(environ: Mapping[str, str]) -> Fact:
    def read() -> Fact:
        value = environ.get("AWS_IOT_THING_NAME", "")
        if not value:
            raise Unreadable("AWS_IOT_THING_NAME is not set")
        if not _THING.fullmatch(value):
            raise Garbage("AWS_IOT_THING_NAME is not a valid thing name")
        return Fact.ok(value, source="environment")

    return collect(read, name="thingName")


def nucleus_version(environ: Mapping[str, str]) -> Fact:
    def read() -> Fact:
        value = environ.get("GGC_VERSION", "")
        if not value:
            raise Unreadable("GGC_VERSION is not set")
        if not _VERSION.fullmatch(value):
            raise Garbage("GGC_VERSION is not a version")
        return Fact.ok(value, source="environment")

    return collect(read, name="nucleusVersion")


def software() -> Fact:
    def read() -> Fact:
        # The packages' own attributes: importlib.metadata would cost megabytes of memory (docs/telemetry.md).
        import awscrt  # noqa: PLC0415
        import awsiot  # noqa: PLC0415

        return Fact.ok(
            {
                "python": platform.python_version(),
                "awsiotsdk": str(getattr(awsiot, "__version__", "unknown"))[:64],
                "awscrt": str(getattr(awscrt, "__version__", "unknown"))[:64],
                "suite": __version__,
            },
            source="runtime",
        )

    return collect(read, name="software")
