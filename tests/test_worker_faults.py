"""Faults contained at the worker boundary.

Nothing raised while handling a request (a callback, a pipeline, a middleware, a bug)
kills a worker or leaves a slot taken, and every URL is accounted for. An output or a
store that cannot be written (ENOSPC, EMFILE, EISDIR, a Redis that went away) stops the
crawl promptly: finish_reason `error`, exit code 1, one log line naming the file and the
error, what was written before still readable, no thread left behind.
"""

from __future__ import annotations

import errno
import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import RedisServer, crawl, link_spider, slow_star, star, write_site_spider
from servers import FaultServer

from scraper import Request, Spider
from scraper.api import build_crawler, prepare
from scraper.engine import CrawlResult
from scraper.errors import StoreError
from scraper.exporters import Exporter
from scraper.frontier.jobstore import JobStore


def engine_run(spider: type[Spider], *, outputs: Any = (), **settings: Any) -> CrawlResult:
    settings.setdefault("crawl__obey_robots", False)
    dotted = {key.replace("__", "."): value for key, value in settings.items()}
    instance, loaded = prepare(spider, settings=dotted)
    return build_crawler(instance, loaded.settings, outputs=outputs, collect_items=True).run()


def worker_threads() -> list[str]:
    return [t.name for t in threading.enumerate()
            if t.name.startswith("scraper-worker") and t.is_alive()]


