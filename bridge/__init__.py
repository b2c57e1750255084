"""The MQTT → PostgreSQL bridge (`python -m bridge`)."""
