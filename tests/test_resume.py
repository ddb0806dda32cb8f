"""Durable crawls (frontier.jobdir): SIGKILL at any moment, rerun, nothing lost or doubled."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import crawl, link_spider, write_site_spider
from servers import Exchange, FaultServer

from scraper.errors import ConfigError
from scraper.exporters import Exporter
from scraper.frontier.jobstore import JobStore
from scraper.request import Request
from scraper.spider import Spider

PAGES = 120
WORKERS = 4



def slow_mesh(server: FaultServer, pages: int = PAGES) -> None:
    """Pages that take 10 ms each, so that a kill lands mid-crawl."""
    def page(exchange: Exchange) -> None:
        i = int(exchange.request.path.strip("/"))
        exchange.wait(0.01)
        links = "".join(f'<a href="/{(i + k) % pages}">x</a>' for k in (1, 2, 7))
        exchange.respond(200, f"<html><body>{links}</body></html>",
                         {"Content-Type": "text/html"})

    for i in range(pages):
        server.add_handler(f"/{i}", page)


def start(spider: Path, jobdir: Path, output: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "scraper", "crawl", str(spider), "-q", "-o", str(output),
         "--jobdir", str(jobdir), "-s", f"crawl.workers={WORKERS}",
         "-s", f"crawl.per_host={WORKERS}", "-s", "crawl.obey_robots=false"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def items_in(paths: list[Path]) -> collections.Counter[str]:
    urls: collections.Counter[str] = collections.Counter()
    for path in paths:
        if path.exists():
            urls.update(json.loads(line)["url"] for line in path.read_text().splitlines())
    return urls


def wait_for_file(path: Path, timeout: float) -> bool:
    """Poll for a file another process creates (no event crosses the process boundary)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return True
        time.sleep(0.0005)
    return False


@pytest.mark.parametrize("kill_after", [[5], [60], [5, 40, 80]])
def test_sigkill_and_resume_scrapes_every_page_once(server: FaultServer, tmp_path: Path,
                                                    kill_after: list[int]) -> None:
    slow_mesh(server)
    spider = tmp_path / "site.py"
    write_site_spider(spider, server.url("/0"))
    jobdir = tmp_path / "job"
    outputs = []
    for run, threshold in enumerate(kill_after):
        output = tmp_path / f"items-{run}.jsonl"
        outputs.append(output)
        process = start(spider, jobdir, output)
        assert server.wait_for_requests(threshold, timeout=20)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
    final = tmp_path / "items-final.jsonl"
    outputs.append(final)
    process = start(spider, jobdir, final)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode()

    urls = items_in(outputs)
    assert set(urls) == {server.url(f"/{i}") for i in range(PAGES)}
    assert max(urls.values()) == 1  # exactly once in the union of outputs
    fetched = collections.Counter(r.path for r in server.requests)
    refetched = sum(n - 1 for n in fetched.values())
    # only requests in flight (or fetched but not yet committed) at a kill run again
    assert refetched <= len(kill_after) * WORKERS


def test_sigkill_during_output_finalisation(server: FaultServer, tmp_path: Path) -> None:
    pages = 400
    for i in range(pages):
        server.add_page(f"/{i}", [f"/{i + 1}"] if i + 1 < pages else [])
        server.add_page(f"/{i}", [f"/{(i + k) % pages}" for k in (1, 2, 3)])
    spider = tmp_path / "site.py"
    write_site_spider(spider, server.url("/0"))
    jobdir = tmp_path / "job"
    first = tmp_path / "first.jsonl"
    process = start(spider, jobdir, first)
    # The .part file appears only when the export begins, after the crawl.
    seen_part = wait_for_file(first.with_name("first.jsonl.part"), timeout=30)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)
    second = tmp_path / "second.jsonl"
    process = start(spider, jobdir, second)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode()
    urls = items_in([first, second])
    assert len(urls) == pages and max(urls.values()) == 1
    assert seen_part  # the kill did land during the export


class _Crash(Exception):
    pass


def _store_with_items(tmp_path: Path, n: int) -> JobStore:
    spider = Spider()
    spider.name = "unit"  # type: ignore[misc]
    store = JobStore(tmp_path / "job", spider)
    request = Request("http://x/")
    store.commit(request, [], [{"n": i} for i in range(n)], None)
    return store


