"""The `Referer` header (`http.referer`): a request yielded from a callback carries the
page it was found on, as a browser following a link would send it, under the browsers'
default policy (`strict-origin-when-cross-origin`): the full URL (less its fragment and
any user:password) to the same origin, the origin alone to another one, nothing from
https to http. A request that sets its own `Referer` keeps it; redirect hops and retries
keep the one their request had.

Per link, only the page's URL is remembered (`Request.referer`, one shared string); the
header is worked out when the request is sent.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from .base import Component, Context


def referer_for(page: str, target: str) -> str | None:
    """The Referer a browser sends from `page` to `target` (None: none)."""
    if page.startswith(("http://", "https://")):  # the common case without parsing:
        end = page.find("/", page.index("//") + 2)  # a link to the page's own origin
        if end > 0 and target.startswith(page[:end + 1]) and "@" not in page[:end]:
            return page.partition("#")[0]
    return referer_parsed(page, target)


def referer_parsed(page: str, target: str) -> str | None:
    """`referer_for`, the long way: both URLs parsed."""
    try:
        source, dest = urlsplit(page), urlsplit(target)
        source_port, dest_port = source.port, dest.port
    except ValueError:
        return None
    if source.scheme not in ("http", "https"):
        return None
    if source.scheme == "https" and dest.scheme != "https":
        return None
    netloc = source.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if source_port is not None:
        netloc += f":{source_port}"
    same = (source.scheme, source.hostname, source_port) == \
        (dest.scheme, dest.hostname, dest_port)
    if not same:
        return urlunsplit((source.scheme, netloc, "/", "", ""))
    return urlunsplit((source.scheme, netloc, source.path or "/", source.query, ""))


class RefererComponent(Component):
    name = "referer"

    def on_request(self, ctx: Context) -> None:
        request = ctx.request
        page = request.referer
        if page is None:
            return
        headers = request.headers or {}
        if any(name.lower() == "referer" for name in headers):
            return
        value = referer_for(page, request.url)
        if value is not None:
            ctx.request = request.replace(headers={**headers, "Referer": value})

    def on_done(self, ctx: Context) -> None:
        response = ctx.response
        if response is None:
            return
        page = response.url
        for child in ctx.children:
            if child.referer is None:
                child.referer = page
