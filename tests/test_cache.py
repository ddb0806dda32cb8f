"""The HTTP cache (`http.cache`, `--cache`): replays send nothing, `cache_only` works
offline, `rfc9111` follows the caching headers, robots.txt and delays are skipped on
hits, and `scraper fetch` / `parse` share the same cache."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from conftest import crawl, link_spider
from servers import Exchange, FaultServer

import scraper
from scraper import Request, Spider
from scraper.cli import main
from scraper.components.cache import CACHE_FILE, HttpCache, freshness_lifetime
from scraper.settings import load
from scraper.stats import Stats
from scraper.testing import Site

PAGES = 8
EXCHANGES = PAGES + 4  # the index, the products, /old (301), /moved and /gone (404)


def catalogue() -> dict[str, Any]:
    """An index linking to pages, a 301 to one of them and a 404."""
    html = {"Content-Type": "text/html; charset=utf-8"}
    links = "".join(f'<a href="/p/{n}">{n}</a>' for n in range(PAGES))
    pages: dict[str, Any] = {
        "/": (200, html, f'<html><body>{links}<a href="/old">old</a>'
                         f'<a href="/gone">gone</a></body></html>'),
        "/old": (301, {**html, "Location": "/moved"}, ""),
        "/moved": (200, html, "<html><body><h1>moved here</h1></body></html>"),
        "/robots.txt": (200, {"Content-Type": "text/plain"}, "User-agent: *\nAllow: /\n"),
    }
    for n in range(PAGES):
        pages[f"/p/{n}"] = (200, html, f"<html><body><h1>Product {n}</h1></body></html>")
    return pages


def lines(path: Path) -> list[str]:
    return sorted(path.read_text(encoding="utf-8").splitlines())


def test_second_replay_crawl_sends_no_request_and_writes_the_same_items(
        tmp_path: Path) -> None:
    spider = link_spider("", handle_statuses=frozenset({404}))
    with Site(catalogue()) as site:
        spider.start_urls = [site.url("/")]  # robots.txt obeyed (scraper.crawl's default)
        first = scraper.crawl(spider, {"http.cache": "replay"}, output="out/a.jsonl")
        sent = len(site.requests)
        second = scraper.crawl(spider, {"http.cache": "replay"}, output="out/b.jsonl")
        assert len(site.requests) == sent  # the server saw nothing of the second crawl
    assert site.count("/robots.txt") == 1
    assert site.count("/old") == 1 and site.count("/moved") == 1
    assert first.finish_reason == second.finish_reason == "finished"
    assert first.stats["failed"] == second.stats["failed"] == 0
    assert first.stats["requests"] == sent and second.stats["requests"] == 0
    assert second.stats["cache_misses"] == 0
    # every page, robots.txt, the 301 and the 404 came from the cache
    assert second.stats["cache_hits"] == sent
    assert second.stats["redirects"] == 1  # the stored 301 was followed
    assert lines(tmp_path / "out/a.jsonl") == lines(tmp_path / "out/b.jsonl")
    items = [json.loads(line) for line in lines(tmp_path / "out/b.jsonl")]
    assert {item["status"] for item in items} == {200, 404}
    assert len(items) == EXCHANGES - 1  # all but the 301
    assert (tmp_path / ".scraper/cache" / CACHE_FILE).is_file()


def test_cache_only_works_with_the_server_stopped_and_fails_misses(tmp_path: Path) -> None:
    spider = link_spider("", handle_statuses=frozenset({404}))
    site = Site(catalogue()).start()
    try:
        spider.start_urls = [site.url("/")]
        first = crawl(spider, http__cache="replay")
    finally:
        site.stop()
    offline = crawl(spider, http__cache="replay", http__cache_only=True)
    assert offline.stats["requests"] == 0
    assert offline.finish_reason == "finished" and offline.exit_code == 0
    assert offline.stats["failed"] == 0 and len(offline.items) == EXCHANGES - 1
    key = sorted(json.dumps(item, sort_keys=True) for item in first.items)
    assert sorted(json.dumps(item, sort_keys=True) for item in offline.items) == key

    missing = link_spider(site.url("/never-fetched"))
    miss = crawl(missing, http__cache="replay", http__cache_only=True)
    assert miss.stats["requests"] == 0
    assert miss.stats["failed_reasons"] == {"cache_miss": 1}
    assert miss.stats["cache_misses"] == 1 and miss.exit_code == 1
    assert miss.items == []


def _etag_handler(ex: Exchange) -> None:
    if ex.request.headers.get("if-none-match") == '"v1"':
        ex.respond(304, b"", {"ETag": '"v1"', "Cache-Control": "no-cache"})
    else:
        ex.respond(200, "<h1>tagged</h1>", {"Content-Type": "text/html", "ETag": '"v1"',
                                             "Cache-Control": "no-cache"})


def _modified_handler(ex: Exchange) -> None:
    stamp = "Wed, 01 Jan 2025 00:00:00 GMT"
    if ex.request.headers.get("if-modified-since") == stamp:
        ex.respond(304, b"")
    else:
        ex.respond(200, "<h1>dated</h1>", {"Content-Type": "text/html",
                                           "Last-Modified": stamp})


def rfc_server(server: FaultServer) -> list[str]:
    html = "text/html"
    server.add("/fresh", "<h1>fresh</h1>", headers={"Cache-Control": "max-age=3600"},
               content_type=html)
    server.add("/nostore", "<h1>nostore</h1>",
               headers={"Cache-Control": "no-store, max-age=3600"}, content_type=html)
    server.add("/aged", "<h1>aged</h1>",  # older than its max-age: stale on arrival
               headers={"Cache-Control": "max-age=60", "Age": "120"}, content_type=html)
    server.add("/expired", "<h1>expired</h1>",
               headers={"Expires": "Thu, 01 Jan 1970 00:00:00 GMT"}, content_type=html)
    server.add("/private", "<h1>private</h1>",
               headers={"Cache-Control": "private, max-age=3600"}, content_type=html)
    server.add("/plain", "<h1>plain</h1>", content_type=html)  # no lifetime, no validator
    server.add_handler("/etag", _etag_handler)
    server.add_handler("/modified", _modified_handler)
    return ["/fresh", "/nostore", "/aged", "/expired", "/private", "/plain", "/etag",
            "/modified"]


def test_rfc9111_follows_max_age_no_store_and_revalidates_with_304(
        server: FaultServer) -> None:
    paths = rfc_server(server)

    class Pages(Spider):
        name = "pages"
        start_urls = [server.url(path) for path in paths]

        def parse(self, response: Any) -> Any:
            yield {"url": response.url, "status": response.status,
                   "h1": response.css_first("h1").text()}

    first = crawl(Pages, http__cache="rfc9111")
    second = crawl(Pages, http__cache="rfc9111")
    counts = {path: server.count(path) for path in paths}
    assert counts == {"/fresh": 1, "/private": 1,  # fresh: answered from the cache
                      "/nostore": 2, "/aged": 2, "/expired": 2, "/plain": 2,
                      "/etag": 2, "/modified": 2}
    etag = server.requests_for("/etag")
    assert "if-none-match" not in etag[0].headers
    assert etag[1].headers["if-none-match"] == '"v1"' and etag[1].status == 304
    modified = server.requests_for("/modified")
    assert modified[1].headers["if-modified-since"] == "Wed, 01 Jan 2025 00:00:00 GMT"
    assert modified[1].status == 304
    # nothing is revalidated without a validator
    assert "if-none-match" not in server.requests_for("/plain")[1].headers
    assert second.stats["cache_hits"] == 2
    assert second.stats["cache_revalidated"] == 2
    assert second.stats["failed"] == 0 and second.stats["status_counts"] == {"200": 4,
                                                                             "304": 2}

    def by_url(items: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
        return sorted((i["url"], i["status"], i["h1"]) for i in items)

    assert by_url(second.items) == by_url(first.items)  # a 304 answered with the body


def test_a_304_refreshes_the_stored_entry(tmp_path: Path) -> None:
    settings = load(overrides=["http.cache=rfc9111"]).settings
    stats = Stats()
    cache = HttpCache(settings, stats)
    try:
        url = "http://127.0.0.1:9/page"
        cache.after("GET", url, None, None, 200,
                    {"ETag": '"a"', "Cache-Control": "max-age=0", "X-Old": "1"}, b"body", 0.0)
        decision = cache.before("GET", url)
        assert decision.hit is None and decision.validators == {"If-None-Match": '"a"'}
        refreshed = cache.after("GET", url, decision.validators, None, 304,
                                {"ETag": '"a"', "Cache-Control": "max-age=600"}, b"", 0.0)
        assert refreshed is not None and refreshed.body == b"body"
        assert refreshed.headers["cache-control"] == "max-age=600"
        assert refreshed.headers["X-Old"] == "1"  # headers not in the 304 are kept
        hit = cache.before("GET", url).hit  # fresh now, for ten minutes
        assert hit is not None and hit.body == b"body" and hit.status == 200
        # a 304 for validators that do not match what is stored is not used
        assert cache.after("GET", url, {"If-None-Match": '"b"'}, None, 304, {}, b"",
                           0.0) is None
    finally:
        cache.close()
    assert stats.get("cache_hits") == 1 and stats.get("cache_revalidated") == 1


def test_vary_and_ttl(tmp_path: Path) -> None:
    settings = load(overrides=["http.cache=rfc9111", "http.cache_ttl=60"]).settings
    cache = HttpCache(settings, Stats())
    try:
        url = "http://127.0.0.1:9/v"
        for lang in ("en", "fr"):
            cache.after("GET", url, {"Accept-Language": lang}, None, 200,
                        {"Vary": "Accept-Language, Accept-Encoding",
                         "Cache-Control": "max-age=600"}, lang.encode(), 0.0)
        for lang in ("en", "fr"):
            hit = cache.before("GET", url, {"accept-language": lang}).hit
            assert hit is not None and hit.body == lang.encode()
        assert cache.before("GET", url, {"Accept-Language": "de"}).hit is None
        assert cache.before("GET", url).hit is None
        cache.after("GET", url + "?star", None, None, 200,
                    {"Vary": "*", "Cache-Control": "max-age=600"}, b"x", 0.0)
        assert cache.count() == 2  # Vary: * is never kept
        with sqlite3.connect(cache.path) as db:  # make the entries older than the ttl
            db.execute("UPDATE responses SET stored_at = stored_at - 120")
        assert cache.before("GET", url, {"Accept-Language": "en"}).hit is None
    finally:
        cache.close()


def test_freshness_lifetime() -> None:
    assert freshness_lifetime({"cache-control": "public, max-age=30"}) == 30
    assert freshness_lifetime({"cache-control": "max-age=30", "expires": "x"}) == 30
    assert freshness_lifetime({"expires": "garbage"}) == 0
    assert freshness_lifetime({"date": "Wed, 01 Jan 2025 00:00:00 GMT",
                               "expires": "Wed, 01 Jan 2025 00:01:40 GMT"}) == 100
    assert freshness_lifetime({}) is None


def test_hits_skip_robots_txt_and_the_politeness_delay() -> None:
    spider = link_spider("", handle_statuses=frozenset({404}))
    with Site(catalogue()) as site:
        spider.start_urls = [site.url("/")]
        first = crawl(spider, http__cache="replay", crawl__obey_robots=True)
        sent = len(site.requests)
        started = time.monotonic()
        replay = crawl(spider, http__cache="replay", crawl__obey_robots=True,
                       crawl__delay=1, crawl__per_host=1)
        elapsed = time.monotonic() - started
        assert len(site.requests) == sent
    assert site.count("/robots.txt") == 1
    assert replay.finish_reason == "finished" and replay.stats["failed"] == 0
    assert replay.stats["pages"] == first.stats["pages"] == EXCHANGES - 1
    assert replay.stats["cache_hits"] == EXCHANGES + 1  # robots.txt too
    # paced, the replay's 13 exchanges would take 12 s at least
    assert elapsed < EXCHANGES / 2


def test_hits_skip_the_delay_with_several_requests_per_host() -> None:
    spider = link_spider("")
    with Site(catalogue()) as site:
        spider.start_urls = [site.url("/")]
        crawl(spider, http__cache="replay")
        started = time.monotonic()
        replay = crawl(spider, http__cache="replay", crawl__delay=0.5, crawl__per_host=4)
        elapsed = time.monotonic() - started
    assert replay.stats["requests"] == 0
    assert elapsed < EXCHANGES * 0.5 / 2


def test_cache_disabled_by_name() -> None:
    spider = link_spider("")
    with Site(catalogue()) as site:
        spider.start_urls = [site.url("/")]
        crawl(spider, http__cache="replay", crawl__disable=["cache"])
        second = crawl(spider, http__cache="replay", crawl__disable=["cache"])
    assert second.stats["requests"] == EXCHANGES and second.stats["cache_hits"] == 0
    assert not Path(".scraper/cache").exists()


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), prog_name="scraper")


def test_fetch_and_parse_with_cache_share_the_cache() -> None:
    with Site(catalogue()) as site:
        url = site.url("/p/3")
        first = invoke("fetch", "--cache", "--preview", "0", url)
        second = invoke("fetch", "--cache", "--preview", "0", url)
        assert site.count("/p/3") == 1
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert "cache: miss (fetched and kept)" in first.output
    assert "cache: hit (nothing sent)" in second.output
    assert "status: 200 OK" in second.output
    # the site is gone: parse answers from the same cache, and a miss fails clearly
    spider = Path("spiders/products.py")
    spider.parent.mkdir()
    spider.write_text("from scraper import Spider\n\nclass Products(Spider):\n"
                      "    name = 'products'\n    start_urls = []\n\n"
                      "    def parse(self, response):\n"
                      "        yield {'name': response.css_first('h1').text()}\n")
    parsed = invoke("parse", "--cache", "-s", "http.cache_only=true", url,
                    "--spider", "products")
    assert parsed.exit_code == 0, parsed.output
    assert '{"name": "Product 3"}' in parsed.stdout
    missed = invoke("fetch", "--cache", "-s", "http.cache_only=true", site.url("/p/4"))
    assert missed.exit_code == 1 and "failed: cache_miss" in missed.output
    shell = invoke("shell", "--cache", "-s", "http.cache_only=true", url, "-c",
                   "response.css_first('h1').text()")
    assert shell.exit_code == 0 and "Product 3" in shell.output


def test_cache_settings_are_checked() -> None:
    result = invoke("crawl", "x.py", "-s", "http.cache_only=true")
    assert result.exit_code == 2
    assert "http.cache_only = True: expected false while http.cache is 'off'" in result.output
    result = invoke("crawl", "x.py", "-s", "http.cache=yes")
    assert result.exit_code == 2 and "http.cache = 'yes'" in result.output
    Path("blocked").write_text("a file where the cache directory should be")
    with Site(catalogue()) as site:
        result = invoke("fetch", "--cache", "-s", "http.cache_dir=blocked", site.url("/"))
    assert result.exit_code == 2 and "http.cache_dir: cannot use blocked" in result.output


def test_a_request_with_dont_cache_meta_bypasses_the_cache() -> None:
    with Site(catalogue()) as site:

        class Fresh(Spider):
            name = "fresh"

            def start_requests(self) -> Any:
                yield Request(site.url("/p/1"))
                yield Request(site.url("/p/2"), meta={"dont_cache": True})

            def parse(self, response: Any) -> Any:
                yield {"url": response.url}

        crawl(Fresh, http__cache="replay")
        second = crawl(Fresh, http__cache="replay")
        assert site.count("/p/1") == 1 and site.count("/p/2") == 2
    assert second.stats["cache_hits"] == 1 and len(second.items) == 2
