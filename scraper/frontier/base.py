"""The frontier protocol: the one narrow interface between the engine and a queue.

A frontier holds the crawl's requests: it admits new ones (canonical URL, dedup, offsite,
depth, traps), hands out the next request whose host has a free slot and whose time has
come, and takes back each request handed out with one `Outcome`: the requests it led to,
its items, a retry, a pause for its host, its latency. Three backends implement it by
composition: memory, SQLite (a jobdir) and Redis (one crawl shared by many processes).
Every crawl setting means the same on each of them; one a backend cannot honour is a
`ConfigError` when it opens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..request import Request
from ..settings import Settings

ROBOTS_META = "_robots"  # meta key of a robots.txt request queued by a gating frontier

Item = dict[str, Any]
ExportWriter = Callable[[Iterator[Item], bool], None]


def uses_budget(request: Request) -> bool:
    """A first attempt, not a redirect's hop: it counts against `crawl.max_pages`."""
    return request.attempt == 1 and not request.redirect_chain


def is_plain(request: Request) -> bool:
    """A GET its URL, depth and Referer fully describe (most followed links): frontiers
    keep it in that form."""
    return (request.callback is None and request.priority == 0 and request.method == "GET"
            and not request.meta and request.headers is None and request.body is None
            and request.errback is None and not request.dont_filter and request.attempt == 1
            and not request.redirect_chain and request.store_id is None
            and request.cb_kwargs is None and request.timeout is None
            and request.cookies is None and request.session is None)  # referer: kept


@dataclass(frozen=True, slots=True)
class Outcome:
    """What handling one request left for the frontier; built once, never changed.

    `retry`: the request to try again at `retry_at` (monotonic). `host_pause`: seconds
    before the host's next start (Retry-After). `host_failed`: the exchange failed in a
    way that blames the host (the frontier backs a failing host off). `requeue`: the
    request was cancelled by a stop: nothing is committed and a durable frontier keeps
    it for the next run. `fetched`: the network was used (a cache hit does not pace its
    host).
    """

    children: tuple[Request, ...] = ()
    items: tuple[Item, ...] = ()
    retry: Request | None = None
    retry_at: float = 0.0
    host_pause: float | None = None
    host_failed: bool = False
    latency: float | None = None
    requeue: bool = False
    fetched: bool = True


RELEASE = Outcome(requeue=True)  # free the slot, commit nothing


@dataclass(frozen=True, slots=True)
class FrontierOptions:
    """The crawl settings every backend honours."""

    per_host: int
    delay: float = 0.0
    allowed_domains: frozenset[str] = frozenset()
    depth_limit: int = 0
    max_pages: int = 0
    host_backoff: float = 0.0
    max_host_backoff: float = 0.0
    obey_robots: bool = False
    sort_query: bool = False
    max_url_length: int = 0
    max_repeated_segments: int = 0
    autothrottle_target: float = 0.0  # 0: autothrottle off
    autothrottle_max_delay: float = 60.0
    strip_session_ids: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, allowed_domains: Iterable[str]) -> FrontierOptions:
        crawl, retry = settings.crawl, settings.retry
        return cls(
            per_host=crawl.per_host,
            delay=crawl.delay,
            allowed_domains=frozenset(d.lower().lstrip(".") for d in allowed_domains),
            depth_limit=crawl.depth_limit,
            max_pages=crawl.max_pages,
            host_backoff=retry.backoff,
            max_host_backoff=retry.max_backoff,
            obey_robots=crawl.obey_robots and "robots" not in crawl.disable,
            sort_query=crawl.sort_query,
            max_url_length=crawl.max_url_length,
            max_repeated_segments=crawl.max_repeated_segments,
            autothrottle_target=crawl.autothrottle_target if crawl.autothrottle else 0.0,
            autothrottle_max_delay=crawl.autothrottle_max_delay,
            strip_session_ids=crawl.strip_session_ids,
        )


class ConnectionPool(Protocol):
    """What a frontier may ask of the HTTP client about connections (`Client`)."""

    max_connections: int

    def close_host(self, origin: str) -> None:
        """Close the idle pooled connections of `origin` and forget its pool."""


class Frontier(Protocol):
    """What the engine may ask of a frontier (thread-safe: every worker calls it)."""

    gates_robots: bool
    """True: a host's robots.txt is queued first (a request with `ROBOTS_META`) and its
    other requests wait for `open_host`. False: robots.txt is read inline, per process."""

    exports_items: bool
    """True: `finish` keeps items durably with the ack and outputs are written from the
    frontier by `export` at the end. False: the engine writes the items it is given back."""

    keeps_unfinished: bool
    """True: a request whose `finish` failed stays stored and runs again in a later crawl,
    so the engine must not write its items now. False (memory): nothing else holds them."""

    serializes_requests: bool
    """True: requests are stored as text (`codec`), so callbacks must be spider methods
    and meta JSON; the engine checks each request a callback yields."""

    def add(self, requests: Iterable[Request]) -> int:
        """Admit requests (filters, dedup); returns how many were queued."""

    def allow_domain(self, domain: str) -> None:
        """Admit `domain` and its subdomains from now on (the host of a start request read
        lazily, when the spider sets no `allowed_domains`)."""

    def feeding(self, active: bool) -> None:
        """A producer of requests (the start requests' feeder) begins (True) or ends
        (False): the crawl is not over while one is active."""

    def use_connections(self, pool: ConnectionPool) -> None:
        """The client's connection budget: keep the hosts crawled at once within
        `pool.max_connections`, closing idle hosts' pools through it."""

    def next(self) -> Request | None:
        """Block until a request may start; None when the crawl is over or stopped."""

    def finish(self, request: Request, outcome: Outcome) -> list[Item]:
        """Take back a request handed out: release its slot, queue its children and retry,
        pace its host; durably, in one step, where the backend is durable. Returns the
        items kept (an incremental crawl drops items seen before)."""

    def open_host(self, origin: str, delay: float | None = None) -> None:
        """robots.txt is read: the host may start, `delay` apart at least."""

    def refresh_robots(self, origin: str) -> None:
        """The host's robots.txt is out of date: read it again before anything else."""

    def export(self, target: str, write: ExportWriter, stream: str = "") -> int:
        """`exports_items` backends: write the items `stream` (one output) has not had yet
        to `target`."""

    def stop(self) -> None:
        """Hand out nothing more; blocked `next` calls return None."""

    def close(self) -> None:
        """Release what the frontier holds; called once, after the workers are done."""

    @property
    def budget_exhausted(self) -> bool:
        """`crawl.max_pages` stopped the crawl with requests still queued."""

    def counts(self) -> dict[str, int]:
        """`queued`, `in_flight`, `seen` (and backend extras)."""

    def queued_left(self) -> int:
        """Requests left for a later run (durable backends), or queued now."""
