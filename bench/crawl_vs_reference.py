#!/usr/bin/env python3
"""Crawl the benchmark kit's synthetic site with the framework and with the reference crawler.

The reference (`minimal_pool.py` in the benchmark kit) is the framework's design at its
barest: a queue, N threads, one shared urllib3 PoolManager, selectolax, no politeness, no
retries, no robots. Its pages/s is the ceiling; the framework's pages/s is reported as a
ratio against it, measured in the same invocation, with the same thread count, against the
same nginx. Runs alternate (reference, framework) `--repeat` times.

For every run: pages (lines in the output JSON Lines file), wall time (perf_counter around
the subprocess), CPU seconds (user + sys of the child, from RUSAGE_CHILDREN), peak RSS (the
child's own ru_maxrss, from os.wait4), and what nginx saw: requests (access-log lines) and
TCP connections (distinct `$connection` serials in column 1 of the access log). For the
framework, its stats' `connections_opened` must equal the connections nginx counted.

usage:
  python bench/crawl_vs_reference.py [--target plain|tls|stale] [--threads 16] [--limit N]
         [--repeat K] [--delay S] [--set SECTION.KEY=VALUE]... [--json PATH]
         [--kit DIR] [--no-start] [--workdir DIR]

Standard library only. Exit status: 0 when every run succeeded, 1 when a crawl command
failed, 2 on bad usage or when the benchmark kit or server cannot be used.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SPIDER = REPO / "bench" / "catalogue_spider.py"

# target -> (start URL, access log file name in the bench directory)
TARGETS: dict[str, tuple[str, str]] = {
    "plain": ("http://127.0.0.1:8082/", "site.log"),
    "tls": ("https://127.0.0.1:8443/", "tls.log"),
    "stale": ("http://127.0.0.1:8083/", "stale.log"),
}
STDERR_TAIL = 20  # lines of a failed command's stderr shown


@dataclass
class Run:
    """The figures of one crawl run."""

    name: str  # "reference" or "framework"
    index: int  # repeat number, from 1
    command: list[str]
    exit_code: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    pages: int
    server_requests: int
    server_connections: int
    server_statuses: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] | None = None  # the framework's --stats JSON

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_s_per_1000_pages(self) -> float | None:
        return self.cpu_s * 1000 / self.pages if self.pages else None

    @property
    def connections_match(self) -> bool | None:
        """Framework only: stats' connections_opened equals the connections nginx counted."""
        if self.stats is None:
            return None
        return self.stats.get("connections_opened") == self.server_connections

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["pages_per_s"] = round(self.pages_per_s, 1)
        per_1000 = self.cpu_s_per_1000_pages
        data["cpu_s_per_1000_pages"] = None if per_1000 is None else round(per_1000, 3)
        data["connections_match"] = self.connections_match
        return data


def default_kit() -> Path:
    env = os.environ.get("SCRAPER_BENCH_KIT")
    return Path(env) if env else REPO.parent / "shared" / "bench"


def bench_dir() -> Path:
    """Where serve.sh keeps its logs: $BENCH_DIR, else ${TMPDIR:-/tmp}/scraper-bench."""
    env = os.environ.get("BENCH_DIR")
    return Path(env) if env else Path(os.environ.get("TMPDIR") or "/tmp") / "scraper-bench"


def serve(kit: Path, command: str) -> None:
    result = subprocess.run(["bash", str(kit / "serve.sh"), command],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"error: serve.sh {command} failed ({result.returncode}):\n"
                 f"{result.stderr.strip()}")


def wait_for_port(url: str, timeout: float = 5.0) -> None:
    host_port = url.split("/")[2]
    host, _, port = host_port.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return
        except OSError as exc:
            if time.monotonic() >= deadline:
                sys.exit(f"error: nothing listens on {host_port} ({exc}); start the benchmark "
                         "server (serve.sh start) or drop --no-start")
            time.sleep(0.1)


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for _ in f)


def read_access_log(path: Path) -> tuple[int, int, dict[str, int]]:
    """(requests, distinct connection serials, status counts) from a serve.sh access log.

    Log format: `$connection $connection_requests $status $request_uri`.
    """
    requests = 0
    connections: set[str] = set()
    statuses: dict[str, int] = {}
    if path.exists():
        with path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split()
                if not fields:
                    continue
                requests += 1
                connections.add(fields[0])
                if len(fields) > 2:
                    statuses[fields[2]] = statuses.get(fields[2], 0) + 1
    return requests, len(connections), dict(sorted(statuses.items()))


