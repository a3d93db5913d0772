"""Keys: the key file's safety, KEK sources, rotation and re-encryption, crypto-erase, no key ever leaking."""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from device_agent.errors import IntegrityError, InvalidInputError, NotFoundError, UnsafeFileError
from device_agent.fileio import OsFileIO, StrPath
from device_agent.store import KeyFile, SecretKekSource, Store, StoreEvent, _crypto, _records
from device_agent.store._db import Sqlite3Driver
from device_agent.store._keys import KEY_FILE_BYTES, KEY_FILE_MAGIC, KeyEncryptionKey
from device_agent.store._salvage import Salvaged, SalvageReport, salvage
from tests.store.conftest import raw_db, secret_kek

IS_ROOT = os.geteuid() == 0
requires_root = pytest.mark.skipif(not IS_ROOT, reason="giving a file to another owner needs root")


def key_material(path: Path) -> bytes:
    return path.read_bytes()[len(KEY_FILE_MAGIC) : len(KEY_FILE_MAGIC) + 32]


def data_keys(db: Path, kek_material: bytes) -> dict[int, bytes]:
    """Every data key of a closed store, unwrapped by hand: what an attacker with the KEK would get."""
    with raw_db(db) as connection:
        (store_id,) = connection.execute("SELECT value FROM meta WHERE name = 'store_id'").fetchone()
        rows = connection.execute("SELECT key_id, namespace, wrapped FROM data_keys").fetchall()
    kek = AESGCM(kek_material)
    return {
        key_id: _crypto.open_sealed(kek, wrapped, _crypto.data_key_aad(store_id, namespace, key_id))
        for key_id, namespace, wrapped in rows
    }


# ---- the key file -----------------------------------------------------------------------------------


def test_key_file_is_created_exclusively_and_privately(tmp_path):
    old = os.umask(0)
    try:
        key = KeyFile(tmp_path / "k")
        kek = key.load()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600
    assert len((tmp_path / "k").read_bytes()) == KEY_FILE_BYTES
    assert repr(kek) == "KeyEncryptionKey(<redacted>)"
    assert key_material(tmp_path / "k") != bytes(32)
    second = KeyFile(tmp_path / "k").load()  # the same key, not a new one
    check = kek.check_value(b"s" * 16)
    assert second.matches(check, b"s" * 16)


def test_key_file_with_loose_mode_is_refused(tmp_path):
    KeyFile(tmp_path / "k").load()
    (tmp_path / "k").chmod(0o640)
    with pytest.raises(UnsafeFileError):
        KeyFile(tmp_path / "k").load()


def test_key_file_symlink_is_refused_and_not_followed(tmp_path):
    target = tmp_path / "passwd"
    target.write_bytes(b"root:x:0:0")
    (tmp_path / "k").symlink_to(target)
    with pytest.raises(UnsafeFileError):
        KeyFile(tmp_path / "k").load()
    assert target.read_bytes() == b"root:x:0:0"
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UnsafeFileError):
        KeyFile(tmp_path / "dangling").load()
    assert not (tmp_path / "nowhere").exists()


@requires_root
def test_key_file_of_another_owner_is_refused(tmp_path):
    KeyFile(tmp_path / "k").load()
    os.chown(tmp_path / "k", 65534, 65534)
    with pytest.raises(UnsafeFileError):
        KeyFile(tmp_path / "k").load()


class ForeignOwnerIO(OsFileIO):
    """The real file system, except that every file's owner reads as another user: the owner check, as any
    user can run it (giving a file away needs root)."""

    OTHER_UID = os.geteuid() + 1

    def _foreign(self, st: os.stat_result) -> os.stat_result:
        fields = list(st[:10])
        fields[stat.ST_UID] = self.OTHER_UID
        return os.stat_result(fields)

    def fstat(self, fd: int) -> os.stat_result:
        return self._foreign(super().fstat(fd))

    def stat(self, path: StrPath) -> os.stat_result:
        return self._foreign(super().stat(path))

    def lstat(self, path: StrPath) -> os.stat_result:
        return self._foreign(super().lstat(path))


def test_key_file_of_another_owner_is_refused_through_the_file_seam(tmp_path, store_dir):
    KeyFile(tmp_path / "k").load()
    with pytest.raises(UnsafeFileError, match=f"owned by uid {ForeignOwnerIO.OTHER_UID}") as refused:
        KeyFile(tmp_path / "k", io=ForeignOwnerIO()).load()
    assert refused.value.errno == errno.EPERM
    with pytest.raises(UnsafeFileError):  # nor is a key another user owns destroyed in its place
        KeyFile(tmp_path / "k", io=ForeignOwnerIO()).destroy()
    KeyFile(tmp_path / "k").load()  # refused, not replaced: the file is still there and valid
    # A store given such a key file refuses to open rather than set it aside and make its own.
    with pytest.raises(UnsafeFileError):
        Store.open(store_dir, kek=KeyFile(tmp_path / "k", io=ForeignOwnerIO()))
    assert (tmp_path / "k").exists()
    assert not list(tmp_path.glob("k.corrupt-*"))


