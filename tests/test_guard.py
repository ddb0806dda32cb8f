"""The private-address guard and the resolver: a crawl of the public web never reaches
loopback, private, link-local or reserved addresses through a host that is not its own.

No test sends a packet beyond loopback: `no_remote_connect` makes every connect to a
non-loopback address fail (and records it), and names are answered by a stub resolver.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import crawl, link_spider
from servers import FaultServer

from scraper import Spider
from scraper.client import Client
from scraper.errors import BlockedAddress, ConfigError, ConnectError
from scraper.resolver import (
    AddressGuard,
    HostPatterns,
    Resolver,
    SocketAddress,
    address_kind,
    trusted_hosts,
)
from scraper.settings import HttpSettings
from scraper.sitemap import SitemapSpider
from scraper.stats import Stats

METADATA = "http://169.254.169.254/latest/meta-data/"


@pytest.fixture
def remote_connects(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every connect to a non-loopback address fails with ECONNREFUSED before any packet
    is sent, and is recorded here: a test asserts the list it expects (usually [])."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect

    def loopback(address: Any) -> bool:
        try:
            return ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback
        except (ValueError, IndexError, TypeError):
            return False  # a name or a Unix path: never expected from the client

    def guarded_connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not loopback(address):
            attempts.append(address)
            raise ConnectionRefusedError(111, f"test refused a connect to {address!r}")
        real_connect(sock, address)

    def guarded_create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        if not loopback(address):
            attempts.append(address)
            raise ConnectionRefusedError(111, f"test refused a connect to {address!r}")
        return real_create_connection(address, *args, **kwargs)

    real_create_connection = socket.create_connection
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "create_connection", guarded_create_connection)
    return attempts


class StubDNS:
    """Stands in for getaddrinfo: `answers[name]` is a list of addresses, or a callable
    giving a fresh list per lookup; any other name does not exist. `queries` records
    the names looked up."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str] | Callable[[], list[str]]] = {}
        self.queries: list[str] = []

    def __setitem__(self, name: str, answer: list[str] | Callable[[], list[str]]) -> None:
        self.answers[name] = answer

    def lookup(self, host: str, family: int) -> list[SocketAddress]:
        self.queries.append(host)
        answer = self.answers.get(host)
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        addresses = answer() if callable(answer) else answer
        return [(socket.AF_INET6, (ip, 0, 0, 0)) if ":" in ip else (socket.AF_INET, (ip, 0))
                for ip in addresses]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> StubDNS:
    stub = StubDNS()
    monkeypatch.setattr("scraper.resolver.system_lookup", stub.lookup)
    return stub


@pytest.fixture
def other_loopback() -> Iterator[FaultServer]:
    """A server on 127.0.0.2: loopback, but not the start URLs' host (127.0.0.1)."""
    srv = FaultServer()
    srv.host = "127.0.0.2"  # type: ignore[misc]
    with srv:
        yield srv


# -- the address policy -----------------------------------------------------------------


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("127.0.0.2", "loopback"), ("::1", "loopback"),
    ("10.0.0.5", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
    ("fd00::5", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("100.64.0.1", "reserved"), ("192.0.2.1", "reserved"), ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"), ("198.18.0.1", "reserved"),
    # IPv6 forms of IPv4 addresses are judged as the IPv4 address
    ("::ffff:169.254.169.254", "link-local"), ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.5", "private"), ("2002:a9fe:a9fe::1", "link-local"),
    ("64:ff9b::a9fe:a9fe", "link-local"),
    ("93.184.216.34", None), ("2606:2800:220:1::1", None), ("::ffff:93.184.216.34", None),
])
def test_address_kinds(address: str, kind: str | None) -> None:
    assert address_kind(address) == kind


def test_trusted_hosts_cover_start_hosts_and_allowed_domains_with_subdomains() -> None:
    guard = AddressGuard(trusted_hosts(["127.0.0.1", "Shop.Test."], ["example.com"]))
    for host in ("127.0.0.1", "shop.test", "example.com", "api.example.com", "a.b.example.com"):
        assert guard.trusts(host), host
    for host in ("127.0.0.2", "a.shop.test", "badexample.com", "example.com.evil.test"):
        assert not guard.trusts(host), host


def test_host_patterns_prefer_the_exact_name_then_the_longest_suffix() -> None:
    patterns = HostPatterns({"*.test": "1", "*.b.test": "2", "a.b.test": "3"})
    assert patterns.get("a.b.test") == "3"
    assert patterns.get("x.b.test") == "2"
    assert patterns.get("x.y.test") == "1"
    assert patterns.get("test") is None and "b.test" in patterns  # "*.test" matches b.test


# -- crawls on loopback -----------------------------------------------------------------


