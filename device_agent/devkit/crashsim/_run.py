"""Running a workload through the recording VFS, and turning the recording into crash images."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import apsw

from device_agent.devkit.crashsim._disk import DiskModel, Pending, Plan
from device_agent.devkit.crashsim._driver import ApswDriver
from device_agent.devkit.crashsim._events import Ack, DirSync, Event, Mark, Sync, Truncate, Write
from device_agent.devkit.crashsim._explore import Exploration, plans
from device_agent.devkit.crashsim._vfs import Recorder, RecordingVFS

logger = logging.getLogger(__name__)

_names = itertools.count(1)
# The wal-index is rebuilt from the WAL by the first connection after a crash; it is never part of an image.
_UNRECORDED_SUFFIXES = ("-shm",)


class Session:
    """What a workload gets: connections through the recording VFS, and a way to say what it acknowledged."""

    def __init__(self, directory: Path, vfs: RecordingVFS) -> None:
        self.directory = directory
        self.vfs_name = vfs.name
        self._recorder = vfs.recorder
        self._connections: list[apsw.Connection] = []

    def path(self, name: str | Path) -> Path:
        return self.directory / name

    def connect(self, name: str | Path = "db.sqlite") -> apsw.Connection:
        """An APSW connection on `directory/name` (or an absolute path under it) through the recording VFS."""
        connection = apsw.Connection(str(self.directory / name), vfs=self.vfs_name)
        self._connections.append(connection)
        return connection

    def driver_factory(self, busy_timeout: float = 5.0) -> Callable[[Path], ApswDriver]:
        """A factory for the store's SQL seam (`Path -> Driver`), opening through the recording VFS."""

        def factory(path: Path) -> ApswDriver:
            return ApswDriver(self.connect(path), busy_timeout=busy_timeout)

        return factory

    def acknowledge(self, item: object) -> None:
        """Call only once the write is durable by the code's own contract (e.g. after COMMIT returned)."""
        self._recorder.acknowledge(item)

    def crash_point(self, label: str) -> None:
        """Ask for a crash point here (in addition to syncs and acknowledgements)."""
        self._recorder.mark(label)

    def sync_directory(self, directory: str | Path = ".") -> None:
        """Record that the workload fsynced `directory` itself (SQLite's own directory syncs are seen)."""
        name = self._recorder.name_of(str(self.directory / directory))
        if name is None:
            raise ValueError(f"{directory} is outside the recorded directory")
        self._recorder.add(DirSync("" if name == "." else name))

    def close(self) -> None:
        for connection in self._connections:
            connection.close()
        self._connections.clear()


@dataclass(frozen=True, slots=True)
class CrashPoints:
    """Where to cut the power: before every sync, right after every acknowledgement, at every
    `Session.crash_point`, after every `every` file operations, and at the end."""

    syncs: bool = True
    acks: bool = True
    marks: bool = True
    every: int | None = None
    end: bool = True


