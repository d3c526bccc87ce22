"""Where the stand-ins are served: plain HTTP on loopback and on the test hosts' own gateway
addresses (never 0.0.0.0), one directory, one port, every request recorded for the tests."""

from __future__ import annotations

import dataclasses
import http.server
import ipaddress
import os
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class Request:
    server: str     # "ADDRESS:PORT" the request came in on
    client: str     # client address
    method: str
    path: str       # URL path, query string removed, percent-decoded
    status: int
    time: float


class _Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server_version = "sdinfra-standin-http"
    sys_version = ""

    def list_directory(self, path):  # no directory listings
        self.send_error(404, "Not Found")
        return None

    def log_request(self, code="-", size="-"):
        try:
            status = int(code)
        except (TypeError, ValueError):
            status = 0
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        self.server.owner._record(Request(  # type: ignore[attr-defined]
            server="%s:%s" % self.server.server_address[:2], client=self.client_address[0],
            method=self.command or "-", path=path, status=status, time=time.time()))

    def log_message(self, format, *args):  # keep test output clean
        pass


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, handler, owner, freebind):
        self.owner = owner
        self._freebind = freebind
        self.address_family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        super().__init__(addr, handler)

    def server_bind(self):
        if self._freebind:
            self.socket.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: address may come later
        super().server_bind()


class Server:
    """Serves one directory on several addresses, one port; records every request.

    Use :func:`serve` to make one.  ``requests`` is a list of :class:`Request` (thread-safe
    appends); ``clear()`` empties it, ``paths()`` lists the request paths.
    """

    def __init__(self, directory: os.PathLike | str, addresses: Sequence[str], port: int = 0,
                 *, freebind: bool = False):
        self.directory = Path(directory).resolve()
        if not self.directory.is_dir():
            raise ValueError(f"not a directory: {self.directory}")
        if not addresses:
            raise ValueError("give at least one address to listen on")
        for a in addresses:
            ip = ipaddress.ip_address(a)  # ValueError for host names
            if ip.is_unspecified:
                raise ValueError(f"refusing to listen on {a}: give explicit addresses")
        self.addresses = list(addresses)
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._servers: list[_HTTPServer] = []
        self._threads: list[threading.Thread] = []
        handler = _make_handler(self.directory)
        try:
            for a in self.addresses:
                srv = _HTTPServer((a, port), handler, self, freebind)
                port = srv.server_address[1]  # port 0: the first bind picks one for all
                self._servers.append(srv)
        except Exception:
            for s in self._servers:
                s.server_close()
            raise
        self.port = port
        for srv in self._servers:
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                                 name=f"standin-http-{srv.server_address[0]}", daemon=True)
            t.start()
            self._threads.append(t)

    def _record(self, req: Request) -> None:
        with self._lock:
            self.requests.append(req)

    def url(self, address: str | None = None, path: str = "") -> str:
        a = address or self.addresses[0]
        host = f"[{a}]" if ":" in a else a
        return f"http://{host}:{self.port}/" + path.lstrip("/")

    @property
    def urls(self) -> list[str]:
        return [self.url(a) for a in self.addresses]

    def paths(self, method: str | None = None) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests if method is None or r.method == method]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def stop(self) -> None:
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _make_handler(directory: Path):
    class H(_Handler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(directory), **kw)
    return H


def serve(directory: os.PathLike | str, addresses: Sequence[str], port: int = 0, *,
          freebind: bool = False) -> Server:
    """Serve ``directory`` over HTTP on each of ``addresses`` (never 0.0.0.0) on one port.

    ``port=0`` picks a free port (``server.port``).  ``freebind=True`` allows binding an address
    not configured yet (a veth that comes up later).  Stop with ``.stop()`` or use ``with``.
    """
    return Server(directory, addresses, port, freebind=freebind)
