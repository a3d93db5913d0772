"""Durable private files: modes whatever the umask, symlink and owner refusal, atomic write under faults."""

from __future__ import annotations

import errno
import logging
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_agent.errors import StorageError, UnsafeFileError
from device_agent.fileio import (
    OS_FILE_IO,
    Buffer,
    CrashPoint,
    Fault,
    FaultyFileIO,
    OsFileIO,
    SimulatedCrash,
    StrPath,
)
from device_agent.files import (
    TEMP_PREFIX,
    atomic_write,
    check_private_file,
    ensure_private_dir,
    open_private,
    read_private,
    remove_stale_temporaries,
)

IS_ROOT = os.geteuid() == 0
OTHER_UID = 65534  # "nobody"
requires_root = pytest.mark.skipif(
    not IS_ROOT, reason="giving a file to another owner needs root (CI runs as root, so this runs there)"
)
SECRET = b"-----BEGIN PRIVATE KEY----- hunter2-do-not-log"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def names(directory: Path) -> list[str]:
    return sorted(entry.name for entry in directory.iterdir())


def temporaries(directory: Path) -> list[str]:
    return [name for name in names(directory) if name.startswith(TEMP_PREFIX)]


@pytest.fixture(params=[0o022, 0o000, 0o277], ids=["umask022", "umask000", "umask277"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run under a given umask: 022 and 000 would loosen a careless mode, 277 would strip a careless one."""
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


# --- modes whatever the umask -----------------------------------------------------------------------


def test_atomic_write_creates_a_0600_file(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, b"{}")
    assert target.read_bytes() == b"{}"
    assert mode_of(target) == 0o600
    assert temporaries(tmp_path) == []


def test_atomic_write_sets_an_explicit_mode_exactly(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "public.txt"
    atomic_write(target, b"x", mode=0o640)
    assert mode_of(target) == 0o640


def test_atomic_write_replaces_and_resets_a_loose_mode(tmp_path: Path) -> None:
    target = tmp_path / "state"
    target.write_bytes(b"old")
    target.chmod(0o666)
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert mode_of(target) == 0o600


def test_atomic_write_refuses_non_permission_bits(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"):
        atomic_write(tmp_path / "x", b"", mode=0o4600)


def test_ensure_private_dir_creates_every_missing_parent_0700(tmp_path: Path, umask: int) -> None:
    target = tmp_path / "a" / "b" / "c"
    assert ensure_private_dir(target) == target
    for directory in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert mode_of(directory) == 0o700
        assert stat.S_ISDIR(directory.lstat().st_mode)


def test_ensure_private_dir_is_idempotent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="device_agent.files")
    ensure_private_dir(tmp_path / "d")
    ensure_private_dir(tmp_path / "d")
    assert mode_of(tmp_path / "d") == 0o700
    assert not caplog.records


def test_ensure_private_dir_tightens_our_own_loose_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="device_agent.files")
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o755)
    ensure_private_dir(loose)
    assert mode_of(loose) == 0o700
    [record] = caplog.records
    assert record.getMessage() == "files.directory_tightened"
    assert record.__dict__["path"] == str(loose)
    assert record.__dict__["mode"] == "0755"


def test_ensure_private_dir_returns_an_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert ensure_private_dir("rel/dir") == tmp_path / "rel" / "dir"
    assert mode_of(tmp_path / "rel" / "dir") == 0o700


def test_ensure_private_dir_refuses_the_root() -> None:
    with pytest.raises(ValueError, match="root"):
        ensure_private_dir("/")


@pytest.mark.parametrize("where", ["final", "parent"])
def test_ensure_private_dir_refuses_a_file_in_the_way(tmp_path: Path, where: str) -> None:
    (tmp_path / "file").write_bytes(b"")
    path = tmp_path / "file" if where == "final" else tmp_path / "file" / "sub"
    with pytest.raises(StorageError) as caught:
        ensure_private_dir(path)
    assert caught.value.errno == errno.ENOTDIR
    assert str(tmp_path / "file") in str(caught.value)


def test_open_private_creates_a_0600_file(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "key"
    fd = open_private(path, create=True, exclusive=True)
    try:
        os.write(fd, b"k")
    finally:
        os.close(fd)
    assert mode_of(path) == 0o600
    assert path.read_bytes() == b"k"


# --- open_private, read_private, check_private_file -------------------------------------------------


def test_open_private_without_create_needs_the_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as caught:
        open_private(tmp_path / "missing", create=False)
    assert caught.value.errno == errno.ENOENT
    assert not isinstance(caught.value, UnsafeFileError)


def test_open_private_exclusive_refuses_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    os.close(open_private(path, create=True))
    with pytest.raises(StorageError) as caught:
        open_private(path, create=True, exclusive=True)
    assert caught.value.errno == errno.EEXIST


def test_open_private_create_reopens_an_existing_private_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"kept")
    path.chmod(0o600)
    fd = open_private(path, create=True)
    try:
        assert os.read(fd, 10) == b"kept"
    finally:
        os.close(fd)


def test_exclusive_needs_create(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exclusive"):
        open_private(tmp_path / "x", create=False, exclusive=True)


@pytest.mark.parametrize("loose", [0o640, 0o604, 0o660, 0o606])
def test_loose_files_are_refused_not_tightened(tmp_path: Path, loose: int) -> None:
    path = tmp_path / "key"
    path.write_bytes(SECRET)
    path.chmod(loose)
    for attempt in (
        lambda: open_private(path, create=False),
        lambda: open_private(path, create=True),
        lambda: read_private(path),
        lambda: check_private_file(path),
    ):
        with pytest.raises(UnsafeFileError, match="group or others") as caught:
            attempt()
        assert str(path) in str(caught.value)
        assert "hunter2" not in str(caught.value)
    assert mode_of(path) == loose


def test_read_private_returns_the_content(tmp_path: Path) -> None:
    path = tmp_path / "key"
    atomic_write(path, SECRET)
    assert read_private(path) == SECRET


def test_read_private_enforces_the_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    atomic_write(path, SECRET)
    assert read_private(path, max_bytes=len(SECRET)) == SECRET
    with pytest.raises(StorageError) as caught:
        read_private(path, max_bytes=len(SECRET) - 1)
    assert caught.value.errno == errno.EFBIG
    assert "hunter2" not in str(caught.value)
    atomic_write(path, b"")
    assert read_private(path, max_bytes=0) == b""
    with pytest.raises(ValueError, match="max_bytes"):
        read_private(path, max_bytes=-1)


def test_read_private_reads_through_short_reads(tmp_path: Path) -> None:
    class Trickle(OsFileIO):
        def read(self, fd: int, size: int) -> bytes:
            return super().read(fd, min(size, 3))

    path = tmp_path / "key"
    atomic_write(path, SECRET)
    assert read_private(path, io=Trickle()) == SECRET
    with pytest.raises(StorageError):
        read_private(path, max_bytes=10, io=Trickle())


def test_check_private_file_accepts_ours_and_returns_its_stat(tmp_path: Path) -> None:
    path = tmp_path / "key"
    atomic_write(path, b"k")
    result = check_private_file(path)
    assert result.st_size == 1
    assert result.st_uid == os.geteuid()


def test_check_private_file_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as caught:
        check_private_file(tmp_path / "none")
    assert caught.value.errno == errno.ENOENT


def test_non_regular_files_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    started = time.monotonic()
    for attempt in (
        lambda: open_private(fifo, create=False),
        lambda: read_private(fifo),
        lambda: check_private_file(fifo),
    ):
        with pytest.raises(UnsafeFileError, match="not a regular file"):
            attempt()
    assert time.monotonic() - started < 1  # opening the FIFO did not wait for a writer
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        check_private_file(directory)
    with pytest.raises(StorageError):
        open_private(directory, create=False)


# --- symbolic links ---------------------------------------------------------------------------------


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file an attacker would like us to overwrite or read (think /etc/shadow)."""
    path = tmp_path / "victim"
    path.mkdir()
    target = path / "shadow"
    target.write_bytes(b"victim")
    target.chmod(0o600)
    return target


def test_file_functions_refuse_a_symlink(tmp_path: Path, victim: Path) -> None:
    link = tmp_path / "key"
    link.symlink_to(victim)
    for attempt in (
        lambda: open_private(link, create=False),
        lambda: open_private(link, create=True),
        lambda: read_private(link),
        lambda: check_private_file(link),
    ):
        with pytest.raises(UnsafeFileError, match="symbolic link") as caught:
            attempt()
        assert caught.value.errno == errno.ELOOP
    with pytest.raises(StorageError) as exclusive:
        open_private(link, create=True, exclusive=True)
    assert exclusive.value.errno == errno.EEXIST
    assert victim.read_bytes() == b"victim"


def test_atomic_write_replaces_a_planted_symlink_instead_of_following_it(
    tmp_path: Path, victim: Path
) -> None:
    link = tmp_path / "state"
    link.symlink_to(victim)
    atomic_write(link, b"ours")
    assert victim.read_bytes() == b"victim"
    assert not link.is_symlink()
    assert link.read_bytes() == b"ours"


def test_ensure_private_dir_refuses_a_symlink_as_the_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    elsewhere.chmod(0o755)
    link = tmp_path / "store"
    link.symlink_to(elsewhere)
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        ensure_private_dir(link)
    assert mode_of(elsewhere) == 0o755


def test_ensure_private_dir_refuses_a_parent_symlink_planted_by_another_user(tmp_path: Path) -> None:
    elsewhere = tmp_path / "attacker-controlled"
    elsewhere.mkdir()
    link = tmp_path / "work"
    link.symlink_to(elsewhere)
    if IS_ROOT:  # as another user, the link is not ours either way; as root, give it to the attacker
        os.lchown(link, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeFileError, match="symbolic link") as caught:
        ensure_private_dir(link / "component" / "store")
    assert str(link) in str(caught.value)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.skipif(not IS_ROOT, reason="only root can own a root-owned symlink (CI runs as root)")
def test_ensure_private_dir_follows_a_root_owned_parent_link(tmp_path: Path) -> None:
    """System layout such as /var/run → /run: a link only root could have made is part of the trusted path."""
    real = tmp_path / "data"
    real.mkdir()
    link = tmp_path / "greengrass"
    link.symlink_to(real)
    ensure_private_dir(link / "work" / "store")
    assert mode_of(real / "work" / "store") == 0o700


def test_ensure_private_dir_refuses_a_symlink_planted_while_creating(tmp_path: Path) -> None:
    """The race: the attacker plants a link between our lstat and our mkdir."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    elsewhere.chmod(0o755)

    class Attacker(OsFileIO):
        def mkdir(self, path: StrPath, mode: int) -> None:
            Path(path).symlink_to(elsewhere)
            super().mkdir(path, mode)

    with pytest.raises(UnsafeFileError, match="symbolic link"):
        ensure_private_dir(tmp_path / "new" / "deeper", io=Attacker())
    assert mode_of(elsewhere) == 0o755
    assert list(elsewhere.iterdir()) == []


# --- owners -----------------------------------------------------------------------------------------


@requires_root
def test_files_owned_by_another_user_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "key"
    atomic_write(path, SECRET)
    os.chown(path, OTHER_UID, OTHER_UID)
    for attempt in (
        lambda: open_private(path, create=False),
        lambda: open_private(path, create=True),
        lambda: read_private(path),
        lambda: check_private_file(path),
    ):
        with pytest.raises(UnsafeFileError, match=f"owned by uid {OTHER_UID}") as caught:
            attempt()
        assert caught.value.errno == errno.EPERM
        assert "hunter2" not in str(caught.value)


@requires_root
def test_a_directory_owned_by_another_user_is_refused_and_left_alone(tmp_path: Path) -> None:
    directory = tmp_path / "theirs"
    directory.mkdir()
    directory.chmod(0o755)
    os.chown(directory, OTHER_UID, OTHER_UID)
    with pytest.raises(UnsafeFileError, match=f"owned by uid {OTHER_UID}"):
        ensure_private_dir(directory)
    assert mode_of(directory) == 0o755


@requires_root
def test_a_directory_made_by_another_user_in_a_race_is_refused(tmp_path: Path) -> None:
    class Attacker(OsFileIO):
        def mkdir(self, path: StrPath, mode: int) -> None:
            super().mkdir(path, 0o777)
            os.chown(path, OTHER_UID, OTHER_UID)
            super().mkdir(path, mode)

    with pytest.raises(UnsafeFileError, match="owned by uid"):
        ensure_private_dir(tmp_path / "contested", io=Attacker())


# --- atomic write: the protocol and its failures ----------------------------------------------------


def test_atomic_write_follows_the_durable_sequence(tmp_path: Path) -> None:
    """FS-1: temp in the same directory, fsync it, rename over the target, fsync the directory."""
    target = tmp_path / "state"
    io = FaultyFileIO()
    atomic_write(target, b"data", io=io)
    [(_, temporary)] = [entry for entry in io.operations if entry[0] == "open"]
    assert Path(temporary).parent == tmp_path
    assert Path(temporary).name.startswith(TEMP_PREFIX)
    assert io.operations == [
        ("open", temporary),
        ("fchmod", temporary),
        ("write", temporary),
        ("fsync", temporary),
        ("close", temporary),
        ("replace", str(target)),
        ("fsync_dir", str(tmp_path)),
    ]


STEPS = ["open", "fchmod", "write", "fsync", "close", "replace"]


@pytest.mark.parametrize("existing", [True, False], ids=["replacing", "creating"])
@pytest.mark.parametrize("error", [errno.EIO, errno.ENOSPC, errno.EDQUOT])
@pytest.mark.parametrize("step", STEPS)
def test_a_failure_before_the_rename_keeps_the_old_file(
    tmp_path: Path, step: str, error: int, existing: bool
) -> None:
    target = tmp_path / "state"
    if existing:
        atomic_write(target, b"old")
    io = FaultyFileIO(faults=[Fault(step, error)])  # type: ignore[arg-type]
    with pytest.raises(StorageError) as caught:
        atomic_write(target, SECRET, io=io)
    assert caught.value.errno == error
    assert caught.value.no_space == (error in {errno.ENOSPC, errno.EDQUOT})
    assert isinstance(caught.value.__cause__, OSError)
    assert "hunter2" not in str(caught.value)
    if existing:
        assert target.read_bytes() == b"old"
    else:
        assert not target.exists()
    assert temporaries(tmp_path) == []


def test_a_failed_directory_fsync_is_reported_though_the_new_content_is_in_place(tmp_path: Path) -> None:
    """After the rename there is no going back; the error keeps the caller from acknowledging the write."""
    target = tmp_path / "state"
    atomic_write(target, b"old")
    with pytest.raises(StorageError) as caught:
        atomic_write(target, b"new", io=FaultyFileIO(faults=[Fault("fsync_dir", errno.EIO)]))
    assert caught.value.errno == errno.EIO
    assert str(tmp_path) in str(caught.value)
    assert target.read_bytes() == b"new"
    assert temporaries(tmp_path) == []


@pytest.mark.parametrize("budget", [0, 1, 4095, 4096, 99_999])
def test_running_out_of_space_mid_write_keeps_the_old_file(tmp_path: Path, budget: int) -> None:
    target = tmp_path / "state"
    atomic_write(target, b"old")
    io = FaultyFileIO(enospc_after=budget)
    with pytest.raises(StorageError) as caught:
        atomic_write(target, b"n" * 100_000, io=io)
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.no_space
    assert target.read_bytes() == b"old"
    assert temporaries(tmp_path) == []
    writes = [entry for entry in io.operations if entry[0] == "write"]
    assert len(writes) == (1 if budget == 0 else 2)  # a short write, then ENOSPC


def test_a_write_that_makes_no_progress_is_an_error(tmp_path: Path) -> None:
    class Stuck(OsFileIO):
        def write(self, fd: int, data: Buffer) -> int:
            return 0

    with pytest.raises(StorageError) as caught:
        atomic_write(tmp_path / "state", b"x", io=Stuck())
    assert caught.value.errno == errno.EIO
    assert temporaries(tmp_path) == []


def test_a_temporary_that_cannot_be_removed_is_logged_and_cleared_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="device_agent.files")
    target = tmp_path / "state"
    atomic_write(target, b"old")
    io = FaultyFileIO(faults=[Fault("fsync", errno.EIO), Fault("unlink", errno.EROFS)])
    with pytest.raises(StorageError) as caught:
        atomic_write(target, SECRET, io=io)
    assert caught.value.errno == errno.EIO  # the first error is the one reported
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage() == "files.temporary_not_removed"
    assert warning.__dict__["errno"] == errno.EROFS
    assert len(temporaries(tmp_path)) == 1
    assert remove_stale_temporaries(tmp_path) == 1
    assert temporaries(tmp_path) == []
    assert target.read_bytes() == b"old"
    assert "hunter2" not in caplog.text


@pytest.mark.parametrize("step", [*STEPS, "fsync_dir"])
def test_a_crash_at_any_step_leaves_the_old_or_the_new_content(tmp_path: Path, step: str) -> None:
    target = tmp_path / "state"
    atomic_write(target, b"old")
    io = FaultyFileIO(crash=CrashPoint(step))  # type: ignore[arg-type]
    with pytest.raises(SimulatedCrash):
        atomic_write(target, b"new", io=io)
    assert io.crashed
    assert io.crash_image is not None
    expected = b"new" if step in {"replace", "fsync_dir"} else b"old"
    assert io.crash_image["state"] == expected
    # Nothing ran after the crash: no cleanup, so a temporary may be left until the next start.
    assert target.read_bytes() == expected
    leftovers = [name for name in io.crash_image if name != "state"]
    assert leftovers == temporaries(tmp_path)
    assert remove_stale_temporaries(tmp_path) == len(leftovers)
    assert names(tmp_path) == ["state"]


def test_after_a_crash_every_operation_but_close_crashes(tmp_path: Path) -> None:
    io = FaultyFileIO(crash=CrashPoint("write"))
    fd = io.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    with pytest.raises(SimulatedCrash):
        io.write(fd, b"abc")
    with pytest.raises(SimulatedCrash):
        io.fsync(fd)
    with pytest.raises(SimulatedCrash):
        io.lstat(tmp_path)
    io.close(fd)
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)
    assert io.crash_image == {"f": b"abc"}


def test_a_fault_hits_the_chosen_call_only(tmp_path: Path) -> None:
    io = FaultyFileIO(faults=[Fault("write", errno.EIO, call=2)])
    fd = io.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert io.write(fd, b"a") == 1
        with pytest.raises(OSError, match="Input/output error"):
            io.write(fd, b"b")
        assert io.write(fd, b"c") == 1
    finally:
        io.close(fd)
    assert (tmp_path / "f").read_bytes() == b"ac"


def test_a_failed_close_still_releases_the_descriptor(tmp_path: Path) -> None:
    io = FaultyFileIO(faults=[Fault("close", errno.EIO)])
    fd = io.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    with pytest.raises(OSError, match="Input/output error"):
        io.close(fd)
    with pytest.raises(OSError, match="Bad file descriptor"):
        os.fstat(fd)


def test_the_crash_image_can_watch_another_directory(tmp_path: Path) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    (watched / "a").write_bytes(b"1")
    (watched / "sub").mkdir()
    io = FaultyFileIO(crash=CrashPoint("lstat"), watch=watched)
    with pytest.raises(SimulatedCrash):
        io.lstat(tmp_path)
    assert io.crash_image == {"a": b"1"}


# --- stale temporaries ------------------------------------------------------------------------------


def test_remove_stale_temporaries_touches_only_our_regular_temporaries(tmp_path: Path, victim: Path) -> None:
    (tmp_path / f"{TEMP_PREFIX}abc-state").write_bytes(b"partial")
    (tmp_path / f"{TEMP_PREFIX}dir").mkdir()
    (tmp_path / f"{TEMP_PREFIX}link").symlink_to(victim)
    (tmp_path / "state").write_bytes(b"keep")
    (tmp_path / "tmp-not-ours").write_bytes(b"keep")
    assert remove_stale_temporaries(tmp_path) == 1
    assert names(tmp_path) == sorted(
        [f"{TEMP_PREFIX}dir", f"{TEMP_PREFIX}link", "state", "tmp-not-ours", "victim"]
    )
    assert victim.read_bytes() == b"victim"


@requires_root
def test_remove_stale_temporaries_leaves_another_users_files(tmp_path: Path) -> None:
    foreign = tmp_path / f"{TEMP_PREFIX}foreign"
    foreign.write_bytes(b"")
    os.chown(foreign, OTHER_UID, OTHER_UID)
    assert remove_stale_temporaries(tmp_path) == 0
    assert foreign.exists()


# --- random failure points --------------------------------------------------------------------------

FAULT_STEPS = [*STEPS, "fsync_dir", "unlink"]
plans = st.one_of(
    st.builds(
        Fault,
        st.sampled_from(FAULT_STEPS),
        st.sampled_from([errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EROFS]),
    ),
    st.builds(CrashPoint, st.sampled_from([*STEPS, "fsync_dir"])),
    st.integers(min_value=0, max_value=5000),
)


@settings(max_examples=150, deadline=None)
@given(
    old=st.one_of(st.none(), st.binary(max_size=2000)),
    new=st.binary(max_size=3000),
    plan=plans,
)
def test_any_failure_point_leaves_old_or_new_and_a_typed_error(
    old: bytes | None, new: bytes, plan: Fault | CrashPoint | int
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        target = directory / "state"
        if old is not None:
            atomic_write(target, old)
        if isinstance(plan, Fault):
            io = FaultyFileIO(faults=[plan])
        elif isinstance(plan, CrashPoint):
            io = FaultyFileIO(crash=plan)
        else:
            io = FaultyFileIO(enospc_after=plan)
        outcome: BaseException | None = None
        try:
            atomic_write(target, new, io=io)
        except (StorageError, SimulatedCrash) as error:
            outcome = error

        content = target.read_bytes() if target.exists() else None
        assert content in {old, new}
        if outcome is None:
            assert content == new
            assert temporaries(directory) == []
        elif isinstance(outcome, StorageError):
            assert outcome.errno is not None
            if isinstance(plan, Fault):
                assert outcome.errno == plan.errno_value
            else:
                assert outcome.errno == errno.ENOSPC
            # A temporary stays only when removing it was the thing that failed.
            stray = isinstance(plan, Fault) and plan.operation == "unlink"
            assert len(temporaries(directory)) == (1 if stray else 0)
            if content == new != old:  # only the directory fsync comes after the rename
                assert isinstance(plan, Fault)
                assert plan.operation == "fsync_dir"
        else:
            assert io.crash_image is not None
            assert io.crash_image.get("state") == content
        remove_stale_temporaries(directory)
        assert names(directory) == ([] if content is None else ["state"])


def test_the_default_seam_is_the_real_file_system() -> None:
    assert isinstance(OS_FILE_IO, OsFileIO)
