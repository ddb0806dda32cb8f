"""Retry decisions: a failed fetch is tried again through the retry policy (tenacity's
strategies, see `client.RetryPolicy`), waiting in the frontier, never in a worker."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..client import FetchResult, RetryPolicy
from ..errors import Cancelled, StatusError
from ..response import Response
from ..settings import Settings
from ..stats import Stats
from .base import Component, Context

log = logging.getLogger(__name__)


class RetryComponent(Component):
    name = "retry"

    def __init__(self, settings: Settings, policy: RetryPolicy, stats: Stats,
                 stopping: Callable[[], bool]) -> None:
        self._max_backoff = settings.retry.max_backoff
        self._policy = policy
        self._stats = stats
        self._stopping = stopping

    def on_failure(self, ctx: Context) -> None:
        exc = ctx.failure
        assert exc is not None
        request = ctx.original
        if isinstance(exc, Cancelled):
            ctx.requeue = True  # a durable frontier keeps it for the next run
            return
        ctx.host_failed = exc.retryable
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            ctx.host_pause = min(retry_after, self._max_backoff)
        wait = None if self._stopping() else \
            self._policy.next_wait(ctx.request.method, request.attempt, exc)
        if wait is not None:
            self._stats.inc("retries")
            log.info("retrying %s in %.2fs (attempt %d): %s", request.url, wait,
                     request.attempt + 1, exc)
            ctx.failure = None
            ctx.retry_in(request.replace(attempt=request.attempt + 1), wait)
            return
        if isinstance(exc, StatusError) and isinstance(exc.result, FetchResult) \
                and exc.result.status in ctx.spider.handle_statuses:
            result = exc.result
            ctx.recover(Response(result.url, result.status, result.headers, result.body,
                                 ctx.request))
