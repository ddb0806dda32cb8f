"""Content: compression, decoded-size cap, charsets, non-HTML bodies, URL hygiene in pages."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zlib
from typing import Any

import brotli
import pytest
from backports import zstd
from conftest import ROOT, crawl, link_spider
from servers import FaultServer

from scraper import Request, Spider
from scraper.request import Request as RequestClass
from scraper.response import Response


def texts_spider(url: str) -> type[Spider]:
    class Texts(Spider):
        name = "texts"
        start_urls = [url]

        def parse(self, response: Any) -> Any:
            title = response.css_first("title")
            yield {"url": response.url, "text": response.text,
                   "title": title.text() if title else None, "encoding": response.encoding}

    return Texts


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("br", brotli.compress),
     ("zstd", zstd.compress)],
)
def test_compressed_bodies_are_decoded(server: FaultServer, encoding: str,
                                       compress: Any) -> None:
    page = b"<html><head><title>compressed page</title></head><body>x</body></html>"
    server.add("/", compress(page), headers={"Content-Encoding": encoding})
    result = crawl(texts_spider(server.url("/")))
    assert result.items[0]["title"] == "compressed page"
    sent = server.requests_for("/")[0].headers["accept-encoding"]
    assert encoding in sent


BOMB_SCRIPT = r"""
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from servers import FaultServer
import scraper
from scraper import Spider

with FaultServer() as server:
    server.add_gzip_bomb("/bomb", decoded_size=200 * 2**20)
    server.add_page("/", ["/bomb"])

    class Bomb(Spider):
        name = "bomb"
        start_urls = [server.url("/")]
        def parse(self, response):
            yield from response.follow_all("a[href]")

    scraper.crawl(Bomb, {"crawl.obey_robots": False})  # warm up: imports, threads, pools
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = scraper.crawl(Bomb, {"crawl.obey_robots": False, "retry.attempts": 1})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"baseline_kib": baseline, "peak_kib": peak,
                  "failed": result.stats["failed_reasons"]}))
"""


def test_gzip_bomb_fails_too_large_with_bounded_memory() -> None:
    """200 MiB of zeros gzipped to about 200 KiB: the cap applies to the decoded size."""
    out = subprocess.run([sys.executable, "-c", BOMB_SCRIPT, str(ROOT / "tests")],
                         capture_output=True, text=True, timeout=120, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["failed"] == {"too_large": 1}
    grown_mib = (figures["peak_kib"] - figures["baseline_kib"]) / 1024
    assert grown_mib < 100, figures


def test_latin1_from_header(server: FaultServer) -> None:
    server.add("/", "<html><title>café crème</title></html>".encode("latin-1"),
               content_type="text/html; charset=ISO-8859-1")
    item = crawl(texts_spider(server.url("/"))).items[0]
    assert item["title"] == "café crème"
    assert item["encoding"] == "iso8859-1"


def test_latin1_from_meta(server: FaultServer) -> None:
    body = '<html><head><meta charset="latin-1"><title>naïve</title></head></html>'
    server.add("/", body.encode("latin-1"), content_type="text/html")
    assert crawl(texts_spider(server.url("/"))).items[0]["title"] == "naïve"


def test_undeclared_non_utf8_is_detected(server: FaultServer) -> None:
    text = "<html><title>Über die Straße</title><p>" + "Größe und Länge. " * 40 + "</p></html>"
    server.add("/", text.encode("cp1252"), content_type="text/html")
    item = crawl(texts_spider(server.url("/"))).items[0]
    assert item["title"] == "Über die Straße"


def test_invalid_utf8_does_not_crash(server: FaultServer) -> None:
    server.add("/", b"<html><title>broken \xff\xfe bytes</title></html>",
               content_type="text/html; charset=utf-8")
    item = crawl(texts_spider(server.url("/"))).items[0]
    assert item["title"].startswith("broken ") and item["title"].endswith(" bytes")
    assert "\ufffd" in item["text"]


def test_bom_wins(server: FaultServer) -> None:
    server.add("/", "\ufeff<html><title>bom ✓</title></html>".encode("utf-16"),
               content_type="text/html; charset=iso-8859-1")
    assert crawl(texts_spider(server.url("/"))).items[0]["title"] == "bom ✓"


def test_json_and_binary_bodies_reach_callbacks(server: FaultServer) -> None:
    server.add("/api", json.dumps({"n": 3}), content_type="application/json")
    server.add("/img", bytes(range(256)) * 4, content_type="image/png")

    class Api(Spider):
        name = "api"

        def start_requests(self) -> Any:
            yield Request(server.url("/api"), callback=self.parse_api)
            yield Request(server.url("/img"), callback=self.parse_img)

        def parse_api(self, response: Any) -> Any:
            yield {"n": response.json()["n"]}

        def parse_img(self, response: Any) -> Any:
            yield {"size": len(response.body)}

    items = crawl(Api).items
    assert sorted(items, key=str) == [{"n": 3}, {"size": 1024}]


def test_unfetchable_links_are_skipped_without_errors(server: FaultServer) -> None:
    links = ["javascript:void(0)", "mailto:a@b.c", "data:text/plain,x", "tel:123", "#top",
             "http://[::1", "http://exa mple.com/", "http://o\x01k.example/", "/fine\n", "ftp://x/",
             "/p/" + "a/b/" * 10, "/" + "x" * 3000]
    server.add_page("/", links)
    server.add_page("/fine")
    result = crawl(link_spider(server.url("/")))
    assert result.stats["pages"] == 2  # the index and /fine (newline dropped)
    assert result.stats["failed"] == 0
    # broken IPv6 literal, space in a host, control character in a host, ftp
    assert result.stats["filtered_bad_url"] == 4
    assert result.stats["filtered_trap"] == 2


def test_non_ascii_links_are_percent_encoded(server: FaultServer) -> None:
    server.add_page("/", ["/caf%C3%A9", "/café"])
    server.add_page("/caf%C3%A9")
    result = crawl(link_spider(server.url("/")))
    assert server.count("/caf%C3%A9") == 1
    assert result.stats["pages"] == 2


def test_sort_query_option_dedups_parameter_order(server: FaultServer) -> None:
    server.add_page("/", ["/q?a=1&b=2", "/q?b=2&a=1"])
    server.add_page("/q?a=1&b=2")
    server.add_page("/q?b=2&a=1")
    crawl(link_spider(server.url("/")), crawl__sort_query=True)
    assert len(server.requests_for("/q?a=1&b=2")) + len(server.requests_for("/q?b=2&a=1")) == 1


def test_response_text_never_raises_on_garbage() -> None:
    response = Response("http://x/", 200, {"content-type": "text/html; charset=nonsense"},
                        bytes(range(256)), RequestClass("http://x/"))
    assert isinstance(response.text, str)
    assert response.css("p") == []
