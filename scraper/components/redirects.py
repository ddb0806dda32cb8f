"""Redirects, followed by the framework: each hop is a new request through the frontier
(dedup, offsite, politeness apply to it). Loops and chains past `http.max_redirects`
fail; credentials are not carried to another origin (scheme, host or port); 303 (and
301/302 after a POST) become a GET."""

from __future__ import annotations

from ..errors import RedirectError
from ..settings import Settings, origin_key
from ..stats import Stats
from ..urls import BadURL, resolve
from .base import Component, Context

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
SECRET_HEADERS = ("authorization", "cookie", "proxy-authorization")


class RedirectComponent(Component):
    name = "redirects"

    def __init__(self, settings: Settings, stats: Stats) -> None:
        self._max_redirects = settings.http.max_redirects
        self._sort_query = settings.crawl.sort_query
        self._stats = stats

    def on_response(self, ctx: Context) -> None:
        response = ctx.response
        assert response is not None
        request = ctx.original
        if response.status not in REDIRECT_STATUSES or "location" not in response.headers \
                or request.meta.get("dont_redirect"):
            return
        ctx.end()
        chain = (*request.redirect_chain, request.url)
        location = response.headers["location"]
        try:
            target = resolve(response.url, location, self._sort_query)
        except BadURL as exc:
            ctx.failure = RedirectError(f"bad Location {location!r}: {exc}", request.url)
            return
        if target in chain:
            ctx.failure = RedirectError(f"redirect loop back to {target}", request.url,
                                        reason="redirect_loop")
            return
        if len(chain) > self._max_redirects:
            ctx.failure = RedirectError(
                f"more than http.max_redirects ({self._max_redirects}) redirects", request.url)
            return
        headers = request.headers
        if headers and origin_key(target) != origin_key(request.url):
            headers = {k: v for k, v in headers.items() if k.lower() not in SECRET_HEADERS}
        method, body = request.method, request.body
        if response.status == 303 or (response.status in (301, 302) and method == "POST"):
            method, body = "GET", None
        self._stats.inc("redirects")
        ctx.children.append(request.replace(
            url=target, redirect_chain=chain, attempt=1, headers=headers, method=method,
            body=body, store_id=None))
