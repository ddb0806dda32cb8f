#!/usr/bin/env python3
"""Scale curves: pages/s against workers and against hosts, and frontier memory.

1. workers: `scraper crawl bench/catalogue_spider.py` against the benchmark kit's nginx
   (http://127.0.0.1:8082/) with 1, 4, 16 and 64 workers (`crawl.per_host` = workers),
   `crawl.max_pages` = --pages.
2. hosts: the same site served by a second nginx of this script's own (its own config,
   pid and log in a temporary directory, stopped at the end) on 1, 10 and 100 loopback
   ports from --base-port, crawled with `bench/multihost_spider.py`, which moves each
   link to the port of its page number modulo the number of hosts.
3. frontier: peak RSS with 10,000 / 100,000 / 1,000,000 queued URLs
   (`bench/frontier_memory.py`).

Every crawl is a subprocess `python -m scraper crawl ... --stats PATH`; the table shows
its own pages/s (from the stats, interpreter start-up excluded), CPU seconds per 1,000
pages and peak RSS (of the child), `connections_opened`, and the TCP connections nginx
counted (distinct `$connection` serials in the access log).

usage:
  python bench/scale_curves.py [--pages 5000] [--workers 1,4,16,64] [--hosts 1,10,100]
         [--host-workers 16] [--sizes 10000,100000,1000000] [--backends memory,sqlite]
         [--only workers,hosts,frontier] [--set SECTION.KEY=VALUE]... [--base-port 18100]
         [--json PATH] [--kit DIR] [--no-start]

Standard library only (nginx for the servers). Exit status 0, or 1 when a run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from crawl_vs_reference import (  # noqa: E402
    bench_dir,
    default_kit,
    read_access_log,
    run_measured,
    serve,
    wait_for_port,
)

REPO = BENCH.parent
SPIDER = BENCH / "catalogue_spider.py"
MULTIHOST_SPIDER = BENCH / "multihost_spider.py"
PLAIN_URL = "http://127.0.0.1:8082/"
CURVES = ("workers", "hosts", "frontier")


def ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def crawl(label: str, spider_args: list[str], settings: list[str], log: Path,
          workdir: Path, rotate: Any) -> dict[str, Any]:
    """One measured `scraper crawl` subprocess; its row of figures."""
    out = workdir / f"{label}.jsonl"
    stats_path = workdir / f"{label}.stats.json"
    command = [sys.executable, "-m", "scraper", "crawl", *spider_args]
    for setting in settings:
        command += ["-s", setting]
    command += ["-o", str(out), "--stats", str(stats_path), "-q"]
    rotate()
    stderr = workdir / f"{label}.stderr"
    code, wall, cpu, rss = run_measured(command, cwd=REPO, stdout=workdir / f"{label}.stdout",
                                        stderr=stderr)
    requests, connections, statuses = read_access_log(log)
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    pages = stats.get("pages", 0)
    row = {
        "label": label, "exit_code": code, "pages": pages,
        "pages_per_s": stats.get("pages_per_s"), "wall_s": round(wall, 3),
        "cpu_s_per_1000_pages": round(cpu * 1000 / pages, 3) if pages else None,
        "peak_rss_mb": round(rss, 1),
        "connections_opened": stats.get("connections_opened"),
        "server_connections": connections, "server_requests": requests,
        "requests": stats.get("requests"), "failed": stats.get("failed"),
        "retries": stats.get("retries"), "stale_retries": stats.get("stale_retries"),
        "server_statuses": statuses, "command": command,
    }
    if code != 0:
        tail = stderr.read_text(errors="replace").splitlines()[-20:]
        print(f"{label}: exit code {code}\n" + "\n".join(f"  | {line}" for line in tail),
              file=sys.stderr)
    return row


def print_table(title: str, key: str, rows: list[dict[str, Any]]) -> None:
    print(title)
    columns = (key, "pages", "pages/s", "CPU s/1k pages", "peak RSS MB", "conns opened",
               "TCP conns (server)", "requests", "failed")
    lines = [columns]
    for r in rows:
        lines.append((str(r[key]), f"{r['pages']:,}", f"{r['pages_per_s'] or 0:,.0f}",
                      "-" if r["cpu_s_per_1000_pages"] is None
                      else f"{r['cpu_s_per_1000_pages']:.3f}",
                      f"{r['peak_rss_mb']:.1f}", str(r["connections_opened"]),
                      str(r["server_connections"]), f"{r['requests'] or 0:,}",
                      str(r["failed"])))
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    for n, line in enumerate(lines):
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * width for width in widths))
    print()


# -- the workers curve ------------------------------------------------------------------------


def workers_curve(args: argparse.Namespace, kit: Path, workdir: Path) -> list[dict[str, Any]]:
    log = bench_dir() / "site.log"
    rows = []
    for workers in args.workers:
        row = crawl(f"workers-{workers}", [str(SPIDER), "-a", f"start={PLAIN_URL}"],
                    [f"crawl.workers={workers}", f"crawl.per_host={workers}",
                     f"crawl.max_pages={args.pages}", *args.extra],
                    log, workdir, lambda: serve(kit, "rotate"))
        row["workers"] = workers
        rows.append(row)
    return rows


# -- the hosts curve --------------------------------------------------------------------------


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class MultiPortNginx:
    """nginx serving `site` on `count` loopback ports from `base_port`, in `directory`."""

    def __init__(self, site: Path, base_port: int, count: int, directory: Path) -> None:
        self.site, self.base_port, self.count, self.dir = site, base_port, count, directory
        self.conf = directory / "nginx.conf"
        self.pid = directory / "nginx.pid"
        self.log = directory / "hosts.log"

    def start(self) -> None:
        busy = [p for p in range(self.base_port, self.base_port + self.count)
                if not port_free(p)]
        if busy:
            sys.exit(f"error: ports in use: {busy[:5]}...; choose another --base-port")
        servers = "\n".join(
            f"  server {{ listen 127.0.0.1:{port}; root {self.site}; "
            f"access_log {self.log} conn; }}"
            for port in range(self.base_port, self.base_port + self.count))
        self.conf.write_text(f"""worker_processes 1;
