"""`python -m telemetry_publisher`: the component's entry point (the recipe's Run step)."""

from device_agent.component import run_component
from telemetry_publisher.component import TelemetryPublisher

if __name__ == "__main__":
    run_component(TelemetryPublisher)
