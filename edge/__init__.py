"""A site broker at the edge, bridged to the cloud broker (docs/edge.md)."""
