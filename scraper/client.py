"""The shared HTTP client: the one module that knows urllib3 and tenacity.

One `urllib3.PoolManager` serves every worker: `maxsize` = `crawl.per_host` with
`block=True`, so the pool itself caps connections per origin; one `ssl.SSLContext`.

- Every response is read in chunks up to `http.max_body` and finished in `finally`:
  a small remainder is drained so the connection is reused, a large or unknown one is
  closed, and the slot always goes back to the pool (`close()` alone leaks it).
- Pooled connections idle longer than `http.idle_timeout` are closed before reuse. The
  race that remains (the server closes as we send) is retried once, at once, and only
  for a replayable request on a reused connection (`stale_retries`, not `retries`).
- Connection subclasses count real TCP connects and requests on reused connections, and
  register each socket with the request's `Exchange`, so a watchdog can shut it down
  from another thread in any phase (DNS is resolved in a helper thread with a timeout).
- urllib3 errors become the project's `FetchError` subclasses here and nowhere else.
- `RetryPolicy` holds tenacity's retry, stop and wait strategies; the scheduler does
  the waiting, so no worker thread sleeps through a backoff.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import ipaddress
import logging
import queue
import socket
import ssl
import threading
import time
import warnings
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import tenacity
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    EmptyPoolError,
    HTTPError,
    InsecureRequestWarning,
    LocationValueError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.util import connection as urllib3_connection
from urllib3.util import make_headers
from urllib3.util.request import ACCEPT_ENCODING
from urllib3.util.ssl_ import create_urllib3_context
from urllib3.util.url import parse_url

from .errors import (
    Cancelled,
    ConnectError,
    ConnectionBroken,
    FetchError,
    FetchTimeout,
    StatusError,
    TooLarge,
)
from .settings import HttpSettings, RetrySettings
from .stats import Stats

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
DRAIN_CAP = 64 * 1024
REPLAYABLE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
DNS_TTL = 300.0


class Exchange:
    """One request in flight: the socket it uses and whether it was cancelled.

    The worker thread owns it; the watchdog (another thread) may call `cancel()`.
    `sock.shutdown()` is safe across threads and wakes a blocked recv, connect or TLS
    handshake; `close()` would not be.
    """

    __slots__ = ("_lock", "cancel_reason", "connect_started", "connected", "expires", "reused",
                 "sock", "tcp_connected", "tls")

    def __init__(self, expires: float) -> None:
        self._lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.cancel_reason: str | None = None
        self.expires = expires
        self.reused = False
        self.connect_started = self.tcp_connected = self.connected = 0.0
        self.tls = False

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self.sock = sock
            reason = self.cancel_reason
        if reason is not None:
            _shutdown(sock)
            raise Cancelled(f"request cancelled: {reason}", reason=reason)

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self.cancel_reason is not None:
                return
            self.cancel_reason = reason
            sock = self.sock
        _shutdown(sock)


def _shutdown(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


_current = threading.local()


def _exchange() -> Exchange | None:
    return getattr(_current, "exchange", None)


class _Lookup:
    __slots__ = ("done", "error", "infos")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.infos: list[Any] = []
        self.error: BaseException | None = None


class Resolver:
    """getaddrinfo in helper threads, with a timeout and a small TTL cache.

    getaddrinfo cannot be interrupted: running it in a daemon thread lets the caller give
    up on time, and lets the process exit at a deadline even while a lookup hangs (the
    threads of a ThreadPoolExecutor are joined at exit). Callers asking for the same
    name share one lookup.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], tuple[float, list[Any]]] = {}
        self._pending: dict[tuple[str, int], _Lookup] = {}
        self._lock = threading.Lock()

    def resolve(self, host: str, port: int, timeout: float) -> list[Any]:
        key = (host, port)
        with self._lock:
            hit = self._cache.get(key)
            if hit and hit[0] > time.monotonic():
                return hit[1]
            lookup = self._pending.get(key)
            if lookup is None:
                lookup = self._pending[key] = _Lookup()
                threading.Thread(target=self._run, args=(key, lookup), daemon=True,
                                 name="scraper-dns").start()
        if not lookup.done.wait(max(timeout, 0.001)):
            raise TimeoutError(f"DNS lookup of {host} timed out")
        if lookup.error is not None:
            raise lookup.error
        return lookup.infos

    def _run(self, key: tuple[str, int], lookup: _Lookup) -> None:
        try:
            lookup.infos = socket.getaddrinfo(key[0], key[1],
                                              urllib3_connection.allowed_gai_family(),
                                              socket.SOCK_STREAM)
        except OSError as exc:
            lookup.error = exc
        with self._lock:
            if lookup.error is None:
                self._cache[key] = (time.monotonic() + DNS_TTL, lookup.infos)
            self._pending.pop(key, None)
        lookup.done.set()

    def close(self) -> None:
        """Nothing to release: lookup threads are daemons that end on their own."""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class _TrackedConnectionMixin:
    """Counts connects and reuses; registers sockets; resolves DNS with a timeout."""

    stats: Stats
    resolver: Resolver
    _requests_sent = 0
    idle_since = 0.0

    def _new_conn(self) -> socket.socket:
        exchange = _exchange()
        if exchange is not None and exchange.cancel_reason is not None:
            raise Cancelled("request cancelled", reason=exchange.cancel_reason)
        if exchange is not None:
            exchange.connect_started = time.monotonic()
        sock = self._connect_resolved()
        if exchange is not None:
            exchange.tcp_connected = time.monotonic()
        self._requests_sent = 0
        self.stats.inc("connections_opened")
        if exchange is not None:
            exchange.attach(sock)
        return sock

    def _connect_resolved(self) -> socket.socket:
        host, port, timeout = self._dns_host, self.port, self.timeout  # type: ignore[attr-defined]
        if _is_ip(host) or not isinstance(timeout, int | float):
            return super()._new_conn()  # type: ignore[misc, no-any-return]
        started = time.monotonic()
        try:
            infos = self.resolver.resolve(host, port, timeout)
        except socket.gaierror as exc:
            raise NameResolutionError(host, self, exc) from exc  # type: ignore[arg-type]
        except OSError as exc:
            raise ConnectTimeoutError(self, f"DNS lookup of {host} timed out") from exc
        error: Exception | None = None
        for family, socktype, proto, _, address in infos:
            remaining = timeout - (time.monotonic() - started)
            if remaining <= 0:
                break
            sock = socket.socket(family, socktype, proto)
            try:
                for option in self.socket_options or ():  # type: ignore[attr-defined]
                    sock.setsockopt(*option)
                sock.settimeout(remaining)
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        if error is None or isinstance(error, TimeoutError):
            raise ConnectTimeoutError(self, f"connection to {host} timed out")
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}")  # type: ignore[arg-type]

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        exchange = _exchange()
        if exchange is not None:
            exchange.connected = time.monotonic()  # TCP, and TLS for https
            exchange.tls = isinstance(self, HTTPSConnection)

    def close(self) -> None:
        if self.sock is not None:  # type: ignore[attr-defined]
            self.stats.inc("connections_closed")
        super().close()  # type: ignore[misc]

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> None:
        sock = self.sock  # type: ignore[attr-defined]
        reused = sock is not None and self._requests_sent > 0
        exchange = _exchange()
        if exchange is not None:
            exchange.reused = reused
            if reused:
                exchange.attach(sock)
        if reused:
            self.stats.inc("connections_reused")
        super().request(method, url, *args, **kwargs)  # type: ignore[misc]
        self._requests_sent += 1


