"""The frontier contract: every crawl setting means the same on every backend.

One suite, run against the memory frontier (at its defaults, and with a queue of 2 and a
seen set of 3 so that both spill to their file at once), the SQLite one (a jobdir) and
the Redis one (a real redis-server on loopback). Everything is measured at the server or
in the stats.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import crawl, hanging_site, link_spider, slow_star, star
from servers import Exchange, FaultServer

import scraper
from scraper.api import build_crawler, prepare
from scraper.engine import CrawlResult

BACKENDS = ("memory", "spill", "sqlite", "redis")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The settings (crawl() keyword form) selecting one backend, fresh for the test."""
    if request.param == "memory":
        return {}
    if request.param == "spill":  # the memory frontier, its queue and seen set spilling
        return {"frontier__memory_queue": 2, "frontier__memory_seen": 3}
    if request.param == "sqlite":
        return {"frontier__jobdir": str(tmp_path / f"job-{uuid.uuid4().hex[:8]}")}
    url = request.getfixturevalue("redis_url")
    return {"frontier__backend": url, "frontier__name": f"contract-{uuid.uuid4().hex}"}


def run(backend: dict[str, Any], spider: type[scraper.Spider], **settings: Any) -> CrawlResult:
    return crawl(spider, **backend, **settings)


def paths(server: FaultServer) -> Counter[str]:
    return Counter(r.path for r in server.requests)


def start_gaps(server: FaultServer, prefix: str = "/") -> list[float]:
    starts = sorted(r.started for r in server.requests if r.path.startswith(prefix))
    return [b - a for a, b in itertools.pairwise(starts)]


def no_workers_left() -> bool:
    return not [t for t in threading.enumerate()
                if t.name.startswith("scraper-worker") and t.is_alive()]


# -- limits ----------------------------------------------------------------------------------


def test_max_pages(server: FaultServer, backend: dict[str, Any]) -> None:
    star(server, 8)
    result = run(backend, link_spider(server.url("/")), crawl__max_pages=3,
                 crawl__per_host=4, crawl__workers=4)
    assert sum(paths(server).values()) == 3  # exactly three pages, not one more
    assert result.finish_reason == "max_pages" and result.exit_code == 0
    stats = result.stats
    assert stats["pages"] == stats["items"] == stats["requests"] == 3
    assert stats["seen"] == 9  # the index's eight links were all admitted
    assert stats["queued_left"] == 6


def test_depth_limit(server: FaultServer, backend: dict[str, Any]) -> None:
    for i in range(8):  # a chain: /c/0 -> /c/1 -> ... -> /c/7
        server.add_page(f"/c/{i}", [f"/c/{i + 1}"])
    result = run(backend, link_spider(server.url("/c/0")), crawl__depth_limit=2)
    assert sorted(paths(server)) == ["/c/0", "/c/1", "/c/2"]
    assert result.stats["filtered_depth"] == 1
    assert result.stats["pages"] == 3 and result.finish_reason == "finished"


def test_per_host_concurrency_measured_at_the_server(server: FaultServer,
                                                     backend: dict[str, Any]) -> None:
    slow_star(server, 10, 0.05)
    result = run(backend, link_spider(server.url("/")), crawl__per_host=2, crawl__workers=8)
    assert result.stats["pages"] == 11
    assert server.max_concurrent == 2


def test_delay_spaces_request_starts(server: FaultServer, backend: dict[str, Any]) -> None:
    star(server, 4)
    result = run(backend, link_spider(server.url("/")), crawl__delay=0.2, crawl__per_host=4,
                 crawl__workers=4)
    assert result.stats["pages"] == 5
    gaps = start_gaps(server)
    assert len(gaps) == 4
    # Handed out 0.2 s apart; the way to the server takes some milliseconds more or less
    # for each request (more on a busy machine).
    assert min(gaps) >= 0.15
    assert sum(gaps) / len(gaps) >= 0.19


def test_retry_after_pauses_the_host(server: FaultServer, backend: dict[str, Any]) -> None:
    server.add_status_sequence("/a", [(503, {"Retry-After": "1"}), 200],
                               body=b"<html>a</html>")
    for path in ("/b", "/c"):
        server.add_page(path)
    server.add_page("/", ["/a", "/b", "/c"])
    result = run(backend, link_spider(server.url("/")), crawl__per_host=1,
                 retry__backoff=0.01)
    assert result.stats["pages"] == 4 and result.stats["failed"] == 0
    requests = server.requests
    throttled = next(r for r in requests if r.status == 503)
    later = [r.started for r in requests if r.started > throttled.started]
    assert len(later) == 3
    assert min(later) - throttled.started >= 0.95  # the whole host waited, not only /a


