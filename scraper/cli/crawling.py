"""`scraper crawl`, `demo`, `list` and `settings`."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from . import (
    DEMO_PORT,
    EXIT_OK,
    SUMMARY_KEYS,
    _config_errors,
    _fail,
    _log_options,
    _parse_args,
    _settings_options,
    _setup_logging,
    _spider_arg_option,
    main,
)
from .tools import cache_option, with_cache

if TYPE_CHECKING:
    from ..engine import CrawlResult
    from ..progress import _Reporter
    from ..settings import LoadedSettings


# -- crawl and demo -------------------------------------------------------------------------


def _reporter(mode: str, log_format: str, quiet: bool, label: str) -> _Reporter:
    from ..progress import reporter

    return reporter(mode, is_tty=sys.stderr.isatty(), log_format=log_format, quiet=quiet,
                    label=label)


def _run_crawl(spider: str | type, *, spider_args: dict[str, Any], overrides: list[str],
               outputs: tuple[str, ...], deadline: str | None, stats_path: str | None,
               settings_file: str | None, reporter: _Reporter
               ) -> tuple[CrawlResult, list[str]]:
    """The crawl's result and the outputs it wrote (their paths or path templates)."""
    from ..api import build_crawler, prepare
    from ..exporters import build_outputs, write_json_atomic

    if deadline is not None:
        overrides = [*overrides, f"crawl.deadline={deadline!r}"]
    with _config_errors():
        instance, loaded = prepare(spider, settings_file=settings_file, overrides=overrides,
                                   spider_args=spider_args)
        exporters = build_outputs(loaded.settings, outputs,
                                  placeholders={"spider": instance.name})
        crawler = build_crawler(instance, loaded.settings, outputs=exporters,
                                handle_signals=True, on_progress=reporter,
                                progress_interval=reporter.interval)
        with reporter:
            result = crawler.run()
    if stats_path:
        try:
            write_json_atomic(stats_path, result.stats)
        except OSError as exc:
            logging.getLogger(__name__).error("cannot write --stats %s: %s", stats_path, exc)
    return result, [exporter.target for exporter in exporters if exporter.finalised]


def _summary(result: CrawlResult, items_to: str | None, *, to_stderr: bool, quiet: bool,
             log_format: str) -> None:
    """The end-of-crawl summary: a log record (shown on stderr in JSON format, and in a
    log file) and, in text format, a table of the main stats."""
    from ..logs import SUMMARY_LOGGER

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
@click.option("-o", "outputs", metavar="PATH", multiple=True,
              help="Write items to PATH (.jsonl, .csv, .json, then .gz or .zst to compress; "
                   "'-' for JSON Lines on stdout). Repeatable; replaces the [outputs.NAME] "
                   "tables of the settings.")
@click.option("--deadline", metavar="DURATION",
              help="Stop the job after this long (90, 90s, 10m, 2h): exit code 3.")
@click.option("--stats", "stats_path", metavar="PATH", help="Write the final stats as JSON.")
@click.option("--jobdir", metavar="DIR",
              help="Keep the crawl's state in DIR (SQLite): rerun the same command after a "
                   "crash, a deadline or Ctrl-C to continue; items are written at the end, "
                   "each exactly once.")
@cache_option
@_log_options
def crawl(spider: str, spider_args: tuple[str, ...], overrides: tuple[str, ...],
          settings_file: str | None, outputs: tuple[str, ...], deadline: str | None,
          stats_path: str | None, jobdir: str | None, use_cache: bool, log_level: str,
          log_format: str, log_file: str | None, progress_mode: str, quiet: bool) -> None:
    """Run the spider SPIDER (a name in spiders/ or a path to a .py file).

    On a terminal a live line shows pages, items, pages/s, requests in flight, queued,
    failures and open connections; elsewhere (cron, a pipe) a log line every 5 s. A
    summary of the stats follows the crawl. With --cache, every response is kept in the
    HTTP cache (http.cache_dir) and a rerun is answered from it: no request, no
    robots.txt, no delay (-s http.cache_only=true: never the network).

    \b
    Examples:
      scraper crawl demo -o out/items.jsonl -s crawl.per_host=8 --deadline 10m \\
          --stats out/stats.json --log-file crawl.log
      scraper crawl demo --cache -o out/items.jsonl    # twice: the second sends nothing

    \b
    Exit codes:
      0    finished, no request failed beyond crawl.allowed_failures
      1    some requests failed for good (more than crawl.allowed_failures)
      2    bad usage, settings or spider
      3    the deadline was reached (outputs finalised with what was scraped)
      130  interrupted (SIGINT/SIGTERM; with --jobdir, rerun to continue)
    """
    _setup_logging(log_level, log_format, log_file, quiet)
    overrides = with_cache(overrides, use_cache)
    if jobdir is not None:
        overrides = (*overrides, f"frontier.jobdir={jobdir!r}")
    result, written = _run_crawl(
        spider, spider_args=_parse_args(spider_args), overrides=list(overrides),
        outputs=outputs, deadline=deadline, stats_path=stats_path, settings_file=settings_file,
        reporter=_reporter(progress_mode, log_format, quiet, spider))
    _summary(result, ", ".join(written), to_stderr="-" in written, quiet=quiet,
             log_format=log_format)
    sys.exit(result.exit_code)


