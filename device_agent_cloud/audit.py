"""The audit trail: one record per decision, appended, never changed (schema: audit-record.schema.json).

Who (the verifier's identity), what (the decision, the thing, the report id and facts hash), why (the failed
rules and a reason without private data), when (UTC). A refused report (malformed, hostile, unknown thing)
is a security event and is recorded too, with what could be read of it.

Sinks: `JsonLinesAuditLog`, a local file opened for appending only (0600, one JSON object per line, fsynced
per record), and `DynamoDbAuditLog` for AWS, where each record is a new item written with a condition that
no item with its id exists; the verifier's IAM role holds `dynamodb:PutItem` only, so it cannot rewrite
or delete history.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from device_agent import files
from device_agent.errors import StorageError
from device_agent_cloud.errors import AuditError

SCHEMA: Final = "audit-record/1"

Outcome = Literal["approved", "rejected", "pending", "refused"]


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditRecord:
    record_id: str
    time: dt.datetime
    verifier: str
    decision: Outcome
    thing: str | None
    thing_type: str | None
    rules: str | None  # the rule set applied: a thing type or "default"
    report_id: str | None
    facts_hash: str | None
    decision_id: str | None
    failed_rules: tuple[str, ...]
    reason: str
    demoted: bool
    groups_before: tuple[str, ...]
    groups_after: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "recordId": self.record_id,
            "time": self.time.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "verifier": self.verifier,
            "decision": self.decision,
            "thing": self.thing,
            "thingType": self.thing_type,
            "rules": self.rules,
            "reportId": self.report_id,
            "factsHash": self.facts_hash,
            "decisionId": self.decision_id,
            "failedRules": list(self.failed_rules),
            "reason": self.reason,
            "demoted": self.demoted,
            "groupsBefore": list(self.groups_before),
            "groupsAfter": list(self.groups_after),
        }


class AuditSink(Protocol):
    def append(self, record: AuditRecord) -> None:
        """Append durably or raise `AuditError`: a decision is never acted on without its record."""
        ...


class JsonLinesAuditLog:
    """Append-only JSON lines in a private file (0600; a symbolic link or a shared file is refused)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"JsonLinesAuditLog(path={self.path})"

    def append(self, record: AuditRecord) -> None:
        line = json.dumps(record.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, files.FILE_MODE)
        except OSError as error:
            raise AuditError(f"cannot open the audit log {self.path}: {error.strerror}") from error
        try:
            files.check_private_file(self.path)
            data = line.encode("utf-8")
            # One write call with O_APPEND: concurrent writers never interleave inside a line.
            if os.write(fd, data) != len(data):
                raise AuditError(f"short write to the audit log {self.path}")
            os.fsync(fd)
        except StorageError as error:
            raise AuditError(f"the audit log is not a private file: {error}") from error
        except OSError as error:
            raise AuditError(f"cannot append to the audit log {self.path}: {error.strerror}") from error
        finally:
            os.close(fd)


class DynamoDbAuditLog:
    """One DynamoDB item per record (partition key `recordId`), never overwritten."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self.table = table

    def __repr__(self) -> str:
        return f"DynamoDbAuditLog(table={self.table!r})"

    def append(self, record: AuditRecord) -> None:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415 - the cloud extra only

        document = record.to_json()
        item: dict[str, Any] = {
            "recordId": {"S": record.record_id},
            "time": {"S": document["time"]},
            "decision": {"S": record.decision},
            "record": {"S": json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)},
        }
        if record.thing is not None:
            item["thing"] = {"S": record.thing}  # lets a table index answer "the history of one thing"
        try:
            self._client.put_item(
                TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(recordId)"
            )
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "Unknown")
            raise AuditError(f"put_item to the audit table {self.table} failed: {code}") from error
        except BotoCoreError as error:
            raise AuditError(f"put_item to {self.table} failed: {type(error).__name__}") from error
