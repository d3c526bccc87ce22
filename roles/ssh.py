"""
Low-latency SSH connections: each remote command in milliseconds instead of ~45 ms.

pyinfra's SSH connector (paramiko) leaves Nagle's algorithm on. A remote command is a few small
SSH messages written back to back (open a channel, exec, close stdin); with Nagle the later ones
wait until the server acknowledges the first, and the server's kernel delays that ACK by up to
40 ms (Linux's delayed ACK) when it has nothing to send. So every fact and every operation's
command cost ~45 ms on a LAN, however little it does: a no-change run of deploy/site.py, about
ten commands per host, spent most of its time waiting for ACKs. With ``TCP_NODELAY`` (what
OpenSSH's own client sets for interactive sessions) the same command takes ~3 ms.

Each role's entry point calls ``low_latency()`` before it reads its first fact; it is cheap and
idempotent, and a no-op for other connectors (``@local``, ``@docker``, ``@fake``) and for SSH
connections that do not run over a plain TCP socket (a ProxyCommand or jump host).
"""

from __future__ import annotations

import socket

from pyinfra import host as current_host


def low_latency(host=None) -> bool:
    """Turn Nagle's algorithm off on the host's SSH connection; True when it is off now."""
    host = current_host if host is None else host
    try:
        client = getattr(host.connector, "client", None)
    except Exception:  # no connector: not connected, or not a pyinfra host
        return False
    transport = client.get_transport() if client is not None else None
    sock = getattr(transport, "sock", None)
    if sock is None or getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        return False
    return True
