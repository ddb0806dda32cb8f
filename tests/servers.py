"""Loopback HTTP/1.1 test servers with injectable network faults.

`FaultServer` speaks just enough HTTP/1.1 (persistent connections, Content-Length
bodies, optional TLS) to exercise a real HTTP client over real sockets, and offers
ready-made misbehaving routes: hangs, trickles, resets, short bodies, gzip bombs,
endless bodies, scripted status sequences, idle keep-alive closes and slow TLS
handshakes.

Design notes:

* One daemon thread per connection, no thread per request; reading uses a manual
  buffer so that a request costs a couple of syscalls.
* Every blocking wait observes the server's stop `Event` (sockets carry a short
  timeout, handler waits use ``Event.wait``), and `FaultServer.stop` shuts every
  socket down, so ``stop()`` returns promptly even while handlers are mid-hang.
* Exceptions raised by route handlers never escape a server thread; they are
  collected in `FaultServer.errors` so tests can assert on them.
"""

from __future__ import annotations

import atexit
import contextlib
import html
import http
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "Exchange",
    "FaultServer",
    "Handler",
    "RecordedRequest",
    "gzip_bomb_bytes",
    "self_signed_cert",
]

Handler = Callable[["Exchange"], None]

#: Socket timeout used as a polling interval so that no read or write blocks for
#: longer than this without re-checking the stop event.
_POLL = 0.25
_RECV_SIZE = 65536
_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 2**20
_STREAM_CHUNK = bytes(256 * 1024)
_JOIN_BUDGET = 2.0
_COALESCE_LIMIT = 1 << 20


class _Stopping(Exception):
    """Raised inside a connection thread when the server is shutting down."""


class _PeerGone(Exception):
    """Raised when the client closed or reset the connection."""


# --------------------------------------------------------------------------- #
# Cached artefacts (per process)
# --------------------------------------------------------------------------- #

_cert_lock = threading.Lock()
_cert_paths: tuple[Path, Path] | None = None


def self_signed_cert() -> tuple[Path, Path]:
    """Return ``(cert_file, key_file)`` of a self-signed cert for localhost/127.0.0.1.

    Generated once per process with the ``openssl`` CLI; the temporary directory is
    removed at interpreter exit. The certificate carries subjectAltNames so that a
    client may also verify it by using ``cert_file`` as its CA file.
    """
    global _cert_paths
    with _cert_lock:
        if _cert_paths is None:
            tmp = Path(tempfile.mkdtemp(prefix="faultserver-tls-"))
            atexit.register(shutil.rmtree, tmp, ignore_errors=True)
            cert, key = tmp / "cert.pem", tmp / "key.pem"
            cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost"
            san = "subjectAltName=DNS:localhost,IP:127.0.0.1"
            subprocess.run(
                [*cmd.split(), "-addext", san, "-keyout", str(key), "-out", str(cert)],
                check=True,
                capture_output=True,
            )
            _cert_paths = (cert, key)
        return _cert_paths


_server_ctx_lock = threading.Lock()
_server_ctx: ssl.SSLContext | None = None


def _server_context() -> ssl.SSLContext:
    global _server_ctx
    with _server_ctx_lock:
        if _server_ctx is None:
            cert, key = self_signed_cert()
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            _server_ctx = ctx
        return _server_ctx


_bomb_lock = threading.Lock()
_bomb_cache: dict[int, bytes] = {}


def gzip_bomb_bytes(decoded_size: int) -> bytes:
    """Gzip stream that inflates to ``decoded_size`` zero bytes (cached per size).

    Compressed incrementally from one reused zero chunk, so the decoded payload is
    never materialised.
    """
    with _bomb_lock:
        cached = _bomb_cache.get(decoded_size)
        if cached is not None:
            return cached
        comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31 = gzip container
        zero = bytes(min(decoded_size, 2**20))
        view = memoryview(zero)
        parts: list[bytes] = []
        remaining = decoded_size
        while remaining > 0:
            n = min(remaining, len(zero))
            parts.append(comp.compress(view[:n]))
            remaining -= n
        parts.append(comp.flush())
        data = b"".join(parts)
        _bomb_cache[decoded_size] = data
        return data


# --------------------------------------------------------------------------- #
# Request / exchange
# --------------------------------------------------------------------------- #


