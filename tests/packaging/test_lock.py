"""requirements/device.lock: what a device installs agrees with pyproject.toml, and every pin has hashes."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from device_agent.devkit.build import locked_wheels, read_lock
from device_agent.install import canonical_name, parse_lock
from tests.conftest import PROJECT, dev_wheelhouse

LOCK = PROJECT / "requirements" / "device.lock"


def project_dependencies() -> list[Requirement]:
    document = tomllib.loads((PROJECT / "pyproject.toml").read_text(encoding="utf-8"))
    return [Requirement(r) for r in document["project"]["dependencies"]]


def test_every_dependency_of_the_project_is_pinned_within_its_range():
    pins = {p.name: p.version for p in parse_lock(LOCK.read_text(encoding="utf-8"))}
    dependencies = project_dependencies()
    assert dependencies
    for requirement in dependencies:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is a dependency but the lock does not pin it"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])


def test_every_pin_is_exact_unique_and_hashed():
    text = LOCK.read_text(encoding="utf-8")
    pins = parse_lock(text)
    names = [p.name for p in pins]
    assert len(names) == len(set(names))
    assert "pip" in names  # offline Install runs the bundled pip wheel
    for pin in pins:
        assert pin.name == canonical_name(pin.name)
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", pin.version), pin
        assert pin.hashes, f"{pin.name} has no --hash"
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in pin.hashes)
    # Nothing but pins, hashes and comments: no index options, no markers that would skip a pin.
    for line in text.splitlines():
        stripped = line.strip().rstrip("\\").strip()
        assert not stripped or stripped.startswith(("#", "--hash=sha256:")) or "==" in stripped, line
        assert not stripped.startswith(("-i", "--index", "--extra-index", "-f", "--find-links")), line


def test_the_lock_hashes_the_wheels_this_machine_downloaded_for_it():
    # Every pin resolves to a real wheel for this platform whose sha256 the lock lists (the build checks).
    _, pins = read_lock(PROJECT)
    shipped = locked_wheels(dev_wheelhouse(), pins)
    assert {canonical_name(name.split("/")[1].split("-")[0]) for name, _ in shipped} == {p.name for p in pins}
