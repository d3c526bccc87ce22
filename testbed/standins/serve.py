"""Where the stand-ins are served: plain HTTP on loopback and on the test hosts' own gateway
addresses (never 0.0.0.0), one directory, one port, every request recorded for the tests, and
the bytes of every response body counted (``Server.bytes_served``: what "the internet" sent).

Under ``/v2/`` the directory is also a read-only Docker registry (the stand-in Docker Hub that
a host's dockerd reaches as a ``registry-mirrors`` entry): what a pull asks, as the
distribution API specifies it (distribution/distribution docs/spec/api.md, "API Version
Check", "Pulling An Image"; the same in opencontainers/distribution-spec spec.md, "Pulling
manifests", "Pulling blobs"): ``GET /v2/`` answers 200 with ``Docker-Distribution-API-Version:
registry/2.0``; ``/v2/NAME/manifests/REF`` and ``/v2/NAME/blobs/DIGEST`` are files of that path
under the directory, a manifest served with its own ``mediaType`` as Content-Type, each with
``Docker-Content-Digest``; a missing one is 404 with the spec's JSON error
(``MANIFEST_UNKNOWN``, ``BLOB_UNKNOWN``)."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import ipaddress
import json
import os
import re
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

    def copyfile(self, source, outputfile):
        # Every body byte sent, counted as it goes (a download cut short counts what it got).
        while True:
            chunk = source.read(1 << 16)
            if not chunk:
                break
            outputfile.write(chunk)
            self.server.owner._count(len(chunk))  # type: ignore[attr-defined]

    def send_head(self):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        if path == "/v2" or path.startswith("/v2/"):
            return self._registry(path)
        return super().send_head()

    def _registry(self, path: str):
        if path in ("/v2", "/v2/"):
            return self._answer(200, b"{}", "application/json")
        found = _REGISTRY_PATH.fullmatch(path)
        if not found:
            return self._answer(404, _registry_error("NAME_UNKNOWN", path), "application/json")
        file = Path(self.directory) / path.lstrip("/")
        if not file.is_file():
            code = "MANIFEST_UNKNOWN" if found.group("kind") == "manifests" else "BLOB_UNKNOWN"
            return self._answer(404, _registry_error(code, path), "application/json")
        data = file.read_bytes()
        kind = "application/octet-stream"
        if found.group("kind") == "manifests":
            kind = json.loads(data).get("mediaType", kind)
        return self._answer(200, data, kind,
                            digest="sha256:" + hashlib.sha256(data).hexdigest())

    def _answer(self, status: int, data: bytes, kind: str, digest: str = ""):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        if digest:
            self.send_header("Docker-Content-Digest", digest)
        self.end_headers()
        if status >= 400:  # an error's body, as send_error's: not counted with the downloads
            if self.command != "HEAD":
                self.wfile.write(data)
            return None
        return io.BytesIO(data)

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


# /v2/NAME/manifests/REFERENCE and /v2/NAME/blobs/DIGEST (NAME: lower-case path components).
_REGISTRY_PATH = re.compile(r"/v2/(?P<name>[a-z0-9._-]+(?:/[a-z0-9._-]+)*)/"
                            r"(?P<kind>manifests|blobs)/(?P<ref>[A-Za-z0-9_.:+-]+)")


def _registry_error(code: str, path: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": f"{path}: not in the stand-in "
                                                           "registry", "detail": {}}]}).encode()


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
    appends); ``bytes_served`` the body bytes sent; ``clear()`` empties both, ``paths()`` lists
    the request paths.
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
        self.bytes_served = 0
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

    def _count(self, size: int) -> None:
        with self._lock:
            self.bytes_served += size

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
            self.bytes_served = 0

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