@dataclass(frozen=True, slots=True)
class CrashPoint:
    """A moment of the recording: the first `position` events had happened, no later one had."""

    number: int
    position: int
    label: str
    acknowledged: tuple[object, ...]
    pending: tuple[Pending, ...]
    uncertain_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CrashImage:
    """The files a reboot would find (name relative to the directory -> content) after a power loss."""

    seed: int
    point: CrashPoint
    plan: Plan
    files: Mapping[str, bytes]

    @property
    def acknowledged(self) -> tuple[object, ...]:
        return self.point.acknowledged

    @property
    def label(self) -> str:
        """Enough to find this image again: the same seed gives the same plan at the same point number."""
        return f"seed={self.seed} point={self.point.number} ({self.point.label}) plan={self.plan.label}"

    def materialise(self, directory: Path) -> Path:
        """Write the files into `directory` (created 0700 if missing; existing files are replaced)."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, content in self.files.items():
            target = directory / name
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(content)
        return directory


@contextlib.contextmanager
def materialised(image: CrashImage, parent: Path | None = None) -> Iterator[Path]:
    """A fresh temporary directory holding `image`, removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="crash-", dir=parent))
    try:
        yield image.materialise(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class Recording:
    """Everything a workload did to its durable files, replayable to any crash point."""

    def __init__(self, initial: Mapping[str, bytes], events: list[Event], final: Mapping[str, bytes]) -> None:
        self.initial = dict(initial)
        self.events = events
        self.observed_final = dict(final)  # the real files after the workload: a check on the recorder

    @property
    def syncs(self) -> int:
        return sum(isinstance(event, Sync) for event in self.events)

    @property
    def acknowledged(self) -> tuple[object, ...]:
        return tuple(event.item for event in self.events if isinstance(event, Ack))

    def points(self, selection: CrashPoints | None = None, sector: int = 512) -> list[CrashPoint]:
        return [point for point, _ in self._walk(selection or CrashPoints(), sector)]

    def crash_images(
        self, *, seed: int, points: CrashPoints | None = None, exploration: Exploration | None = None
    ) -> Iterator[CrashImage]:
        ex = exploration or Exploration()
        for point, model in self._walk(points or CrashPoints(), ex.sector):
            rng = random.Random(f"{seed}:{point.number}")  # noqa: S311 - reproducible sampling, not secrets
            for plan in plans(point.pending, point.uncertain_names, rng, ex):
                yield CrashImage(seed, point, plan, model.image(plan))

    def image(self, point: CrashPoint, plan: Plan, *, seed: int = 0, sector: int = 512) -> CrashImage:
        """The image of a hand-made `plan` at `point` (from `points()`)."""
        model = DiskModel(self.initial, sector)
        for event in self.events[: point.position]:
            model.apply(event)
        return CrashImage(seed, point, plan, model.image(plan))

    def _walk(self, selection: CrashPoints, sector: int) -> Iterator[tuple[CrashPoint, DiskModel]]:
        model = DiskModel(self.initial, sector)
        acknowledged: list[object] = []
        wanted = _positions(self.events, selection)
        applied = 0
        for number, (position, label) in enumerate(sorted(wanted.items())):
            for event in self.events[applied:position]:
                model.apply(event)
                if isinstance(event, Ack):
                    acknowledged.append(event.item)
            applied = position
            point = CrashPoint(
                number,
                position,
                label,
                tuple(acknowledged),
                tuple(model.pending()),
                tuple(model.uncertain_names()),
            )
            yield point, model


def _positions(events: list[Event], selection: CrashPoints) -> dict[int, str]:
    """Position -> label of the selected crash points (several reasons for one position share it)."""
    wanted: dict[int, str] = {}

    def add(position: int, label: str) -> None:
        wanted[position] = f"{wanted[position]}+{label}" if position in wanted else label

    operations = 0
    for index, event in enumerate(events):
        if isinstance(event, Sync) and selection.syncs:
            add(index, f"before sync of {event.file}")
        elif isinstance(event, Ack) and selection.acks:
            add(index + 1, f"after ack {event.item!r}")
        elif isinstance(event, Mark) and selection.marks:
            add(index + 1, event.label)
        elif isinstance(event, Write | Truncate):
            operations += 1
            if selection.every and operations % selection.every == 0:
                add(index + 1, f"after {operations} writes")
    if selection.end:
        add(len(events), "end")
    return wanted


Workload = Callable[[Session], None]
Setup = Callable[[Path], None]


def record(workload: Workload, *, setup: Setup | None = None, directory: Path | None = None) -> Recording:
    """Run `workload` once through a fresh recording VFS and return what it did.

    `setup(directory)` runs first, unrecorded (plain `sqlite3`, key files...): what it leaves is the durable
    starting state. Without `directory`, a temporary one is used and removed afterwards.
    """
    own = directory is None
    root = Path(tempfile.mkdtemp(prefix="crashsim-")) if directory is None else directory
    try:
        root = root.resolve()
        if setup is not None:
            setup(root)
        initial = snapshot(root)
        recorder = Recorder(root, set(initial))
        vfs = RecordingVFS(f"crashsim-{os.getpid()}-{next(_names)}", recorder)
        session = Session(root, vfs)
        try:
            workload(session)
        finally:
            session.close()
            vfs.unregister()
        logger.debug("crashsim.recorded", extra={"events": len(recorder.events)})
        return Recording(initial, recorder.events, snapshot(root))
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)


def run_workload(
    workload: Workload,
    *,
    seed: int,
    setup: Setup | None = None,
    points: CrashPoints | None = None,
    exploration: Exploration | None = None,
) -> Iterator[CrashImage]:
    """Record `workload`, then yield the crash images at every selected point (lazily, one at a time)."""
    recording = record(workload, setup=setup)
    yield from recording.crash_images(seed=seed, points=points, exploration=exploration)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every regular file under `root` (except the wal-index), by name relative to it."""
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and not path.name.endswith(_UNRECORDED_SUFFIXES):
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files
