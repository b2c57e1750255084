"""The REST API: robot registry, sensor reads, HTTP ingest and live stats (`python -m api`)."""
