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

The same call bounds how long a host that stops answering can hold the run: SSH keepalives every
``KEEPALIVE`` seconds (paramiko sends none by default) and ``TCP_USER_TIMEOUT``, so that data the
host does not acknowledge within ``DEAD_AFTER`` seconds closes the connection. Without them a
host whose link went down mid-command kept pyinfra waiting on its channel for as long as anyone
waited (TCP retransmits for ~15 minutes), and the other hosts never got their next operation;
with them that host's command fails, the host is failed and named, and the others go on.
"""

from __future__ import annotations

import socket

from pyinfra import host as current_host

KEEPALIVE = 10  # seconds between SSH keepalives
DEAD_AFTER = 40  # seconds unacknowledged data may wait before the connection is given up


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
    bounded(transport, sock)
    return True


def bounded(transport, sock) -> None:
    """Keepalives on the SSH transport and a TCP user timeout on its socket (Linux)."""
    if hasattr(transport, "set_keepalive"):
        transport.set_keepalive(KEEPALIVE)
    user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if user_timeout is not None:
            sock.setsockopt(socket.IPPROTO_TCP, user_timeout, DEAD_AFTER * 1000)
    except OSError:
        pass
