#!/usr/bin/env python3
"""Throughput of one crawl shared by 1, 2 and 4 processes through Redis, against nginx.

The benchmark starts its own redis-server on a free loopback port (and stops it at the
end) and runs, for every repeat, against the benchmark kit's synthetic catalogue:

- `memory`: the baseline, one `scraper crawl` process with the in-memory frontier;
- `redis xP` for P in `--processes` (default 1 2 4): P `scraper crawl` processes started
  together, sharing one crawl (`frontier.backend=redis://...`, a fresh `frontier.name`
  per run, FLUSHDB before the run).

The site. By default the kit's nginx on http://127.0.0.1:8082/ (`serve.sh start`, and
`serve.sh rotate` before each run). That server and its log are shared by everything on
the machine: another client's requests, or another `serve.sh rotate`, during a run land
in (or empty) the run's log. The benchmark detects it (requests outside the page set,
or nginx counting other than the crawl processes' own `requests` stats) and says so.
`--private-nginx` instead starts an nginx of its own on a free loopback port, configured
as serve.sh's :8082 (one worker, keep-alive 75 s, unlimited requests per connection, the
same log format), serving the same site directory, with its log in the work directory.

The page set. `crawl.max_pages` is a per-process budget, so it cannot bound a shared
crawl. Every run crawls the same spider (written to the work directory), which starts at
/p/0.html and follows only links to /p/{i}.html with i < --pages. Page i of the site
links to page i+1, so exactly the N pages /p/0.html .. /p/{N-1}.html are reachable: every
configuration fetches the same N pages, each once, and the crawl ends by itself when the
frontier is empty (for Redis: nothing queued and no lease held in any process).

Settings of every crawl process: `crawl.workers = --workers` (default 8, per process, so
8, 16 and 32 workers in all for 1, 2 and 4 processes), `crawl.per_host = --per-host`
(default 16 in every run: Redis enforces it for the whole crawl, so the politeness
limit, at most 16 requests in flight to the site, is the same in all runs; with one
process of 8 workers it does not bind), `crawl.obey_robots = false`. The processes run
in the work directory, so no ./settings.toml is read.

For every run: wall time (the first process's start to the last process's exit,
interpreter start-up included), pages (lines in the processes' JSON Lines outputs, one
item per page), pages/s = pages / wall, CPU seconds per 1,000 pages of all crawl
processes (user + sys, os.wait4) and, separately, of redis-server (INFO cpu) and of
nginx's worker (/proc), the largest peak RSS of one crawl process, what nginx saw
(requests, distinct `$connection` serials = TCP connections, requests for a page already
requested = duplicates, requests outside the page set), and Redis round trips: `evalsha`
+ `eval` calls (INFO commandstats) between the start and the end of the run, which are
the framework's script calls (a page's step, renew, reap), and all commands Redis
processed (INFO stats total_commands_processed, this script's INFO excluded; Redis
counts the commands a script runs too), each divided by pages. The 1-minute load average
at the end of each run is shown: other work on the machine slows a run down.

usage:
  python bench/redis_scale.py [--pages 5000] [--workers 8] [--per-host 16]
         [--processes 1 2 4] [--repeat 1] [--no-memory] [--private-nginx]
         [--timeout 600] [--json PATH] [--workdir DIR] [--kit DIR] [--no-start]

Standard library and the project (its Redis client) only. Exit status: 0 when every run
crawled exactly the N pages, each fetched once, and nginx's figures are the run's own; 1
when a crawl failed, hung (--timeout) or a check failed; 2 on bad usage or when nginx or
redis-server cannot be used.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scraper.frontier.shared import connect, status

if TYPE_CHECKING:
    import redis

REPO = Path(__file__).resolve().parent.parent
KIT_URL = "http://127.0.0.1:8082"
KIT_LOG = "site.log"  # serve.sh's access log of :8082
SITE_PAGES = 20_000  # pages of the benchmark kit's catalogue (gen_site.py OUT 20000)
STDERR_TAIL = 20  # lines of a failed process's stderr shown
POLL_S = 0.005  # how often exits are polled (the wall time's resolution)
PAGE_URI = re.compile(r"/p/(\d+)\.html$")

SPIDER = '''"""redis_scale.py's spider: the catalogue's pages /p/0.html .. /p/{N-1}.html."""

import re

from scraper import Spider


class RedisScale(Spider):
    name = "redis_scale"
    base = "http://127.0.0.1:8082"  # -a base=URL
    below = "5000"  # -a below=N

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.start_urls = [f"{self.base}/p/0.html"]
        self.limit = int(self.below)
        self.page = re.compile(re.escape(self.base) + r"/p/(\\d+)\\.html(?:#.*)?$")

    def parse(self, response):
        title = response.css_first("title")
        yield {"url": response.url, "title": title.text() if title else None}
        for request in response.follow_all("a[href]"):
            match = self.page.match(request.url)
            if match and int(match.group(1)) < self.limit:
                yield request
'''


@dataclass
class Proc:
    """One crawl process of a run."""

    command: list[str]
    exit_code: int | None  # None: killed after --timeout
    seconds: float  # from the run's start to this process's exit
    cpu_s: float
    peak_rss_mb: float
    pages: int
    stats: dict[str, Any] | None = None
    stderr_tail: list[str] = field(default_factory=list)


@dataclass
class AccessLog:
    """What nginx logged during a run."""

    requests: int = 0
    connections: int = 0  # distinct $connection serials
    pages: int = 0  # distinct URIs of the page set requested
    duplicates: int = 0  # requests for a page of the set already requested
    foreign: int = 0  # requests outside the page set (another client)
    statuses: dict[str, int] = field(default_factory=dict)


@dataclass
class Run:
    """The figures of one configuration, one repeat."""

    label: str  # "memory" or "redis x4"
    processes: int
    index: int  # repeat number, from 1
    expected_pages: int
    wall_s: float = 0.0
    procs: list[Proc] = field(default_factory=list)
    hung: bool = False
    server: AccessLog = field(default_factory=AccessLog)
    load_average: float | None = None  # 1-minute, at the end of the run
    redis_cpu_s: float | None = None
    nginx_cpu_s: float | None = None
    script_calls: int | None = None  # evalsha + eval
    script_failed_calls: int | None = None  # NOSCRIPT replies (redis-py then loads it)
    commands: int | None = None  # total_commands_processed, this script's INFO excluded
    commands_by_name: dict[str, int] = field(default_factory=dict)
    crawl_status: dict[str, Any] | None = None  # scraper.frontier.shared.status()

    @property
    def pages(self) -> int:
        return sum(p.pages for p in self.procs)

    @property
    def cpu_s(self) -> float:
        return sum(p.cpu_s for p in self.procs)

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.wall_s if self.wall_s > 0 else 0.0

    def per_1000(self, value: float | None) -> float | None:
        if value is None or not self.pages:
            return None
        return value * 1000 / self.pages

    def per_page(self, value: int | None) -> float | None:
        if value is None or not self.pages:
            return None
        return value / self.pages

    def _stat_sum(self, key: str) -> int | None:
        if not self.procs or any(p.stats is None for p in self.procs):
            return None
        return sum(int((p.stats or {}).get(key, 0)) for p in self.procs)

    @property
    def connections_opened(self) -> int | None:
        return self._stat_sum("connections_opened")

    @property
    def round_trips(self) -> int | None:
        """Round trips to Redis the crawl processes made (their `redis_round_trips`
        stat: takes, acks with children and the next take, adds, heartbeats, retries)."""
        return None if self.label == "memory" else self._stat_sum("redis_round_trips")

    @property
    def crawler_requests(self) -> int | None:
        """Requests the crawl processes say they sent (their stats)."""
        return self._stat_sum("requests")

    @property
    def disturbed(self) -> bool:
        """Whether the access log holds other than this run's requests (another client),
        or lost some (another `serve.sh rotate`): nginx's figures are then not its own."""
        return bool(self.server.foreign) or (
            self.crawler_requests is not None
            and self.server.requests != self.crawler_requests)

    def problems(self) -> list[str]:
        """What went wrong: failed or hung processes, pages missing or fetched twice."""
        found = []
        if self.hung:
            found.append("HUNG: processes killed after --timeout")
        for n, p in enumerate(self.procs, 1):
            if p.exit_code not in (0, None):
                found.append(f"process {n} exited with {p.exit_code}")
        n = self.expected_pages
        if self.pages != n:
            found.append(f"{self.pages} pages written, expected {n}")
        sent = self.crawler_requests
        if sent is not None and sent != n:
            found.append(f"the crawl processes sent {sent} requests (their stats), "
                         f"expected {n}")
        s = self.crawl_status
        if s is not None:
            if s.get("queued") or s.get("leases"):
                found.append(f"Redis left queued={s.get('queued')} leases={s.get('leases')}")
            if s.get("items_in_stream") != n:
                found.append(f"{s.get('items_in_stream')} items in the Redis stream, "
                             f"expected {n}")
        if self.disturbed:
            found.append(
                f"nginx log disturbed: it holds {self.server.requests} requests "
                f"({self.server.foreign} outside the page set) where the crawl processes' "
                f"stats count {sent} sent: another client, or another `serve.sh rotate`, "
                "during the run (the kit's server is shared: use --private-nginx), or the "
                "stats miscount; the nginx columns are not this run's alone")
            return found
        if self.server.requests != n:
            found.append(f"nginx saw {self.server.requests} requests, expected {n}")
        if self.server.pages != n:
            found.append(f"nginx saw {self.server.pages} distinct pages, expected {n}")
        if self.server.duplicates:
            found.append(f"{self.server.duplicates} duplicate requests (same page)")
        odd = {k: v for k, v in self.server.statuses.items() if not k.startswith("2")}
        if odd:
            found.append(f"non-2xx statuses: {odd}")
        return found

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update({
            "pages": self.pages,
            "cpu_s": round(self.cpu_s, 3),
            "pages_per_s": round(self.pages_per_s, 1),
            "cpu_s_per_1000_pages": _round(self.per_1000(self.cpu_s), 3),
            "redis_cpu_s_per_1000_pages": _round(self.per_1000(self.redis_cpu_s), 3),
            "nginx_cpu_s_per_1000_pages": _round(self.per_1000(self.nginx_cpu_s), 3),
            "script_calls_per_page": _round(self.per_page(self.script_calls), 3),
            "commands_per_page": _round(self.per_page(self.commands), 3),
            "round_trips_per_page": _round(self.per_page(self.round_trips), 3),
            "connections_opened": self.connections_opened,
            "crawler_requests": self.crawler_requests,
            "nginx_disturbed": self.disturbed,
            "problems": self.problems(),
        })
        return data


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


