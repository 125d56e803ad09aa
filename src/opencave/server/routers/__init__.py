"""One router per CAVE service; each stays thin and calls a domain service."""
