"""The operation table must match the installed SDK's model exactly, or the client rejects our frames."""

from __future__ import annotations

import inspect
from typing import Any

from awsiot.greengrasscoreipc import model

from device_agent.devkit.ipc.operations import OPERATIONS


def sdk_operations() -> dict[str, tuple[str, str | None]]:
    found = {}
    for name, cls in vars(model).items():
        if (
            name.startswith("_")
            and name.endswith("Operation")
            and inspect.isclass(cls)
            and hasattr(cls, "_model_name")
        ):
            operation: Any = cls
            stream = operation._response_stream_type()
            found[operation._model_name()] = (
                operation._response_type()._model_name(),
                stream._model_name() if stream else None,
            )
    return found


def test_every_sdk_operation_is_in_the_table_with_the_same_shapes():
    sdk = sdk_operations()
    assert len(sdk) >= 35
    ours = {name: (spec.response_shape, spec.event_shape) for name, spec in OPERATIONS.items()}
    assert ours == sdk