def test_autothrottle_slows_down_to_the_latency(make_server: Any,
                                               backend: dict[str, Any]) -> None:
    throttled, control = make_server(), make_server()
    for srv in (throttled, control):
        slow_star(srv, 10, 0.1)
    settings = {"crawl__per_host": 4, "crawl__workers": 4}
    run(backend, link_spider(throttled.url("/")), crawl__autothrottle=True, **settings)
    if "frontier__name" in backend:  # a second crawl: its own queue in Redis
        backend = {**backend, "frontier__name": backend["frontier__name"] + "-control"}
    if "frontier__jobdir" in backend:
        backend = {**backend, "frontier__jobdir": backend["frontier__jobdir"] + "-control"}
    run(backend, link_spider(control.url("/")), **settings)
    adapted = start_gaps(throttled, "/p/")[5:]  # once the delay has adapted to the latency
    unthrottled = start_gaps(control, "/p/")[5:]
    assert min(adapted) >= 0.04  # about one start per latency...
    assert min(unthrottled) < 0.04  # ...where without it four start at once


def test_failing_host_is_backed_off(server: FaultServer, backend: dict[str, Any]) -> None:
    down = [f"/down/{i}" for i in range(5)]
    server.add_page("/", down)
    for path in down:
        server.add_status_sequence(path, [500])
    result = run(backend, link_spider(server.url("/")), crawl__per_host=1, retry__attempts=1,
                 retry__backoff=0.05, retry__max_backoff=1)
    assert result.stats["failed_reasons"] == {"status:500": 5}
    assert result.exit_code == 1
    gaps = start_gaps(server, "/down/")
    assert gaps[1] >= 0.05 and gaps[2] >= 0.1 and gaps[3] >= 0.2  # doubling pauses


# -- robots, retries, dedup ------------------------------------------------------------------


def test_robots_gating(server: FaultServer, backend: dict[str, Any]) -> None:
    server.add("/robots.txt", "User-agent: *\nDisallow: /private\n", content_type="text/plain")
    server.add_page("/", ["/public", "/private/a", "/private/b", "/more"])
    for path in ("/public", "/private/a", "/private/b"):
        server.add_page(path)
    server.add_page("/more", ["/public", "/private/a"])
    result = run(backend, link_spider(server.url("/")), crawl__obey_robots=True,
                 crawl__per_host=4)
    fetched = paths(server)
    assert fetched["/robots.txt"] == 1  # once per origin and process
    assert fetched["/private/a"] == fetched["/private/b"] == 0
    assert fetched["/public"] == fetched["/more"] == fetched["/"] == 1
    assert server.requests[0].path == "/robots.txt"  # before any page of the host
    assert result.stats["filtered_robots"] == 2
    assert result.stats["pages"] == 3 and result.exit_code == 0


def test_robots_txt_is_read_once_per_origin_by_many_workers(
        server: FaultServer, backend: dict[str, Any]) -> None:
    def slow_robots(exchange: Exchange) -> None:
        exchange.wait(0.2)  # workers meet the origin while robots.txt is still being read
        exchange.respond(200, "User-agent: *\nAllow: /\n", {"Content-Type": "text/plain"})

    server.add_handler("/robots.txt", slow_robots)
    star(server, 6)
    result = run(backend, link_spider(server.url("/")), crawl__obey_robots=True,
                 crawl__per_host=4, crawl__workers=8)
    assert server.count("/robots.txt") == 1
    assert result.stats["pages"] == 7


def test_a_503_then_200_is_one_retry(server: FaultServer, backend: dict[str, Any]) -> None:
    server.add_page("/", ["/flaky"])
    server.add_status_sequence("/flaky", [503, 200], body=b"<html>ok</html>")
    result = run(backend, link_spider(server.url("/")), retry__backoff=0.01)
    stats = result.stats
    assert stats["retries"] == 1 and stats["failed"] == 0
    assert stats["pages"] == 2 and stats["items"] == 2
    assert stats["status_counts"] == {"200": 2, "503": 1}
    assert server.count("/flaky") == 2 and result.exit_code == 0


def test_dedup_fetches_every_url_once(server: FaultServer, backend: dict[str, Any]) -> None:
    mesh = ["/"] + [f"/m/{i}" for i in range(5)]
    for path in mesh:  # every page links to every page, itself included
        server.add_page(path, [*mesh, f"{path}#fragment"])
    result = run(backend, link_spider(server.url("/")), crawl__per_host=3)
    fetched = paths(server)
    assert sorted(fetched) == sorted(mesh) and set(fetched.values()) == {1}
    stats = result.stats
    assert stats["pages"] == 6 and stats["seen"] == 6
    assert stats["filtered_duplicate"] == 6 * 7 - 5  # every link but the five new ones


# -- stopping --------------------------------------------------------------------------------


