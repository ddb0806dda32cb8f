"""crawl.max_items, crawl.max_errors and crawl.stop_if_no_items_for: each stops the crawl
with its own finish reason, finishing the requests in flight and finalising outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import crawl
from servers import FaultServer

from scraper import Request, Spider

PAGES = 60


def chain_site(server: FaultServer, *, fail_from: int = PAGES, item_pages: int = PAGES) -> None:
    """/0 links to /1 ... /PAGES-1; pages from `fail_from` answer 404; pages at and after
    `item_pages` yield no item (see `ItemSpider`)."""
    server.add_page("/0", [f"/{i}" for i in range(1, PAGES)])
    for i in range(1, PAGES):
        if i >= fail_from:
            server.add(f"/{i}", "gone", status=404)
        else:
            server.add_page(f"/{i}", title=f"{'item' if i < item_pages else 'none'} {i}")


def item_spider(start: str) -> type[Spider]:
    class ItemSpider(Spider):
        name = "items"
        start_urls = [start]

        def parse(self, response: Any) -> Any:
            if response.url.endswith("/0"):
                yield from response.follow_all("a[href]")
                return
            title = response.css_first("title").text()
            if title.startswith("item"):
                yield {"page": title}

    return ItemSpider


def test_max_items_stops_the_crawl(server: FaultServer, tmp_path: Path) -> None:
    chain_site(server)
    out = tmp_path / "items.jsonl"
    result = crawl(item_spider(server.url("/0")), crawl__max_items=5, crawl__workers=2,
                   crawl__per_host=1, crawl__delay=0.02)
    assert result.finish_reason == "max_items" and result.exit_code == 0
    # in-flight requests finish: a few more than 5 items at most, far from all 59
    assert 5 <= result.stats["items"] <= 8
    assert result.stats["queued_left"] > 0
    scraper_result = __import__("scraper").crawl(
        item_spider(server.url("/0")), {"crawl.max_items": 3, "crawl.obey_robots": False,
                                        "crawl.per_host": 1}, output=str(out))
    assert scraper_result.finish_reason == "max_items"
    assert len(out.read_text().splitlines()) == scraper_result.stats["items"] >= 3


def test_max_errors_stops_the_crawl(server: FaultServer) -> None:
    chain_site(server, fail_from=10)
    result = crawl(item_spider(server.url("/0")), crawl__max_errors=4, crawl__workers=2,
                   crawl__per_host=1, crawl__allowed_failures=100)
    assert result.finish_reason == "max_errors"
    assert 4 <= result.stats["failed"] <= 6
    assert result.stats["failed_reasons"] == {"status:404": result.stats["failed"]}
    assert result.exit_code == 0  # within crawl.allowed_failures: stopping is not failing


def test_allowed_failures_alone_does_not_stop(server: FaultServer) -> None:
    chain_site(server, fail_from=50)
    result = crawl(item_spider(server.url("/0")))
    assert result.finish_reason == "finished" and result.stats["failed"] == 10
    assert result.exit_code == 1


def test_no_items_for_a_while_stops_the_crawl(server: FaultServer) -> None:
    """Pages keep coming, but after the first few no item: stop_if_no_items_for ends it."""
    server.add_page("/0", ["/1"])

    class Endless(Spider):
        name = "endless"
        start_urls = [server.url("/0")]

        def parse(self, response: Any) -> Any:
            n = int(response.url.rsplit("/", 1)[1])
            if n < 3:
                yield {"n": n}
            yield Request(server.url(f"/{n + 1}"), dont_filter=True)

    for i in range(1, 2000):
        server.add_page(f"/{i}", [f"/{i + 1}"])
    result = crawl(Endless, crawl__stop_if_no_items_for=0.5, crawl__delay=0.05,
                   crawl__per_host=1)
    assert result.finish_reason == "no_items"
    assert result.stats["items"] == 3
    assert result.stats["pages"] < 1999  # stopped long before the site ran out


def test_stop_reasons_reach_the_stats_file(server: FaultServer, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from scraper.cli import main

    chain_site(server)
    spider = tmp_path / "items_spider.py"
    spider.write_text(
        "from scraper import Spider\n"
        "class S(Spider):\n"
        "    name = 's'\n"
        f"    start_urls = [{server.url('/0')!r}]\n"
        "    def parse(self, response):\n"
        "        yield {'url': response.url}\n"
        "        yield from response.follow_all('a[href]')\n")
    stats = tmp_path / "stats.json"
    done = CliRunner().invoke(main, ["crawl", str(spider), "-s", "crawl.max_items=4",
                                     "-s", "crawl.per_host=1", "-s", "crawl.obey_robots=false",
                                     "--stats", str(stats), "-q", "--progress", "off"])
    assert done.exit_code == 0, done.output
    assert json.loads(stats.read_text())["finish_reason"] == "max_items"
