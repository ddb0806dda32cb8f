"""Ending on time: the job deadline and SIGINT/SIGTERM, in a real `scraper crawl` process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import crawl, hanging_site, link_spider, write_site_spider
from servers import Exchange, FaultServer


def write_spider(tmp_path: Path, start: str) -> Path:
    path = tmp_path / "site_spider.py"
    return write_site_spider(path, start)


def start_crawl(spider: Path, tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "scraper", "crawl", str(spider), "-o",
               str(tmp_path / "items.jsonl"), "--stats", str(tmp_path / "stats.json"), "-q",
               *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def read_outputs(tmp_path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    assert not (tmp_path / "items.jsonl.part").exists()
    items = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    stats = json.loads((tmp_path / "stats.json").read_text())
    return items, stats


def test_deadline_exits_3_on_time_with_finalised_output(server: FaultServer,
                                                         tmp_path: Path) -> None:
    hanging_site(server)
    spider = write_spider(tmp_path, server.url("/"))
    # What starting Python and importing the CLI costs on this machine right now, so that
    # a busy machine's slow start is not blamed on the deadline.
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import scraper.cli"], check=True)
    startup = time.monotonic() - started
    started = time.monotonic()
    process = start_crawl(spider, tmp_path, "--deadline", "2", "-s", "crawl.per_host=4")
    process.communicate(timeout=10)
    took = time.monotonic() - started
    assert process.returncode == 3
    assert took - startup < 3.5  # on an idle machine took is about 2.6 s in all
    items, stats = read_outputs(tmp_path)
    assert len(items) == 11  # the index and the ten good pages, scraped before the deadline
    assert stats["finish_reason"] == "deadline" and stats["exit_code"] == 3
    assert stats["failed_reasons"].get("deadline", 0) == 4  # the four hung in flight
    assert stats["queued_left"] == 6


def test_deadline_in_process_leaves_no_thread(server: FaultServer) -> None:
    hanging_site(server, good=2, hanging=6)
    started = time.monotonic()
    result = crawl(link_spider(server.url("/")), crawl__deadline=1, crawl__per_host=3)
    assert time.monotonic() - started < 2.2
    assert result.finish_reason == "deadline"
    assert len(result.items) == 3
    # the autouse fixture asserts that no crawl thread is left running


def test_deadline_interrupts_retry_waits(server: FaultServer) -> None:
    server.add_status_sequence("/", [(503, {"Retry-After": "60"})])
    started = time.monotonic()
    result = crawl(link_spider(server.url("/")), crawl__deadline=1, retry__max_backoff=120)
    assert time.monotonic() - started < 2.0
    assert result.exit_code == 3
    assert server.count("/") == 1


def slow_site(server: FaultServer, pages: int = 200) -> None:
    def slow(exchange: Exchange) -> None:
        exchange.wait(0.1)
        exchange.respond(200, "<html><title>p</title></html>", {"Content-Type": "text/html"})

    server.add_page("/", [f"/p/{i}" for i in range(pages)])
    for i in range(pages):
        server.add_handler(f"/p/{i}", slow)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_first_signal_finishes_in_flight_and_exits_130(server: FaultServer, tmp_path: Path,
                                                       signum: int) -> None:
    slow_site(server)
    process = start_crawl(write_spider(tmp_path, server.url("/")), tmp_path,
                          "-s", "crawl.per_host=4")
    assert server.wait_for_requests(10, timeout=10)
    os.kill(process.pid, signum)
    process.communicate(timeout=10)
    assert process.returncode == 130
    items, stats = read_outputs(tmp_path)
    assert stats["finish_reason"] == "interrupted"
    assert stats["failed"] == 0  # in-flight requests were allowed to finish
    assert len(items) == stats["items"] == stats["pages"] < 201
    pages_requested = [r for r in server.requests if r.path != "/robots.txt"]
    assert stats["pages"] == len(pages_requested)  # every request sent became a page


def test_second_signal_cancels_at_once(server: FaultServer, tmp_path: Path) -> None:
    hanging_site(server, good=0, hanging=8)
    process = start_crawl(write_spider(tmp_path, server.url("/")), tmp_path,
                          "-s", "crawl.shutdown_grace=60", "-s", "crawl.per_host=4")
    assert server.wait_for_requests(5, timeout=10)
    started = time.monotonic()
    # Two different signals, so that the kernel cannot merge them into one.
    os.kill(process.pid, signal.SIGTERM)
    os.kill(process.pid, signal.SIGINT)
    process.communicate(timeout=10)
    assert time.monotonic() - started < 3.0
    assert process.returncode == 130
    items, stats = read_outputs(tmp_path)
    assert stats["failed_reasons"] == {"interrupted": 4}
    assert len(items) == 1
