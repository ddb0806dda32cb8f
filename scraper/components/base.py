"""The component chain's contract.

Each request runs through an ordered chain of components. Request hooks run in chain
order before the fetch; response and failure hooks run in the reverse order, over the
components whose request hook ran (like a stack of wrappers). A hook works on the
request's `Context`:

- `on_request(ctx)`: may change `ctx.request` (headers, URL), set `ctx.response` to answer
  without fetching (the fetch and the later request hooks are skipped), or end the
  request with `ctx.end()` (it was filtered, failed or handed back to the frontier).
- `on_response(ctx)`: may replace `ctx.response`, or end the request (a redirect queued).
- `on_failure(ctx)`: `ctx.failure` is the `FetchError`; may schedule a retry and end,
  or turn the failure into a response (`ctx.recover(response)`).
- `on_done(ctx)`: after the callback ran on the response (e.g. to remember the page's
  children for an incremental crawl).
Built-in components and user middlewares (see `middleware.py`) share this contract.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import FetchError
from ..frontier import Outcome
from ..request import Request
from ..response import Response


class Context:
    """One request's passage through the chain, and what it leaves for the frontier."""

    __slots__ = ("cached_children", "children", "ended", "failure", "fetched", "host_failed",
                 "host_pause", "items", "latency", "original", "proxy", "request",
                 "requeue", "response", "retry", "retry_at", "session", "spider")

    def __init__(self, request: Request, spider: Any) -> None:
        self.original = request  # what the frontier handed out (its slot and its row)
        self.request = request  # what is sent: components may replace it
        self.spider = spider
        self.response: Response | None = None
        self.failure: FetchError | None = None
        self.ended = False
        self.fetched = False
        self.children: list[Request] = []
        self.items: list[dict[str, Any]] = []
        self.retry: Request | None = None
        self.retry_at = 0.0
        self.host_pause: float | None = None
        self.host_failed = False
        self.latency: float | None = None
        self.requeue = False
        self.cached_children: list[Request] | None = None  # incremental: last run's links
        self.session: Any = None  # the `sessions.Session` the cookies component chose
        self.proxy: str | None = None  # the proxy URL to fetch through (proxies component)

    def end(self) -> None:
        """No more hooks and no callback for this request."""
        self.ended = True

    def retry_in(self, request: Request, wait: float) -> None:
        """Hand `request` back to the frontier, to start in `wait` seconds, and end."""
        self.retry = request
        self.retry_at = time.monotonic() + wait
        self.ended = True

    def recover(self, response: Response) -> None:
        """A failure becomes a response for the callback after all."""
        self.failure = None
        self.response = response

    def outcome(self) -> Outcome:
        return Outcome(children=tuple(self.children), items=tuple(self.items),
                       retry=self.retry, retry_at=self.retry_at, host_pause=self.host_pause,
                       host_failed=self.host_failed, latency=self.latency,
                       requeue=self.requeue, fetched=self.fetched)


class Component:
    """Base of the chain's components: every hook is optional (does nothing here)."""

    name = ""

    def on_request(self, ctx: Context) -> None:
        """Before the fetch, in chain order."""

    def on_response(self, ctx: Context) -> None:
        """After the fetch, in reverse chain order."""

    def on_failure(self, ctx: Context) -> None:
        """After a failed fetch, in reverse chain order."""

    def on_done(self, ctx: Context) -> None:
        """After the callback handled the response."""

    def close(self) -> None:
        """The crawl is over."""
