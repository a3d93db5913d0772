"""`python -m telemetry_publisher`: the component's entry point (the recipe's Run step)."""

import device_agent.without_ssl  # noqa: F401 - first, before asyncio: saves each process ~4 MiB
from device_agent.component import run_component
from telemetry_publisher.component import TelemetryPublisher

if __name__ == "__main__":
    run_component(TelemetryPublisher)
