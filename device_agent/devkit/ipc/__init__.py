"""The Greengrass IPC server side: event-stream framing, the RPC connection, modeled errors, operations."""
