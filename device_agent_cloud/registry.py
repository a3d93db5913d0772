"""The registry the verifier consults and changes: what a thing is, which certificates it holds, its groups.

`Registry` is the protocol; `AwsIotRegistry` implements it over boto3's `iot` client, `LocalRegistry` over a
JSON file for the virtual fleet (no AWS). A certificate counts only when it is ACTIVE, and it is known by
the SHA-256 of its DER encoding, computed here from the PEM rather than trusted from an id.

The local file (0600, replaced atomically, locked with flock across processes):

    {"schema": "local-registry/1", "thingTypes": ["kiosk"], "groups": ["device-agent-quarantine"],
     "things": {"kiosk-1": {"thingType": "kiosk", "certificates": ["<sha256 hex>"], "groups": [...]}}}
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from device_agent import files
from device_agent.errors import StorageError
from device_agent_cloud.errors import RegistryError, ThingNotFoundError

LOCAL_SCHEMA: Final = "local-registry/1"
FINGERPRINT = re.compile(r"[0-9a-f]{64}")
THING_NAME = re.compile(r"[A-Za-z0-9:_-]{1,128}")
NAME = re.compile(r"[A-Za-z0-9:_-]{1,128}")  # thing types and thing groups


@dataclass(frozen=True, kw_only=True, slots=True)
class ThingRecord:
    name: str
    thing_type: str | None
    certificate_fingerprints: frozenset[str]  # active certificates only, lowercase hex SHA-256 of the DER
    groups: frozenset[str]


class Registry(Protocol):
    def describe(self, thing: str) -> ThingRecord:
        """The thing's record; `ThingNotFoundError` if the registry has no such thing."""
        ...

    def add_to_group(self, thing: str, group: str) -> None: ...

    def remove_from_group(self, thing: str, group: str) -> None: ...


