"""Where and how both services listen: a Unix socket (the default) or TCP, with connection limits.

On a socket, who may connect is decided by the file system: mode 0660 and ``socket_group``
(the dashboard's user for the agent's socket, nginx's user for the dashboard's), so no
other local process can call the agent or pretend to be nginx.  On TCP anything on the host
can connect, which is why TCP is only kept for configs that ask for it.

Either way idle connections cost a slot for at most ``CHANNEL_TIMEOUT`` seconds and
``CONNECTION_LIMIT`` is far above what nginx (per-address ``limit_conn``) lets through, so
a crowd of idle or slow connections cannot make a service stop answering.
"""

from __future__ import annotations

import grp
import logging
import os
import signal

log = logging.getLogger(__name__)

SOCKET_MODE = "660"
#: waitress stops accepting beyond this many open connections (its default: 100).
CONNECTION_LIMIT = 1000
#: Seconds an idle connection (no request in progress) is kept (waitress default: 120).
CHANNEL_TIMEOUT = 20
CLEANUP_INTERVAL = 5


def listen_options(section: dict) -> dict:
    """waitress options for ``config["agent"]`` or ``config["dashboard"]``."""
    options: dict[str, object] = {
        "connection_limit": CONNECTION_LIMIT,
        "channel_timeout": CHANNEL_TIMEOUT,
        "cleanup_interval": CLEANUP_INTERVAL,
    }
    if section["socket"]:
        options.update(unix_socket=section["socket"], unix_socket_perms=SOCKET_MODE)
    else:
        options.update(host=section["listen"], port=section["port"])
    return options


def where(section: dict) -> str:
    return f"unix:{section['socket']}" if section["socket"] else f"{section['listen']}:{section['port']}"


def url(section: dict) -> str:
    return f"unix:{section['socket']}" if section["socket"] else f"http://{section['listen']}:{section['port']}"


def share_socket(section: dict) -> None:
    """Hand the socket to ``socket_group`` (the service's user must be a member)."""
    if not section["socket"] or not section["socket_group"]:
        return
    try:
        gid = grp.getgrnam(section["socket_group"]).gr_gid
    except KeyError:
        raise OSError(f"socket_group {section['socket_group']!r} does not exist") from None
    os.chown(section["socket"], -1, gid)


def stop_on_signals(service_log: logging.Logger) -> None:
    """SIGTERM (systemd's stop) and SIGINT end the service cleanly: waitress's run() catches the
    SystemExit raised here and shuts its worker threads down."""

    def stop(signum, frame):
        service_log.info("stopping (signal %s)", signal.Signals(signum).name)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
