"""User middlewares: any object with some of `request`, `response`, `failure`.

```python
class AddHeader:
    def request(self, request, spider):          # before the fetch
        request.headers = {**(request.headers or {}), "X-Team": "data"}
        # None: go on; a Request: send that instead; a Response: answer without fetching
    def response(self, request, response, spider):   # after the fetch
        return response          # or a Request to send instead (counted as a retry)
    def failure(self, request, failure, spider):      # a fetch that failed
        return None              # or a Request to try instead
```
Registered with `middlewares = [AddHeader()]` on a spider or `crawl.middlewares =
["package.module:Class"]` in settings (instantiated once per crawl). They run after the
built-in request-side components and before the built-in response-side ones. A
middleware that raises fails its request with reason `middleware_error` (logged with the
middleware's name); the crawl goes on.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from ..errors import ConfigError, FetchError
from ..request import Failure, Request
from ..response import Response
from ..stats import Stats
from ..urls import BadURL, canonicalize
from .base import Component, Context

log = logging.getLogger(__name__)
HOOKS = ("request", "response", "failure")


def load_middleware(path: str) -> Any:
    """`package.module:Class` (or `package.module.Class`) instantiated with no arguments."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError(f"crawl.middlewares: {path!r} is not 'package.module:Class'")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"crawl.middlewares: cannot import {path!r}: {exc}") from None
    try:
        return target() if isinstance(target, type) else target
    except Exception as exc:
        raise ConfigError(f"crawl.middlewares: {path!r} could not be created: "
                          f"{type(exc).__name__}: {exc}") from None


class UserMiddleware(Component):
    """One user middleware as a component of the chain."""

    def __init__(self, middleware: Any, stats: Stats, max_attempts: int) -> None:
        if not any(callable(getattr(middleware, hook, None)) for hook in HOOKS):
            raise ConfigError(f"middleware {middleware!r} has none of the methods "
                              f"{', '.join(HOOKS)}")
        self.middleware = middleware
        self.name = type(middleware).__name__
        self._stats = stats
        self._max_attempts = max_attempts
        self._request = getattr(middleware, "request", None)
        self._response = getattr(middleware, "response", None)
        self._failure = getattr(middleware, "failure", None)

    def _raised(self, ctx: Context, hook: str, exc: Exception) -> None:
        log.error("middleware %s.%s raised on %s: %s: %s", self.name, hook, ctx.request.url,
                  type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        ctx.response = None
        ctx.failure = FetchError(f"middleware {self.name}.{hook} raised {type(exc).__name__}: "
                                 f"{exc}", ctx.request.url, reason="middleware_error")
        ctx.end()

    def _send_instead(self, ctx: Context, request: Request, *, as_retry: bool) -> None:
        """Hand `request` to the frontier in place of this one (not deduplicated); from a
        response or failure hook it counts as a retry, within `retry.attempts`."""
        try:
            request.url = canonicalize(request.url)
        except BadURL as exc:
            self._raised(ctx, "request" if not as_retry else "response", exc)
            return
        if as_retry:
            request.attempt = ctx.original.attempt + 1
            if request.attempt > self._max_attempts:
                ctx.response = None
                ctx.failure = FetchError(
                    f"middleware {self.name} asked again after {ctx.original.attempt} "
                    "attempts (retry.attempts)", ctx.request.url, reason=f"retry:{self.name}")
                ctx.end()
                return
            self._stats.inc("retries")
        request.depth = ctx.original.depth
        ctx.failure = None
        ctx.retry_in(request, 0.0)

    def on_request(self, ctx: Context) -> None:
        if self._request is None:
            return
        try:
            result = self._request(ctx.request, ctx.spider)
        except Exception as exc:
            self._raised(ctx, "request", exc)
            return
        if result is None or result is ctx.request:
            return
        if isinstance(result, Response):
            ctx.response = result
        elif isinstance(result, Request):
            self._send_instead(ctx, result, as_retry=False)
        else:
            self._raised(ctx, "request", TypeError(
                f"returned {type(result).__name__}, not None, a Request or a Response"))

    def on_response(self, ctx: Context) -> None:
        if self._response is None:
            return
        try:
            result = self._response(ctx.request, ctx.response, ctx.spider)
        except Exception as exc:
            self._raised(ctx, "response", exc)
            return
        if result is None:
            return
        if isinstance(result, Response):
            ctx.response = result
        elif isinstance(result, Request):
            self._send_instead(ctx, result, as_retry=True)
        else:
            self._raised(ctx, "response", TypeError(
                f"returned {type(result).__name__}, not a Response or a Request"))

    def on_failure(self, ctx: Context) -> None:
        if self._failure is None or ctx.failure is None:
            return
        failure = Failure(ctx.request, ctx.failure.reason, ctx.failure)
        try:
            result = self._failure(ctx.request, failure, ctx.spider)
        except Exception as exc:
            self._raised(ctx, "failure", exc)
            return
        if isinstance(result, Request):
            self._send_instead(ctx, result, as_retry=True)
        elif isinstance(result, Response):
            ctx.recover(result)
        elif result is not None:
            self._raised(ctx, "failure", TypeError(
                f"returned {type(result).__name__}, not None or a Request"))
