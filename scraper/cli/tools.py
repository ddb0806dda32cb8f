"""`scraper fetch`, `parse`, `shell` and `new`: the tools for writing a spider."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import (
    EXIT_FAILURES,
    EXIT_OK,
    LOG_LEVELS,
    PREVIEW_CHARS,
    _config_errors,
    _fail,
    _parse_args,
    _settings_options,
    _setup_logging,
    _spider_arg_option,
    main,
)

if TYPE_CHECKING:
    from ..client import Client, FetchResult
    from ..components.cache import HttpCache
    from ..settings import LoadedSettings
    from ..spider import Spider


# -- fetch ----------------------------------------------------------------------------------

CACHE_OVERRIDE = "http.cache=replay"
CACHE_SOURCES = {"cache": "hit (nothing sent)", "revalidated": "revalidated (304)",
                 "network": "miss (fetched and kept)"}


def cache_option(func: Any) -> Any:
    """`--cache`: the same as `-s http.cache=replay` (an explicit -s http.cache wins)."""
    return click.option("--cache", "use_cache", is_flag=True,
                        help="Answer from the HTTP cache and keep what is fetched "
                             "(-s http.cache=replay; see http.cache_only).")(func)


def with_cache(overrides: tuple[str, ...], use_cache: bool) -> tuple[str, ...]:
    return (CACHE_OVERRIDE, *overrides) if use_cache else overrides


def _check_url(url: str) -> str:
    """The URL as the crawler would fetch it (WHATWG-parsed, canonical)."""
    from ..urls import BadURL, canonicalize

    try:
        return canonicalize(url)
    except BadURL as exc:
        raise click.BadParameter(f"expected an http:// or https:// URL, got {url!r} ({exc})",
                                 param_hint="URL") from None


def _make_client(loaded: LoadedSettings) -> Client:
    from ..client import Client
    from ..stats import Stats

    return Client(loaded.settings.http, per_host=loaded.settings.crawl.per_host, stats=Stats())


def _trust_typed(client: Client, url: str) -> None:
    """A URL the user typed is theirs to reach, private address or not (the guard is
    for links and redirects a crawl meets, which these commands do not follow)."""
    from ..urls import hostname

    client.trust(hostname(url))
def _make_cache(loaded: LoadedSettings, client: Client) -> HttpCache | None:
    """The project's HTTP cache when `http.cache` is on (shares the client's stats)."""
    from ..components.cache import open_cache

    with _config_errors():
        return open_cache(loaded.settings, client.stats)


def _parse_headers(pairs: tuple[str, ...]) -> dict[str, str]:
    headers = {}
    for pair in pairs:
        name, sep, value = pair.partition(":")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected 'Name: value', got {pair!r}",
                                     param_hint="-H")
        headers[name.strip()] = value.strip()
    return headers


def _status_phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _body_path(template: str, index: int, count: int) -> Path:
    path = Path(template)
    if count == 1:
        return path
    return path.with_name(f"{path.stem}-{index}{path.suffix}")


def _is_text(result: FetchResult) -> bool:
    kind = result.headers.get("content-type", "text/html").split(";")[0].strip().lower()
    textual = kind.startswith("text/") or kind.endswith(("json", "xml", "javascript")) \
        or kind in ("application/x-www-form-urlencoded", "")
    return textual and b"\x00" not in result.body[:1024]


def _preview(result: FetchResult, url: str, limit: int) -> list[str]:
    from ..request import Request
    from ..response import Response

    if not result.body:
        return []
    if not _is_text(result):
        return ["  (binary; --body PATH writes it)"]
    text = Response(result.url, result.status, result.headers, result.body, Request(url)).text
    lines = [f"  {line}" for line in text[:limit].splitlines()]
    if len(text) > limit:
        lines.append(f"  ... ({len(text) - limit} more characters; --body PATH writes them all)")
    return lines


def _fetch_report(method: str, url: str, result: FetchResult, body_note: str | None,
                  preview: int, source: str | None = None) -> tuple[list[str], dict[str, Any]]:
    from ..logs import redact
    from ..urls import BadURL, join

    timings = {phase: round(seconds * 1000, 2) for phase, seconds in result.timings.items()}
    lines = [
        f"{method} {redact(url)}",
        f"status: {result.status} {_status_phrase(result.status)}".rstrip(),
        f"reused: {'yes' if result.reused else 'no'}",
        *([f"cache: {CACHE_SOURCES[source]}"] if source else []),
        "timings: " + ", ".join(f"{phase} {ms:.2f} ms" for phase, ms in timings.items()
                                if phase != "tls" or url.startswith("https:")),
        "headers:",
        *(f"  {name}: {value}" for name, value in result.headers.items()),
    ]
    report: dict[str, Any] = {
        "url": redact(url), "method": method, "status": result.status, "reused": result.reused,
        "timings_ms": timings, "headers": dict(result.headers.items()),
        "body_bytes": len(result.body),
    }
    if source:
        report["cache"] = source
    location = result.headers.get("location")
    if 300 <= result.status < 400 and location:
        try:
            target = join(url, location)
        except BadURL:
            target = location
        lines.append(f"redirect: {target} (not followed; fetch it next)")
        report["location"] = target
    encoding = result.headers.get("content-encoding")
    decoded = f", decoded from {encoding}" if encoding else ""
    lines.append(f"body: {len(result.body)} bytes{decoded}"
                 + (f", written to {body_note}" if body_note else ""))
    if body_note:
        report["body_file"] = body_note
    elif preview:
        lines.extend(_preview(result, url, preview))
    return lines, report


@main.command(short_help="Fetch URLs: status, headers, timings, connection reuse.")
@click.argument("urls", metavar="URL...", nargs=-1, required=True)
@click.option("-X", "--method", default="GET", show_default=True, metavar="METHOD",
              help="HTTP method.")
@click.option("-H", "--header", "header_pairs", multiple=True, metavar="'NAME: VALUE'",
              help="Extra request header (on top of http.headers). Repeatable.")
@click.option("--body", "body_to", metavar="PATH",
              help="Write each response body to PATH ('-' for stdout; with several URLs, "
                   "PATH-1, PATH-2, ...). Without it, a preview of the text is shown.")
@click.option("--preview", default=PREVIEW_CHARS, show_default=True, type=click.IntRange(0),
              help="Characters of body text shown (0: none).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per URL instead.")
@cache_option
@_settings_options
def fetch(urls: tuple[str, ...], method: str, header_pairs: tuple[str, ...],
          body_to: str | None, preview: int, as_json: bool, use_cache: bool,
          overrides: tuple[str, ...], settings_file: str | None) -> None:
    """Fetch URLs through the crawler's shared client and show what happened.

    For each URL: the status, the response headers, the time of each phase (connect,
    tls, wait for the headers, body, total, in ms), whether the request reused an open
    connection, and the body (a preview, or a file with --body). All URLs share one
    client, so a second URL on the same host reuses the first one's connection.
    Redirects are not followed: the Location is shown. The settings (timeouts, headers,
    user agent) are the crawl's; -s overrides them. With --cache (or http.cache set),
    a URL already in the HTTP cache is answered from it, and one fetched is kept.

    \b
    Examples:
      scraper fetch http://127.0.0.1:8000/ http://127.0.0.1:8000/c/books/1
      scraper fetch https://example.com/ --body page.html -s http.read_timeout=5
      scraper fetch https://api.example.com/items -H 'Accept: application/json' --body -
      scraper fetch --cache http://127.0.0.1:8000/p/7

    \b
    Exit codes:
      0  every URL answered with a status below 400
      1  a request failed (the reason is shown) or answered 4xx/5xx
      2  bad usage or settings
    """
    from ..components.cache import cached_fetch
    from ..errors import FetchError
    from ..logs import redact
    from ..settings import load

    overrides = with_cache(overrides, use_cache)
    urls = tuple(_check_url(url) for url in urls)
    headers = _parse_headers(header_pairs)
    _setup_logging("warning")
    with _config_errors():
        loaded = load(Path(settings_file) if settings_file else None, overrides=overrides)
    out_err = body_to == "-"  # the bodies own stdout: the report goes to stderr
    failures = 0
    client = _make_client(loaded)
    cache = None
    try:
        cache = _make_cache(loaded, client)
        for index, url in enumerate(urls, 1):
            _trust_typed(client, url)
            try:
                result, source = cached_fetch(client, cache, method.upper(), url,
                                              headers or None)
            except FetchError as exc:
                failures += 1
                if as_json:
                    click.echo(json.dumps({"url": redact(url), "method": method.upper(),
                                           "error": exc.reason, "message": redact(str(exc))}),
                               err=out_err)
                else:
                    click.echo(f"{method.upper()} {redact(url)}\n"
                               f"failed: {exc.reason}: {redact(str(exc))}\n", err=out_err)
                continue
            body_note = None
            if body_to == "-":
                sys.stdout.buffer.write(result.body)
                sys.stdout.buffer.flush()
                body_note = "stdout"
            elif body_to:
                path = _body_path(body_to, index, len(urls))
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(result.body)
                except OSError as exc:
                    _fail(f"--body {path}: cannot write: {exc.strerror or exc}")
                body_note = str(path)
            lines, report = _fetch_report(method.upper(), url, result, body_note, preview,
                                          source if cache is not None else None)
            if result.status >= 400:
                failures += 1
                lines.append(f"failed: status:{result.status}")
            if as_json:
                click.echo(json.dumps(report), err=out_err)
            else:
                click.echo("\n".join(lines) + "\n", err=out_err)
        stats = client.stats.snapshot()
    finally:
        if cache is not None:
            cache.close()
        client.close()
    if len(urls) > 1 and not as_json:
        click.echo(f"{len(urls) - failures} of {len(urls)} fetched; connections opened "
                   f"{stats['connections_opened']}, reused {stats['connections_reused']}",
                   err=out_err)
    sys.exit(EXIT_FAILURES if failures else EXIT_OK)


# -- parse and shell ------------------------------------------------------------------------


def _fetch_page(client: Client, url: str, meta: dict[str, Any] | None = None,
                cache: HttpCache | None = None) -> Any:
    """A `Response` for `url` (through the cache when there is one), or raises FetchError."""
    from ..components.cache import cached_fetch
    from ..request import Request
    from ..response import Response

    request = Request(url, meta=meta)
    _trust_typed(client, url)
    result, _ = cached_fetch(client, cache, request.method, url, request.headers, request.body)
    return Response(result.url, result.status, result.headers, result.body, request)


def _describe_request(request: Any, spider: Spider) -> str:
    callback = getattr(request.callback, "__name__", None) or "parse"
    extras = [callback]
    if request.errback is not None:
        extras.append(f"errback={getattr(request.errback, '__name__', request.errback)}")
    if request.meta:
        extras.append(f"meta={json.dumps(request.meta, default=str)}")
    return f"-> {request.method} {request.url} ({', '.join(extras)})"


@main.command(short_help="Run one callback on one page; print its items and requests.")
@click.argument("url")
@click.option("--spider", "spider_name", required=True, metavar="NAME",
              help="The spider (a name in spiders/ or a .py path).")
@click.option("-c", "--callback", "callback_name", default="parse", show_default=True,
              metavar="NAME", help="The spider method to call with the response.")
@click.option("--meta", metavar="JSON", help="response.meta for the callback, as a JSON object.")
@click.option("--pipelines", is_flag=True, help="Also run the spider's pipelines on the items.")
@cache_option
@_spider_arg_option
@_settings_options
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(LOG_LEVELS, case_sensitive=False),
              help="The least severe log records shown (the spider's own logs too).")
def parse(url: str, spider_name: str, callback_name: str, meta: str | None, pipelines: bool,
          use_cache: bool, spider_args: tuple[str, ...], overrides: tuple[str, ...],
          settings_file: str | None, log_level: str) -> None:
    """Fetch URL, call one callback of a spider on it, and print what it yields.

    Items are printed as JSON lines (validated against the spider's item_model, if it
    has one); requests as `-> METHOD URL (callback)`. Nothing is crawled further: this
    is the quick loop for writing a callback. A count goes to stderr. With --cache the
    page comes from the HTTP cache when it is there (-s http.cache_only=true: offline).

    \b
    Examples:
      scraper parse http://127.0.0.1:8000/p/7 --spider demo
      scraper parse https://shop.example/c/lamps --spider shop -c parse_category \\
          --meta '{"category": "lamps"}' -a lang=en

    \b
    Exit codes:
      0  the callback ran
      1  the page could not be fetched, the callback raised, or an item was invalid
      2  unknown spider or callback, bad arguments or settings
    """
    import inspect

    from ..api import prepare
    from ..errors import DropItem, FetchError
    from ..items import pipeline_steps
    from ..testing import run_callback

    url = _check_url(url)
    _setup_logging(log_level)
    overrides = with_cache(overrides, use_cache)
    meta_dict = _parse_meta(meta)
    with _config_errors():
        spider, loaded = prepare(spider_name, settings_file=settings_file, overrides=overrides,
                                 spider_args=_parse_args(spider_args))
        steps = pipeline_steps(spider.pipelines) if pipelines else []
    callback = getattr(spider, callback_name, None)
    if callback_name.startswith("_") or not inspect.ismethod(callback):
        methods = sorted(name for name in dir(type(spider)) if not name.startswith("_")
                         and inspect.ismethod(getattr(spider, name, None))
                         and name not in ("start_requests", "opened", "closed", "blocked"))
        _fail(f"spider {spider.name!r} has no callback {callback_name!r} "
              f"(its methods: {', '.join(methods) or 'none'})")
    client = _make_client(loaded)
    cache = None
    try:
        cache = _make_cache(loaded, client)
        response = _fetch_page(client, url, meta_dict, cache)
    except FetchError as exc:
        _fail(f"cannot fetch {url}: {exc.reason}: {exc}", EXIT_FAILURES)
    finally:
        if cache is not None:
            cache.close()
        client.close()
    if response.status >= 300 and response.status not in spider.handle_statuses:
        location = response.headers.get("location")
        note = f" (redirect to {location}, not followed)" if location else ""
        click.echo(f"warning: status {response.status}{note}: a crawl would not call "
                   f"{callback_name} (see Spider.handle_statuses)", err=True)
    spider.opened()
    try:
        output = run_callback(callback, response, item_model=spider.item_model)
    except Exception:
        import traceback

        click.echo(traceback.format_exc().rstrip(), err=True)
        _fail(f"{type(spider).__name__}.{callback_name} raised on {url}", EXIT_FAILURES)
    finally:
        spider.closed("finished")
    shown = 0
    for item in output.items:
        try:
            for step in steps:
                changed = step(item, spider)
                if changed is not None:
                    item = changed
        except DropItem as exc:
            click.echo(f"dropped by a pipeline: {exc}", err=True)
            continue
        click.echo(json.dumps(item, ensure_ascii=False, default=str))
        shown += 1
    for request in output.requests:
        click.echo(_describe_request(request, spider))
    for value, reason in output.invalid:
        click.echo(f"invalid: {reason}: {value!r}", err=True)
    click.echo(f"{shown} item{'s' * (shown != 1)}, {len(output.requests)} "
               f"request{'s' * (len(output.requests) != 1)} from "
               f"{type(spider).__name__}.{callback_name} on {response.status} {response.url}",
               err=True)
    sys.exit(EXIT_FAILURES if output.invalid else EXIT_OK)


def _parse_meta(meta: str | None) -> dict[str, Any] | None:
    if meta is None:
        return None
    try:
        value = json.loads(meta)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--meta") from None
    if not isinstance(value, dict):
        raise click.BadParameter("expected a JSON object", param_hint="--meta")
    return value


SHELL_BANNER = """\
scraper shell: {status}
  response      the page: .status .headers .text .json() .css(sel) .css_first(sel) .follow(href)
  fetch(url)    fetch another page (relative to response.url) and rebind response
  spider        {spider}
  scraper       the package: scraper.Request, scraper.crawl, ...
