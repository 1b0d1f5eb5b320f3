"""The fleet's registry in the dashboard's state database: join tokens and joined servers.

Identity lives here, not in certificate dates: a server is its row (name, the sha256 of the
certificate the hub signed for it, its API token); removing the row is the revocation.  Join
tokens are kept as sha256(secret) only.  The CLI (another process) and the serving dashboard
share the file; every check reads it afresh.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from fmappliance.dashboard.state_db import StateDB
from fmappliance.fleet import token as join_token
from fmappliance.wire import format_timestamp

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS fleet_tokens ("
    " id TEXT PRIMARY KEY, secret_sha256 TEXT NOT NULL, name TEXT, created REAL NOT NULL, expires REAL NOT NULL,"
    " used_at REAL, used_by TEXT, used_from TEXT, revoked_at REAL)",
    "CREATE TABLE IF NOT EXISTS fleet_servers ("
    " name TEXT PRIMARY KEY, cert_sha256 TEXT NOT NULL UNIQUE, api_token TEXT NOT NULL, address TEXT NOT NULL,"
    " joined REAL NOT NULL, agent_version TEXT, removed_at REAL, pending_api_token TEXT)",
)


class JoinRefused(Exception):
    """A refused join: ``status`` (400/401/403/409/410/426/429) and the operator's sentence."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Joined:
    server: str
    agent_cert_pem: str
    api_token: str


UNKNOWN_TOKEN = (
    "This join token is not known to this dashboard (or its secret is wrong); "
    "make a new one on the dashboard with: fm-dashboard fleet token create"
)