def error_lines(caplog: pytest.LogCaptureFixture, *needles: str) -> list[str]:
    """ERROR log lines that contain every one of `needles`."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR
            and all(n in r.getMessage() for n in needles)]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_cli(*args: str, timeout: float = 20, **popen: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scraper", "crawl", *args], capture_output=True,
                          text=True, timeout=timeout, **popen)


# -- outputs ---------------------------------------------------------------------------------


class FullDiskExporter(Exporter):
    """An exporter whose disk fills up after `room` items."""

    room = 3

    def write(self, item: dict[str, Any]) -> bool:
        if self.count >= self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(item)


def test_exporter_failing_with_enospc_stops_the_crawl(server: FaultServer, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    slow_star(server, 40, 0.02)
    target = tmp_path / "out.jsonl"
    started = time.monotonic()
    result = engine_run(link_spider(server.url("/")), outputs=[FullDiskExporter(str(target))],
                        crawl__per_host=2, crawl__workers=4)
    assert time.monotonic() - started < 3
    assert result.finish_reason == "error" and result.exit_code == 1
    assert result.stats["exit_code"] == 1 and "No space left" in result.stats["error"]
    assert len(server.requests) < 41  # stopped promptly, not at the end of the site
    assert len(error_lines(caplog, str(target), "No space left on device")) == 1
    # What was written before stays readable: the three items in the part file.
    written = target.with_name("out.jsonl.part")
    assert len(read_jsonl(written)) == 3
    assert not target.exists()  # never renamed into place as if complete
    assert worker_threads() == []


def test_a_really_full_filesystem(server: FaultServer, tiny_fs: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    star(server, 40)

    class Padded(Spider):
        name = "padded"
        start_urls = [server.url("/")]

        def parse(self, response: Any) -> Any:
            yield {"url": response.url, "padding": "x" * 8000}
            yield from response.follow_all("a[href]")

    target = tiny_fs / "out.jsonl"
    result = engine_run(Padded, outputs=[str(target)], crawl__per_host=1)
    assert result.finish_reason == "error" and result.exit_code == 1
    assert len(error_lines(caplog, str(target), "No space left on device")) == 1
    written = target.with_name("out.jsonl.part")
    lines = written.read_text().splitlines()
    complete = [json.loads(line) for line in lines[:-1]]  # the last one may be cut short
    assert complete and all(item["padding"] == "x" * 8000 for item in complete)
    assert not target.exists()
    assert worker_threads() == []


LOWER_LIMIT_SPIDER = '''
import os, resource
from scraper import Spider

class Site(Spider):
    name = "site"
    start_urls = ["{start}"]

    def parse(self, response):
        if response.url.endswith("/"):
            # No file descriptor left: the output, opened for the first item, fails.
            in_use = len(os.listdir("/proc/self/fd")) - 1  # less the listing's own
            resource.setrlimit(resource.RLIMIT_NOFILE, (in_use, in_use))
        yield {{"url": response.url}}
        yield from response.follow_all("a[href]")
'''


def test_no_file_descriptors_left_for_the_output(server: FaultServer, tmp_path: Path) -> None:
    star(server, 5)
    spider = tmp_path / "site.py"
    spider.write_text(LOWER_LIMIT_SPIDER.format(start=server.url("/")))
    target = tmp_path / "out.jsonl"
    started = time.monotonic()
    done = run_cli(str(spider), "-o", str(target), "-s", "crawl.per_host=1",
                   "-s", "crawl.workers=1", "-s", "crawl.obey_robots=false")
    assert time.monotonic() - started < 15
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    reported = [line for line in done.stderr.splitlines()
                if "Too many open files" in line and "out.jsonl" in line]
    assert len(reported) == 1, done.stderr
    assert "finish_reason: error" in done.stdout


def test_output_under_a_regular_file_is_refused_at_start(server: FaultServer,
                                                         tmp_path: Path) -> None:
    star(server, 2)
    spider = write_site_spider(tmp_path / "site.py", server.url("/"))
    (tmp_path / "somefile").write_text("not a directory")
    done = run_cli(str(spider), "-o", str(tmp_path / "somefile" / "out.jsonl"))
    assert done.returncode == 2  # bad usage: nothing was crawled
    assert "somefile/out.jsonl" in done.stderr and "Traceback" not in done.stderr
    assert server.requests == []


def test_output_that_is_a_directory_is_an_error(server: FaultServer, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    star(server, 2)
    target = tmp_path / "x.jsonl"
    target.mkdir()
    result = engine_run(link_spider(server.url("/")), outputs=[str(target)])
    assert result.stats["pages"] == 3
    assert result.finish_reason == "error" and result.exit_code == 1
    assert result.stats["finish_reason"] == "error" and result.stats["exit_code"] == 1
    assert len(error_lines(caplog, str(target))) == 1
    assert len(read_jsonl(tmp_path / "x.jsonl.part")) == 3  # the items are kept


def test_output_that_is_a_directory_exits_1_from_the_cli(server: FaultServer,
                                                         tmp_path: Path) -> None:
    star(server, 2)
    spider = write_site_spider(tmp_path / "site.py", server.url("/"))
    (tmp_path / "x.jsonl").mkdir()
    stats = tmp_path / "stats.json"
    done = run_cli(str(spider), "-o", str(tmp_path / "x.jsonl"), "--stats", str(stats),
                   "-s", "crawl.obey_robots=false")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    saved = json.loads(stats.read_text())
    assert saved["finish_reason"] == "error" and saved["exit_code"] == 1


# -- the jobdir's store ----------------------------------------------------------------------


def test_jobdir_that_is_a_file(server: FaultServer, tmp_path: Path) -> None:
    star(server, 2)
    spider = write_site_spider(tmp_path / "site.py", server.url("/"))
    jobdir = tmp_path / "job"
    jobdir.write_text("a file, not a directory")
    done = run_cli(str(spider), "--jobdir", str(jobdir), "-o", str(tmp_path / "out.jsonl"))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert str(jobdir) in done.stderr and "finish_reason: error" in done.stdout
    assert server.requests == []


def test_store_failing_mid_crawl(server: FaultServer, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch,
                                 caplog: pytest.LogCaptureFixture) -> None:
    slow_star(server, 30, 0.02)
    commit = JobStore.commit
    calls = 0

    def failing_commit(self: JobStore, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 4:
            raise StoreError(f"jobdir {self.path}", OSError(errno.EIO, "Input/output error"))
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(JobStore, "commit", failing_commit)
    started = time.monotonic()
    result = engine_run(link_spider(server.url("/")), outputs=[str(tmp_path / "out.jsonl")],
                        frontier__jobdir=str(tmp_path / "job"), crawl__per_host=2)
    assert time.monotonic() - started < 3
    assert result.finish_reason == "error" and result.exit_code == 1
    assert len(error_lines(caplog, "state.sqlite", "Input/output error")) == 1
    assert len(server.requests) < 31
    assert worker_threads() == []


# -- Redis -----------------------------------------------------------------------------------


def test_redis_going_away_mid_crawl(server: FaultServer, redis_server: RedisServer,
                                    caplog: pytest.LogCaptureFixture) -> None:
    """Redis gone for longer than `frontier.outage_grace`: a clean stop, promptly."""
    slow_star(server, 60, 0.05)

    def kill_redis() -> None:
        if server.wait_for_requests(5, timeout=10):
            redis_server.process.terminate()

    killer = threading.Thread(target=kill_redis)
    killer.start()
    started = time.monotonic()
    result = engine_run(link_spider(server.url("/")), frontier__backend=redis_server.url,
                        frontier__name=f"gone-{uuid.uuid4().hex}", crawl__per_host=2,
                        frontier__outage_grace=1)
    took = time.monotonic() - started
    killer.join()
    assert result.finish_reason == "error" and result.exit_code == 1
    assert took < 8  # the grace, then the stop
    assert error_lines(caplog, "Redis frontier")
    assert worker_threads() == []


# -- user code and bugs: the crawl goes on ----------------------------------------------------


def test_middleware_raising_fails_its_request_only(server: FaultServer) -> None:
    star(server, 6)

    class Fragile:
        def request(self, request: Request, spider: Spider) -> None:
            if request.url.endswith("/p/2"):
                raise RuntimeError("bug in a middleware")

    result = crawl(link_spider(server.url("/"), middlewares=[Fragile()]),
                   crawl__per_host=2)
    stats = result.stats
    assert stats["failed_reasons"] == {"middleware_error": 1}
    assert stats["pages"] == 6 and server.count("/p/2") == 0
    assert stats["pages"] + stats["failed"] == 7  # every URL accounted for
    assert worker_threads() == []


def test_pipeline_raising_is_counted_and_the_crawl_goes_on(server: FaultServer) -> None:
    star(server, 6)

    def fragile(item: dict[str, Any], spider: Spider) -> dict[str, Any]:
        if item["url"].endswith("/p/3"):
            raise ValueError("bug in a pipeline")
        return item

    result = crawl(link_spider(server.url("/"), pipelines=[fragile]))
    stats = result.stats
    assert stats["pipeline_errors"] == 1
    assert stats["pages"] == 7 and stats["items"] == 6 and stats["failed"] == 0


def test_callback_raising_is_a_callback_error(server: FaultServer) -> None:
    star(server, 6)

    class Fragile(Spider):
        name = "fragile"
        start_urls = [server.url("/")]

        def parse(self, response: Any) -> Any:
            if response.url.endswith("/p/1"):
                raise KeyError("bug in a callback")
            yield {"url": response.url}
            yield from response.follow_all("a[href]")

    result = crawl(Fragile, crawl__allowed_failures=1)
    stats = result.stats
    assert stats["failed_reasons"] == {"callback_error": 1}
    assert stats["pages"] == 7 and stats["items"] == 6 and result.exit_code == 0


def test_a_bug_in_the_engine_does_not_kill_the_worker(server: FaultServer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from scraper.chain import Chain

    star(server, 8)
    done = Chain.done

    def buggy_done(self: Chain, ctx: Any) -> None:
        if ctx.original.url.endswith(("/p/1", "/p/5")):
            raise AttributeError("a bug after the callback")
        done(self, ctx)

    monkeypatch.setattr(Chain, "done", buggy_done)
    result = crawl(link_spider(server.url("/")), crawl__workers=1, crawl__per_host=1,
                   crawl__allowed_failures=2)
    stats = result.stats
    # One worker: had the bug killed it, nothing after /p/1 would have been fetched.
    assert len(server.requests) == 9
    assert stats["failed_reasons"] == {"internal_error": 2}
    assert result.finish_reason == "finished" and worker_threads() == []


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_every_kind_of_fault_at_once_leaves_no_slot_taken(server: FaultServer, tmp_path: Path,
                                                          backend: str) -> None:
    """Faults of every kind in one crawl with per_host=1: a slot left taken would stall
    the host, so the crawl ending with every URL accounted for proves none was."""
    star(server, 12)

    class Faulty(Spider):
        name = "faulty"
        start_urls = [server.url("/")]
        middlewares = [type("M", (), {"request": staticmethod(
            lambda request, spider: 1 / 0 if request.url.endswith("/p/0") else None)})()]
        pipelines = [lambda item, spider: 1 / 0 if item["url"].endswith("/p/1") else item]

        def parse(self, response: Any) -> Any:
            if response.url.endswith("/p/2"):
                raise RuntimeError("callback bug")
            yield {"url": response.url}
            yield from response.follow_all("a[href]")

    extra = {"frontier__jobdir": str(tmp_path / "job")} if backend == "sqlite" else {}
    result = crawl(Faulty, crawl__per_host=1, crawl__workers=4, crawl__allowed_failures=5,
                   **extra)
    stats = result.stats
    assert stats["failed_reasons"] == {"middleware_error": 1, "callback_error": 1}
    assert stats["pipeline_errors"] == 1
    assert stats["pages"] == 12 and stats["items"] == 10
    assert len(server.requests) == 12 and result.finish_reason == "finished"
