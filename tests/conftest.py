"""Shared fixtures: loopback fault servers, a real redis-server, a crawl helper. Never the
internet."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import Exchange, FaultServer

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
    """A real redis-server on a free loopback port, with its files in `directory`; it can
    be stopped and started again on the same port and directory (an outage). `aof`:
    append-only file fsynced on every write, so a restart loses nothing. `tls`: serve
    TLS only (the port is then a `--tls-port`), with `tests/servers.py`'s self-signed
    certificate. `users`: ACL lines (`user NAME on >PASSWORD ~* &* +@all`)."""

    def __init__(self, directory: Path, *, aof: bool = False, tls: bool = False,
                 users: tuple[str, ...] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI"):
                pytest.fail("redis-server is not installed: .ci/run installs it")
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.aof = aof
        self.tls = tls
        self.users = users
        self.process: subprocess.Popen[bytes] | None = None
        self.log = directory / f"redis-{self.port}.log"

    def command(self) -> list[str]:
        args = [self.binary, "--bind", "127.0.0.1", "--save", "", "--dir",
                str(self.directory), "--logfile", str(self.log)]
        if self.aof:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        if self.tls:
            from servers import self_signed_cert

            cert, key = self_signed_cert()
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                     "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                     "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.users:
            acl = self.directory / f"users-{self.port}.acl"
            acl.write_text("".join(line + "\n" for line in self.users))
            args += ["--aclfile", str(acl)]
        return args

    def start(self) -> RedisServer:
        offset = self.log.stat().st_size if self.log.exists() else 0
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # its log says when it accepts connections
            text = self.log.read_text(errors="replace")[offset:] if self.log.exists() else ""
            if "Ready to accept connections" in text:
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"redis-server did not start: {text[-2000:]}")

    def stop(self) -> None:
        """SIGTERM: Redis fsyncs its append-only file and exits."""
        if self.process is not None:
            self.process.terminate()
            self.process.communicate(timeout=20)
            self.process = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server with its append-only file on: stop() and start() are an outage."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, aof=True).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    directory = tmp_path / "redis-plain"
    directory.mkdir()
    server = RedisServer(directory).start()
    yield server.url
    server.stop()


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


# -- small sites the crawl tests share --------------------------------------------------------


def star(server: FaultServer, leaves: int) -> list[str]:
    """`/` linking to `/p/0` .. `/p/{leaves-1}`, each a page with no links."""
    links = [f"/p/{i}" for i in range(leaves)]
    server.add_page("/", links)
    for link in links:
        server.add_page(link)
    return links


def slow_star(server: FaultServer, leaves: int, wait: float) -> None:
    """`star`, each leaf answered after `wait` seconds."""
    def slow(exchange: Exchange) -> None:
        exchange.wait(wait)
        exchange.respond(200, "<html></html>", {"Content-Type": "text/html"})

    server.add_page("/", [f"/p/{i}" for i in range(leaves)])
    for i in range(leaves):
        server.add_handler(f"/p/{i}", slow)


def ring_site(server: FaultServer, pages: int, wait: float = 0.01) -> None:
    """Pages /0 .. /{pages-1}, each linking to three others, each answered after `wait`."""

    def page(exchange: Exchange) -> None:
        i = int(exchange.request.path.strip("/"))
        exchange.wait(wait)
        links = "".join(f'<a href="/{(i + k) % pages}">x</a>' for k in (1, 2, 5))
        exchange.respond(200, f"<html><body>{links}</body></html>",
                         {"Content-Type": "text/html"})

    for i in range(pages):
        server.add_handler(f"/{i}", page)


def hanging_site(server: FaultServer, good: int = 10, hanging: int = 10) -> None:
    """`/` linking to `good` pages and to `hanging` pages that never answer."""
    links = [f"/ok/{i}" for i in range(good)] + [f"/hang/{i}" for i in range(hanging)]
    server.add_page("/", links)
    for i in range(good):
        server.add_page(f"/ok/{i}")
    for i in range(hanging):
        server.add_hang(f"/hang/{i}")


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (needs root; skipped where it cannot be mounted)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)