class FleetRegistry:
    def __init__(self, db: StateDB, clock: Callable[[], float] = time.time):
        self.db = db
        self.clock = clock
        with db.transaction() as conn:
            for statement in SCHEMA:
                conn.execute(statement)

    # -- join tokens ------------------------------------------------------------------

    def create_token(self, hub_sha256: str, name: str | None, ttl: int) -> tuple[join_token.JoinToken, float]:
        """A new one-use token (bound to ``name`` if given); returns it and its expiry (epoch)."""
        made = join_token.make(hub_sha256)
        now = self.clock()
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO fleet_tokens (id, secret_sha256, name, created, expires) VALUES (?, ?, ?, ?, ?)",
                (made.token_id, join_token.secret_hash(made.secret), name, now, now + ttl),
            )
        return made, now + ttl

    def tokens(self) -> list[dict]:
        now = self.clock()
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT id, name, created, expires, used_at, used_by, used_from, revoked_at FROM fleet_tokens "
                "ORDER BY created"
            ).fetchall()
        out = []
        for tid, name, created, expires, used_at, used_by, used_from, revoked_at in rows:
            if revoked_at:
                state = "revoked"
            elif used_at:
                state = "used"
            elif expires <= now:
                state = "expired"
            else:
                state = "usable"
            out.append(
                {
                    "id": tid,
                    "name": name,
                    "state": state,
                    "created": format_timestamp(created),
                    "expires": format_timestamp(expires),
                    "used_at": format_timestamp(used_at) if used_at else None,
                    "used_by": used_by,
                    "used_from": used_from,
                }
            )
        return out

    def revoke_token(self, token_id: str) -> bool:
        with self.db.transaction() as conn:
            return (
                conn.execute(
                    "UPDATE fleet_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL AND used_at IS NULL",
                    (self.clock(), token_id),
                ).rowcount
                == 1
            )

    # -- joining ----------------------------------------------------------------------

    def redeem(
        self,
        token_id: str,
        secret: str,
        name: str | None,
        address: str,
        agent_version: str,
        max_servers: int,
        sign: Callable[[str], str],
        cert_sha256: Callable[[str], str],
    ) -> Joined:
        """Check the token and the name, have ``sign(name)`` make the certificate, record the server.

        One transaction: two joins with one token cannot both win.  Raises JoinRefused.
        """
        now = self.clock()
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT secret_sha256, name, expires, used_at, used_by, used_from, revoked_at FROM fleet_tokens "
                "WHERE id = ?",
                (token_id,),
            ).fetchone()
            if row is None or not join_token.same_hash(row[0], join_token.secret_hash(secret)):
                raise JoinRefused(401, UNKNOWN_TOKEN)
            _, bound, expires, used_at, used_by, used_from, revoked_at = row
            if revoked_at:
                raise JoinRefused(
                    410, f"This join token was revoked at {format_timestamp(revoked_at)}; make a new one."
                )
            if used_at:
                raise JoinRefused(
                    410,
                    f"This join token was already used at {format_timestamp(used_at)} by server {used_by} "
                    f"(from {used_from}); a join token works once: make a new one.",
                )
            if expires <= now:
                raise JoinRefused(410, f"This join token expired at {format_timestamp(expires)}; make a new one.")
            if name is None:
                if bound is None:
                    raise JoinRefused(400, "This join token names no server; give the name with --name.")
                name = bound
            if not join_token.is_valid_server_name(name):
                raise JoinRefused(400, f"{str(name)[:40]!r} is not a valid server name: {join_token.SERVER_NAME_RULE}.")
            if bound is not None and bound != name:
                raise JoinRefused(403, f"This join token is for server {bound}, not {name}.")
            taken = conn.execute(
                "SELECT 1 FROM fleet_servers WHERE name = ? AND removed_at IS NULL", (name,)
            ).fetchone()
            if taken:
                raise JoinRefused(
                    409,
                    f"A server named {name} is already in the fleet; choose another name, or remove it first "
                    f"(fm-dashboard fleet remove {name}).",
                )
            count = conn.execute("SELECT COUNT(*) FROM fleet_servers WHERE removed_at IS NULL").fetchone()[0]
            if count >= max_servers:
                raise JoinRefused(409, f"The fleet is full ({count} servers, fleet.max_servers = {max_servers}).")
            pem = sign(name)
            api_token = secrets.token_urlsafe(32)
            conn.execute("DELETE FROM fleet_servers WHERE name = ? AND removed_at IS NOT NULL", (name,))
            conn.execute(
                "INSERT INTO fleet_servers (name, cert_sha256, api_token, address, joined, agent_version) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name, cert_sha256(pem), api_token, address, now, agent_version),
            )
            conn.execute(
                "UPDATE fleet_tokens SET used_at = ?, used_by = ?, used_from = ? WHERE id = ?",
                (now, name, address, token_id),
            )
        return Joined(name, pem, api_token)

    # -- servers ----------------------------------------------------------------------

    def servers(self, include_removed: bool = False) -> list[dict]:
        query = "SELECT name, cert_sha256, address, joined, agent_version, removed_at FROM fleet_servers"
        if not include_removed:
            query += " WHERE removed_at IS NULL"
        with self.db.transaction() as conn:
            rows = conn.execute(query + " ORDER BY name").fetchall()
        return [
            {
                "name": name,
                "cert_sha256": sha,
                "address": address,
                "joined": format_timestamp(joined),
                "agent_version": version,
                "removed": format_timestamp(removed) if removed else None,
            }
            for name, sha, address, joined, version, removed in rows
        ]

    def server_for_certificate(self, cert_sha256: str) -> str | None:
        """The name of the (not removed) server this certificate was issued to, else None."""
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT name FROM fleet_servers WHERE cert_sha256 = ? AND removed_at IS NULL", (cert_sha256,)
            ).fetchone()
        return row[0] if row else None

    def api_token(self, name: str, include_removed: bool = False) -> str | None:
        query = "SELECT api_token FROM fleet_servers WHERE name = ?"
        if not include_removed:
            query += " AND removed_at IS NULL"
        with self.db.transaction() as conn:
            row = conn.execute(query, (name,)).fetchone()
        return row[0] if row else None

    # -- token rotation: the CLI asks, the serving hub delivers through the link ---------------

    def request_rotation(self, name: str) -> bool:
        with self.db.transaction() as conn:
            return (
                conn.execute(
                    "UPDATE fleet_servers SET pending_api_token = ? WHERE name = ? AND removed_at IS NULL",
                    (secrets.token_urlsafe(32), name),
                ).rowcount
                == 1
            )

    def pending_rotations(self) -> list[str]:
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT name FROM fleet_servers WHERE pending_api_token IS NOT NULL AND removed_at IS NULL"
            ).fetchall()
        return [r[0] for r in rows]

    def pending_rotation(self, name: str) -> tuple[str, str] | None:
        """(current token, new token) while a rotation of ``name`` waits to be delivered."""
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT api_token, pending_api_token FROM fleet_servers WHERE name = ? AND removed_at IS NULL "
                "AND pending_api_token IS NOT NULL",
                (name,),
            ).fetchone()
        return (row[0], row[1]) if row else None

    def finish_rotation(self, name: str, new: str) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE fleet_servers SET api_token = ?, pending_api_token = NULL WHERE name = ? "
                "AND pending_api_token = ?",
                (new, name, new),
            )

    def remove(self, name: str) -> bool:
        """Mark ``name`` removed: its certificate is refused from now on."""
        with self.db.transaction() as conn:
            return (
                conn.execute(
                    "UPDATE fleet_servers SET removed_at = ? WHERE name = ? AND removed_at IS NULL",
                    (self.clock(), name),
                ).rowcount
                == 1
            )
