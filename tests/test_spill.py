"""The memory frontier's spill file: requests past `frontier.memory_queue` and seen keys past
`frontier.memory_seen` wait in a temporary SQLite file, and nothing is lost, doubled or
reordered out of breadth-first order on the way. (The frontier contract suite also runs
every crawl setting against a spilling memory frontier.)"""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import crawl, link_spider, ring_site, star
from servers import FaultServer

import scraper
from scraper import Spider
from scraper.frontier.base import FrontierOptions, Outcome
from scraper.frontier.local import LocalFrontier, MemoryBacking
from scraper.frontier.spill import SpillFile
from scraper.request import Request
from scraper.stats import Stats


class Catalogue(Spider):
    name = "catalogue"

    def parse_item(self, response: Any) -> Any:
        yield {"url": response.url}


def spilling_frontier(tmp_path: Path, *, memory_queue: int = 0, memory_seen: int = 0,
                      per_host: int = 4) -> tuple[LocalFrontier, Stats]:
    stats = Stats()
    spill = SpillFile(Catalogue(), str(tmp_path))
    backing = MemoryBacking(spill=spill, memory_queue=memory_queue, memory_seen=memory_seen,
                            stats=stats)
    return LocalFrontier(FrontierOptions(per_host=per_host), stats, backing), stats


def drain(frontier: LocalFrontier, children: dict[str, list[Request]] | None = None
          ) -> list[Request]:
    """Take and finish every request (one at a time), with the children given per URL."""
    taken = []
    while (request := frontier.next()) is not None:
        taken.append(request)
        frontier.finish(request, Outcome(children=tuple((children or {}).get(request.url, ()))))
    return taken


def in_memory(frontier: LocalFrontier) -> int:
    return frontier._queued  # requests held in the frontier's own structures


def test_the_file_is_unlinked_as_soon_as_it_is_made(tmp_path: Path) -> None:
    spill = SpillFile(Catalogue(), str(tmp_path))
    assert spill.push([Request(f"http://a.test/{i}") for i in range(10)]) == []
    assert spill.queued == 10 and spill.path.startswith(str(tmp_path))
    assert os.listdir(tmp_path) == []  # in use, yet nothing to leave behind
    assert [r.url for r in spill.pop(4)] == [f"http://a.test/{i}" for i in range(4)]
    assert spill.queued == 6
    spill.close()


def test_requests_come_back_whole_and_in_the_queue_order(tmp_path: Path) -> None:
    spider = Catalogue()
    spill = SpillFile(spider, str(tmp_path))
    deep = Request("http://a.test/deep")
    deep.depth, deep.referer = 3, "http://a.test/parent"
    shallow = Request("http://a.test/shallow")
    shallow.depth = 1
    urgent = Request("http://a.test/urgent", callback=spider.parse_item, priority=5,
                     meta={"k": [1, 2]}, cb_kwargs={"x": 1}, headers={"X-A": "1"})
    lam = Request("http://a.test/lambda", callback=lambda response: None)
    assert spill.push([deep, shallow, urgent, lam]) == [lam]  # a lambda cannot be stored
    back = spill.pop(10)
    assert [r.url for r in back] == ["http://a.test/urgent", "http://a.test/shallow",
                                     "http://a.test/deep"]
    again = back[0]
    assert again.callback == spider.parse_item and again.priority == 5
    assert again.meta == {"k": [1, 2]} and again.cb_kwargs == {"x": 1}
    assert again.headers == {"X-A": "1"}
    assert (back[2].depth, back[2].referer) == (3, "http://a.test/parent")
    assert back[1].referer is None
    spill.close()


def test_the_memory_queue_stays_under_its_limit_and_nothing_is_lost(tmp_path: Path) -> None:
    frontier, stats = spilling_frontier(tmp_path, memory_queue=10)
    frontier.add([Request(f"http://h{i % 7}.test/{i}") for i in range(500)])
    assert in_memory(frontier) == 10
    assert frontier.counts()["queued"] == 500  # the spilled ones are counted as queued
    assert frontier.queued_left() == 500
    peak = [0]
    taken = []
    while (request := frontier.next()) is not None:
        peak[0] = max(peak[0], in_memory(frontier))
        taken.append(request.url)
        frontier.finish(request, Outcome())
    assert sorted(taken) == sorted(f"http://h{i % 7}.test/{i}" for i in range(500))
    assert len(set(taken)) == 500
    assert peak[0] <= 10
    assert stats.get("spilled") == 490


def test_spilled_requests_are_not_overtaken_by_deeper_ones(tmp_path: Path) -> None:
    """Breadth-first across the file: depth-1 pages found by the start page are all taken
    before any depth-2 page they lead to."""
    frontier, _ = spilling_frontier(tmp_path, memory_queue=4, per_host=1)
    start = Request("http://a.test/")
    frontier.add([start])
    level1 = [Request(f"http://a.test/1/{i}") for i in range(20)]
    for r in level1:
        r.depth = 1
    children: dict[str, list[Request]] = {"http://a.test/": level1}
    for i in range(20):
        kid = Request(f"http://a.test/2/{i}")
        kid.depth = 2
        children[f"http://a.test/1/{i}"] = [kid]
    depths = [r.depth for r in drain(frontier, children)]
    assert depths == [0] + [1] * 20 + [2] * 20


