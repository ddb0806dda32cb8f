"""robots.txt (RFC 9309), Crawl-delay, crawl.delay and autothrottle, measured at the server."""

from __future__ import annotations

import itertools

from conftest import crawl, link_spider
from servers import Exchange, FaultServer


def gaps(server: FaultServer, prefix: str) -> list[float]:
    starts = sorted(r.started for r in server.requests if r.path.startswith(prefix))
    return [b - a for a, b in itertools.pairwise(starts)]


def test_disallowed_paths_are_never_requested(server: FaultServer) -> None:
    server.add("/robots.txt", "User-agent: *\nDisallow: /private\nAllow: /private/open\n",
               content_type="text/plain")
    server.add_page("/", ["/public", "/private/secret", "/private/open", "/private"])
    for path in ("/public", "/private/secret", "/private/open", "/private"):
        server.add_page(path)
    result = crawl(link_spider(server.url("/")), crawl__obey_robots=True)
    assert server.count("/private/secret") == 0 and server.count("/private") == 0
    assert server.count("/private/open") == 1 and server.count("/public") == 1
    assert server.count("/robots.txt") == 1
    assert result.stats["filtered_robots"] == 2
    assert result.stats["pages"] == 3 and result.exit_code == 0


def test_robots_rules_for_our_user_agent(server: FaultServer) -> None:
    server.add("/robots.txt", "User-agent: scraper\nDisallow: /\n\nUser-agent: *\nAllow: /\n",
               content_type="text/plain")
    server.add_page("/", ["/a"])
    result = crawl(link_spider(server.url("/")), crawl__obey_robots=True)
    assert server.count("/") == 0
    assert result.stats["filtered_robots"] == 1


def test_crawl_delay_spaces_request_starts(server: FaultServer) -> None:
    server.add("/robots.txt", "User-agent: *\nCrawl-delay: 0.3\n", content_type="text/plain")
    server.add_page("/", [f"/p/{i}" for i in range(5)])
    for i in range(5):
        server.add_page(f"/p/{i}")
    result = crawl(link_spider(server.url("/")), crawl__obey_robots=True, crawl__per_host=4,
                   crawl__workers=8)
    assert result.stats["pages"] == 6
    measured = gaps(server, "/")[1:]  # from the first page on (robots.txt comes first)
    assert len(measured) == 5
    assert min(measured) >= 0.29


def test_crawl_delay_setting_without_robots(server: FaultServer) -> None:
    server.add_page("/", [f"/p/{i}" for i in range(4)])
    for i in range(4):
        server.add_page(f"/p/{i}")
    crawl(link_spider(server.url("/")), crawl__delay=0.2, crawl__per_host=4)
    # Starts are spaced when handed out; arrival at the server adds scheduling jitter on a
    # busy machine, so one gap may look a little shorter, never the spacing as a whole.
    observed = gaps(server, "/")
    assert min(observed) >= 0.15
    assert sum(observed) / len(observed) >= 0.19


def test_robots_5xx_disallows_the_host(server: FaultServer) -> None:
    server.add_status_sequence("/robots.txt", [503])
    server.add_page("/", ["/a"])
    result = crawl(link_spider(server.url("/")), crawl__obey_robots=True, retry__attempts=2,
                   retry__backoff=0.01)
    assert server.count("/robots.txt") == 2  # retried, then given up
    assert server.count("/") == 0
    assert result.stats["failed_reasons"] == {"robots_unavailable": 1}
    assert result.exit_code == 1


def test_robots_4xx_allows_everything(server: FaultServer) -> None:
    server.add("/robots.txt", "gone", status=410)
    server.add_page("/", ["/a"])
    server.add_page("/a")
    result = crawl(link_spider(server.url("/")), crawl__obey_robots=True)
    assert result.stats["pages"] == 2


def test_robots_is_fetched_again_after_its_ttl(server: FaultServer) -> None:
    server.add("/robots.txt", "User-agent: *\nAllow: /\n", content_type="text/plain")
    server.add_page("/", [f"/p/{i}" for i in range(6)])
    for i in range(6):
        server.add_page(f"/p/{i}")
    crawl(link_spider(server.url("/")), crawl__obey_robots=True, crawl__robots_ttl=0.1,
          crawl__delay=0.05, crawl__per_host=1)
    assert server.count("/robots.txt") >= 2


def slow_leaves(server: FaultServer, count: int = 16) -> None:
    """An index linking to `count` pages that each take 0.1 s to answer."""
    def slow(exchange: Exchange) -> None:
        exchange.wait(0.1)
        exchange.respond(200, "<html></html>", {"Content-Type": "text/html"})

    server.add_page("/", [f"/p/{i}" for i in range(count)])
    for i in range(count):
        server.add_handler(f"/p/{i}", slow)


def test_autothrottle_slows_down_to_the_servers_latency(server: FaultServer) -> None:
    slow_leaves(server)
    crawl(link_spider(server.url("/")), crawl__autothrottle=True, crawl__per_host=4,
          crawl__workers=4)
    later = gaps(server, "/p/")[6:]  # once the delay has adapted
    assert min(later) >= 0.05  # about one request per latency, not four at once


def test_without_autothrottle_the_same_site_is_hit_concurrently(server: FaultServer) -> None:
    """The negative control for the test above."""
    slow_leaves(server)
    crawl(link_spider(server.url("/")), crawl__per_host=4, crawl__workers=4)
    assert min(gaps(server, "/p/")[6:]) < 0.05
