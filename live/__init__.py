"""`python -m live`: the operators' live view. Summaries per robot and for the fleet on
`fleet/...` (telemetry/live.py), and alerts, kept in PostgreSQL and published."""