@dataclass
class RecordedRequest:
    """One request as received by the server.

    ``headers`` has lower-cased names (repeated headers are joined with ``", "``);
    ``raw_headers`` keeps the original names and order. ``status`` is the status
    code the server answered with, or None if it never sent a status line.
    """

    method: str
    path: str
    version: str
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]]
    body: bytes
    connection_id: int
    started: float
    status: int | None = None

    @property
    def path_only(self) -> str:
        """``path`` without its query string."""
        return self.path.split("?", 1)[0]


class _Conn:
    """A client connection; all socket teardown goes through its lock."""

    def __init__(self, sock: socket.socket, conn_id: int) -> None:
        self.sock = sock
        self.id = conn_id
        self._lock = threading.Lock()
        self.closed = False

    def replace_socket(self, sock: socket.socket) -> None:
        with self._lock:
            self.sock = sock

    def shutdown(self) -> None:
        """Shut down both directions at the OS level (wakes a blocked reader).

        Uses the plain ``socket.socket.shutdown`` so that an SSL object in use by
        the connection thread is not touched from this thread.
        """
        with self._lock:
            if self.closed:
                return
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self.sock, socket.SHUT_RDWR)

    def close(self, *, reset: bool = False, graceful: bool = False) -> None:
        """Close once: RST if ``reset``, otherwise FIN (after SHUT_WR if ``graceful``)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            try:
                if reset:
                    self.sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                elif graceful:
                    socket.socket.shutdown(self.sock, socket.SHUT_WR)
            except OSError:
                pass
            with contextlib.suppress(OSError):
                self.sock.close()


class Exchange:
    """One request/response exchange, handed to functions given to `add_handler`.

    After the handler returns the connection is kept alive for the next request,
    unless `close` or `reset` was called or the client asked for ``Connection:
    close``. A handler that returns without writing anything (and without
    close/reset) gets an automatic 500 so the client does not wait forever;
    to stall deliberately, block in `wait`.

    Write through `send`/`respond`/`send_head` rather than ``sock.sendall``: the
    socket has a short polling timeout, which these methods handle.
    """

    def __init__(self, server: FaultServer, conn: _Conn, request: RecordedRequest) -> None:
        self.server = server
        self.request = request
        self._conn = conn
        self.sock: socket.socket = conn.sock
        self.wrote = False
        self.closing = False
        self.was_reset = False
        self.client_wants_close = _wants_close(request)

    # -- writing ---------------------------------------------------------- #

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Write raw bytes, handling partial writes and observing the stop event.

        Raises ``ConnectionError``/``OSError`` if the client has gone away.
        """
        self.wrote = True
        _send_all(self.sock, data, self.server._stop_event)

    def send_head(self, status: int, headers: dict[str, str] | None = None) -> None:
        """Write just the status line and the given headers (nothing added)."""
        self.send(self._head(status, headers))

    def _head(self, status: int, headers: dict[str, str] | None) -> bytes:
        self.request.status = status
        lines = [f"HTTP/1.1 {status} {_reason(status)}\r\n"]
        lines.extend(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def respond(
        self, status: int, body: bytes | str = b"", headers: dict[str, str] | None = None
    ) -> None:
        """Write a complete response with a Content-Length header.

        An explicit ``Content-Length`` in ``headers`` wins (so it can lie). The body
        is omitted for HEAD requests and for 1xx/204/304 statuses. ``Connection:
        close`` is added when the connection will be closed afterwards.
        """
        data = body.encode("utf-8") if isinstance(body, str) else body
        hdrs = dict(headers or {})
        lower = {k.lower() for k in hdrs}
        if "content-length" not in lower and not (status < 200 or status == 204):
            hdrs["Content-Length"] = str(len(data))
        if (self.closing or self.client_wants_close) and "connection" not in lower:
            hdrs["Connection"] = "close"
        head = self._head(status, hdrs)
        if status < 200 or status in (204, 304) or self.request.method == "HEAD":
            data = b""
        if len(data) <= _COALESCE_LIMIT:
            self.send(head + data)  # one segment, one syscall for ordinary pages
        else:
            self.send(head)
            self.send(data)

    # -- connection control ----------------------------------------------- #

    def close(self) -> None:
        """End the connection (FIN) once the handler returns."""
        self.closing = True

    def reset(self) -> None:
        """Abort the connection right now with a TCP RST (SO_LINGER 0 + close)."""
        self.was_reset = True
        self.closing = True
        self._conn.close(reset=True)

    def wait(self, seconds: float | None) -> bool:
        """Sleep on the stop event; True means the server is stopping."""
        return self.server._stop_event.wait(seconds)

    @property
    def stopping(self) -> bool:
        return self.server._stop_event.is_set()


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _wants_close(req: RecordedRequest) -> bool:
    tokens = {t.strip().lower() for t in req.headers.get("connection", "").split(",")}
    if req.version == "HTTP/1.0":
        return "keep-alive" not in tokens
    return "close" in tokens


def _send_all(
    sock: socket.socket, data: bytes | bytearray | memoryview, stop: threading.Event
) -> None:
    view = memoryview(data).cast("B")
    while view:
        if stop.is_set():
            raise _Stopping
        try:
            n = sock.send(view)
        except TimeoutError:
            continue  # client not reading right now; re-check stop and retry
        view = view[n:]


# --------------------------------------------------------------------------- #
# Request reading
# --------------------------------------------------------------------------- #


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Reader:
    """Buffered request reader over a socket with a polling timeout."""

    def __init__(self, conn: _Conn, stop: threading.Event, idle_close_after: float | None):
        self.conn = conn
        self.stop = stop
        self.idle_close_after = idle_close_after
        self.buf = bytearray()
        self.last_activity = time.monotonic()

    def _recv(self, idle_deadline: float | None) -> bool:
        """Receive more bytes; False on EOF or when the idle deadline passed."""
        sock = self.conn.sock
        while True:
            if self.stop.is_set():
                raise _Stopping
            timeout = _POLL
            if idle_deadline is not None:
                remaining = idle_deadline - time.monotonic()
                if remaining <= 0:
                    return False
                timeout = min(timeout, remaining)
            if timeout != _POLL:
                sock.settimeout(timeout)
            try:
                data = sock.recv(_RECV_SIZE)
            except TimeoutError:
                continue
            except (ConnectionError, ssl.SSLError) as exc:
                raise _PeerGone from exc
            finally:
                if timeout != _POLL:
                    sock.settimeout(_POLL)
            if not data:
                return False
            self.buf += data
            self.last_activity = time.monotonic()
            return True

    def read_head(self) -> tuple[bytes, float] | None:
        """Return (head bytes without the blank line, monotonic time of request line).

        None means the connection ended cleanly (EOF or idle timeout) between requests.
        """
        started: float | None = None
        scanned = 0
        while True:
            while self.buf.startswith(b"\r\n"):  # stray CRLFs between requests are allowed
                del self.buf[:2]
                scanned = 0
            if started is None and b"\n" in self.buf:
                started = time.monotonic()
            end = self.buf.find(b"\r\n\r\n", max(0, scanned - 3))
            if end >= 0:
                head = bytes(self.buf[:end])
                del self.buf[: end + 4]
                return head, started if started is not None else time.monotonic()
            scanned = len(self.buf)
            if scanned > _MAX_HEAD:
                raise _BadRequest(431, "request head too large")
            idle_deadline = None
            if not self.buf and self.idle_close_after is not None:
                idle_deadline = self.last_activity + self.idle_close_after
            if not self._recv(idle_deadline):
                if self.buf:
                    raise _PeerGone
                return None

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._recv(None):
                raise _PeerGone
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data


def _parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, f"bad request line {lines[0]!r}")
    method, target, version = parts
    raw_headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _BadRequest(400, f"bad header line {line!r}")
        raw_headers.append((name, value.strip()))
    return method, target, version, raw_headers


