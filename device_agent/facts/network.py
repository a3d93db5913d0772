"""MAC addresses of the physical network interfaces: those with a `device` link in /sys/class/net/<if>.

Virtual interfaces (loopback, bridges, veth, tun) have no `device` link and are left out: their addresses
are made up at boot and say nothing about the hardware. Redaction (hashing with a fleet salt) is applied
to the value later, by `device_agent.facts.redaction`.
"""

from __future__ import annotations

import re

from device_agent.facts.fact import Fact, Garbage, Tree, collect

NET = "/sys/class/net"
MAX_INTERFACES = 32
_INTERFACE = re.compile(r"[^\s/]{1,15}")
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_NO_ADDRESS = "00:00:00:00:00:00"


def mac_addresses(tree: Tree) -> Fact:
    def read() -> Fact:
        found: list[dict[str, str]] = []
        for name in tree.list_dir(NET):
            if not _INTERFACE.fullmatch(name) or not tree.exists(f"{NET}/{name}/device"):
                continue
            mac = tree.read_value(f"{NET}/{name}/address", max_bytes=256).lower()
            if not _MAC.fullmatch(mac):
                raise Garbage(f"{NET}/{name}/address is not a MAC address")
            if mac != _NO_ADDRESS:
                found.append({"interface": name, "mac": mac})
            if len(found) >= MAX_INTERFACES:
                break
        return Fact.ok(found, source="sysfs")

    return collect(read, name="macAddresses")
