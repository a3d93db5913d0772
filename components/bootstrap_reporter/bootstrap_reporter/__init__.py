"""com.deviceagent.BootstrapReporter: report who the device is, wait for the verifier's verdict, keep it."""
