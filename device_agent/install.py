"""A component's Install step: its virtual environment in the work directory, from the hash-pinned lock, once.

    python3 -m device_agent.install --artifact {artifacts:decompressedPath}/<Name> --work {work:path}

Runs before the environment exists, with the device's own python3, so it imports the standard library only
(and `device_agent.errors`, which does too). It first checks that python3 is a Python the suite runs on
(3.11 or later): that check comes before every other import, and this file parses as Python 3.7, so an older
python3 gets one clear line and exit status 1 instead of an ImportError or a syntax error from deeper down.
The artifact holds `requirements/device.lock` (every pin with its hashes) and, when built with bundled wheels,
`wheels/` (offline mode). The environment is `<work>/venv`, and its marker file records the key it was built
for: the lock's sha256, the interpreter and the machine. When the marker matches, Install returns at once
(each start runs Install; it installs once per lock and interpreter). Otherwise it builds a new environment
in a temporary folder beside it (`python3 -m venv --without-pip`: no ensurepip needed), installs the lock with
`--require-hashes --only-binary :all:`, writes the marker last and renames the folder into place, so an
interrupted install is never mistaken for a finished one and the next Install starts over.

pip comes from the bundled pip wheel in offline mode (checked against the lock's hashes before it runs), or,
online, from the interpreter's ensurepip or its own pip. A device with neither gets an error that names the
missing package. Nothing here needs privilege; the environment is private (0700) to the component's user.

One host running many virtual devices (the devkit's virtual device and fleet) would build the same environment
for every component of every device. There, DEVICE_AGENT_ENVIRONMENT_CACHE names a folder of finished
environments, one per key, built once under a file lock and linked into each work folder. A device never sets
it; the folder must belong to the user and be closed to others, or Install refuses it.
"""

# ruff: noqa: E402 - the Python version is checked before the other imports (below)
from __future__ import annotations

import sys

MINIMUM_PYTHON = (3, 11)


def unsupported_python(version: tuple[int, ...]) -> str | None:
    """Why an interpreter of `version` cannot run the suite, or None when it can."""
    if tuple(version[:2]) >= MINIMUM_PYTHON:
        return None
    found = ".".join(str(part) for part in version[:3])
    wanted = ".".join(str(part) for part in MINIMUM_PYTHON)
    return (
        f"device_agent.install: failed: python3 is Python {found}; the suite needs Python {wanted} or later"
        " as python3 for the component's user (docs/deploying.md, device requirements)"
    )


# Before any other import: an older python3 may lack what they need (typing.Final, the syntax below them).
_UNSUPPORTED = unsupported_python(sys.version_info[:3])
if _UNSUPPORTED is not None:
    sys.stderr.write(_UNSUPPORTED + "\n")
    raise SystemExit(1)

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from device_agent.errors import DeviceAgentError  # standard library only, as this module must be

LOCK_PATH: Final = Path("requirements") / "device.lock"
WHEELS_DIR: Final = "wheels"
ENV_DIR: Final = "venv"
MARKER: Final = ".device-agent-install.json"
MARKER_SCHEMA: Final = 1
CACHE_ENV: Final = "DEVICE_AGENT_ENVIRONMENT_CACHE"
_TEMP_PREFIX: Final = ".venv-install-"
_OLD_PREFIX: Final = ".venv-old-"
_PIN: Final = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_HASH: Final = re.compile(r"--hash=sha256:([0-9a-f]{64})")
_MISSING_PIP: Final = (
    "no pip to install with: this python3 has no ensurepip and no pip. Install the distribution's venv "
    "package (Debian/Ubuntu: apt-get install python3-venv) or python3-pip, or deploy a build with bundled "
    "wheels (scripts/build --wheels), which carries its own pip"
)


