"""Shared fixtures: loopback fault servers, a real redis-server, a crawl helper. Never the
internet."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import FaultServer

import scraper
from scraper import Spider
from scraper.engine import CrawlResult

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv


@pytest.fixture
def make_server() -> Iterator[Callable[..., FaultServer]]:
    started: list[FaultServer] = []

    def make(**kwargs: Any) -> FaultServer:
        srv = FaultServer(**kwargs).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Each test runs in an empty directory, with no SCRAPER_* variables, and leaks no threads."""
    for name in list(__import__("os").environ):
        if name.startswith("SCRAPER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()
              and t.name.startswith("scraper-") and not t.name.startswith("scraper-dns")]
    for thread in leaked:
        thread.join(timeout=2)
    assert not [t.name for t in leaked if t.is_alive()], "crawl threads left running"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server process on a free loopback port, with no persistence."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is not installed: .ci/run installs it")
            pytest.skip("redis-server is not installed")
        port = free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(directory)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.process.stdout is not None
        for line in self.process.stdout:  # wait for the server to say it is ready
            if b"Ready to accept connections" in line:
                break
        else:
            pytest.fail("redis-server did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.communicate(timeout=10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


def link_spider(start: str, *, callback_items: bool = True, **attrs: Any) -> type[Spider]:
    """A spider that follows every link and yields one item per page."""

    class LinkSpider(Spider):
        name = "links"
        start_urls = [start]

        def parse(self, response: Any) -> Any:
            if callback_items:
                yield {"url": response.url, "status": response.status}
            yield from response.follow_all("a[href]")

    for key, value in attrs.items():
        setattr(LinkSpider, key, value)
    return LinkSpider


def crawl(spider: type[Spider], **settings: Any) -> CrawlResult:
    """Run a crawl with dotted settings given as keyword arguments (crawl__per_host=2).

    robots.txt is off unless asked for, so that request counts are about the test's pages.
    """
    settings.setdefault("crawl__obey_robots", False)
    dotted = {key.replace("__", "."): value for key, value in settings.items()}
    return scraper.crawl(spider, dotted)


SITE_SPIDER = '''
from scraper import Spider

class Site(Spider):
    name = "site"
    start_urls = ["{start}"]

    def parse(self, response):
        yield {{"url": response.url}}
        yield from response.follow_all("a[href]")
'''


def write_site_spider(path: Path, start: str) -> Path:
    """A spider file (name "site") that yields each page's URL and follows every link,
    for tests that run `scraper crawl` in a subprocess."""
    path.write_text(SITE_SPIDER.format(start=start))
    return path