# --------------------------------------------------------------------------- #
# The server
# --------------------------------------------------------------------------- #


class FaultServer:
    """Threaded loopback HTTP/1.1 server whose routes can misbehave on purpose.

    Use as a context manager (``with FaultServer() as srv: ...``) or call
    `start`/`stop`. Routes can be added before or after starting.

    Faults configured at construction:

    * ``tls``: serve HTTPS with a per-process self-signed certificate (`ca_file`).
    * ``handshake_delay``: after accepting, wait this long before the TLS handshake
      (for plain TCP: before reading the request) -- a slow handshake.
    * ``idle_close_after``: close (FIN) a connection on which no request byte has
      arrived for this long, whether before its first request or between requests.

    Observations (`requests`, counters) are updated under one lock; the counter
    attributes are plain ints that are safe to read at any time. A hung handler
    keeps its thread (and `in_flight`) until `stop`, even if the client left.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        tls: bool = False,
        handshake_delay: float = 0.0,
        idle_close_after: float | None = None,
    ) -> None:
        self.tls = tls
        self.handshake_delay = handshake_delay
        self.idle_close_after = idle_close_after
        self.port = 0

        self.connections_accepted = 0
        """TCP connections accepted (counted at accept time, before any TLS handshake)."""
        self.handshakes_completed = 0
        self.handshakes_failed = 0
        self.open_connections = 0
        self.max_open_connections = 0
        self.in_flight = 0
        self.max_concurrent = 0
        """Highest number of requests being handled at once (request read → handler done)."""
        self.errors: list[BaseException] = []
        """Exceptions raised by route handlers (the client got a 500 or a closed socket)."""

        self._lock = threading.Lock()
        self._requests_cond = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._routes: dict[str, Handler] = {}
        self._sequence_counters: dict[str, int] = {}
        self._stop_event = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._conns: set[_Conn] = set()
        self._threads: set[threading.Thread] = set()
        self._next_conn_id = 0
        self._ssl_ctx = _server_context() if tls else None

    # -- lifecycle -------------------------------------------------------- #

    def start(self) -> FaultServer:
        """Bind 127.0.0.1 on an ephemeral port and start accepting; returns self."""
        if self._listener is not None:
            raise RuntimeError("server already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, 0))
            listener.listen(512)
            listener.settimeout(_POLL)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"FaultServer-accept-{self.port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, abort every connection and join all threads (bounded)."""
        if self._listener is None:
            return
        with self._lock:
            if self._stop_event.is_set():
                return
            self._stop_event.set()
            self._requests_cond.notify_all()
            conns = list(self._conns)
            threads = list(self._threads)
        # Wakes a blocked accept() on Linux; elsewhere the accept poll timeout does.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + _JOIN_BUDGET
        if self._accept_thread is not None:
            self._accept_thread.join(max(0.0, deadline - time.monotonic()))
        self._listener.close()
        for conn in conns:
            conn.shutdown()
        current = threading.current_thread()  # stop() may be called from a handler
        for thread in threads:
            if thread is not current:
                thread.join(max(0.0, deadline - time.monotonic()))
        for conn in conns:
            conn.close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def stopped(self) -> bool:
        return self._stop_event.is_set()

    def url(self, path: str = "/") -> str:
        """Absolute URL for ``path`` on this server (https when ``tls``)."""
        if not path.startswith("/"):
            path = "/" + path
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}{path}"

    @property
    def base_url(self) -> str:
        return self.url("/")[:-1]

    @property
    def ca_file(self) -> Path:
        """The self-signed certificate, usable as a client's CA file (TLS servers)."""
        return self_signed_cert()[0]

    # -- routes ------------------------------------------------------------ #

    def add_handler(self, path: str, fn: Handler) -> None:
        """Route ``path`` to ``fn(exchange)``.

        Matching tries the exact request target first, then the target without its
        query string.
        """
        with self._lock:
            self._routes[path] = fn

    def add(
        self,
        path: str,
        body: bytes | str = b"",
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        content_type: str = "text/html; charset=utf-8",
    ) -> None:
        """A fixed response; ``headers`` (e.g. Location, ETag, Set-Cookie) pass through."""
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        hdrs = {"Content-Type": content_type, **(headers or {})}

        def handler(ex: Exchange) -> None:
            ex.respond(status, data, hdrs)

        self.add_handler(path, handler)

    def add_page(
        self,
        path: str,
        links: Iterable[str] = (),
        *,
        title: str | None = None,
        extra_html: str = "",
    ) -> None:
        """An HTML page with one ``<a href>`` per link (hrefs are HTML-escaped)."""
        title = path if title is None else title
        anchors = "\n".join(
            f'<li><a href="{html.escape(link, quote=True)}">{html.escape(link)}</a></li>'
            for link in links
        )
        page = (
            '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title></head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n<ul>\n{anchors}\n</ul>\n{extra_html}\n"
            "</body></html>\n"
        )
        self.add(path, page)

    def add_redirect(self, path: str, location: str, status: int = 302) -> None:
        self.add(path, b"", status=status, headers={"Location": location})

    # -- ready-made faults ---------------------------------------------------- #

    def add_hang(self, path: str) -> None:
        """Read the request, then never answer (until `stop`)."""

        def handler(ex: Exchange) -> None:
            ex.wait(None)

        self.add_handler(path, handler)

    def add_trickle(
        self, path: str, total: int = 10_000, chunk: int = 1, interval: float = 0.1
    ) -> None:
        """Headers with Content-Length=total, then ``chunk`` bytes every ``interval`` s."""
        piece = b"x" * chunk

        def handler(ex: Exchange) -> None:
            ex.send_head(200, {"Content-Type": "text/plain", "Content-Length": str(total)})
            sent = 0
            while sent < total:
                if ex.wait(interval):
                    return
                n = min(chunk, total - sent)
                ex.send(piece[:n])
                sent += n

        self.add_handler(path, handler)

    def add_reset_mid_body(self, path: str, declared: int = 100_000, sent: int = 1_000) -> None:
        """Declare ``declared`` bytes, send ``sent`` of them, then abort with RST."""

        def handler(ex: Exchange) -> None:
            ex.send_head(200, {"Content-Type": "text/plain", "Content-Length": str(declared)})
            ex.send(b"r" * sent)
            ex.reset()

        self.add_handler(path, handler)

    def add_short_body(self, path: str, declared: int = 1000, sent: int = 10) -> None:
        """Declare ``declared`` bytes, send only ``sent``, then close cleanly (FIN)."""

        def handler(ex: Exchange) -> None:
            ex.send_head(200, {"Content-Type": "text/plain", "Content-Length": str(declared)})
            ex.send(b"s" * sent)
            ex.close()

        self.add_handler(path, handler)

    def add_status_sequence(
        self,
        path: str,
        statuses: list[int | tuple[int, dict[str, str]]],
        body: bytes | str = b"ok",
    ) -> None:
        """The n-th request to ``path`` gets ``statuses[n]``; the last entry repeats.

        Entries are a status or ``(status, headers)``, e.g. ``(503, {"Retry-After": "1"})``.
        """
        if not statuses:
            raise ValueError("statuses must not be empty")
        entries = [(s, {}) if isinstance(s, int) else (s[0], dict(s[1])) for s in statuses]

        def handler(ex: Exchange) -> None:
            with self._lock:
                n = self._sequence_counters.get(path, 0)
                self._sequence_counters[path] = n + 1
            status, headers = entries[min(n, len(entries) - 1)]
            ex.respond(status, body, {"Content-Type": "text/plain", **headers})

        self.add_handler(path, handler)

    def add_gzip_bomb(self, path: str, decoded_size: int = 200 * 2**20) -> None:
        """``Content-Encoding: gzip`` body inflating to ``decoded_size`` zero bytes.

        The compressed body is built now (once per size per process), not per request.
        """
        data = gzip_bomb_bytes(decoded_size)
        headers = {"Content-Type": "text/html; charset=utf-8", "Content-Encoding": "gzip"}
        self.add_handler(path, lambda ex: ex.respond(200, data, headers))

    def add_huge(self, path: str, size: int = 2**30) -> None:
        """Declared Content-Length=size, streamed from a reused zero chunk.

        Goes as fast as the client reads; ends when the client disconnects or the
        server stops (the connection is then closed).
        """

        def handler(ex: Exchange) -> None:
            ex.send_head(
                200, {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            )
            if ex.request.method == "HEAD":
                return
            chunk = memoryview(_STREAM_CHUNK)
            remaining = size
            try:
                while remaining > 0:
                    n = min(remaining, len(chunk))
                    ex.send(chunk[:n])
                    remaining -= n
            except (ConnectionError, ssl.SSLError):
                ex.close()

        self.add_handler(path, handler)

    # -- observations --------------------------------------------------------- #

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of all requests in arrival order."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self._requests if r.path == path]

    def count(self, path: str) -> int:
        """Number of requests for exactly ``path`` (query string included)."""
        with self._lock:
            return sum(1 for r in self._requests if r.path == path)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` requests arrived; False on timeout or stop."""
        with self._requests_cond:
            return (
                self._requests_cond.wait_for(
                    lambda: len(self._requests) >= n or self._stop_event.is_set(), timeout
                )
                and len(self._requests) >= n
            )

    # -- internals ---------------------------------------------------------- #

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stop_event.is_set():
            try:
                sock, _addr = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop_event.is_set():
                    return
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(_POLL)
            with self._lock:
                if self._stop_event.is_set():
                    sock.close()
                    return
                conn = _Conn(sock, self._next_conn_id)
                self._next_conn_id += 1
                self.connections_accepted += 1
                self.open_connections += 1
                self.max_open_connections = max(self.max_open_connections, self.open_connections)
                thread = threading.Thread(
                    target=self._serve_connection,
                    args=(conn,),
                    name=f"FaultServer-conn-{self.port}-{conn.id}",
                    daemon=True,
                )
                self._conns.add(conn)
                self._threads.add(thread)
            thread.start()

    def _serve_connection(self, conn: _Conn) -> None:
        try:
            if self.handshake_delay > 0 and self._stop_event.wait(self.handshake_delay):
                return
            if self._ssl_ctx is not None and not self._handshake(conn):
                return
            reader = _Reader(conn, self._stop_event, self.idle_close_after)
            while not conn.closed:
                if not self._serve_one(conn, reader):
                    break
        except (_Stopping, _PeerGone, ConnectionError, ssl.SSLError):
            pass
        except Exception as exc:  # never let a server thread die with a traceback
            if not (self._stop_event.is_set() or conn.closed):
                with self._lock:
                    self.errors.append(exc)
        finally:
            conn.close(graceful=not self._stop_event.is_set())
            with self._lock:
                self._conns.discard(conn)
                self._threads.discard(threading.current_thread())
                self.open_connections -= 1

    def _handshake(self, conn: _Conn) -> bool:
        assert self._ssl_ctx is not None
        try:
            tls_sock = self._ssl_ctx.wrap_socket(
                conn.sock, server_side=True, do_handshake_on_connect=False
            )
        except OSError:
            return False
        conn.replace_socket(tls_sock)
        tls_sock.settimeout(_POLL)
        while True:
            if self._stop_event.is_set():
                return False
            try:
                tls_sock.do_handshake()
                break
            except TimeoutError:
                continue
            except OSError:  # includes SSLError: plain HTTP, client gave up, ...
                with self._lock:
                    self.handshakes_failed += 1
                return False
        with self._lock:
            self.handshakes_completed += 1
        return True

    def _serve_one(self, conn: _Conn, reader: _Reader) -> bool:
        """Read and answer one request; False when the connection should end."""
        stop = self._stop_event
        try:
            got = reader.read_head()
            if got is None:
                return False
            head, started = got
            method, target, version, raw_headers = _parse_head(head)
            headers: dict[str, str] = {}
            for name, value in raw_headers:
                key = name.lower()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            if "chunked" in headers.get("transfer-encoding", "").lower():
                raise _BadRequest(411, "chunked request bodies are not supported")
            try:
                length = int(headers.get("content-length", "0"))
            except ValueError:
                raise _BadRequest(400, "bad Content-Length") from None
            if length < 0 or length > _MAX_BODY:
                raise _BadRequest(413, "request body too large")
            if length and headers.get("expect", "").lower() == "100-continue":
                _send_all(conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n", stop)
            body = reader.read_exact(length) if length else b""
        except _BadRequest as exc:
            msg = f"{exc}\n".encode()
            _send_all(
                conn.sock,
                f"HTTP/1.1 {exc.status} {_reason(exc.status)}\r\nContent-Length: {len(msg)}"
                "\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n".encode()
                + msg,
                stop,
            )
            return False

        request = RecordedRequest(
            method=method,
            path=target,
            version=version,
            headers=headers,
            raw_headers=raw_headers,
            body=body,
            connection_id=conn.id,
            started=started,
        )
        with self._lock:
            self._requests.append(request)
            self._requests_cond.notify_all()
            handler = self._routes.get(target) or self._routes.get(target.split("?", 1)[0])
            self.in_flight += 1
            self.max_concurrent = max(self.max_concurrent, self.in_flight)

        ex = Exchange(self, conn, request)
        try:
            if handler is None:
                ex.respond(404, b"not found\n", {"Content-Type": "text/plain"})
            else:
                self._run_handler(handler, ex)
        finally:
            with self._lock:
                self.in_flight -= 1
        return not (ex.closing or ex.client_wants_close or conn.closed)

    def _run_handler(self, handler: Handler, ex: Exchange) -> None:
        try:
            handler(ex)
        except (_Stopping, _PeerGone, ConnectionError, ssl.SSLError):
            ex.close()
            return
        except Exception as exc:
            if self._stop_event.is_set() or ex._conn.closed:
                ex.close()
                return
            with self._lock:
                self.errors.append(exc)
            wrote = ex.wrote
            ex.close()
            if not wrote:
                ex.respond(500, f"handler error: {exc!r}\n", {"Content-Type": "text/plain"})
            return
        if self._stop_event.is_set():
            ex.close()
        elif not ex.wrote and not ex.closing:
            error = RuntimeError(f"handler for {ex.request.path} wrote no response")
            with self._lock:
                self.errors.append(error)
            ex.close()
            ex.respond(500, f"{error}\n", {"Content-Type": "text/plain"})
