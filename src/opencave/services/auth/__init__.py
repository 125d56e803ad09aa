"""Authentication and authorisation: accounts, groups, datasets, permissions, tokens."""

from opencave.services.auth.access import Access
from opencave.services.auth.accounts import DEFAULT_GROUP, Accounts, User
from opencave.services.auth.identity import AUTH_DISABLED_IDENTITY, AuthContext, Identity, IdentityResolver
from opencave.services.auth.tokens import API, LOGIN, TokenStore

__all__ = [
    "API",
    "AUTH_DISABLED_IDENTITY",
    "Access",
    "AuthContext",
    "Accounts",
    "DEFAULT_GROUP",
    "Identity",
    "IdentityResolver",
    "LOGIN",
    "TokenStore",
    "User",
]
