"""MQTT identities: Mosquitto's password and ACL files, owned here (docs/security.md)."""
