"""A crawl shared through Redis survives its infrastructure: Redis stopped and started
again during the crawl, Redis gone for longer than `frontier.outage_grace`, connections
per host counted across processes, TLS and ACL credentials to Redis."""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import RedisServer, ring_site, write_site_spider
from servers import FaultServer

from scraper.frontier.shared import drain_items, status


def start(spider: Path, url: str, output: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "scraper", "crawl", str(spider), "-o", str(output),
         "-s", f"frontier.backend={url!r}", "-s", "crawl.workers=4",
         "-s", "crawl.per_host=3", "-s", "crawl.obey_robots=false",
         "--stats", str(output.with_suffix(".stats.json")), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def written(outputs: list[Path]) -> collections.Counter[str]:
    return collections.Counter(json.loads(line)["url"] for out in outputs if out.exists()
                               for line in out.read_text().splitlines())


def in_stream(url: str) -> collections.Counter[str]:
    return collections.Counter(item["url"] for _, item in drain_items(url, "site"))


def outage(redis: RedisServer, server: FaultServer, after: int, seconds: float) -> None:
    """Stop Redis once the site has had `after` requests; start it again `seconds` later."""
    assert server.wait_for_requests(after, timeout=30)
    redis.stop()
    time.sleep(seconds)  # the outage itself: nothing to wait for
    redis.start()


def test_redis_restarted_during_a_two_process_crawl(server: FaultServer, tmp_path: Path,
                                                     redis_server: RedisServer) -> None:
    pages = 200
    ring_site(server, pages, wait=0.04)
    spider = write_site_spider(tmp_path / "site.py", server.url("/0"))
    outputs = [tmp_path / f"items-{n}.jsonl" for n in range(2)]
    running = [start(spider, redis_server.url, out) for out in outputs]
    outage(redis_server, server, after=30, seconds=2)
    for process in running:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()[-3000:]
        assert b"Redis unreachable" in stderr  # the outage was seen, and ridden out
        assert b"Redis is back" in stderr

    urls = {server.url(f"/{i}") for i in range(pages)}
    items = written(outputs)
    assert set(items) == urls and max(items.values()) == 1  # every item exactly once
    stream = in_stream(redis_server.url)
    assert set(stream) == urls and max(stream.values()) == 1
    counters = status(redis_server.url, "site")
    assert counters["queued"] == 0 and counters["leases"] == 0
    assert counters["items"] == pages


def test_redis_gone_past_the_grace_stops_cleanly_then_resumes(
        server: FaultServer, tmp_path: Path, redis_server: RedisServer) -> None:
    pages = 150
    ring_site(server, pages, wait=0.04)
    spider = write_site_spider(tmp_path / "site.py", server.url("/0"))
    first = tmp_path / "first.jsonl"
    # The leases this process holds when it stops expire 2 s later: then the resume can
    # take them again (their process is gone).
    lease = ("-s", "frontier.lease_timeout=2")
    process = start(spider, redis_server.url, first, "-s", "frontier.outage_grace=2", *lease)
    assert server.wait_for_requests(20, timeout=30)
    redis_server.stop()
    _, stderr = process.communicate(timeout=60)
    first_log = stderr.decode()
    assert process.returncode == 1, first_log[-3000:]
    assert "frontier.outage_grace" in first_log
    stats = json.loads(first.with_suffix(".stats.json").read_text())
    assert stats["finish_reason"] == "error"
    assert first.exists() and not list(tmp_path.glob("*.part"))  # finalised

    redis_server.start()
    second = tmp_path / "second.jsonl"
    process = start(spider, redis_server.url, second, *lease)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()[-3000:]

    urls = {server.url(f"/{i}") for i in range(pages)}
    stream = in_stream(redis_server.url)
    assert set(stream) == urls and max(stream.values()) == 1  # the stream: exactly once
    items = written([first, second])
    assert max(items.values()) == 1  # no item written twice
    # An ack whose reply Redis never sent (it was stopping) may have been applied: its
    # item is then in the stream only. The first process names every such ack.
    unconfirmed = set(re.findall(r"ack of (\S+) not confirmed", first_log))
    assert urls - set(items) <= unconfirmed
    assert len(unconfirmed) <= 4  # at most the requests in flight (crawl.workers)


class _Spider:
    name = "t"

    def parse(self, response: object) -> None:
        """Never called: the frontier only stores requests."""


def open_frontier(url: str, **options: object) -> object:
    from scraper.frontier import FrontierOptions
    from scraper.frontier.shared import RedisFrontier
    from scraper.stats import Stats

    return RedisFrontier(FrontierOptions(per_host=4, **options), Stats(), url=url,
                         name="t", spider=_Spider(), lease_timeout=30, cleanup=False,
                         outage_grace=10)


def test_a_reply_lost_after_redis_ran_the_round_trip_changes_nothing(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis ran the ack, the children and the next take, and the connection broke before
    the reply: the round trip sent again acknowledges once, takes nothing more, and hands
    out what the first one took."""
    import redis

    from scraper.frontier import Outcome
    from scraper.request import Request

    frontier = open_frontier(redis_url)
    try:
        frontier.add([Request(f"http://a.test/{i}") for i in range(3)])
        first = frontier.next()
        assert first is not None
        real = redis.connection.Connection.read_response
        lost = []
        caller = threading.current_thread()

        def read_then_lose_the_reply(self: redis.connection.Connection, *args: object,
                                     **kwargs: object) -> object:
            result = real(self, *args, **kwargs)
            if not lost and threading.current_thread() is caller:
                lost.append(result)
                raise redis.ConnectionError("connection lost before the reply")
            return result

        monkeypatch.setattr(redis.connection.Connection, "read_response",
                            read_then_lose_the_reply)
        children = (Request("http://a.test/child"),)
        kept = frontier.finish(first, Outcome(children=children, items=({"n": 1},)))
        monkeypatch.undo()
        assert lost and kept == [{"n": 1}]
        taken = frontier.next()  # what the lost reply's take took
        assert taken is not None and taken.url == "http://a.test/1"
        assert len(list(drain_items(redis_url, "t"))) == 1  # acknowledged once
        counts = status(redis_url, "t")
        assert counts["leases"] == 1  # the take sent again took nothing more
        assert counts["queued"] == 2 and counts["requests_done"] == 1
    finally:
        frontier.stop()
        frontier.close()


def test_the_pool_reopens_a_closed_connection_only_when_no_open_one_is_idle() -> None:
    """A connection closed by `Connection: close` (given back to another process) goes
    back to the pool as a placeholder: an idle open connection is handed out first."""
    from types import SimpleNamespace

    from scraper.client import _LongestIdleFirstQueue

    queue_ = _LongestIdleFirstQueue(2)
    queue_.put(None)
    queue_.put(None)  # as urllib3 fills a new pool
    queue_.get()
    queue_.get()  # both slots in use
    open_one = SimpleNamespace(sock=object())
    queue_.put(SimpleNamespace(sock=None))  # closed
    queue_.put(open_one)
    assert queue_.get() is open_one
    assert queue_.get() is None  # then a placeholder: a new connection when needed


def test_connections_to_a_host_stay_within_per_host_across_processes(
        server: FaultServer, tmp_path: Path, redis_url: str) -> None:
    pages = 160
    ring_site(server, pages, wait=0.03)
    spider = write_site_spider(tmp_path / "site.py", server.url("/0"))
    outputs = [tmp_path / f"items-{n}.jsonl" for n in range(2)]
    running = [start(spider, redis_url, out, "-s", "crawl.per_host=4") for out in outputs]
    for process in running:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr.decode()[-3000:]
    items = written(outputs)
    assert len(items) == pages and max(items.values()) == 1
    assert all(len(out.read_text().splitlines()) >= 10 for out in outputs)  # none starved
    assert server.max_concurrent <= 4
    assert server.max_open_connections <= 4  # open at once, across both processes
    # A process that opened more connections than its share before the other joined
    # gives the excess back (closes them), and the other opens as many.
    given_back = sum(json.loads(out.with_suffix(".stats.json").read_text()).get(
        "connections_given_back", 0) for out in outputs)
    assert given_back <= 2
    assert server.connections_accepted <= 4 + given_back


SECRET = "s3cr3t-pa55"


@pytest.fixture
def tls_redis(tmp_path: Path) -> object:
    directory = tmp_path / "redis-tls"
    directory.mkdir()
    server = RedisServer(directory, tls=True, users=(
        "user default off",
        f"user crawler on >{SECRET} ~* &* +@all",
    )).start()
    yield server
    server.stop()


def test_rediss_with_an_acl_user_and_the_password_shown_nowhere(
        server: FaultServer, tmp_path: Path, tls_redis: RedisServer) -> None:
    from servers import self_signed_cert

    ca = self_signed_cert()[0]
    url = (f"rediss://crawler:{SECRET}@127.0.0.1:{tls_redis.port}/0?ssl_ca_certs={ca}")
    ring_site(server, 20, wait=0)
    spider = write_site_spider(tmp_path / "site.py", server.url("/0"))
    out = tmp_path / "items.jsonl"
    log_file = tmp_path / "crawl.log"
    crawl = start(spider, url, out, "--log-file", str(log_file), "--log-level", "debug")
    stdout, stderr = crawl.communicate(timeout=60)
    assert crawl.returncode == 0, stderr.decode()[-3000:]
    assert len(out.read_text().splitlines()) == 20
    assert len(list(drain_items(url, "site"))) == 20  # the stream, over TLS
    unverified = f"rediss://crawler:{SECRET}@127.0.0.1:{tls_redis.port}/0?ssl_cert_reqs=none"
    assert len(list(drain_items(unverified, "site"))) == 20

    def scraper(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "scraper", *args], capture_output=True,
                              text=True, timeout=60)

    shown = [stdout.decode(), stderr.decode(), log_file.read_text(),
             out.with_suffix(".stats.json").read_text()]
    for args in (["status", "--backend", url, "--name", "site", "--json"],
                 ["settings", "-s", f"frontier.backend={url!r}"],
                 ["settings", "--json", "-s", f"frontier.backend={url!r}"]):
        done = scraper(*args)
        assert done.returncode == 0, done.stderr
        shown += [done.stdout, done.stderr]
    assert json.loads(shown[-6])["items"] == 20  # `scraper status` read it
    assert "crawler:***@" in shown[-4]  # the settings show the URL, masked
    # Wrong password, and a server that is not there: errors name the URL, masked.
    for bad in (url.replace(SECRET, SECRET + "x"),
                url.replace(str(tls_redis.port), "1")):
        done = scraper("crawl", str(spider), "-s", f"frontier.backend={bad!r}")
        assert done.returncode != 0 and "cannot reach Redis" in done.stderr, done.stderr
        shown += [done.stdout, done.stderr]
        done = scraper("status", "--backend", bad, "--name", "site")
        assert done.returncode != 0
        shown += [done.stdout, done.stderr]
    assert not [text for text in shown if SECRET in text]


def test_scripts_lost_with_a_restart_are_loaded_again(redis_url: str) -> None:
    import redis

    from scraper.frontier import Outcome
    from scraper.request import Request

    frontier = open_frontier(redis_url)
    client = redis.Redis.from_url(redis_url)
    try:
        frontier.add([Request(f"http://a.test/{i}") for i in range(2)])
        first = frontier.next()
        assert first is not None
        client.script_flush()  # what a restart does to the script cache
        assert frontier.finish(first, Outcome(items=({"n": 1},))) == [{"n": 1}]
        second = frontier.next()
        assert second is not None and second.url == "http://a.test/1"
        counts = status(redis_url, "t")
        assert counts["requests_done"] == 1 and counts["leases"] == 1
    finally:
        client.close()
        frontier.stop()
        frontier.close()
