"""The devkit's exception tree. Everything the local nucleus raises on purpose derives from DevkitError.

    DevkitError
    ├── RecipeError                 a recipe or artifact folder is invalid (message names file and key)
    ├── PolicyError                 an accessControl policy is invalid (names component, policy id, key)
    ├── ConfigStoreError
    │   ├── ConfigKeyNotFoundError  a key path that does not exist
    │   ├── StaleUpdateError        an update older than the value it would replace
    │   └── InvalidUpdateError      an update the nucleus refuses (e.g. touches accessControl)
    ├── DeploymentError             a deployment was refused or failed (validation, bad reference)
    ├── LifecycleError              a component could not be started, stopped or found
    ├── IotBridgeError              the IoT Core bridge failed (connect, publish, subscribe)
    └── ControlError                a command against a running virtual device failed

Errors that a component sees over IPC are not these: they are the nucleus's modeled errors
(`device_agent.devkit.ipc.errors`), raised by handlers and sent on the wire.
"""

from __future__ import annotations


class DevkitError(Exception):
    """Root of every error the devkit raises on purpose."""


class RecipeError(DevkitError):
    pass


class PolicyError(DevkitError):
    pass


class ConfigStoreError(DevkitError):
    pass


class ConfigKeyNotFoundError(ConfigStoreError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its argument; keep the plain message
        return str(self.args[0]) if self.args else "key not found"


class StaleUpdateError(ConfigStoreError):
    pass


class InvalidUpdateError(ConfigStoreError):
    pass


class DeploymentError(DevkitError):
    pass


class LifecycleError(DevkitError):
    pass


class IotBridgeError(DevkitError):
    pass


class ControlError(DevkitError):
    pass
