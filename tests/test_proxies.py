"""Proxy pools against loopback proxies: the test forward proxy (tests/proxies.py), a dead
port, and Debian's tinyproxy for https through a real CONNECT tunnel."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import crawl, link_spider, write_site_spider
from proxies import ForwardProxy, closed_port, tinyproxy
from servers import FaultServer

from scraper.components.proxies import ProxyPool
from scraper.errors import ConfigError


def site(server: FaultServer, pages: int) -> str:
    """A start page linking to `pages` pages; returns the start URL."""
    server.add_page("/", [f"/p{i}" for i in range(pages)])
    for i in range(pages):
        server.add_page(f"/p{i}")
    return server.url("/")


def balanced(stats: dict[str, Any]) -> bool:
    return stats["connections_closed"] == stats["connections_opened"] > 0


@pytest.fixture
def proxy() -> Any:
    with ForwardProxy() as started:
        yield started


@pytest.fixture
def other_proxy() -> Any:
    with ForwardProxy() as started:
        yield started


def test_a_dead_proxy_is_backed_off_and_retries_land_on_the_live_one(
        server: FaultServer, proxy: ForwardProxy, caplog: pytest.LogCaptureFixture) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    start = site(server, 30)
    result = crawl(link_spider(start), http__proxies=[dead, proxy.url], crawl__per_host=2,
                   crawl__workers=4, retry__backoff=0.01)
    stats = result.stats
    assert stats["pages"] == 31 and stats["failed"] == 0
    assert stats["proxy_backoffs"] >= 1 and stats["retries"] == stats["proxy_backoffs"]
    assert proxy.requests == 31  # every page came through the live one, retries included
    assert proxy.max_open_connections <= 2 and stats["connections_reused"] >= 31 - 2
    assert f"proxy {dead} backed off" in caplog.text
    assert balanced(stats)


def test_round_robin_spreads_requests_and_reuses_few_connections(
        server: FaultServer, proxy: ForwardProxy, other_proxy: ForwardProxy) -> None:
    start = site(server, 40)
    result = crawl(link_spider(start), http__proxies=[proxy.url, other_proxy.url],
                   crawl__per_host=4, crawl__workers=8)
    stats = result.stats
    assert stats["pages"] == 41 and stats["failed"] == 0
    assert proxy.requests + other_proxy.requests == 41
    assert abs(proxy.requests - other_proxy.requests) <= 1
    for each in (proxy, other_proxy):
        assert each.connections <= 4 and each.max_requests_per_connection > 1
    assert stats["connections_reused"] == 41 - proxy.connections - other_proxy.connections
    assert balanced(stats)


def test_per_host_keeps_each_origin_on_one_proxy(
        make_server: Any, proxy: ForwardProxy, other_proxy: ForwardProxy) -> None:
    servers = [make_server() for _ in range(6)]
    hub = servers[0]
    hub.add_page("/", [s.url(f"/{i}") for s in servers[1:] for i in range(5)])
    for each in servers[1:]:
        for i in range(5):
            each.add_page(f"/{i}")
    spider = link_spider(hub.url("/"), allowed_domains=["127.0.0.1"])
    result = crawl(spider, http__proxies=[proxy.url, other_proxy.url],
                   http__proxy_strategy="per_host")
    assert result.stats["pages"] == 26 and result.stats["failed"] == 0
    origins = [{target.rsplit("/", 1)[0] for _, target, _ in each.seen}
               for each in (proxy, other_proxy)]
    assert not origins[0] & origins[1]
    assert len(origins[0] | origins[1]) == 6 and origins[0] and origins[1]


def test_per_host_choice_is_stable_and_moves_only_a_failed_proxys_origins() -> None:
    now = [100.0]
    pool = ProxyPool(["http://a:1", "http://b:1", "http://c:1"], strategy="per_host",
                     backoff=1.0, max_backoff=8.0, clock=lambda: now[0])
    origins = [f"http://site{i}.test/page" for i in range(60)]
    first = {url: pool.choose(url) for url in origins}
    assert {url: pool.choose(url + "?again") for url in origins} == first
    assert len(set(first.values())) == 3
    assert pool.penalise("http://b:1", "test") == 1.0
    moved = {url: pool.choose(url) for url in origins}
    assert all(moved[url] == first[url] for url in origins if first[url] != "http://b:1")
    assert "http://b:1" not in moved.values()
    assert pool.penalise("http://b:1", "test") == 2.0  # doubling
    now[0] += 2.0
    assert {url: pool.choose(url) for url in origins} == first  # recovered


def test_per_session_keeps_a_session_on_its_proxy_and_a_retry_goes_elsewhere() -> None:
    pool = ProxyPool(["http://a:1", "http://b:1"], strategy="per_session", backoff=1.0,
                     max_backoff=8.0)
    kept = pool.choose("http://x.test/", session="s1")
    assert {pool.choose(f"http://x.test/{i}", session="s1") for i in range(5)} == {kept}
    other = pool.choose("http://x.test/", session="s1", avoid=kept)
    assert other != kept and pool.choose("http://x.test/", session="s1") == kept
    pool.penalise(kept, "test")
    assert pool.choose("http://x.test/", session="s1") == other


def test_a_proxy_closing_a_kept_alive_connection_is_the_stale_race(server: FaultServer) -> None:
    start = site(server, 6)
    with ForwardProxy(drop_reused=2) as dropping:
        result = crawl(link_spider(start), http__proxy=dropping.url, crawl__per_host=1,
                       crawl__workers=1)
    stats = result.stats
    assert dropping.dropped == 2
    assert stats["pages"] == 7 and stats["failed"] == 0
    assert stats["stale_retries"] == 2 and stats["retries"] == 0
    assert stats.get("proxy_backoffs", 0) == 0
    assert balanced(stats)


def test_407_is_not_retried_and_the_password_is_never_logged(
        server: FaultServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    start = site(server, 0)
    with ForwardProxy(credentials="crawler:Right1") as guarded:
        wrong = f"http://crawler:Wr0ngPass@127.0.0.1:{guarded.port}"
        result = crawl(link_spider(start), http__proxies=[wrong])
        assert guarded.requests == 1
        assert result.stats["failed_reasons"] == {"proxy_auth": 1}
        right = crawl(link_spider(start), http__proxies=[guarded.url])
        assert right.stats["pages"] == 1 and guarded.requests == 2
    assert "Wr0ngPass" not in caplog.text and "Right1" not in caplog.text
    assert "crawler:***@127.0.0.1" in caplog.text
    assert "Wr0ngPass" not in json.dumps(result.stats)


def test_the_password_is_in_no_debug_line_of_the_command(
        server: FaultServer, tmp_path: Path) -> None:
    start = site(server, 2)
    spider = write_site_spider(tmp_path / "site.py", start)
    with ForwardProxy(credentials="crawler:Sec4et") as guarded:
        done = subprocess.run(
            [sys.executable, "-m", "scraper", "crawl", str(spider), "--log-level", "debug",
             "-s", f'http.proxies=["http://nobody:Nope9@127.0.0.1:{closed_port()}", '
                   f'"{guarded.url}"]', "-s", "retry.backoff=0.01",
             "--stats", str(tmp_path / "stats.json")],
            capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert guarded.requests >= 3
    logged = done.stdout + done.stderr + (tmp_path / "stats.json").read_text()
    assert "nobody:***@" in logged and "backed off" in logged
    assert "Sec4et" not in logged and "Nope9" not in logged


@pytest.mark.parametrize("key, value", [
    ("http.proxy", "http://user:Pw1@127.0.0.1:99999"),
    ("http.proxies", '["http://user:Pw1@[::1:3128"]'),
    ("http.proxies", '["ftp://127.0.0.1:21"]'),
])
def test_a_malformed_proxy_url_exits_2_naming_the_key(
        tmp_path: Path, key: str, value: str) -> None:
    spider = write_site_spider(tmp_path / "site.py", "http://127.0.0.1:9/")
    done = subprocess.run([sys.executable, "-m", "scraper", "crawl", str(spider),
                           "-s", f"{key}={value}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert key in done.stderr and "Traceback" not in done.stderr
    assert "Pw1" not in done.stderr


def test_proxies_from_a_file(tmp_path: Path, server: FaultServer, proxy: ForwardProxy) -> None:
    (tmp_path / "proxies.txt").write_text(f"# ours\n\n{proxy.url}\n")
    result = crawl(link_spider(site(server, 2)), http__proxies="@proxies.txt")
    assert result.stats["pages"] == 3 and proxy.requests == 3
    (tmp_path / "bad.txt").write_text(f"{proxy.url}\nhttp://h:1/x\n")
    with pytest.raises(ConfigError, match=r"http.proxies = '@bad.txt'.*bad.txt, line 2"):
        crawl(link_spider(server.url("/")), http__proxies="@bad.txt")


def test_scraper_settings_masks_proxy_passwords() -> None:
    from click.testing import CliRunner

    from scraper.cli import main

    outcome = CliRunner().invoke(main, ["settings", "--json", "-s",
                                        'http.proxies=["http://u:Hidden1@127.0.0.1:3128"]'])
    assert outcome.exit_code == 0, outcome.output
    assert "u:***@127.0.0.1:3128" in outcome.output and "Hidden1" not in outcome.output


def test_a_dead_socks_proxy_is_a_proxy_failure(server: FaultServer) -> None:
    result = crawl(link_spider(site(server, 0)),
                   http__proxy=f"socks5h://u:p@127.0.0.1:{closed_port()}", retry__attempts=1)
    assert result.stats["failed_reasons"] == {"proxy_connection": 1}
    assert result.stats["proxy_backoffs"] == 1


def test_connections_are_all_counted_closed_without_a_proxy(server: FaultServer) -> None:
    result = crawl(link_spider(site(server, 20)), crawl__per_host=3)
    assert result.stats["pages"] == 21 and balanced(result.stats)


# -- https through tinyproxy (a real CONNECT proxy) ----------------------------------------


def test_https_through_tinyproxy_reuses_the_tunnel(make_server: Any, tmp_path: Path) -> None:
    server = make_server(tls=True)
    start = site(server, 12)
    with tinyproxy(tmp_path, [server.port]) as port:
        result = crawl(link_spider(start), http__proxy=f"http://127.0.0.1:{port}",
                       http__verify_tls=False, crawl__per_host=2, crawl__workers=4)
    stats = result.stats
    assert stats["pages"] == 13 and stats["failed"] == 0
    assert all(r.path.startswith("/") for r in server.requests)  # origin-form, tunnelled
    assert server.connections_accepted == stats["connections_opened"] <= 2
    assert stats["connections_reused"] == 13 - stats["connections_opened"]
    assert balanced(stats)


def test_tinyproxy_refusing_the_tunnel_and_a_bad_certificate_are_not_retried(
        make_server: Any, tmp_path: Path) -> None:
    server = make_server(tls=True)
    start = site(server, 0)
    with tinyproxy(tmp_path, [server.port]) as port:
        proxy = f"http://127.0.0.1:{port}"
        untrusted = crawl(link_spider(start), http__proxy=proxy)  # self-signed: refused
        refused = crawl(link_spider("https://127.0.0.1:1/"), http__proxy=proxy)
    assert untrusted.stats["failed_reasons"] == {"tls": 1}
    assert untrusted.stats["requests"] == 1 and untrusted.stats["retries"] == 0
    assert refused.stats["failed_reasons"] == {"proxy_refused": 1}
    assert refused.stats["requests"] == 1 and refused.stats["retries"] == 0
    assert refused.stats["proxy_backoffs"] == 1
    assert balanced(untrusted.stats) and balanced(refused.stats)
