"""The component chain: built-in components in a fixed order, then user middlewares.

Request hooks run in this order before the fetch; response and failure hooks run in the
reverse order over the components whose request hook ran:

1. `retry`: retry decisions for failed fetches (response side).
2. `redirects`: 3xx with a Location becomes a new request (response side).
3. `cache`: `http.cache`: a stored response answers before robots.txt and the fetch; real
   fetches are stored on the way back (request and response sides).
4. `robots`: robots.txt gating, filtering and Crawl-delay (request side).
5. `cookies`: the request's session, its cookie jar (`Cookie`, `Set-Cookie` of every
   response, 3xx included), retiring sessions (`sessions.*`).
6. `auth`: `http.auth` credentials for their origin only.
7. `referer`: the `Referer` header on requests yielded from a callback.
8. `conditional`: If-None-Match / If-Modified-Since in incremental crawls; 304 handling.
9. `proxies`: which of `http.proxies` a request goes through; their health.
10. user middlewares (`Spider.middlewares`, then `crawl.middlewares`), in the order given.

`crawl.disable = ["robots", ...]` switches built-ins off by name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

from .client import Client, RetryPolicy
from .components import BUILT_IN_NAMES
from .components.auth import AuthComponent
from .components.base import Component, Context
from .components.cache import CacheComponent, CachedClient, open_cache
from .components.conditional import ConditionalComponent
from .components.cookies import CookieComponent
from .components.middleware import UserMiddleware, load_middleware
from .components.proxies import ProxyComponent
from .components.redirects import RedirectComponent
from .components.referer import RefererComponent
from .components.retries import RetryComponent
from .components.robots import RobotsComponent
from .errors import ConfigError, FetchError
from .frontier import Frontier, JobStore
from .response import Response
from .sessions import JobStoreSessions, SessionPool, SessionStore
from .settings import Settings
from .stats import Stats

log = logging.getLogger(__name__)


def session_store(frontier: Frontier, store: JobStore | None) -> SessionStore | None:
    """Where sessions persist: the jobdir, or a frontier that keeps them (Redis)."""
    if store is not None:
        return JobStoreSessions(store)
    if hasattr(frontier, "load_session") and hasattr(frontier, "save_session"):
        return frontier  # type: ignore[return-value]
    return None


def check_disabled(settings: Settings) -> frozenset[str]:
    """`crawl.disable`, checked against the built-in names."""
    unknown = sorted(set(settings.crawl.disable) - set(BUILT_IN_NAMES))
    if unknown:
        raise ConfigError(f"crawl.disable: unknown component(s) {', '.join(unknown)}; "
                          f"the built-ins are {', '.join(BUILT_IN_NAMES)}")
    return frozenset(settings.crawl.disable)


def user_middlewares(settings: Settings, spider: Any) -> list[Any]:
    """`Spider.middlewares` objects, then `crawl.middlewares` instantiated."""
    found = list(getattr(spider, "middlewares", None) or ())
    found += [load_middleware(path) for path in settings.crawl.middlewares]
    return found


def build_chain(settings: Settings, spider: Any, *, client: Client, frontier: Frontier,
                store: JobStore | None, stats: Stats, policy: RetryPolicy,
                stopping: Callable[[], bool]) -> Chain:
    """The chain for one crawl: the built-ins in order, less `crawl.disable`, then the
    user middlewares."""
    disabled = check_disabled(settings)
    middlewares = user_middlewares(settings, spider)  # before the cache opens: may raise
    retry = RetryComponent(settings, policy, stats, stopping)
    components: list[Component] = []
    if "retry" not in disabled:
        components.append(retry)
    if "redirects" not in disabled:
        components.append(RedirectComponent(settings, stats))
    robots_client = client
    cache = open_cache(settings, stats) if "cache" not in disabled else None
    if cache is not None:
        components.append(CacheComponent(cache))
        # robots.txt is read through the cache too: a replayed crawl sends no request
        robots_client = cast(Client, CachedClient(client, cache))
    if settings.crawl.obey_robots and "robots" not in disabled:
        components.append(RobotsComponent(settings, robots_client, frontier, stats, retry,
                                          stopping))
    sessions = None
    if "cookies" not in disabled:
        sessions = SessionPool(settings.sessions, stats, session_store(frontier, store))
        components.append(CookieComponent(sessions, jar=settings.http.cookies))
    if settings.http.auth and "auth" not in disabled:
        components.append(AuthComponent(settings.http))
    if settings.http.referer and "referer" not in disabled:
        components.append(RefererComponent())
    if store is not None and store.incremental and "conditional" not in disabled:
        components.append(ConditionalComponent(store, stats))
    if client.proxies and "proxies" not in disabled:
        components.append(ProxyComponent(settings, client, stats))
    components += [UserMiddleware(m, stats, settings.retry.attempts) for m in middlewares]
    return Chain(components, client, sessions)


class Chain:
    def __init__(self, components: Sequence[Component], client: Client,
                 sessions: SessionPool | None = None) -> None:
        self.components = list(components)
        self._client = client
        self.sessions = sessions  # None when the `cookies` component is off

    @property
    def names(self) -> list[str]:
        return [component.name for component in self.components]

    def run(self, ctx: Context) -> None:
        """Pass `ctx` through the request hooks, the fetch and the response or failure
        hooks. Afterwards: `ctx.ended`, or a `ctx.failure` to record, or a `ctx.response`
        for the callback."""
        ran: list[Component] = []
        for component in self.components:
            ran.append(component)
            component.on_request(ctx)
            if ctx.ended:
                return
            if ctx.response is not None:
                break
        if ctx.response is None:
            self._fetch(ctx)
        for component in reversed(ran):
            if ctx.failure is not None:
                component.on_failure(ctx)
            else:
                component.on_response(ctx)
            if ctx.ended:
                return

    def _fetch(self, ctx: Context) -> None:
        request = ctx.request
        try:
            result = self._client.fetch(request.method, request.url, request.headers,
                                        request.body, timeout=request.timeout,
                                        proxy=ctx.proxy)
        except FetchError as exc:
            log.debug("%s %s failed: %s (%s)", request.method, request.url, exc.reason, exc)
            ctx.failure = exc
            return
        log.debug("%s %s -> %d, %d bytes, %.1f ms%s", request.method, request.url,
                  result.status, len(result.body), result.elapsed * 1000,
                  ", reused connection" if result.reused else "")
        ctx.fetched = True
        ctx.latency = result.elapsed
        ctx.response = Response(result.url, result.status, result.headers, result.body,
                                request)

    def penalise(self, ctx: Context, why: str) -> None:
        """A ban page (`Spider.blocked`): components that route requests (proxies) back
        off what served it."""
        for component in self.components:
            penalise = getattr(component, "penalise", None)
            if penalise is not None:
                penalise(ctx, why)

    def done(self, ctx: Context) -> None:
        if ctx.ended:  # the callback asked for the page again (`Retry`): nothing to keep
            return
        for component in self.components:
            component.on_done(ctx)

    def close(self) -> None:
        """Close every component, whatever one of them raises (logged: a session that
        cannot be saved must not keep the frontier or the outputs from closing)."""
        for component in self.components:
            try:
                component.close()
            except Exception as exc:
                log.error("closing component %s: %s", component.name, exc,
                          exc_info=log.isEnabledFor(logging.DEBUG))
