"""Redaction: identifiers replaced by `hmac-sha256:<hex>` keyed with a fleet salt from configuration.

    redactor = Redactor(salt=b"...", fields=frozenset({"macAddresses", "serial"}))
    facts = redactor.apply(facts)

The verifier, holding the same salt, can still compare a reported value with a manufacturing manifest
(it computes the same HMAC); a log or a topic that carries the report does not reveal the identifier.
A MAC address has only 2^24 values per vendor, so without a salt a plain hash could be reversed by
trying them all: the salt is what makes it a pseudonym. It is not a device secret, but it is never logged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from device_agent.facts.fact import Fact

REDACTABLE = frozenset({"macAddresses", "serial", "hardwareUuid"})
PREFIX = "hmac-sha256:"


@dataclass(frozen=True)
class Redactor:
    salt: bytes = dataclasses.field(repr=False)
    fields: frozenset[str] = frozenset()

    def pseudonym(self, value: str) -> str:
        return PREFIX + hmac.new(self.salt, value.encode("utf-8"), hashlib.sha256).hexdigest()

    def apply(self, facts: Mapping[str, Fact]) -> dict[str, Fact]:
        redacted = dict(facts)
        for name in self.fields & REDACTABLE:
            fact = facts.get(name)
            if fact is None or not fact.is_ok:
                continue
            value: object
            if name == "macAddresses":
                value = [{**item, "mac": self.pseudonym(str(item["mac"]).lower())} for item in fact.value]
            else:
                value = self.pseudonym(str(fact.value))
            redacted[name] = dataclasses.replace(fact, value=value)
        return redacted
