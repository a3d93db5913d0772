"""The encrypted local store engine: SQLite (WAL, synchronous=FULL) with every value sealed by AES-256-GCM.

See `engine` for the API and durability contract, `_crypto` for the record format, `_keys` for the key
hierarchy and key file, `_db` for the schema and the SQL seam, `_lifecycle` for open and recovery.
"""

from __future__ import annotations

from device_agent.store._db import Driver, DriverFactory, ErrorKind
from device_agent.store._keys import KekSource, KeyEncryptionKey, KeyFile, SecretKekSource
from device_agent.store._lifecycle import DEFAULT_NAME, KEY_FILE_NAME
from device_agent.store._maintenance import Reencryption
from device_agent.store._model import NamespacePolicy, NamespaceStats, Overflow, StoreEvent, StoreStats
from device_agent.store.engine import Store

__all__ = [
    "DEFAULT_NAME",
    "KEY_FILE_NAME",
    "Driver",
    "DriverFactory",
    "ErrorKind",
    "KekSource",
    "KeyEncryptionKey",
    "KeyFile",
    "NamespacePolicy",
    "NamespaceStats",
    "Overflow",
    "Reencryption",
    "SecretKekSource",
    "Store",
    "StoreEvent",
    "StoreStats",
]
