"""The engine: worker threads that take requests from the frontier and pass each one
through the component chain and its callback, and a supervising thread that enforces the
deadline, handles interrupts, reports progress and finalises the outputs.

Faults are contained at the worker boundary: nothing raised while handling a request
(a callback, a pipeline, a middleware, a bug) kills a worker or leaves its slot taken;
the request is accounted for as a page or a failure with a reason. An output or store
that cannot be written (`FatalError`) stops the crawl promptly with finish_reason
`error` and exit code 1, one log line naming the file and the error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .callbacks import CallbackRunner
from .chain import Chain, build_chain
from .client import Client, RetryPolicy
from .components.base import Context
from .errors import ConfigError, FatalError, StatusError
from .exits import exit_code
from .exporters import Exporter
from .feeder import StartFeeder
from .frontier import RELEASE, Frontier, JobStore, open_frontier, open_jobstore
from .frontier.codec import check_storable
from .items import ItemProcessor
from .outputs import ItemSink
from .request import Request
from .resolver import trusted_hosts
from .settings import Settings
from .spider import Spider
from .stats import Stats
from .supervisor import LOG_INTERVAL, Supervisor
from .urls import BadURL, canonicalize, hostname

log = logging.getLogger(__name__)


@dataclass
class CrawlResult:
    """What a crawl returns: its stats (DESIGN.md keys), why it ended, the exit code, and
    its items when asked for (`collect_items`, the Python API)."""

    stats: dict[str, Any]
    finish_reason: str
    exit_code: int
    items: list[dict[str, Any]] = field(default_factory=list)


class Engine:
    """One crawl of one spider. `run()` may be called once."""

    def __init__(self, spider: Spider, settings: Settings, *,
                 outputs: Sequence[Exporter] = (), collect_items: bool = False,
                 handle_signals: bool = False,
                 on_progress: Callable[[dict[str, Any]], None] | None = None,
                 progress_interval: float = LOG_INTERVAL) -> None:
        self.spider = spider
        self.settings = settings
        self.stats = Stats()
        self.sink = ItemSink(outputs, self.stats, collect=collect_items)
        self.handle_signals = handle_signals
        self.on_progress = on_progress
        self.progress_interval = progress_interval
        self.retry_policy = RetryPolicy(settings.retry)
        self.store: JobStore | None = None
        self.frontier: Frontier | None = None
        self.client: Client | None = None
        self.chain: Chain | None = None
        self.supervisor = Supervisor(self)
        self._callbacks: CallbackRunner | None = None
        self._fatal: FatalError | None = None
        self._fatal_lock = threading.Lock()
        self._last_item_at = time.monotonic()
        self._seen = 0  # distinct requests the frontier admitted, read before it closes

    # -- life cycle ----------------------------------------------------------------------

    def run(self) -> CrawlResult:
        settings = self.settings
        first, start_requests = self._start_requests()
        first_host = hostname(first.url)
        allowed = self.spider.allowed_domains
        if allowed is None:  # the hosts of the start requests, added as they are read
            allowed = [first_host]
        started = time.monotonic()
        wall_started = time.time()
        queued_left = 0
        crawled = False
        feeder: StartFeeder | None = None
        try:
            try:
                self._open(allowed, {first_host})
                assert self.frontier is not None and self.client is not None
                self.frontier.use_connections(self.client)
                deadline = started + settings.crawl.deadline if settings.crawl.deadline \
                    else None
                self.client.deadline = deadline
                self.spider.opened()
                self.frontier.add([first])
                feeder = StartFeeder(start_requests, self.frontier, self.stats,
                                     trust=self.client.trust,
                                     allow_hosts=self.spider.allowed_domains is None,
                                     on_fatal=self.fatal)
                feeder.start()
                crawled = True
                self.supervisor.run(started, deadline)
            except FatalError as exc:
                self.fatal(exc)
            finally:
                if feeder is not None:
                    feeder.stop()
                queued_left = self._close()
        except BaseException:  # a ConfigError at start, a bug: nothing half-written stays
            self.sink.abort()
            self._close_store("error")
            raise
        reason = self.supervisor.finish_reason or (
            "max_pages" if self.frontier is not None and self.frontier.budget_exhausted
            else "finished")
        if not crawled:  # the store or Redis failed before the crawl began: no empty file
            self.sink.abort()
        elif self.sink.finalise(self.frontier if self._fatal is None else None):
            reason = "error"
        if self._fatal is not None:
            reason = "error"
        self._close_store(reason)
        try:
            self.spider.closed(reason)
        except Exception:
            log.exception("spider.closed() raised")
        return self._result(reason, started, wall_started, queued_left)

    def _open(self, allowed: Any, start_hosts: set[str]) -> None:
        settings = self.settings
        self.store = open_jobstore(settings, self.spider)
        if self.store is not None and self.store.resumed:
            self.stats.restore(self.store.load_stats())
            log.info("resuming the crawl in %s", settings.frontier.jobdir)
        self.frontier = open_frontier(settings, self.spider, self.stats, allowed, self.store)
        self.client = Client(settings.http, per_host=settings.crawl.per_host, stats=self.stats,
                             retry_statuses=self.retry_policy.statuses,
                             trusted_hosts=trusted_hosts(start_hosts,
                                                         self.spider.allowed_domains or ()))
        self.chain = build_chain(settings, self.spider, client=self.client,
                                 frontier=self.frontier, store=self.store, stats=self.stats,
                                 policy=self.retry_policy, stopping=lambda: self.stopping)
        self._callbacks = CallbackRunner(
            self.spider, self.stats, ItemProcessor(self.spider, self.stats),
            close_spider=lambda reason: self.halt(reason, cancel=False),
            check_request=(lambda request: check_storable(self.spider, request))
            if self.frontier.serializes_requests else None,
            retry_policy=self.retry_policy, stopping=lambda: self.stopping,
            on_blocked=self.chain.penalise)

    def _close(self) -> int:
        """Close the client, chain and frontier (whatever was opened); the requests left."""
        queued_left = 0
        if self.client is not None:
            self.client.close()
        if self.chain is not None:
            self.chain.close()
        if self.frontier is not None:
            try:
                queued_left = self.frontier.queued_left()
                self._seen = self.frontier.counts()["seen"]
            except FatalError as exc:
                self.fatal(exc)
            self.frontier.close()
        return queued_left

    def _close_store(self, reason: str) -> None:
        if self.store is None:
            return
        try:
            self.store.save_stats(self.stats.snapshot(), finished=reason == "finished")
        except FatalError as exc:
            log.error("cannot save the crawl's stats: %s", exc)
        try:
            self.store.close()
        except FatalError as exc:
            log.error("cannot close the jobdir: %s", exc)

    def _result(self, reason: str, started: float, wall_started: float,
                queued_left: int) -> CrawlResult:
        elapsed = time.monotonic() - started
        stats = self.stats.snapshot()
        stats["queued_left"] = queued_left
        stats["seen"] = self._seen
        stats["elapsed_s"] = round(elapsed, 3)
        stats["pages_per_s"] = round(stats["pages"] / elapsed, 1) if elapsed > 0 else 0.0
        stats["finish_reason"] = reason
        stats["started_at"] = wall_started
        stats["exit_code"] = exit_code(reason, stats["failed"],
                                       self.settings.crawl.allowed_failures)
        if self._fatal is not None:
            stats["error"] = str(self._fatal)
        return CrawlResult(stats, reason, stats["exit_code"], self.sink.items)

    def _start_requests(self) -> tuple[Request, Iterator[Any]]:
        """The first start request, checked (a spider with none is a ConfigError), and an
        iterator over the others, read lazily by the feeder."""
        requests = iter(self.spider.start_requests() or ())
        for request in requests:
            return self._checked_start(request), requests
        raise ConfigError(f"spider {self.spider.name!r} has no start URLs")

    def _checked_start(self, request: Any) -> Request:
        if not isinstance(request, Request):
            raise ConfigError(f"spider {self.spider.name!r}: start_requests yielded "
                              f"{request!r}, not a Request")
        try:
            canonicalize(request.url)
        except BadURL as exc:
            raise ConfigError(f"spider {self.spider.name!r}: bad start URL: {exc}") from None
        return request

    # -- stopping ------------------------------------------------------------------------

    def halt(self, reason: str, *, cancel: bool) -> None:
        self.supervisor.halt(reason, cancel=cancel)

    def fatal(self, error: FatalError) -> None:
        """An output or the store failed: stop now, keep what was written."""
        with self._fatal_lock:
            if self._fatal is not None:
                return
            self._fatal = error
        log.error("stopping the crawl: %s", error)
        self.supervisor.halt("error", cancel=True)

    @property
    def stopping(self) -> bool:
        return self.supervisor.hard_stopped

    # -- workers -------------------------------------------------------------------------

    def work(self) -> None:
        """A worker thread's loop: take, handle, finish, until the frontier is done."""
        assert self.frontier is not None
        while True:
            try:
                request = self.frontier.next()
            except FatalError as exc:
                self.fatal(exc)
                return
            except Exception as exc:  # a frontier bug: stop rather than spin
                log.exception("frontier failed")
                self.fatal(FatalError("frontier", exc))
                return
            if request is None:
                return
            deadline = self.client.deadline if self.client is not None else None
            if deadline is not None and time.monotonic() >= deadline:
                # Past the deadline, before the supervisor stopped the frontier (or a
                # request cancelled at the deadline and handed back, taken again): it
                # stays queued for a later run, not tried and failed a second time.
                self._release(request)
                self.halt("deadline", cancel=True)
                return
            self.process(request)

    def process(self, request: Request) -> None:
        """Handle one request and hand its outcome back; never raises."""
        assert self.frontier is not None
        ctx = Context(request, self.spider)
        try:
            self._handle(ctx)
        except FatalError as exc:
            self.fatal(exc)
            ctx.requeue = True
        except Exception:  # a bug must not kill the worker, leak the slot or lose the URL
            log.exception("internal error processing %s", request.url)
            self.stats.add_failure("internal_error")
        outcome = ctx.outcome()
        try:
            kept = self.frontier.finish(request, outcome)
        except Exception as exc:
            if not isinstance(exc, FatalError):
                log.exception("cannot record the results of %s", request.url)
                exc = FatalError("frontier", exc)
            self.fatal(exc)
            self._release(request)
            if self.frontier.keeps_unfinished:
                return  # not committed: the request runs again in a later crawl
            kept = list(outcome.items)  # nothing else holds them: written all the same
        try:
            if self.frontier.exports_items:
                self.sink.kept(kept, len(ctx.items))
            else:
                self.sink.emit(kept)
        except FatalError as exc:
            self.fatal(exc)
        if kept:
            self._last_item_at = time.monotonic()
        self.supervisor.request_done()

    def _release(self, request: Request) -> None:
        assert self.frontier is not None
        try:
            self.frontier.finish(request, RELEASE)
        except Exception:
            log.debug("could not release %s", request.url, exc_info=True)

    def _handle(self, ctx: Context) -> None:
        assert self.chain is not None and self._callbacks is not None
        self.chain.run(ctx)
        if ctx.failure is not None:
            self._callbacks.fail(ctx, ctx.failure)
            return
        response = ctx.response
        if ctx.ended or response is None:
            return
        if response.status >= 300 and response.status not in self.spider.handle_statuses:
            self._callbacks.fail(ctx, StatusError(response.status, ctx.original.url))
            return
        self._callbacks.page(ctx)
        self.chain.done(ctx)

    @property
    def last_item_at(self) -> float:
        return self._last_item_at

    def progress(self) -> dict[str, Any]:
        """A live snapshot: counters plus pages/s, in flight, queued, connections open."""
        assert self.frontier is not None and self.client is not None
        snapshot = self.stats.snapshot()
        snapshot.update(self.frontier.counts())
        snapshot["connections_open"] = self.client.open_connections()
        return snapshot
