"""The `scraper` command (click). The only place that prints or exits.

Heavy modules (urllib3, selectolax, pydantic, rich) are imported inside the commands
that need them, so `scraper --help` stays fast enough for shell use and cron.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from .client import Client, FetchResult
    from .crawler import CrawlResult
    from .progress import _Reporter
    from .settings import LoadedSettings
    from .spider import Spider

EXIT_OK, EXIT_FAILURES, EXIT_USAGE = 0, 1, 2
SUMMARY_KEYS = (
    "finish_reason", "exit_code", "elapsed_s", "pages", "pages_per_s", "items", "requests",
    "responses", "failed", "retries", "stale_retries", "connections_opened",
    "connections_reused", "bytes_received",
)
LOG_LEVELS = ("debug", "info", "warning", "error")
PROGRESS_MODES = ("auto", "live", "log", "off")
PREVIEW_CHARS = 500
DEMO_PORT = 8000  # where spiders/demo.py looks by default
F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _config_errors() -> Iterator[None]:
    """Bad settings, spider or arguments: the message, then exit code 2."""
    from .errors import ConfigError

    try:
        yield
    except ConfigError as exc:
        _fail(str(exc))


def _setup_logging(level: str = "info", fmt: str = "text", log_file: str | None = None,
                   quiet: bool = False) -> None:
    from . import logs

    click.get_current_context().call_on_close(logs.reset)
    try:
        logs.setup(level.lower(), fmt, log_file=log_file, quiet=quiet)
    except OSError as exc:
        _fail(f"--log-file {log_file}: cannot write: {exc.strerror or exc}")


def _parse_args(pairs: tuple[str, ...]) -> dict[str, str]:
    args = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise click.UsageError(f"-a expects NAME=VALUE with a Python identifier, got {pair!r}")
        args[key.strip()] = value
    return args


# -- shared options -------------------------------------------------------------------------


def _settings_options(func: F) -> F:
    func = click.option("--settings", "settings_file", metavar="PATH",
                        type=click.Path(dir_okay=False),
                        help="Settings file (default: ./settings.toml when present).")(func)
    return click.option("-s", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                        help="Setting override, e.g. -s crawl.per_host=8. Repeatable.")(func)


def _spider_arg_option(func: F) -> F:
    return click.option("-a", "spider_args", multiple=True, metavar="NAME=VALUE",
                        help="Spider argument, passed to the spider's __init__. "
                             "Repeatable.")(func)


def _log_options(func: F) -> F:
    func = click.option("-q", "--quiet", is_flag=True,
                        help="No progress and no summary; only warnings and errors on "
                             "stderr.")(func)
    func = click.option("--progress", "progress_mode", default="auto", show_default=True,
                        type=click.Choice(PROGRESS_MODES),
                        help="auto: a live line when stderr is a terminal (and logs are "
                             "text), else a log line every 5 s; live, log or off to "
                             "choose.")(func)
    func = click.option("--log-file", metavar="PATH",
                        help="Also append log records to PATH (at --log-level, even with "
                             "-q).")(func)
    func = click.option("--log-format", default="text", show_default=True,
                        type=click.Choice(["text", "json"]),
                        help="text: timestamped lines; json: one JSON object per line "
                             "(time, level, logger, message, data).")(func)
    return click.option("--log-level", default="info", show_default=True,
                        type=click.Choice(LOG_LEVELS, case_sensitive=False),
                        help="The least severe log records shown.")(func)


# -- the group ------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"],
                               "max_content_width": 100})
@click.version_option(package_name="scraper")
def main() -> None:
    """A concurrent web-scraping framework built around one shared HTTP connection pool.

    \b
    Start here:
      scraper demo                               crawl the bundled demo site
      scraper new shop https://shop.example/     write spiders/shop.py
      scraper parse URL --spider shop            run one callback on one page
      scraper crawl shop -o out/shop.jsonl       run the spider

    `scraper COMMAND --help` explains each command's options.
    """


# -- crawl and demo -------------------------------------------------------------------------


def _reporter(mode: str, log_format: str, quiet: bool, label: str) -> _Reporter:
    from .progress import reporter

    return reporter(mode, is_tty=sys.stderr.isatty(), log_format=log_format, quiet=quiet,
                    label=label)


def _run_crawl(spider: str, *, spider_args: dict[str, Any], overrides: list[str],
               output: str | None, deadline: str | None, stats_path: str | None,
               settings_file: str | None, reporter: _Reporter) -> CrawlResult:
    from .api import prepare
    from .crawler import Crawler
    from .exporters import Exporter, write_json_atomic

    if deadline is not None:
        overrides = [*overrides, f"crawl.deadline={deadline!r}"]
    with _config_errors():
        instance, loaded = prepare(spider, settings_file=settings_file, overrides=overrides,
                                   spider_args=spider_args)
        outputs = [Exporter(output)] if output else []
        crawler = Crawler(instance, loaded.settings, outputs=outputs, handle_signals=True,
                          on_progress=reporter, progress_interval=reporter.interval)
        with reporter:
            result = crawler.run()
    if stats_path:
        try:
            write_json_atomic(stats_path, result.stats)
        except OSError as exc:
            logging.getLogger(__name__).error("cannot write --stats %s: %s", stats_path, exc)
    return result


def _summary(result: CrawlResult, items_to: str | None, *, to_stderr: bool, quiet: bool,
             log_format: str) -> None:
    """The end-of-crawl summary: a log record (shown on stderr in JSON format, and in a
    log file) and, in text format, a table of the main stats."""
    from .logs import SUMMARY_LOGGER

    stats = result.stats
    logging.getLogger(SUMMARY_LOGGER).info(
        "crawl %s: %d pages, %d items, %d failed in %.1f s (%.1f pages/s), exit code %d",
        stats["finish_reason"], stats["pages"], stats["items"], stats["failed"],
        stats["elapsed_s"], stats["pages_per_s"], stats["exit_code"],
        extra={"data": stats})
    if quiet or log_format != "text":
        return
    lines = [f"{key:>20}: {stats[key]}" for key in SUMMARY_KEYS if key in stats]
    if stats.get("failed_reasons"):
        lines.append(f"{'failed_reasons':>20}: {stats['failed_reasons']}")
    if stats.get("status_counts"):
        lines.append(f"{'status_counts':>20}: {stats['status_counts']}")
    if items_to:
        lines.append(f"{'items written to':>20}: {items_to}")
    click.echo("\n".join(lines), err=to_stderr)


@main.command(short_help="Run a spider and write its items.")
@click.argument("spider")
@_spider_arg_option
@_settings_options
@click.option("-o", "output", metavar="PATH",
              help="Write items to PATH (.jsonl, .csv, .json; '-' for JSON Lines on stdout).")
@click.option("--deadline", metavar="DURATION",
              help="Stop the job after this long (90, 90s, 10m, 2h): exit code 3.")
@click.option("--stats", "stats_path", metavar="PATH", help="Write the final stats as JSON.")
@_log_options
def crawl(spider: str, spider_args: tuple[str, ...], overrides: tuple[str, ...],
          settings_file: str | None, output: str | None, deadline: str | None,
          stats_path: str | None, log_level: str, log_format: str, log_file: str | None,
          progress_mode: str, quiet: bool) -> None:
    """Run the spider SPIDER (a name in spiders/ or a path to a .py file).

    On a terminal a live line shows pages, items, pages/s, requests in flight, queued,
    failures and open connections; elsewhere (cron, a pipe) a log line every 5 s. A
    summary of the stats follows the crawl.

    \b
    Example:
      scraper crawl demo -o out/items.jsonl -s crawl.per_host=8 --deadline 10m \\
          --stats out/stats.json --log-file crawl.log

    \b
    Exit codes:
      0    finished, no request failed beyond crawl.allowed_failures
      1    some requests failed for good (more than crawl.allowed_failures)
      2    bad usage, settings or spider
      3    the deadline was reached (outputs finalised with what was scraped)
      130  interrupted (SIGINT/SIGTERM)
    """
    _setup_logging(log_level, log_format, log_file, quiet)
    result = _run_crawl(spider, spider_args=_parse_args(spider_args), overrides=list(overrides),
                        output=output, deadline=deadline, stats_path=stats_path,
                        settings_file=settings_file,
                        reporter=_reporter(progress_mode, log_format, quiet, spider))
    _summary(result, output, to_stderr=output == "-", quiet=quiet, log_format=log_format)
    sys.exit(result.exit_code)


def _demo_pages(products: int) -> dict[str, Any]:
    from .demo import build_site

    html = {"Content-Type": "text/html; charset=utf-8"}
    return {path: (200, html, body) for path, body in build_site(products).items()}


def _serve_demo(products: int, port: int) -> NoReturn:
    import signal
    import threading

    from .testing import Site

    try:
        site = Site(_demo_pages(products), port=port)
    except OSError as exc:
        _fail(f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}")

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    with site:
        click.echo(f"serving the demo catalogue at {site.url('/')} ({products} products); "
                   "Ctrl-C to stop")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            click.echo("stopped", err=True)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    sys.exit(EXIT_OK)


@main.command(short_help="Crawl (or only serve) the bundled demo catalogue.")
@click.option("-o", "output", default="out/demo.jsonl", show_default=True, metavar="PATH",
              help="Where the demo's items go.")
@click.option("--products", default=300, show_default=True, type=click.IntRange(1, 100_000),
              help="Products in the generated demo catalogue.")
@click.option("--serve", is_flag=True,
              help="Only serve the demo catalogue (until Ctrl-C), for trying the other "
                   "commands on it.")
@click.option("--port", default=DEMO_PORT, show_default=True, type=click.IntRange(0, 65535),
              help="Port for --serve (0: any free port).")
@click.option("-s", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Setting override, as for crawl.")
@_log_options
def demo(output: str, products: int, serve: bool, port: int, overrides: tuple[str, ...],
         log_level: str, log_format: str, log_file: str | None, progress_mode: str,
         quiet: bool) -> None:
    """Serve the bundled demo catalogue on loopback and crawl it with spiders/demo.py.

    With --serve, only serve it (at http://127.0.0.1:8000/ by default), so that
    `scraper fetch`, `parse`, `shell` and your own spiders have a site to work on.

    \b
    Examples:
      scraper demo -o out/demo.jsonl
      scraper demo --serve            # then, in another terminal:
      scraper fetch http://127.0.0.1:8000/
    """
    if serve:
        _serve_demo(products, port)
    from .testing import serve as serve_pages

    _setup_logging(log_level, log_format, log_file, quiet)
    with serve_pages(_demo_pages(products)) as site:
        if not quiet:
            click.echo(f"demo site: {site.url('/')} ({products} products)")
        result = _run_crawl("demo", spider_args={"base_url": site.url("/")},
                            overrides=list(overrides), output=output, deadline=None,
                            stats_path=None, settings_file=None,
                            reporter=_reporter(progress_mode, log_format, quiet, "demo"))
    _summary(result, output, to_stderr=False, quiet=quiet, log_format=log_format)
    sys.exit(result.exit_code)


# -- list and settings ----------------------------------------------------------------------


@main.command(name="list", short_help="List the spiders, with their start URLs.")
@click.option("--settings", "settings_file", metavar="PATH", help="Settings file.")
def list_spiders(settings_file: str | None) -> None:
    """List the spiders found in the spiders directory, with their start URLs.

    One spider a line: its name, a tab, its start URLs separated by spaces.

    \b
    Example:
      scraper list
    """
    from .loader import discover
    from .settings import load

    with _config_errors():
        loaded = load(Path(settings_file) if settings_file else None)
        spiders = discover(loaded.settings.crawl.spiders_dir)
    for name, cls in sorted(spiders.items()):
        click.echo(f"{name}\t{' '.join(cls.start_urls)}")


def _source_label(key: str, source: str | None, spider: str | None) -> str:
    if source is None:
        return "default"
    if source == "spider custom_settings":
        return f"spider {spider}" if spider else "spider"
    if source == "environment":
        section, _, name = key.partition(".")
        return f"env SCRAPER_{section.upper()}__{name.upper()}"
    return source


def _effective_settings(loaded: LoadedSettings, spider: str | None
                        ) -> list[tuple[str, Any, str]]:
    from .settings import known_keys

    data = loaded.settings.model_dump(mode="json")
    rows = []
    for key in known_keys():
        section, name = key.split(".", 1)
        rows.append((key, data[section][name],
                     _source_label(key, loaded.sources.get(key), spider)))
    for job, values in sorted(data.get("jobs", {}).items()):
        rows.append((f"jobs.{job}", values, _source_label("jobs", loaded.sources.get("jobs"),
                                                            spider)))
    return rows


@main.command(name="settings",
              short_help="Show the effective settings and where each came from.")
@_settings_options
@click.option("--spider", metavar="NAME",
              help="Include this spider's custom_settings (a name or a .py path).")
@click.option("--json", "as_json", is_flag=True,
              help='JSON: {"key": {"value": ..., "source": ...}, ...}.')
def show_settings(overrides: tuple[str, ...], settings_file: str | None, spider: str | None,
                  as_json: bool) -> None:
    """Show the effective settings, each with the source it came from.

    Sources, lowest precedence first: default, the settings file, the spider's
    custom_settings (with --spider), the environment (SCRAPER_SECTION__KEY), -s.
    Secret values (Authorization headers, URL passwords) are masked.

    \b
    Example:
      SCRAPER_HTTP__READ_TIMEOUT=5 scraper settings -s crawl.per_host=4 --spider demo
    """
    from .api import resolve_spider
    from .logs import redact
    from .settings import load

    path = Path(settings_file) if settings_file else None
    with _config_errors():
        loaded = load(path, overrides=overrides)
        name = None
        if spider:
            cls = resolve_spider(spider, loaded.settings.crawl.spiders_dir)
            name = cls.name or spider
            if cls.custom_settings:
                loaded = load(path, spider_settings=cls.custom_settings, overrides=overrides)
    rows = [(key, json.loads(redact(json.dumps(value))), source)
            for key, value, source in _effective_settings(loaded, name)]
    if as_json:
        click.echo(json.dumps({key: {"value": value, "source": source}
                               for key, value, source in rows}, indent=2))
        return
    shown = [(key, json.dumps(value), source) for key, value, source in rows]
    key_width = max(len(key) for key, _, _ in shown)
    value_width = min(max(len(value) for _, value, _ in shown), 44)
    for key, value, source in shown:
        click.echo(f"{key:<{key_width}}  {value:<{value_width}}  {source}".rstrip())


# -- fetch ----------------------------------------------------------------------------------


def _check_url(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(f"expected an http:// or https:// URL, got {url!r}",
                                 param_hint="URL")
    return url


def _make_client(loaded: LoadedSettings) -> Client:
    from .client import Client
    from .stats import Stats

    return Client(loaded.settings.http, per_host=loaded.settings.crawl.per_host, stats=Stats())


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
    from .request import Request
    from .response import Response

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
                  preview: int) -> tuple[list[str], dict[str, Any]]:
    from urllib.parse import urljoin

    from .logs import redact

    timings = {phase: round(seconds * 1000, 2) for phase, seconds in result.timings.items()}
    lines = [
        f"{method} {redact(url)}",
        f"status: {result.status} {_status_phrase(result.status)}".rstrip(),
        f"reused: {'yes' if result.reused else 'no'}",
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
    location = result.headers.get("location")
    if 300 <= result.status < 400 and location:
        target = urljoin(url, location)
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
@_settings_options
def fetch(urls: tuple[str, ...], method: str, header_pairs: tuple[str, ...],
          body_to: str | None, preview: int, as_json: bool, overrides: tuple[str, ...],
          settings_file: str | None) -> None:
    """Fetch URLs through the crawler's shared client and show what happened.

    For each URL: the status, the response headers, the time of each phase (connect,
    tls, wait for the headers, body, total, in ms), whether the request reused an open
    connection, and the body (a preview, or a file with --body). All URLs share one
    client, so a second URL on the same host reuses the first one's connection.
    Redirects are not followed: the Location is shown. The settings (timeouts, headers,
    user agent) are the crawl's; -s overrides them.

    \b
    Examples:
      scraper fetch http://127.0.0.1:8000/ http://127.0.0.1:8000/c/books/1
      scraper fetch https://example.com/ --body page.html -s http.read_timeout=5
      scraper fetch https://api.example.com/items -H 'Accept: application/json' --body -

    \b
    Exit codes:
      0  every URL answered with a status below 400
      1  a request failed (the reason is shown) or answered 4xx/5xx
      2  bad usage or settings
    """
    from .errors import FetchError
    from .logs import redact
    from .settings import load

    for url in urls:
        _check_url(url)
    headers = _parse_headers(header_pairs)
    _setup_logging("warning")
    with _config_errors():
        loaded = load(Path(settings_file) if settings_file else None, overrides=overrides)
    out_err = body_to == "-"  # the bodies own stdout: the report goes to stderr
    failures = 0
    client = _make_client(loaded)
    try:
        for index, url in enumerate(urls, 1):
            try:
                result = client.fetch(method.upper(), url, headers or None)
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
            lines, report = _fetch_report(method.upper(), url, result, body_note, preview)
            if result.status >= 400:
                failures += 1
                lines.append(f"failed: status:{result.status}")
            if as_json:
                click.echo(json.dumps(report), err=out_err)
            else:
                click.echo("\n".join(lines) + "\n", err=out_err)
        stats = client.stats.snapshot()
    finally:
        client.close()
    if len(urls) > 1 and not as_json:
        click.echo(f"{len(urls) - failures} of {len(urls)} fetched; connections opened "
                   f"{stats['connections_opened']}, reused {stats['connections_reused']}",
                   err=out_err)
    sys.exit(EXIT_FAILURES if failures else EXIT_OK)


# -- parse and shell ------------------------------------------------------------------------


def _fetch_page(client: Client, url: str, meta: dict[str, Any] | None = None) -> Any:
    """A `Response` for `url`, or raises FetchError."""
    from .request import Request
    from .response import Response

    request = Request(url, meta=meta)
    result = client.fetch(request.method, url, request.headers, request.body)
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
@_spider_arg_option
@_settings_options
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(LOG_LEVELS, case_sensitive=False),
              help="The least severe log records shown (the spider's own logs too).")
def parse(url: str, spider_name: str, callback_name: str, meta: str | None, pipelines: bool,
          spider_args: tuple[str, ...], overrides: tuple[str, ...], settings_file: str | None,
          log_level: str) -> None:
    """Fetch URL, call one callback of a spider on it, and print what it yields.

    Items are printed as JSON lines (validated against the spider's item_model, if it
    has one); requests as `-> METHOD URL (callback)`. Nothing is crawled further: this
    is the quick loop for writing a callback. A count goes to stderr.

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

    from .api import prepare
    from .errors import DropItem, FetchError
    from .items import pipeline_steps
    from .testing import run_callback

    _check_url(url)
    _setup_logging(log_level)
    meta_dict = _parse_meta(meta)
    with _config_errors():
        spider, loaded = prepare(spider_name, settings_file=settings_file, overrides=overrides,
                                 spider_args=_parse_args(spider_args))
        steps = pipeline_steps(spider.pipelines) if pipelines else []
    callback = getattr(spider, callback_name, None)
    if callback_name.startswith("_") or not inspect.ismethod(callback):
        methods = sorted(name for name in dir(type(spider)) if not name.startswith("_")
                         and inspect.ismethod(getattr(spider, name, None))
                         and name not in ("start_requests", "opened", "closed"))
        _fail(f"spider {spider.name!r} has no callback {callback_name!r} "
              f"(its methods: {', '.join(methods) or 'none'})")
    client = _make_client(loaded)
    try:
        response = _fetch_page(client, url, meta_dict)
    except FetchError as exc:
        _fail(f"cannot fetch {url}: {exc.reason}: {exc}", EXIT_FAILURES)
    finally:
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
@_spider_arg_option
@_settings_options
def shell(url: str, spider_name: str | None, code: str | None, spider_args: tuple[str, ...],
          overrides: tuple[str, ...], settings_file: str | None) -> None:
    """An interactive Python prompt with `response` for URL and `fetch()` ready.

    Try selectors on a live page before putting them in a callback. `fetch(url)` gets
    another page through the same client and rebinds `response`; with --spider,
    `spider` is an instance of that spider (call spider.parse(response) to try it).

    \b
    Examples:
      scraper shell http://127.0.0.1:8000/p/7
      >>> response.css_first("h1").text()
      >>> fetch("/c/books/1")
      scraper shell http://127.0.0.1:8000/p/7 -c 'response.css_first("h1").text()'
    """
    import code as code_module

    import scraper

    from .api import prepare
    from .errors import FetchError
    from .request import Request
    from .response import Response
    from .settings import load

    _check_url(url)
    _setup_logging("warning")
    spider = None
    with _config_errors():
        if spider_name:
            spider, loaded = prepare(spider_name, settings_file=settings_file,
                                     overrides=overrides, spider_args=_parse_args(spider_args))
        else:
            loaded = load(Path(settings_file) if settings_file else None, overrides=overrides)
    client = _make_client(loaded)
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
            response = _fetch_page(client, address, meta)
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

    from .loader import discover
    from .settings import load

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
    from .errors import ConfigError

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
