"""The demo spider: crawls the bundled demo catalogue (`scraper demo` serves it)."""

from scraper import Spider


class DemoCatalogue(Spider):
    name = "demo"
    start_urls = ["http://127.0.0.1:8000/"]

    def __init__(self, base_url: str | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if base_url:
            self.start_urls = [base_url]

    def parse(self, response):
        product = response.css_first("article.product")
        if product:
            yield {
                "url": response.url,
                "name": product.css_first("h1").text(),
                "price": float(product.css_first("p.price").text()),
                "sku": product.attributes["data-sku"],
            }
        yield from response.follow_all("a[href]")
