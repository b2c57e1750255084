"""A simulated robot fleet publishing the RoboSense protocol over MQTT (docs/simulator.md)."""
