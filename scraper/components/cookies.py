"""Sessions and their cookies (`http.cookies`, `sessions.*`; see `scraper.sessions`).

Request side: a request that names no session gets one from the pool: the default one
(the request stays unnamed), or with `sessions.size` > 1 one round-robin (the frontier's
request is given its name, so that its retries and redirect hops keep it);
`Request.cookies` go into the session's jar; the jar's cookies for the URL become the
`Cookie` header, unless the request carries its own.
Response side (every response, 3xx included: this runs before `redirects` turns a 3xx into
the next hop): `Set-Cookie` headers go into the jar, the page gets `response.session`, and
a status in `sessions.retire_statuses` retires the session. With `http.cookies = false`
sessions still exist (names, retiring) but hold no cookies; `Request.cookies` are then
sent as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..errors import StatusError
from ..sessions import Session, SessionPool, set_cookie_headers
from .base import Component, Context

log = logging.getLogger(__name__)


def has_cookie_header(headers: Mapping[str, str] | None) -> bool:
    return bool(headers) and any(name.lower() == "cookie" for name in headers)  # type: ignore[union-attr]


class CookieComponent(Component):
    name = "cookies"

    def __init__(self, pool: SessionPool, *, jar: bool = True) -> None:
        self.pool = pool
        self._jar = jar

    def on_request(self, ctx: Context) -> None:
        request = ctx.request
        name = request.session
        if name is None:
            name = self.pool.assign()
            if self.pool.size > 1:  # one session: the default one, left unnamed
                ctx.original.session = name  # its retries and redirect hops stay in it
                request.session = name
        session = self.pool.use(name)
        ctx.session = session
        if not self._jar:
            header = "; ".join(f"{k}={v}" for k, v in request.cookies.items()) \
                if request.cookies else None
        else:
            if request.cookies:
                session.set(request.url, request.cookies)
            header = session.cookie_header(request.url)
        if header and not has_cookie_header(request.headers):
            ctx.request = request.replace(headers={**(request.headers or {}), "Cookie": header})

    def on_response(self, ctx: Context) -> None:
        response = ctx.response
        session = ctx.session
        if response is None or session is None:
            return
        self._store(session, response.url, response.headers)
        response.session = self.pool.view(session)
        if response.status in self.pool.retire_statuses:
            self._retire(session, response.status, response.url)

    def on_failure(self, ctx: Context) -> None:
        exc = ctx.failure
        session = ctx.session
        if not isinstance(exc, StatusError) or session is None:
            return
        result = exc.result
        headers = getattr(result, "headers", None)
        if headers is not None:
            self._store(session, getattr(result, "url", ctx.request.url), headers)
        if exc.status in self.pool.retire_statuses:
            self._retire(session, exc.status, ctx.request.url)

    def _store(self, session: Session, url: str, headers: Mapping[str, str]) -> None:
        if not self._jar:
            return
        set_cookies = set_cookie_headers(headers)
        if set_cookies:
            session.extract(url, set_cookies)
            self.pool.changed(session)

    def _retire(self, session: Session, status: int, url: str) -> None:
        if self.pool.retire(session.name, session.generation):
            log.info("session %s retired: status %d from %s", session.name, status, url)

    def close(self) -> None:
        self.pool.save_all()
