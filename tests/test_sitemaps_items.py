"""Sitemaps (robots.txt lines, indexes, gzip) and items (validation, pipelines, DropItem)."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from conftest import crawl, link_spider
from pydantic import BaseModel
from servers import FaultServer

from scraper import DropItem, SitemapSpider
from scraper.sitemap import SitemapError, gunzip, parse_sitemap

NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'


def urlset(*locs: str) -> str:
    entries = "".join(f"<url><loc>{loc}</loc></url>" for loc in locs)
    return f'<?xml version="1.0" encoding="UTF-8"?><urlset {NS}>{entries}</urlset>'


def index(*locs: str) -> str:
    entries = "".join(f"<sitemap><loc>{loc}</loc></sitemap>" for loc in locs)
    return f'<?xml version="1.0"?><sitemapindex {NS}>{entries}</sitemapindex>'


def test_sitemap_spider_reads_robots_index_and_gzip(server: FaultServer) -> None:
    u = server.url
    server.add("/robots.txt", f"User-agent: *\nAllow: /\nSitemap: {u('/index.xml')}\n",
               content_type="text/plain")
    server.add("/index.xml", index(u("/products.xml.gz"), u("/blog.xml"), u("/skip.xml")),
               content_type="application/xml")
    server.add("/products.xml.gz", gzip.compress(urlset(u("/p/1"), u("/p/2")).encode()),
               content_type="application/gzip")
    server.add("/blog.xml", urlset(u("/blog/a")), content_type="application/xml")
    server.add("/skip.xml", urlset(u("/never")), content_type="application/xml")
    for path in ("/p/1", "/p/2", "/blog/a", "/never"):
        server.add_page(path)

    class Shop(SitemapSpider):
        name = "shop"
        sitemap_urls = [u("/robots.txt")]
        sitemap_follow = ["products", "blog"]
        sitemap_rules = [("/p/", "parse_product"), ("/blog/", "parse_post")]

        def parse_product(self, response: Any) -> Any:
            yield {"kind": "product", "url": response.url}

        def parse_post(self, response: Any) -> Any:
            yield {"kind": "post", "url": response.url}

    result = crawl(Shop, crawl__obey_robots=True)
    assert sorted((i["kind"], i["url"]) for i in result.items) == [
        ("post", u("/blog/a")), ("product", u("/p/1")), ("product", u("/p/2"))]
    assert server.count("/skip.xml") == 0 and server.count("/never") == 0


def test_parse_sitemap_rejects_garbage_and_bombs() -> None:
    with pytest.raises(SitemapError, match="not a sitemap"):
        parse_sitemap(b"<html><body>no</body></html>")
    with pytest.raises(SitemapError, match="not a sitemap"):
        parse_sitemap(b"\x00\x01 not xml")
    bomb = gzip.compress(b"\0" * (8 * 2**20))
    with pytest.raises(SitemapError, match="larger than"):
        gunzip(bomb, limit=2**20)


def test_a_broken_sitemap_is_a_callback_error_not_a_crash(server: FaultServer) -> None:
    server.add("/sitemap.xml", "this is not xml", content_type="application/xml")

    class Broken(SitemapSpider):
        name = "broken"
        sitemap_urls = [server.url("/sitemap.xml")]

    result = crawl(Broken)
    assert result.stats["failed_reasons"] == {"callback_error": 1}


class Product(BaseModel):
    url: str
    price: float


def test_item_model_validates_and_counts_invalid_items(server: FaultServer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    server.add_page("/")

    class Priced(link_spider(server.url("/"))):  # type: ignore[misc]
        item_model = Product

        def parse(self, response: Any) -> Any:
            yield {"url": response.url, "price": "9.50"}  # coerced to 9.5
            yield {"url": response.url, "price": "free"}  # invalid
            yield Product(url=response.url, price=1)

    result = crawl(Priced)
    assert result.items == [{"url": server.url("/"), "price": 9.5},
                            {"url": server.url("/"), "price": 1.0}]
    assert result.stats["items_invalid"] == 1
    assert "price" in caplog.text and "invalid item" in caplog.text


def test_pipelines_transform_and_drop(server: FaultServer) -> None:
    server.add_page("/", ["/a", "/b"])
    server.add_page("/a")
    server.add_page("/b")

    def no_b(item: dict[str, Any], spider: Any) -> dict[str, Any]:
        if item["url"].endswith("/b"):
            raise DropItem("b is not wanted")
        return item

    class Upper:
        def process_item(self, item: dict[str, Any], spider: Any) -> dict[str, Any]:
            return {**item, "url": item["url"].upper()}

    spider = link_spider(server.url("/"), pipelines=[no_b, Upper()])
    result = crawl(spider)
    assert sorted(i["url"] for i in result.items) == [server.url("/").upper(),
                                                      server.url("/a").upper()]
    assert result.stats["items_dropped"] == 1


def test_a_raising_pipeline_drops_the_item_not_the_crawl(server: FaultServer) -> None:
    server.add_page("/", ["/a"])
    server.add_page("/a")

    def broken(item: dict[str, Any], spider: Any) -> dict[str, Any]:
        raise RuntimeError("database down")

    result = crawl(link_spider(server.url("/"), pipelines=[broken]))
    assert result.stats["pages"] == 2
    assert result.stats["items"] == 0 and result.stats["items_dropped"] == 2
