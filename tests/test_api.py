"""The Python API (`scraper.crawl`) and the helpers of `scraper.testing`."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import pydantic
import pytest
from conftest import link_spider
from servers import FaultServer

import scraper
from scraper import ConfigError, Request, Spider
from scraper.testing import make_response, run_callback, run_spider, serve

# -- scraper.crawl --------------------------------------------------------------------------


class Titles(Spider):
    name = "titles"

    def __init__(self, start: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_urls = [start]

    def parse(self, response: Any) -> Any:
        yield {"title": response.css_first("title").text()}


def test_crawl_three_times_in_one_process_with_different_spiders(
        server: FaultServer, tmp_path: Path) -> None:
    server.add_page("/", ["/a", "/b"])
    server.add_page("/a")
    server.add_page("/b", ["/c"])
    server.add_page("/c")
    (tmp_path / "spiders").mkdir()
    (tmp_path / "spiders/counter.py").write_text(
        "from scraper import Spider\n"
        "class Counter(Spider):\n"
        "    name = 'counter'\n"
        f"    start_urls = ['{server.url('/')}']\n"
        "    custom_settings = {'crawl.depth_limit': 1}\n"
        "    def parse(self, response):\n"
        "        yield {'links': len(response.css('a'))}\n"
        "        yield from response.follow_all('a[href]')\n")

    first = scraper.crawl(link_spider(server.url("/")), {"crawl.per_host": 2})
    second = scraper.crawl("counter", output="out/counter.jsonl")
    third = scraper.crawl(Titles, {"retry.attempts": 1}, start=server.url("/b"))

    assert sorted(item["url"] for item in first.items) == [
        server.url(p) for p in ("/", "/a", "/b", "/c")]
    assert first.stats["pages"] == 4 and first.exit_code == 0
    assert sorted(item["links"] for item in second.items) == [0, 1, 2]  # depth 1: no /c
    assert second.stats["filtered_depth"] == 1
    written = [json.loads(line) for line in (tmp_path / "out/counter.jsonl").read_text()
               .splitlines()]
    assert written == second.items
    assert third.items == [{"title": "/b"}] and third.stats["pages"] == 1
    for result in (first, second, third):
        assert result.finish_reason == "finished"
        assert result.stats["connections_opened"] >= 1
    # the autouse fixture checks that no crawl thread outlived its crawl


def test_crawl_raises_config_errors(server: FaultServer) -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'crawl\.per_host'"):
        scraper.crawl(link_spider(server.url("/")), {"crawl.per_hosts": 2})
    with pytest.raises(ConfigError, match="no spider named 'nosuch'"):
        scraper.crawl("nosuch")

    class Strict(Spider):
        name = "strict"
        start_urls = [server.url("/")]

        def __init__(self, page: int = 1) -> None:
            super().__init__()

    with pytest.raises(ConfigError, match="bad spider arguments"):
        scraper.crawl(Strict, colour="red")


# -- scraper.testing.serve ------------------------------------------------------------------


def test_serve_pages_of_every_kind() -> None:
    pages = {
        "/": "<h1>café</h1>",
        "/data.json": b'{"a": 1}',
        "/search?q=lamp": "lamps",
        "/search": "everything",
        "/moved": (301, {"Location": "/"}, b""),
        "/teapot": (418, {"X-Why": "tea"}, "short and stout"),
    }
    with serve(pages) as site:
        connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=5)
        answers = {}
        for path in ("/", "/data.json", "/search?q=lamp", "/search?q=x", "/moved", "/teapot",
                     "/nope"):
            connection.request("GET", path)
            response = connection.getresponse()
            answers[path] = (response.status, response.getheader("Content-Type"),
                             response.read(), response.getheader("X-Why"))
        connection.close()
        assert site.requests == list(answers)
        assert site.count("/") == 1
        assert site.url("p/1") == f"http://127.0.0.1:{site.port}/p/1"
    assert answers["/"] == (200, "text/html; charset=utf-8", "<h1>café</h1>".encode(), None)
    assert answers["/data.json"][:3] == (200, "application/json", b'{"a": 1}')
    assert answers["/search?q=lamp"][2] == b"lamps"
    assert answers["/search?q=x"][2] == b"everything"
    assert answers["/moved"][0] == 301
    assert answers["/teapot"] == (418, "text/html; charset=utf-8", b"short and stout", "tea")
    assert answers["/nope"][0] == 404


def test_serve_keeps_connections_alive_and_closes_them_on_exit() -> None:
    with serve({"/": "a", "/b": "b"}) as site:
        connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=5)
        for path in ("/", "/b", "/"):
            connection.request("GET", path)
            connection.getresponse().read()
        sock = connection.sock
        assert sock is not None
    # the server shut the idle keep-alive connection down when the block ended
    sock.settimeout(5)
    assert sock.recv(1) == b""
    connection.close()


def test_serve_rejects_bad_pages() -> None:
    with pytest.raises(ValueError, match="start with '/'"):
        serve({"p/1": "x"}).__enter__()
    with pytest.raises(TypeError, match="expected str, bytes"):
        serve({"/": 42}).__enter__()  # type: ignore[dict-item]


# -- scraper.testing.run_spider -------------------------------------------------------------

CATALOGUE = {
    "/": '<a href="/c/1">lamps</a><a href="https://elsewhere.example/">out</a>',
    "/c/1": '<a href="/p/1">1</a><a href="/p/2">2</a><a href="/c/2">next</a>',
    "/c/2": '<a href="/p/3">3</a>',
    "/p/1": '<article class="product"><h1>Lamp</h1><p class="price">10</p></article>',
    "/p/2": '<article class="product"><h1>Chair</h1><p class="price">25.5</p></article>',
    "/p/3": '<article class="product"><h1>Desk</h1><p class="price">n/a</p></article>',
}


class Product(pydantic.BaseModel):
    name: str
    price: float
    currency: str = "EUR"


class Catalogue(Spider):
    name = "catalogue"
    start_urls = ["https://shop.example/"]  # the real site: run_spider points it at loopback
    allowed_domains = ["shop.example"]
    item_model = Product

    def __init__(self, currency: str = "EUR", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.currency = currency

    def parse(self, response: Any) -> Any:
        product = response.css_first("article.product")
        if product:
            yield {"name": product.css_first("h1").text(),
                   "price": product.css_first(".price").text(), "currency": self.currency}
        yield from response.follow_all("a[href]")


def test_run_spider_crawls_the_pages_on_loopback() -> None:
    result = run_spider(Catalogue, CATALOGUE, currency="USD")
    assert sorted((i["name"], i["price"], i["currency"]) for i in result.items) == [
        ("Chair", 25.5, "USD"), ("Lamp", 10.0, "USD")]
    assert result.stats["items_invalid"] == 1  # Desk: price "n/a"
    assert result.stats["pages"] == 6 and result.stats["filtered_offsite"] == 1
    assert result.exit_code == 0


def test_run_spider_by_name_with_settings_and_start_path(tmp_path: Path) -> None:
    (tmp_path / "spiders").mkdir()
    (tmp_path / "spiders/cat.py").write_text(
        "from scraper import Spider\n"
        "class Cat(Spider):\n"
        "    name = 'cat'\n"
        "    start_urls = ['https://shop.example/']\n"
        "    def __init__(self, base_url=None, **kw):\n"
        "        super().__init__(**kw)\n"
        "        if base_url:\n"
        "            self.start_urls = [base_url]\n"
        "    def parse(self, response):\n"
        "        yield {'path': response.url.split('/', 3)[3]}\n"
        "        yield from response.follow_all('a[href]')\n")
    result = run_spider("cat", CATALOGUE, {"crawl.depth_limit": 1}, start_path="/c/1",
                        base_url="https://ignored.example/")
    assert sorted(item["path"] for item in result.items) == ["c/1", "c/2", "p/1", "p/2"]


def test_run_spider_reports_failures() -> None:
    pages = {"/": '<a href="/broken">b</a>', "/broken": (500, {}, "oops")}
    result = run_spider(Catalogue, pages, {"retry.attempts": 1})
    assert result.exit_code == 1
    assert result.stats["failed_reasons"] == {"status:500": 1}


# -- make_response and run_callback ---------------------------------------------------------


def test_run_callback_on_a_made_response() -> None:
    response = make_response(CATALOGUE["/p/2"] + '<a href="/p/1">x</a>',
                             url="https://shop.example/p/2", meta={"from": "c/1"})
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.meta == {"from": "c/1"}
    output = run_callback(Catalogue().parse, response, item_model=Catalogue.item_model)
    assert output.items == [{"name": "Chair", "price": 25.5, "currency": "EUR"}]
    assert [(r.url, r.depth) for r in output.requests] == [("https://shop.example/p/1", 1)]
    assert output.invalid == []


def test_run_callback_sorts_out_invalid_values() -> None:
    def callback(response: Any) -> Any:
        yield {"name": "Desk", "price": "n/a"}
        yield 42
        yield None
        yield Request(response.urljoin("/next"))

    output = run_callback(callback, make_response("", url="https://shop.example/a/b"),
                          item_model=Product)
    assert output.items == []
    assert [reason.split(" (")[0] for _, reason in output.invalid] == [
        "invalid item", "int is neither a Request nor an item"]
    assert [r.url for r in output.requests] == ["https://shop.example/next"]


def test_make_response_decodes_by_the_given_header() -> None:
    response = make_response("caf\u00e9".encode("latin-1"),
                             headers={"Content-Type": "text/plain; charset=latin-1"}, status=203)
    assert response.text == "café" and response.status == 203
