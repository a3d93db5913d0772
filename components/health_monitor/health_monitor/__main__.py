"""`python -m health_monitor`: the component's entry point (the recipe's Run step)."""

import device_agent.without_ssl  # noqa: F401 - first, before asyncio: saves each process ~4 MiB
from device_agent.component import run_component
from health_monitor.component import HealthMonitor

if __name__ == "__main__":
    run_component(HealthMonitor)
