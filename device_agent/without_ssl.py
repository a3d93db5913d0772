"""Imported first by each component's `__main__`: keeps asyncio from loading Python's `ssl` module.

asyncio imports `ssl` when it starts (`asyncio.sslproto`, for TLS transports), and `ssl` maps the system's
OpenSSL libraries: about 4 MiB of resident memory in every component process, on devices with a few
hundred MB. No component needs it: IPC is a Unix socket, the nucleus owns the TLS connection to AWS IoT
Core, and awscrt carries its own TLS. Setting `sys.modules["ssl"] = None` is Python's documented way to
make an import fail, and asyncio runs without `ssl` (its TLS methods then raise). A component that needs
`ssl` must not import this module; once `ssl` is loaded, importing this module changes nothing.
"""

from __future__ import annotations

import sys

if "ssl" not in sys.modules:
    sys.modules["ssl"] = None  # type: ignore[assignment]
