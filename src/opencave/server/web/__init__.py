"""Pages a person uses in a browser: login, tokens, token creation, terms of service."""
