"""Peak memory of a frontier holding N queued URLs: the memory frontier at its defaults
(`memory`: past `frontier.memory_queue` requests and `frontier.memory_seen` keys, the
overflow goes to its spill file), the memory frontier without limits (`unbounded`), and
the SQLite store (`sqlite`, `frontier.jobdir`). Each measurement runs in a fresh process.

usage: python bench/frontier_memory.py [--sizes 10000,100000,1000000]
                                       [--backends memory,unbounded,sqlite]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, tempfile
from scraper.request import Request
from scraper.frontier import open_frontier
from scraper.spider import Spider
from scraper.stats import Stats
from scraper.frontier.jobstore import JobStore
from scraper.settings import Layer, build

backend, n = sys.argv[1], int(sys.argv[2])
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
spider = Spider()
spider.name = "bench"
values = {"crawl.per_host": 8, "crawl.obey_robots": False}
if backend == "unbounded":
    values.update({"frontier.memory_queue": 0, "frontier.memory_seen": 0})
settings = build([Layer("bench", values)]).settings
store = None
if backend == "sqlite":
    store = JobStore(tempfile.mkdtemp(prefix="frontier-bench-"), spider)
scheduler = open_frontier(settings, spider, Stats(), [], store)  # as a crawl builds it
started = time.perf_counter()
batch = []
for i in range(n):
    batch.append(Request(f"http://host{i % 100}.example/catalogue/p/{i}.html?ref=list"))
    if len(batch) == 1000:
        scheduler.add(batch)
        batch = []
scheduler.add(batch)
elapsed = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
queued = scheduler.counts()["queued"] if store is None else store.queued()
print(json.dumps({"backend": backend, "urls": n, "queued": queued,
                  "peak_rss_mb": round(peak / 1024, 1),
                  "growth_mb": round((peak - baseline) / 1024, 1),
                  "seconds": round(elapsed, 2)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--backends", default="memory,unbounded,sqlite")
    args = parser.parse_args()
    print(f"{'backend':<9} {'urls':>9} {'queued':>9} {'peak RSS MB':>12} {'growth MB':>10} "
          f"{'s':>7}")
    for backend in args.backends.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            out = subprocess.run([sys.executable, "-c", CHILD, backend, str(size)],
                                 capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{row['backend']:<9} {row['urls']:>9} {row['queued']:>9} "
                  f"{row['peak_rss_mb']:>12} {row['growth_mb']:>10} {row['seconds']:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