def run_measured(command: list[str], *, cwd: Path, stdout: Path, stderr: Path
                 ) -> tuple[int, float, float, float]:
    """Run `command`; return (exit code, wall s, CPU s, peak RSS MB) of that child alone."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with stdout.open("wb") as out, stderr.open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # reaped by os.wait4; tell Popen so it does not wait again
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak_rss_mb = usage.ru_maxrss / 1024  # Linux: kilobytes
    return code, wall, cpu, peak_rss_mb


def reference_command(kit: Path, url: str, threads: int, out: Path,
                      limit: int | None) -> list[str]:
    command = [sys.executable, str(kit / "minimal_pool.py"), url, str(threads), str(out)]
    if limit is not None:
        # argv: START THREADS OUT [fresh] [LIMIT]; anything but "fresh" keeps the shared pool
        command += ["shared", str(limit)]
    return command


def framework_command(url: str, target: str, threads: int, out: Path, stats: Path,
                      limit: int | None, delay: str | None, extra: list[str]) -> list[str]:
    command = [sys.executable, "-m", "scraper", "crawl", str(SPIDER), "-a", f"start={url}",
               "-s", f"crawl.workers={threads}", "-s", f"crawl.per_host={threads}"]
    if target == "tls":
        command += ["-s", "http.verify_tls=false"]
    if limit is not None:
        command += ["-s", f"crawl.max_pages={limit}"]
    if delay is not None:
        command += ["-s", f"crawl.delay={delay}"]
    for setting in extra:
        command += ["-s", setting]
    return [*command, "-o", str(out), "--stats", str(stats), "-q"]


def one_run(name: str, index: int, command: list[str], *, out: Path, stats_path: Path | None,
            log: Path, kit: Path, workdir: Path) -> Run:
    serve(kit, "rotate")
    for path in (out, stats_path):
        if path is not None:
            path.unlink(missing_ok=True)
    stdout = workdir / f"{name}-{index}.stdout"
    stderr = workdir / f"{name}-{index}.stderr"
    code, wall, cpu, rss = run_measured(command, cwd=REPO, stdout=stdout, stderr=stderr)
    requests, connections, statuses = read_access_log(log)
    stats = None
    if stats_path is not None and stats_path.exists():
        stats = json.loads(stats_path.read_text())
    run = Run(name=name, index=index, command=command, exit_code=code, wall_s=round(wall, 3),
              cpu_s=round(cpu, 3), peak_rss_mb=round(rss, 1), pages=count_lines(out),
              server_requests=requests, server_connections=connections,
              server_statuses=statuses, stats=stats)
    if code != 0:
        tail = stderr.read_text(errors="replace").splitlines()[-STDERR_TAIL:]
        print(f"{name} #{index} exited with {code}; command: {' '.join(command)}",
              file=sys.stderr)
        print("\n".join(f"  | {line}" for line in tail), file=sys.stderr)
    return run


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_report(runs: list[Run], ratios: list[float], header: str) -> None:
    print(header)
    columns = ("run", "pages", "wall s", "pages/s", "CPU s/1k pages", "peak RSS MB",
               "TCP conns", "srv requests")
    rows = [columns]
    for r in runs:
        rows.append((f"{r.name} #{r.index}", f"{r.pages:,}", fmt(r.wall_s, 2),
                     fmt(r.pages_per_s, 0), fmt(r.cpu_s_per_1000_pages, 3),
                     fmt(r.peak_rss_mb, 1), f"{r.server_connections:,}",
                     f"{r.server_requests:,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                        strict=True)]
        print("  ".join(cells))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print()
    for i, ratio in enumerate(ratios, 1):
        print(f"ratio framework/reference pages/s, repeat {i}: {ratio:.3f}")
    if ratios:
        print(f"median ratio over {len(ratios)} repeat(s): {statistics.median(ratios):.3f}")
        print()
    for r in runs:
        if r.stats is None:
            if r.name == "framework":
                print(f"framework #{r.index}: no stats file written")
            continue
        s = r.stats
        verdict = "match" if r.connections_match else "MISMATCH"
        print(f"framework #{r.index}: connections_opened={s.get('connections_opened')} "
              f"server-counted={r.server_connections} -> {verdict}; "
              f"connections_reused={s.get('connections_reused')} "
              f"requests={s.get('requests')} (server {r.server_requests}) "
              f"pages={s.get('pages')} failed={s.get('failed')} retries={s.get('retries')} "
              f"stale_retries={s.get('stale_retries')} "
              f"finish_reason={s.get('finish_reason')} "
              f"own pages_per_s={s.get('pages_per_s')}")
        if s.get("failed_reasons"):
            print(f"  failed_reasons: {s['failed_reasons']}")
    for r in runs:
        odd = {k: v for k, v in r.server_statuses.items() if not k.startswith("2")}
        if odd:
            print(f"{r.name} #{r.index}: non-2xx statuses seen by the server: {odd}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Framework vs reference crawler on the benchmark kit's synthetic site.")
    parser.add_argument("--kit", type=Path, default=None,
                        help="benchmark kit directory (default: $SCRAPER_BENCH_KIT, "
                             "else <repo>/../shared/bench)")
    parser.add_argument("--no-start", action="store_true",
                        help="do not run `serve.sh start`; the server must already be up")
    parser.add_argument("--target", choices=sorted(TARGETS), default="plain",
                        help="plain :8082, tls :8443, stale :8083 (keep-alive 1 s)")
    parser.add_argument("--threads", type=int, default=16,
                        help="threads for both; the framework gets crawl.workers and "
                             "crawl.per_host = N (default 16)")
    parser.add_argument("--limit", type=int, default=None,
                        help="stop after N pages (reference LIMIT, framework crawl.max_pages)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="alternate reference and framework K times (default 1)")
    parser.add_argument("--delay", default=None,
                        help="framework only: -s crawl.delay=VALUE (default: not set)")
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="extra framework setting override (-s); repeatable")
    parser.add_argument("--json", type=Path, default=None, help="write all figures as JSON")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep outputs, stats and stderr here (default: a temporary "
                             "directory, removed at the end)")
    args = parser.parse_args(argv)
    for name in ("threads", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    for setting in args.extra:
        if "=" not in setting:
            parser.error(f"--set expects SECTION.KEY=VALUE, got {setting!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kit: Path = (args.kit or default_kit()).resolve()
    for needed in ("serve.sh", "minimal_pool.py"):
        if not (kit / needed).is_file():
            print(f"error: {kit / needed} not found; give the kit with --kit or "
                  "SCRAPER_BENCH_KIT", file=sys.stderr)
            return 2
    if not SPIDER.is_file():
        print(f"error: {SPIDER} not found", file=sys.stderr)
        return 2
    url, log_name = TARGETS[args.target]
    log = bench_dir() / log_name
    if not args.no_start:
        serve(kit, "start")
    wait_for_port(url)

    temp = None
    if args.workdir is None:
        temp = tempfile.mkdtemp(prefix="crawl-vs-reference-")
        workdir = Path(temp)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)

    started = datetime.now().astimezone()
    runs: list[Run] = []
    ratios: list[float] = []
    failed = False
    try:
        for i in range(1, args.repeat + 1):
            ref_out = workdir / f"reference-{i}.jsonl"
            ref = one_run("reference", i,
                          reference_command(kit, url, args.threads, ref_out, args.limit),
                          out=ref_out, stats_path=None, log=log, kit=kit, workdir=workdir)
            runs.append(ref)
            if ref.exit_code != 0:
                failed = True
                break
            fw_out = workdir / f"framework-{i}.jsonl"
            fw_stats = workdir / f"framework-{i}.stats.json"
            fw = one_run("framework", i,
                         framework_command(url, args.target, args.threads, fw_out, fw_stats,
                                           args.limit, args.delay, args.extra),
                         out=fw_out, stats_path=fw_stats, log=log, kit=kit, workdir=workdir)
            runs.append(fw)
            if fw.exit_code == 0 and ref.pages_per_s > 0:
                ratios.append(fw.pages_per_s / ref.pages_per_s)
            if fw.exit_code != 0:
                failed = True
                break
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)

    header = (f"target {args.target} ({url}), threads {args.threads}, "
              f"limit {args.limit or 'none'}, repeat {args.repeat}, "
              f"{os.cpu_count()} CPUs, {started:%Y-%m-%d %H:%M}")
    print_report(runs, ratios, header)
    mismatch = any(r.connections_match is False for r in runs)
    if args.json is not None:
        report = {
            "started": started.isoformat(timespec="seconds"),
            "target": args.target,
            "url": url,
            "threads": args.threads,
            "limit": args.limit,
            "repeat": args.repeat,
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "runs": [r.to_json() for r in runs],
            "ratios": [round(x, 4) for x in ratios],
            "median_ratio": round(statistics.median(ratios), 4) if ratios else None,
            "connections_mismatch": mismatch,
            "failed": failed,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if failed:
        print("error: a crawl command failed (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