Ctrl-D to leave."""


@main.command(short_help="A Python prompt with `response` and `fetch()` ready.")
@click.argument("url")
@click.option("--spider", "spider_name", metavar="NAME",
              help="Also load this spider as `spider` (its custom_settings apply).")
@click.option("-c", "--command", "code", metavar="CODE",
              help="Run CODE instead of the prompt (an expression's value is printed).")
@cache_option
@_spider_arg_option
@_settings_options
def shell(url: str, spider_name: str | None, code: str | None, use_cache: bool,
          spider_args: tuple[str, ...], overrides: tuple[str, ...],
          settings_file: str | None) -> None:
    """An interactive Python prompt with `response` for URL and `fetch()` ready.

    Try selectors on a live page before putting them in a callback. `fetch(url)` gets
    another page through the same client and rebinds `response`; with --spider,
    `spider` is an instance of that spider (call spider.parse(response) to try it).
    With --cache, pages come from the HTTP cache when they are there.

    \b
    Examples:
      scraper shell http://127.0.0.1:8000/p/7
      >>> response.css_first("h1").text()
      >>> fetch("/c/books/1")
      scraper shell http://127.0.0.1:8000/p/7 -c 'response.css_first("h1").text()'
    """
    import code as code_module

    import scraper

    from ..api import prepare
    from ..errors import FetchError
    from ..request import Request
    from ..response import Response
    from ..settings import load

    url = _check_url(url)
    _setup_logging("warning")
    overrides = with_cache(overrides, use_cache)
    spider = None
    with _config_errors():
        if spider_name:
            spider, loaded = prepare(spider_name, settings_file=settings_file,
                                     overrides=overrides, spider_args=_parse_args(spider_args))
        else:
            loaded = load(Path(settings_file) if settings_file else None, overrides=overrides)
    client = _make_client(loaded)
    try:
        cache = _make_cache(loaded, client)
    except BaseException:
        client.close()
        raise
    namespace: dict[str, Any] = {"scraper": scraper, "spider": spider, "Request": Request,
                                 "Response": Response, "response": None}

    def fetch(target: str | Request) -> Response | None:
        """Fetch `target` (a URL, relative to response.url, or a Request); rebind response."""
        current = namespace.get("response")
        if isinstance(target, Request):
            address, meta = target.url, target.meta
        else:
            address, meta = (current.urljoin(target) if current is not None else target), None
        try:
            response = _fetch_page(client, address, meta, cache)
        except FetchError as exc:
            print(f"fetch failed: {exc.reason}: {exc}", file=sys.stderr)
            return None
        namespace["response"] = response
        return response

    namespace["fetch"] = fetch
    try:
        first = fetch(url)
        status = f"{first.status} {first.url}" if first is not None else \
            f"{url} could not be fetched (response is None)"
        if code is not None:
            _run_code(code, namespace)
            return
        if sys.stdin.isatty():
            import readline
            import rlcompleter

            readline.set_completer(rlcompleter.Completer(namespace).complete)
            readline.parse_and_bind("tab: complete")
        banner = SHELL_BANNER.format(status=status,
                                     spider=repr(spider) if spider else "None (use --spider)")
        code_module.interact(banner=banner, local=namespace, exitmsg="")
    finally:
        if cache is not None:
            cache.close()
        client.close()


def _run_code(source: str, namespace: dict[str, Any]) -> None:
    try:
        compiled = compile(source, "<-c>", "eval")
    except SyntaxError:
        exec(compile(source, "<-c>", "exec"), namespace)
        return
    value = eval(compiled, namespace)
    if value is not None:
        click.echo(value if isinstance(value, str) else repr(value))


# -- new ------------------------------------------------------------------------------------

SPIDER_TEMPLATE = '''\
"""The {name} spider: starts at {url} (written by `scraper new`; edit freely).