def test_store_refuses_an_unsafe_key_file_instead_of_replacing_it(open_store, store_dir):
    open_store().close()
    (store_dir / "store.key").chmod(0o644)
    with pytest.raises(UnsafeFileError):
        open_store()


def test_malformed_key_file_is_set_aside_and_the_store_replaced(open_store, store_dir):
    store = open_store()
    store.put("ns", "k", b"v")
    store.close()
    (store_dir / "store.key").write_bytes(b"DAKEK\x01" + bytes(36))  # check bytes wrong
    events: list[StoreEvent] = []
    store = open_store(on_event=events.append)
    assert [e.name for e in events] == ["store.key_replaced", "store.corrupt_replaced"]
    assert events[1].details["reason"] == "the key-encryption key does not open this store"
    with pytest.raises(NotFoundError):
        store.get("ns", "k")
    names = sorted(p.name for p in store_dir.iterdir())
    assert any(n.startswith("store.key.corrupt-") for n in names)
    assert any(n.startswith("store.db.corrupt-") for n in names)


def test_missing_key_file_never_opens_old_data(open_store, store_dir):
    store = open_store()
    store.put("ns", "k", b"v")
    store.close()
    (store_dir / "store.key").unlink()
    store = open_store()
    assert store.keys("ns") == []
    assert store.stats().recoveries == 1


def test_secret_kek_source(open_store, tmp_path):
    store = open_store(kek=SecretKekSource(lambda: "a-string-secret-of-enough-length"))
    store.put("ns", "k", b"v")
    store.close()
    assert open_store(kek=SecretKekSource(lambda: "a-string-secret-of-enough-length")).get("ns", "k") == b"v"
    with pytest.raises(InvalidInputError):
        SecretKekSource(lambda: b"short").load()
    assert "secret" not in repr(SecretKekSource(lambda: "a-string-secret-of-enough-length")).lower().replace(
        "secretkeksource", ""
    )


# ---- rotation -----------------------------------------------------------------------------------------


def fill(store: Store, count: int = 60) -> dict[tuple[str, str], bytes]:
    expected = {}
    for i in range(count):
        namespace = ("a", "b", "c")[i % 3]
        value = os.urandom(20)
        store.put(namespace, f"k{i}", value)
        expected[namespace, f"k{i}"] = value
    return expected


def assert_all_readable(store: Store, expected: dict[tuple[str, str], bytes]) -> None:
    for (namespace, key), value in expected.items():
        assert store.get(namespace, key) == value


def test_rotation_is_incremental_and_resumable_across_reopen(open_store):
    store = open_store()
    expected = fill(store)
    seqs = store.append_many("q", [b"q1", b"q2"])
    old = store.stats().active_key_ids
    new = store.rotate()
    assert set(new) == {"a", "b", "c", "q"}
    assert all(new[ns] > old[ns] for ns in old)
    assert store.pending_reencryption() == 62
    store.put("a", "fresh", b"sealed under the new key")
    step = store.reencrypt(batch_size=10)
    assert (step.records, step.complete, step.retired_key_ids) == (10, False, ())
    assert_all_readable(store, expected)
    store.close()  # interrupted between batches

    store = open_store()
    assert store.pending_reencryption() == 52
    assert_all_readable(store, expected)
    assert store.reencrypt_all(batch_size=7) == 52
    assert store.pending_reencryption() == 0
    assert_all_readable(store, expected)
    assert store.read_batch("q") == [(seqs[0], b"q1"), (seqs[1], b"q2")]
    assert store.reencrypt_all() == 0  # idempotent
    with raw_db(store.path) as connection:
        key_ids = {row[0] for row in connection.execute("SELECT key_id FROM data_keys")}
    assert key_ids == set(new.values())  # old keys retired once nothing used them


