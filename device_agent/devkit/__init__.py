"""The virtual device kit: a local Greengrass nucleus and its tools. Never shipped to a device."""
