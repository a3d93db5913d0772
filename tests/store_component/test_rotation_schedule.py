"""Rotation by age: a new store starts its clock, an old one rotates, an unreadable record means rotate."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from encrypted_store.component import ROTATION_STATE, STORE_DIRECTORY_ENV, EncryptedStore
from encrypted_store.settings import StoreConfig

from device_agent.files import atomic_write, ensure_private_dir


@pytest.fixture
def component(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EncryptedStore:
    monkeypatch.setenv(STORE_DIRECTORY_ENV, str(tmp_path / "store"))
    ensure_private_dir(tmp_path / "store")
    return EncryptedStore()


def test_a_new_store_starts_the_rotation_clock_instead_of_rotating(component: EncryptedStore):
    config = StoreConfig()
    assert component._rotation_due(config) is False
    assert (component.directory / ROTATION_STATE).exists()
    assert component._rotation_due(config) is False


def test_rotation_is_due_once_the_interval_has_passed(component: EncryptedStore):
    old = time.time() - 91 * 86400
    atomic_write(component.directory / ROTATION_STATE, json.dumps({"rotated": old}).encode())
    assert component._rotation_due(StoreConfig()) is True
    assert component._rotation_due(StoreConfig(rotation_interval_days=0)) is False  # 0: never by age
    component._rotated_now()
    assert component._rotation_due(StoreConfig()) is False


def test_an_unreadable_rotation_record_means_rotate_now(component: EncryptedStore):
    atomic_write(component.directory / ROTATION_STATE, b"not json")
    assert component._rotation_due(StoreConfig()) is True
