"""Running spider callbacks and errbacks: items to the item processor, requests to the
request's context. A callback that raises is counted (`callback_error`) and its errback
called; the crawl goes on. `CloseSpider` stops the crawl gracefully.

`Retry` raised by a callback (or a page `Spider.blocked()` flags) asks for the page
again through the retry policy: what the callback yielded before is dropped, the retry
is counted in `retries`, and when the attempts run out the request fails with reason
`retry:REASON` (`blocked:REASON`). Requests a callback yields inherit the session of
the response unless they name their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from .client import RetryPolicy
from .components.base import Context
from .errors import CloseSpider, FetchError, Retry
from .items import ItemProcessor
from .request import Failure, Request
from .stats import Stats

log = logging.getLogger(__name__)


class CallbackRunner:
    def __init__(self, spider: Any, stats: Stats, items: ItemProcessor,
                 close_spider: Callable[[str], None],
                 check_request: Callable[[Request], Any] | None = None,
                 retry_policy: RetryPolicy | None = None,
                 stopping: Callable[[], bool] | None = None,
                 on_blocked: Callable[[Context, str], None] | None = None) -> None:
        self._spider = spider
        self._stats = stats
        self._items = items
        self._close_spider = close_spider
        self._check_request = check_request  # raises now if a durable frontier can't store it
        self._retry_policy = retry_policy
        self._stopping = stopping or (lambda: False)
        self._on_blocked = on_blocked  # e.g. back off the proxy that served a ban page

    def page(self, ctx: Context) -> None:
        """The response goes to the request's callback (default: `spider.parse`), unless
        `spider.blocked()` calls it a ban page."""
        request = ctx.original
        blocked = self._blocked(ctx)
        if blocked:
            if self._on_blocked is not None:
                self._on_blocked(ctx, f"blocked:{blocked}")
            self._ask_again(ctx, f"blocked:{blocked}", None, new_session=True)
            return
        self._stats.inc("pages")
        self._run(request.callback or self._spider.parse, ctx.response, ctx, may_retry=True)

    def fail(self, ctx: Context, failure: FetchError) -> None:
        """Record a request that ended without a page, and call its errback."""
        request = ctx.original
        self._stats.add_failure(failure.reason)
        log.warning("failed (%s) %s: %s", failure.reason, request.url, failure)
        if request.errback is not None:
            self._run(request.errback, Failure(request, failure.reason, failure, ctx.response),
                      ctx)

    def _blocked(self, ctx: Context) -> str | None:
        check = getattr(self._spider, "blocked", None)
        if check is None:
            return None
        try:
            reason = check(ctx.response)
        except Exception:
            log.exception("spider.blocked() raised on %s", ctx.original.url)
            self._stats.add_failure("callback_error")
            return None
        return str(reason) if reason else None

    def _ask_again(self, ctx: Context, reason: str, wait: float | None, *,
                   new_session: bool) -> None:
        """The page again, through the retry policy; a failure when attempts run out."""
        request = ctx.original
        response = ctx.response
        if new_session and response is not None and response.session is not None:
            response.session.retire()
        error = FetchError(f"asked for the page again ({reason})", request.url, reason=reason)
        error.retryable = True
        next_wait = None
        if self._retry_policy is not None and not self._stopping():
            # "GET": the spider asked for it, so even a POST (a form) is sent again
            next_wait = self._retry_policy.next_wait("GET", request.attempt, error)
        if next_wait is None:
            self.fail(ctx, error)
            return
        wait = next_wait if wait is None else wait
        self._stats.inc("retries")
        log.info("retrying %s in %.2fs (attempt %d): %s", request.url, wait,
                 request.attempt + 1, reason)
        ctx.retry_in(request.replace(attempt=request.attempt + 1), wait)

    def _run(self, callback: Any, argument: Any, ctx: Context, *,
             may_retry: bool = False) -> None:
        request = ctx.original
        produced: list[Any] = []
        error: Exception | None = None
        try:
            kwargs = request.cb_kwargs or {}
            outputs = callback(argument, **kwargs)
            for value in outputs if isinstance(outputs, Iterable) else ():
                produced.append(value)
        except Retry as exc:
            if may_retry:
                self._ask_again(ctx, f"retry:{exc.reason}", exc.wait,
                                new_session=exc.new_session)
                return
            error = exc
        except Exception as exc:
            error = exc
        try:
            self._collect(produced, ctx)
        except Exception as exc:
            error = error or exc
        if error is None:
            return
        if isinstance(error, CloseSpider):
            log.info("spider asked to close: %s", error.reason)
            self._close_spider(error.reason)
            return
        name = getattr(callback, "__name__", repr(callback))
        log.error("callback %s raised on %s", name, request.url,
                  exc_info=(type(error), error, error.__traceback__))
        self._stats.add_failure("callback_error")
        if request.errback is not None and callback is not request.errback:
            self._run(request.errback, Failure(request, "callback_error", error), ctx)

    def _collect(self, produced: list[Any], ctx: Context) -> None:
        depth = ctx.original.depth + 1
        session = ctx.request.session
        for value in produced:
            if isinstance(value, Request):
                value.depth = depth
                if value.session is None:
                    value.session = session
                if self._check_request is not None:
                    self._check_request(value)
                ctx.children.append(value)
            elif value is not None:
                item = self._items.process(value)
                if item is not None:
                    ctx.items.append(item)
