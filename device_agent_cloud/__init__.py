"""The cloud side of quarantine, verify, promote: the verifier, its policy, provisioning and IoT policies.

Never shipped to a device (the build packs only a component's package and `device_agent`); it needs boto3
(the `cloud` extra) to talk to AWS IoT, and runs as an AWS Lambda handler or as a local service for the
virtual fleet.
"""
