"""`python -m bootstrap_reporter`: the component's entry point (the recipe's Run step)."""

import device_agent.without_ssl  # noqa: F401 - first, before asyncio: saves each process ~4 MiB
from bootstrap_reporter.component import BootstrapReporter
from device_agent.component import run_component

if __name__ == "__main__":
    run_component(BootstrapReporter)
