"""A tiny threaded forward proxy on loopback, for tests of proxy pools.

Plain http: absolute-form requests (`GET http://host:port/path HTTP/1.1`) are forwarded
to the origin over one kept-alive upstream connection per client connection, and the
response relayed with a Content-Length, keeping the client's connection alive.
CONNECT is tunnelled (https), unless the proxy refuses it.

It counts connections and requests, and can misbehave on purpose:

* ``credentials="user:pass"``: requests without that Proxy-Authorization get a 407;
* ``refuse=True``: every request (and CONNECT) gets a 403;
* ``drop_reused=N``: the first N times a request arrives on a kept-alive connection
  (not its first), the connection is closed without an answer (the stale race).

Also `tinyproxy()`: Debian's tinyproxy in the foreground on a free port, with a
generated configuration (for https through a real CONNECT proxy).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
              "te", "trailers", "transfer-encoding", "upgrade", "content-length"}


class ForwardProxy:
    def __init__(self, *, credentials: str | None = None, refuse: bool = False,
                 drop_reused: int = 0) -> None:
        self.credentials = credentials
        self.refuse = refuse
        self.drop_reused = drop_reused
        self.port = 0
        self.connections = 0  # accepted
        self.requests = 0  # answered or dropped, CONNECTs included
        self.open_connections = 0
        self.max_open_connections = 0
        self.dropped = 0
        self.max_requests_per_connection = 0
        self.seen: list[tuple[str, str, dict[str, str]]] = []  # method, target, headers
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._socks: set[socket.socket] = set()

    @property
    def url(self) -> str:
        auth = f"{self.credentials}@" if self.credentials else ""
        return f"http://{auth}127.0.0.1:{self.port}"

    def start(self) -> ForwardProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> ForwardProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True,  # type: ignore[arg-type]
                                  name=f"ForwardProxy-{self.port}")
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self.open_connections += 1
                self.max_open_connections = max(self.max_open_connections,
                                                self.open_connections)
                self._socks.add(sock)
            self._spawn(self._serve, sock)

    def _serve(self, sock: socket.socket) -> None:
        upstreams: dict[tuple[str, int], http.client.HTTPConnection] = {}
        reader = sock.makefile("rb")
        served = 0
        try:
            while not self._stop.is_set():
                head = _read_head(reader)
                if head is None:
                    return
                method, target, headers = head
                body = reader.read(int(headers.get("content-length", "0") or 0))
                with self._lock:
                    self.requests += 1
                    self.seen.append((method, target, headers))
                    drop = served > 0 and self.dropped < self.drop_reused
                    if drop:
                        self.dropped += 1
                served += 1
                with self._lock:
                    self.max_requests_per_connection = max(self.max_requests_per_connection,
                                                           served)
                if drop:
                    return  # closes without an answer
                if self.refuse:
                    _answer(sock, 403, b"refused by the test proxy")
                    continue
                if self.credentials and headers.get("proxy-authorization") != \
                        "Basic " + base64.b64encode(self.credentials.encode()).decode():
                    _answer(sock, 407, b"credentials, please",
                            {"Proxy-Authenticate": 'Basic realm="test"'})
                    continue
                if method == "CONNECT":
                    self._tunnel(sock, target)
                    return
                self._forward(sock, method, target, headers, body, upstreams)
        except OSError:
            return
        finally:
            for upstream in upstreams.values():
                upstream.close()
            reader.close()
            sock.close()
            with self._lock:
                self.open_connections -= 1
                self._socks.discard(sock)

    def _forward(self, sock: socket.socket, method: str, target: str,
                 headers: dict[str, str], body: bytes,
                 upstreams: dict[tuple[str, int], http.client.HTTPConnection]) -> None:
        parts = urlsplit(target)
        where = (parts.hostname or "", parts.port or 80)
        upstream = upstreams.get(where)
        if upstream is None:
            upstream = upstreams[where] = http.client.HTTPConnection(*where, timeout=10)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        sent = {k: v for k, v in headers.items() if k not in HOP_BY_HOP}
        upstream.request(method, path, body=body or None, headers=sent)
        response = upstream.getresponse()
        content = response.read()
        relayed = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
        relayed["Via"] = "1.1 testproxy"
        _answer(sock, response.status, content, relayed, reason=response.reason)

    def _tunnel(self, sock: socket.socket, target: str) -> None:
        host, _, port = target.rpartition(":")
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
        except OSError:
            _answer(sock, 502, b"cannot reach the target")
            return
        sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        with upstream:
            while not self._stop.is_set():
                ready, _, _ = select.select([sock, upstream], [], [], 0.25)
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    (upstream if source is sock else sock).sendall(data)


def _read_head(reader: object) -> tuple[str, str, dict[str, str]] | None:
    line = reader.readline(65537)  # type: ignore[attr-defined]
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        line = reader.readline(65537)  # type: ignore[attr-defined]
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return method, target, headers


def _answer(sock: socket.socket, status: int, body: bytes,
            headers: dict[str, str] | None = None, reason: str = "") -> None:
    reason = reason or http.HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}",
             "Connection: keep-alive"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def closed_port() -> int:
    """A loopback port nobody listens on (a dead proxy)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def tinyproxy(tmp: Path, connect_ports: list[int]) -> Iterator[int]:
    """Debian's tinyproxy, in the foreground on a free loopback port; yields the port.

    Required in CI (`.ci/run` installs it), skipped elsewhere when missing."""
    binary = shutil.which("tinyproxy")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tinyproxy is not installed (.ci/run installs it)")
        pytest.skip("tinyproxy is not installed")
    port = closed_port()
    conf = tmp / "tinyproxy.conf"
    conf.write_text("\n".join([
        f"Port {port}", "Listen 127.0.0.1", "Allow 127.0.0.1", "Timeout 30",
        "MaxClients 64", "LogLevel Info",
        *(f"ConnectPort {p}" for p in connect_ports), ""]))
    log = (tmp / "tinyproxy.log").open("wb")
    process = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:  # ready when it accepts a connection
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("tinyproxy did not start: "
                                       + (tmp / "tinyproxy.log").read_text()) from None
                time.sleep(0.02)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
