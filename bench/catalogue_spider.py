"""The benchmark spider: the synthetic catalogue of the benchmark kit (gen_site.py)."""

from scraper import Spider


class BenchCatalogue(Spider):
    name = "bench_catalogue"
    start_urls = ["http://127.0.0.1:8082/"]

    def __init__(self, start: str | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if start:
            self.start_urls = [start]

    def parse(self, response):
        title = response.css_first("title")
        yield {"url": response.url, "title": title.text() if title else None}
        yield from response.follow_all("a[href]")