# -- the site: the kit's nginx (:8082) or one of this script's own -------------------------


def default_kit() -> Path:
    env = os.environ.get("SCRAPER_BENCH_KIT")
    return Path(env) if env else REPO.parent / "shared" / "bench"


def bench_dir() -> Path:
    """Where serve.sh keeps its logs: $BENCH_DIR, else ${TMPDIR:-/tmp}/scraper-bench."""
    env = os.environ.get("BENCH_DIR")
    return Path(env) if env else Path(os.environ.get("TMPDIR") or "/tmp") / "scraper-bench"


def site_dir() -> Path:
    """The catalogue serve.sh serves: $SITE, else the bench directory's site20k."""
    env = os.environ.get("SITE")
    return Path(env) if env else bench_dir() / "site20k"


def serve(kit: Path, command: str) -> None:
    result = subprocess.run(["bash", str(kit / "serve.sh"), command],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"error: serve.sh {command} failed ({result.returncode}):\n"
                 f"{result.stderr.strip()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_s(pids: list[int]) -> float | None:
    """User + sys CPU seconds so far of these processes (Linux /proc), or None."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in pids:
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks
    except (OSError, ValueError):
        return None


def children_of(master: int) -> list[int]:
    """The pids whose parent is `master` (nginx's workers)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == master:
            found.append(int(entry.name))
    return found


class Site:
    """An nginx serving the catalogue: its base URL, its access log, its workers' CPU."""

    url: str
    log: Path
    pid_file: Path

    def rotate(self) -> None:
        raise NotImplementedError

    def cpu_s(self) -> float | None:
        try:
            master = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return process_cpu_s(children_of(master))

    def stop(self) -> None:
        """Only a site this script started is stopped."""

    def read_log(self, pages: int) -> AccessLog:
        """The log's figures; format `$connection $connection_requests $status $uri`."""
        result = AccessLog()
        connections: set[str] = set()
        uris: collections.Counter[str] = collections.Counter()
        if self.log.exists():
            with self.log.open(encoding="utf-8", errors="replace") as f:
                for line in f:
                    fields = line.split()
                    if not fields:
                        continue
                    result.requests += 1
                    connections.add(fields[0])
                    if len(fields) > 2:
                        result.statuses[fields[2]] = result.statuses.get(fields[2], 0) + 1
                    uri = fields[3] if len(fields) > 3 else ""
                    match = PAGE_URI.fullmatch(uri)
                    if match and int(match.group(1)) < pages:
                        uris[uri] += 1
                    else:
                        result.foreign += 1
        result.connections = len(connections)
        result.pages = len(uris)
        result.duplicates = sum(n - 1 for n in uris.values())
        result.statuses = dict(sorted(result.statuses.items()))
        return result


class KitSite(Site):
    """The benchmark kit's nginx on :8082 (serve.sh), shared with the whole machine."""

    def __init__(self, kit: Path, start: bool) -> None:
        self.kit = kit
        self.url = KIT_URL
        self.log = bench_dir() / KIT_LOG
        self.pid_file = bench_dir() / "nginx.pid"
        if start:
            serve(kit, "start")

    def rotate(self) -> None:
        serve(self.kit, "rotate")


class PrivateSite(Site):
    """An nginx of this script's own on a free loopback port, configured as serve.sh's
    :8082, serving the same site directory; log and pid file in the work directory."""

    def __init__(self, root: Path, workdir: Path) -> None:
        binary = shutil.which("nginx")
        if binary is None:
            sys.exit("error: nginx not found (apt-get install -y nginx)")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        d = workdir / "nginx"
        (d / "tmp").mkdir(parents=True, exist_ok=True)
        self.log = d / "site.log"
        self.pid_file = d / "nginx.pid"
        temp_paths = "".join(f"  {kind}_temp_path {d / 'tmp' / kind};\n"
                             for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf = d / "nginx.conf"
        conf.write_text(
            "worker_processes 1;\n"
            "daemon off;\n"
            f"pid {self.pid_file};\n"
            f"error_log {d / 'error.log'} warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            "  access_log off;\n"
            "  log_format conn '$connection $connection_requests $status $request_uri';\n"
            "  keepalive_requests 1000000;\n"
            f"{temp_paths}"
            f"  server {{ listen 127.0.0.1:{port}; root {root}; "
            f"access_log {self.log} conn; }}\n"
            "}\n")
        self.process = subprocess.Popen(
            [binary, "-e", str(d / "error.log"), "-p", str(d), "-c", str(conf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                _, err = self.process.communicate()
                sys.exit(f"error: nginx exited with {self.process.returncode}: "
                         f"{err.decode(errors='replace').strip()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    sys.exit("error: nginx did not listen within 10 s")
                time.sleep(0.05)

    def rotate(self) -> None:
        self.log.write_bytes(b"")  # nginx appends (O_APPEND): truncating is enough

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.communicate()


def check_site(site: Site, pages: int) -> None:
    """The last page of the set must exist (the site is big enough)."""
    url = f"{site.url}/p/{pages - 1}.html"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        site.stop()
        sys.exit(f"error: {url}: HTTP {exc.code}; the site has fewer than {pages} pages")
    except OSError as exc:
        site.stop()
        sys.exit(f"error: {url}: {exc}; start the benchmark server (serve.sh start) or drop "
                 "--no-start")


# -- redis-server -----------------------------------------------------------------------------


class RedisServer:
    """A throwaway redis-server on a free loopback port: no persistence."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._log = (workdir / "redis-server.log").open("wb")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                self._log.close()
                sys.exit(f"error: redis-server exited with {self.process.returncode}; see "
                         f"{workdir / 'redis-server.log'}")
            try:
                self.client: redis.Redis = connect(self.url)
                break
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    sys.exit("error: redis-server did not answer within 10 s")
                time.sleep(0.05)
        self.version = str(self.client.info("server").get("redis_version"))
        self._info_cost = self._calibrate()

    def _calibrate(self) -> int:
        """Commands counted in total_commands_processed per snapshot() of this script."""
        first = self.client.info("everything")["total_commands_processed"]
        second = self.client.info("everything")["total_commands_processed"]
        return int(second) - int(first)

    def snapshot(self) -> dict[str, Any]:
        """One INFO: commands processed, per-command calls, redis-server CPU seconds."""
        info = self.client.info("everything")
        stats = {k.removeprefix("cmdstat_"): v for k, v in info.items()
                 if k.startswith("cmdstat_")}
        return {
            "total": int(info["total_commands_processed"]),
            "calls": {k: int(v.get("calls", 0)) for k, v in stats.items()},
            "failed": {k: int(v.get("failed_calls", 0)) for k, v in stats.items()},
            "cpu": float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
        }

    def delta(self, before: dict[str, Any], after: dict[str, Any]
              ) -> tuple[int, int, int, dict[str, int], float]:
        """(script calls, failed script calls, commands, calls by command, CPU s) between
        two snapshots, this script's own INFO excluded."""
        calls = {name: n - before["calls"].get(name, 0) for name, n in after["calls"].items()}
        calls["info"] = calls.get("info", 0) - 1  # the `before` INFO (counted once done)
        calls = {name: n for name, n in sorted(calls.items()) if n}
        failed = sum(after["failed"].get(name, 0) - before["failed"].get(name, 0)
                     for name in ("evalsha", "eval"))
        scripts = calls.get("evalsha", 0) + calls.get("eval", 0)
        commands = after["total"] - before["total"] - self._info_cost
        return scripts, failed, commands, calls, after["cpu"] - before["cpu"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


# -- running the crawl processes --------------------------------------------------------------


def crawl_command(spider: Path, base: str, pages: int, workers: int, per_host: int,
                  out: Path, stats: Path, backend: str, name: str | None) -> list[str]:
    command = [sys.executable, "-m", "scraper", "crawl", str(spider), "-a", f"base={base}",
               "-a", f"below={pages}", "-s", f"crawl.workers={workers}",
               "-s", f"crawl.per_host={per_host}", "-s", "crawl.obey_robots=false",
               "-s", f"frontier.backend={json.dumps(backend)}"]
    if name is not None:
        command += ["-s", f"frontier.name={json.dumps(name)}"]
    return [*command, "-o", str(out), "--stats", str(stats), "-q"]


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for _ in f)


def run_processes(commands: list[list[str]], workdir: Path, tag: str, timeout: float
                  ) -> tuple[float, list[tuple[int | None, float, float, float]], bool]:
    """Start every command at once; wait for all to exit. Returns (wall s, per process
    (exit code or None if killed, seconds to exit, CPU s, peak RSS MB), hung)."""
    results: dict[int, tuple[int | None, float, float, float]] = {}
    children: list[subprocess.Popen[bytes]] = []
    files = []
    start = time.perf_counter()
    try:
        for n, command in enumerate(commands):
            out = (workdir / f"{tag}-{n}.stdout").open("wb")
            err = (workdir / f"{tag}-{n}.stderr").open("wb")
            files += [out, err]
            children.append(subprocess.Popen(command, cwd=workdir, stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=err))
        hung = False
        while len(results) < len(children):
            for n, child in enumerate(children):
                if n in results:
                    continue
                pid, wait_status, usage = os.wait4(child.pid, os.WNOHANG)
                if pid == 0:
                    continue
                code = os.waitstatus_to_exitcode(wait_status)
                child.returncode = code  # reaped by os.wait4: Popen must not wait again
                results[n] = (code, time.perf_counter() - start,
                              usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)
            if len(results) < len(children):
                if time.perf_counter() - start > timeout:
                    hung = True
                    break
                time.sleep(POLL_S)
        wall = max((r[1] for r in results.values()), default=0.0)
        if hung:
            wall = time.perf_counter() - start
            for n, child in enumerate(children):
                if n not in results:
                    child.send_signal(signal.SIGKILL)
                    _, _, usage = os.wait4(child.pid, 0)
                    child.returncode = -signal.SIGKILL
                    results[n] = (None, wall, usage.ru_utime + usage.ru_stime,
                                  usage.ru_maxrss / 1024)
    except BaseException:
        for child in children:
            if child.returncode is None:
                child.kill()
                child.wait()
        raise
    finally:
        for f in files:
            f.close()
    return wall, [results[n] for n in range(len(children))], hung


def one_run(*, processes: int, index: int, args: argparse.Namespace, spider: Path,
            workdir: Path, site: Site, server: RedisServer | None) -> Run:
    label = "memory" if server is None else f"redis x{processes}"
    tag = f"{'memory' if server is None else 'redis'}-{processes}p-{index}"
    run = Run(label=label, processes=processes, index=index, expected_pages=args.pages)
    name = None
    backend = "memory"
    if server is not None:
        backend = server.url
        name = f"scale-{processes}p-{index}-{os.getpid()}"  # a fresh crawl per run
        server.client.flushdb()
    outs = [workdir / f"{tag}-{n}.jsonl" for n in range(processes)]
    stats = [workdir / f"{tag}-{n}.stats.json" for n in range(processes)]
    for path in (*outs, *stats):
        path.unlink(missing_ok=True)
    commands = [crawl_command(spider, site.url, args.pages, args.workers, args.per_host, out,
                              st, backend, name) for out, st in zip(outs, stats, strict=True)]
    site.rotate()
    nginx_before = site.cpu_s()
    before = server.snapshot() if server is not None else None
    wall, results, hung = run_processes(commands, workdir, tag, args.timeout)
    if server is not None and before is not None:
        after = server.snapshot()
        (run.script_calls, run.script_failed_calls, run.commands, run.commands_by_name,
         redis_cpu) = server.delta(before, after)
        run.redis_cpu_s = round(redis_cpu, 3)
        run.crawl_status = status(server.url, name or "")
    nginx_after = site.cpu_s()
    if nginx_before is not None and nginx_after is not None:
        run.nginx_cpu_s = round(nginx_after - nginx_before, 3)
    run.load_average = round(os.getloadavg()[0], 2)
    run.wall_s = round(wall, 3)
    run.hung = hung
    run.server = site.read_log(args.pages)
    if site.log.exists():
        shutil.copyfile(site.log, workdir / f"{tag}.access.log")
    for n, (code, seconds, cpu, rss) in enumerate(results):
        proc = Proc(command=commands[n], exit_code=code, seconds=round(seconds, 3),
                    cpu_s=round(cpu, 3), peak_rss_mb=round(rss, 1), pages=count_lines(outs[n]))
        if stats[n].exists():
            proc.stats = json.loads(stats[n].read_text())
        if code != 0:
            err = workdir / f"{tag}-{n}.stderr"
            proc.stderr_tail = err.read_text(errors="replace").splitlines()[-STDERR_TAIL:]
        run.procs.append(proc)
    return run


# -- the report -------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                        strict=True)]
        print("  ".join(cells))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def print_report(runs: list[Run], header: list[str]) -> None:
    print("\n".join(header))
    print()
    rows: list[tuple[str, ...]] = [(
        "run", "pages", "wall s", "pages/s", "CPU s/1k crawl", "CPU s/1k redis",
        "CPU s/1k nginx", "peak RSS MB", "TCP conns", "srv requests", "dup reqs",
        "scripts/page", "RT/page", "cmds/page", "load", "pages per process")]
    for r in runs:
        mark = "*" if r.disturbed else ""
        rows.append((
            f"{r.label} #{r.index}", f"{r.pages:,}", fmt(r.wall_s, 2), fmt(r.pages_per_s),
            fmt(r.per_1000(r.cpu_s), 3), fmt(r.per_1000(r.redis_cpu_s), 3),
            fmt(r.per_1000(r.nginx_cpu_s), 3),
            fmt(max((p.peak_rss_mb for p in r.procs), default=None), 1),
            f"{r.server.connections:,}{mark}", f"{r.server.requests:,}{mark}",
            f"{r.server.duplicates:,}{mark}", fmt(r.per_page(r.script_calls), 2),
            fmt(r.per_page(r.round_trips), 2), fmt(r.per_page(r.commands), 2),
            fmt(r.load_average, 2),
            "/".join(str(p.pages) for p in r.procs)))
    print_table(rows)
    if any(r.disturbed for r in runs):
        print("* nginx's log was disturbed during this run (another client, or a rotation): "
              "see below")
    print()
    for r in runs:
        opened = r.connections_opened
        verdict = "match" if opened == r.server.connections else "MISMATCH"
        line = (f"{r.label} #{r.index}: exits {[p.exit_code for p in r.procs]} at "
                f"{[p.seconds for p in r.procs]} s; requests sent {r.crawler_requests} "
                f"(nginx {r.server.requests}); connections_opened {opened} (nginx "
                f"{r.server.connections}: {verdict}); own pages/s "
                f"{[(p.stats or {}).get('pages_per_s') for p in r.procs]}")
        if r.script_calls is not None:
            line += (f"; evalsha+eval {r.script_calls:,} (NOSCRIPT {r.script_failed_calls}), "
                     f"commands {r.commands:,}: {r.commands_by_name}")
        if r.crawl_status is not None:
            s = r.crawl_status
            line += (f"; Redis status: requests_done={s.get('requests_done')} "
                     f"items={s.get('items')} stream={s.get('items_in_stream')} "
                     f"queued={s.get('queued')} leases={s.get('leases')} "
                     f"reaped={s.get('leases_reaped', 0)}")
        print(line)
        for p in r.procs:
            failed = (p.stats or {}).get("failed")
            if failed:
                print(f"  a process reported failed={failed}: "
                      f"{(p.stats or {}).get('failed_reasons')}")
            if p.stderr_tail:
                print(f"  process exited with {p.exit_code}: {' '.join(p.command)}")
                print("\n".join(f"  | {line}" for line in p.stderr_tail))
        for problem in r.problems():
            print(f"  PROBLEM: {problem}")
    print()
    configs = sorted({r.label for r in runs}, key=lambda x: (x != "memory", x))
    for label in configs:
        rates = sorted(r.pages_per_s for r in runs if r.label == label)
        median = rates[len(rates) // 2] if len(rates) % 2 else (
            (rates[len(rates) // 2 - 1] + rates[len(rates) // 2]) / 2)
        print(f"{label}: pages/s {', '.join(fmt(x) for x in rates)} (median {fmt(median)})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Throughput of one crawl shared by 1, 2 and 4 processes through Redis, "
                    "against the benchmark kit's nginx, with the memory frontier as baseline.")
    parser.add_argument("--pages", type=int, default=5000,
                        help="crawl /p/0.html .. /p/{N-1}.html, the same N pages in every run "
                             f"(at most {SITE_PAGES:,}; default 5,000)")
    parser.add_argument("--workers", type=int, default=8,
                        help="crawl.workers of each process (default 8)")
    parser.add_argument("--per-host", type=int, default=16,
                        help="crawl.per_host of every process, the same in all runs: Redis "
                             "enforces it for the whole crawl (default 16)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4],
                        help="process counts sharing the Redis crawl (default 1 2 4)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every configuration K times, interleaved (default 1)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the memory-frontier baseline")
    parser.add_argument("--private-nginx", action="store_true",
                        help="serve the kit's site from an nginx of this script's own on a "
                             "free port (as serve.sh's :8082), so that no other client or "
                             "rotation disturbs its log")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds a run may take before its processes are killed and it "
                             "is reported as hung (default 600)")
    parser.add_argument("--json", type=Path, default=None, help="write all figures as JSON")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep outputs, stats, stderr, access logs and the redis-server "
                             "log here (default: a temporary directory, removed at the end)")
    parser.add_argument("--kit", type=Path, default=None,
                        help="benchmark kit directory (default: $SCRAPER_BENCH_KIT, else "
                             "<repo>/../shared/bench)")
    parser.add_argument("--no-start", action="store_true",
                        help="do not run `serve.sh start`; the kit's nginx must be up (and, "
                             "with --private-nginx, its site generated)")
    parser.add_argument("--redis-server", default=None,
                        help="redis-server binary (default: found on PATH)")
    args = parser.parse_args(argv)
    if not 1 <= args.pages <= SITE_PAGES:
        parser.error(f"--pages must be between 1 and {SITE_PAGES}")
    for name in ("workers", "per_host", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if any(n < 1 for n in args.processes):
        parser.error("--processes must be at least 1")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kit: Path = (args.kit or default_kit()).resolve()
    if not (kit / "serve.sh").is_file():
        print(f"error: {kit / 'serve.sh'} not found; give the kit with --kit or "
              "SCRAPER_BENCH_KIT", file=sys.stderr)
        return 2
    binary = args.redis_server or shutil.which("redis-server")
    if binary is None:
        print("error: redis-server not found (apt-get install -y redis-server)",
              file=sys.stderr)
        return 2

    temp = None
    if args.workdir is None:
        temp = tempfile.mkdtemp(prefix="redis-scale-")
        workdir = Path(temp)
    else:
        workdir = args.workdir.resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    spider = workdir / "redis_scale_spider.py"
    spider.write_text(SPIDER)

    started = datetime.now().astimezone()
    load = round(os.getloadavg()[0], 2)
    runs: list[Run] = []
    server = None
    site: Site | None = None
    try:
        if args.private_nginx:
            if not site_dir().is_dir() and not args.no_start:
                serve(kit, "start")  # generates the site on its first start
            site = PrivateSite(site_dir(), workdir)
        else:
            site = KitSite(kit, start=not args.no_start)
        check_site(site, args.pages)
        server = RedisServer(binary, workdir)
        for index in range(1, args.repeat + 1):
            configs: list[tuple[int, RedisServer | None]] = [] if args.no_memory else [(1, None)]
            configs += [(n, server) for n in args.processes]
            for processes, backend in configs:
                run = one_run(processes=processes, index=index, args=args, spider=spider,
                              workdir=workdir, site=site, server=backend)
                runs.append(run)
                print(f"{run.label} #{index}: {run.pages:,} pages in {run.wall_s:.2f} s "
                      f"({run.pages_per_s:,.0f} pages/s), load {run.load_average}"
                      + (f"; {len(run.problems())} problem(s)" if run.problems() else ""),
                      file=sys.stderr, flush=True)
    finally:
        redis_version = server.version if server is not None else None
        if server is not None:
            server.stop()
        if site is not None:
            site.stop()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)

    cpus = os.cpu_count()
    where = (f"a private nginx on {site.url} serving {site_dir()}" if args.private_nginx
             else f"the kit's nginx on {KIT_URL}")
    header = [
        f"redis_scale: {args.pages:,} pages (/p/0.html .. /p/{args.pages - 1}.html), "
        f"{where}; per process crawl.workers={args.workers}, crawl.per_host="
        f"{args.per_host} in every run, obey_robots=false",
        f"{started:%Y-%m-%d %H:%M}, {cpus} CPUs, load average at start {load}, Python "
        f"{sys.version.split()[0]}, redis-server {redis_version}, repeat {args.repeat}",
        f"NOTE: this machine has {cpus} CPU cores, shared by the crawl processes, "
        "redis-server and nginx. The crawl is CPU-bound on loopback, so more processes "
        "cannot give more CPU: here pages/s shows what sharing a crawl through Redis costs, "
        "not how it scales out across machines.",
        "wall s: first process start to last exit (interpreter start-up included); "
        "CPU s/1k: CPU seconds per 1,000 pages of all crawl processes / redis-server / "
        "nginx's worker; scripts/page: evalsha+eval calls (INFO commandstats) per page, the "
        "processes' script calls (a page's step: ack, children and next requests in one; "
        "renew, reap); RT/page: the processes' round trips to Redis per page "
        "(redis_round_trips stat); TCP conns: distinct connections nginx saw (one host); "
        "cmds/page: "
        "total_commands_processed (INFO stats) per page, commands run inside scripts "
        "included; load: 1-minute load average at the end of the run.",
    ]
    print_report(runs, header)
    failed = any(r.problems() for r in runs)
    if args.json is not None:
        report = {
            "started": started.isoformat(timespec="seconds"),
            "site": site.url,
            "private_nginx": args.private_nginx,
            "pages": args.pages,
            "workers_per_process": args.workers,
            "per_host": args.per_host,
            "processes": args.processes,
            "repeat": args.repeat,
            "cpus": cpus,
            "load_average_at_start": load,
            "python": sys.version.split()[0],
            "redis_server": redis_version,
            "runs": [r.to_json() for r in runs],
            "failed": failed,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if failed:
        print("error: some runs had problems (see PROBLEM lines above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
