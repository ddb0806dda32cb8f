#!/usr/bin/env python3
"""Memory while start requests stream in: N URLs read from a file by the start-request
feeder into the memory frontier, while 16 consumer threads take each request and finish
it at once (no network), as a crawl's workers would. Each measurement is a fresh process;
it prints the RSS every tenth of the way, the peak RSS and the time.

The frontier is the crawl's memory frontier at the default settings (its spill file past
`frontier.memory_queue` requests and `frontier.memory_seen` keys); `--set` changes them,
e.g. `--set frontier.memory_seen=0` for an unbounded seen set in memory.

`--eager` reads the whole file into a list first and queues it (what the engine did
before start requests were read lazily), for comparison.

usage: python bench/start_stream.py [--urls 1000000] [--hosts 100] [--eager] [--set K=V]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, threading, time
from scraper import Spider
from scraper.frontier import open_frontier
from scraper.frontier.base import Outcome
from scraper.request import Request
from scraper.settings import Layer, build
from scraper.stats import Stats

path, n, eager = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
overrides = json.loads(sys.argv[4])

class Bench(Spider):
    name = "bench"

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

samples = []
def requests():
    with open(path) as f:
        for i, line in enumerate(f):
            if i % (n // 10) == 0:
                samples.append((i, round(rss_mb(), 1)))
            yield Request(line.rstrip("\n"))

stats = Stats()
settings = build([Layer("bench", {"crawl.per_host": 8, "crawl.obey_robots": False,
                                **overrides})]).settings
frontier = open_frontier(settings, Bench(), stats, [], None)
done = [0]
def consume():
    while (request := frontier.next()) is not None:
        frontier.finish(request, Outcome())
        done[0] += 1
started = time.perf_counter()
if eager:
    everything = list(requests())
    frontier.feeding(True)
    workers = [threading.Thread(target=consume) for _ in range(16)]
    for w in workers: w.start()
    for k in range(0, len(everything), 1000):
        frontier.add(everything[k:k + 1000])
    frontier.feeding(False)
else:
    from scraper.feeder import StartFeeder
    feeder = StartFeeder(requests(), frontier, stats, trust=lambda host: None,
                         allow_hosts=False)
    feeder.start()
    workers = [threading.Thread(target=consume) for _ in range(16)]
    for w in workers: w.start()
for w in workers: w.join()
elapsed = time.perf_counter() - started
frontier.close()
print(json.dumps({"urls": n, "done": done[0], "seen": frontier.counts()["seen"],
                  "seen_spilled": stats.get("seen_spilled"), "spilled": stats.get("spilled"),
                  "peak_rss_mb": round(
                      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "samples": samples, "seconds": round(elapsed, 1)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", type=int, default=1_000_000)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--eager", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a frontier setting, e.g. frontier.memory_seen=0 (repeatable)")
    args = parser.parse_args()
    overrides = {}
    for pair in args.set:
        key, _, value = pair.partition("=")
        overrides[key] = int(value) if value.isdigit() else value
    with tempfile.TemporaryDirectory(prefix="start-stream-") as tmp:
        path = Path(tmp) / "urls.txt"
        with path.open("w") as out:
            for i in range(args.urls):
                out.write(f"http://host{i % args.hosts}.example/catalogue/p/{i}.html?ref=list\n")
        done = subprocess.run([sys.executable, "-c", CHILD, str(path), str(args.urls),
                               "1" if args.eager else "0", json.dumps(overrides)],
                              capture_output=True, text=True)
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
        return 1
    row = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{'eager' if args.eager else 'lazy'}: {row['urls']:,} URLs, {row['done']:,} "
          f"taken and finished, seen {row['seen']:,} ({row['seen_spilled']:,} moved to the "
          f"spill file), peak RSS {row['peak_rss_mb']} MB, {row['seconds']} s")
    print("RSS MB after reading: " + ", ".join(f"{i:,}: {mb}" for i, mb in row["samples"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
