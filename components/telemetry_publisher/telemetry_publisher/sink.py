"""The spool's `Sink`: pack records into one telemetry message, publish it, count the bytes.

    sink = MessageSink(packer, publish=lambda payload: ctx.ipc.publish_to_iot_core(topic, payload),
                       status=current_status, usage=usage)
    spool = Spool(queue, sink, settings, ledger=usage)

`publish` is any coroutine function that raises a `DeviceAgentError` when the message was not accepted
(the IPC session's `publish_to_iot_core` at QoS 1 does). `status` is called per message, so each message
carries the counters as they are when it is built.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from telemetry_publisher.budget import Usage
from telemetry_publisher.payload import Degraded, Packer, Status
from telemetry_publisher.spool import SpoolStats

logger = logging.getLogger(__name__)


class MessageSink:
    def __init__(
        self,
        packer: Packer,
        *,
        publish: Callable[[bytes], Awaitable[object]],
        status: Callable[[], Status],
        usage: Usage | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.packer = packer
        self._publish, self._status, self._usage, self._wall = publish, status, usage, wall

    async def send(self, records: Sequence[bytes], *, backfill: bool) -> int:
        message = self.packer.pack(records, self._status(), backfill=backfill, sent_at=self._wall())
        if message.shrunk:
            logger.warning("telemetry.sample_shrunk", extra={"bytes": len(records[0])})
        await self._publish(message.payload)
        if self._usage is not None:
            self._usage.add_sent(len(message.payload))
        return message.count


def current_status(usage: Usage, spool: SpoolStats, degraded: Degraded | None = None) -> Status:
    """What a message built now says: today's counts, the totals as last persisted, the spool's state."""
    today, totals = usage.state, usage.reported
    return Status(
        day=today.day,
        sent_bytes=today.day_bytes,
        dropped=today.dropped,
        expired=today.expired,
        backfilled=today.backfilled,
        dropped_total=totals.dropped_total,
        expired_total=totals.expired_total,
        backfilled_total=totals.backfilled_total,
        backlog=spool.backlog,
        memory=spool.memory,
        store_unavailable=not spool.store_available,
        degraded=degraded,
    )
