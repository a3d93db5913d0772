"""The `components` fact without the Greengrass CLI: the suite's components and versions, from heartbeats.

Where the device has the Greengrass CLI, ListComponents answers instead (`cli_listing.py`,
`source: greengrass-cli`); this list is the fallback. Every suite component heartbeats on
`device-agent/heartbeat/<component>` with its `version`, so listening gives an honest list of the suite's
own components (`source: suite`): what heartbeats, not everything the nucleus runs.

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
