"""Translate the SDK's IPC errors into the library's tree (`device_agent.errors`), with the cause chained.

    UnauthorizedError                                      → NotAuthorizedError
    InvalidArgumentsError, ConflictError,
    FailedUpdateConditionCheckError                        → InvalidInputError
    ResourceNotFoundError, ComponentNotFoundError          → NotFoundError
    ServiceError "... is not supported by Greengrass"      → OperationNotSupportedError (an UnavailableError)
    ServiceError, StreamClosedError, ConnectionClosedError,
    AccessDeniedError, socket and protocol failures        → UnavailableError
    ... when the connection dropped under the call         → ConnectionLostError

Messages carry the operation name and the nucleus's own `message` for modeled errors (the nucleus never
puts the token there); the text of any other SDK error is left to the chained cause, because SDK errors
may embed request or response payloads (a secret, a configuration value).
"""

from __future__ import annotations

from device_agent.errors import (
    ConnectionLostError,
    DeviceAgentError,
    InvalidInputError,
    NotAuthorizedError,
    NotFoundError,
    OperationNotSupportedError,
    UnavailableError,
)

__all__ = ["OperationNotSupportedError", "translate"]

MAX_MESSAGE_CHARS = 300
# What the SDK raises when a stream or the whole connection ends under a call.
CLOSED_ERRORS = frozenset({"StreamClosedError", "ConnectionClosedError", "EventStreamError"})


_BY_MODELED_NAME: dict[str, type[DeviceAgentError]] = {
    "UnauthorizedError": NotAuthorizedError,
    "InvalidArgumentsError": InvalidInputError,
    "ConflictError": InvalidInputError,
    "FailedUpdateConditionCheckError": InvalidInputError,
    "InvalidArtifactsDirectoryPathError": InvalidInputError,
    "InvalidRecipeDirectoryPathError": InvalidInputError,
    "ResourceNotFoundError": NotFoundError,
    "ComponentNotFoundError": NotFoundError,
    "ServiceError": UnavailableError,
    "InvalidTokenError": UnavailableError,
}


def translate(error: BaseException, operation: str, *, connection_lost: bool = False) -> DeviceAgentError:
    """The library error for `error`, raised by `operation`; the caller raises it `from error`."""
    if isinstance(error, DeviceAgentError):
        return error
    name = type(error).__name__
    modeled = _modeled_message(error)
    family = _BY_MODELED_NAME.get(name) if modeled is not None or _is_modeled(error) else None
    if family is not None:
        text = f"{operation}: {modeled or name}"
        if family is UnavailableError and modeled is not None and "not supported" in modeled.lower():
            return OperationNotSupportedError(operation, f"{operation} is not supported by this nucleus")
        return family(text)
    if name in CLOSED_ERRORS:
        if connection_lost:
            return ConnectionLostError(f"{operation}: the IPC connection closed during the call")
        return UnavailableError(f"{operation}: the nucleus closed the stream without an answer")
    if name == "AccessDeniedError":
        return UnavailableError(f"{operation}: the nucleus refused the IPC connection")
    return UnavailableError(f"{operation}: IPC failure ({name})")


def _is_modeled(error: BaseException) -> bool:
    # Modeled errors are SDK shapes: they have `_get_error_type_string`; plain RuntimeErrors do not.
    return hasattr(error, "_get_error_type_string")


def _modeled_message(error: BaseException) -> str | None:
    if not _is_modeled(error):
        return None
    message = getattr(error, "message", None)
    if not isinstance(message, str) or not message:
        return None
    return message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS] + "…"
