"""Faulty servers: every request ends as a page or a failure with a reason, on time."""

from __future__ import annotations

import base64
import itertools
import json
import socket
import threading
import time
from email.utils import formatdate
from typing import Any

import pytest
from conftest import crawl, link_spider
from servers import FaultServer

from scraper import Failure, Request, Spider


def timed(spider: type[Spider], **settings: Any) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    result = crawl(spider, **settings)
    return result.stats, time.monotonic() - started


def one_url_spider(url: str, **attrs: Any) -> type[Spider]:
    return link_spider(url, **attrs)


def test_hang_before_headers_ends_with_timeout(server: FaultServer) -> None:
    server.add_hang("/hang")
    stats, took = timed(one_url_spider(server.url("/hang")), http__read_timeout=0.3,
                        retry__attempts=1)
    assert stats["failed_reasons"] == {"timeout": 1}
    assert took < 2.0


def test_request_timeout_cancels_header_wait_longer_than_read_timeout(server: FaultServer) -> None:
    server.add_hang("/hang")
    stats, took = timed(one_url_spider(server.url("/hang")), http__read_timeout=30,
                        http__request_timeout=0.4, retry__attempts=1)
    assert stats["failed_reasons"] == {"timeout": 1}
    assert took < 2.0


def test_trickling_body_is_cut_by_request_timeout(server: FaultServer) -> None:
    """One byte every 50 ms never trips the per-read timeout; the total timeout ends it."""
    server.add_trickle("/slow", total=10_000, chunk=1, interval=0.05)
    stats, took = timed(one_url_spider(server.url("/slow")), http__read_timeout=5,
                        http__request_timeout=0.5, retry__attempts=1)
    assert stats["failed_reasons"] == {"timeout": 1}
    assert stats["pages"] == 0
    assert took < 2.0


def test_reset_mid_body_is_retried_then_fails(server: FaultServer) -> None:
    server.add_reset_mid_body("/reset")
    stats, _ = timed(one_url_spider(server.url("/reset")), retry__attempts=3,
                     retry__backoff=0.01)
    assert stats["failed_reasons"] == {"connection": 1}
    assert stats["retries"] == 2
    assert server.count("/reset") == 3


def test_content_length_longer_than_body_fails_not_truncated(server: FaultServer) -> None:
    server.add_short_body("/short", declared=1000, sent=10)
    stats, _ = timed(one_url_spider(server.url("/short")), retry__attempts=2,
                     retry__backoff=0.01)
    assert stats["failed_reasons"] == {"connection": 1}
    assert stats["pages"] == 0
    assert server.count("/short") == 2


def test_post_is_not_retried_after_it_may_have_been_sent(server: FaultServer) -> None:
    server.add_reset_mid_body("/reset")

    class Poster(Spider):
        name = "poster"

        def start_requests(self) -> Any:
            yield Request(server.url("/reset"), method="POST", body=b"x=1")

    stats, _ = timed(Poster, retry__attempts=3, retry__backoff=0.01)
    assert server.count("/reset") == 1
    assert stats["failed_reasons"] == {"connection": 1}


def test_503_that_recovers(server: FaultServer) -> None:
    server.add_status_sequence("/flaky", [503, 503, 200], body=b"<html>ok</html>")
    stats, _ = timed(one_url_spider(server.url("/flaky")), retry__attempts=3,
                     retry__backoff=0.05)
    assert stats["pages"] == 1 and stats["failed"] == 0
    assert stats["retries"] == 2
    assert stats["status_counts"] == {"200": 1, "503": 2}
    starts = [r.started for r in server.requests_for("/flaky")]
    assert starts[1] - starts[0] >= 0.05  # backed off, not hammered
    assert starts[2] - starts[1] >= 0.1  # exponential


def test_503_for_good_fails_with_status_reason(server: FaultServer) -> None:
    server.add_status_sequence("/down", [503])
    result = crawl(one_url_spider(server.url("/down")), retry__attempts=2, retry__backoff=0.01)
    assert result.stats["failed_reasons"] == {"status:503": 1}
    assert result.exit_code == 1


