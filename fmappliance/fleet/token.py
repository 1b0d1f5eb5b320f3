"""Join tokens and server names.

A join token is ``FMJ1<64 hex: sha256 of the hub certificate's DER>::<8-char id>.<32-char secret>``.
The hash lets a joining server check the hub *before* it sends anything (k3s does the same);
the id names the token in ``fleet token list|revoke``; the hub keeps only sha256(secret).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "FMJ1"
ID_LENGTH = 8
SECRET_LENGTH = 32
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_TOKEN = re.compile(r"FMJ1([0-9a-f]{64})::([a-z0-9]{8})\.([A-Za-z0-9]{32})", re.ASCII)
SERVER_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}", re.ASCII)
SERVER_NAME_RULE = (
    "a server name starts with a lowercase letter and has at most 32 lowercase letters, digits and '-' "
    "(it becomes part of URLs, metric labels and file names)"
)


class BadToken(ValueError):
    """The text is not a join token; ``str()`` says so without echoing it."""


@dataclass(frozen=True)
class JoinToken:
    hub_sha256: str
    token_id: str
    secret: str

    def __str__(self) -> str:
        return f"{PREFIX}{self.hub_sha256}::{self.token_id}.{self.secret}"

    def __repr__(self) -> str:  # never print the secret by accident
        return f"JoinToken(hub_sha256={self.hub_sha256[:12]}…, token_id={self.token_id})"


def is_valid_server_name(name: object) -> bool:
    return isinstance(name, str) and SERVER_NAME.fullmatch(name) is not None


def parse(text: str) -> JoinToken:
    """The token in ``text`` (surrounding white space ignored); BadToken otherwise."""
    text = (text or "").strip()
    found = _TOKEN.fullmatch(text)
    if not found:
        raise BadToken(
            "That is not a join token (expected FMJ1 followed by 64 hex digits, '::', an 8-character id, '.' and "
            "a 32-character secret); make one on the dashboard with: fm-dashboard fleet token create"
        )
    return JoinToken(found.group(1), found.group(2), found.group(3))


def make(hub_sha256: str) -> JoinToken:
    """A fresh token for the hub whose certificate hashes to ``hub_sha256``."""
    if not re.fullmatch(r"[0-9a-f]{64}", hub_sha256 or ""):
        raise ValueError("hub_sha256 must be 64 lowercase hex digits")
    token_id = "".join(secrets.choice(_ALPHABET) for _ in range(ID_LENGTH))
    secret = "".join(secrets.choice(_ALPHABET + _ALPHABET.upper()[:26]) for _ in range(SECRET_LENGTH))
    return JoinToken(hub_sha256, token_id, secret)


def secret_hash(secret: str) -> str:
    """What the hub stores of a secret (and of a per-server API token)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(a.encode("ascii", "replace"), b.encode("ascii", "replace"))
