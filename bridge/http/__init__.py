"""The bridge's HTTP face: Prometheus metrics (more to come: the line view)."""
