"""The framework against Scrapy on the benchmark kit's site, in the same run.

Both crawl http://127.0.0.1:8082/ (the kit's nginx) with 16 concurrent requests to the
one host, follow every link, and yield one item (URL and title) per page, without
robots.txt, with the same page limit. Scrapy is not a dependency of the project:
`pip install scrapy` first. Reports pages/s and CPU seconds per 1,000 pages of each.

usage: python bench/scrapy_compare.py [--pages N] [--concurrency N] [--repeat K]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

SCRAPY_SPIDER = '''
import scrapy

class Catalogue(scrapy.Spider):
    name = "catalogue"
    start_urls = ["{start}"]

    def parse(self, response):
        yield {{"url": response.url, "title": response.css("title::text").get()}}
        yield from response.follow_all(css="a[href]")
'''


def run(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"failed: {' '.join(command)}")
    return wall, usage.ru_utime + usage.ru_stime


def count_lines(path: Path) -> int:
    with open(path, encoding="utf-8") as handle:
        return sum(1 for _ in handle)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", default="http://127.0.0.1:8082/")
    parser.add_argument("--pages", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    try:
        import scrapy  # noqa: F401
    except ImportError:
        print("Scrapy is not installed: pip install scrapy", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="scrapy-compare-"))
    (work / "catalogue_scrapy.py").write_text(SCRAPY_SPIDER.format(start=args.start))
    n = args.concurrency
    scrapy_command = [
        sys.executable, "-m", "scrapy", "runspider", "catalogue_scrapy.py",
        "-O", "scrapy.jsonl", "-s", f"CONCURRENT_REQUESTS={n}",
        "-s", f"CONCURRENT_REQUESTS_PER_DOMAIN={n}", "-s", "ROBOTSTXT_OBEY=False",
        "-s", f"CLOSESPIDER_PAGECOUNT={args.pages}", "-s", "LOG_LEVEL=INFO",
        "-s", "TELNETCONSOLE_ENABLED=False",
    ]
    ours = [
        sys.executable, "-m", "scraper", "crawl", str(HERE / "catalogue_spider.py"),
        "-a", f"start={args.start}", "-o", "ours.jsonl", "-q",
        "-s", f"crawl.workers={n}", "-s", f"crawl.per_host={n}",
        "-s", f"crawl.max_pages={args.pages}", "-s", "crawl.obey_robots=false",
    ]
    rows = []
    for _ in range(args.repeat):
        for name, command, output in (("scrapy", scrapy_command, "scrapy.jsonl"),
                                      ("scraper", ours, "ours.jsonl")):
            wall, cpu = run(command, work)
            pages = count_lines(work / output)
            rows.append({"crawler": name, "pages": pages, "wall_s": round(wall, 2),
                         "pages_per_s": round(pages / wall, 1),
                         "cpu_s_per_1k": round(cpu / pages * 1000, 3)})
            print(f"{name:<8} pages {pages:>6}  wall {wall:6.2f} s  "
                  f"{pages / wall:7.1f} pages/s  {cpu / pages * 1000:.3f} CPU s/1k pages")
    ratio = statistics.median(
        o["pages_per_s"] / s["pages_per_s"] for s, o in zip(rows[::2], rows[1::2], strict=True))
    print(f"median pages/s ratio scraper/scrapy: {ratio:.2f}")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