class _LongestIdleFirstQueue(queue.Queue):  # type: ignore[type-arg]
    """The pool's queue: open connections first, the one idle longest first; then the
    `None` placeholders that stand for connections not opened yet.

    urllib3's LIFO order lets the connections at the bottom sit idle until the idle
    timeout closes them, so a busy crawl keeps reopening connections; rotating through
    the open ones keeps all of them warm, and a new one is opened only when every open
    one is in use.
    """

    def _init(self, maxsize: int) -> None:
        self.queue: deque[Any] = deque()
        self._placeholders = 0

    def _qsize(self) -> int:
        return len(self.queue) + self._placeholders

    def _put(self, item: Any) -> None:
        if item is None:
            self._placeholders += 1
        else:
            self.queue.append(item)

    def _get(self) -> Any:
        if self.queue:
            return self.queue.popleft()
        self._placeholders -= 1
        return None

    def close_idle(self, idle_before: float) -> int:
        """Close the pooled connections idle since before `idle_before` (the oldest are at
        the front), leaving placeholders: frees sockets of hosts no longer crawled."""
        closed = []
        with self.mutex:
            while self.queue and self.queue[0].idle_since < idle_before:
                closed.append(self.queue.popleft())
                self._placeholders += 1
        for conn in closed:
            conn.close()
        return len(closed)


