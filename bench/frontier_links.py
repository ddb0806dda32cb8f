#!/usr/bin/env python3
"""links/s of the frontier's own per-link work: admission (canonical URL, trap, offsite,
depth) and the memory backing's dedup (`MemoryBacking.admit`), for links as a crawl's
callbacks yield them (half new, half already seen; 10 allowed domains, a tenth offsite).
Best of 5 runs of 200,000 links; run it with PYTHONPATH set to another tree to compare.

usage: python bench/frontier_links.py
"""

from __future__ import annotations

import time

from scraper.frontier.admission import Admission
from scraper.frontier.base import FrontierOptions
from scraper.frontier.local import MemoryBacking
from scraper.request import Request
from scraper.stats import Stats

N = 200_000


def main() -> None:
    domains = [f"site{i}.example" for i in range(10)]
    urls = []
    for i in range(N):
        host = f"www.site{i % 10}.example" if i % 10 else f"other{i}.example"
        urls.append(f"http://{host}/docs/section{i % 500}/page{i // 2}.html")
    best = float("inf")
    for _ in range(5):
        options = FrontierOptions(per_host=8, allowed_domains=frozenset(domains))
        admission, backing = Admission(options, Stats()), MemoryBacking()
        requests = [Request(url) for url in urls]
        started = time.perf_counter()
        for k in range(0, N, 100):
            backing.admit(admission.admit(requests[k:k + 100]), 0)
        best = min(best, time.perf_counter() - started)
    print(f"admission + dedup: {N / best:,.0f} links/s, {best / N * 1e6:.2f} us/link")


if __name__ == "__main__":
    main()
