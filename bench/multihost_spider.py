"""The benchmark spider spread over N loopback hosts (ports), for `scale_curves.py`.

Every port from `base_port` to `base_port + hosts - 1` serves the same catalogue
(`gen_site.py`); each link the spider follows is moved to the port of its page number
modulo `hosts`, so the pages are spread over the hosts deterministically and each page
is fetched from one host only.

usage: scraper crawl bench/multihost_spider.py -a base_port=18100 -a hosts=10
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from scraper import Spider

PAGE = re.compile(r"/p/(\d+)\.html")


class MultiHost(Spider):
    name = "bench_multihost"
    allowed_domains = ["127.0.0.1"]

    def __init__(self, base_port: str = "18100", hosts: str = "1", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_port = int(base_port)
        self.hosts = int(hosts)
        self.start_urls = [f"http://127.0.0.1:{self.base_port}/"]

    def spread(self, url: str) -> str:
        """`url` on the host (port) of its page number modulo the number of hosts."""
        rest = url.split("://", 1)[1]
        slash = rest.find("/")
        path = rest[slash:] if slash >= 0 else "/"
        found = PAGE.match(path)
        port = self.base_port + (int(found.group(1)) % self.hosts if found else 0)
        return f"http://127.0.0.1:{port}{path}"

    def parse(self, response: Any) -> Iterator[Any]:
        title = response.css_first("title")
        yield {"url": response.url, "title": title.text() if title else None}
        links = (response.urljoin(a.attributes.get("href") or "")
                 for a in response.css("a[href]"))
        yield from response.follow_all(self.spread(url) for url in links)
