"""Requests as text, for the durable frontiers (SQLite rows, Redis members), and the
dedup fingerprint every backend uses."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..errors import ConfigError
from ..request import Request
from ..urls import dedup_key


def fingerprint(request: Request, strip_session_ids: bool = True) -> str:
    """The dedup key: the canonical URL for GET, else method, URL and a body digest;
    session-id parameters left out (`crawl.strip_session_ids`, see `urls.dedup_key`)."""
    url = dedup_key(request.url) if strip_session_ids else request.url
    if request.method == "GET" and not request.body:
        return url
    digest = hashlib.sha1(request.body or b"").hexdigest()
    return f"{request.method} {url} {digest}"


def _callback_name(spider: Any, callback: Any, what: str, url: str) -> str | None:
    if callback is None:
        return None
    name = getattr(callback, "__name__", None)
    if name is None or getattr(spider, name, None) != callback:
        raise ConfigError(
            f"with a jobdir or a shared frontier, a request's {what} must be a method of "
            f"the spider (got {callback!r} for {url})"
        )
    return str(name)


def dump_request(spider: Any, request: Request) -> str:
    """The request as JSON; ConfigError when it cannot be stored (a lambda callback,
    meta that is not JSON)."""
    try:
        return json.dumps({
            "url": request.url,
            "method": request.method,
            "headers": request.headers,
            "body": request.body.decode("latin-1") if request.body else None,
            "priority": request.priority,
            "meta": request.meta,
            "dont_filter": request.dont_filter,
            "callback": _callback_name(spider, request.callback, "callback", request.url),
            "errback": _callback_name(spider, request.errback, "errback", request.url),
            "depth": request.depth,
            "attempt": request.attempt,
            "redirect_chain": request.redirect_chain,
            "cb_kwargs": request.cb_kwargs,
            "referer": request.referer,
            "timeout": request.timeout,
            "cookies": request.cookies,
            "session": request.session,
        })
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"with a jobdir or a shared frontier, request meta and cb_kwargs "
                          f"must be JSON: "
                          f"{exc} ({request.url})") from None


def load_request(spider: Any, payload: str, row_id: int | None) -> Request:
    data = json.loads(payload)
    request = Request(
        data["url"],
        callback=getattr(spider, data["callback"]) if data["callback"] else None,
        method=data["method"],
        headers=data["headers"],
        body=data["body"].encode("latin-1") if data["body"] is not None else None,
        priority=data["priority"],
        meta=data["meta"],
        dont_filter=data["dont_filter"],
        errback=getattr(spider, data["errback"]) if data["errback"] else None,
        cb_kwargs=data.get("cb_kwargs"),
        timeout=data.get("timeout"),
        cookies=data.get("cookies"),
        session=data.get("session"),
    )
    request.depth = data["depth"]
    request.attempt = data["attempt"]
    request.redirect_chain = tuple(data["redirect_chain"])
    request.referer = data.get("referer")
    request.store_id = row_id
    return request