pid {self.pid};
error_log {self.dir}/error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  log_format conn '$connection $connection_requests $status $server_port $request_uri';
  keepalive_requests 1000000;
  client_body_temp_path {self.dir}/body;
  proxy_temp_path {self.dir}/proxy;
  fastcgi_temp_path {self.dir}/fastcgi;
  uwsgi_temp_path {self.dir}/uwsgi;
  scgi_temp_path {self.dir}/scgi;
{servers}
}}
""")
        subprocess.run(["nginx", "-p", str(self.dir), "-e", str(self.dir / "error.log"),
                        "-c", str(self.conf)], check=True)
        for port in (self.base_port, self.base_port + self.count - 1):
            wait_for_port(f"http://127.0.0.1:{port}/")

    def rotate(self) -> None:
        if self.log.exists():
            self.log.write_bytes(b"")
        if self.pid.exists():  # reopen the (now empty) log file
            os.kill(int(self.pid.read_text()), 10)  # SIGUSR1

    def stop(self) -> None:
        if not self.pid.exists():
            return
        pid = int(self.pid.read_text())
        try:
            os.kill(pid, 15)  # SIGTERM: fast shutdown
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def hosts_curve(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    site = Path(os.environ.get("SITE") or bench_dir() / "site20k")
    if not (site / "index.html").is_file():
        sys.exit(f"error: no site in {site}; run serve.sh start first")
    rows = []
    nginx_dir = Path(tempfile.mkdtemp(prefix="scale-hosts-nginx-"))
    nginx = MultiPortNginx(site, args.base_port, max(args.hosts), nginx_dir)
    try:
        nginx.start()
        workers = args.host_workers
        for hosts in args.hosts:
            row = crawl(f"hosts-{hosts}",
                        [str(MULTIHOST_SPIDER), "-a", f"base_port={args.base_port}",
                         "-a", f"hosts={hosts}"],
                        [f"crawl.workers={workers}", f"crawl.per_host={workers}",
                         f"crawl.max_pages={args.pages}", *args.extra],
                        nginx.log, workdir, nginx.rotate)
            row["hosts"] = hosts
            row["ports_hit"] = len({line.split()[3] for line in nginx.log.read_text()
                                    .splitlines() if len(line.split()) > 3})
            rows.append(row)
    finally:
        nginx.stop()
        shutil.rmtree(nginx_dir, ignore_errors=True)
    return rows


# -- the frontier memory ----------------------------------------------------------------------


def frontier_curve(args: argparse.Namespace) -> list[dict[str, Any]]:
    result = subprocess.run([sys.executable, str(BENCH / "frontier_memory.py"),
                             "--sizes", ",".join(map(str, args.sizes)),
                             "--backends", args.backends],
                            cwd=REPO, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        return []
    rows = []
    for line in result.stdout.splitlines()[1:]:
        backend, urls, queued, peak, growth, seconds = line.split()
        rows.append({"backend": backend, "urls": int(urls), "queued": int(queued),
                     "peak_rss_mb": float(peak), "growth_mb": float(growth),
                     "seconds": float(seconds)})
    return rows


def print_frontier(rows: list[dict[str, Any]]) -> None:
    print("frontier memory (bench/frontier_memory.py)")
    print(f"{'backend':<8} {'queued URLs':>12} {'peak RSS MB':>12} {'growth MB':>10} "
          f"{'bytes/URL':>10} {'s':>7}")
    print(f"{'-' * 8} {'-' * 12} {'-' * 12} {'-' * 10} {'-' * 10} {'-' * 7}")
    for r in rows:
        per_url = r["growth_mb"] * 2**20 / r["urls"] if r["urls"] else 0
        print(f"{r['backend']:<8} {r['queued']:>12,} {r['peak_rss_mb']:>12.1f} "
              f"{r['growth_mb']:>10.1f} {per_url:>10.0f} {r['seconds']:>7.2f}")
    print()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=5000, help="crawl.max_pages per run")
    parser.add_argument("--workers", type=ints, default=[1, 4, 16, 64],
                        help="the workers curve's points (per_host = workers)")
    parser.add_argument("--hosts", type=ints, default=[1, 10, 100],
                        help="the hosts curve's points")
    parser.add_argument("--host-workers", type=int, default=16,
                        help="workers (and per_host) for the hosts curve (default 16)")
    parser.add_argument("--sizes", type=ints, default=[10_000, 100_000, 1_000_000],
                        help="queued URLs for the frontier memory")
    parser.add_argument("--backends", default="memory,sqlite",
                        help="frontier backends (memory, sqlite)")
    parser.add_argument("--only", default=",".join(CURVES),
                        help="the curves to run, of workers,hosts,frontier")
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="extra crawl setting; repeatable")
    parser.add_argument("--base-port", type=int, default=18100,
                        help="first port of the hosts curve's nginx (default 18100)")
    parser.add_argument("--json", type=Path, default=None, help="write every figure as JSON")
    parser.add_argument("--kit", type=Path, default=None, help="benchmark kit directory")
    parser.add_argument("--no-start", action="store_true",
                        help="do not run `serve.sh start` (the kit's nginx must be up)")
    args = parser.parse_args(argv)
    args.only = [c for c in args.only.split(",") if c]
    unknown = set(args.only) - set(CURVES)
    if unknown:
        parser.error(f"--only: unknown curve(s) {sorted(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kit = (args.kit or default_kit()).resolve()
    started = datetime.now().astimezone()
    print(f"scale curves, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
          f"{started:%Y-%m-%d %H:%M}, load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    report: dict[str, Any] = {"started": started.isoformat(timespec="seconds"),
                              "cpus": os.cpu_count(), "pages": args.pages}
    workdir = Path(tempfile.mkdtemp(prefix="scale-curves-"))
    try:
        if "workers" in args.only or "hosts" in args.only:
            if not (kit / "serve.sh").is_file():
                sys.exit(f"error: {kit / 'serve.sh'} not found; give --kit")
            if not args.no_start:
                serve(kit, "start")
            wait_for_port(PLAIN_URL)
        if "workers" in args.only:
            rows = workers_curve(args, kit, workdir)
            report["workers"] = rows
            print_table(f"pages/s against workers ({PLAIN_URL}, per_host = workers, "
                        f"{args.pages:,} pages)", "workers", rows)
        if "hosts" in args.only:
            rows = hosts_curve(args, workdir)
            report["hosts"] = rows
            print_table(f"pages/s against hosts (ports {args.base_port}+, "
                        f"{args.host_workers} workers, per_host = {args.host_workers}, "
                        f"{args.pages:,} pages)", "hosts", rows)
        if "frontier" in args.only:
            rows = frontier_curve(args)
            report["frontier"] = rows
            print_frontier(rows)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    failed = any(r["exit_code"] != 0 for curve in ("workers", "hosts")
                 for r in report.get(curve, []))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
