"""com.deviceagent.EncryptedStore: keeps the data key, serves namespaced records over pub/sub."""
