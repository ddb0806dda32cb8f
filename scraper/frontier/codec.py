"""Requests as text, for the durable frontiers (SQLite rows, Redis members), and the
dedup fingerprint every backend uses.

Two forms: JSON (`dump_request`, every field), and the compact form of a plain request
(`dump_compact`: a GET with no body, headers, meta or other options, as most links are:
its depth, priority, callback name, session, referer and URL on one tab-separated line,
starting with "P"). `load_request` reads both. `check_storable` tells, without
serialising a plain request, whether a request can be stored at all."""

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


COMPACT = "P"  # the first character of the compact form (JSON starts with "{")


def _plain(request: Request) -> bool:
    """A request the compact form describes fully (`load_request` gives it back equal)."""
    return (request.method == "GET" and request.body is None and not request.headers
            and not request.meta and request.errback is None and not request.dont_filter
            and request.attempt == 1 and not request.redirect_chain
            and request.cb_kwargs is None and request.timeout is None
            and request.cookies is None and type(request.priority) is int
            and type(request.depth) is int)


def dump_compact(spider: Any, request: Request) -> str:
    """The compact form of a plain request, else its JSON (`dump_request`)."""
    if _plain(request):
        callback = _callback_name(spider, request.callback, "callback", request.url) or ""
        fields = (request.session or "", request.referer or "", request.url)
        if not any("\t" in field for field in fields):
            return (f"{COMPACT}{request.depth}\t{request.priority}\t{callback}\t"
                    f"{fields[0]}\t{fields[1]}\t{fields[2]}")
    return dump_request(spider, request)


def check_storable(spider: Any, request: Request) -> None:
    """ConfigError, as `dump_request` would raise it, when a request cannot be stored by
    a durable frontier (a lambda callback, meta that is not JSON). A plain request is not
    serialised here; for another one only the fields that may fail are."""
    _callback_name(spider, request.callback, "callback", request.url)
    _callback_name(spider, request.errback, "errback", request.url)
    if _plain(request):
        return
    try:
        json.dumps((request.meta, request.cb_kwargs, request.headers, request.cookies,
                    request.priority, request.timeout, request.dont_filter))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"with a jobdir or a shared frontier, request meta and cb_kwargs "
                          f"must be JSON: "
                          f"{exc} ({request.url})") from None


def dump_request(spider: Any, request: Request) -> str:
    """The request as JSON; ConfigError when it cannot be stored (a lambda callback,
    meta that is not JSON)."""
    callback = _callback_name(spider, request.callback, "callback", request.url)
    errback = _callback_name(spider, request.errback, "errback", request.url)
    try:
        return json.dumps({
            "url": request.url,
            "method": request.method,
            "headers": request.headers,
            "body": request.body.decode("latin-1") if request.body else None,
            "priority": request.priority,
            "meta": request.meta,
            "dont_filter": request.dont_filter,
            "callback": callback,
            "errback": errback,
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
    """The request `dump_request` or `dump_compact` stored."""
    if payload.startswith(COMPACT):
        depth, priority, callback, session, referer, url = payload[1:].split("\t", 5)
        request = Request(url, callback=getattr(spider, callback) if callback else None,
                          priority=int(priority), session=session or None)
        request.depth = int(depth)
        request.referer = referer or None
        request.store_id = row_id
        return request
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
