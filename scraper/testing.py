"""Testing spiders without the internet.

- `serve(pages)`: serve a dict of pages on 127.0.0.1 (a free port, HTTP/1.1 keep-alive,
  Content-Length) for the length of a `with` block.
- `run_spider(spider, pages)`: serve the pages and crawl them with the spider, its start
  URLs pointed at the served site; returns the `CrawlResult` (items and stats).
- `make_response(body, url=...)` and `run_callback(callback, response)`: call one
  callback on a page you have (a saved file, a string) and get its items and requests.

A page is a `str` (served as UTF-8 HTML), `bytes`, or `(status, headers, body)`, or a
function that receives the `PageRequest` (method, path, headers, body) and returns a
page (a login check, a cookie the server sets). The Content-Type, unless given, comes
from the path's extension (`.json`, `.xml`, `.txt`, ...) and is `text/html` otherwise.
Paths may carry a query string; a request matches the exact path and query first, then
the path alone. Anything else is a 404.

Links in the pages should be relative (`/p/1`) or built with `site.url()`: absolute
links to another host are off-site for the crawl, as they would be on the real site.
"""

from __future__ import annotations

import contextlib
import mimetypes
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import CrawlResult
    from .request import Request
    from .response import Response
    from .spider import Spider

StaticPage = str | bytes | tuple[int, Mapping[str, str], str | bytes]


@dataclass
class PageRequest:
    """What a page function receives: `headers` are case-insensitive (`.get("Cookie")`)."""

    method: str
    path: str
    headers: Any
    body: bytes


Page = StaticPage | Callable[[PageRequest], StaticPage]

__all__ = [
    "CallbackOutput",
    "Page",
    "PageRequest",
    "Site",
    "load_spider",
    "make_response",
    "run_callback",
    "run_spider",
    "serve",
]

NOT_FOUND = b"<!DOCTYPE html><html><head><title>Not found</title></head>" \
    b"<body><h1>Not found</h1></body></html>"


def _content_type(path: str, text: bool) -> str:
    guessed, _ = mimetypes.guess_type(path.split("?", 1)[0])
    kind = guessed or "text/html"
    if text and (kind.startswith("text/") or kind in ("application/json", "application/xml")):
        kind += "; charset=utf-8"
    return kind


def _normalise(path: str, page: Page) -> tuple[int, dict[str, str], bytes]:
    if isinstance(page, tuple):
        status, headers, body = page
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        found = {key.lower() for key in headers}
        headers = dict(headers)
        if "content-type" not in found:
            headers["Content-Type"] = _content_type(path, isinstance(body, str))
        return int(status), headers, data
    if isinstance(page, str):
        return 200, {"Content-Type": _content_type(path, True)}, page.encode("utf-8")
    if isinstance(page, bytes | bytearray):
        return 200, {"Content-Type": _content_type(path, False)}, bytes(page)
    raise TypeError(f"page {path!r}: expected str, bytes or (status, headers, body), "
                    f"got {type(page).__name__}")