def test_rotation_interrupted_inside_a_batch_loses_nothing(open_store, monkeypatch):
    store = open_store()
    expected = fill(store, 30)
    store.rotate()
    calls = 0
    real = _records.seal_row

    def failing(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 5:
            raise OSError("simulated failure in the middle of a batch")
        return real(*args, **kwargs)

    monkeypatch.setattr(_records, "seal_row", failing)
    with pytest.raises(OSError, match="simulated"):
        store.reencrypt(batch_size=10)
    assert store.pending_reencryption() == 30  # the whole batch rolled back
    assert_all_readable(store, expected)
    monkeypatch.setattr(_records, "seal_row", real)
    assert store.reencrypt_all(batch_size=10) == 30
    assert_all_readable(store, expected)
    store.close()
    assert_all_readable(open_store(), expected)


def test_old_key_kept_while_any_record_uses_it(open_store):
    store = open_store()
    fill(store, 9)
    first = store.stats().active_key_ids["a"]
    store.rotate("a")
    store.reencrypt(batch_size=2)
    count = "SELECT count(*) FROM data_keys WHERE key_id = ?"
    with raw_db(store.path) as connection:
        assert connection.execute(count, (first,)).fetchone() == (1,)
    store.reencrypt_all()
    with raw_db(store.path) as connection:
        assert connection.execute(count, (first,)).fetchone() == (0,)


def test_seal_limit_rotates_automatically(open_store):
    store = open_store(seal_limit=100)
    for i in range(250):
        store.append("q", b"%d" % i)
    assert store.stats().active_key_ids["q"] >= 3
    assert len(store.read_batch("q", max_records=1000)) == 250
    store.close()
    store = open_store(seal_limit=100)  # counts survive a restart
    first = store.stats().active_key_ids["q"]
    for _ in range(60):
        store.append("q", b"x")
    assert store.stats().active_key_ids["q"] == first + 1


# ---- crypto-erase ---------------------------------------------------------------------------------------


def test_erase_namespace_destroys_its_keys_and_leaves_no_trace(open_store, store_dir):
    store = open_store()
    expected = fill(store, 30)
    store.close()
    kek = key_material(store_dir / "store.key")
    keys_before = data_keys(store_dir / "store.db", kek)
    with raw_db(store_dir / "store.db") as connection:
        doomed = connection.execute("SELECT wrapped FROM data_keys WHERE namespace = 'b'").fetchall()
        doomed += connection.execute("SELECT sealed FROM records WHERE namespace = 'b'").fetchall()
    store = open_store()
    store.erase_namespace("b")
    assert store.keys("b") == []
    with pytest.raises(NotFoundError):
        store.get("b", "k1")
    assert_all_readable(store, {k: v for k, v in expected.items() if k[0] != "b"})
    store.close()
    content = b"".join(p.read_bytes() for p in store_dir.iterdir() if p.name.startswith("store.db"))
    for (blob,) in doomed:
        assert blob not in content  # secure_delete zeroed them and the WAL was truncated
    remaining = data_keys(store_dir / "store.db", kek)
    assert set(keys_before) - set(remaining)
    for material in set(keys_before.values()) - set(remaining.values()):
        assert material not in content


def salvage_every_copy(directory: Path, kek: KeyEncryptionKey) -> list[Salvaged]:
    """What salvage gets, with the store's KEK, from every set-aside copy left in `directory`."""
    found: list[Salvaged] = []
    for copy in sorted(directory.glob("store.db.corrupt-*")):
        if not copy.name.endswith(("-wal", "-shm")):
            found += salvage(copy, kek, Sqlite3Driver, 0.0, SalvageReport())
    return found


def test_erase_namespace_destroys_the_copies_recovery_set_aside(open_store, store_dir):
    """A copy moved aside by recovery holds the namespace's keys wrapped under the same KEK: before the
    fix, salvage of that copy still gave the erased namespace's records."""
    store = open_store()
    store.put("a", "k", b"kept in a")
    store.put("b", "k", b"secret of b")
    store.close()
    with raw_db(store_dir / "store.db") as connection:
        connection.execute("PRAGMA user_version=1")  # an unsupported format: the next open recovers
    events: list[StoreEvent] = []
    store = open_store(on_event=events.append)
    assert [e.name for e in events] == ["store.corrupt_replaced"]
    kek = KeyFile(store_dir / "store.key").load()
    assert {item.value for item in salvage_every_copy(store_dir, kek)} == {b"kept in a", b"secret of b"}
    copies = sorted(p.name for p in store_dir.iterdir() if ".corrupt-" in p.name)
    assert copies
    sizes = {name: (store_dir / name).stat().st_size for name in copies}
    zeroed: list[bytes] = []
    real_unlink = OsFileIO.unlink

    def spy_unlink(io: OsFileIO, path: StrPath) -> None:
        if ".corrupt-" in str(path):
            zeroed.append(Path(path).read_bytes())
        real_unlink(io, path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(OsFileIO, "unlink", spy_unlink)
        assert store.erase_namespace("b") == 1
    assert [e.name for e in events[1:]] == ["store.corrupt_copies_destroyed"]
    assert events[-1].details == {"namespace": "b", "copies": 1}
    assert not [p for p in store_dir.iterdir() if ".corrupt-" in p.name]
    assert salvage_every_copy(store_dir, kek) == []
    # Each file was overwritten with zeros, whole, before it was unlinked.
    assert sorted(len(content) for content in zeroed) == sorted(sizes.values())
    assert all(content == bytes(len(content)) for content in zeroed)
    assert store.get("a", "k") == b"kept in a"
    store.close()
    everything = b"".join(p.read_bytes() for p in store_dir.iterdir())
    assert b"secret of b" not in everything


def test_erase_namespace_without_set_aside_copies_reports_none(open_store):
    events: list[StoreEvent] = []
    store = open_store(on_event=events.append)
    store.put("b", "k", b"v")
    assert store.erase_namespace("b") == 0
    assert events == []


def test_erase_namespace_unlinks_a_planted_link_without_following_it(open_store, store_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(b"not the store's")
    store = open_store()
    (store_dir / "store.db.corrupt-20260101T000000.000000Z").symlink_to(outside)
    assert store.erase_namespace("b") == 1
    assert outside.read_bytes() == b"not the store's"
    assert not [p for p in store_dir.iterdir() if ".corrupt-" in p.name]


def test_erase_all_removes_keys_and_files_and_nothing_opens_a_copy(open_store, store_dir, tmp_path):
    store = open_store()
    fill(store, 12)
    store.close()
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir(mode=0o700)
    (copy_dir / "store.db").write_bytes((store_dir / "store.db").read_bytes())
    (copy_dir / "store.db").chmod(0o600)
    key_file = store_dir / "store.key"
    store = open_store()
    store.erase_all()
    assert store.closed
    assert list(store_dir.iterdir()) == []
    # The old data, even kept elsewhere, opens with no key this process can still reach.
    events: list[StoreEvent] = []
    with Store.open(copy_dir, kek=KeyFile(key_file), on_event=events.append) as copy:
        assert copy.keys("a") == []
    assert events[0].name == "store.corrupt_replaced"
    assert events[0].details["salvaged"] == 0
    fresh = open_store()
    assert fresh.keys("a") == []


def test_erase_all_with_an_external_kek_still_destroys_every_data_key(open_store, store_dir, caplog):
    store = open_store(kek=secret_kek())
    fill(store, 6)
    with caplog.at_level(logging.WARNING):
        store.erase_all()
    assert "store.kek_not_destroyed" in caplog.messages
    assert list(store_dir.iterdir()) == []


# ---- no key in any log, repr or exception (CR-8) ------------------------------------------------------


def encodings(secret: bytes) -> list[str]:
    return [
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode(),
        base64.b64encode(secret).decode().rstrip("="),
        hashlib.sha256(secret).hexdigest(),
        repr(secret),
    ]


def test_keys_never_appear_in_logs_reprs_or_errors(open_store, store_dir, caplog, capsys):
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        store = open_store()
        expected = fill(store, 9)
        store.append_many("q", [b"1", b"2"])
        store.rotate()
        store.reencrypt_all()
        texts += [repr(store), repr(store.stats()), repr(store._keyring)]
        texts.append(repr(KeyFile(store_dir / "store.key")))
        store.close()
        kek = key_material(store_dir / "store.key")
        secrets = [kek, *data_keys(store_dir / "store.db", kek).values()]
        with raw_db(store_dir / "store.db") as connection:
            # Byte 21 (in the header's time) changed for sure: set to 0, or to 1 where it was 0 already.
            connection.execute(
                "UPDATE records SET sealed = CAST(substr(sealed, 1, 20)"
                " || CASE WHEN substr(sealed, 21, 1) = x'00' THEN x'01' ELSE x'00' END"
                " || substr(sealed, 22) AS BLOB)"
            )
        store = open_store()
        for namespace, key in expected:
            with pytest.raises(IntegrityError) as failure:
                store.get(namespace, key)
            error: BaseException | None = failure.value
            while error is not None:
                texts += [str(error), repr(error), repr(error.args)]
                error = error.__cause__ or error.__context__
        store.read_batch("q")
        store.erase_all()
    captured = capsys.readouterr()
    texts += [captured.out, captured.err, caplog.text]
    texts += [repr(record.__dict__) for record in caplog.records]
    haystack = "\n".join(texts)
    assert "store.integrity_failed" in caplog.messages
    for secret in secrets:
        for form in encodings(secret):
            assert form not in haystack