def test_429_retry_after_pauses_the_whole_host(server: FaultServer) -> None:
    server.add_status_sequence("/a", [(429, {"Retry-After": "1"}), 200],
                               body=b"<html>a</html>")
    for path in ("/b", "/c", "/d"):
        server.add_page(path)
    server.add_handler("/", lambda ex: ex.respond(
        200, "".join(f'<a href="{p}">x</a>' for p in ("/a", "/b", "/c", "/d")),
        {"Content-Type": "text/html"}))
    stats, _ = timed(one_url_spider(server.url("/")), crawl__per_host=1, retry__backoff=0.01)
    assert stats["pages"] == 5 and stats["failed"] == 0
    requests = server.requests
    throttled = next(r for r in requests if r.status == 429)
    later = [r for r in requests if r.started > throttled.started]
    assert len(later) == 4
    assert min(r.started for r in later) - throttled.started >= 0.95


def test_503_retry_after_http_date(server: FaultServer) -> None:
    server.add_status_sequence("/a", [(503, {"Retry-After": formatdate(time.time() + 2,
                                                                        usegmt=True)}), 200])
    stats, _ = timed(one_url_spider(server.url("/a")), retry__backoff=0.01)
    assert stats["pages"] == 1
    first, second = server.requests_for("/a")
    assert second.started - first.started >= 0.9  # date has one-second resolution


def test_failing_host_is_backed_off(server: FaultServer) -> None:
    paths = [f"/down/{i}" for i in range(5)]
    server.add_page("/", paths)
    for path in paths:
        server.add_status_sequence(path, [500])
    stats, _ = timed(one_url_spider(server.url("/")), crawl__per_host=1, retry__attempts=1,
                     retry__backoff=0.05, retry__max_backoff=1)
    assert stats["failed_reasons"] == {"status:500": 5}
    starts = [r.started for r in server.requests if r.path.startswith("/down")]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[1] >= 0.05 and gaps[2] >= 0.1 and gaps[3] >= 0.2  # doubling pauses


