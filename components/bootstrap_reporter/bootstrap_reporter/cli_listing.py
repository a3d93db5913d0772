"""The `components` fact from ListComponents (`source: greengrass-cli`), where the Greengrass CLI is deployed.

ListComponents exists only where `aws.greengrass.Cli` is deployed. The CLI authorizes it under the
`aws.greengrass.Cli` destination against the literal resource `*`, which the recipe grants as `${*}` (the
escaped `*`: it matches that one resource, and no component name). Older CLIs refuse every caller that is
not a CLI client. So a refusal or "not supported" is an ordinary answer: the reporter falls back to the
suite's own list (`inventory.py`) and asks again only after a capped backoff, never in a tight loop, and at
once after a configuration change (a deployment that merges a grant, or the CLI deployed with it).

The answer carries every component's whole configuration (another component's settings, perhaps a
secret): only the name and version are kept, and nothing of it is logged. Nor is the state: a component
caught restarting at a collection would change the facts hash and cost a report and a verifier decision,
and a component's health is the health monitor's to judge, not the verifier's. A transient failure (a
timeout, the connection lost) keeps the last list the CLI gave, so that a hiccup does not flip the source
and make a `changed` report.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from device_agent.errors import DeviceAgentError, NotAuthorizedError, OperationNotSupportedError
from device_agent.facts.fact import Fact
from device_agent.ipc_types import ComponentInfo
from device_agent.retry import Backoff

logger = logging.getLogger(__name__)

SOURCE: Final = "greengrass-cli"
LIST_TIMEOUT: Final = 10.0
MAX_COMPONENTS: Final = 128
#: After a refusal, "not supported" or a failure: ask again after 1 min at first, at most hourly later.
RETRY: Final = Backoff(initial=60.0, maximum=3600.0)
#: An answer this recent serves again: the settle's answer is the first collection's, not a second call.
#: Collections are far apart, and a configuration change asks again at once (`retry_now`).
FRESH_SECONDS: Final = 5.0
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_VERSION = re.compile(r"[0-9A-Za-z.+~-]{1,64}")


class Lister(Protocol):
    async def list_components(self, *, timeout: float | None = None) -> list[ComponentInfo]: ...


class CliListing:
    """What ListComponents last said, and when to ask it again."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, backoff: Backoff = RETRY) -> None:
        self.clock = clock
        self.backoff = backoff
        self.listing: list[dict[str, Any]] | None = None  # the last answer, kept through transient failures
        self.why_not: str | None = None  # why the suite's list is used, once ListComponents said no
        self.next_try = 0.0
        self.calls = 0
        self._delays = backoff.delays()

    def retry_now(self) -> None:
        """Ask at the next collection: a new configuration may bring the grant or the CLI."""
        self.next_try = 0.0
        self._delays = self.backoff.delays()

    async def fact(self, ipc: Lister) -> Fact | None:
        """The `greengrass-cli` fact, or None when the suite's list must do."""
        if self.clock() >= self.next_try:
            await self._ask(ipc)
        if self.listing is None:
            return None
        value: dict[str, Any] = {"source": SOURCE, "components": self.listing[:MAX_COMPONENTS]}
        if len(self.listing) > MAX_COMPONENTS:
            value["omitted"] = len(self.listing) - MAX_COMPONENTS  # said, not silently cut
        return Fact.ok(value, source="ListComponents")

    async def _ask(self, ipc: Lister) -> None:
        self.calls += 1
        try:
            infos = await ipc.list_components(timeout=LIST_TIMEOUT)
        except NotAuthorizedError:
            self._refused("ListComponents is not authorized")
        except OperationNotSupportedError:
            self._refused("no aws.greengrass.Cli on this device")
        except DeviceAgentError as error:
            self._back_off()
            logger.warning(
                "bootstrap.list_components_failed",
                extra={"error": type(error).__name__, "kept": self.listing is not None},
            )
        else:
            if self.listing is None:
                logger.info("bootstrap.components_source", extra={"source": SOURCE})
            self.listing = _listing(infos)
            self._delays = self.backoff.delays()
            self.next_try = self.clock() + FRESH_SECONDS
            self.why_not = None

    def _refused(self, why: str) -> None:
        self._back_off()
        self.listing = None
        if why != self.why_not:
            logger.info("bootstrap.components_source", extra={"source": "suite", "reason": why})
        self.why_not = why

    def _back_off(self) -> None:
        self.next_try = self.clock() + next(self._delays)


def _listing(infos: list[ComponentInfo]) -> list[dict[str, Any]]:
    """Name and version of each component, sorted by name; what is not well formed is left out (a name:
    the nucleus never gives a malformed one) or null (a version)."""
    listing: dict[str, dict[str, Any]] = {}
    for info in infos:
        if not _NAME.fullmatch(info.name):
            continue
        version = info.version if isinstance(info.version, str) and _VERSION.fullmatch(info.version) else None
        listing[info.name] = {"name": info.name, "version": version}
    return [listing[name] for name in sorted(listing)]
