"""The shared pool against real loopback servers: reuse, idle closes, slots, per-host limits."""

from __future__ import annotations

import threading

from conftest import crawl, link_spider
from servers import Exchange, FaultServer


def add_mesh(server: FaultServer, pages: int, fanout: int = 5) -> None:
    """`pages` pages, page i linking to the next `fanout` pages (all reachable from /0)."""
    for i in range(pages):
        server.add_page(f"/{i}", [f"/{(i + k) % pages}" for k in range(1, fanout + 1)])


def test_connections_opened_equal_per_host_not_requests(server: FaultServer) -> None:
    add_mesh(server, 300)
    result = crawl(link_spider(server.url("/0")), crawl__workers=12, crawl__per_host=4)
    stats = result.stats
    assert stats["pages"] == 300
    assert server.connections_accepted <= 4
    assert stats["connections_opened"] == server.connections_accepted
    assert stats["connections_reused"] == stats["requests"] - stats["connections_opened"]
    assert stats["exit_code"] == 0


def test_per_host_concurrency_never_exceeds_limit_at_server(server: FaultServer) -> None:
    def slow_page(exchange: Exchange) -> None:
        exchange.wait(0.02)  # hold the request so that requests overlap
        exchange.respond(200, "<html><body>leaf</body></html>",
                         {"Content-Type": "text/html"})

    leaves = [f"/leaf/{i}" for i in range(60)]
    server.add_page("/", leaves)
    for path in leaves:
        server.add_handler(path, slow_page)
    result = crawl(link_spider(server.url("/")), crawl__workers=16, crawl__per_host=3)
    assert result.stats["pages"] == 61
    assert server.max_concurrent == 3  # the limit holds, and is used
    assert server.connections_accepted <= 3


def test_idle_connections_closed_by_server_lose_no_page(make_server) -> None:  # type: ignore[no-untyped-def]
    """The server drops keep-alive connections idle for 0.1 s; a 0.15 s host delay makes
    every pooled connection go idle past that. The crawl must not lose a page."""
    srv = make_server(idle_close_after=0.1)
    for i in range(6):
        srv.add_page(f"/{i}", [f"/{i + 1}"] if i < 5 else [])
    result = crawl(link_spider(srv.url("/0")), crawl__per_host=1, crawl__delay=0.15,
                   http__idle_timeout=30)
    assert result.stats["pages"] == 6
    assert result.stats["failed"] == 0
    assert srv.connections_accepted == 6  # each request found its idle connection closed


def test_idle_timeout_evicts_before_the_server_does(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(idle_close_after=0.3)
    for i in range(4):
        srv.add_page(f"/{i}", [f"/{i + 1}"] if i < 3 else [])
    result = crawl(link_spider(srv.url("/0")), crawl__per_host=1, crawl__delay=0.12,
                   http__idle_timeout=0.05)
    assert result.stats["pages"] == 4
    assert result.stats["connections_opened"] == 4  # evicted by us each time
    assert result.stats["stale_retries"] == 0


def test_stale_race_is_retried_once_on_reused_connection(server: FaultServer) -> None:
    """The server takes the request on a reused connection and closes without answering,
    as in the keep-alive race: retried at once, not counted as a retry or failure."""
    seen_connections: set[int] = set()
    lock = threading.Lock()

    def drop_on_reuse(exchange: Exchange) -> None:
        with lock:
            reused = exchange.request.connection_id in seen_connections
            seen_connections.add(exchange.request.connection_id)
        if reused and exchange.request.path == "/b":
            exchange.close()  # FIN before any response byte
            return
        links = ["/b"] if exchange.request.path == "/a" else []
        body = "".join(f'<a href="{link}">x</a>' for link in links)
        exchange.respond(200, f"<html><body>{body}</body></html>",
                         {"Content-Type": "text/html"})

    server.add_handler("/a", drop_on_reuse)
    server.add_handler("/b", drop_on_reuse)
    result = crawl(link_spider(server.url("/a")), crawl__per_host=1)
    assert result.stats["pages"] == 2
    assert result.stats["stale_retries"] == 1
    assert result.stats["retries"] == 0
    assert result.stats["failed"] == 0
    assert server.count("/b") == 2


def test_response_cut_short_does_not_leak_the_slot(server: FaultServer) -> None:
    """With per_host=1 one leaked slot would stall the crawl: bodies over max_body are
    abandoned mid-read, yet every other page is still fetched."""
    big = "<html><body>" + "x" * 50_000 + "</body></html>"
    links = []
    for i in range(5):
        server.add(f"/big/{i}", big)
        server.add_page(f"/small/{i}")
        links += [f"/big/{i}", f"/small/{i}"]
    server.add_huge("/huge", size=2**30)
    server.add_page("/", [*links, "/huge"])
    result = crawl(link_spider(server.url("/")), crawl__per_host=1, crawl__workers=4,
                   http__max_body=10_000, retry__attempts=1)
    stats = result.stats
    assert stats["pages"] == 6  # the index and the five small pages
    assert stats["failed_reasons"] == {"too_large": 6}


def test_url_variants_are_fetched_once(server: FaultServer) -> None:
    base = server.url("")
    variants = [
        "/a", "/a#top", "./a", "/x/../a", "/./a", f"{base}/a", f"{base}/a#frag",
        f"HTTP://127.0.0.1:{server.port}/a", f"http://127.0.0.1:{server.port}/x/./../a",
    ]
    server.add_page("/", variants)
    server.add_page("/a", ["/", "/a"])
    result = crawl(link_spider(server.url("/")))
    assert server.count("/a") == 1
    assert server.count("/") == 1
    assert result.stats["pages"] == 2
    assert result.stats["filtered_duplicate"] >= len(variants)


def test_idle_connections_are_closed_in_the_background(server: FaultServer) -> None:
    """Pooled connections idle past http.idle_timeout are closed by the client's sweep,
    so a crawl that moved on from a host does not keep its sockets open."""
    from scraper.client import Client
    from scraper.settings import HttpSettings
    from scraper.stats import Stats

    server.add_page("/")
    stats = Stats()
    client = Client(HttpSettings(idle_timeout=0.2), per_host=2, stats=stats,
                    trusted_hosts=[server.host])
    try:
        client.fetch("GET", server.url("/"))
        assert server.open_connections == 1
        closed = threading.Event()
        deadline = 5.0
        while not closed.wait(0.05) and deadline > 0:  # the server exposes no event for it
            deadline -= 0.05
            if server.open_connections == 0:
                closed.set()
        assert closed.is_set()
        assert stats.get("connections_closed") == 1
    finally:
        client.close()


def test_many_hosts_open_one_connection_each(make_server) -> None:  # type: ignore[no-untyped-def]
    hosts = [make_server() for _ in range(12)]
    for index, host in enumerate(hosts):
        following = hosts[(index + 1) % len(hosts)]
        for i in range(10):
            host.add_page(f"/{i}", [f"/{i + 1}" if i < 9 else "/0", following.url(f"/{i}")])
    spider = link_spider(hosts[0].url("/0"), allowed_domains=["127.0.0.1"])
    result = crawl(spider, crawl__per_host=1, crawl__workers=4)
    assert result.stats["pages"] == 120
    assert result.stats["connections_opened"] == 12 == sum(h.connections_accepted
                                                           for h in hosts)