Try a callback on one page:  scraper parse {url} --spider {name}
Run the spider:              scraper crawl {name} -o out/{name}.jsonl
"""

from scraper import Spider


class {class_name}(Spider):
    name = "{name}"
    start_urls = ["{url}"]
    # allowed_domains = ["{host}"]   # default: the hosts of start_urls
    custom_settings = {{
        "crawl.max_pages": 100,  # a safety net while you write the spider; remove it later
        # "crawl.delay": 0.5,    # seconds between requests to one host
    }}

    def parse(self, response):
        title = response.css_first("title")
        yield {{
            "url": response.url,
            "title": title.text(strip=True) if title else None,
        }}
        yield from response.follow_all("a[href]")
'''


@main.command(short_help="Write a new spider into spiders/ from a template.")
@click.argument("name")
@click.argument("url")
@click.option("--settings", "settings_file", metavar="PATH",
              help="Settings file (its crawl.spiders_dir is where the file goes).")
def new(name: str, url: str, settings_file: str | None) -> None:
    """Write a new spider NAME starting at URL into spiders/NAME.py, from a template.

    The spider yields one item per page (its URL and title) and follows every link,
    with crawl.max_pages = 100 as a safety net. NAME must be a Python identifier; an
    existing file is never overwritten. A bare domain means https://DOMAIN/.

    \b
    Example:
      scraper new shop https://shop.example/
      scraper parse https://shop.example/ --spider shop
    """
    import keyword
    import re
    from urllib.parse import urlsplit

    from ..loader import discover
    from ..settings import load

    if not name.isidentifier() or keyword.iskeyword(name):
        suggestion = re.sub(r"\W", "_", name)
        if suggestion[:1].isdigit():
            suggestion = f"s_{suggestion}"
        _fail(f"spider name must be a Python identifier (letters, digits, _), got {name!r}; "
              f"try {suggestion!r}")
    if "://" not in url:
        url = f"https://{url}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        _fail(f"expected an http:// or https:// URL or a domain, got {url!r}")
    if not parts.path:
        url += "/"
    with _config_errors():
        loaded = load(Path(settings_file) if settings_file else None)
    directory = Path(loaded.settings.crawl.spiders_dir)
    target = directory / f"{name}.py"
    if target.exists():
        _fail(f"{target} already exists; not overwriting it")
    from ..errors import ConfigError

    try:
        existing = discover(directory)
    except ConfigError:
        existing = {}  # another spider file is broken: not this command's business
    if name in existing:
        _fail(f"a spider named {name!r} already exists in {existing[name].__module__}")
    class_name = "".join(part.capitalize() for part in name.split("_") if part) + "Spider"
    text = SPIDER_TEMPLATE.format(name=name, url=url, class_name=class_name,
                                  host=parts.hostname)
    directory.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    click.echo(f"wrote {target}\n"
               f"  try it:  scraper parse {url} --spider {name}\n"
               f"  run it:  scraper crawl {name} -o out/{name}.jsonl")

