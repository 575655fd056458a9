"""A free TCP port, for the servers started on loopback: the local stack, the sinks, tests and benches."""

from __future__ import annotations

import random
import socket
from pathlib import Path

# Ports are chosen below the kernel's ephemeral range: a port from it (what bind(("", 0)) returns)
# can be taken, between being chosen and being bound by the server told it, as the source port of
# any outgoing connection or by another bind to port 0; one below it only by a server asking for it.
_LOWEST = 20000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_ATTEMPTS = 100
_handed_out: set[int] = set()       # chosen in this process: never twice, even once closed again


def _below_ephemeral() -> range:
    try:
        first = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):      # not Linux: the usual range's start
        first = 32768
    return range(_LOWEST, max(first, _LOWEST + 1000))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that was free a moment ago (for servers that must be told their port)."""
    candidates = _below_ephemeral()
    for _ in range(_ATTEMPTS):
        port = random.choice(candidates)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:    # a crowded range: the kernel's choice
        sock.bind((host, 0))
        return sock.getsockname()[1]
