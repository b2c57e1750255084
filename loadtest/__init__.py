"""Benchmarks: MQTT ingest end to end (`python -m loadtest.ingest`) and REST
(`python -m loadtest.rest`, `loadtest/locustfile.py`), each beside the machine's own ceilings."""
