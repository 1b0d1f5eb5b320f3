"""Which agent routes answer without a token (the token check itself: fmappliance.bearer, before routing)."""

from __future__ import annotations

PUBLIC_ROUTES = frozenset({("GET", "/"), ("HEAD", "/")})


def is_public(method: str, path: str) -> bool:
    """Only the health check answers without a token."""
    return (method.upper(), path) in PUBLIC_ROUTES
