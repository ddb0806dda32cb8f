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
- `http.max_connections` caps the sockets open at once across every pool (default: the
  open-file limit, raised to its hard limit, less headroom for files). A new connection
  past the cap first closes the pooled connection idle longest, else waits for one to
  close (`connections_evicted` counts the closed); the scheduler keeps its working set of
  hosts within the cap (`close_host`), so that path is rare. A descriptor error is never
  a request's failure while idle connections can be closed.
- Connections go through `resolver`: `http.resolve`, the DNS cache, and the guard that
  refuses private addresses to hosts that are not the crawl's own (`trusted_hosts`),
  judged on the address connected to; a proxy's targets are judged before sending.
- urllib3 errors become the project's `FetchError` subclasses here and nowhere else.
- `RetryPolicy` holds tenacity's retry, stop and wait strategies; the scheduler does
  the waiting, so no worker thread sleeps through a backoff.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import errno
import itertools
import logging
import queue
import re
import resource
import socket
import ssl
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

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
    LocationParseError,
    LocationValueError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
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
    ConfigError,
    ConnectError,
    ConnectionBroken,
    FetchError,
    FetchTimeout,
    ProxyFailure,
    StatusError,
    TooLarge,
)
from .resolver import AddressGuard, Resolver
from .settings import HttpSettings, RetrySettings, mask_password
from .stats import Stats

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
DRAIN_CAP = 64 * 1024
REPLAYABLE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


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

FILE_HEADROOM = 64  # descriptors kept for outputs, the jobdir, the cache, logs: at least


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard limit; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


