"""Hardware identity (DMI, device tree) and MAC addresses against fake sysfs and device trees."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from device_agent.facts import hardware, network
from device_agent.facts.fact import Fact, Status, Tree
from tests.facts.conftest import Files, denying

DMI = {
    "sys/class/dmi/id/sys_vendor": "Dell Inc.\n",
    "sys/class/dmi/id/product_name": "OptiPlex 3000\n",
    "sys/class/dmi/id/product_serial": "SERIAL-9F2K\n",
    "sys/class/dmi/id/product_uuid": "4c4c4544-0042-3510-8052-b7c04f4e3033\n",
}
DEVICE_TREE = {
    "proc/device-tree/model": "Raspberry Pi 4 Model B Rev 1.4\x00",
    "proc/device-tree/compatible": "raspberrypi,4-model-b\x00brcm,bcm2711\x00",
    "proc/device-tree/serial-number": "10000000abcdef01\x00",
}


def test_dmi_answers_all_four(tree: Callable[[Files], Tree]):
    t = tree(DMI)
    assert hardware.vendor(t) == Fact.ok("Dell Inc.", source="dmi")
    assert hardware.model(t) == Fact.ok("OptiPlex 3000", source="dmi")
    assert hardware.serial(t) == Fact.ok("SERIAL-9F2K", source="dmi")
    assert hardware.hardware_uuid(t).value == "4c4c4544-0042-3510-8052-b7c04f4e3033"


def test_root_only_dmi_files_say_needs_root_and_never_leak_the_serial(tree: Callable[[Files], Tree]):
    t = dataclasses.replace(tree(DMI), reader=denying("product_serial", "product_uuid"))
    assert hardware.serial(t) == Fact.unavailable("needs root")
    assert hardware.hardware_uuid(t) == Fact.unavailable("needs root")
    assert hardware.model(t).is_ok


def test_the_device_tree_answers_where_there_is_no_dmi(tree: Callable[[Files], Tree]):
    t = tree(DEVICE_TREE)
    assert hardware.vendor(t) == Fact.ok("raspberrypi", source="device-tree")
    assert hardware.model(t) == Fact.ok("Raspberry Pi 4 Model B Rev 1.4", source="device-tree")
    assert hardware.serial(t) == Fact.ok("10000000abcdef01", source="device-tree")
    assert hardware.hardware_uuid(t) == Fact.unavailable("no DMI and no device tree")


def test_the_sysfs_device_tree_is_the_fallback(tree: Callable[[Files], Tree]):
    t = tree({"sys/firmware/devicetree/base/model": "Board X\x00"})
    assert hardware.model(t) == Fact.ok("Board X", source="device-tree")
    assert hardware.vendor(t).status is Status.UNAVAILABLE


def test_no_dmi_and_no_device_tree_is_unavailable(tree: Callable[[Files], Tree]):
    t = tree({})
    for collector in (hardware.vendor, hardware.model, hardware.serial, hardware.hardware_uuid):
        assert collector(t) == Fact.unavailable("no DMI and no device tree")


def test_garbage_dmi_is_an_error(tree: Callable[[Files], Tree]):
    t = tree({"sys/class/dmi/id/sys_vendor": "\n", "proc/device-tree/compatible": "nocomma\x00"})
    assert hardware.vendor(t).status is Status.ERROR


def net(interfaces: dict[str, tuple[str, bool]]) -> dict[str, str]:
    files = {}
    for name, (mac, physical) in interfaces.items():
        files[f"sys/class/net/{name}/address"] = mac + "\n"
        if physical:
            files[f"sys/class/net/{name}/device/vendor"] = "0x8086\n"
    return files


def test_only_physical_interfaces_are_listed(tree: Callable[[Files], Tree]):
    t = tree(
        net(
            {
                "eth0": ("DC:A6:32:01:02:03", True),
                "wlan0": ("dc:a6:32:01:02:04", True),
                "lo": ("00:00:00:00:00:00", False),
                "docker0": ("02:42:ac:11:00:02", False),
            }
        )
    )
    assert network.mac_addresses(t) == Fact.ok(
        [
            {"interface": "eth0", "mac": "dc:a6:32:01:02:03"},
            {"interface": "wlan0", "mac": "dc:a6:32:01:02:04"},
        ],
        source="sysfs",
    )


def test_a_garbage_address_is_an_error_and_no_sysfs_is_unavailable(
    tree: Callable[[Files], Tree], tmp_path: Path
):
    assert network.mac_addresses(tree(net({"eth0": ("zz:zz", True)}))).status is Status.ERROR
    assert network.mac_addresses(Tree(tmp_path / "nothing")).status is Status.UNAVAILABLE
