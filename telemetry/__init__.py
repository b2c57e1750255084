"""The contract shared by the bridge, the API and the simulator (see docs/protocol.md)."""