def test_deadline_cancels_a_hanging_crawl(server: FaultServer, backend: dict[str, Any]) -> None:
    hanging_site(server, good=2, hanging=3)
    started = time.monotonic()
    result = run(backend, link_spider(server.url("/")), crawl__deadline=1, crawl__per_host=3)
    assert time.monotonic() - started < 3.5  # the deadline, then a second to wind down
    assert result.finish_reason == "deadline" and result.exit_code == 3
    stats = result.stats
    assert stats["pages"] == stats["items"] == 3
    assert stats["failed_reasons"] == {"deadline": 3}
    # The cancelled requests stay queued where a later run can take them up.
    durable = "frontier__jobdir" in backend or "frontier__backend" in backend
    assert stats["queued_left"] == (3 if durable else 0)
    assert no_workers_left()


def test_interrupt_from_another_thread(server: FaultServer, backend: dict[str, Any]) -> None:
    slow_star(server, 30, 0.1)
    settings = {key.replace("__", "."): value for key, value in backend.items()}
    instance, loaded = prepare(link_spider(server.url("/")),
                               settings={**settings, "crawl.obey_robots": False,
                                         "crawl.per_host": 3})
    engine = build_crawler(instance, loaded.settings, collect_items=True)

    def interrupt() -> None:
        if server.wait_for_requests(6, timeout=10):
            engine.supervisor.interrupt()

    thread = threading.Thread(target=interrupt)
    thread.start()
    result = engine.run()
    thread.join()
    assert result.finish_reason == "interrupted" and result.exit_code == 130
    stats = result.stats
    assert stats["failed"] == 0  # requests in flight were allowed to finish
    assert stats["pages"] == stats["requests"] == len(server.requests) < 31
    assert stats["queued_left"] == 31 - stats["pages"]
    assert no_workers_left()


# -- every count -----------------------------------------------------------------------------


def test_every_count_in_the_stats(server: FaultServer, backend: dict[str, Any]) -> None:
    links = star(server, 6)
    server.add_page("/", [*links, "/missing", "/p/0", "http://elsewhere.invalid/"])
    result = run(backend, link_spider(server.url("/")), crawl__allowed_failures=1,
                 crawl__per_host=2)
    stats = result.stats
    assert stats["requests"] == stats["responses"] == 8
    assert stats["pages"] == stats["items"] == 7
    assert len(result.items) == 7
    assert stats["failed"] == 1 and stats["failed_reasons"] == {"status:404": 1}
    assert stats["status_counts"] == {"200": 7, "404": 1}
    assert stats["seen"] == 8 and stats["queued_left"] == 0
    assert stats["filtered_duplicate"] == 1 and stats["filtered_offsite"] == 1
    assert stats["retries"] == 0
    assert result.finish_reason == "finished" and result.exit_code == 0


# -- settings a backend cannot honour --------------------------------------------------------


def test_incremental_with_redis_is_a_config_error(server: FaultServer, redis_url: str) -> None:
    server.add_page("/")
    with pytest.raises(scraper.ConfigError, match=r"frontier\.incremental"):
        crawl(link_spider(server.url("/")), frontier__backend=redis_url,
              frontier__incremental=True)
    assert server.requests == []


def test_jobdir_with_redis_is_a_config_error(server: FaultServer, redis_url: str,
                                             tmp_path: Path) -> None:
    server.add_page("/")
    with pytest.raises(scraper.ConfigError, match=r"frontier\.jobdir"):
        crawl(link_spider(server.url("/")), frontier__backend=redis_url,
              frontier__jobdir=str(tmp_path / "job"))
    assert server.requests == []


def test_sqlite_without_a_jobdir_is_a_config_error(server: FaultServer) -> None:
    server.add_page("/")
    with pytest.raises(scraper.ConfigError, match=r"frontier\.jobdir"):
        crawl(link_spider(server.url("/")), frontier__backend="sqlite")
    assert server.requests == []


def test_unreachable_redis_is_a_config_error(server: FaultServer) -> None:
    from conftest import free_port

    server.add_page("/")
    with pytest.raises(scraper.ConfigError, match="cannot reach Redis"):
        crawl(link_spider(server.url("/")),
              frontier__backend=f"redis://127.0.0.1:{free_port()}/0")
    assert server.requests == []


def test_max_pages_counts_first_attempts_only(server: FaultServer,
                                              backend: dict[str, Any]) -> None:
    server.add_page("/", ["/flaky", "/moved", "/p/0", "/p/1"])
    server.add_status_sequence("/flaky", [503, 200], body=b"<html>ok</html>")
    server.add_redirect("/moved", "/target")
    for path in ("/target", "/p/0", "/p/1"):
        server.add_page(path)
    result = run(backend, link_spider(server.url("/")), crawl__max_pages=3,
                 crawl__per_host=1, retry__backoff=0.01)
    # "/", "/flaky" and "/moved" use the budget; the retry and the redirect's hop do not.
    assert paths(server) == Counter({"/": 1, "/flaky": 2, "/moved": 1, "/target": 1})
    stats = result.stats
    assert stats["pages"] == 3 and stats["retries"] == 1 and stats["redirects"] == 1
    assert result.finish_reason == "max_pages" and stats["queued_left"] == 2
