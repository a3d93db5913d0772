"""Helpers for tests that run a whole fleet through `gg-virtual fleet`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import psutil

from device_agent.devkit.cli import main as gg_virtual
from device_agent.devkit.fleet.identity import client_identity
from device_agent.devkit.fleet.layout import VERIFIER, FleetLayout
from device_agent.devkit.fleet.mqtt import FleetMqttClient
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


async def publish_verdict(layout: FleetLayout, port: int, thing: str, verdict: str, group: str) -> None:
    """What the verifier sends, with the verifier's own certificate (a stand-in for the verifier service)."""
    verifier = FleetMqttClient(port, client_identity(layout, VERIFIER), client_id="test-verifier")
    await verifier.start()
    try:
        payload = {"schema": "bootstrap-verdict/1", "thing": thing, "verdict": verdict, "group": group}
        payload["reason"] = "approved by the test" if verdict == "approved" else "model not allowed"
        code = await verifier.publish(f"cmd/device-agent/{thing}/verdict", json.dumps(payload).encode())
        assert not FleetMqttClient.refused(code)
    finally:
        await verifier.stop()


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
