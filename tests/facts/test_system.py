"""System facts against fake /proc and /etc trees, and their parsers under hypothesis."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from device_agent.facts import system
from device_agent.facts.fact import Fact, Garbage, Status, Tree
from tests.facts.conftest import Files, denying

PROC = {
    "proc/sys/kernel/arch": "aarch64\n",
    "proc/sys/kernel/osrelease": "6.1.0-rpi7-rpi-v8\n",
    "proc/sys/kernel/version": "#1 SMP PREEMPT Debian 1:6.1.63-1+rpt1\n",
    "proc/sys/kernel/random/boot_id": "0f5c1a7e-8b1d-4c52-9d0e-3a1b2c3d4e5f\n",
    "proc/uptime": "12345.67 40000.00\n",
    "proc/meminfo": "MemTotal:        3884332 kB\nMemFree:  1 kB\n",
    "proc/cpuinfo": "processor\t: 0\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\nprocessor\t: 1\n",
    "etc/os-release": 'ID=raspbian\nVERSION_ID="12"\nPRETTY_NAME="Raspbian GNU/Linux 12 (bookworm)"\n',
}


def test_a_healthy_tree(tree: Callable[[Files], Tree]):
    t = tree(PROC)
    assert system.architecture(t) == Fact.ok("aarch64", source="proc")
    assert system.kernel(t).value == {
        "release": "6.1.0-rpi7-rpi-v8",
        "version": PROC["proc/sys/kernel/version"].strip(),
    }
    assert system.boot_id(t).value == "0f5c1a7e-8b1d-4c52-9d0e-3a1b2c3d4e5f"
    assert system.uptime_seconds(t).value == 12345.67
    assert system.memory_bytes(t).value == 3884332 * 1024
    assert system.cpu(t).value == {"model": "Raspberry Pi 4 Model B Rev 1.4", "count": 2}
    assert system.os_release(t).value == {
        "id": "raspbian",
        "versionId": "12",
        "prettyName": "Raspbian GNU/Linux 12 (bookworm)",
    }


def test_an_empty_tree_makes_every_fact_unavailable_and_raises_nothing(tree: Callable[[Files], Tree]):
    t = tree({})
    for collector in (
        system.architecture,
        system.os_release,
        system.kernel,
        system.boot_id,
        system.uptime_seconds,
        system.cpu,
        system.memory_bytes,
    ):
        fact = collector(t)
        assert fact.status is Status.UNAVAILABLE, collector.__name__
        assert "not present" in (fact.reason or "")


def test_os_release_falls_back_to_usr_lib(tree: Callable[[Files], Tree]):
    fact = system.os_release(tree({"usr/lib/os-release": "ID=debian\n"}))
    assert fact.value == {"id": "debian", "versionId": None, "prettyName": "Linux"}
    assert fact.source == "/usr/lib/os-release"


def test_garbage_is_an_error_not_a_guess(tree: Callable[[Files], Tree]):
    t = tree(
        {
            "proc/sys/kernel/arch": "x86 64; rm -rf\n",
            "proc/sys/kernel/random/boot_id": "not-a-uuid\n",
            "proc/uptime": "soon\n",
            "proc/meminfo": "MemFree: 1 kB\n",
            "proc/cpuinfo": "flags: fpu\n",
            "etc/os-release": "\x00\x00garbage without equals\n",
        }
    )
    for collector in (
        system.architecture,
        system.boot_id,
        system.uptime_seconds,
        system.memory_bytes,
        system.cpu,
        system.os_release,
    ):
        assert collector(t).status is Status.ERROR, collector.__name__


def test_needs_root_is_reported_as_such(tree: Callable[[Files], Tree]):
    t = dataclasses.replace(tree(PROC), reader=denying("meminfo"))
    assert system.memory_bytes(t) == Fact.unavailable("needs root")


def test_a_huge_cpuinfo_is_capped(tree: Callable[[Files], Tree]):
    t = tree({"proc/cpuinfo": "processor : 0\n" * (system.CPUINFO_MAX_BYTES // 10)})
    fact = system.cpu(t)
    assert fact.status is Status.ERROR
    assert "larger than" in (fact.reason or "")


@given(st.text(max_size=2000))
def test_os_release_parser_never_raises(text: str):
    values = system.parse_os_release(text)
    assert all(re.fullmatch(r"[A-Z_][A-Z0-9_]*", key) for key in values)
    assert all("\n" not in value for value in values.values())


@given(st.text(max_size=2000))
def test_cpuinfo_parser_raises_only_garbage(text: str):
    try:
        parsed = system.parse_cpuinfo(text)
    except Garbage:
        return
    assert isinstance(parsed["count"], int)
    assert parsed["count"] >= 1