def test_seen_keys_moved_to_the_file_still_count_as_seen(tmp_path: Path) -> None:
    frontier, stats = spilling_frontier(tmp_path, memory_seen=50)
    urls = [f"http://a.test/p/{i}" for i in range(400)]
    for k in range(0, 400, 40):
        frontier.add([Request(u) for u in urls[k:k + 40]])
    assert stats.get("seen_spilled") >= 350  # moved in several rounds
    assert len(frontier._backing._seen) < 50  # the memory set started again each time
    assert frontier.counts()["seen"] == 400
    # Every one of them again, old (in the file) and recent (in memory) alike: duplicates.
    assert frontier.add([Request(u) for u in reversed(urls)]) == 0
    assert stats.get("filtered_duplicate") == 400
    assert frontier.add([Request("http://a.test/new"), Request(urls[0], dont_filter=True)]) == 2
    assert len(drain(frontier)) == 402


def test_a_crawl_spilling_both_fetches_every_page_once(server: FaultServer,
                                                       tmp_path: Path) -> None:
    ring_site(server, 60, wait=0)
    result = crawl(link_spider(server.url("/0")), crawl__per_host=4, crawl__workers=4,
                   frontier__memory_queue=3, frontier__memory_seen=5,
                   frontier__spill_dir=str(tmp_path))
    fetched = Counter(r.path for r in server.requests)
    assert sorted(fetched) == sorted(f"/{i}" for i in range(60))
    assert set(fetched.values()) == {1}
    stats = result.stats
    assert stats["pages"] == stats["items"] == 60 and stats["seen"] == 60
    assert stats["spilled"] > 0 and stats["seen_spilled"] > 0
    assert stats["filtered_duplicate"] == 60 * 3 - 59  # three links a page, 59 found new
    assert result.finish_reason == "finished" and os.listdir(tmp_path) == []


def test_the_defaults_spill_nothing_in_a_small_crawl(server: FaultServer) -> None:
    star(server, 20)
    stats = crawl(link_spider(server.url("/"))).stats
    assert stats["pages"] == 21
    assert stats["spilled"] == stats["seen_spilled"] == 0


def test_a_spill_dir_that_is_not_a_directory_is_refused(server: FaultServer,
                                                        tmp_path: Path) -> None:
    star(server, 2)
    (tmp_path / "file").write_text("x")
    with pytest.raises(Exception, match=r"frontier\.spill_dir") as caught:
        crawl(link_spider(server.url("/")), frontier__spill_dir=str(tmp_path / "file"))
    assert type(caught.value).__name__ == "ConfigError"
    assert server.requests == []


def test_a_full_disk_under_the_spill_stops_the_crawl(server: FaultServer, tiny_fs: Path,
                                                     tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    leaves = [f"/p/{i}/{'x' * 200}" for i in range(3000)]  # about 700 KB of URLs
    server.add_page("/", leaves[:1500])
    server.add_page("/more", leaves[1500:])
    for leaf in leaves:
        server.add_page(leaf)

    class Site(Spider):
        name = "site"
        start_urls = [server.url("/"), server.url("/more")]

        def parse(self, response: Any) -> Any:
            yield {"url": response.url}
            yield from response.follow_all("a[href]")

    target = tmp_path / "out.jsonl"
    result = scraper.crawl(Site, {"frontier.memory_queue": 1,
                                  "frontier.spill_dir": str(tiny_fs), "crawl.per_host": 1,
                                  "crawl.workers": 1, "crawl.obey_robots": False},
                           output=str(target))
    assert result.finish_reason == "error" and result.exit_code == 1
    error = result.stats["error"]
    assert "spill file" in error and str(tiny_fs) in error and "full" in error, error
    assert len(server.requests) < 100  # stopped at once, not at the end of the site
    written = target.read_text().splitlines()  # the output is fine: finalised
    assert len(written) == result.stats["items"] >= 1  # what was scraped is kept
    assert not [t for t in threading.enumerate() if t.name.startswith("scraper-worker")]


def test_a_full_disk_while_start_requests_stream_in_stops_the_crawl(
        server: FaultServer, tiny_fs: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The feeder's adds fail in the frontier: the crawl stops with `error`; the spider's
    generator is not blamed."""
    server.add_page("/", [])

    class Many(Spider):
        name = "many"

        def start_requests(self) -> Any:
            for i in range(5000):
                yield Request(server.url(f"/s/{i}/{'x' * 200}"))

        def parse(self, response: Any) -> Any:
            yield {"url": response.url}

    result = crawl(Many, frontier__memory_queue=1, frontier__spill_dir=str(tiny_fs),
                   crawl__per_host=1, crawl__workers=1)
    assert result.finish_reason == "error" and result.exit_code == 1
    assert "spill file" in result.stats["error"]
    assert "start_requests() raised" not in caplog.text
    assert len(server.requests) < 100
