"""The HTTP cache: a crawl of the demo catalogue without the cache, the first `--cache`
crawl (fetches and stores) and the second (answered from the cache), timed.

    python bench/cache_replay.py                 # 300 products, 3 rounds
    python bench/cache_replay.py --products 3000 --rounds 5

Each round uses a fresh cache directory; the medians are printed, with the requests the
server saw during each run (0 for the replay). Loopback only: the demo site is served by
`scraper.testing` (a threading http.server) in this process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any

import scraper
from scraper.demo import build_site, demo_spider
from scraper.testing import serve


def timed(site: Any, settings: dict[str, Any]) -> tuple[float, int, int]:
    """(seconds, requests the server saw, pages) of one crawl."""
    before = len(site.requests)
    started = time.perf_counter()
    result = scraper.crawl(demo_spider(), settings, base_url=site.url("/"))
    elapsed = time.perf_counter() - started
    assert result.finish_reason == "finished", result.stats
    return elapsed, len(site.requests) - before, result.stats["pages"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    html = {"Content-Type": "text/html; charset=utf-8"}
    pages = {path: (200, html, body) for path, body in build_site(args.products).items()}
    runs: dict[str, list[tuple[float, int, int]]] = {"no cache": [], "first --cache": [],
                                                     "second --cache": [],
                                                     "cache_only": []}
    home = os.getcwd()
    with serve(pages) as site:
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as directory:
                os.chdir(directory)
                try:
                    runs["no cache"].append(timed(site, {}))
                    on = {"http.cache": "replay"}
                    runs["first --cache"].append(timed(site, on))
                    runs["second --cache"].append(timed(site, on))
                    runs["cache_only"].append(timed(site, {**on, "http.cache_only": True}))
                finally:
                    os.chdir(home)
    print(f"demo catalogue, {args.products} products, median of {args.rounds} rounds")
    base = statistics.median(t for t, _, _ in runs["no cache"])
    for name, results in runs.items():
        seconds = statistics.median(t for t, _, _ in results)
        sent, pages = results[-1][1], results[-1][2]
        print(f"{name:>15}: {seconds:7.3f} s  {pages / seconds:8.0f} pages/s  "
              f"{sent:6d} requests sent  ({seconds / base:.2f}x the uncached crawl)")


if __name__ == "__main__":
    main()
