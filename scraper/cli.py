"""The `scraper` command (click). The only place that prints or exits.

Heavy modules are imported inside commands, so `scraper --help` stays fast.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from .crawler import CrawlResult

EXIT_USAGE = 2
SUMMARY_KEYS = (
    "finish_reason", "exit_code", "elapsed_s", "pages", "pages_per_s", "items", "requests",
    "responses", "failed", "retries", "stale_retries", "connections_opened",
    "connections_reused", "bytes_received",
)


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _setup_logging(level: str, quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def _parse_args(pairs: tuple[str, ...]) -> dict[str, str]:
    args = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise click.UsageError(f"-a expects NAME=VALUE with a Python identifier, got {pair!r}")
        args[key.strip()] = value
    return args


def _summary(result: CrawlResult, items_to: str | None, to_stderr: bool) -> None:
    stats = result.stats
    lines = [f"{key:>20}: {stats[key]}" for key in SUMMARY_KEYS if key in stats]
    if stats.get("failed_reasons"):
        lines.append(f"{'failed_reasons':>20}: {stats['failed_reasons']}")
    if stats.get("status_counts"):
        lines.append(f"{'status_counts':>20}: {stats['status_counts']}")
    if items_to:
        lines.append(f"{'items written to':>20}: {items_to}")
    click.echo("\n".join(lines), err=to_stderr)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="scraper")
def main() -> None:
    """A concurrent web-scraping framework built around one shared HTTP connection pool.

    Start with `scraper demo`; write spiders in spiders/ and run them with
    `scraper crawl NAME -o items.jsonl`.
    """


def _run_crawl(spider: str, *, spider_args: dict[str, Any], overrides: list[str],
               output: str | None, deadline: str | None, stats_path: str | None,
               settings_file: str | None) -> CrawlResult:
    from .api import prepare
    from .crawler import Crawler
    from .errors import ConfigError
    from .exporters import Exporter, write_json_atomic

    if deadline is not None:
        overrides = [*overrides, f"crawl.deadline={deadline!r}"]
    try:
        instance, loaded = prepare(spider, settings_file=settings_file, overrides=overrides,
                                   spider_args=spider_args)
        outputs = [Exporter(output)] if output else []
        crawler = Crawler(instance, loaded.settings, outputs=outputs, handle_signals=True)
        result = crawler.run()
    except ConfigError as exc:
        _fail(str(exc))
    if stats_path:
        write_json_atomic(stats_path, result.stats)
    return result


@main.command()
@click.argument("spider")
@click.option("-a", "spider_args", multiple=True, metavar="NAME=VALUE",
              help="Spider argument, passed to the spider's __init__. Repeatable.")
@click.option("-s", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Setting override, e.g. -s crawl.per_host=8. Repeatable.")
@click.option("-o", "output", metavar="PATH",
              help="Write items to PATH (.jsonl, .csv, .json; '-' for JSON Lines on stdout).")
@click.option("--deadline", metavar="DURATION",
              help="Stop the job after this long (90, 90s, 10m, 2h): exit code 3.")
@click.option("--stats", "stats_path", metavar="PATH", help="Write the final stats as JSON.")
@click.option("--settings", "settings_file", metavar="PATH",
              help="Settings file (default: ./settings.toml when present).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False))
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
def crawl(spider: str, spider_args: tuple[str, ...], overrides: tuple[str, ...],
          output: str | None, deadline: str | None, stats_path: str | None,
          settings_file: str | None, log_level: str, quiet: bool) -> None:
    """Run the spider SPIDER (a name in spiders/ or a path to a .py file).

    \b
    Example:
      scraper crawl demo -a base_url=http://127.0.0.1:8000/ -o out/items.jsonl \\
          -s crawl.per_host=8 --deadline 10m --stats out/stats.json

    Exit codes: 0 finished; 1 some requests failed (beyond crawl.allowed_failures);
    2 bad usage, settings or spider; 3 deadline reached; 130 interrupted.
    """
    _setup_logging(log_level, quiet)
    result = _run_crawl(spider, spider_args=_parse_args(spider_args), overrides=list(overrides),
                        output=output, deadline=deadline, stats_path=stats_path,
                        settings_file=settings_file)
    if not quiet:
        _summary(result, output, to_stderr=output == "-")
    sys.exit(result.exit_code)


@main.command()
@click.option("-o", "output", default="out/demo.jsonl", show_default=True, metavar="PATH",
              help="Where the demo's items go.")
@click.option("--products", default=300, show_default=True, type=click.IntRange(1, 100_000),
              help="Products in the generated demo catalogue.")
@click.option("-s", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Setting override, as for crawl.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
def demo(output: str, products: int, overrides: tuple[str, ...], quiet: bool) -> None:
    """Serve the bundled demo catalogue on loopback and crawl it with spiders/demo.py.

    \b
    Example:
      scraper demo -o out/demo.jsonl
    """
    from .demo import DemoServer, build_site

    _setup_logging("info", quiet)
    with DemoServer(build_site(products)) as server:
        click.echo(f"demo site: {server.url} ({products} products)")
        result = _run_crawl("demo", spider_args={"base_url": server.url},
                            overrides=list(overrides), output=output, deadline=None,
                            stats_path=None, settings_file=None)
    _summary(result, output, to_stderr=False)
    sys.exit(result.exit_code)


@main.command(name="list")
@click.option("--settings", "settings_file", metavar="PATH", help="Settings file.")
def list_spiders(settings_file: str | None) -> None:
    """List the spiders found in the spiders directory, with their start URLs."""
    from pathlib import Path

    from .errors import ConfigError
    from .loader import discover
    from .settings import load

    try:
        loaded = load(Path(settings_file) if settings_file else None)
        spiders = discover(loaded.settings.crawl.spiders_dir)
    except ConfigError as exc:
        _fail(str(exc))
    for name, cls in sorted(spiders.items()):
        click.echo(f"{name}\t{' '.join(cls.start_urls)}")
