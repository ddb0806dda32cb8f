"""Running spider callbacks and errbacks: items to the item processor, requests to the
request's context. A callback that raises is counted (`callback_error`) and its errback
called; the crawl goes on. `CloseSpider` stops the crawl gracefully."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from .components.base import Context
from .errors import CloseSpider, FetchError
from .items import ItemProcessor
from .request import Failure, Request
from .stats import Stats

log = logging.getLogger(__name__)


class CallbackRunner:
    def __init__(self, spider: Any, stats: Stats, items: ItemProcessor,
                 close_spider: Callable[[str], None],
                 check_request: Callable[[Request], Any] | None = None) -> None:
        self._spider = spider
        self._stats = stats
        self._items = items
        self._close_spider = close_spider
        self._check_request = check_request  # raises now if a durable frontier can't store it

    def page(self, ctx: Context) -> None:
        """The response goes to the request's callback (default: `spider.parse`)."""
        self._stats.inc("pages")
        request = ctx.original
        self._run(request.callback or self._spider.parse, ctx.response, ctx)

    def fail(self, ctx: Context, failure: FetchError) -> None:
        """Record a request that ended without a page, and call its errback."""
        request = ctx.original
        self._stats.add_failure(failure.reason)
        log.warning("failed (%s) %s: %s", failure.reason, request.url, failure)
        if request.errback is not None:
            self._run(request.errback, Failure(request, failure.reason, failure, ctx.response),
                      ctx)

    def _run(self, callback: Any, argument: Any, ctx: Context) -> None:
        request = ctx.original
        depth = request.depth + 1
        try:
            kwargs = request.cb_kwargs or {}
            outputs = callback(argument, **kwargs)
            for value in outputs if isinstance(outputs, Iterable) else ():
                if isinstance(value, Request):
                    value.depth = depth
                    if self._check_request is not None:
                        self._check_request(value)
                    ctx.children.append(value)
                elif value is not None:
                    item = self._items.process(value)
                    if item is not None:
                        ctx.items.append(item)
        except CloseSpider as exc:
            log.info("spider asked to close: %s", exc.reason)
            self._close_spider(exc.reason)
        except Exception as exc:
            name = getattr(callback, "__name__", repr(callback))
            log.exception("callback %s raised on %s", name, request.url)
            self._stats.add_failure("callback_error")
            if request.errback is not None and callback is not request.errback:
                self._run(request.errback, Failure(request, "callback_error", exc), ctx)
