"""The nucleus's IPC services: each module serves one family of operations, as the nucleus's agents do."""
