"""Hardware identity: vendor, model, serial and UUID, from DMI (x86, some ARM servers) or the device tree.

DMI lives in /sys/class/dmi/id; `product_serial` and `product_uuid` are readable by root only, so an
unprivileged reporter says "needs root" for them, never a guess. Boards without DMI (a Raspberry Pi)
describe themselves in the device tree: /proc/device-tree, or /sys/firmware/devicetree/base where /proc
does not link it. Each fact's `source` says which one answered.
"""

from __future__ import annotations

from collections.abc import Callable

from device_agent.facts.fact import Fact, FactProblem, Garbage, Tree, collect

DMI = "/sys/class/dmi/id"
DEVICE_TREES = ("/proc/device-tree", "/sys/firmware/devicetree/base")
MAX_VALUE_CHARS = 128


def _device_tree(tree: Tree) -> str | None:
    return next((base for base in DEVICE_TREES if tree.is_dir(base)), None)


def _dmi(tree: Tree, attribute: str) -> Fact:
    return Fact.ok(tree.read_value(f"{DMI}/{attribute}")[:MAX_VALUE_CHARS], source="dmi")


def _first(*readers: Callable[[], Fact]) -> Fact:
    """The first reader that answers; if none does, the first one's problem (DMI's, when DMI exists)."""
    problems: list[Fact] = []
    for read in readers:
        try:
            return read()
        except FactProblem as problem:
            problems.append(problem.fact())
    if not problems:
        return Fact.unavailable("no DMI and no device tree")
    return problems[0]


def _sources(tree: Tree, dmi: Callable[[], Fact] | None, dt: Callable[[str], Fact] | None) -> Fact:
    readers: list[Callable[[], Fact]] = []
    if dmi is not None and tree.is_dir(DMI):
        readers.append(dmi)
    base = _device_tree(tree)
    if dt is not None and base is not None:
        readers.append(lambda: dt(base))
    return _first(*readers)


def vendor(tree: Tree) -> Fact:
    def from_dt(base: str) -> Fact:
        # `compatible` is a NUL-separated list of "vendor,board", most specific first.
        text = tree.read_text(f"{base}/compatible", max_bytes=4096)
        first = text.split("\x00", 1)[0].strip()
        maker, comma, _ = first.partition(",")
        if not comma or not maker or any(ord(c) < 0x20 for c in maker):  # noqa: PLR2004
            raise Garbage(f"{base}/compatible has no vendor prefix")
        return Fact.ok(maker[:MAX_VALUE_CHARS], source="device-tree")

    return collect(lambda: _sources(tree, lambda: _dmi(tree, "sys_vendor"), from_dt), name="vendor")


def model(tree: Tree) -> Fact:
    def from_dt(base: str) -> Fact:
        return Fact.ok(tree.read_value(f"{base}/model")[:MAX_VALUE_CHARS], source="device-tree")

    return collect(lambda: _sources(tree, lambda: _dmi(tree, "product_name"), from_dt), name="model")


def serial(tree: Tree) -> Fact:
    def from_dt(base: str) -> Fact:
        return Fact.ok(tree.read_value(f"{base}/serial-number")[:MAX_VALUE_CHARS], source="device-tree")

    return collect(lambda: _sources(tree, lambda: _dmi(tree, "product_serial"), from_dt), name="serial")


def hardware_uuid(tree: Tree) -> Fact:
    return collect(lambda: _sources(tree, lambda: _dmi(tree, "product_uuid"), None), name="hardwareUuid")
