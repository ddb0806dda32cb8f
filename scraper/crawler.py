"""The crawler: wires settings, scheduler, client, workers, items and outputs together.

The calling thread supervises: it starts `crawl.workers` threads, enforces the job
deadline, handles interrupts, logs progress, and finalises outputs however the crawl
ends. Every request ends as a page handed to a callback or as a failure with a reason.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any
from urllib.parse import urljoin

from .client import Client, FetchResult, RetryPolicy
from .errors import (
    BlockedAddress,
    Cancelled,
    CloseSpider,
    ConfigError,
    DropItem,
    FetchError,
    ItemError,
    RedirectError,
    StatusError,
)
from .exporters import Exporter
from .items import as_dict, is_item, pipeline_steps, validate
from .request import Failure, Request
from .resolver import trusted_hosts
from .response import Response
from .robots import RobotsPolicy, policy_from_response, robots_url
from .scheduler import ROBOTS_META, Scheduler
from .settings import Settings
from .spider import Spider
from .stats import Stats
from .store import JobStore
from .urls import BadURL, canonicalize, hostname, origin

log = logging.getLogger(__name__)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
SECRET_HEADERS = ("authorization", "cookie", "proxy-authorization")
CANCEL_GRACE = 1.0  # seconds given to workers to wind down after a hard stop
LOG_INTERVAL = 10.0
SIGNAL_POLL = 0.1  # how often the supervisor looks for signals received
ROBOTS_RETRY_AFTER = 60.0  # an unreachable robots.txt (shared frontier) is tried again after
STATS_CHECKPOINT = 1.0  # with a jobdir, how often the stats are saved

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_DEADLINE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@dataclass(slots=True)
class _Outcome:
    """What handling one request left for the scheduler."""

    children: list[Request] = field(default_factory=list)
    retry: Request | None = None
    retry_at: float = 0.0
    host_pause: float | None = None
    host_failed: bool = False
    latency: float | None = None
    items: list[dict[str, Any]] = field(default_factory=list)
    requeue: bool = False  # cancelled by a stop: a durable frontier keeps it for next time


@dataclass
class CrawlResult:
    stats: dict[str, Any]
    finish_reason: str
    exit_code: int
    items: list[dict[str, Any]] = field(default_factory=list)


class Crawler:
    """One crawl of one spider. `run()` may be called once."""

    def __init__(
        self,
        spider: Spider,
        settings: Settings,
        *,
        outputs: Sequence[Exporter] = (),
        collect_items: bool = False,
        handle_signals: bool = False,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        progress_interval: float = LOG_INTERVAL,
    ) -> None:
        """`on_progress(snapshot)` is called every `progress_interval` seconds from the
        supervising thread (default: a log line)."""
        self.spider = spider
        self.settings = settings
        self.outputs = list(outputs)
        self.collect_items = collect_items
        self.handle_signals = handle_signals
        self.on_progress = on_progress
        self.progress_interval = progress_interval
        self._started = time.monotonic()
        self.stats = Stats()
        self.items: list[dict[str, Any]] = []
        self._items_lock = threading.Lock()
        self._pipeline = pipeline_steps(spider.pipelines)
        self._retry = RetryPolicy(settings.retry)
        self._finish_reason: str | None = None
        self._reason_lock = threading.Lock()
        self._interrupts = 0
        self._signals_received = 0
        self._hard_stop_at: float | None = None
        self._interrupt_at: float | None = None
        self._workers_done = threading.Event()
        self._live_workers = 0
        self._live_lock = threading.Lock()
        self.scheduler: Scheduler | None = None
        self.robots: dict[str, RobotsPolicy] = {}  # origin -> rules
        self._robots_lock = threading.Lock()
        self._robots_locks: dict[str, threading.Lock] = {}
        self.client: Client | None = None
        self.store: JobStore | None = None

    # -- life cycle ----------------------------------------------------------------------

    def run(self) -> CrawlResult:
        settings = self.settings
        start_requests = self._start_requests()
        if settings.frontier.incremental and not settings.frontier.jobdir:
            raise ConfigError("frontier.incremental needs a jobdir (--jobdir or "
                              "frontier.jobdir) to remember what was seen")
        if settings.frontier.jobdir:
            self.store = JobStore(settings.frontier.jobdir, self.spider,
                                  incremental=settings.frontier.incremental)
            if self.store.resumed:
                self.stats.restore(self.store.load_stats())
                log.info("resuming the crawl in %s", settings.frontier.jobdir)
        allowed = self.spider.allowed_domains
        if allowed is None:
            allowed = sorted({hostname(r.url) for r in start_requests})
        self.scheduler = self._make_scheduler(allowed)
        self.client = Client(settings.http, per_host=settings.crawl.per_host, stats=self.stats,
                             retry_statuses=self._retry.statuses,
                             trusted_hosts=trusted_hosts({hostname(r.url) for r in start_requests},
                                                         self.spider.allowed_domains or ()))
        started = self._started = time.monotonic()
        wall_started = time.time()
        deadline = started + settings.crawl.deadline if settings.crawl.deadline else None
        self.client.deadline = deadline
        previous_handlers = self._install_signals()
        try:
            self.spider.opened()
            self.scheduler.add(start_requests)
            threads = [
                threading.Thread(target=self._worker, name=f"scraper-worker-{i}", daemon=True)
                for i in range(settings.crawl.workers)
            ]
            self._live_workers = len(threads)
            for thread in threads:
                thread.start()
            self._supervise(threads, started, deadline)
        finally:
            self._restore_signals(previous_handlers)
            self.client.close()
            queued_left = self.store.queued() if self.store is not None \
                else self.scheduler.counts["queued"]
            self.scheduler.close()
            reason = self._finish_reason or (
                "max_pages" if self.scheduler.budget_exhausted else "finished"
            )
            self._finalise_outputs()
            if self.store is not None:
                stats_so_far = self.stats.snapshot()
                self.store.save_stats(stats_so_far,
                                      finished=reason == "finished")
                self.store.close()
            try:
                self.spider.closed(reason)
            except Exception:
                log.exception("spider.closed() raised")
        elapsed = time.monotonic() - started
        stats = self.stats.snapshot()
        stats["queued_left"] = queued_left
        stats["elapsed_s"] = round(elapsed, 3)
        stats["pages_per_s"] = round(stats["pages"] / elapsed, 1) if elapsed > 0 else 0.0
        stats["finish_reason"] = reason
        stats["started_at"] = wall_started
        stats["exit_code"] = self._exit_code(reason, stats["failed"])
        return CrawlResult(stats, reason, stats["exit_code"], self.items)

    def _make_scheduler(self, allowed: Iterable[str]) -> Scheduler:
        settings = self.settings
        options: dict[str, Any] = {
            "per_host": settings.crawl.per_host,
            "delay": settings.crawl.delay,
            "allowed_domains": allowed,
            "depth_limit": settings.crawl.depth_limit,
            "max_pages": settings.crawl.max_pages,
            "host_backoff": settings.retry.backoff,
            "max_host_backoff": settings.retry.max_backoff,
            "obey_robots": settings.crawl.obey_robots,
            "sort_query": settings.crawl.sort_query,
            "max_url_length": settings.crawl.max_url_length,
            "max_repeated_segments": settings.crawl.max_repeated_segments,
            "autothrottle_target": settings.crawl.autothrottle_target
            if settings.crawl.autothrottle else 0.0,
            "autothrottle_max_delay": settings.crawl.autothrottle_max_delay,
        }
        backend = settings.frontier.backend
        if backend.startswith(("redis://", "rediss://", "unix://")):
            if settings.frontier.jobdir:
                raise ConfigError("frontier.jobdir and a Redis frontier.backend exclude each "
                                  "other: the crawl's state lives in Redis")
            from .redis_frontier import RedisScheduler

            return RedisScheduler(
                self.stats, url=backend, name=settings.frontier.name or self.spider.name,
                spider=self.spider, lease_timeout=settings.frontier.lease_timeout,
                cleanup=settings.frontier.cleanup, **options)
        if backend not in ("memory", "sqlite"):
            raise ConfigError(f"frontier.backend = {backend!r}: expected 'memory', 'sqlite' "
                              "(with a jobdir) or a redis://host:port/db URL")
        if backend == "sqlite" and self.store is None:
            raise ConfigError("frontier.backend = 'sqlite' needs frontier.jobdir (--jobdir)")
        return Scheduler(self.stats, store=self.store, **options)

    def _start_requests(self) -> list[Request]:
        requests = []
        for request in self.spider.start_requests() or ():
            if not isinstance(request, Request):
                raise ConfigError(
                    f"spider {self.spider.name!r}: start_requests yielded {request!r}, "
                    "not a Request"
                )
            try:
                canonicalize(request.url)
            except BadURL as exc:
                raise ConfigError(f"spider {self.spider.name!r}: bad start URL: {exc}") from None
            requests.append(request)
        if not requests:
            raise ConfigError(f"spider {self.spider.name!r} has no start URLs")
        return requests

    def _exit_code(self, reason: str, failed: int) -> int:
        if reason == "deadline":
            return EXIT_DEADLINE
        if reason == "interrupted":
            return EXIT_INTERRUPTED
        if reason == "error" or failed > self.settings.crawl.allowed_failures:
            return EXIT_FAILURES
        return EXIT_OK

    def _supervise(self, threads: list[threading.Thread], started: float,
                   deadline: float | None) -> None:
        assert self.scheduler is not None and self.client is not None
        grace = self.settings.crawl.shutdown_grace
        next_log = started + self.progress_interval
        next_checkpoint = started + STATS_CHECKPOINT
        handled_signals = 0
        while True:
            while handled_signals < self._signals_received:
                handled_signals += 1
                self.interrupt()
            now = time.monotonic()
            if deadline is not None and now >= deadline and self._hard_stop_at is None:
                log.warning("deadline reached: cancelling %d requests in flight",
                            self.scheduler.counts["in_flight"])
                self.halt("deadline", cancel=True)
            if self._interrupt_at is not None and self._hard_stop_at is None \
                    and now >= self._interrupt_at + grace:
                log.warning("grace period over: cancelling requests in flight")
                self.halt("interrupted", cancel=True)
            if self._hard_stop_at is not None and now >= self._hard_stop_at + CANCEL_GRACE:
                stuck = [t.name for t in threads if t.is_alive()]
                log.error("workers still busy after cancellation, leaving them: %s", stuck)
                return
            if now >= next_log:
                self._report_progress()
                next_log = now + self.progress_interval
            if self.store is not None and now >= next_checkpoint:
                self.store.save_stats(self.stats.snapshot())  # for a run resumed after a crash
                next_checkpoint = now + STATS_CHECKPOINT
            wakeups = [next_log, now + SIGNAL_POLL]
            if deadline is not None and self._hard_stop_at is None:
                wakeups.append(deadline)
            if self._interrupt_at is not None and self._hard_stop_at is None:
                wakeups.append(self._interrupt_at + grace)
            if self._hard_stop_at is not None:
                wakeups.append(self._hard_stop_at + CANCEL_GRACE)
            if self._workers_done.wait(max(0.0, min(wakeups) - now)):
                for thread in threads:
                    thread.join()
                return

    def progress(self) -> dict[str, Any]:
        """A live snapshot: counters plus pages/s, in flight, queued, connections open."""
        assert self.scheduler is not None and self.client is not None
        snapshot = self.stats.snapshot()
        snapshot.update(self.scheduler.counts)
        elapsed = time.monotonic() - self._started
        snapshot["elapsed_s"] = round(elapsed, 3)
        snapshot["pages_per_s"] = round(snapshot["pages"] / elapsed, 1) if elapsed > 0 else 0.0
        snapshot["connections_open"] = self.client.open_connections()
        return snapshot

    def _report_progress(self) -> None:
        snapshot = self.progress()
        if self.on_progress is not None:
            try:
                self.on_progress(snapshot)
            except Exception:
                log.exception("progress reporter raised")
            return
        log.info(
            "pages %d, items %d, %.1f pages/s, in flight %d, queued %d, failed %d, "
            "connections open %d",
            snapshot["pages"], snapshot["items"], snapshot["pages_per_s"],
            snapshot["in_flight"], snapshot["queued"], snapshot["failed"],
            snapshot["connections_open"],
        )

    def halt(self, reason: str, *, cancel: bool) -> None:
        """Stop handing out requests; with `cancel`, also abort the ones in flight."""
        with self._reason_lock:
            if self._finish_reason is None:
                self._finish_reason = reason
        assert self.scheduler is not None and self.client is not None
        self.scheduler.stop()
        if cancel and self._hard_stop_at is None:
            self._hard_stop_at = time.monotonic()
            self.client.cancel_all(reason)

    def interrupt(self) -> None:
        """First call: finish in-flight requests within the grace period. Second: cancel."""
        self._interrupts += 1
        if self._interrupts == 1:
            log.warning("interrupted: finishing requests in flight (interrupt again to cancel)")
            self._interrupt_at = time.monotonic()
            self.halt("interrupted", cancel=False)
        else:
            log.warning("interrupted again: cancelling requests in flight")
            self.halt("interrupted", cancel=True)

    def _install_signals(self) -> dict[int, Any]:
        if not self.handle_signals or threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, frame: FrameType | None) -> None:
            # Only a counter: the handler may run while this thread holds any lock.
            self._signals_received += 1

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _finalise_outputs(self) -> None:
        for output in self.outputs:
            try:
                if self.store is not None:
                    self.store.export(output.target, output.write_and_finalise)
                else:
                    output.finalise()
            except OSError as exc:
                log.error("cannot finalise output %s: %s", output.target, exc)
                self._finish_reason = "error"

    # -- workers -------------------------------------------------------------------------

    def _worker(self) -> None:
        assert self.scheduler is not None
        try:
            while (request := self.scheduler.next_request()) is not None:
                self._process(request)
        finally:
            with self._live_lock:
                self._live_workers -= 1
                if self._live_workers == 0:
                    self._workers_done.set()

    def _process(self, request: Request) -> None:
        """Fetch and handle one request; release its slot exactly once, whatever happens."""
        assert self.scheduler is not None
        outcome = _Outcome()
        try:
            self._handle(request, outcome)
        except Exception:  # a bug must not kill the worker, leak the slot or lose the URL
            log.exception("internal error processing %s", request.url)
            self.stats.add_failure("internal_error")
        finally:
            durable = self.scheduler.keeps_items
            if not durable:
                self._emit(outcome.items)
            # Children, items and the ack go together (one transaction with a jobdir).
            try:
                kept = self.scheduler.finish(request, children=outcome.children,
                                             items=outcome.items if durable else None,
                                             retry=outcome.retry, retry_at=outcome.retry_at,
                                             host_pause=outcome.host_pause,
                                             host_failed=outcome.host_failed,
                                             latency=outcome.latency,
                                             commit=not outcome.requeue)
            except Exception:  # e.g. the disk is full: the request stays unacknowledged
                log.exception("cannot record the results of %s", request.url)
                self.stats.add_failure("internal_error")
                kept = self.scheduler.finish(request, commit=False)
            if durable and self.store is None:
                self._emit(kept)  # Redis: the stream has them; this process's own file too
            elif durable and outcome.items:
                self.stats.inc("items", len(kept))
                self.stats.inc("items_unchanged", len(outcome.items) - len(kept))
                if self.collect_items:
                    with self._items_lock:
                        self.items.extend(kept)

    def _handle(self, request: Request, outcome: _Outcome) -> None:
        assert self.client is not None
        if self.settings.crawl.obey_robots:
            if request.meta.get(ROBOTS_META):
                self._handle_robots(request, outcome)
                return
            if not self._robots_allow(request, outcome):
                return
        headers, cached_children = request.headers, None
        if self.store is not None and self.store.incremental and request.method == "GET":
            headers, cached_children = self._conditional(request)
        try:
            result = self.client.fetch(request.method, request.url, headers, request.body)
        except FetchError as exc:
            self._fetch_failed(request, exc, outcome)
            return
        outcome.latency = result.elapsed
        status = result.status
        if status == 304 and cached_children is not None:
            self.stats.inc("not_modified")  # unchanged: not parsed; its links still followed
            for child in cached_children:
                child.depth = request.depth + 1
            outcome.children.extend(cached_children)
            return
        if status in REDIRECT_STATUSES and "location" in result.headers \
                and not request.meta.get("dont_redirect"):
            self._redirect(request, result, outcome)
            return
        response = Response(result.url, status, result.headers, result.body, request)
        if status >= 300 and status not in self.spider.handle_statuses:
            self._fail(request, f"status:{status}", StatusError(status, request.url), outcome,
                       response)
            return
        self._run_callback(request.callback or self.spider.parse, response, request, outcome)
        if self.store is not None and self.store.incremental and request.method == "GET":
            self.store.remember(request.url, result.headers.get("etag"),
                                result.headers.get("last-modified"), outcome.children)

    def _conditional(self, request: Request) -> tuple[dict[str, str] | None, list[Request] | None]:
        """Incremental: validators from the last run as If-None-Match / If-Modified-Since,
        and the requests the page led to then (followed again on a 304)."""
        assert self.store is not None
        etag, modified, children = self.store.validators(request.url)
        if not etag and not modified:
            return request.headers, None
        headers = dict(request.headers or {})
        if etag:
            headers["If-None-Match"] = etag
        if modified:
            headers["If-Modified-Since"] = modified
        return headers, children

    def _robots_allow(self, request: Request, outcome: _Outcome) -> bool:
        """Check robots.txt; a disallowed request is filtered (or fails, when robots.txt
        could not be fetched: RFC 9309 then says disallow all)."""
        assert self.scheduler is not None
        key = origin(request.url)
        policy = self.robots.get(key)
        if policy is None:
            if self.scheduler.gates_robots:
                return True  # robots.txt was fetched through the queue: no host gate here
            policy = self._robots_inline(key)
        if policy.expired():
            self.scheduler.refresh_robots(key)
        if policy.allowed(request.url, self.settings.http.user_agent):
            return True
        if policy.rules is None and not policy.allow_all:
            self._fail(request, "robots_unavailable", FetchError(
                f"{robots_url(key)} could not be fetched: everything is disallowed",
                request.url), outcome)
        else:
            self.stats.inc("filtered_robots")
            log.debug("disallowed by robots.txt: %s", request.url)
        return False

    def _robots_inline(self, key: str) -> RobotsPolicy:
        """Fetch robots.txt now, once per origin and process (shared frontiers: the
        queue cannot hold a host back for one process's robots.txt)."""
        with self._robots_lock:
            lock = self._robots_locks.setdefault(key, threading.Lock())
        with lock:
            policy = self.robots.get(key)
            if policy is not None:
                return policy
            ttl = self.settings.crawl.robots_ttl
            try:
                status, body = self._read_robots(robots_url(key))
            except FetchError as exc:
                log.warning("robots.txt for %s unavailable (%s): disallowing the host for "
                            "a minute", key, exc)
                status, body = None, b""
                ttl = min(ttl, ROBOTS_RETRY_AFTER)
            policy = policy_from_response(status, body, ttl)
            self.robots[key] = policy
            assert self.scheduler is not None
            self.scheduler.open_host(key, policy.crawl_delay(self.settings.http.user_agent))
            return policy

    def _read_robots(self, url: str) -> tuple[int | None, bytes]:
        """GET robots.txt, following up to five redirects; a retryable-status answer is
        returned as its status. Raises FetchError when nothing could be read."""
        assert self.client is not None
        for _ in range(6):
            try:
                result = self.client.fetch("GET", url)
            except BlockedAddress:
                return 404, b""  # never reached: allow all; each page then fails blocked_address
            except StatusError as exc:
                if isinstance(exc.result, FetchResult) and exc.result.status in (429, *range(
                        500, 600)):
                    raise  # unreachable, as RFC 9309 counts it: retried, then disallow all
                return (exc.result.status, b"") if isinstance(exc.result, FetchResult) \
                    else (None, b"")
            location = result.headers.get("location")
            if result.status in REDIRECT_STATUSES and location:
                url = urljoin(url, location)
                continue
            return result.status, result.body
        return None, b""

    def _handle_robots(self, request: Request, outcome: _Outcome) -> None:
        """Fetch a host's robots.txt (following up to 5 redirects) and open the host."""
        assert self.client is not None and self.scheduler is not None
        key = origin(request.url)
        status, body = None, b""
        try:
            status, body = self._read_robots(request.url)
        except FetchError as exc:
            wait = None if self._hard_stop_at is not None else \
                self._retry.next_wait("GET", request.attempt, exc)
            if wait is not None:
                self.stats.inc("retries")
                outcome.retry = request.replace(attempt=request.attempt + 1)
                outcome.retry_at = time.monotonic() + wait
                outcome.host_failed = exc.retryable
                return
            if isinstance(exc, StatusError) and isinstance(exc.result, FetchResult):
                status = exc.result.status
            log.warning("robots.txt for %s unavailable (%s): disallowing the host", key, exc)
        policy = policy_from_response(status, body, self.settings.crawl.robots_ttl)
        self.robots[key] = policy
        delay = policy.crawl_delay(self.settings.http.user_agent)
        log.info("robots.txt for %s: status %s, crawl-delay %s", key, status, delay)
        self.scheduler.open_host(key, delay)

    def _fetch_failed(self, request: Request, exc: FetchError, outcome: _Outcome) -> None:
        outcome.requeue = isinstance(exc, Cancelled)
        outcome.host_failed = exc.retryable and not isinstance(exc, Cancelled)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            outcome.host_pause = min(retry_after, self.settings.retry.max_backoff)
        wait = None if self._hard_stop_at is not None else \
            self._retry.next_wait(request.method, request.attempt, exc)
        if wait is not None:
            self.stats.inc("retries")
            log.info("retrying %s in %.2fs (attempt %d): %s", request.url, wait,
                     request.attempt + 1, exc)
            outcome.retry = request.replace(attempt=request.attempt + 1)
            outcome.retry_at = time.monotonic() + wait
            return
        response = None
        if isinstance(exc, StatusError) and isinstance(exc.result, FetchResult):
            result = exc.result
            response = Response(result.url, result.status, result.headers, result.body, request)
            if result.status in self.spider.handle_statuses:
                self._run_callback(request.callback or self.spider.parse, response, request,
                                   outcome)
                return
        self._fail(request, exc.reason, exc, outcome, response)

    def _redirect(self, request: Request, result: FetchResult, outcome: _Outcome) -> None:
        chain = (*request.redirect_chain, request.url)
        location = result.headers["location"]
        try:
            target = canonicalize(urljoin(result.url, location))
        except BadURL as exc:
            self._fail(request, "redirect",
                       RedirectError(f"bad Location {location!r}: {exc}", request.url), outcome)
            return
        if target in chain:
            self._fail(request, "redirect_loop",
                       RedirectError(f"redirect loop back to {target}", request.url), outcome)
            return
        if len(chain) > self.settings.http.max_redirects:
            self._fail(request, "redirect", RedirectError(
                f"more than http.max_redirects ({self.settings.http.max_redirects}) redirects",
                request.url), outcome)
            return
        headers = request.headers
        if headers and hostname(target) != hostname(request.url):
            headers = {k: v for k, v in headers.items() if k.lower() not in SECRET_HEADERS}
        method, body = request.method, request.body
        if result.status == 303 or (result.status in (301, 302) and method == "POST"):
            method, body = "GET", None
        self.stats.inc("redirects")
        outcome.children.append(request.replace(
            url=target, redirect_chain=chain, attempt=1, headers=headers, method=method,
            body=body, store_id=None))

    def _fail(self, request: Request, reason: str, exc: BaseException, outcome: _Outcome,
              response: Response | None = None) -> None:
        """Record a request that ended without a page, and call its errback."""
        self.stats.add_failure(reason)
        log.warning("failed (%s) %s: %s", reason, request.url, exc)
        if request.errback is not None:
            failure = Failure(request, reason, exc, response)
            self._run_callback(request.errback, failure, request, outcome, count_page=False)

    def _run_callback(self, callback: Any, argument: Any, request: Request, outcome: _Outcome,
                      *, count_page: bool = True) -> None:
        """Run a callback or errback; route its items; collect the requests it yields."""
        if count_page:
            self.stats.inc("pages")
        depth = request.depth + 1
        try:
            outputs = callback(argument)
            for value in outputs if isinstance(outputs, Iterable) else ():
                if isinstance(value, Request):
                    value.depth = depth
                    if self.store is not None:
                        self.store.check(value)  # fail here, in the callback, if unstorable
                    outcome.children.append(value)
                elif value is not None:
                    self._process_item(value, outcome)
        except CloseSpider as exc:
            log.info("spider asked to close: %s", exc.reason)
            self.halt(exc.reason, cancel=False)
        except Exception as exc:
            name = getattr(callback, "__name__", repr(callback))
            log.exception("callback %s raised on %s", name, request.url)
            self.stats.add_failure("callback_error")
            if request.errback is not None and callback is not request.errback:
                failure = Failure(request, "callback_error", exc)
                self._run_callback(request.errback, failure, request, outcome,
                                   count_page=False)

    def _process_item(self, value: Any, outcome: _Outcome) -> None:
        if not is_item(value):
            self.stats.inc("items_invalid")
            log.warning("callback yielded %s, which is neither a Request nor an item",
                        type(value).__name__)
            return
        try:
            item = validate(as_dict(value), self.spider.item_model)
        except ItemError as exc:
            self.stats.inc("items_invalid")
            log.warning("%s", exc)
            return
        try:
            for step in self._pipeline:
                changed = step(item, self.spider)
                if changed is not None:
                    item = as_dict(changed)
        except DropItem as exc:
            self.stats.inc("items_dropped")
            log.debug("item dropped: %s", exc)
            return
        except Exception:
            self.stats.inc("items_dropped")
            self.stats.inc("pipeline_errors")
            log.exception("pipeline raised; item dropped")
            return
        outcome.items.append(item)

    def _emit(self, items: list[dict[str, Any]]) -> None:
        """Memory frontier: write items straight to the outputs."""
        for item in items:
            written = True
            for output in self.outputs:
                written = output.write(item) and written
            if not written:
                return  # outputs already finalised (hard stop): the items came too late
            self.stats.inc("items")
            if self.collect_items:
                with self._items_lock:
                    self.items.append(item)
