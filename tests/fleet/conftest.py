"""Fixtures for the fleet: a root with identities, and the fleet's broker (real mosquitto on loopback)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from device_agent.devkit.fleet.broker import fleet_broker
from device_agent.devkit.fleet.identity import FleetIdentities, ensure_identities
from device_agent.devkit.fleet.layout import FleetLayout
from device_agent.devkit.mosquitto import MosquittoBroker

THING_A = "vdev-001"
THING_B = "vdev-002"


@pytest.fixture
def fleet_root() -> Iterator[Path]:
    """A short private root (the devices' Unix socket paths must stay under 108 bytes)."""
    base = Path(tempfile.mkdtemp(prefix="fl-"))
    yield base / "fleet"
    shutil.rmtree(base, ignore_errors=True)


@dataclass
class SecuredBroker:
    layout: FleetLayout
    identities: FleetIdentities
    broker: MosquittoBroker


@pytest.fixture
async def secured(fleet_root: Path) -> AsyncIterator[SecuredBroker]:
    layout = FleetLayout.at(fleet_root)
    identities = ensure_identities(layout, (THING_A, THING_B))
    broker = fleet_broker(layout, identities)
    async with broker:
        yield SecuredBroker(layout, identities, broker)
