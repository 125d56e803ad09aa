"""The ASGI server: every CAVE service under CAVE's own URL prefixes."""