class InstallError(DeviceAgentError):
    """Install cannot finish; the message says what is wrong and what to do about it."""


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: frozenset[str]


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> tuple[Pin, ...]:
    """The pins of a pip requirements file with hashes (continuation lines joined, comments dropped)."""
    joined = re.sub(r"\\\n", " ", text)
    pins = []
    for raw in joined.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        if match is None:
            raise InstallError(f"lock: not an ==-pinned requirement: {line[:80]!r}")
        pins.append(Pin(canonical_name(match[1]), match[2], frozenset(_HASH.findall(line))))
    return tuple(pins)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def install_key(lock_bytes: bytes) -> str:
    """What the environment depends on: the lock, and the interpreter it is built from, on this machine."""
    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    parts = [
        hashlib.sha256(lock_bytes).hexdigest(),
        sys.implementation.cache_tag or "",
        platform.python_version(),
        platform.machine(),
        base,
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def marker_document(key: str, *, offline: bool) -> dict[str, object]:
    return {"schema": MARKER_SCHEMA, "key": key, "python": platform.python_version(), "offline": offline}


def write_marker(environment: Path, key: str, *, offline: bool) -> None:
    path = environment / MARKER
    data = json.dumps(marker_document(key, offline=offline), sort_keys=True).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def is_installed(environment: Path, key: str) -> bool:
    """The environment is complete and was built for `key`: marker matches, interpreter and config present."""
    try:
        marker = json.loads((environment / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("key") == key
        and (environment / "pyvenv.cfg").is_file()
        and os.access(environment / "bin" / "python", os.X_OK)
    )


@dataclass(frozen=True)
class Paths:
    artifact: Path
    work: Path

    @property
    def lock(self) -> Path:
        return self.artifact / LOCK_PATH

    @property
    def wheels(self) -> Path:
        return self.artifact / WHEELS_DIR

    @property
    def environment(self) -> Path:
        return self.work / ENV_DIR


def install(paths: Paths, *, cache: Path | None = None) -> bool:
    """Make sure `<work>/venv` matches the lock; True when it was (re)built, False when it already did.

    With `cache`, the environment is built (once, under a lock) in `<cache>/<key>/venv` and linked into place.
    """
    try:
        lock_bytes = paths.lock.read_bytes()
    except OSError as e:
        raise InstallError(f"cannot read the lock {paths.lock}: {e.strerror}") from e
    pins = parse_lock(lock_bytes.decode("utf-8"))
    key = install_key(lock_bytes)
    if is_installed(paths.environment, key):
        return False
    paths.work.mkdir(mode=0o700, parents=True, exist_ok=True)
    _remove_leftovers(paths.work)
    if cache is None:
        _build(paths, pins, key, paths.environment)
        return True
    shared = _private_folder(cache) / key
    with _locked(_private_folder(shared)):
        if not is_installed(shared / ENV_DIR, key):
            _remove_leftovers(shared)
            _build(paths, pins, key, shared / ENV_DIR)
    link = paths.work / f"{_TEMP_PREFIX}{os.urandom(4).hex()}"
    link.symlink_to(shared / ENV_DIR)
    _swap_in(link, paths.environment)
    return True


def _build(paths: Paths, pins: Sequence[Pin], key: str, environment: Path) -> None:
    import venv  # noqa: PLC0415 - it loads logging: half of a start that finds its environment in place

    staging = environment.with_name(f"{_TEMP_PREFIX}{os.urandom(4).hex()}")
    offline = paths.wheels.is_dir()
    try:
        venv.EnvBuilder(with_pip=False, symlinks=True).create(staging)
        staging.chmod(0o700)
        python = staging / "bin" / "python"
        command = _pip_command(paths, pins, python, offline=offline)
        _run_pip(command, paths.lock, offline=offline, wheels=paths.wheels)
        write_marker(staging, key, offline=offline)
        _swap_in(staging, environment)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _private_folder(path: Path) -> Path:
    """`path` as a folder of this user's that others cannot write (else it could run their code)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        raise InstallError(f"{path}: not a folder of this user's closed to others; refusing it as a cache")
    return path


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _pip_command(paths: Paths, pins: Sequence[Pin], python: Path, *, offline: bool) -> list[str]:
    if offline:
        return [str(python), str(_bundled_pip(paths.wheels, pins)) + "/pip"]
    if importlib.util.find_spec("ensurepip") is not None:
        _checked(
            [str(python), "-m", "ensurepip", "--default-pip"],
            "ensurepip could not put pip in the environment",
        )
        return [str(python), "-m", "pip"]
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip", "--python", str(python)]
    raise InstallError(_MISSING_PIP)


def _bundled_pip(wheels: Path, pins: Sequence[Pin]) -> Path:
    """The bundled pip wheel, checked against the lock first: it runs before pip checks anything."""
    pip = next((p for p in pins if p.name == "pip"), None)
    if pip is None:
        raise InstallError("the lock pins no pip, and offline mode runs the bundled pip wheel")
    candidates = sorted(wheels.glob(f"pip-{pip.version}-*.whl"))
    if not candidates:
        raise InstallError(
            f"{wheels}: no pip-{pip.version} wheel bundled; rebuild with scripts/build --wheels"
        )
    for candidate in candidates:
        if file_sha256(candidate) not in pip.hashes:
            raise InstallError(f"{candidate.name}: its sha256 is not in the lock; the artifact was altered")
    return candidates[0]


def _run_pip(command: list[str], lock: Path, *, offline: bool, wheels: Path) -> None:
    args = ["install", "--disable-pip-version-check", "--no-input", "--no-cache-dir"]
    args += ["--require-hashes", "--only-binary", ":all:", "-r", str(lock)]
    if offline:
        # --isolated: no pip.conf or PIP_* variable may add an index or a find-links folder.
        args = ["--isolated", *args, "--no-index", "--find-links", str(wheels)]
    _checked(
        [*command, *args],
        "pip could not install the lock (a hash mismatch means a wheel differs from the one locked; "
        "see pip's output above)",
    )


def _checked(command: list[str], failure: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    sys.stdout.flush()
    code = subprocess.run(command, env=env, check=False).returncode
    if code != 0:
        raise InstallError(f"{failure} (exit status {code})")


def _swap_in(staging: Path, environment: Path) -> None:
    """Rename the finished environment into place; an old one is moved aside first, then removed."""
    old = None
    if environment.is_symlink() or environment.exists():
        old = environment.with_name(f"{_OLD_PREFIX}{os.urandom(4).hex()}")
        environment.rename(old)
    staging.rename(environment)
    fd = os.open(environment.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if old is not None:
        _remove(old)


def _remove_leftovers(work: Path) -> None:
    for entry in work.iterdir() if work.is_dir() else ():
        if entry.name.startswith((_TEMP_PREFIX, _OLD_PREFIX)):
            _remove(entry)


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m device_agent.install", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--artifact", type=Path, required=True, help="the unpacked artifact folder")
    parser.add_argument("--work", type=Path, required=True, help="the component's work folder")
    args = parser.parse_args(argv)
    paths = Paths(artifact=args.artifact, work=args.work)
    cache = os.environ.get(CACHE_ENV)
    try:
        built = install(paths, cache=Path(cache) if cache else None)
    except (InstallError, OSError) as e:
        sys.stderr.write(f"device_agent.install: failed: {e}\n")
        return 1
    state = "installed" if built else "already installed, nothing to do"
    mode = "bundled wheels" if paths.wheels.is_dir() else "package index"
    sys.stdout.write(f"device_agent.install: {paths.environment} {state} ({mode})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
