"""The scheduler: per-host queues, dedup, politeness, and when the crawl is over.

A worker is handed only a request whose host has a free slot (`crawl.per_host`) and whose
politeness time has come (`crawl.delay`, `Retry-After`), so no worker waits on a busy
host while others have work. Hosts with work are kept in a round-robin `ready` deque or,
when their next start is in the future, in a heap; retries wait in a heap of their own.
Workers block on one condition variable with a timeout equal to the next due time; no
thread sleeps. The crawl is over when nothing is queued, delayed or in flight.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from .request import Request
from .stats import Stats
from .store import JobStore, fingerprint
from .urls import BadURL, canonical_host, canonicalize, host_allowed, looks_like_trap, origin

log = logging.getLogger(__name__)


ROBOTS_META = "_robots"
STORE_LOW_WATER = 1000  # a durable frontier's requests held in memory: refilled below this
STORE_BATCH = 1000


class _Host:
    __slots__ = ("active", "base_delay", "delay", "failures", "gated", "key", "next_start",
                 "plain", "queue", "robots_request", "scheduled")

    def __init__(self, key: str, delay: float) -> None:
        self.key = key
        self.queue: list[tuple[int, int, Request]] = []
        # Plain requests (a GET of a URL, nothing else set: most followed links) are kept
        # as bare URL strings, by depth, shallowest first: a fifth of a Request's memory.
        self.plain: dict[int, deque[str]] = {}
        self.active = 0
        self.base_delay = delay  # crawl.delay, or robots.txt Crawl-delay when larger
        self.delay = delay  # base_delay, or more under autothrottle
        self.next_start = 0.0
        self.scheduled = False
        self.failures = 0  # consecutive failed exchanges: a failing host is backed off
        self.gated = False  # waiting for robots.txt: only `robots_request` may start
        self.robots_request: Request | None = None


def _is_plain(request: Request) -> bool:
    """A request fully described by its URL and depth (see `_Host.plain`)."""
    return (request.callback is None and request.priority == 0 and request.method == "GET"
            and not request.meta and request.headers is None and request.body is None
            and request.errback is None and not request.dont_filter and request.attempt == 1
            and not request.redirect_chain and request.store_id is None)


class Scheduler:
    gates_robots = True  # robots.txt is fetched through the queue, before a host's pages

    def __init__(
        self,
        stats: Stats,
        *,
        per_host: int,
        delay: float = 0.0,
        allowed_domains: Iterable[str] = (),
        depth_limit: int = 0,
        max_pages: int = 0,
        host_backoff: float = 0.0,
        max_host_backoff: float = 0.0,
        obey_robots: bool = False,
        sort_query: bool = False,
        max_url_length: int = 0,
        max_repeated_segments: int = 0,
        autothrottle_target: float = 0.0,
        autothrottle_max_delay: float = 60.0,
        store: JobStore | None = None,
    ) -> None:
        self._stats = stats
        self._per_host = per_host
        self._delay = delay
        self.allowed_domains = frozenset(d.lower().lstrip(".") for d in allowed_domains)
        self._depth_limit = depth_limit
        self._budget = max_pages or -1  # first attempts still allowed to start; -1: no limit
        self._host_backoff = host_backoff
        self._max_host_backoff = max_host_backoff
        self._obey_robots = obey_robots
        self._sort_query = sort_query
        self._max_url_length = max_url_length
        self._max_repeated_segments = max_repeated_segments
        self._throttle_target = autothrottle_target
        self._throttle_max = autothrottle_max_delay
        self._store = store
        self._cond = threading.Condition(threading.Lock())
        self._hosts: dict[str, _Host] = {}
        self._ready: deque[_Host] = deque()
        self._waiting: list[tuple[float, int, _Host]] = []
        self._delayed: list[tuple[float, int, Request]] = []
        self._seen: set[str] = set()
        self._seq = itertools.count()
        self._queued = 0
        self._in_flight = 0
        self._stopped = False
        self.budget_exhausted = False

    # -- adding --------------------------------------------------------------------------

    def _check(self, request: Request) -> str | None:
        """Canonicalise the URL in place; the filter reason, or None to queue it."""
        try:
            request.url = canonicalize(request.url, self._sort_query)
        except BadURL as exc:
            log.debug("skipped %s", exc)
            return "filtered_bad_url"
        if looks_like_trap(request.url, self._max_url_length, self._max_repeated_segments):
            log.debug("skipped a likely crawl trap: %s", request.url)
            return "filtered_trap"
        if self.allowed_domains and not host_allowed(canonical_host(request.url),
                                                     self.allowed_domains):
            return "filtered_offsite"
        if self._depth_limit and request.depth > self._depth_limit:
            return "filtered_depth"
        return None

    def _accept(self, requests: Iterable[Request]) -> list[Request]:
        accepted = []
        for request in requests:
            reason = self._check(request)
            if reason is None:
                accepted.append(request)
            else:
                self._stats.inc(reason)
        return accepted

    def add(self, requests: Iterable[Request]) -> int:
        """Queue new requests (dedup, offsite, depth); returns how many were queued."""
        accepted = self._accept(requests)
        if not accepted:
            return 0
        if self._store is not None:
            queued, duplicates = self._store.add(accepted)
            with self._cond:
                self._refill()
                self._cond.notify(queued)
        else:
            with self._cond:
                queued, duplicates = self._add_in_memory(accepted)
        if duplicates:
            self._stats.inc("filtered_duplicate", duplicates)
        return queued

    def _add_in_memory(self, accepted: list[Request]) -> tuple[int, int]:
        if self._stopped:
            return 0, 0
        queued = duplicates = 0
        seen = self._seen
        for request in accepted:
            key = request.url if request.method == "GET" and not request.body \
                else fingerprint(request)
            if key in seen and not request.dont_filter:
                duplicates += 1
                continue
            seen.add(key)
            self._enqueue(request)
            queued += 1
        if queued:
            self._cond.notify(queued)
        return queued, duplicates

    def _refill(self) -> None:
        """Durable frontier: keep a bounded window of its requests in memory."""
        if self._store is None or self._stopped:
            return
        if self._queued + len(self._delayed) >= STORE_LOW_WATER:
            return
        for request in self._store.take(STORE_BATCH):
            self._enqueue(request)

    def _enqueue(self, request: Request) -> None:
        key = origin(request.url)
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(key, self._delay)
            if self._obey_robots:
                self._gate(host)
        if request.meta.get(ROBOTS_META):
            host.robots_request = request  # a robots.txt retry
        elif _is_plain(request):
            urls = host.plain.get(request.depth)
            if urls is None:
                urls = host.plain[request.depth] = deque()
            urls.append(request.url)
        else:
            heapq.heappush(host.queue, (-request.priority, next(self._seq), request))
        self._queued += 1
        if not host.scheduled and self._eligible(host):
            self._schedule(host, time.monotonic())

    def _gate(self, host: _Host) -> None:
        """Hold the host until its robots.txt is read; queue the robots.txt request."""
        host.gated = True
        host.robots_request = Request(f"{host.key}/robots.txt", meta={ROBOTS_META: True},
                                      dont_filter=True)
        self._queued += 1

    def _eligible(self, host: _Host) -> bool:
        if host.active >= self._per_host:
            return False
        return host.robots_request is not None if host.gated else bool(host.queue or host.plain)

    def _schedule(self, host: _Host, now: float) -> None:
        host.scheduled = True
        if host.next_start <= now:
            self._ready.append(host)
        else:
            heapq.heappush(self._waiting, (host.next_start, next(self._seq), host))

    # -- handing out ---------------------------------------------------------------------

    def next_request(self) -> Request | None:
        """Block until a request may start; None when the crawl is over or stopped."""
        with self._cond:
            while True:
                if self._stopped:
                    return None
                now = time.monotonic()
                self._promote(now)
                if not self._ready:
                    self._refill()
                if self._ready and self._budget != 0:
                    return self._take(self._ready.popleft(), now)
                if self._in_flight == 0 and (
                    (self._queued == 0 and not self._delayed) or self._budget == 0
                ):
                    self.budget_exhausted = self._budget == 0 and self._queued > 0
                    self._stopped = True
                    self._cond.notify_all()
                    return None
                self._cond.wait(self._next_due(now))

    def _promote(self, now: float) -> None:
        while self._delayed and self._delayed[0][0] <= now:
            request = heapq.heappop(self._delayed)[2]
            self._enqueue(request)
        while self._waiting and self._waiting[0][0] <= now:
            host = heapq.heappop(self._waiting)[2]
            if host.next_start > now:  # pushed back again (Retry-After) while waiting
                heapq.heappush(self._waiting, (host.next_start, next(self._seq), host))
                break
            self._ready.append(host)

    def _next_due(self, now: float) -> float | None:
        due = [entries[0][0] for entries in (self._waiting, self._delayed) if entries]
        return max(0.0, min(due) - now) if due else None

    def _take(self, host: _Host, now: float) -> Request:
        host.scheduled = False
        if host.gated:
            request = host.robots_request
            assert request is not None
            host.robots_request = None
        else:
            if host.queue and (not host.plain or host.queue[0][0] <= 0):
                request = heapq.heappop(host.queue)[2]
            else:
                depth = min(host.plain)
                urls = host.plain[depth]
                request = Request(urls.popleft())
                request.depth = depth
                if not urls:
                    del host.plain[depth]
            if request.attempt == 1 and not request.redirect_chain and self._budget > 0:
                self._budget -= 1
        self._queued -= 1
        host.active += 1
        self._in_flight += 1
        if host.delay:
            host.next_start = now + host.delay
        if self._eligible(host):
            self._schedule(host, now)
        return request

    # -- finishing -----------------------------------------------------------------------

    def finish(
        self,
        request: Request,
        *,
        children: Iterable[Request] = (),
        items: list[dict[str, Any]] | None = None,
        retry: Request | None = None,
        retry_at: float = 0.0,
        host_pause: float | None = None,
        host_failed: bool = False,
        latency: float | None = None,
        commit: bool = True,
    ) -> list[dict[str, Any]]:
        """Release the request's slot; optionally queue its retry and pause its host.

        `host_failed`: the exchange failed in a way that blames the host (connection,
        timeout, retryable status). From the second failure in a row the host is paused
        for `retry.backoff` doubling up to `retry.max_backoff`; a success resets it.
        With a durable frontier the request's children, `items` and its ack (or retry)
        are committed in one transaction first; `commit=False` only frees the slot.
        Returns the items the store kept (all of `items` without a store).
        """
        key = origin(request.url)
        accepted = self._accept(children)
        duplicates = 0
        kept = items or []
        if self._store is not None and commit:
            _, duplicates, kept = self._store.commit(request, accepted, kept, retry)
        with self._cond:
            if self._store is None and accepted:
                _, duplicates = self._add_in_memory(accepted)
            host = self._hosts[key]
            host.active -= 1
            self._in_flight -= 1
            now = time.monotonic()
            if host_failed:
                host.failures += 1
                if host.failures >= 2 and self._host_backoff:
                    backoff = self._host_backoff * 2 ** (host.failures - 2)
                    host_pause = max(host_pause or 0.0, min(backoff, self._max_host_backoff))
            else:
                host.failures = 0
            if latency is not None and self._throttle_target:
                self._throttle(host, latency)
            if host_pause:
                host.next_start = max(host.next_start, now + host_pause)
            if retry is not None and not self._stopped:
                heapq.heappush(self._delayed, (retry_at, next(self._seq), retry))
            if not host.scheduled and self._eligible(host):
                self._schedule(host, now)
            self._refill()
            if self._in_flight == 0 or retry is not None:
                self._cond.notify_all()  # the crawl may be over, or a wait time changed
            else:
                self._cond.notify()
        if duplicates:
            self._stats.inc("filtered_duplicate", duplicates)
        return kept

    @property
    def keeps_items(self) -> bool:
        """True when `finish()` stores the items with the acknowledgement (durable)."""
        return self._store is not None

    def close(self) -> None:
        """Release what the scheduler holds (nothing in memory)."""

    def stop(self) -> None:
        """Hand out nothing more; blocked workers return None."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _throttle(self, host: _Host, latency: float) -> None:
        """Autothrottle: move the delay halfway towards latency / target concurrency."""
        target = latency / self._throttle_target
        delay = (host.delay + target) / 2
        host.delay = min(max(delay, host.base_delay), max(self._throttle_max, host.base_delay))

    def open_host(self, key: str, delay: float | None = None) -> None:
        """robots.txt is read: let the host's requests start, `delay` apart at least."""
        with self._cond:
            host = self._hosts[key]
            host.gated = False
            if delay is not None and delay > host.base_delay:
                host.base_delay = delay
                host.delay = max(host.delay, delay)
            if not host.scheduled and self._eligible(host):
                self._schedule(host, time.monotonic())
            self._cond.notify()

    def refresh_robots(self, key: str) -> None:
        """The host's robots.txt is out of date: fetch it again before anything else."""
        with self._cond:
            host = self._hosts[key]
            if host.gated or self._stopped:
                return
            self._gate(host)
            if not host.scheduled and self._eligible(host):
                self._schedule(host, time.monotonic())
            self._cond.notify()

    @property
    def counts(self) -> dict[str, int]:
        with self._cond:
            return {"queued": self._queued + len(self._delayed), "in_flight": self._in_flight,
                    "seen": len(self._seen)}
