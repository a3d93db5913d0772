"""The nucleus's modeled IPC errors, as the client's `awsiot.greengrasscoreipc.model` knows them.

A handler raises one of these; the connection sends it as an APPLICATION_ERROR frame with TERMINATE,
`:content-type: application/json` and `service-model-type: aws.greengrass#<Name>`, and a JSON payload that
carries `message` (the field the Python client reads) plus the base-class fields the Java nucleus adds
through Gson (`_service`, `_message`, `_errorCode`). See greengrass-ipc.md §2.7.
"""

from __future__ import annotations

from typing import Any, ClassVar

from device_agent.devkit.errors import DevkitError

SERVICE_NAME = "aws.greengrass#GreengrassCoreIPC"


class IpcError(DevkitError):
    """A modeled error sent to a component over IPC."""

    name: ClassVar[str] = "ServiceError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def shape(self) -> str:
        return f"aws.greengrass#{self.name}"

    def payload(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "_service": SERVICE_NAME,
            "_message": self.message,
            "_errorCode": self.name,
        }


class ServiceError(IpcError):
    name = "ServiceError"


class UnauthorizedError(IpcError):
    name = "UnauthorizedError"


class InvalidArgumentsError(IpcError):
    name = "InvalidArgumentsError"


class ComponentNotFoundError(IpcError):
    name = "ComponentNotFoundError"


class ConflictError(IpcError):
    name = "ConflictError"


class FailedUpdateConditionCheckError(IpcError):
    name = "FailedUpdateConditionCheckError"


class ResourceNotFoundError(IpcError):
    name = "ResourceNotFoundError"

    def __init__(
        self, message: str, *, resource_type: str | None = None, resource_name: str | None = None
    ) -> None:
        super().__init__(message)
        self.resource_type = resource_type
        self.resource_name = resource_name

    def payload(self) -> dict[str, Any]:
        body = super().payload()
        if self.resource_type is not None:
            body["resourceType"] = self.resource_type
        if self.resource_name is not None:
            body["resourceName"] = self.resource_name
        return body


def not_supported(operation: str) -> ServiceError:
    """What the nucleus's DefaultOperationHandler answers for a model operation nothing implements."""
    return ServiceError(f"Operation {operation} is not supported by Greengrass")