@pytest.mark.parametrize("crash", ["before_rename", "after_rename"])
def test_export_cut_short_is_redone_exactly_once(tmp_path: Path, crash: str) -> None:
    store = _store_with_items(tmp_path, 5)
    output = Exporter(str(tmp_path / "out.jsonl"))

    def crashing_write(items: Iterator[dict[str, Any]], keep_existing: bool) -> None:
        for item in items:
            output.write(item)
        if crash == "after_rename":
            output.finalise()
        raise _Crash

    with pytest.raises(_Crash):
        store.export(output.target, crashing_write)
    output.abort()
    store.close()

    store = JobStore(tmp_path / "job", store.spider)
    store.commit(Request("http://x/2"), [], [{"n": 5}], None)
    again = Exporter(str(tmp_path / ("out.jsonl" if crash == "before_rename" else "more.jsonl")))
    store.export(again.target, again.write_and_finalise)
    store.close()
    lines = []
    for name in ("out.jsonl", "more.jsonl"):
        path = tmp_path / name
        if path.exists():
            lines += [json.loads(line)["n"] for line in path.read_text().splitlines()]
    assert sorted(lines) == [0, 1, 2, 3, 4, 5]


def test_resume_after_deadline_continues_and_keeps_one_complete_file(server: FaultServer,
                                                                    tmp_path: Path) -> None:
    for i in range(30):
        server.add_page(f"/{i}", [f"/{i + 1}"] if i < 29 else [])
    spider = link_spider(server.url("/0"))
    out = str(tmp_path / "out.jsonl")
    first = crawl(spider, frontier__jobdir=str(tmp_path / "job"), crawl__max_pages=10)
    assert first.finish_reason == "max_pages"
    from scraper.api import crawl as api_crawl

    api_crawl(spider, {"frontier.jobdir": str(tmp_path / "job"), "crawl.max_pages": 10,
                       "crawl.obey_robots": False}, output=out)
    second = api_crawl(spider, {"frontier.jobdir": str(tmp_path / "job"),
                                "crawl.obey_robots": False}, output=out)
    assert second.finish_reason == "finished"
    assert second.stats["pages"] == 30  # counters carried over from the earlier runs
    urls = items_in([Path(out)])
    # every item of the crawl, once: run 1 had no output, so its items went out with run 2
    assert len(urls) == 30 and max(urls.values()) == 1
    assert len(server.requests) == 30  # nothing fetched twice


def test_a_finished_job_starts_a_new_crawl(server: FaultServer, tmp_path: Path) -> None:
    server.add_page("/", ["/a"])
    server.add_page("/a")
    spider = link_spider(server.url("/"))
    for _ in range(2):
        result = crawl(spider, frontier__jobdir=str(tmp_path / "job"))
        assert result.stats["pages"] == 2
    assert server.count("/") == 2


def test_jobdir_of_another_spider_is_refused(server: FaultServer, tmp_path: Path) -> None:
    server.add_page("/")
    crawl(link_spider(server.url("/")), frontier__jobdir=str(tmp_path / "job"))

    class Other(Spider):
        name = "other"
        start_urls = [server.url("/")]

    with pytest.raises(ConfigError, match="belongs to spider 'links'"):
        crawl(Other, frontier__jobdir=str(tmp_path / "job"))


def test_requests_with_lambdas_are_refused_with_a_jobdir(server: FaultServer,
                                                         tmp_path: Path) -> None:
    server.add_page("/", ["/a"])

    class Lambda(Spider):
        name = "lambda"
        start_urls = [server.url("/")]

        def parse(self, response: Any) -> Any:
            yield Request(response.urljoin("/a"), callback=lambda r: None)

    result = crawl(Lambda, frontier__jobdir=str(tmp_path / "job"))
    assert result.stats["failed_reasons"] == {"callback_error": 1}
    assert server.count("/a") == 0


def test_requests_cancelled_by_the_deadline_run_in_the_next_run(server: FaultServer,
                                                                tmp_path: Path) -> None:
    release = threading.Event()

    def held(exchange: Exchange) -> None:
        while not release.wait(0.05) and not exchange.stopping:
            pass
        exchange.respond(200, "<html><title>held</title></html>", {"Content-Type": "text/html"})

    server.add_page("/", ["/held"])
    server.add_handler("/held", held)
    spider = link_spider(server.url("/"))
    jobdir = str(tmp_path / "job")
    first = crawl(spider, frontier__jobdir=jobdir, crawl__deadline=1)
    assert first.exit_code == 3 and first.stats["failed_reasons"] == {"deadline": 1}
    release.set()
    second = crawl(spider, frontier__jobdir=jobdir)
    assert second.finish_reason == "finished"
    assert [item["url"] for item in second.items] == [server.url("/held")]
    assert server.count("/held") == 2  # cancelled in the first run, fetched in the second