def test_slow_tls_handshake_times_out(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(tls=True, handshake_delay=10)
    srv.add_page("/")
    stats, took = timed(one_url_spider(srv.url("/")), http__verify_tls=False,
                        http__connect_timeout=10, http__request_timeout=0.5,
                        retry__attempts=1)
    assert stats["failed_reasons"] == {"timeout": 1}
    assert took < 2.0


def test_tls_crawl_reuses_connections(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(tls=True)
    for i in range(30):
        srv.add_page(f"/{i}", [f"/{i + 1}"] if i < 29 else [])
    stats, _ = timed(one_url_spider(srv.url("/0")), http__verify_tls=False, crawl__per_host=2)
    assert stats["pages"] == 30
    assert stats["connections_opened"] == srv.connections_accepted == 1


def test_gzip_bomb_fails_fast_as_too_large(server: FaultServer) -> None:
    server.add_gzip_bomb("/bomb", decoded_size=64 * 2**20)
    stats, took = timed(one_url_spider(server.url("/bomb")), http__max_body=2**20,
                        retry__attempts=1)
    assert stats["failed_reasons"] == {"too_large": 1}
    assert took < 5.0


def test_dns_lookup_is_bounded_by_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    real = socket.getaddrinfo

    def stuck(host: str, *args: Any, **kwargs: Any) -> Any:
        if host.endswith(".invalid"):
            release.wait(10)
            raise socket.gaierror("no such host")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", stuck)
    try:
        stats, took = timed(one_url_spider("http://stuck.invalid/"),
                            http__connect_timeout=0.3, retry__attempts=1)
    finally:
        release.set()
    assert stats["failed_reasons"] == {"timeout": 1}
    assert took < 2.0


def test_redirect_loop_fails(server: FaultServer) -> None:
    server.add_redirect("/r1", "/r2")
    server.add_redirect("/r2", "/r1")
    stats, _ = timed(one_url_spider(server.url("/r1")))
    assert stats["failed_reasons"] == {"redirect_loop": 1}
    assert server.count("/r1") == 1 and server.count("/r2") == 1


def test_off_site_redirect_is_not_followed(server: FaultServer) -> None:
    other = f"http://localhost:{server.port}/elsewhere"
    server.add_redirect("/go", other)
    server.add_page("/elsewhere")
    stats, _ = timed(one_url_spider(server.url("/go")))
    assert stats["filtered_offsite"] == 1
    assert server.count("/elsewhere") == 0


def test_credentials_not_sent_to_another_host(server: FaultServer) -> None:
    server.add_redirect("/go", f"http://localhost:{server.port}/landing")
    server.add_page("/landing")

    class Authed(Spider):
        name = "authed"
        allowed_domains = ["127.0.0.1", "localhost"]

        def start_requests(self) -> Any:
            yield Request(server.url("/go"), headers={"Authorization": "Bearer s3cret",
                                                      "Cookie": "id=1", "X-Keep": "yes"})

        def parse(self, response: Any) -> Any:
            yield {"url": response.url}

    result = crawl(Authed)
    assert result.stats["pages"] == 1
    landing = server.requests_for("/landing")[0]
    assert "authorization" not in landing.headers and "cookie" not in landing.headers
    assert landing.headers["x-keep"] == "yes"
    assert server.requests_for("/go")[0].headers["authorization"] == "Bearer s3cret"


def test_callback_error_does_not_stop_the_crawl_and_calls_errback(server: FaultServer) -> None:
    for i in range(5):
        server.add_page(f"/{i}", [f"/{j}" for j in range(5)])
    failures: list[Failure] = []

    class Fragile(Spider):
        name = "fragile"
        start_urls = [server.url("/0")]

        def parse(self, response: Any) -> Any:
            if response.url.endswith("/3"):
                raise ValueError("cannot parse page 3")
            yield {"url": response.url}
            for request in response.follow_all("a[href]"):
                request.errback = failures.append
                yield request

    result = crawl(Fragile)
    assert result.stats["items"] == 4
    assert result.stats["failed_reasons"] == {"callback_error": 1}
    assert [f.reason for f in failures] == ["callback_error"]
    assert isinstance(failures[0].exception, ValueError)


def test_errback_receives_fetch_failures(server: FaultServer) -> None:
    server.add_hang("/hang")
    failures: list[Failure] = []

    class WithErrback(Spider):
        name = "errback"

        def start_requests(self) -> Any:
            yield Request(server.url("/hang"), errback=self.failed)

        def failed(self, failure: Failure) -> Any:
            failures.append(failure)
            yield {"failed": failure.request.url, "reason": failure.reason}

    result = crawl(WithErrback, http__request_timeout=0.3, retry__attempts=1)
    assert [f.reason for f in failures] == ["timeout"]
    assert result.items == [{"failed": server.url("/hang"), "reason": "timeout"}]


def test_every_url_is_accounted_for(server: FaultServer) -> None:
    """Pages + failures + filtered = every distinct link the crawl met."""
    server.add_page("/", ["/ok", "/missing", "/hang", "/reset", "mailto:x@y.z", "/ok#f"])
    server.add_page("/ok")
    server.add_hang("/hang")
    server.add_reset_mid_body("/reset")
    stats, took = timed(one_url_spider(server.url("/")), http__request_timeout=0.3,
                        retry__attempts=1, crawl__allowed_failures=10)
    assert stats["pages"] == 2
    assert stats["failed_reasons"] == {"status:404": 1, "timeout": 1, "connection": 1}
    assert stats["filtered_duplicate"] == 1
    assert took < 3.0




def test_connection_refused_is_a_connection_failure() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stats, took = timed(one_url_spider(f"http://127.0.0.1:{port}/"), retry__attempts=1)
    assert stats["failed_reasons"] == {"connection": 1}
    assert took < 2.0


def test_requests_go_through_the_proxy_with_its_credentials(
        server: FaultServer, caplog: pytest.LogCaptureFixture) -> None:
    """The proxy gets absolute-form requests for plain http and the Proxy-Authorization
    built from the proxy URL; the password appears in no log and no stat."""
    server.add_page("http://shop.test/", ["/a"])
    server.add_page("http://shop.test/a")
    proxy = f"http://crawler:s3cret@127.0.0.1:{server.port}"
    result = crawl(link_spider("http://shop.test/"), http__proxy=proxy)
    assert result.stats["pages"] == 2 and result.stats["failed"] == 0
    first = server.requests[0]
    assert first.path == "http://shop.test/"
    expected = "Basic " + base64.b64encode(b"crawler:s3cret").decode()
    assert first.headers["proxy-authorization"] == expected
    assert "s3cret" not in caplog.text and "s3cret" not in json.dumps(result.stats)


def test_a_proxy_url_must_be_http_or_socks(server: FaultServer) -> None:
    from scraper.errors import ConfigError

    with pytest.raises(ConfigError, match=r"http.proxy = 'ftp://h:1'"):
        crawl(link_spider(server.url("/")), http__proxy="ftp://h:1")
