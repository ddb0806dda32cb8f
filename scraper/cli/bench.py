"""`scraper bench`: how fast the framework crawls on this machine, with no setup."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from . import EXIT_FAILURES, EXIT_OK, _config_errors, _setup_logging, main
from .crawling import _reporter


def _report(figures: dict[str, Any]) -> str:
    """The figures as a few aligned lines."""
    f = figures
    served = f["server_connections"] is not None
    site = (f"{f['site_pages']:,} pages served from a separate process at {f['url']}"
            if served else f"crawl of {f['url']}")
    per_1000 = f["cpu_s_per_1000_pages"]
    lines = [
        f"scraper bench: {site}",
        f"  {f['workers']} workers, {f['per_host']} per host, {f['cpus']} CPUs, "
        f"Python {f['python']}",
        f"{'pages':>16}: {f['pages']:,} ({f['items']:,} items, {f['failed']} failed, "
        f"{f['retries']} retries, finish reason {f['finish_reason']})",
        f"{'wall':>16}: {f['wall_s']:.2f} s",
        f"{'pages/s':>16}: {f['pages_per_s']:,.0f}",
        f"{'CPU s/1k pages':>16}: "
        + ("-" if per_1000 is None else f"{per_1000:.3f} (the crawler process)"),
        f"{'peak RSS':>16}: {f['peak_rss_mb']:.1f} MB (the crawler process)",
        f"{'connections':>16}: {f['connections_opened']:,} opened for "
        f"{f['requests']:,} requests ({f['connections_reused']:,} reuses)",
    ]
    if served:
        verdict = "match" if f["server_connections"] == f["connections_opened"] \
            else "MISMATCH"
        server_per_1000 = f["server_cpu_s"] * 1000 / f["pages"] if f["pages"] else 0.0
        lines.append(f"{'server counted':>16}: {f['server_connections']:,} connections "
                     f"({verdict}), {f['server_requests']:,} requests, "
                     f"{server_per_1000:.3f} CPU s/1k pages")
    return "\n".join(lines)


@main.command(short_help="Benchmark the framework on a loopback site; no setup needed.")
@click.option("--pages", default=5000, show_default=True, type=click.IntRange(2, 10_000_000),
              help="Pages on the generated site (the index and PAGES-1 products), all "
                   "crawled.")
@click.option("--workers", default=16, show_default=True, type=click.IntRange(1, 1024),
              help="crawl.workers.")
@click.option("--per-host", type=click.IntRange(1, 1024), default=None,
              help="crawl.per_host: connections to the site (default: --workers).")
@click.option("-s", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Further setting override, as for crawl. Repeatable.")
@click.option("--url", metavar="URL",
              help="Crawl this site instead of serving one (e.g. the benchmark kit's "
                   "nginx); --pages is then unused and the server's counts are not "
                   "shown. Use -s crawl.max_pages=N to bound the crawl.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object with every figure.")
def bench(pages: int, workers: int, per_host: int | None, overrides: tuple[str, ...],
          url: str | None, as_json: bool) -> None:
    """Serve a synthetic catalogue on loopback from a separate process and crawl it.

    The server (standard library, one thread, HTTP/1.1 keep-alive) generates pages of
    about 8 KB with 12 links each, including a fragment and a relative variant of links
    it already has. The crawler visits every page, one item per page, no output file.
    Printed: pages/s, CPU seconds per 1,000 pages and peak RSS of the crawler process,
    connections opened against requests, and the TCP connections the server accepted
    (they must match). No settings file is read; -s adds settings.

    \b
    Examples:
      scraper bench
      scraper bench --pages 20000 --workers 32 --json
      scraper bench --url http://127.0.0.1:8082/ -s crawl.max_pages=5000

    Exit codes as for crawl (1: pages failed; 130: interrupted), and 1 when the
    connection counts disagree.
    """
    from ..benchmark import run_benchmark

    _setup_logging("warning")
    mode = "auto" if not as_json and sys.stderr.isatty() else "off"
    reporter = _reporter(mode, "text", False, "bench")
    if not as_json:
        click.echo(f"crawling {'a ' + str(pages) + '-page loopback site' if url is None else url}"
                   f" with {workers} workers...", err=True)
    with _config_errors(), reporter:
        try:
            figures = run_benchmark(pages, workers, per_host, overrides=overrides, url=url,
                                    handle_signals=True, on_progress=reporter,
                                    progress_interval=reporter.interval)
        except (OSError, RuntimeError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_FAILURES)
    click.echo(json.dumps(figures, indent=2) if as_json else _report(figures))
    mismatch = figures["server_connections"] not in (None, figures["connections_opened"])
    if mismatch and not as_json:
        click.echo("the crawler's connections_opened differs from the server's count",
                   err=True)
    sys.exit(figures["exit_code"] or (EXIT_FAILURES if mismatch else EXIT_OK))
