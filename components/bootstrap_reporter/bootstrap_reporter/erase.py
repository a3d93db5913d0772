"""The store's whole-store crypto-erase (`_admin` `wipe`), asked for on a rejection when configured.

The store's client refuses the reserved `_admin` namespace on purpose, so this is the one small request
the reporter makes by hand: publish a `wipe` on `device-agent/store/_admin/request`, resend it while
unanswered (as the client does), and wait for the answer with the same id. The recipe grants the two
admin topics; the code sends nothing there unless `eraseOnReject` is true (docs/bootstrap.md).
"""

from __future__ import annotations

import asyncio
import os

from device_agent import store_protocol as protocol
from device_agent.errors import UnavailableError
from device_agent.ipc import IpcSession
from device_agent.ipc_types import LocalMessage

RESEND_SECONDS = 0.5


async def erase_store(ipc: IpcSession, *, timeout: float) -> None:
    """Crypto-erase the whole store; raises UnavailableError when it does not confirm within `timeout`."""
    request_id = f"erase-{os.urandom(8).hex()}"
    answered: asyncio.Future[protocol.Response] = asyncio.get_running_loop().create_future()

    def on_response(message: LocalMessage) -> None:
        response = protocol.parse_response(message.payload)
        if response is not None and response.id == request_id and not answered.done():
            answered.set_result(response)

    subscription = await ipc.subscribe(protocol.response_topic(protocol.ADMIN_NAMESPACE), on_response)
    try:
        document = protocol.request_document(request_id, protocol.Op.WIPE)
        async with asyncio.timeout(timeout):
            while not answered.done():
                await ipc.publish(protocol.request_topic(protocol.ADMIN_NAMESPACE), document)
                await asyncio.wait({answered}, timeout=RESEND_SECONDS)
    except TimeoutError:
        raise UnavailableError("the store did not confirm the erase in time") from None
    finally:
        await subscription.close()
    response = answered.result()
    if not response.ok:
        code = response.code.value if response.code else "internal"
        raise UnavailableError(f"the store refused the erase: {code}")
