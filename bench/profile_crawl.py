"""Profile a crawl of the benchmark site: cProfile in every worker thread, merged.

usage: python bench/profile_crawl.py [START_URL] [--pages N] [--workers N] [--top N]
Prints the top functions by own time (tottime) and by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from catalogue_spider import BenchCatalogue

import scraper
from scraper.engine import Engine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("start", nargs="?", default="http://127.0.0.1:8082/")
    parser.add_argument("--pages", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    original = Engine.work

    def profiled_worker(self: Engine) -> None:
        profile = cProfile.Profile()
        with lock:
            profiles.append(profile)
        profile.runcall(original, self)

    Engine.work = profiled_worker  # type: ignore[method-assign]
    result = scraper.crawl(BenchCatalogue, {
        "crawl.workers": args.workers, "crawl.per_host": args.workers,
        "crawl.max_pages": args.pages, "crawl.obey_robots": False}, start=args.start)
    stats = result.stats
    print(f"pages {stats['pages']}, {stats['pages_per_s']} pages/s under the profiler, "
          f"connections opened {stats['connections_opened']}")
    merged: Any = None
    for profile in profiles:
        if merged is None:
            merged = pstats.Stats(profile)
        else:
            merged.add(profile)
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        merged.stream = out
        merged.sort_stats(order).print_stats(args.top)
        text = out.getvalue()
        print(text[text.index("   ncalls"):])
    return 0


if __name__ == "__main__":
    sys.exit(main())