class _IdleEvictingPoolMixin:
    """Closes pooled connections idle longer than `idle_timeout` before they are reused."""

    QueueCls = _LongestIdleFirstQueue
    idle_timeout: float

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            conn.idle_since = time.monotonic()
        super()._put_conn(conn)  # type: ignore[misc]

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout=timeout)  # type: ignore[misc]
        if (
            conn.sock is not None
            and conn.idle_since
            and time.monotonic() - conn.idle_since > self.idle_timeout
        ):
            conn.close()  # reconnects on use, like a connection the server dropped
        return conn


@dataclass(slots=True)
class FetchResult:
    """A response as the client returns it: fully read, connection already released."""

    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed: float
    reused: bool
    timings: dict[str, float]


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date)."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class RetryPolicy:
    """tenacity's strategies deciding whether and when to try a request again.

    Attempts count every try (`retry.attempts = 3`: the first and two retries).
    Waits grow exponentially from `retry.backoff` with up to `retry.backoff` of jitter,
    capped at `retry.max_backoff`; a `Retry-After` wins when it is longer.
    Non-replayable methods are retried only for errors raised before anything was sent.
    """

    def __init__(self, settings: RetrySettings) -> None:
        self.statuses = frozenset(settings.statuses)
        self._stop = tenacity.stop_after_attempt(settings.attempts)
        self._wait = tenacity.wait_exponential(
            multiplier=settings.backoff, max=settings.max_backoff
        ) + tenacity.wait_random(0, settings.backoff)
        self._max_backoff = settings.max_backoff

    @staticmethod
    def _retryable(method: str, exc: BaseException) -> bool:
        if not isinstance(exc, FetchError) or not exc.retryable:
            return False
        if method in REPLAYABLE:
            return True
        return isinstance(exc, ConnectError | StatusError)

    def next_wait(self, method: str, attempt: int, error: FetchError) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None when not to retry."""
        state = tenacity.RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = attempt
        outcome: Any = tenacity.Future(attempt)
        outcome.set_exception(error)
        state.outcome = outcome
        # A predicate per call: the policy is shared by every worker thread, so the
        # method must not be kept on it between calls.
        method = method.upper()
        retry = tenacity.retry_if_exception(lambda exc: self._retryable(method, exc))
        if not retry(state) or self._stop(state):
            return None
        wait = self._wait(state)
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            wait = max(wait, min(retry_after, max(self._max_backoff, 0.0)))
        return float(wait)


class Client:
    """One per crawl: the PoolManager, the watchdog and the socket registry."""

    def __init__(self, http: HttpSettings, *, per_host: int, stats: Stats,
                 retry_statuses: frozenset[int] = frozenset()) -> None:
        self.settings = http
        self.stats = stats
        self.retry_statuses = retry_statuses
        self._resolver = Resolver()
        self._exchanges: set[Exchange] = set()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.deadline: float | None = None
        self._pool_keys: dict[str, tuple[str, int, str]] = {}

        if http.verify_tls:
            context = create_urllib3_context()
            context.load_default_certs()
        else:
            context = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
            context.check_hostname = False
            # The user turned verification off on purpose: say it once, not per request.
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
            log.warning("TLS certificate verification is off (http.verify_tls = false)")
        attrs = {"stats": stats, "resolver": self._resolver}
        http_conn = type("TrackedHTTPConnection", (_TrackedConnectionMixin, HTTPConnection), attrs)
        https_conn = type(
            "TrackedHTTPSConnection", (_TrackedConnectionMixin, HTTPSConnection), attrs
        )
        pool_attrs = {"idle_timeout": http.idle_timeout}
        http_pool = type(
            "IdleEvictingHTTPPool", (_IdleEvictingPoolMixin, HTTPConnectionPool),
            {**pool_attrs, "ConnectionCls": http_conn},
        )
        https_pool = type(
            "IdleEvictingHTTPSPool", (_IdleEvictingPoolMixin, HTTPSConnectionPool),
            {**pool_attrs, "ConnectionCls": https_conn},
        )
        pool_kw: dict[str, Any] = {"cert_reqs": "CERT_NONE"} if not http.verify_tls else {}
        pool_kw.update(num_pools=http.max_hosts, maxsize=per_host, block=True, retries=False,
                       ssl_context=context)
        self._proxied = bool(http.proxy)
        if http.proxy:
            # Credentials in the proxy URL become a Proxy-Authorization header sent to
            # the proxy only (https goes through a CONNECT tunnel); never logged.
            proxy = parse_url(http.proxy)
            headers = make_headers(proxy_basic_auth=proxy.auth) if proxy.auth else None
            self._pm = urllib3.ProxyManager(proxy._replace(auth=None).url,
                                            proxy_headers=headers, **pool_kw)
        else:
            self._pm = urllib3.PoolManager(**pool_kw)
        self._pm.pool_classes_by_scheme = {"http": http_pool, "https": https_pool}
        self._base_headers = {
            "User-Agent": http.user_agent,
            "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            # gzip and deflate always; br and zstd when their decoders are installed.
            "Accept-Encoding": ACCEPT_ENCODING.replace(",", ", "),
            **http.headers,
        }
        self._watchdog = threading.Thread(target=self._watch, name="scraper-watchdog",
                                          daemon=True)
        self._watchdog.start()

    # -- cancellation -------------------------------------------------------------------

    def _watch(self) -> None:
        """Cancel exchanges past their own time limit (`http.request_timeout` or deadline),
        and every second close pooled connections idle past `http.idle_timeout`."""
        next_sweep = time.monotonic() + 1.0
        while not self._closing.wait(0.05):
            now = time.monotonic()
            if now >= next_sweep:
                self._sweep_idle(now - self.settings.idle_timeout)
                next_sweep = now + 1.0
            with self._lock:
                late = [ex for ex in self._exchanges if ex.expires <= now]
            for exchange in late:
                reason = "deadline" if self.deadline is not None and now >= self.deadline \
                    else "timeout"
                exchange.cancel(reason)

    def _sweep_idle(self, idle_before: float) -> None:
        pools = self._pm.pools
        for key in pools.keys():  # noqa: SIM118 - RecentlyUsedContainer has no __iter__
            pool = pools._container.get(key)  # reading without touching the LRU order
            queue_ = getattr(pool, "pool", None)
            if isinstance(queue_, _LongestIdleFirstQueue):
                queue_.close_idle(idle_before)

    def cancel_all(self, reason: str) -> None:
        """Cancel every request in flight (deadline, second interrupt)."""
        with self._lock:
            exchanges = list(self._exchanges)
        for exchange in exchanges:
            exchange.cancel(reason)

    def open_connections(self) -> int:
        """Connections currently open (pooled idle ones and those in use)."""
        return self.stats.get("connections_opened") - self.stats.get("connections_closed")

    def close(self) -> None:
        self._closing.set()
        self.cancel_all("interrupted")
        self._watchdog.join(timeout=1)
        self._pm.clear()
        self._resolver.close()

    # -- fetching -----------------------------------------------------------------------

    def fetch(self, method: str, url: str, headers: Mapping[str, str] | None = None,
              body: bytes | None = None) -> FetchResult:
        """One exchange, with at most one immediate retry for a stale reused connection.

        Raises a `FetchError` subclass. A status in `retry.statuses` raises `StatusError`
        (the caller's retry policy decides); any other status is returned.
        """
        start = time.monotonic()
        expires = start + self.settings.request_timeout
        if self.deadline is not None:
            if self.deadline <= start:
                raise Cancelled("deadline reached before the request started", url)
            expires = min(expires, self.deadline)
        exchange = Exchange(expires)
        send_headers = {**self._base_headers, **headers} if headers else self._base_headers
        if "@" in url:
            authorization = _split_credentials(url)[1]
            if authorization and not any(k.lower() == "authorization" for k in send_headers):
                send_headers = {**send_headers, "Authorization": authorization}
        with self._lock:
            self._exchanges.add(exchange)
        _current.exchange = exchange
        try:
            try:
                return self._attempt(exchange, method, url, send_headers, body, start)
            except ConnectionBroken as exc:
                if not (exc.stale and method.upper() in REPLAYABLE):
                    raise
            self.stats.inc("stale_retries")
            exchange.reused = False
            return self._attempt(exchange, method, url, send_headers, body, start)
        finally:
            _current.exchange = None
            with self._lock:
                self._exchanges.discard(exchange)

    def _attempt(self, exchange: Exchange, method: str, url: str, headers: Mapping[str, str],
                 body: bytes | None, start: float) -> FetchResult:
        settings = self.settings
        attempt_start = time.monotonic()
        exchange.connect_started = exchange.tcp_connected = exchange.connected = 0.0
        remaining = exchange.expires - attempt_start
        if remaining <= 0:
            raise Cancelled("no time left for the request", url, reason=self._expiry_reason())
        timeout = urllib3.Timeout(connect=min(settings.connect_timeout, remaining),
                                  read=min(settings.read_timeout, remaining))
        self.stats.inc("requests")
        response = None
        try:
            options: dict[str, Any] = {
                "body": body, "headers": headers, "retries": False, "redirect": False,
                "timeout": timeout, "pool_timeout": remaining, "preload_content": False,
                "decode_content": True}
            if self._proxied:  # the ProxyManager sets the proxy's headers and target form
                response = self._pm.urlopen(method, _split_credentials(url)[0], **options)
            else:
                pool = self._pm.connection_from_host(*self._pool_key(url))
                response = pool.urlopen(method, _request_target(url), assert_same_host=False,
                                        **options)
            declared = response.length_remaining
            if declared is not None and declared > settings.max_body \
                    and not response.headers.get("content-encoding"):
                raise TooLarge(f"Content-Length {declared} exceeds http.max_body", url)
            headers_at = time.monotonic()
            content = self._read_body(response, exchange, url)
            if exchange.cancel_reason is not None:
                raise Cancelled(f"request cancelled: {exchange.cancel_reason}", url,
                                reason=exchange.cancel_reason)
        except FetchError as exc:
            if exchange.cancel_reason is not None and not isinstance(exc, Cancelled):
                raise self._cancelled(exchange, url) from exc
            raise
        except (HTTPError, OSError) as exc:
            if exchange.cancel_reason is None and time.monotonic() >= exchange.expires - 0.01:
                exchange.cancel(self._expiry_reason())  # a socket timeout clamped to expiry
            if exchange.cancel_reason is not None:
                raise self._cancelled(exchange, url) from exc
            raise _translate(exc, url, reused=exchange.reused, got_response=response is not None) \
                from exc
        finally:
            if response is not None:
                _finish(response)
        status = response.status
        self.stats.add_response(status, len(content))
        done = time.monotonic()
        result = FetchResult(url, status, response.headers, content, done - start,
                             exchange.reused, _timings(exchange, attempt_start, headers_at, done))
        if status in self.retry_statuses:
            error = StatusError(status, url, retry_after=_retry_after(response.headers))
            error.result = result
            raise error
        return result

    def _pool_key(self, url: str) -> tuple[str, int, str]:
        """(host, port, scheme) of an absolute URL, cached per origin: urllib3's parse_url
        costs more than the rest of the pool lookup."""
        origin_end = url.find("/", url.find("//") + 2)
        origin = url if origin_end < 0 else url[:origin_end]
        key = self._pool_keys.get(origin)
        if key is None:
            parsed = parse_url(origin)
            if parsed.host is None or parsed.scheme is None:
                raise FetchError(f"bad URL: {url!r}", url, reason="bad_url")
            key = (parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80),
                   parsed.scheme)
            if len(self._pool_keys) < 10_000:
                self._pool_keys[origin] = key
        return key

    def _expiry_reason(self) -> str:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "deadline"
        return "timeout"

    def _cancelled(self, exchange: Exchange, url: str) -> FetchError:
        reason = exchange.cancel_reason or "timeout"
        if reason == "timeout":
            return FetchTimeout(
                f"request exceeded http.request_timeout ({self.settings.request_timeout}s)", url
            )
        return Cancelled(f"request cancelled: {reason}", url, reason=reason)

    def _read_body(self, response: Any, exchange: Exchange, url: str) -> bytes:
        limit = self.settings.max_body
        parts = []
        size = 0
        while True:
            chunk = response.read(CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"body exceeds http.max_body ({limit} bytes)", url)
            parts.append(chunk)
            if exchange.cancel_reason is not None:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _timings(exchange: Exchange, started: float, headers_at: float, done: float
             ) -> dict[str, float]:
    """Seconds per phase: connect (DNS and TCP), tls, wait (to headers), body, total."""
    connected = exchange.connected or started
    return {
        "connect": exchange.tcp_connected - exchange.connect_started
        if exchange.connect_started else 0.0,
        "tls": exchange.connected - exchange.tcp_connected
        if exchange.tls and exchange.tcp_connected else 0.0,
        "wait": headers_at - max(started, connected),
        "body": done - headers_at,
        "total": done - started,
    }


def _split_credentials(url: str) -> tuple[str, str | None]:
    """An absolute URL without its `user:pass@`, and the Basic `Authorization` value those
    credentials make (None without any): they go to that URL's server only."""
    start = url.find("//") + 2
    end = url.find("/", start)
    at = url.rfind("@", start, end if end >= 0 else len(url))
    if at < 0:
        return url, None
    user, _, password = url[start:at].partition(":")
    token = base64.b64encode(unquote_to_bytes(user) + b":" + unquote_to_bytes(password))
    return url[:start] + url[at + 1:], "Basic " + token.decode("ascii")


def _request_target(url: str) -> str:
    """The origin-form target (path and query) of an absolute URL; the fragment dropped."""
    slash = url.find("/", url.find("//") + 2)
    target = url[slash:] if slash >= 0 else "/"
    return target.split("#", 1)[0]


def _finish(response: Any) -> None:
    """Give the connection back in every case; keep it only when that is cheap."""
    try:
        remaining = response.length_remaining
        if remaining is not None and 0 < remaining <= DRAIN_CAP \
                and not response.headers.get("content-encoding"):
            response.drain_conn()
    except (HTTPError, OSError):
        pass
    finally:
        if not response.closed:
            response.close()
        response.release_conn()


def _translate(exc: BaseException, url: str, *, reused: bool, got_response: bool) -> FetchError:
    """urllib3 and socket errors -> the project's FetchError subclasses."""
    # NewConnectionError (refused, unreachable) subclasses ConnectTimeoutError: test it first.
    if isinstance(exc, NameResolutionError):
        return ConnectError(f"DNS lookup failed: {exc}", url, reason="dns")
    if isinstance(exc, NewConnectionError) and not isinstance(exc.__cause__, TimeoutError):
        return ConnectError(f"connection failed: {exc}", url)
    if isinstance(exc, ConnectTimeoutError | EmptyPoolError):
        return FetchTimeout(f"connect timed out: {exc}", url)
    if isinstance(exc, ReadTimeoutError | TimeoutError):
        return FetchTimeout(f"read timed out: {exc}", url)
    if isinstance(exc, SSLError):
        return ConnectError(f"TLS error: {exc}", url, reason="tls")
    if isinstance(exc, DecodeError):
        return ConnectionBroken(f"cannot decode body: {exc}", url, reason="decode")
    if isinstance(exc, LocationValueError):
        return FetchError(f"bad URL: {exc}", url, reason="bad_url")
    error = ConnectionBroken(f"connection broken: {exc}", url)
    # The stale keep-alive race: the server closed a reused connection before answering.
    error.stale = bool(
        reused and not got_response and isinstance(exc, ProtocolError)
        and len(exc.args) > 1
        and isinstance(exc.args[1],
                       ConnectionResetError | BrokenPipeError | ConnectionAbortedError)
    )
    return error
