"""The `components` fact: the suite's components and their versions, from their heartbeats.

Every suite component heartbeats on `device-agent/heartbeat/<component>` with its `version`, so listening
gives an honest list of the suite's own components (`source: suite`): what heartbeats, not everything the
nucleus runs. The schema also allows `greengrass-cli` (ListComponents); the reporter does not use it
(docs/bootstrap.md, "The components fact"): it exists only where `aws.greengrass.Cli` is deployed, which
AWS recommends for development devices only; its answer carries every component's whole configuration,
far more than a report needs; and its grant (resource `*` under `aws.greengrass.Cli`) would be dead
weight in the recipe of every production device.

A component that sends a STOPPING heartbeat leaves the list; one that crashed stays until the reporter
restarts (its last known version is still what was deployed).
"""

from __future__ import annotations

import re

from device_agent.facts.fact import Fact
from device_agent.ipc_types import LocalMessage

HEARTBEAT_FILTER = "device-agent/heartbeat/+"
MAX_COMPONENTS = 128
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_VERSION = re.compile(r"[0-9A-Za-z.+~-]{1,64}")


class Inventory:
    """Heartbeats seen (name to version), starting with the reporter itself."""

    def __init__(self, own_name: str, own_version: str) -> None:
        self.seen: dict[str, str | None] = {own_name: own_version}

    def on_heartbeat(self, message: LocalMessage) -> None:
        body = message.payload
        if not isinstance(body, dict):
            return
        name, version, state = body.get("component"), body.get("version"), body.get("state")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            return
        if state == "STOPPING":
            self.seen.pop(name, None)
            return
        if name not in self.seen and len(self.seen) >= MAX_COMPONENTS:
            return
        self.seen[name] = version if isinstance(version, str) and _VERSION.fullmatch(version) else None

    def fact(self) -> Fact:
        listing = [{"name": name, "version": version} for name, version in sorted(self.seen.items())]
        return Fact.ok({"source": "suite", "components": listing}, source="heartbeats")
