"""Proxy pools: which of `http.proxies` each request goes through, and their health.

- `http.proxy_strategy`:
  - `round_robin`: the healthy proxies in turn;
  - `per_session`: a request's session (`request.session`) keeps the proxy it was first
    given while that proxy is healthy; a request without a session goes round robin;
  - `per_host`: an origin (scheme, host, port) always goes through the same proxy, the
    one that ranks first for it among the healthy ones (rendezvous hashing: when a
    proxy is backed off only its origins move, and they come back when it recovers).
- Health: a proxy that cannot be reached, that asks for credentials (407) or refuses
  or throttles a tunnel (CONNECT answered 403 or 429) is backed off for
  `http.proxy_backoff` seconds, doubling with each failure in a row up to
  `http.proxy_max_backoff`; a response through it makes it healthy again.
  `penalise(ctx)` does the same for a page a spider judged a ban. When every proxy is
  backed off, the one whose backoff ends first is used (a crawl never stalls on them).
- A retried request goes through another proxy than the one it failed through,
  whenever another is healthy.
- Proxy URLs appear in logs with their password masked.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..client import Client
from ..errors import ProxyFailure
from ..settings import Settings, mask_password
from ..stats import Stats
from .base import Component, Context

log = logging.getLogger(__name__)

MAX_REMEMBERED = 100_000  # sessions and retried requests whose proxy is remembered


class _Proxy:
    __slots__ = ("failures", "index", "name", "requests", "salt", "until", "url")

    def __init__(self, index: int, url: str) -> None:
        self.index = index
        self.url = url
        self.name = mask_password(url)
        self.salt = zlib.crc32(url.encode())
        self.failures = 0  # in a row
        self.until = 0.0  # backed off until (monotonic)
        self.requests = 0


class ProxyPool:
    """The proxies, their health and the choice by strategy; thread-safe."""

    def __init__(self, urls: list[str] | tuple[str, ...], *, strategy: str, backoff: float,
                 max_backoff: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not urls:
            raise ValueError("a proxy pool needs at least one proxy")
        self.proxies = [_Proxy(i, url) for i, url in enumerate(urls)]
        self._by_url = {proxy.url: proxy for proxy in self.proxies}
        self.strategy = strategy
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._clock = clock
        self._turn = itertools.count()
        self._sessions: OrderedDict[Any, _Proxy] = OrderedDict()
        self._lock = threading.Lock()

    def healthy(self, now: float | None = None) -> list[_Proxy]:
        now = self._clock() if now is None else now
        return [proxy for proxy in self.proxies if proxy.until <= now]

    def choose(self, url: str, *, session: Any = None, avoid: str | None = None) -> str:
        """The proxy URL for a request to `url`, not `avoid` when another is healthy."""
        with self._lock:
            candidates = self.healthy()
            if not candidates:  # all backed off: the first to recover
                candidates = [min(self.proxies, key=lambda proxy: proxy.until)]
            if avoid is not None and len(candidates) > 1:
                candidates = [proxy for proxy in candidates if proxy.url != avoid]
            if self.strategy == "per_host":
                chosen = self._by_origin(url, candidates)
            elif self.strategy == "per_session" and session is not None:
                chosen = self._by_session(session, candidates)
            else:
                chosen = candidates[next(self._turn) % len(candidates)]
            chosen.requests += 1
            return chosen.url

    @staticmethod
    def _by_origin(url: str, candidates: list[_Proxy]) -> _Proxy:
        end = url.find("/", url.find("//") + 2)
        key = zlib.crc32((url if end < 0 else url[:end]).lower().encode())
        return max(candidates, key=lambda proxy: zlib.crc32(key.to_bytes(4, "big"),
                                                            proxy.salt))

    def _by_session(self, session: Any, candidates: list[_Proxy]) -> _Proxy:
        key = session if isinstance(session, str | int) else \
            getattr(session, "name", None) or id(session)
        kept = self._sessions.get(key)
        if kept is not None and kept in candidates:
            return kept
        chosen = candidates[next(self._turn) % len(candidates)]
        if kept is None or kept.until > self._clock():
            # a new session, or its proxy is backed off: the session moves. (A healthy
            # proxy avoided by a retry stays the session's.)
            self._sessions[key] = chosen
            self._sessions.move_to_end(key)
            while len(self._sessions) > MAX_REMEMBERED:
                self._sessions.popitem(last=False)
        return chosen

    def penalise(self, url: str, why: str) -> float:
        """Back the proxy off (doubling per failure in a row); the seconds chosen."""
        with self._lock:
            proxy = self._by_url[url]
            proxy.failures += 1
            wait = min(self.backoff * 2 ** (proxy.failures - 1), self.max_backoff)
            proxy.until = max(proxy.until, self._clock() + wait)
        log.warning("proxy %s backed off for %.1fs (%s, %d in a row)", proxy.name, wait, why,
                    proxy.failures)
        return wait

    def succeeded(self, url: str) -> None:
        proxy = self._by_url[url]
        if proxy.failures or proxy.until:
            with self._lock:
                proxy.failures = 0
                proxy.until = 0.0


class ProxyComponent(Component):
    """Sets `ctx.proxy` for every request; judges what came back through it."""

    name = "proxies"

    def __init__(self, settings: Settings, client: Client, stats: Stats) -> None:
        http = settings.http
        self.pool = ProxyPool(client.proxies, strategy=http.proxy_strategy,
                              backoff=http.proxy_backoff, max_backoff=http.proxy_max_backoff)
        self._stats = stats
        # A retried request comes back through the frontier as a new context: which proxy
        # it failed through, to send it through another.
        self._failed_through: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()
        client.choose_proxies_with(lambda url: self.pool.choose(url))

    def on_request(self, ctx: Context) -> None:
        request = ctx.request
        avoid = None
        if request.attempt > 1 or self._failed_through:
            with self._lock:
                avoid = self._failed_through.pop((request.method, request.url), None)
        ctx.proxy = self.pool.choose(request.url, session=getattr(request, "session", None),
                                     avoid=avoid)

    def on_response(self, ctx: Context) -> None:
        if ctx.fetched and ctx.proxy is not None:
            self.pool.succeeded(ctx.proxy)

    def on_failure(self, ctx: Context) -> None:
        failure = ctx.failure
        if ctx.proxy is None or failure is None:
            return
        if isinstance(failure, ProxyFailure) and failure.penalise:
            self._back_off(ctx.proxy, failure.reason)
        # Anything else (a timeout, a status from the site) leaves the proxy's standing.
        if failure.retryable:
            with self._lock:
                self._failed_through[(ctx.request.method, ctx.request.url)] = ctx.proxy
                while len(self._failed_through) > MAX_REMEMBERED:
                    self._failed_through.popitem(last=False)

    def penalise(self, ctx: Context, why: str = "blocked") -> None:
        """Back off the proxy that served `ctx`'s response (a ban page, `Spider.blocked`)
        and send the request's retry, if any, through another."""
        if ctx.proxy is None:
            return
        self._back_off(ctx.proxy, why)
        with self._lock:
            self._failed_through[(ctx.request.method, ctx.request.url)] = ctx.proxy

    def _back_off(self, url: str, why: str) -> None:
        self.pool.penalise(url, why)
        self._stats.inc("proxy_backoffs")

    def close(self) -> None:
        for proxy in self.pool.proxies:
            log.info("proxy %s: %d requests%s", proxy.name, proxy.requests,
                     ", backed off at the end" if proxy.failures else "")
