"""The broad-crawl benchmark spider: `hosts` host names x `pages` pages each, or the same
pages on one host, all start requests (read lazily), no link followed.

Host i's pages are `/p/{i*pages + j}.html`, j < pages, on `h{i}.bench.test` (reach it with
`http.resolve = {"*.bench.test" = "127.0.0.1"}`); with `-a one_host=1` the same paths on
127.0.0.1. The pages are taken host by host in the order a real list of sites would be.

usage: scraper crawl bench/broad_spider.py -a hosts=10000 -a pages=4 -a port=8082
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from scraper import Request, Spider


class BroadBench(Spider):
    name = "bench_broad"

    def __init__(self, hosts: str = "10000", pages: str = "4", port: str = "8082",
                 one_host: str = "0", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hosts, self.pages, self.port = int(hosts), int(pages), int(port)
        self.one_host = one_host not in ("0", "", "false")

    def start_requests(self) -> Iterator[Request]:
        for i in range(self.hosts):
            host = "127.0.0.1" if self.one_host else f"h{i}.bench.test"
            for j in range(self.pages):
                yield Request(f"http://{host}:{self.port}/p/{(i * self.pages + j) % 20000}"
                              f".html?h={i}")

    def parse(self, response: Any) -> Iterator[Any]:
        title = response.css_first("title")
        yield {"url": response.url, "title": title.text() if title else None}
