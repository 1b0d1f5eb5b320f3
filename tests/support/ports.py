"""Ports for tests: servers bind port 0 and say which port they got; these helpers cover the rest.

``free_port()`` is only for servers that cannot bind port 0 themselves (nginx, whose config names its
ports): another process may take the port between the probe and the bind, so callers retry on a clash.
``refused_port()`` is a port where nothing listens, for as long as the test holds it: a socket bound and
never listening, so connecting is refused and no other process can take the port meanwhile.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def refused_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]