def test_link_to_another_loopback_address_is_refused(
        server: FaultServer, other_loopback: FaultServer, remote_connects: list[Any]) -> None:
    """allowed_domains = [] follows links anywhere, but not to loopback hosts that are
    not the crawl's own: 127.0.0.2 answers nothing."""
    other_loopback.add_page("/admin")
    server.add_page("/", [other_loopback.url("/admin")])
    result = crawl(link_spider(server.url("/"), allowed_domains=[]))
    assert other_loopback.count("/admin") == 0 and other_loopback.connections_accepted == 0
    assert result.stats["failed_reasons"] == {"blocked_address": 1}
    assert result.stats["pages"] == 1
    assert remote_connects == []


def test_allow_private_addresses_fetches_that_link(
        server: FaultServer, other_loopback: FaultServer) -> None:
    other_loopback.add_page("/admin")
    server.add_page("/", [other_loopback.url("/admin")])
    result = crawl(link_spider(server.url("/"), allowed_domains=[]),
                   http__allow_private_addresses=True)
    assert other_loopback.count("/admin") == 1
    assert result.stats["pages"] == 2 and result.stats["failed"] == 0


def test_names_answering_private_addresses_are_refused_before_any_connect(
        server: FaultServer, dns: StubDNS, remote_connects: list[Any],
        caplog: pytest.LogCaptureFixture) -> None:
    """Link-local (the cloud metadata address), RFC 1918 and IPv4-mapped IPv6 answers,
    and IP literals, are refused without a socket; each host is logged once."""
    dns["metadata.test"] = ["169.254.169.254"]
    dns["intranet.test"] = ["10.0.0.5"]
    dns["mapped.test"] = ["::ffff:10.0.0.5"]
    links = ["http://metadata.test/latest/meta-data/", "http://metadata.test/user-data",
             "http://intranet.test/admin", "http://mapped.test/", METADATA,
             "http://[::ffff:169.254.169.254]/latest/", "http://10.0.0.5:6379/"]
    server.add_page("/", links)
    caplog.set_level("WARNING", logger="scraper.resolver")
    result = crawl(link_spider(server.url("/"), allowed_domains=[]))
    assert result.stats["failed_reasons"] == {"blocked_address": len(links)}
    assert result.stats["connections_opened"] == 1  # the start page's
    assert remote_connects == []
    refusals = [r.getMessage() for r in caplog.records if r.name == "scraper.resolver"]
    assert len(refusals) == 6  # once per host: metadata.test twice, logged once
    assert any("metadata.test resolves to 169.254.169.254 (link-local)" in m for m in refusals)


def test_redirect_to_the_metadata_address_is_refused(
        server: FaultServer, remote_connects: list[Any]) -> None:
    server.add_redirect("/go", METADATA)
    result = crawl(link_spider(server.url("/go"), allowed_domains=[]))
    assert result.stats["redirects"] == 1
    assert result.stats["failed_reasons"] == {"blocked_address": 1}
    assert remote_connects == []


def test_blocked_address_is_not_retried(server: FaultServer, dns: StubDNS,
                                        remote_connects: list[Any]) -> None:
    dns["intranet.test"] = ["10.0.0.5"]
    server.add_page("/", ["http://intranet.test/"])
    result = crawl(link_spider(server.url("/"), allowed_domains=[]), retry__attempts=5)
    assert result.stats["retries"] == 0
    assert result.stats["failed_reasons"] == {"blocked_address": 1}


def test_robots_txt_of_a_blocked_host_is_not_fetched_and_its_pages_fail_blocked(
        server: FaultServer, dns: StubDNS, remote_connects: list[Any]) -> None:
    dns["intranet.test"] = ["10.0.0.5"]
    server.add_page("/", ["http://intranet.test/admin"])
    result = crawl(link_spider(server.url("/"), allowed_domains=[]), crawl__obey_robots=True)
    assert result.stats["failed_reasons"] == {"blocked_address": 1}
    assert remote_connects == []


def test_sitemap_urls_on_private_addresses_are_refused(
        server: FaultServer, dns: StubDNS, remote_connects: list[Any]) -> None:
    """A robots.txt Sitemap line and a sitemap's <loc> pointing inside are refused."""
    dns["intranet.test"] = ["192.168.1.10"]
    server.add("/robots.txt", f"Sitemap: {server.url('/sitemap.xml')}\n"
                              "Sitemap: http://intranet.test/sitemap.xml\n",
               content_type="text/plain")
    server.add("/sitemap.xml", "<urlset xmlns='http://www.sitemaps.org/schemas/sitemap/0.9'>"
                               f"<url><loc>{server.url('/p1')}</loc></url>"
                               f"<url><loc>{METADATA}</loc></url></urlset>",
               content_type="application/xml")
    server.add_page("/p1")

    class Sitemaps(SitemapSpider):
        name = "sitemaps"
        sitemap_urls = [server.url("/robots.txt")]
        allowed_domains: list[str] = []

        def parse(self, response: Any) -> Any:
            yield {"url": response.url}

    result = crawl(Sitemaps)
    assert [item["url"] for item in result.items] == [server.url("/p1")]
    assert result.stats["failed_reasons"] == {"blocked_address": 2}
    assert remote_connects == []


