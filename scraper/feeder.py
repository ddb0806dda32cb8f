"""The start requests, read lazily: a spider may yield millions of them (from a file, a
database) without holding them in memory.

The engine reads the first start request itself, before the crawl starts (a spider with
none is a ConfigError). `StartFeeder` reads the rest in a daemon thread, in batches of
`BATCH`, while the frontier holds fewer than `HIGH_WATER` queued requests; the frontier
does not end the crawl while the feeder runs (`Frontier.feeding`). As each start request
is read, its host is trusted by the client's address guard and, when the spider sets no
`allowed_domains`, admitted by the offsite rule. A start request that is not a `Request`
or whose URL cannot be parsed is logged and counted (`filtered_bad_url`); an exception in
the spider's generator is logged and ends the feeding, not the crawl; the frontier's
store failing (a full disk, Redis gone) stops the crawl (`on_fatal`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from .errors import FatalError
from .frontier import Frontier
from .request import Request
from .stats import Stats
from .urls import BadURL, hostname

log = logging.getLogger(__name__)

BATCH = 1000
HIGH_WATER = 10_000  # queued requests above which the feeder waits
ROOM_POLL = 0.02  # seconds between looks at the queue while it is full
MAX_MEMO = 100_000  # origins whose host is remembered


class _FrontierFailed(Exception):
    """The frontier's store failed while the feeder added to it (not the spider)."""

    def __init__(self, error: FatalError) -> None:
        super().__init__(str(error))
        self.error = error


class StartFeeder:
    def __init__(self, requests: Iterator[Any], frontier: Frontier, stats: Stats, *,
                 trust: Callable[[str], None], allow_hosts: bool,
                 on_fatal: Callable[[FatalError], None] | None = None) -> None:
        self._requests = requests
        self._frontier = frontier
        self._stats = stats
        self._trust = trust
        self._allow_hosts = allow_hosts
        self._on_fatal = on_fatal
        self._hosts: dict[str, str] = {}  # the URL's origin as written -> its host
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper-start-feeder",
                                        daemon=True)
        self.read = 0  # start requests read so far

    def admit_host(self, request: Request) -> bool:
        """Trust (and allow) the request's host; False when its URL is not one."""
        url = request.url
        end = url.find("/", url.find("//") + 2)
        prefix = url if end < 0 else url[:end]
        if prefix in self._hosts:
            return True
        try:
            host = hostname(url)
        except BadURL as exc:
            log.warning("skipped a start request: %s", exc)
            self._stats.inc("filtered_bad_url")
            return False
        if len(self._hosts) >= MAX_MEMO:
            self._hosts.clear()
        self._hosts[prefix] = host
        self._trust(host)
        if self._allow_hosts:
            self._frontier.allow_domain(host)
        return True

    def start(self) -> None:
        self._frontier.feeding(True)
        try:
            self._thread.start()
        except BaseException:
            self._frontier.feeding(False)
            raise

    def stop(self, timeout: float = 1.0) -> None:
        """Read no more; waits `timeout` at most for a generator busy producing one."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            batch: list[Request] = []
            for item in self._requests:
                if self._stop.is_set():
                    return
                self.read += 1
                if not isinstance(item, Request):
                    log.warning("skipped a start request: start_requests yielded %r, "
                                "not a Request", item)
                    self._stats.inc("filtered_bad_url")
                    continue
                if not self.admit_host(item):
                    continue
                batch.append(item)
                if len(batch) >= BATCH:
                    self._add(batch)
                    batch = []
                    self._wait_for_room()
            if batch and not self._stop.is_set():
                self._add(batch)
        except _FrontierFailed as failed:  # the crawl's fault, not the spider's
            if self._on_fatal is None:
                raise failed.error from None
            self._on_fatal(failed.error)
        except Exception:
            log.exception("start_requests() raised: no more start requests")
        finally:
            self._frontier.feeding(False)

    def _add(self, batch: list[Request]) -> None:
        try:
            self._frontier.add(batch)
        except FatalError as exc:
            raise _FrontierFailed(exc) from exc

    def _wait_for_room(self) -> None:
        while not self._stop.is_set() and self._frontier.counts()["queued"] >= HIGH_WATER:
            self._stop.wait(ROOM_POLL)
