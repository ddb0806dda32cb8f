"""Conditional requests for incremental crawls (`frontier.incremental`, with a jobdir):
a page's ETag and Last-Modified from the last run are sent back as If-None-Match and
If-Modified-Since; a 304 is not parsed, but the requests the page led to last time are
followed again, so the crawl still reaches pages below an unchanged one."""

from __future__ import annotations

from ..frontier import JobStore
from ..stats import Stats
from .base import Component, Context


class ConditionalComponent(Component):
    name = "conditional"

    def __init__(self, store: JobStore, stats: Stats) -> None:
        self._store = store
        self._stats = stats

    def on_request(self, ctx: Context) -> None:
        request = ctx.request
        if request.method != "GET":
            return
        etag, modified, children = self._store.validators(request.url)
        if not etag and not modified:
            return
        headers = dict(request.headers or {})
        if etag:
            headers["If-None-Match"] = etag
        if modified:
            headers["If-Modified-Since"] = modified
        ctx.request = request.replace(headers=headers)
        ctx.cached_children = children

    def on_response(self, ctx: Context) -> None:
        response = ctx.response
        assert response is not None
        if response.status != 304 or ctx.cached_children is None:
            return
        self._stats.inc("not_modified")  # unchanged: not parsed; its links still followed
        for child in ctx.cached_children:
            child.depth = ctx.original.depth + 1
        ctx.children.extend(ctx.cached_children)
        ctx.end()

    def on_done(self, ctx: Context) -> None:
        response = ctx.response
        if response is None or ctx.request.method != "GET":
            return
        self._store.remember(ctx.original.url, response.headers.get("etag"),
                             response.headers.get("last-modified"), ctx.children)
