"""The bundled demo site's pages: a small catalogue (served by `scraper.testing.serve`).

A few hundred pages: a home page, paginated categories, product pages carrying an item
(name, price, sku), and links that a crawler must recognise as duplicates (fragments,
`..` segments, upper-case host). Pages are generated in memory; nothing is downloaded.
"""

from __future__ import annotations

import random

CATEGORIES = ("books", "games", "tools", "music", "garden", "kitchen")
PER_PAGE = 10


def build_site(products: int = 300, seed: int = 7) -> dict[str, bytes]:
    """Path -> HTML for a catalogue of `products` products."""
    rng = random.Random(seed)
    pages: dict[str, str] = {}
    by_category: dict[str, list[int]] = {c: [] for c in CATEGORIES}
    for i in range(products):
        by_category[CATEGORIES[i % len(CATEGORIES)]].append(i)
    nav = "".join(f'<li><a href="/c/{c}/1">{c.title()}</a></li>' for c in CATEGORIES)
    pages["/"] = (f"<html><head><title>Demo catalogue</title></head><body>"
                  f"<h1>Demo catalogue</h1><ul class='nav'>{nav}</ul></body></html>")
    for category, ids in by_category.items():
        chunks = [ids[i:i + PER_PAGE] for i in range(0, len(ids), PER_PAGE)]
        for number, chunk in enumerate(chunks, 1):
            links = "".join(f'<li><a href="/p/{i}">Product {i}</a></li>' for i in chunk)
            more = f'<a class="next" href="/c/{category}/{number + 1}">next</a>' \
                if number < len(chunks) else ""
            pages[f"/c/{category}/{number}"] = (
                f"<html><head><title>{category} {number}</title></head><body>"
                f"<ul class='nav'>{nav}</ul><ul class='products'>{links}</ul>{more}</body></html>")
    for i in range(products):
        related = "".join(f'<li><a href="/p/{rng.randrange(products)}#reviews">related</a></li>'
                          for _ in range(3))
        category = CATEGORIES[i % len(CATEGORIES)]
        pages[f"/p/{i}"] = (
            f"<html><head><meta charset='utf-8'><title>Product {i}</title></head><body>"
            f"<a href='../c/{category}/1'>back</a>"
            f"<article class='product' data-sku='SKU-{i:05d}'><h1>Product {i}</h1>"
            f"<p class='price'>{(i * 37) % 500 + 0.99:.2f}</p></article>"
            f"<ul class='related'>{related}</ul></body></html>")
    return {path: html.encode() for path, html in pages.items()}


def demo_spider() -> type:
    """The demo spider class (imported on use: `scraper --help` stays light)."""
    from .spider import Spider

    class DemoCatalogue(Spider):
        """Crawls the demo catalogue: one item per product page, every link followed."""

        name = "demo"
        start_urls = ["http://127.0.0.1:8000/"]

        def __init__(self, base_url: str | None = None, **kwargs: object) -> None:
            super().__init__(**kwargs)
            if base_url:
                self.start_urls = [base_url]

        def parse(self, response):  # type: ignore[no-untyped-def]
            product = response.css_first("article.product")
            if product:
                yield {
                    "url": response.url,
                    "name": product.css_first("h1").text(),
                    "price": float(product.css_first("p.price").text()),
                    "sku": product.attributes["data-sku"],
                }
            yield from response.follow_all("a[href]")

    return DemoCatalogue
