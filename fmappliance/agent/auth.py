"""Bearer token check for the agent API (constant time, before routing)."""

from __future__ import annotations

import hmac

PUBLIC_ROUTES = frozenset({("GET", "/"), ("HEAD", "/")})


def bearer_token_matches(header: str | None, token: str) -> bool:
    """True when ``header`` is exactly ``Bearer <token>``; any other shape is a mismatch."""
    if not header or not token:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given or given != given.strip():
        return False
    # Compare bytes: compare_digest refuses non-ASCII str, and a client controls the header.
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8"))


def is_public(method: str, path: str) -> bool:
    """Only the health check answers without a token."""
    return (method.upper(), path) in PUBLIC_ROUTES
