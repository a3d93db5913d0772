"""com.deviceagent.TelemetryPublisher: samples device metrics and delivers every one to IoT Core."""
