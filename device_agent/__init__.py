"""device-agent: the shared on-device library of the suite's Greengrass components."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("device-agent")
except PackageNotFoundError:  # running from a tree that was never installed (e.g. inside a component ZIP)
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