def certificate_fingerprint(pem: str | bytes) -> str:
    """SHA-256 of a PEM certificate's DER encoding, lowercase hex (AWS IoT's certificate id)."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError as error:
        raise RegistryError("a certificate is not valid PEM") from error
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


class AwsIotRegistry:
    """The AWS IoT registry through a boto3 `iot` client (the caller creates it: region, credentials)."""

    def __init__(self, client: Any) -> None:
        self._iot = client

    def __repr__(self) -> str:
        return "AwsIotRegistry()"

    def describe(self, thing: str) -> ThingRecord:
        with self._errors("describe_thing", thing):
            described = self._iot.describe_thing(thingName=thing)
        with self._errors("list_thing_principals", thing):
            principals = [
                principal
                for page in self._iot.get_paginator("list_thing_principals").paginate(thingName=thing)
                for principal in page.get("principals", [])
            ]
        fingerprints = set()
        for principal in principals:
            if ":cert/" not in principal:
                continue  # a Cognito identity, not a certificate
            certificate_id = principal.rsplit("/", 1)[1]
            with self._errors("describe_certificate", thing):
                description = self._iot.describe_certificate(certificateId=certificate_id)
            body = description["certificateDescription"]
            if body.get("status") == "ACTIVE":
                fingerprints.add(certificate_fingerprint(body["certificatePem"]))
        with self._errors("list_thing_groups_for_thing", thing):
            groups = {
                group["groupName"]
                for page in self._iot.get_paginator("list_thing_groups_for_thing").paginate(thingName=thing)
                for group in page.get("thingGroups", [])
            }
        return ThingRecord(
            name=thing,
            thing_type=described.get("thingTypeName"),
            certificate_fingerprints=frozenset(fingerprints),
            groups=frozenset(groups),
        )

    def add_to_group(self, thing: str, group: str) -> None:
        with self._errors("add_thing_to_thing_group", thing):
            self._iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing)

    def remove_from_group(self, thing: str, group: str) -> None:
        with self._errors("remove_thing_from_thing_group", thing):
            self._iot.remove_thing_from_thing_group(thingGroupName=group, thingName=thing)

    @contextlib.contextmanager
    def _errors(self, operation: str, thing: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - the cloud extra only

        try:
            yield
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "Unknown")
            if code == "ResourceNotFoundException":
                raise ThingNotFoundError(f"{operation}: no thing {thing!r} in AWS IoT") from error
            raise RegistryError(f"{operation} for {thing!r} failed: {code}") from error
        except BotoCoreError as error:
            raise RegistryError(f"{operation} for {thing!r} failed: {type(error).__name__}") from error


class LocalRegistry:
    """A JSON file registry for the virtual fleet; every change is one locked read-modify-replace."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalRegistry(path={self.path})"

    # -- Registry -------------------------------------------------------------------------------------------

    def describe(self, thing: str) -> ThingRecord:
        with self._locked():
            document = self._read()
        entry = document["things"].get(thing)
        if entry is None:
            raise ThingNotFoundError(f"no thing {thing!r} in the local registry")
        return ThingRecord(
            name=thing,
            thing_type=entry["thingType"],
            certificate_fingerprints=frozenset(entry["certificates"]),
            groups=frozenset(entry["groups"]),
        )

    def add_to_group(self, thing: str, group: str) -> None:
        with self._change() as document:
            if group not in document["groups"]:
                raise RegistryError(f"no thing group {group!r} in the local registry")
            groups = self._thing(document, thing)["groups"]
            if group not in groups:
                groups.append(group)
                groups.sort()

    def remove_from_group(self, thing: str, group: str) -> None:
        with self._change() as document:
            groups = self._thing(document, thing)["groups"]
            if group in groups:
                groups.remove(group)

    # -- provisioning -------------------------------------------------------------------------------------

    def create_thing_type(self, name: str) -> None:
        _check_name(name, "thing type")
        with self._change() as document:
            if name not in document["thingTypes"]:
                document["thingTypes"] = sorted([*document["thingTypes"], name])

    def create_group(self, name: str) -> None:
        _check_name(name, "thing group")
        with self._change() as document:
            if name not in document["groups"]:
                document["groups"] = sorted([*document["groups"], name])

    def create_thing(self, name: str, thing_type: str | None) -> None:
        """Create the thing; an existing thing of the same type is kept, of another type is an error."""
        if not THING_NAME.fullmatch(name):
            raise RegistryError(f"invalid thing name {name!r}")
        with self._change() as document:
            if thing_type is not None and thing_type not in document["thingTypes"]:
                raise RegistryError(f"no thing type {thing_type!r} in the local registry")
            existing = document["things"].get(name)
            if existing is None:
                document["things"][name] = {"thingType": thing_type, "certificates": [], "groups": []}
            elif existing["thingType"] != thing_type:
                raise RegistryError(f"thing {name!r} exists with another thing type")

    def attach_certificate(self, thing: str, fingerprint: str) -> None:
        if not FINGERPRINT.fullmatch(fingerprint):
            raise RegistryError("a certificate fingerprint is 64 lowercase hex digits")
        with self._change() as document:
            certificates = self._thing(document, thing)["certificates"]
            if fingerprint not in certificates:
                certificates.append(fingerprint)

    def detach_certificate(self, thing: str, fingerprint: str) -> None:
        with self._change() as document:
            certificates = self._thing(document, thing)["certificates"]
            if fingerprint in certificates:
                certificates.remove(fingerprint)

    # -- file -----------------------------------------------------------------------------------------------

    @staticmethod
    def _thing(document: dict[str, Any], thing: str) -> dict[str, Any]:
        entry: dict[str, Any] | None = document["things"].get(thing)
        if entry is None:
            raise ThingNotFoundError(f"no thing {thing!r} in the local registry")
        return entry

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.path.with_name(self.path.name + ".lock")
        with self._lock:
            try:
                fd = files.open_private(lock_path, create=True)
            except StorageError as error:
                raise RegistryError(f"cannot lock the local registry: {error}") from error
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the flock

    @contextlib.contextmanager
    def _change(self) -> Iterator[dict[str, Any]]:
        with self._locked():
            document = self._read()
            yield document
            data = json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"
            try:
                files.atomic_write(self.path, data)
            except StorageError as error:
                raise RegistryError(f"cannot write the local registry: {error}") from error

    def _read(self) -> dict[str, Any]:
        try:
            data = files.read_private(self.path, max_bytes=64 << 20)
        except StorageError as error:
            if error.errno == errno.ENOENT:  # a registry starts empty
                return {"schema": LOCAL_SCHEMA, "thingTypes": [], "groups": [], "things": {}}
            raise RegistryError(f"cannot read the local registry: {error}") from error
        try:
            document = json.loads(data)
        except ValueError as error:
            raise RegistryError(f"the local registry {self.path} is not valid JSON") from error
        _check_document(document, self.path)
        return document  # type: ignore[no-any-return]


def _check_name(name: str, what: str) -> None:
    if not NAME.fullmatch(name):
        raise RegistryError(f"invalid {what} name {name!r}")


def _check_document(document: Any, path: Path) -> None:
    ok = (
        isinstance(document, dict)
        and document.get("schema") == LOCAL_SCHEMA
        and isinstance(document.get("thingTypes"), list)
        and isinstance(document.get("groups"), list)
        and isinstance(document.get("things"), dict)
        and all(
            isinstance(entry, dict)
            and (entry.get("thingType") is None or isinstance(entry.get("thingType"), str))
            and isinstance(entry.get("certificates"), list)
            and isinstance(entry.get("groups"), list)
            for entry in document["things"].values()
        )
    )
    if not ok:
        raise RegistryError(f"the local registry {path} does not follow {LOCAL_SCHEMA}")
