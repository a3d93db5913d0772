"""com.deviceagent.HealthMonitor: judges device and component health, keeps the local health log."""
