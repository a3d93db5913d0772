"""device-agent: the shared on-device library of the suite's Greengrass components."""

# The one source of the version: pyproject.toml reads it from here. A literal, because on a device the
# library runs from a component's ZIP, never installed, so package metadata is not there to ask (and
# importing importlib.metadata costs every component about 2.7 MiB of resident memory).
__version__ = "0.1.0"

__all__ = ["__version__"]