def connection_limit(configured: int) -> int:
    """`http.max_connections`: the configured value, or what the open-file limit allows
    after raising it (a quarter of it, 64 at least, is left for other files); a configured
    value above that is lowered to it, with a warning."""
    soft = raise_open_file_limit()
    allowed = max(4, soft - max(FILE_HEADROOM, soft // 4))
    if configured and configured > allowed:
        log.warning("http.max_connections = %d does not fit the open-file limit (%d): "
                    "using %d", configured, soft, allowed)
        return allowed
    return configured or allowed


class _ConnectionBudget:
    """At most `limit` sockets open at once, counted from socket creation to close."""

    def __init__(self, limit: int, evict_idle: Callable[[], bool], stats: Stats) -> None:
        self.limit = limit
        self.open = 0
        self._cond = threading.Condition(threading.Lock())
        self._evict_idle = evict_idle
        self._stats = stats

    def acquire(self, timeout: float) -> None:
        """Take a slot for a new socket: close the longest-idle pooled connection when
        the budget is spent, or wait up to `timeout` for one to close."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                if self.open < self.limit:
                    self.open += 1
                    return
            if self.evict_idle_now():
                continue
            with self._cond:
                if self.open < self.limit:
                    self.open += 1
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ConnectTimeoutError(
                        None, f"no connection free within http.max_connections "
                              f"({self.limit}) in {timeout:.1f}s")
                self._cond.wait(min(remaining, 0.05))  # idle ones may appear meanwhile

    def evict_idle_now(self) -> bool:
        """Close the pooled connection idle longest (its `close` releases its slot)."""
        if not self._evict_idle():
            return False
        self._stats.inc("connections_evicted")
        return True

    def release(self) -> None:
        with self._cond:
            self.open -= 1
            self._cond.notify()


def _exchange() -> Exchange | None:
    return getattr(_current, "exchange", None)


class _TrackedConnectionMixin:
    """Counts connects and reuses; registers sockets; resolves DNS with a timeout and
    connects only at the addresses the guard allows."""

    stats: Stats
    resolver: Resolver
    guard: AddressGuard
    budget: _ConnectionBudget
    default_connect_timeout: float
    _requests_sent = 0
    idle_since = 0.0

    def _new_conn(self) -> socket.socket:
        exchange = _exchange()
        if exchange is not None and exchange.cancel_reason is not None:
            raise Cancelled("request cancelled", reason=exchange.cancel_reason)
        if exchange is not None:
            exchange.connect_started = time.monotonic()
        timeout = self.timeout  # type: ignore[attr-defined]
        self.budget.acquire(timeout if isinstance(timeout, int | float)
                            else self.default_connect_timeout)
        try:
            sock = self._connect_resolved()
        except BaseException:
            self.budget.release()
            raise
        if exchange is not None:
            exchange.tcp_connected = time.monotonic()
        self._requests_sent = 0
        self.stats.inc("connections_opened")
        if exchange is not None:
            try:
                exchange.attach(sock)
            except Cancelled:
                sock.close()  # never handed to the connection, so counted closed here
                self.stats.inc("connections_closed")
                self.budget.release()
                raise
        return sock

    def _connect_resolved(self) -> socket.socket:
        """Resolve (cache, http.resolve, IP literal), drop the addresses the guard
        refuses, then connect to the first that answers: the address judged is the
        address connected to."""
        host, port, timeout = self._dns_host, self.port, self.timeout  # type: ignore[attr-defined]
        if not isinstance(timeout, int | float):
            timeout = self.default_connect_timeout
        started = time.monotonic()
        try:
            addresses = self.resolver.resolve(host, port, timeout)
        except socket.gaierror as exc:
            raise NameResolutionError(host, self, exc) from exc  # type: ignore[arg-type]
        except OSError as exc:
            raise ConnectTimeoutError(self, f"DNS lookup of {host} timed out") from exc
        addresses = self.guard.connectable(host, addresses)
        error: Exception | None = None
        for family, address in addresses:
            remaining = timeout - (time.monotonic() - started)
            if remaining <= 0:
                break
            sock = self._socket(family)
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
        raise NewConnectionError(  # type: ignore[arg-type]
            self, f"Failed to establish a new connection: {error}") from error

    def _socket(self, family: int) -> socket.socket:
        """A new socket; out of descriptors (another part of the process holds many),
        the longest-idle pooled connection is closed and the socket tried again."""
        try:
            return socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE) \
                    or not self.budget.evict_idle_now():
                raise
            return socket.socket(family, socket.SOCK_STREAM)

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        exchange = _exchange()
        if exchange is not None:
            exchange.connected = time.monotonic()  # TCP, and TLS for https
            exchange.tls = isinstance(self, HTTPSConnection)

    def close(self) -> None:
        had_socket = self.sock is not None  # type: ignore[attr-defined]
        try:
            super().close()  # type: ignore[misc]
        finally:
            if had_socket:  # the slot is free once the descriptor is
                self.stats.inc("connections_closed")
                self.budget.release()

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
        if item is None or getattr(item, "sock", True) is None:  # never opened, or closed
            self._placeholders += 1  # reopened only when no open one is idle
        else:
            self.queue.append(item)

    def _get(self) -> Any:
        if self.queue:
            return self.queue.popleft()
        self._placeholders -= 1
        return None

    def oldest_idle(self) -> float | None:
        """When the connection idle longest was put back (None: no idle connection)."""
        with self.mutex:
            return self.queue[0].idle_since if self.queue else None

    def close_oldest(self, idle_since: float) -> bool:
        """Close the connection idle longest if it is still the one put back at
        `idle_since`."""
        with self.mutex:
            if not self.queue or self.queue[0].idle_since != idle_since:
                return False
            conn = self.queue.popleft()
            self._placeholders += 1
        conn.close()
        return True

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
    """Closes pooled connections idle longer than `idle_timeout` before they are reused;
    each pool registers itself with its client, which closes them all at the end."""

    QueueCls = _LongestIdleFirstQueue
    idle_timeout: float
    registry: _PoolRegistry

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.registry.add(self)

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


class _PoolRegistry:
    """Every pool a client created and not yet garbage-collected.

    urllib3's PoolManager neither closes a pool it evicts from its LRU nor the pools it
    drops in `clear()`: their sockets close when the pool is garbage-collected, so the
    connections of a finished crawl would be counted closed at some later time, or never.
    """

    def __init__(self) -> None:
        self._pools: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()

    def add(self, pool: Any) -> None:
        with self._lock:
            self._pools.add(pool)

    def pools(self) -> list[Any]:
        with self._lock:
            return list(self._pools)

    def close_longest_idle(self) -> bool:
        """Close the one pooled connection, of all pools, idle longest; False if none."""
        for _ in range(3):  # another thread may take the one found first
            oldest: tuple[float, Any] | None = None
            for pool in self.pools():
                queue_ = getattr(pool, "pool", None)
                if isinstance(queue_, _LongestIdleFirstQueue):
                    since = queue_.oldest_idle()
                    if since is not None and (oldest is None or since < oldest[0]):
                        oldest = (since, queue_)
            if oldest is None:
                return False
            if oldest[1].close_oldest(oldest[0]):
                return True
        return False

    def close_all(self) -> None:
        """Close every pool: idle connections now, those in use when they are released."""
        with self._lock:
            pools = list(self._pools)
        for pool in pools:
            pool.close()


def _close_idle(pool: Any) -> None:
    """A pool evicted from the PoolManager's LRU: close its idle connections now (a thread
    that already holds the pool may still use it; what it releases closes later)."""
    queue_ = getattr(pool, "pool", None)
    if isinstance(queue_, _LongestIdleFirstQueue):
        queue_.close_idle(float("inf"))


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
                 retry_statuses: frozenset[int] = frozenset(),
                 trusted_hosts: Iterable[str] = ()) -> None:
        """`trusted_hosts`: the crawl's own hosts (names or `*.suffix` patterns, see
        `resolver.trusted_hosts`), which may be at private addresses; `http.resolve`
        names and the proxy are added here. Every other host must resolve to a public
        address unless `http.allow_private_addresses`."""
        self.settings = http
        self.stats = stats
        self.retry_statuses = retry_statuses
        self._resolver = Resolver(ttl=http.dns_ttl, mapped=http.resolve,
                                  family=urllib3_connection.allowed_gai_family())
        self._guard = AddressGuard([*trusted_hosts, *http.resolve],
                                   allow_private=http.allow_private_addresses)
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
        self._registry = _PoolRegistry()
        self.max_connections = connection_limit(http.max_connections)
        self._budget = _ConnectionBudget(self.max_connections,
                                         self._registry.close_longest_idle, stats)
        attrs = {"stats": stats, "resolver": self._resolver, "guard": self._guard,
                 "budget": self._budget, "default_connect_timeout": http.connect_timeout}
        pool_attrs = {"idle_timeout": http.idle_timeout, "registry": self._registry}

        def pool_classes(http_base: type, https_base: type, name: str = "",
                         extra: Mapping[str, Any] | None = None) -> dict[str, type]:
            conn_attrs = {**attrs, **(extra or {})}
            http_conn = type(f"Tracked{name}HTTPConnection",
                             (_TrackedConnectionMixin, http_base), conn_attrs)
            https_conn = type(f"Tracked{name}HTTPSConnection",
                              (_TrackedConnectionMixin, https_base), conn_attrs)
            return {
                "http": type(f"IdleEvicting{name}HTTPPool",
                             (_IdleEvictingPoolMixin, HTTPConnectionPool),
                             {**pool_attrs, "ConnectionCls": http_conn}),
                "https": type(f"IdleEvicting{name}HTTPSPool",
                              (_IdleEvictingPoolMixin, HTTPSConnectionPool),
                              {**pool_attrs, "ConnectionCls": https_conn}),
            }

        pool_kw: dict[str, Any] = {"cert_reqs": "CERT_NONE"} if not http.verify_tls else {}
        pool_kw.update(num_pools=max(http.max_hosts, self.max_connections), maxsize=per_host,
                       block=True, retries=False, ssl_context=context)
        self._pm = urllib3.PoolManager(**pool_kw)
        self._pm.pool_classes_by_scheme = pool_classes(HTTPConnection, HTTPSConnection)
        # One manager per proxy. Plain http goes through one pool per proxy (at most
        # `per_host` connections to it); https through a CONNECT tunnel per connection,
        # pooled per proxy and site. Credentials in a proxy URL become a
        # Proxy-Authorization header (or the SOCKS login) sent to that proxy only.
        self._proxy_managers: dict[str, urllib3.PoolManager] = {}
        for url in http.proxy_urls:
            self._proxy_managers[url] = self._proxy_manager(url, pool_kw, pool_classes)
        for manager in (self._pm, *self._proxy_managers.values()):
            manager.pools.dispose_func = _close_idle
        self.proxies: tuple[str, ...] = tuple(self._proxy_managers)
        self._proxy_turn = itertools.count()
        self._choose_proxy: Callable[[str], str] = self._next_proxy
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

    def _proxy_manager(self, url: str, pool_kw: dict[str, Any],
                       pool_classes: Callable[..., dict[str, type]]) -> urllib3.PoolManager:
        try:
            proxy = parse_url(url)
        except LocationParseError as exc:  # settings validation lets few through
            raise ConfigError(f"http.proxies: {mask_password(url)!r} is not a proxy URL: "
                              f"{mask_password(str(exc))}") from None
        self._guard.trust(proxy.host or "")
        user, _, password = (proxy.auth or "").partition(":")
        user, password = unquote(user), unquote(password)
        manager: urllib3.PoolManager
        if proxy.scheme in ("http", "https"):
            headers = make_headers(proxy_basic_auth=f"{user}:{password}") if proxy.auth \
                else None
            manager = urllib3.ProxyManager(proxy._replace(auth=None).url,
                                           proxy_headers=headers,
                                           proxy_ssl_context=pool_kw["ssl_context"], **pool_kw)
            manager.pool_classes_by_scheme = pool_classes(HTTPConnection, HTTPSConnection)
            return manager
        try:
            from urllib3.contrib.socks import (
                SOCKSConnection,
                SOCKSHTTPSConnection,
                SOCKSProxyManager,
            )
        except ImportError:  # urllib3 warns when PySocks is missing
            raise ConfigError(f"http.proxies: {mask_password(url)!r} needs PySocks "
                              "(pip install 'urllib3[socks]')") from None
        manager = SOCKSProxyManager(proxy._replace(auth=None).url, username=user or None,
                                    password=password or None, **pool_kw)
        # The SOCKS proxy makes the connection: a failure to reach it is the proxy's.
        manager.pool_classes_by_scheme = pool_classes(
            SOCKSConnection, SOCKSHTTPSConnection, "SOCKS",
            {"_connect_resolved": _socks_connect})
        return manager

    def choose_proxies_with(self, choose: Callable[[str], str]) -> None:
        """How a request without a proxy of its own (robots.txt, `scraper fetch`) gets
        one: `choose(url)` returns one of `proxies`. The default takes them in turn."""
        self._choose_proxy = choose

    def _next_proxy(self, url: str) -> str:
        return self.proxies[next(self._proxy_turn) % len(self.proxies)]

    def trust(self, host: str) -> None:
        """Add one of the crawl's own hosts (a name or a `*.suffix` pattern): it may be
        at a private address (e.g. a start URL's host, known only once it is read)."""
        self._guard.trust(host)

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
        for manager in (self._pm, *self._proxy_managers.values()):
            pools = manager.pools
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

    def close_host(self, origin: str) -> None:
        """Forget the pool of `origin` ("scheme://host[:port]", direct connections): its
        idle connections close now (the scheduler calls this for a host with nothing in
        flight; a connection still in use would close when released)."""
        try:
            host, port, scheme = self._pool_key(origin)
        except FetchError:
            return
        manager = self._pm
        context = manager._merge_pool_kwargs(None)
        context.update(scheme=scheme, host=host, port=port)
        key = manager.key_fn_by_scheme[scheme](context)
        with manager.pools.lock:
            pool = manager.pools._container.pop(key, None)
        if pool is None:
            return
        queue_ = getattr(pool, "pool", None)
        if isinstance(queue_, _LongestIdleFirstQueue):
            with queue_.mutex:
                idle = sum(1 for conn in queue_.queue if conn.sock is not None)
            if idle:
                self.stats.inc("connections_evicted", idle)
        pool.close()

    def close(self) -> None:
        self._closing.set()
        self.cancel_all("interrupted")
        self._watchdog.join(timeout=1)
        # Every pool closes its connections now (urllib3's clear() leaves that to the
        # garbage collector), so connections_closed = connections_opened at the end.
        self._registry.close_all()
        for manager in (self._pm, *self._proxy_managers.values()):
            manager.pools.dispose_func = None
            manager.clear()
        self._resolver.close()

    # -- fetching -----------------------------------------------------------------------

    def fetch(self, method: str, url: str, headers: Mapping[str, str] | None = None,
              body: bytes | None = None, *, timeout: float | None = None,
              proxy: str | None = None) -> FetchResult:
        """One exchange, with at most one immediate retry for a stale reused connection.

        Raises a `FetchError` subclass. A status in `retry.statuses` raises `StatusError`
        (the caller's retry policy decides); any other status is returned. `timeout`
        bounds the whole exchange instead of `http.request_timeout`. `proxy`: one of
        `proxies` (the proxy component's choice); when proxies are set and none is
        given, the client chooses one (see `choose_proxies_with`).
        """
        if self.proxies and proxy is None:
            proxy = self._choose_proxy(url)
        manager = self._proxy_managers[proxy] if proxy is not None else None
        start = time.monotonic()
        expires = start + (timeout if timeout is not None else self.settings.request_timeout)
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
                return self._attempt(exchange, method, url, send_headers, body, start, manager)
            except ConnectionBroken as exc:
                if not (exc.stale and method.upper() in REPLAYABLE):
                    raise
            self.stats.inc("stale_retries")
            exchange.reused = False
            return self._attempt(exchange, method, url, send_headers, body, start, manager)
        finally:
            _current.exchange = None
            with self._lock:
                self._exchanges.discard(exchange)

    def _attempt(self, exchange: Exchange, method: str, url: str, headers: Mapping[str, str],
                 body: bytes | None, start: float,
                 manager: urllib3.PoolManager | None) -> FetchResult:
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
            if manager is not None:  # the ProxyManager sets the proxy's headers and target
                self._check_proxied_target(url, timeout.connect_timeout)
                response = manager.urlopen(method, _split_credentials(url)[0], **options)
                if response.status == 407:
                    raise ProxyFailure("the proxy wants credentials (407 Proxy Authentication "
                                       "Required)", url, reason="proxy_auth", retryable=False)
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
            exc.url = exc.url or url  # raised in a connection, which knows no URL
            raise
        except (HTTPError, OSError) as exc:
            if exchange.cancel_reason is None and time.monotonic() >= exchange.expires - 0.01:
                exchange.cancel(self._expiry_reason())  # a socket timeout clamped to expiry
            if exchange.cancel_reason is not None:
                raise self._cancelled(exchange, url) from exc
            raise _translate(exc, url, reused=exchange.reused, got_response=response is not None,
                             proxied=manager is not None) from exc
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

    def _check_proxied_target(self, url: str, timeout: Any) -> None:
        """The proxy connects to the target, so the guard judges what the target's name
        resolves to here: any refused address refuses the request. A name this process
        cannot resolve is left to the proxy (its network, its names)."""
        host, port, _ = self._pool_key(url)
        if self._guard.trusts(host):
            return
        try:
            addresses = self._resolver.resolve(host, port, timeout if isinstance(
                timeout, int | float) else self.settings.connect_timeout)
        except OSError:
            return
        self._guard.check_all(host, addresses)

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


_TUNNEL_STATUS = re.compile(r"Tunnel connection failed: (\d{3})")
_BROKEN = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


def _socks_connect(conn: Any) -> socket.socket:
    """A SOCKS connection's socket, made by PySocks through the proxy (the proxy is
    trusted; its targets are judged before sending). Not reaching the proxy itself is
    the proxy's failure."""
    from urllib3.contrib.socks import SOCKSConnection

    try:
        return SOCKSConnection._new_conn(conn)  # type: ignore[no-any-return]
    except (NewConnectionError, ConnectTimeoutError) as exc:
        cause = exc.__cause__ or exc.__context__  # urllib3 raises some without "from"
        if type(cause).__name__ == "ProxyConnectionError" \
                or isinstance(cause, TimeoutError | socket.gaierror):
            raise ProxyFailure(f"cannot reach the SOCKS proxy: {cause}") from exc
        raise


def _verification_failed(exc: BaseException) -> bool:
    """A certificate that failed verification (untrusted, expired, wrong host name)."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError | ssl.CertificateError):
            return True
        if isinstance(current, BaseException):
            todo += [current.__cause__, current.__context__,
                     *(arg for arg in current.args if isinstance(arg, BaseException))]
    return False


def _translate(exc: BaseException, url: str, *, reused: bool, got_response: bool,
               proxied: bool = False) -> FetchError:
    """urllib3 and socket errors -> the project's FetchError subclasses."""
    if isinstance(exc, ProxyError):
        return _translate_proxy_error(exc, url, reused=reused, got_response=got_response)
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
        error = ConnectError(f"TLS error: {exc}", url, reason="tls")
        if _verification_failed(exc):
            error.retryable = False  # the same certificate again: retrying cannot help
        return error
    if isinstance(exc, DecodeError):
        return ConnectionBroken(f"cannot decode body: {exc}", url, reason="decode")
    if isinstance(exc, LocationValueError):
        return FetchError(f"bad URL: {exc}", url, reason="bad_url")
    error = ConnectionBroken(f"connection broken: {exc}", url)
    # The stale keep-alive race: the server closed a reused connection before answering.
    error.stale = bool(
        reused and not got_response and isinstance(exc, ProtocolError)
        and len(exc.args) > 1 and isinstance(exc.args[1], _BROKEN)
    )
    return error


def _translate_proxy_error(exc: ProxyError, url: str, *, reused: bool,
                           got_response: bool) -> FetchError:
    """urllib3 says "Unable to connect to proxy" for any error on a connection that is
    not (or no longer) connected to its proxy; what the proxy really did is the cause."""
    original = exc.original_error
    message = mask_password(str(original))
    if isinstance(original, _BROKEN) and reused and not got_response:
        # The proxy closed a kept-alive connection (http.client's close() cleared
        # urllib3's "connected to the proxy" flag): the stale race, not a proxy failure.
        error = ConnectionBroken(f"connection broken: {message}", url)
        error.stale = True
        return error
    match = _TUNNEL_STATUS.search(str(original))
    if match:
        status = int(match.group(1))
        if status == 407:
            return ProxyFailure(f"the proxy wants credentials: {message}", url,
                                reason="proxy_auth", retryable=False)
        if status == 403:
            return ProxyFailure(f"the proxy refused the tunnel: {message}", url,
                                reason="proxy_refused", retryable=False)
        return ProxyFailure(f"the proxy answered CONNECT with {status}: {message}", url,
                            reason=f"proxy_status:{status}", retryable=status == 429
                            or status >= 500, penalise=status == 429)
    if isinstance(original, SSLError | ssl.SSLError):
        error = ConnectError(f"TLS error with the proxy: {message}", url, reason="tls")
        error.retryable = not _verification_failed(original)
        return error
    if isinstance(original, ReadTimeoutError | TimeoutError):
        return FetchTimeout(f"read timed out: {message}", url)
    return ProxyFailure(f"cannot use the proxy: {message}", url)
