#!/usr/bin/env python3
"""Broad crawl: many host names against one host, same pages, same run, under an
open-file limit.

Crawls `--hosts` host names x `--pages` pages (`bench/broad_spider.py`, start requests
only, every host name sent to the benchmark kit's nginx on 127.0.0.1:8082 through
`http.resolve`), then the same number of pages on one host, each crawl a subprocess
whose open-file limit (soft and hard) is `--nofile` (default 1,024). Prints, for each:
pages, failed, pages/s (the crawl's own, start-up excluded), CPU s per 1,000 pages, peak
RSS, `connections_opened`, the TCP connections nginx counted, connections per host,
`connections_evicted`, `hosts_active`, and the ratio of pages/s many hosts / one host.

usage: python bench/broad_crawl.py [--hosts 10000] [--pages 4] [--workers 32]
       [--per-host 4] [--nofile 1024] [--repeat 1] [--set SECTION.KEY=VALUE]... [--no-start]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from crawl_vs_reference import (  # noqa: E402
    bench_dir,
    default_kit,
    read_access_log,
    run_measured,
    serve,
)

REPO = BENCH.parent
SPIDER = BENCH / "broad_spider.py"
LIMITED = ("import resource, runpy, sys; "
           "n = int(sys.argv.pop(1)); resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
           "sys.argv[0] = 'scraper'; runpy.run_module('scraper', run_name='__main__')")


def crawl(label: str, args: argparse.Namespace, one_host: bool, workdir: Path) -> dict:
    stats_path = workdir / f"{label}.stats.json"
    command = [sys.executable, "-c", LIMITED, str(args.nofile), "crawl", str(SPIDER),
               "-a", f"hosts={args.hosts}", "-a", f"pages={args.pages}",
               "-a", f"one_host={int(one_host)}",
               "-s", 'http.resolve={"*.bench.test" = "127.0.0.1"}',
               "-s", f"crawl.workers={args.workers}", "-s", f"crawl.per_host={args.per_host}",
               "-s", "crawl.obey_robots=false",
               "--stats", str(stats_path), "-q"]
    for setting in args.set:
        command += ["-s", setting]
    serve(args.kit, "rotate")
    code, _wall, cpu, rss = run_measured(command, cwd=REPO, stdout=workdir / f"{label}.out",
                                        stderr=workdir / f"{label}.err")
    requests, connections, _ = read_access_log(bench_dir() / "site.log")
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    if not stats:
        print((workdir / f"{label}.err").read_text()[-2000:], file=sys.stderr)
    hosts = 1 if one_host else args.hosts
    return {"run": label, "exit": code, "pages": stats.get("pages", 0),
            "failed": stats.get("failed", -1), "pages_per_s": stats.get("pages_per_s", 0.0),
            "cpu_s_per_1k": round(cpu / max(stats.get("pages", 0), 1) * 1000, 3),
            "peak_rss_mb": round(rss, 1), "opened": stats.get("connections_opened", 0),
            "server_conns": connections, "server_requests": requests,
            "conns_per_host": round(connections / hosts, 3),
            "evicted": stats.get("connections_evicted", 0),
            "hosts_active": stats.get("hosts_active", 0),
            "failed_reasons": stats.get("failed_reasons", {})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--per-host", type=int, default=4)
    parser.add_argument("--nofile", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--kit", type=Path, default=default_kit())
    parser.add_argument("--no-start", action="store_true")
    args = parser.parse_args()
    if not args.no_start:
        serve(args.kit, "start")
    rows = []
    with tempfile.TemporaryDirectory(prefix="broad-bench-") as tmp:
        for k in range(args.repeat):
            rows.append(crawl(f"many#{k + 1}", args, False, Path(tmp)))
            rows.append(crawl(f"one#{k + 1}", args, True, Path(tmp)))
    columns = ["run", "pages", "server_requests", "failed", "pages_per_s", "cpu_s_per_1k",
               "peak_rss_mb", "opened", "server_conns", "conns_per_host", "evicted", "hosts_active"]
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(row[c]) for c in columns))
    for k in range(args.repeat):
        many, one = rows[2 * k], rows[2 * k + 1]
        ratio = many["pages_per_s"] / one["pages_per_s"] if one["pages_per_s"] else 0.0
        print(f"repeat {k + 1}: pages/s many hosts / one host = {ratio:.3f}; failed "
              f"{many['failed']} {many['failed_reasons']}")
    return 0 if all(row["exit"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
