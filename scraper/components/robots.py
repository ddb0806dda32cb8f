"""robots.txt in the chain: a host's pages wait for its robots.txt (RFC 9309), which is
read once per origin and kept for `crawl.robots_ttl`; disallowed pages are filtered, and
everything fails with `robots_unavailable` when robots.txt could not be read.

With a gating frontier (memory, SQLite) robots.txt is a queued request of its own, retried
like any other, and the host is opened when it is read. With the shared frontier each
process reads it inline, once, the first time it meets the origin."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..client import Client, FetchResult
from ..errors import BlockedAddress, FetchError, StatusError
from ..frontier import ROBOTS_META, Frontier
from ..robots import RobotsPolicy, policy_from_response, robots_url
from ..settings import Settings
from ..stats import Stats
from ..urls import BadURL, origin, resolve
from .base import Component, Context
from .redirects import REDIRECT_STATUSES
from .retries import RetryComponent

log = logging.getLogger(__name__)

ROBOTS_RETRY_AFTER = 60.0  # an unreachable robots.txt (read inline) is tried again after


class RobotsComponent(Component):
    name = "robots"

    def __init__(self, settings: Settings, client: Client, frontier: Frontier, stats: Stats,
                 retry: RetryComponent, stopping: Callable[[], bool]) -> None:
        self._user_agent = settings.http.user_agent
        self._ttl = settings.crawl.robots_ttl
        self._client = client
        self._frontier = frontier
        self._stats = stats
        self._retry = retry
        self._stopping = stopping
        self.policies: dict[str, RobotsPolicy] = {}  # origin -> rules
        self._lock = threading.Lock()
        self._origin_locks: dict[str, threading.Lock] = {}
        forget = getattr(frontier, "on_host_evicted", None)
        if forget is not None:  # an idle host's rules go with its state; read again if it returns
            forget(lambda key: self.policies.pop(key, None))

    def on_request(self, ctx: Context) -> None:
        request = ctx.request
        if request.meta.get(ROBOTS_META):
            ctx.end()
            self._read_queued(ctx)
            return
        key = origin(request.url)
        policy = self.policies.get(key)
        if policy is None:
            if self._frontier.gates_robots:
                return  # robots.txt was read through the queue before this host opened
            policy = self._read_inline(key)
        if policy.expired():
            self._frontier.refresh_robots(key)
        if policy.allowed(request.url, self._user_agent):
            return
        ctx.end()
        if policy.rules is None and not policy.allow_all:
            ctx.failure = FetchError(
                f"{robots_url(key)} could not be fetched: everything is disallowed",
                request.url, reason="robots_unavailable")
        else:
            self._stats.inc("filtered_robots")
            log.debug("disallowed by robots.txt: %s", request.url)

    def _read(self, url: str) -> tuple[int | None, bytes]:
        """GET robots.txt, following up to five redirects; a retryable-status answer is
        raised (unreachable, as RFC 9309 counts it). Raises FetchError when nothing could
        be read."""
        for _ in range(6):
            try:
                result = self._client.fetch("GET", url)
            except BlockedAddress:
                return 404, b""  # never reached: allow all; each page fails blocked_address
            except StatusError as exc:
                if isinstance(exc.result, FetchResult) and exc.result.status in (429, *range(
                        500, 600)):
                    raise
                return (exc.result.status, b"") if isinstance(exc.result, FetchResult) \
                    else (None, b"")
            location = result.headers.get("location")
            if result.status in REDIRECT_STATUSES and location:
                try:
                    url = resolve(url, location)
                except BadURL:
                    return None, b""
                continue
            return result.status, result.body
        return None, b""

    def _read_queued(self, ctx: Context) -> None:
        """The queued robots.txt request of a gated host: read it, then open the host."""
        request = ctx.request
        key = origin(request.url)
        status, body = None, b""
        try:
            status, body = self._read(request.url)
        except FetchError as exc:
            ctx.failure = exc
            self._retry.on_failure(ctx)
            if ctx.retry is not None:
                return
            ctx.failure = None  # given up: the host opens with everything disallowed
            if isinstance(exc, StatusError) and isinstance(exc.result, FetchResult):
                status = exc.result.status
            log.warning("robots.txt for %s unavailable (%s): disallowing the host", key, exc)
        self._open(key, policy_from_response(status, body, self._ttl), status)

    def _open(self, key: str, policy: RobotsPolicy, status: int | None) -> None:
        self.policies[key] = policy
        delay = policy.crawl_delay(self._user_agent)
        log.info("robots.txt for %s: status %s, crawl-delay %s", key, status, delay)
        self._frontier.open_host(key, delay)

    def _read_inline(self, key: str) -> RobotsPolicy:
        """Read robots.txt now, once per origin and process."""
        with self._lock:
            lock = self._origin_locks.setdefault(key, threading.Lock())
        with lock:
            policy = self.policies.get(key)
            if policy is not None:
                return policy
            ttl = self._ttl
            try:
                status, body = self._read(robots_url(key))
            except FetchError as exc:
                log.warning("robots.txt for %s unavailable (%s): disallowing the host for "
                            "a minute", key, exc)
                status, body = None, b""
                ttl = min(ttl, ROBOTS_RETRY_AFTER)
            policy = policy_from_response(status, body, ttl)
            self._open(key, policy, status)
            return policy