class Site:
    """A set of pages served on loopback. `url(path)` gives a page's absolute URL;
    `requests` lists the paths requested, in order; `count(path)` how often one was."""

    def __init__(self, pages: Mapping[str, Page], *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.pages = {path: page if callable(page) else _normalise(path, page)
                      for path, page in pages.items()}
        for path in self.pages:
            if not path.startswith("/"):
                raise ValueError(f"page paths start with '/', got {path!r}")
        self._lock = threading.Lock()
        self._requests: list[str] = []
        self._sockets: set[socket.socket] = set()
        self._server = _Server((host, port), _Handler)
        self._server.site = self
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="scraper-testing-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    @property
    def requests(self) -> list[str]:
        with self._lock:
            return list(self._requests)

    def count(self, path: str) -> int:
        with self._lock:
            return self._requests.count(path)

    def start(self) -> Site:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every open connection and join the server's threads."""
        if self._thread.is_alive():
            self._server.shutdown()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()  # joins the connection threads
        self._thread.join(timeout=5)

    def __enter__(self) -> Site:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _answer(self, target: str, request: PageRequest | None = None
                ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self._requests.append(target)
        found = self.pages.get(target) or self.pages.get(target.split("?", 1)[0])
        if found is None:
            return 404, {"Content-Type": "text/html; charset=utf-8"}, NOT_FOUND
        if callable(found):
            return _normalise(target, found(request or PageRequest("GET", target, {}, b"")))
        return found


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins connection threads
    block_on_close = True
    site: Site


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 256 * 1024  # head and body leave in one write (flushed per request) ...
    server: _Server

    def setup(self) -> None:
        super().setup()
        # ... and without Nagle's delay, which with the client's delayed ACK costs 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.site._lock:
            self.server.site._sockets.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.site._lock:
            self.server.site._sockets.discard(self.connection)

    def _respond(self, send_body: bool) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, body = self.server.site._answer(
            self.path, PageRequest(self.command, self.path, self.headers, body))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if status >= 200 and status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body and status >= 200 and status not in (204, 304):
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._respond(True)

    do_POST = do_PUT = do_DELETE = do_OPTIONS = do_GET

    def do_HEAD(self) -> None:
        self._respond(False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle_one_request(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            super().handle_one_request()


@contextlib.contextmanager
def serve(pages: Mapping[str, Page], *, port: int = 0) -> Iterator[Site]:
    """Serve `pages` ({path: page}) on 127.0.0.1 for the `with` block."""
    with Site(pages, port=port) as site:
        yield site


def load_spider(name_or_path: str, *, settings_file: str | Path | None = None) -> type[Spider]:
    """A spider class by name (looked up in `crawl.spiders_dir`) or by `.py` path."""
    from .loader import find_spider
    from .settings import load

    loaded = load(Path(settings_file) if settings_file is not None else None)
    return find_spider(name_or_path, loaded.settings.crawl.spiders_dir)


def run_spider(spider: type[Spider] | str, pages: Mapping[str, Page],
               settings: Mapping[str, Any] | None = None, *,
               start_path: str | Iterable[str] = "/", **spider_args: Any) -> CrawlResult:
    """Serve `pages` and crawl them with `spider` (a class, or a name in `spiders/`).

    The spider's start URLs become `start_path` (one path or several) on the served
    site, and its allowed domains the site's host; everything else (callbacks,
    `custom_settings`, `item_model`, pipelines) is the spider's own. `settings` are dotted
    keys, as for `scraper.crawl`; `spider_args` go to the spider's `__init__`.
    """
    from .api import crawl

    cls = load_spider(spider) if isinstance(spider, str) else spider
    paths = [start_path] if isinstance(start_path, str) else list(start_path)
    with serve(pages) as site:
        start = [site.url(path) for path in paths]

        def __init__(self: Any, **kwargs: Any) -> None:
            cls.__init__(self, **kwargs)
            self.start_urls = list(start)
            self.allowed_domains = None

        local = type(cls.__name__, (cls,), {
            "__init__": __init__, "start_urls": start, "allowed_domains": None,
            "__module__": cls.__module__, "__qualname__": cls.__qualname__,
        })
        return crawl(local, settings, **spider_args)


def make_response(body: str | bytes = b"", url: str = "http://example.com/", *,
                  status: int = 200, headers: Mapping[str, str] | None = None,
                  meta: dict[str, Any] | None = None, request: Request | None = None
                  ) -> Response:
    """A `Response` built in memory, as a callback would receive it (no network).

    `body` as `str` is encoded as UTF-8; the Content-Type defaults to UTF-8 HTML.
    Headers are case-insensitive, as on a fetched response.
    """
    from urllib3 import HTTPHeaderDict

    from .request import Request
    from .response import Response

    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    merged = HTTPHeaderDict({"Content-Type": "text/html; charset=utf-8"})
    for name, value in (headers or {}).items():
        merged[name] = value
    request = request or Request(url, meta=meta)
    return Response(url, status, merged, data, request)


@dataclass
class CallbackOutput:
    """What one callback call produced: items (plain dicts, validated against the
    spider's `item_model` when given), requests, and values that were neither
    (`(value, reason)`: a crawl would count them as `items_invalid`)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    invalid: list[tuple[Any, str]] = field(default_factory=list)


def run_callback(callback: Callable[[Any], Any], response: Response, *,
                 item_model: type | None = None) -> CallbackOutput:
    """Call `callback(response)` and sort what it yields, as the crawler would.

    Exceptions from the callback propagate (a test should see them). Requests get the
    depth a crawl would give them (`response.depth + 1`).
    """
    from .errors import ItemError
    from .items import as_dict, is_item, validate
    from .request import Request

    output = CallbackOutput()
    produced = callback(response)
    depth = response.depth + 1
    for value in produced if isinstance(produced, Iterable) else ():
        if isinstance(value, Request):
            value.depth = depth
            output.requests.append(value)
        elif value is None:
            continue
        elif not is_item(value):
            output.invalid.append(
                (value, f"{type(value).__name__} is neither a Request nor an item"))
        else:
            try:
                output.items.append(validate(as_dict(value), item_model))
            except ItemError as exc:
                output.invalid.append((value, str(exc)))
    return output
