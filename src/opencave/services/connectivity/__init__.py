"""Connectivity computed from synapse tables at a version or a moment (opencave extension)."""
