"""The process harness shared by tests/ and loadtest/: real services on private ports, databases
and key prefixes (`services.py`), the bridge as a process (`bridge.py`), a QoS 1 publisher
(`publisher.py`), and polling that raises on timeout (`waiting.py`)."""
