"""User middlewares and the built-in chain: registration, order, `crawl.disable`, and what
a hook may return. Measured at the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import crawl, link_spider
from servers import FaultServer

from scraper import ConfigError, Request, Response, Spider
from scraper.components import BUILT_IN_NAMES

SETTINGS_MIDDLEWARE = '''
class Tag:
    def request(self, request, spider):
        seen = request.headers.get("X-Order", "") if request.headers else ""
        request.headers = {**(request.headers or {}), "X-Order": seen + ",settings"}
'''


class SpiderTag:
    def request(self, request: Request, spider: Spider) -> None:
        request.headers = {**(request.headers or {}), "X-Order": "spider"}


def test_spider_and_settings_middlewares_run_in_order(server: FaultServer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "mymiddlewares"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tagging.py").write_text(SETTINGS_MIDDLEWARE)
    monkeypatch.syspath_prepend(str(tmp_path))
    server.add_page("/", ["/a"])
    server.add_page("/a")
    result = crawl(link_spider(server.url("/"), middlewares=[SpiderTag()]),
                   crawl__middlewares=["mymiddlewares.tagging:Tag"])
    assert result.stats["pages"] == 2
    assert [r.headers.get("x-order") for r in server.requests] == ["spider,settings"] * 2


def test_the_chain_lists_the_built_ins_then_the_user_middlewares(server: FaultServer) -> None:
    from scraper.api import build_crawler, prepare

    server.add_page("/")
    instance, loaded = prepare(link_spider(server.url("/"), middlewares=[SpiderTag()]),
                               settings={"crawl.obey_robots": True})
    engine = build_crawler(instance, loaded.settings)
    engine.run()
    assert engine.chain is not None
    # the built-ins that apply to this crawl, in order, then the spider's middleware
    assert engine.chain.names == ["retry", "redirects", "robots", "cookies", "referer",
                                  "SpiderTag"]
    assert BUILT_IN_NAMES == ("retry", "redirects", "cache", "robots", "cookies", "auth",
                              "referer", "conditional", "proxies")


def test_disable_robots_switches_robots_off(server: FaultServer) -> None:
    server.add("/robots.txt", "User-agent: *\nDisallow: /\n", content_type="text/plain")
    server.add_page("/", ["/a"])
    server.add_page("/a")
    result = crawl(link_spider(server.url("/")), crawl__obey_robots=True,
                   crawl__disable=["robots"])
    assert server.count("/robots.txt") == 0
    assert result.stats["pages"] == 2 and result.stats["filtered_robots"] == 0


def test_robots_on_is_the_control(server: FaultServer) -> None:
    server.add("/robots.txt", "User-agent: *\nDisallow: /a\n", content_type="text/plain")
    server.add_page("/", ["/a"])
    server.add_page("/a")
    result = crawl(link_spider(server.url("/")), crawl__obey_robots=True)
    assert server.count("/robots.txt") == 1 and server.count("/a") == 0
    assert result.stats["filtered_robots"] == 1


def test_unknown_name_in_disable_is_a_config_error(server: FaultServer) -> None:
    server.add_page("/")
    with pytest.raises(ConfigError, match=r"crawl\.disable.*cookeis"):
        crawl(link_spider(server.url("/")), crawl__disable=["cookeis"])
    assert server.requests == []


def test_bad_middleware_path_is_a_config_error(server: FaultServer) -> None:
    server.add_page("/")
    with pytest.raises(ConfigError, match=r"crawl\.middlewares.*no_such_module"):
        crawl(link_spider(server.url("/")), crawl__middlewares=["no_such_module:Thing"])
    with pytest.raises(ConfigError, match="none of the methods"):
        crawl(link_spider(server.url("/"), middlewares=[object()]))
    assert server.requests == []


class Canned:
    """Answers /cached itself: the server never sees it."""

    def request(self, request: Request, spider: Spider) -> Response | None:
        if request.url.endswith("/cached"):
            return Response(request.url, 200, {"content-type": "text/html"},
                            b'<html><a href="/after">next</a></html>', request)
        return None


def test_request_hook_returning_a_response_answers_without_fetching(
        server: FaultServer) -> None:
    server.add_page("/", ["/cached"])
    server.add_page("/after")
    result = crawl(link_spider(server.url("/"), middlewares=[Canned()]))
    assert server.count("/cached") == 0
    assert server.count("/after") == 1  # the canned page's links were followed
    assert {item["url"] for item in result.items} == {
        server.url("/"), server.url("/cached"), server.url("/after")}
    assert result.stats["pages"] == 3 and result.stats["requests"] == 2


class AskAgain:
    """Sends the first response of each page back as a retry; accepts the second."""

    def __init__(self, times: int = 1) -> None:
        self.times = times

    def response(self, request: Request, response: Response, spider: Spider) -> Any:
        if request.attempt <= self.times:
            return request.replace(headers={"X-Again": str(request.attempt)})
        return response


def test_response_hook_returning_a_request_counts_as_a_retry(server: FaultServer) -> None:
    server.add_page("/")
    result = crawl(link_spider(server.url("/"), middlewares=[AskAgain()]))
    stats = result.stats
    assert server.count("/") == 2
    assert server.requests[1].headers["x-again"] == "1"
    assert stats["retries"] == 1 and stats["pages"] == 1 and stats["failed"] == 0


def test_a_middleware_retrying_forever_is_bounded_by_retry_attempts(
        server: FaultServer) -> None:
    server.add_page("/")
    result = crawl(link_spider(server.url("/"), middlewares=[AskAgain(times=100)]),
                   retry__attempts=3)
    assert server.count("/") == 3
    assert result.stats["retries"] == 2
    assert result.stats["failed_reasons"] == {"retry:AskAgain": 1}


def test_failure_hook_returning_a_request_tries_that_instead(server: FaultServer) -> None:
    server.add_status_sequence("/down", [503])
    server.add_page("/mirror")

    class Mirror:
        def failure(self, request: Request, failure: Any, spider: Spider) -> Any:
            return Request(request.url.replace("/down", "/mirror"))

    result = crawl(link_spider(server.url("/down"), middlewares=[Mirror()]),
                   retry__backoff=0.01)
    # A failure reaches user middlewares before the built-in retry decision.
    assert server.count("/down") == 1 and server.count("/mirror") == 1
    assert result.items == [{"url": server.url("/mirror"), "status": 200}]
    assert result.stats["retries"] == 1 and result.stats["failed"] == 0