def _demo_pages(products: int) -> dict[str, Any]:
    from ..demo import build_site

    html = {"Content-Type": "text/html; charset=utf-8"}
    return {path: (200, html, body) for path, body in build_site(products).items()}


def _serve_demo(products: int, port: int) -> NoReturn:
    import signal
    import threading

    from ..testing import Site

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
    """Serve the bundled demo catalogue on loopback and crawl it with the demo spider
    (shipped in the package: it works from any directory).

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
    from ..testing import serve as serve_pages

    _setup_logging(log_level, log_format, log_file, quiet)
    with serve_pages(_demo_pages(products)) as site:
        if not quiet:
            click.echo(f"demo site: {site.url('/')} ({products} products)")
        from ..demo import demo_spider

        result, _ = _run_crawl(demo_spider(), spider_args={"base_url": site.url("/")},
                               overrides=list(overrides), outputs=(output,), deadline=None,
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
    from ..loader import discover
    from ..settings import load

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
    from ..settings import known_keys

    data = loaded.settings.model_dump(mode="json")
    rows = []
    for key in known_keys():
        section, name = key.split(".", 1)
        rows.append((key, data[section][name],
                     _source_label(key, loaded.sources.get(key), spider)))
    for table in ("jobs", "outputs"):
        for name, values in sorted(data.get(table, {}).items()):
            fields = [source for key, source in loaded.sources.items()
                      if key.startswith(f"{table}.{name}.")]  # -s outputs.NAME.KEY=...
            source = fields[-1] if fields else loaded.sources.get(table)
            rows.append((f"{table}.{name}", values, _source_label(table, source, spider)))
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
    from ..api import resolve_spider
    from ..logs import redact
    from ..settings import load

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
    components = _components(loaded)
    if as_json:
        data = {key: {"value": value, "source": source} for key, value, source in rows}
        data["components"] = {"value": components, "source": "chain order"}
        click.echo(json.dumps(data, indent=2))
        return
    shown = [(key, json.dumps(value), source) for key, value, source in rows]
    key_width = max(len(key) for key, _, _ in shown)
    value_width = min(max(len(value) for _, value, _ in shown), 44)
    for key, value, source in shown:
        click.echo(f"{key:<{key_width}}  {value:<{value_width}}  {source}".rstrip())
    click.echo("\ncomponents, in chain order (request side; responses go back up):")
    for number, entry in enumerate(components, 1):
        click.echo(f"  {number}. {entry}")


def _components(loaded: LoadedSettings) -> list[str]:
    """The chain as `scraper settings` shows it: built-ins (marked when off), then the
    middlewares named in settings (a spider's own are added at crawl time)."""
    from ..components import BUILT_INS

    crawl = loaded.settings.crawl
    off = set(crawl.disable)
    if not crawl.obey_robots:
        off.add("robots")
    if not loaded.settings.frontier.incremental:
        off.add("conditional")
    if not loaded.settings.http.auth:
        off.add("auth")
    if not loaded.settings.http.referer:
        off.add("referer")
    if not loaded.settings.http.cookies:
        off.add("cookies")
    if loaded.settings.http.cache == "off":
        off.add("cache")
    entries = [f"{name}{' (off)' if name in off else ''}: {what}" for name, what in BUILT_INS]
    entries += [f"{path}: user middleware (crawl.middlewares)" for path in crawl.middlewares]
    return entries


