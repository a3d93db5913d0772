"""System facts: architecture, OS release, kernel, boot id, uptime, CPU and memory (from /proc and /etc).

Every function takes the `Tree` to read and returns a `Fact`; none raises (`collect`).
"""

from __future__ import annotations

import os
import re
import shlex

from device_agent.facts.fact import Fact, Garbage, Tree, Unreadable, collect

OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")
CPUINFO_MAX_BYTES = 4 * 1024 * 1024  # a few KiB per core; 4 MiB is far beyond any device we run on
_BOOT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_ARCH = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_MEMTOTAL = re.compile(r"^MemTotal:\s+(\d{1,15})\s+kB\s*$", re.MULTILINE)
# What each architecture's /proc/cpuinfo calls the CPU model, best first.
_CPU_MODEL_KEYS = ("model name", "Model", "cpu model", "Hardware", "cpu")


def architecture(tree: Tree) -> Fact:
    """The kernel's machine name: /proc/sys/kernel/arch (Linux 5.19+), else uname on the real root."""

    def read() -> Fact:
        try:
            value = tree.read_value("/proc/sys/kernel/arch")
        except Unreadable:
            if not tree.is_real_root:
                raise
            return Fact.ok(os.uname().machine, source="uname")
        if not _ARCH.fullmatch(value):
            raise Garbage("/proc/sys/kernel/arch is not a machine name")
        return Fact.ok(value, source="proc")

    return collect(read, name="architecture")


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value lines with shell quoting (os-release(5)); malformed lines are skipped, as systemd does."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, rest = line.partition("=")
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key):
            continue
        try:
            parts = shlex.split(rest, posix=True)
        except ValueError:
            continue
        values[key] = parts[0] if len(parts) == 1 else ""
    return values


def os_release(tree: Tree) -> Fact:
    def read() -> Fact:
        last: Unreadable | None = None
        for path in OS_RELEASE_PATHS:
            try:
                text = tree.read_text(path)
            except Unreadable as error:
                last = error
                continue
            values = parse_os_release(text)
            if not values:
                raise Garbage(f"{path} has no KEY=value line")
            return Fact.ok(
                {
                    "id": values.get("ID", "linux")[:64],  # os-release(5): ID defaults to "linux"
                    "versionId": values.get("VERSION_ID", None),
                    "prettyName": values.get("PRETTY_NAME", "Linux")[:128],
                },
                source=path,
            )
        assert last is not None  # noqa: S101 - the loop ran at least once
        raise last

    return collect(read, name="osRelease")


def kernel(tree: Tree) -> Fact:
    def read() -> Fact:
        release = tree.read_value("/proc/sys/kernel/osrelease")
        version = tree.read_value("/proc/sys/kernel/version")
        return Fact.ok({"release": release[:128], "version": version[:256]}, source="proc")

    return collect(read, name="kernel")


def boot_id(tree: Tree) -> Fact:
    def read() -> Fact:
        value = tree.read_value("/proc/sys/kernel/random/boot_id")
        if not _BOOT_ID.fullmatch(value):
            raise Garbage("/proc/sys/kernel/random/boot_id is not a UUID")
        return Fact.ok(value, source="proc")

    return collect(read, name="bootId")


def uptime_seconds(tree: Tree) -> Fact:
    def read() -> Fact:
        fields = tree.read_text("/proc/uptime", max_bytes=256).split()
        try:
            value = float(fields[0])
        except (IndexError, ValueError):
            raise Garbage("/proc/uptime is not two numbers") from None
        if not 0 <= value < 1e10:  # noqa: PLR2004 - 300 years; NaN fails too
            raise Garbage("/proc/uptime is out of range")
        return Fact.ok(round(value, 2), source="proc")

    return collect(read, name="uptimeSeconds")


def parse_cpuinfo(text: str) -> dict[str, object]:
    """{model, count} from /proc/cpuinfo; raises Garbage when it lists no processor."""
    count = 0
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            count += 1
        fields.setdefault(key, value)
    if count == 0:
        raise Garbage("/proc/cpuinfo lists no processor")
    model = next((fields[k] for k in _CPU_MODEL_KEYS if fields.get(k)), None)
    return {"model": None if model is None else model[:128], "count": count}


def cpu(tree: Tree) -> Fact:
    def read() -> Fact:
        return Fact.ok(parse_cpuinfo(tree.read_text("/proc/cpuinfo", max_bytes=CPUINFO_MAX_BYTES)), "proc")

    return collect(read, name="cpu")


def memory_bytes(tree: Tree) -> Fact:
    def read() -> Fact:
        match = _MEMTOTAL.search(tree.read_text("/proc/meminfo"))
        if match is None:
            raise Garbage("/proc/meminfo has no MemTotal line")
        return Fact.ok(int(match.group(1)) * 1024, source="proc")

    return collect(read, name="memoryBytes")
