"""The write path shared by the bridge and the API: readings merged into PostgreSQL, the counter
journal, Redis counters and their rebuild. It sits above `db/` and the `telemetry/` contract."""
