"""The one bearer-token check: the agent's API token and the dashboard's metrics scrape token."""

from __future__ import annotations

import hmac


def bearer_token_matches(header: str | None, token: str) -> bool:
    """True when ``header`` is exactly ``Bearer <token>``; any other shape is a mismatch (constant time)."""
    if not header or not token:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given or given != given.strip():
        return False
    # Compare bytes: compare_digest refuses non-ASCII str, and a client controls the header.
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8"))
