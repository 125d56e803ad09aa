"""Storage layer: the only place that knows which SQL dialect is in use."""
