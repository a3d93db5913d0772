"""`python -m encrypted_store`: the component's entry point (the recipe's Run step)."""

import device_agent.without_ssl  # noqa: F401 - first, before asyncio: saves each process ~4 MiB
from device_agent.component import run_component
from encrypted_store.component import EncryptedStore

if __name__ == "__main__":
    run_component(EncryptedStore)