def test_start_url_and_allowed_domains_names_are_trusted(
        server: FaultServer, dns: StubDNS, remote_connects: list[Any]) -> None:
    """The crawl's own hosts may be private: a start URL's name and subdomains of an
    allowed domain, here all answering loopback."""
    dns["shop.test"] = ["127.0.0.1"]
    dns["api.shop.test"] = ["127.0.0.1"]
    dns["elsewhere.test"] = ["127.0.0.1"]
    port = server.port
    server.add_page("/", [f"http://api.shop.test:{port}/api", f"http://elsewhere.test:{port}/"])
    server.add_page("/api")
    spider = link_spider(f"http://shop.test:{port}/", allowed_domains=["shop.test",
                                                                          "elsewhere.test"])
    result = crawl(spider)
    hosts = sorted(request.headers["host"] for request in server.requests)
    assert hosts == [f"api.shop.test:{port}", f"elsewhere.test:{port}", f"shop.test:{port}"]
    assert result.stats["failed"] == 0


# -- http.resolve and the DNS cache -----------------------------------------------------


def test_http_resolve_crawls_many_names_on_loopback_without_dns(
        server: FaultServer, dns: StubDNS, remote_connects: list[Any]) -> None:
    """`*.suffix` maps every subdomain; mapped names are the crawl's own (trusted) even
    when allowed_domains does not list them; the Host header keeps the name."""
    port = server.port
    names = [f"site{i}.bench.test" for i in range(30)]
    server.add_page("/", [f"http://{name}:{port}/" for name in names] + [
        f"http://exact.test:{port}/"])
    spider = link_spider(f"http://127.0.0.1:{port}/", allowed_domains=[])
    result = crawl(spider, http__resolve={"*.bench.test": "127.0.0.1",
                                          "exact.test": "127.0.0.1"})
    assert result.stats["pages"] == 32 and result.stats["failed"] == 0
    assert {r.headers["host"] for r in server.requests} == {
        f"{host}:{port}" for host in ["127.0.0.1", "exact.test", *names]}
    assert dns.queries == []


def test_http_resolve_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"http.resolve = .*IP addresses as values.*'nowhere'"):
        crawl(link_spider("http://a.test/"), http__resolve={"a.test": "nowhere"})
    with pytest.raises(ConfigError, match=r"http.resolve = .*patterns as keys.*'a\*b.test'"):
        crawl(link_spider("http://a.test/"), http__resolve={"a*b.test": "127.0.0.1"})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_dns_answers_are_cached_for_the_ttl_and_unknown_names_briefly(dns: StubDNS) -> None:
    clock = FakeClock()
    dns["a.test"] = ["192.0.2.1"]
    resolver = Resolver(ttl=60.0, clock=clock)
    assert resolver.resolve("a.test", 80, 1.0) == [(socket.AF_INET, ("192.0.2.1", 80))]
    assert resolver.resolve("A.test.", 443, 1.0) == [(socket.AF_INET, ("192.0.2.1", 443))]
    for _ in range(2):
        with pytest.raises(socket.gaierror):
            resolver.resolve("nxdomain.test", 80, 1.0)
    assert dns.queries == ["a.test", "nxdomain.test"]
    clock.now += 11  # past the negative TTL (10 s), within the TTL
    resolver.resolve("a.test", 80, 1.0)
    with pytest.raises(socket.gaierror):
        resolver.resolve("nxdomain.test", 80, 1.0)
    assert dns.queries == ["a.test", "nxdomain.test", "nxdomain.test"]
    clock.now += 60
    resolver.resolve("a.test", 80, 1.0)
    assert dns.queries.count("a.test") == 2


