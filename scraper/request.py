"""`Request`: what a spider asks the crawler to fetch."""

from __future__ import annotations

import json as _json
from collections.abc import Callable, Mapping
from typing import Any

Callback = Callable[..., Any]


class Request:
    """A URL to fetch and what to do with the response.

    `callback(response)` yields items and requests; `errback(failure)` is called with a
    `Failure` when the request ends without a response. `dont_filter=True` skips dedup.
    `priority`: higher is fetched first within a host. `cb_kwargs`: keyword arguments
    for the callback. `timeout`: seconds for the whole exchange (else
    `http.request_timeout`). `cookies`: `{name: value}` set in the session's cookie jar
    for this request's host (and so sent with it and the later requests to that host).
    `session`: the name of the session (cookie jar) to use; requests yielded from a
    callback inherit the response's session unless they name their own.
    """

    __slots__ = (
        "attempt",
        "body",
        "callback",
        "cb_kwargs",
        "cookies",
        "depth",
        "dont_filter",
        "errback",
        "headers",
        "meta",
        "method",
        "priority",
        "redirect_chain",
        "referer",
        "session",
        "store_id",
        "timeout",
        "url",
    )

    def __init__(
        self,
        url: str,
        callback: Callback | None = None,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        priority: int = 0,
        meta: dict[str, Any] | None = None,
        dont_filter: bool = False,
        errback: Callback | None = None,
        cb_kwargs: dict[str, Any] | None = None,
        timeout: float | None = None,
        cookies: Mapping[str, str] | None = None,
        session: str | None = None,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"Request url must be a str, got {type(url).__name__}")
        self.url = url
        self.callback = callback
        self.method = method.upper()
        self.headers = dict(headers) if headers else None
        self.body = body.encode() if isinstance(body, str) else body
        self.priority = priority
        self.meta = meta if meta is not None else {}
        self.dont_filter = dont_filter
        self.errback = errback
        self.cb_kwargs = dict(cb_kwargs) if cb_kwargs else None  # extra callback arguments
        self.timeout = timeout  # seconds for this exchange (else http.request_timeout)
        if cookies is not None and not isinstance(cookies, Mapping):
            raise TypeError(f"Request cookies must be a mapping of names to values, got "
                            f"{type(cookies).__name__}")
        self.cookies = {str(k): str(v) for k, v in cookies.items()} if cookies else None
        if session is not None and (not isinstance(session, str) or not session):
            raise TypeError(f"Request session must be a non-empty str, got {session!r}")
        self.session = session
        self.depth = 0
        self.attempt = 1
        self.redirect_chain: tuple[str, ...] = ()
        self.referer: str | None = None  # the page the link was found on (`http.referer`)
        self.store_id: int | None = None  # the row of a durable frontier (--jobdir)

    @classmethod
    def _link(cls, url: str, callback: Callback | None) -> Request:
        """`Request(url, callback)` without the checks of keyword arguments, for the links
        `Response.follow_all` makes by the hundred per page (`url` is a str)."""
        request = cls.__new__(cls)
        request.url = url
        request.callback = callback
        request.method = "GET"
        request.headers = request.body = request.errback = request.cb_kwargs = None
        request.timeout = request.cookies = request.session = request.referer = None
        request.store_id = None
        request.priority = request.depth = 0
        request.meta = {}
        request.dont_filter = False
        request.attempt = 1
        request.redirect_chain = ()
        return request

    @classmethod
    def json(cls, url: str, data: Any, callback: Callback | None = None, *,
             method: str = "POST", **kwargs: Any) -> Request:
        """A request for a JSON API: `data` sent as a JSON body (POST unless `method` is
        given), with `Content-Type` and `Accept` set to `application/json`."""
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   **dict(kwargs.pop("headers", None) or {})}
        body = _json.dumps(data, ensure_ascii=False).encode("utf-8")
        return cls(url, callback, method=method, headers=headers, body=body, **kwargs)

    def replace(self, **changes: Any) -> Request:
        """A copy with some fields changed (redirects, retries)."""
        clone = Request.__new__(Request)
        for name in Request.__slots__:
            setattr(clone, name, changes.get(name, getattr(self, name)))
        return clone

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"


class Failure:
    """What an errback receives: the request, the short reason and the exception."""

    __slots__ = ("exception", "reason", "request", "response")

    def __init__(self, request: Request, reason: str, exception: BaseException,
                 response: Any = None) -> None:
        self.request = request
        self.reason = reason
        self.exception = exception
        self.response = response

    def __repr__(self) -> str:
        return f"<Failure {self.reason} {self.request.url}: {self.exception}>"
