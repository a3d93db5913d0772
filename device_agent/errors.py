"""The exception tree of the on-device library. Families are chosen by what the caller can do about them.

    DeviceAgentError                      catch-all root
    ├── NotAuthorizedError                the nucleus refused: the recipe does not grant it (fix the recipe)
    ├── InvalidInputError                 the request or document is wrong (fix the input; never retry)
    │   └── ConfigurationError            an invalid configuration value (a ValueError); `.key_path` names it
    ├── NotFoundError                     the thing asked for does not exist
    ├── UnavailableError                  a peer is not reachable now (retry later, with backoff)
    │   ├── ConnectionLostError           the IPC connection closed under a call
    │   └── OperationNotSupportedError    the nucleus lacks the operation (fall back; waiting won't help)
    ├── TimedOutError (also TimeoutError) no answer in time (retry, or give up)
    ├── StorageError (also OSError)       durable file I/O failed: ENOSPC, fsync, permissions
    │   ├── UnsafeFileError               a path is a symlink, has the wrong owner or loose permissions
    │   └── QuotaExceededError            a namespace's quota refuses new records (make room, or raise it)
    └── IntegrityError                    data failed an integrity check: never trust it

Foreign errors (the SDK's, the OS's) are translated at the boundary with the cause chained, and no message
carries a token, key or private value: messages name keys, paths and operations, never values that could be
secret.
"""

from __future__ import annotations

import errno


class DeviceAgentError(Exception):
    """Root of every error the library raises on purpose."""


class NotAuthorizedError(DeviceAgentError):
    pass


class InvalidInputError(DeviceAgentError):
    pass


class ConfigurationError(InvalidInputError, ValueError):
    """An invalid configuration value. `key_path` is the path from the configuration root, e.g. ("a", "b")."""

    def __init__(self, key_path: tuple[str | int, ...], expected: str) -> None:
        self.key_path = key_path
        self.expected = expected
        super().__init__(f"{format_key_path(key_path)}: {expected}")


class NotFoundError(DeviceAgentError):
    pass


class UnavailableError(DeviceAgentError):
    pass


class ConnectionLostError(UnavailableError):
    pass


class OperationNotSupportedError(UnavailableError):
    """The nucleus does not provide this operation (e.g. no `aws.greengrass.Cli` or SecretManager deployed).

    Callers that can do without it should fall back rather than retry: it will not appear by waiting.
    """

    def __init__(self, operation: str, message: str) -> None:
        self.operation = operation
        super().__init__(message)


class TimedOutError(DeviceAgentError, TimeoutError):
    pass


class StorageError(DeviceAgentError, OSError):
    """A durable file operation failed. `errno` is kept when the OS gave one (e.g. ENOSPC)."""

    def __init__(self, message: str, *, errno_value: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno_value

    @property
    def no_space(self) -> bool:
        return self.errno in (errno.ENOSPC, errno.EDQUOT)


class UnsafeFileError(StorageError):
    pass


class QuotaExceededError(StorageError):
    """A store namespace is full and its overflow policy is to reject new records."""

    def __init__(self, message: str) -> None:
        super().__init__(message, errno_value=errno.EDQUOT)


class IntegrityError(DeviceAgentError):
    pass


def format_key_path(key_path: tuple[str | int, ...]) -> str:
    """`("a", 0, "b")` → `a[0].b`; the root is `<root>`."""
    if not key_path:
        return "<root>"
    text = ""
    for part in key_path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