def test_dns_ttl_zero_asks_every_time_and_failures_other_than_no_name_are_not_cached(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def lookup(host: str, family: int) -> list[SocketAddress]:
        calls.append(host)
        if host == "flaky.test":
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return [(socket.AF_INET, ("192.0.2.1", 0))]

    monkeypatch.setattr("scraper.resolver.system_lookup", lookup)
    resolver = Resolver(ttl=0.0)
    for _ in range(2):
        resolver.resolve("a.test", 80, 1.0)
        with pytest.raises(socket.gaierror):
            resolver.resolve("flaky.test", 80, 1.0)
    assert calls == ["a.test", "flaky.test"] * 2


def test_a_slow_lookup_is_shared_and_bounded_by_the_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    calls: list[str] = []

    def lookup(host: str, family: int) -> list[SocketAddress]:
        calls.append(host)
        release.wait(5)
        return [(socket.AF_INET, ("192.0.2.1", 0))]

    monkeypatch.setattr("scraper.resolver.system_lookup", lookup)
    resolver = Resolver(ttl=60.0)
    with pytest.raises(TimeoutError, match=r"slow\.test"):
        resolver.resolve("slow.test", 80, 0.05)
    with pytest.raises(TimeoutError):
        resolver.resolve("slow.test", 80, 0.05)  # joins the lookup still running
    release.set()
    assert resolver.resolve("slow.test", 80, 5.0)[0][1] == ("192.0.2.1", 80)
    assert calls == ["slow.test"]


# -- the client: the address judged is the address connected to ------------------------


def test_dns_rebinding_gains_nothing(dns: StubDNS, remote_connects: list[Any]) -> None:
    """A name that answered a public address, then the metadata address: each connect
    is judged on its own answer, so the second is refused before any socket."""
    answers = iter([["93.184.216.34"], ["169.254.169.254"]])
    dns["rebind.test"] = lambda: next(answers)
    client = Client(HttpSettings(dns_ttl=0, connect_timeout=1), per_host=1, stats=Stats())
    try:
        with pytest.raises(ConnectError):  # the test's stand-in for the public internet
            client.fetch("GET", "http://rebind.test/")
        assert remote_connects == [("93.184.216.34", 80)]
        with pytest.raises(BlockedAddress) as refused:
            client.fetch("GET", "http://rebind.test/latest/meta-data/")
        assert refused.value.reason == "blocked_address" and not refused.value.retryable
        assert refused.value.url == "http://rebind.test/latest/meta-data/"
        assert remote_connects == [("93.184.216.34", 80)]
    finally:
        client.close()


def test_only_the_allowed_addresses_of_a_mixed_answer_are_connected(
        dns: StubDNS, remote_connects: list[Any]) -> None:
    dns["mixed.test"] = ["10.0.0.5", "93.184.216.34", "127.0.0.1"]
    client = Client(HttpSettings(connect_timeout=1), per_host=1, stats=Stats())
    try:
        with pytest.raises(ConnectError):
            client.fetch("GET", "http://mixed.test/")
        assert remote_connects == [("93.184.216.34", 80)]
    finally:
        client.close()


def test_proxied_targets_are_judged_and_the_proxy_is_trusted(
        server: FaultServer, dns: StubDNS, remote_connects: list[Any]) -> None:
    """Through a proxy (on loopback, trusted), targets at private addresses are refused
    before anything is sent to the proxy; a public one goes through it."""
    dns["intranet.test"] = ["10.0.0.5"]
    dns["public.test"] = ["93.184.216.34"]
    server.add_page("http://shop.test/", [METADATA, "http://intranet.test/",
                                          "http://public.test/"])
    server.add_page("http://public.test/")
    result = crawl(link_spider("http://shop.test/", allowed_domains=[]),
                   http__proxy=f"http://127.0.0.1:{server.port}")
    assert [r.path for r in server.requests] == ["http://shop.test/", "http://public.test/"]
    assert result.stats["failed_reasons"] == {"blocked_address": 2}
    assert remote_connects == []


def test_client_trust_admits_a_host_later(server: FaultServer,
                                          remote_connects: list[Any]) -> None:
    server.add_page("/")
    client = Client(HttpSettings(), per_host=1, stats=Stats())
    try:
        with pytest.raises(BlockedAddress, match=r"127\.0\.0\.1 is a loopback address"):
            client.fetch("GET", server.url("/"))
        client.trust("127.0.0.1")
        assert client.fetch("GET", server.url("/")).status == 200
    finally:
        client.close()


def test_scraper_fetch_reaches_the_url_it_was_given(server: FaultServer) -> None:
    """A URL typed on the command line is the user's own, loopback or not."""
    from click.testing import CliRunner

    from scraper.cli import main

    server.add_page("/")
    outcome = CliRunner().invoke(main, ["fetch", server.url("/"), "--preview", "0"])
    assert outcome.exit_code == 0, outcome.output
    assert server.count("/") == 1


def test_spider_defaults_still_crawl_loopback(server: FaultServer) -> None:
    """The suite's usual case: start URLs on 127.0.0.1, default allowed_domains."""
    server.add_page("/", ["/a"])
    server.add_page("/a")

    class Plain(Spider):
        name = "plain"
        start_urls = [server.url("/")]

        def parse(self, response: Any) -> Any:
            yield {"url": response.url}
            yield from response.follow_all("a[href]")

    assert crawl(Plain).stats["pages"] == 2
