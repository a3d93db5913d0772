"""Helpers for tests that run a whole fleet through `gg-virtual fleet`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import psutil

from device_agent.devkit.cli import main as gg_virtual
from device_agent.devkit.fleet.layout import FleetLayout
from device_agent.devkit.fleet.status import fleet_status


def fleet(layout: FleetLayout, *args: str) -> int:
    return gg_virtual(["fleet", *args[:1], "--root", str(layout.root), *args[1:]])


async def fleet_async(layout: FleetLayout, *args: str) -> int:
    return await asyncio.to_thread(fleet, layout, *args)


def device_rows(layout: FleetLayout, *, components: bool = False) -> dict[str, dict[str, Any]]:
    return {row["thing"]: row for row in fleet_status(layout, components=components)["devices"]}


async def wait_for(
    layout: FleetLayout,
    check: Callable[[dict[str, dict[str, Any]]], bool],
    what: str,
    *,
    timeout: float = 60.0,
    components: bool = False,
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await asyncio.to_thread(device_rows, layout, components=components)
        if check(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; devices: {rows}")
        await asyncio.sleep(0.5)


def deliveries(layout: FleetLayout, client_id: str, *, since: int = 0) -> list[str]:
    """The topics of the messages the broker delivered to `client_id` (its debug log, `--log-deliveries`),
    from byte `since` of the log: "Sending PUBLISH to <id> (d0, q1, r1, m1, '<topic>', ... (N bytes))"."""
    with (layout.broker / "mosquitto.log").open("rb") as log:
        log.seek(since)
        text = log.read().decode("utf-8", errors="replace")
    marker = f"Sending PUBLISH to {client_id} ("
    return [line.split("'", 2)[1] for line in text.splitlines() if marker in line]


def broker_log_size(layout: FleetLayout) -> int:
    return (layout.broker / "mosquitto.log").stat().st_size


def published(layout: FleetLayout, thing: str, topic: str) -> list[dict[str, Any]]:
    """The payloads the device's nucleus published on `topic` (its iot-core/published.jsonl)."""
    path = layout.device_root(thing) / "iot-core" / "published.jsonl"
    whole = path.read_text(encoding="utf-8").rpartition("\n")[0]  # a line still being written is left out
    records = [json.loads(line) for line in whole.splitlines() if line]
    return [
        record["payload"] for record in records if record["topic"] == topic and record["encoding"] == "json"
    ]


def first_deployment(layout: FleetLayout, thing: str) -> list[str]:
    """The components the device's first deployment started (from its nucleus log)."""
    log = (layout.device_root(thing) / "logs" / "greengrass.log").read_text(encoding="utf-8")
    for line in log.splitlines():
        if "deployment.started" in line:
            changed = line.split("changed=", 1)[1].split(" removed=", 1)[0]
            names: list[str] = json.loads(changed.replace("'", '"'))
            return sorted(names)
    raise AssertionError(f"{thing} logged no deployment")


def sockets_of(pids: list[int]) -> list[tuple[int, str, Any, Any]]:
    found = []
    for pid in pids:
        try:
            connections = psutil.Process(pid).net_connections(kind="all")
        except psutil.Error:
            continue
        found += [(pid, str(c.family), c.laddr, c.raddr) for c in connections]
    return found
