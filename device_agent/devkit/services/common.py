"""Small helpers every IPC service shares: authorization checks and request field access."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any, Protocol, TypeVar

from device_agent.devkit.ipc.errors import InvalidArgumentsError, UnauthorizedError


class Authorizing(Protocol):
    def is_authorized(
        self, *, destination: str, principal: str, operation: str, resource: str | None
    ) -> bool: ...


def authorize(
    authorizer: Authorizing,
    *,
    component: str,
    destination: str,
    operation: str,
    resource: str | None,
    message: str | None = None,
) -> None:
    """Raise UnauthorizedError, worded as the nucleus words it, unless the recipe grants the call."""
    if not authorizer.is_authorized(
        destination=destination, principal=component, operation=operation, resource=resource
    ):
        raise UnauthorizedError(
            message
            or f"Principal {component} is not authorized to perform "
            f"{destination}:{operation} on resource {resource}"
        )


T = TypeVar("T")


async def collect_answers(
    pending: dict[str, dict[str, asyncio.Future[T]]],
    deployment_id: str,
    futures: dict[str, asyncio.Future[T]],
    *,
    timeout: float,
) -> dict[str, T]:
    """Wait up to `timeout` for components to answer a deployment's question; return who answered what.

    The futures are registered under the deployment id while waiting, so the answering operation (a
    validity report, a deferral) can find them; a component that does not answer in time is taken as
    agreeing, as the nucleus does, and its future is cancelled.
    """
    if not futures:
        return {}
    pending[deployment_id] = futures
    try:
        await asyncio.wait(futures.values(), timeout=timeout)
    finally:
        del pending[deployment_id]
    answers = {}
    for component, future in futures.items():
        if future.done() and not future.cancelled():
            answers[component] = future.result()
        else:
            future.cancel()
    return answers


def optional_str(request: dict[str, Any], key: str) -> str | None:
    value = request.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgumentsError(f"{key} must be a string")
    return value


def required_str(request: dict[str, Any], key: str, message: str | None = None) -> str:
    value = optional_str(request, key)
    if not value:
        raise InvalidArgumentsError(message or f"{key} is required")
    return value


def decode_blob(value: object, key: str) -> bytes:
    """Blobs travel as standard base64 strings (greengrass-ipc.md §5.1)."""
    if not isinstance(value, str):
        raise InvalidArgumentsError(f"{key} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgumentsError(f"{key} is not valid base64") from exc


def encode_blob(data: bytes) -> str:
    return base64.b64encode(data).decode()


def key_path(request: dict[str, Any], key: str = "keyPath") -> list[str]:
    value = request.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(part, str) for part in value):
        raise InvalidArgumentsError(f"{key} must be a list of strings")
    return list(value)
