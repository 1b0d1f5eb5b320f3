"""TLS contexts of both ends of the fleet link (stdlib ssl only).

- The hub asks for a client certificate but does not require one (no certificate: the join
  door), trusts only its own certificate as issuer, ignores certificate dates (OpenSSL's
  X509_V_FLAG_NO_CHECK_TIME, 0x200000: clock skew and forgotten renewals can never take a
  server off the dashboard; revocation is the registry) and sends no session tickets.
- A server does not use the system CAs at all: it checks the hub certificate's sha256 against
  its pin itself, right after the handshake and before it writes anything.
"""

from __future__ import annotations

import socket
import ssl

from fmappliance.fleet.certs import sha256_of_der

NO_CHECK_TIME = 0x200000


def hub_context(cert_path: str, key_path: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert_path, key_path)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(cafile=cert_path)
    ctx.verify_flags |= NO_CHECK_TIME
    ctx.num_tickets = 0
    return ctx


def server_context(cert_path: str | None = None, key_path: str | None = None) -> ssl.SSLContext:
    """A managed server's side: its client certificate (after joining), no CA trust (the pin decides)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert_path:
        ctx.load_cert_chain(cert_path, key_path)
    return ctx


def peer_sha256(sock: ssl.SSLSocket) -> str:
    der = sock.getpeercert(binary_form=True)
    return sha256_of_der(der) if der else ""


#: TCP keepalive: first probe after 30 s of quiet, then every 10 s, 3 unanswered end the connection, so
#: a half-open link (a NAT that forgot it, a cable pulled, a network black hole) is found within ~60 s.
KEEPALIVE = (30, 10, 3)


def tune(sock: socket.socket, keepalive: tuple[int, int, int] | None = None) -> None:
    """TCP_NODELAY (a request would wait ~40 ms on delayed ACKs) and keepalive (finds half-open links)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle, interval, count = keepalive or KEEPALIVE
    for option, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)
