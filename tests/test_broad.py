"""Broad crawls: the connection budget across hosts, a crawl under a low open-file limit,
lazy start requests, the compact seen set.

`AnyHostServer` answers every Host name (reached through `http.resolve`) on one loopback
port, in one thread with a selectors loop. It counts the connections it accepted and the
most it had open at once; before accepting each connection it handles the ends of
connections already received, so a connection the client closed before opening another
is never counted open alongside it.
"""

from __future__ import annotations

import itertools
import json
import selectors
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import scraper
from scraper.frontier.seen import SeenSet

PAGES_PER_HOST = 3  # "/" and the pages it links to


class AnyHostServer:
    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._buffers: dict[socket.socket, bytes] = {}
        self.accepted = self.open = self.max_open = self.requests = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> AnyHostServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in list(self._buffers):
            sock.close()
        self._listener.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            events = self._selector.select(0.05)
            accept = False
            for key, _ in events:
                if key.fileobj is self._listener:
                    accept = True
                else:
                    self._serve(key.fileobj)  # type: ignore[arg-type]
            if accept:
                while True:
                    # Ends that arrived before the next pending connect are counted first
                    # (a FIN sent before a SYN may still be on its way when another CPU
                    # carried the SYN: a short grace before a new peak is recorded).
                    self._serve_ready(0.02 if self.open >= self.max_open else 0.0)
                    try:
                        sock, _ = self._listener.accept()
                    except BlockingIOError:
                        break
                    sock.setblocking(False)
                    self._buffers[sock] = b""
                    self._selector.register(sock, selectors.EVENT_READ)
                    self.accepted += 1
                    self.open += 1
                    self.max_open = max(self.max_open, self.open)

    def _serve_ready(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        while True:
            for key, _ in self._selector.select(max(0.0, deadline - time.monotonic())):
                if key.fileobj is not self._listener:
                    self._serve(key.fileobj)  # type: ignore[arg-type]
            if time.monotonic() >= deadline:
                return

    def _serve(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._selector.unregister(sock)
            del self._buffers[sock]
            sock.close()
            self.open -= 1
            return
        buffer = self._buffers[sock] + data
        while b"\r\n\r\n" in buffer:
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            path = head.split(b" ", 2)[1].decode()
            self.requests += 1
            sock.setblocking(True)
            sock.sendall(self._answer(path))
            sock.setblocking(False)
        self._buffers[sock] = buffer

    @staticmethod
    def _answer(path: str) -> bytes:
        if path == "/":
            links = "".join(f'<a href="/p{i}">{i}</a>' for i in range(1, PAGES_PER_HOST))
            status, body = "200 OK", f"<html><body>{links}</body></html>".encode()
        elif path.startswith("/p"):
            status, body = "200 OK", b"<html><body>page</body></html>"
        else:
            status, body = "404 Not Found", b"no"
        return (f"HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: "
                f"{len(body)}\r\n\r\n").encode() + body


def many_hosts_spider(port: int, hosts: int) -> type[scraper.Spider]:
    class ManyHosts(scraper.Spider):
        name = "many_hosts"

        def start_requests(self) -> Iterator[scraper.Request]:
            for i in range(hosts):
                yield scraper.Request(f"http://h{i}.bench.test:{port}/")

        def parse(self, response: Any) -> Iterator[Any]:
            yield {"url": response.url}
            yield from response.follow_all("a[href]")

    return ManyHosts


def test_the_connection_budget_holds_across_many_hosts_and_connections_are_reused() -> None:
    hosts = 300
    with AnyHostServer() as server:
        result = scraper.crawl(many_hosts_spider(server.port, hosts), {
            "http.resolve": {"*.bench.test": "127.0.0.1"}, "http.max_connections": 50,
            "crawl.workers": 16, "crawl.per_host": 2})
    stats = result.stats
    assert stats["failed"] == 0 and stats["pages"] == hosts * PAGES_PER_HOST
    assert server.max_open <= 50
    assert stats["connections_opened"] == server.accepted
    assert stats["requests"] == server.requests == hosts * (PAGES_PER_HOST + 1)  # robots.txt
    # Each host's requests share its connection: about one connection per host.
    assert server.accepted <= hosts * 1.25
    assert stats["connections_reused"] == stats["requests"] - stats["connections_opened"]
    assert 0 < stats["hosts_active"] <= 50
    assert stats["connections_evicted"] > 0  # idle hosts' pools made room for new hosts
    assert stats["connections_closed"] == stats["connections_opened"]


CHILD = textwrap.dedent("""
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    sys.path.insert(0, sys.argv[3])
    import scraper
    from test_broad import many_hosts_spider
    result = scraper.crawl(many_hosts_spider(int(sys.argv[1]), int(sys.argv[2])), {
        "http.resolve": {"*.bench.test": "127.0.0.1"}, "crawl.workers": 16,
        "crawl.per_host": 2, "http.idle_timeout": 60})
    print(json.dumps(result.stats))
""")


def test_a_crawl_under_an_open_file_limit_of_256_fails_nothing(tmp_path: Any) -> None:
    hosts = 400  # more hosts than descriptors: each would keep an idle connection
    tests_dir = str(__import__("pathlib").Path(__file__).parent)
    with AnyHostServer() as server:
        done = subprocess.run([sys.executable, "-c", CHILD, str(server.port), str(hosts),
                               tests_dir], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert stats["failed"] == 0 and stats["failed_reasons"] == {}
    assert stats["pages"] == hosts * PAGES_PER_HOST
    assert server.max_open <= 256 - 64
    assert "Too many open files" not in done.stderr


def test_start_requests_are_read_lazily(tmp_path: Any) -> None:
    read_when_first_page: list[int] = []
    counter = itertools.count()
    yielded = [0]

    with AnyHostServer() as server:
        class Endless(scraper.Spider):
            name = "endless"

            def start_requests(self) -> Iterator[scraper.Request]:
                for i in counter:  # never ends
                    yielded[0] = i + 1
                    yield scraper.Request(f"http://h{i % 50}.bench.test:{server.port}/p{i}")

            def parse(self, response: Any) -> Iterator[Any]:
                if not read_when_first_page:
                    read_when_first_page.append(yielded[0])
                yield {"url": response.url}

        result = scraper.crawl(Endless, {"http.resolve": {"*.bench.test": "127.0.0.1"},
                                         "crawl.max_pages": 30, "crawl.obey_robots": False})
    assert result.finish_reason == "max_pages" and result.stats["pages"] == 30
    # A bounded read-ahead, not the whole generator, before and after the first page.
    assert read_when_first_page and read_when_first_page[0] <= 12_000
    assert yielded[0] <= 12_000


def test_a_bad_start_request_after_the_first_is_counted_not_fatal() -> None:
    with AnyHostServer() as server:
        class SomeBad(scraper.Spider):
            name = "some_bad"

            def start_requests(self) -> Iterator[Any]:
                yield scraper.Request(f"http://a.bench.test:{server.port}/")
                yield scraper.Request("http://exa mple.com:99999/")
                yield "not a request"
                yield scraper.Request(f"http://b.bench.test:{server.port}/")

            def parse(self, response: Any) -> Iterator[Any]:
                yield {"url": response.url}

        result = scraper.crawl(SomeBad, {"http.resolve": {"*.bench.test": "127.0.0.1"},
                                         "crawl.obey_robots": False})
    stats = result.stats
    assert stats["pages"] == 2 and stats["failed"] == 0  # b's host was allowed as read
    assert stats["filtered_bad_url"] == 2
    assert stats["filtered_offsite"] == 0


def test_a_spider_without_start_requests_is_a_config_error() -> None:
    class Nothing(scraper.Spider):
        name = "nothing"

        def start_requests(self) -> Iterator[scraper.Request]:
            yield from ()

    with pytest.raises(scraper.ConfigError, match="no start URLs"):
        scraper.crawl(Nothing)


def test_the_seen_set_keeps_keys_through_growth() -> None:
    seen = SeenSet()
    keys = [f"http://example.com/{i}" for i in range(20_000)]
    assert all(seen.add(key) for key in keys)
    assert len(seen) == 20_000
    assert not any(seen.add(key) for key in keys)
    assert all(key in seen for key in keys)
    assert "http://example.com/other" not in seen
