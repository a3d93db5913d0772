"""The operations of the Greengrass IPC model (awsiotsdk's `GreengrassCoreIPC` service).

Each entry gives the shape names a response and a stream event must carry, because the client dispatches on
`service-model-type` and checks it exactly. Streaming operations are those with a stream-event shape.
A test cross-checks this table against the installed SDK's model.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

NAMESPACE = "aws.greengrass#"


@dataclass(frozen=True, slots=True)
class OperationSpec:
    name: str  # e.g. "PublishToTopic"
    event_shape: str | None = None  # stream-event shape for streaming operations

    @property
    def model_name(self) -> str:
        return NAMESPACE + self.name

    @property
    def response_shape(self) -> str:
        return f"{NAMESPACE}{self.name}Response"

    @property
    def streaming(self) -> bool:
        return self.event_shape is not None


_STREAMING = {
    "SubscribeToCertificateUpdates": "CertificateUpdateEvent",
    "SubscribeToComponentUpdates": "ComponentUpdatePolicyEvents",
    "SubscribeToConfigurationUpdate": "ConfigurationUpdateEvents",
    "SubscribeToIoTCoreConnectionStatus": "IoTCoreConnectionStatusEvent",
    "SubscribeToIoTCore": "IoTCoreMessage",
    "SubscribeToTopic": "SubscriptionResponseMessage",
    "SubscribeToValidateConfigurationUpdates": "ValidateConfigurationUpdateEvents",
}

_NON_STREAMING = (
    "AuthorizeClientDeviceAction",
    "CancelLocalDeployment",
    "CreateDebugPassword",
    "CreateLocalDeployment",
    "DeferComponentUpdate",
    "DeleteThingShadow",
    "GetClientDeviceAuthToken",
    "GetComponentDetails",
    "GetConfiguration",
    "GetLocalDeploymentStatus",
    "GetSecretValue",
    "GetThingShadow",
    "ListComponents",
    "ListLocalDeployments",
    "ListNamedShadowsForThing",
    "PauseComponent",
    "PublishToIoTCore",
    "PublishToTopic",
    "PutComponentMetric",
    "RestartComponent",
    "ResumeComponent",
    "SendConfigurationValidityReport",
    "StopComponent",
    "UpdateConfiguration",
    "UpdateState",
    "UpdateThingShadow",
    "ValidateAuthorizationToken",
    "VerifyClientDeviceIdentity",
)

OPERATIONS: MappingProxyType[str, OperationSpec] = MappingProxyType(
    {
        NAMESPACE + name: OperationSpec(name, NAMESPACE + event if event else None)
        for name, event in [*((n, None) for n in _NON_STREAMING), *_STREAMING.items()]
    }
)
