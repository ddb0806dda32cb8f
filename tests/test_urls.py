"""URLs as browsers see them: WHATWG parsing and joining, `<base href>`, one key per page."""

from __future__ import annotations

import base64
import contextlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scraper.request import Request
from scraper.response import Response
from scraper.urls import (
    BadURL,
    canonical_host,
    canonicalize,
    dedup_key,
    hostname,
    join,
    origin,
    resolve,
    whatwg_href,
)

DATA = Path(__file__).parent / "data"


def page(url: str, html: str) -> Response:
    return Response(url, 200, {"content-type": "text/html; charset=utf-8"}, html.encode(),
                    Request(url))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTP://Example.COM/a", "http://example.com/a"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("http://example.com:8080/a", "http://example.com:8080/a"),
        ("http://example.com", "http://example.com/"),
        ("http://example.com/a/./b/../c", "http://example.com/a/c"),
        ("http://example.com/../../a", "http://example.com/a"),
        ("http://example.com/a/..", "http://example.com/"),
        ("http://example.com/a#frag", "http://example.com/a"),
        ("http://example.com/%7euser?q=%2f", "http://example.com/~user?q=%2F"),
        ("http://[::1]:8080/a", "http://[::1]:8080/a"),
        ("  http://example.com/a  ", "http://example.com/a"),
        ("http://example.com/a%2Fb/%3f", "http://example.com/a%2Fb/%3F"),  # reserved: kept
        ("http://example.com/a b/\u00e9", "http://example.com/a%20b/%C3%A9"),
        ("http://example.com/%zz|^", "http://example.com/%25zz%7C%5E"),
        ("http://exa\tmple.com/a\nb", "http://example.com/ab"),
        ("http://example.com/a\x00b", "http://example.com/a%00b"),  # as browsers send it
        ("http://[0:0:0:0:0:0:0:1]/", "http://[::1]/"),
        ("http://0x7f.1/", "http://127.0.0.1/"),
        ("http://2130706433/", "http://127.0.0.1/"),
        ("http://u:p@Example.com/", "http://u:p@example.com/"),
        ("http:///path", "http://path/"),  # WHATWG: special URLs skip extra slashes
    ],
)
def test_canonical_forms(url: str, expected: str) -> None:
    assert canonicalize(url) == expected


@pytest.mark.parametrize(
    "url",
    ["javascript:void(0)", "mailto:a@b.c", "data:text/html,x", "ftp://example.com/",
     "http://[::1/a", "/relative", "http://exa mple.com/", "http://example.com:65536/",
     "http://example.com:8o/", "http://1.2.3.256/", "http://a<b/", "",
     "http://", "http://%zz/"],
)
def test_unfetchable_urls_raise_bad_url(url: str) -> None:
    with pytest.raises(BadURL):
        canonicalize(url)


def test_origin_has_explicit_port_and_no_credentials() -> None:
    assert origin("http://example.com/a") == "http://example.com:80"
    assert origin("https://example.com:8443/a") == "https://example.com:8443"
    assert origin("http://[::1]/a") == "http://[::1]:80"
    assert origin("http://u:p%40x@example.com:81/") == "http://example.com:81"
    assert canonical_host("http://u:p@[::1]:81/") == "::1"


# -- the cases of the issue: each was a bug -------------------------------------------


def test_a_query_right_after_the_host_is_not_part_of_the_host() -> None:
    assert canonicalize("http://shop.example?next=/cart") == "http://shop.example/?next=/cart"
    assert canonical_host(canonicalize("http://shop.example?next=/cart")) == "shop.example"
    assert canonicalize("http://127.0.0.1?next=/secret") == "http://127.0.0.1/?next=/secret"
    # a redirect's Location goes through the same join
    assert resolve("http://a.example/x", "http://b.example#/x") == "http://b.example/"
    assert hostname("http://shop.example?next=/cart") == "shop.example"


def test_a_lone_surrogate_is_read_as_a_replacement_character() -> None:
    assert canonicalize("http://example.com/a\ud800b") == "http://example.com/a%EF%BF%BDb"
    assert resolve("http://example.com/", "x\udfff") == "http://example.com/x%EF%BF%BD"
    with pytest.raises(BadURL):
        canonicalize("http://exa\ud800mple.com/")  # U+FFFD is not allowed in a host


def test_a_lone_surrogate_does_not_lose_the_page_s_other_links() -> None:
    response = page("http://example.com/", "")
    requests = response.follow_all(["/a\ud800", "/b", "http://bad host/", "/c"])
    urls = [r.url for r in requests]
    assert urls[0] == "http://example.com/a%EF%BF%BD"
    assert urls[1] == "http://example.com/b" and urls[3] == "http://example.com/c"
    with pytest.raises(BadURL):  # kept for the scheduler to count as filtered_bad_url
        canonicalize(urls[2])


BASE_PAGE = """<html><head><base href="https://cdn.example/shop/"><base href="/ignored/">
</head><body><a href="item/1">1</a><a href="/top">top</a><a href="?page=2">2</a>
<a href="../up">up</a><a href="#x">fragment</a></body></html>"""


def test_base_href_is_honoured_by_urljoin_follow_and_follow_all() -> None:
    response = page("http://site.example/dir/page.html", BASE_PAGE)
    assert response.base_url == "https://cdn.example/shop/"
    assert response.urljoin("item/1") == "https://cdn.example/shop/item/1"
    assert response.follow("item/2").url == "https://cdn.example/shop/item/2"
    assert response.follow(response.css_first("a")).url == "https://cdn.example/shop/item/1"
    assert [r.url for r in response.follow_all("a")] == [
        "https://cdn.example/shop/item/1", "https://cdn.example/top",
        "https://cdn.example/shop/?page=2", "https://cdn.example/up"]
    assert [r.url for r in response.follow_all(["item/3"])] == [
        "https://cdn.example/shop/item/3"]


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<base href='../other/'>", "http://site.example/other/"),  # relative to the page
        ("<base target=_blank><base href='/b/'>", "http://site.example/b/"),  # first with href
        ("<base href='http://[bad/'>", "http://site.example/dir/page.html"),  # invalid
        ("<base href='data:text/html,x'>", "http://site.example/dir/page.html"),
        ("<base href='javascript:alert(1)'>", "http://site.example/dir/page.html"),
        ("<p>no base</p>", "http://site.example/dir/page.html"),
    ],
)
def test_base_url_rules(html: str, expected: str) -> None:
    assert page("http://site.example/dir/page.html", html).base_url == expected


def test_backslashes_are_slashes_in_http_urls() -> None:
    assert resolve("http://example.com/a/b", "images\\photo.jpg") == \
        "http://example.com/a/images/photo.jpg"
    assert resolve("http://example.com/a/b", "/\\evil.example/") == "http://evil.example/"
    assert canonicalize("http://example.com\\a\\b") == "http://example.com/a/b"


@pytest.mark.parametrize(
    "spellings",
    [
        ["http://example.com/?q=caf\u00e9&filter[color]=red",
         "http://example.com/?q=caf%C3%A9&filter[color]=red",
         "http://example.com/?q=caf%c3%a9&filter%5bcolor%5d=red"],
        ["http://example.com/list.php?", "http://Example.com/list.php?",
         "http://example.com/list.php", "http://example.com:0080/list.php#top"],
        ["http://example.com/~a/b", "http://example.com/%7Ea/%62", "http://example.com/%7ea/b"],
        ["https://example.com:443/", "https://example.com:00443", "https://EXAMPLE.com/"],
        ["http://straße.de/", "http://xn--strae-oqa.de/", "http://STRA\u00dfE.DE/"],
        ["http://[::1]/", "http://[0::1]/", "http://[0:0:0:0:0:0:0:1]:80/"],
        ["http://127.0.0.1/", "http://0177.0.0.1/", "http://127.1/", "http://0x7f000001/"],
    ],
)
def test_one_key_per_page(spellings: list[str]) -> None:
    keys = {canonicalize(url) for url in spellings}
    assert len(keys) == 1, keys


def test_idna_is_uts46_nontransitional() -> None:
    assert canonicalize("http://straße.de/") != canonicalize("http://strasse.de/")
    assert canonicalize("http://BÜCHER.de/") == "http://xn--bcher-kva.de/"


def test_ports_out_of_range_fail_at_parse_time() -> None:
    assert canonicalize("http://example.com:65535/") == "http://example.com:65535/"
    for url in ("http://example.com:65536/", "http://example.com:99999999999/"):
        with pytest.raises(BadURL):
            canonicalize(url)


def test_credentials_are_kept_apart_from_the_bare_url() -> None:
    with_credentials = canonicalize("http://me:secret@example.com/a")
    assert with_credentials == "http://me:secret@example.com/a"
    assert with_credentials != canonicalize("http://example.com/a")
    assert canonical_host(with_credentials) == "example.com"
    # a relative link on such a page keeps them (same origin), an absolute one does not
    assert resolve(with_credentials, "b") == "http://me:secret@example.com/b"
    assert resolve(with_credentials, "http://example.com/b") == "http://example.com/b"


def test_credentials_are_sent_as_basic_auth_to_that_server_only() -> None:
    from scraper.client import _split_credentials

    url, authorization = _split_credentials("http://me:p%40ss@example.com:81/a?b@c")
    assert url == "http://example.com:81/a?b@c"
    assert authorization == "Basic " + base64.b64encode(b"me:p@ss").decode()
    assert _split_credentials("http://example.com/a@b") == ("http://example.com/a@b", None)


def test_credentials_reach_the_server(server: Any) -> None:
    from conftest import crawl, link_spider

    server.add_page("/", ["/next"])
    server.add_page("/next")
    start = server.url("/").replace("http://", "http://me:hunter2@")
    result = crawl(link_spider(start))
    assert result.stats["pages"] == 2
    expected = "Basic " + base64.b64encode(b"me:hunter2").decode()
    assert [r.headers.get("authorization") for r in server.requests] == [expected] * 2


# -- session ids ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("http://a.example/x;jsessionid=0A1B2C?id=3", "http://a.example/x?id=3"),
        ("http://a.example/x;JSESSIONID=0A1B2C", "http://a.example/x"),
        ("http://a.example/x?PHPSESSID=abc&id=3", "http://a.example/x?id=3"),
        ("http://a.example/x?id=3&sid=9", "http://a.example/x?id=3"),
        ("http://a.example/x?sessionid=1&jsessionid=2", "http://a.example/x"),
        ("http://a.example/x?ASPSESSIONIDQSDTSQTA=KLM&a=1", "http://a.example/x?a=1"),
        ("http://a.example/x?side=1&sidebar=2&insider=3", "http://a.example/x?side=1&sidebar=2"
         "&insider=3"),
        ("http://a.example/session/sid?x=1", "http://a.example/session/sid?x=1"),
    ],
)
def test_dedup_key_strips_session_ids(url: str, key: str) -> None:
    assert dedup_key(canonicalize(url)) == key


def test_strip_session_ids_setting_defaults_on() -> None:
    from scraper.settings import Settings

    assert Settings().crawl.strip_session_ids is True


# -- conformance with published test data ---------------------------------------------


def _whatwg_cases() -> list[dict[str, Any]]:
    """WHATWG urltestdata.json cases whose result is an http(s) URL, or that fail on an
    http(s) input or base (what a crawler can meet)."""
    raw = json.loads((DATA / "urltestdata.json").read_text(encoding="utf-8"))
    cases = []
    for case in raw:
        if not isinstance(case, dict) or "relativeTo" in case:
            continue
        base = case.get("base")
        web = ("http://", "https://")
        if case.get("failure"):
            if case["input"].lower().startswith(web) or (base or "").startswith(web):
                cases.append(case)
        elif case["href"].startswith(web):
            cases.append(case)
    return cases


WHATWG_CASES = _whatwg_cases()

# Inputs that parse where WHATWG's current test data says they fail, or the reverse,
# because ada-url's release lags a recent change of the standard. Empty when they agree.
WHATWG_PARSER_DEVIATIONS: dict[str, str] = {}


def _spelled_once(href: str) -> str:
    """What our key deliberately changes in a WHATWG href, written independently of
    scraper.urls: the fragment and an empty query dropped (rule 4), escapes of unreserved
    characters decoded, others upper-cased, characters outside RFC 3986 escaped (rule 5)."""
    href = href.split("#", 1)[0]
    href = href[:-1] if href.endswith("?") and href.index("?") == len(href) - 1 else href
    scheme, rest = href.split("://", 1)
    slash = rest.index("/")
    authority, tail = rest[:slash], rest[slash:]
    out = []
    i = 0
    while i < len(tail):
        char = tail[i]
        if char == "%" and re.fullmatch(r"[0-9A-Fa-f]{2}", tail[i + 1:i + 3]):
            decoded = chr(int(tail[i + 1:i + 3], 16))
            out.append(decoded if re.fullmatch(r"[A-Za-z0-9._~-]", decoded)
                       else tail[i:i + 3].upper())
            i += 3
            continue
        if char in "[]|^{}\\\"<> `%" or ord(char) < 0x21 or ord(char) > 0x7E:
            out.append("".join(f"%{b:02X}" for b in char.encode()))
        else:
            out.append(char)
        i += 1
    return f"{scheme}://{authority}{''.join(out)}"


def test_whatwg_data_has_the_cases_a_crawler_meets() -> None:
    assert len(WHATWG_CASES) > 300
    assert sum(1 for case in WHATWG_CASES if case.get("failure")) > 100


@pytest.mark.parametrize("case", WHATWG_CASES, ids=lambda c: repr(c["input"])[:60])
def test_whatwg_url_conformance(case: dict[str, Any]) -> None:
    """Parsing and joining give the standard's href; the key is that href spelled once."""
    base = case.get("base")
    text = case["input"]
    if text in WHATWG_PARSER_DEVIATIONS:
        pytest.skip(WHATWG_PARSER_DEVIATIONS[text])
    if case.get("failure"):
        with pytest.raises(BadURL):
            canonicalize(text) if base is None else resolve(base, text)
        return
    href = case["href"]
    assert whatwg_href(text, base) == href
    key = canonicalize(text) if base is None else resolve(base, text)
    assert key == _spelled_once(href)
    assert canonicalize(href) == _spelled_once(href)


W3LIB = json.loads((DATA / "w3lib_canonicalize_url.json").read_text(encoding="utf-8"))
# w3lib.url.canonicalize_url's expected outputs that our keys deliberately differ from.
W3LIB_DEVIATIONS = {
    # w3lib re-encodes the query as form data; we keep the query's spelling, since '+' and
    # '%20' (or 'b=' and 'b', or ',' and '%2C') mean different things outside forms.
    "http://www.example.com/do?&a=1": "http://www.example.com/do?&a=1",
    "http://www.example.com/do?b=&c&a=2": "http://www.example.com/do?a=2&b=&c",
    "http://www.example.com/do?1750,4": "http://www.example.com/do?1750,4",
    "http://www.example.com/do?q=a space&a=1": "http://www.example.com/do?a=1&q=a%20space",
    "http://www.example.com/do?q=a%20space&a=1": "http://www.example.com/do?a=1&q=a%20space",
    # relative or non-http(s) URLs are not keys at all
    "a#frag": BadURL, "a?b=1#frag": BadURL, "?b=1": BadURL,
    "sftp://UsEr:PaSsWoRd@www.EXAMPLE.com/": BadURL,
    # w3lib keeps an invalid host as it is; WHATWG (UTS-46) encodes it
    "http://.éxamplé.com/résumé?q=résumé":
        "http://.xn--xampl-9raf.com/r%C3%A9sum%C3%A9?q=r%C3%A9sum%C3%A9",
}


@pytest.mark.parametrize(("url", "expected"), W3LIB["cases"], ids=lambda v: repr(v)[:50])
def test_w3lib_canonicalize_url_cases(url: str, expected: str) -> None:
    """w3lib sorts queries, so our keys are compared with `sort_query`."""
    wanted: Any = W3LIB_DEVIATIONS.get(url, expected)
    if wanted is BadURL:
        with pytest.raises(BadURL):
            canonicalize(url, sort_query=True)
    else:
        assert canonicalize(url, sort_query=True) == wanted


# -- properties -------------------------------------------------------------------------

ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)  # surrogates too


@settings(max_examples=500)
@given(ANY_TEXT, ANY_TEXT)
def test_nothing_but_bad_url_escapes(text: str, other: str) -> None:
    for call in (lambda: canonicalize(text), lambda: canonicalize("http://a.example/" + text),
                 lambda: canonicalize("http://" + text), lambda: join(other, text),
                 lambda: resolve("http://a.example/b/", text), lambda: resolve(other, text),
                 lambda: resolve("http://a.example/", "/" + text)):
        with contextlib.suppress(BadURL):
            result = call()
            assert isinstance(result, str)


URLISH = st.builds(
    "{}://{}{}{}/{}{}".format,
    st.sampled_from(["http", "HTTPS", "Http"]),
    st.sampled_from(["", "u:p@", "@"]),
    st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9.-]{0,10}[a-zA-Z0-9])?(\.[a-z]{2,5})?",
                  fullmatch=True),
    st.sampled_from(["", ":80", ":443", ":8080", ":0080", ":", ":65536"]),
    st.text(alphabet="abc./%20[]|'\\?&=~é\t", max_size=24),
    st.sampled_from(["", "?a=1", "#frag", "?b=%2f#x", "?", "?sid=1&a=2"]),
)


@settings(max_examples=500)
@given(URLISH)
def test_canonicalize_is_idempotent_and_resolve_agrees(url: str) -> None:
    try:
        once = canonicalize(url)
    except BadURL:
        return
    assert canonicalize(once) == once
    assert resolve("http://other.example/x/", url) == once
    assert dedup_key(dedup_key(once)) == dedup_key(once)


@settings(max_examples=1000)
@given(st.builds(
    "{}://{}{}{}{}".format,
    st.sampled_from(["http", "https", "HTTP"]),
    st.text(alphabet="abcXYZ09.-:[]@x", min_size=0, max_size=12),
    st.sampled_from(["", ":80", ":443", ":8080", ":", ":x", ":65536", ":99999"]),
    st.text(alphabet="/abc.%#?&= \t'~", max_size=16),
    st.sampled_from(["", "?a=1&b=2", "#x", "?"]),
))
def test_fast_path_agrees_with_full_canonicalisation(url: str) -> None:
    """The shortcut for already-canonical URLs returns what the full path would."""
    from scraper.urls import _already_canonical, _canonical_from_whatwg, whatwg_href

    if not _already_canonical(url, False):
        return
    try:
        full = _canonical_from_whatwg(whatwg_href(url), url, False)  # the full path
    except BadURL:
        pytest.fail(f"fast path accepted {url!r}, which the full path rejects")
    assert full == url


def assert_shortcut_agrees(base: str, href: str) -> None:
    """`resolve` (with its shortcuts) gives what the full WHATWG join gives."""
    from scraper.urls import _resolve_joined

    def outcome(join: Any) -> str | None:
        try:
            return str(join(base, href))
        except BadURL:
            return None

    assert outcome(resolve) == outcome(lambda b, h: _resolve_joined.__wrapped__(b, h, False))


@settings(max_examples=500)
@given(st.text(alphabet="/\\abc.%?#\t:@", max_size=16),
       st.sampled_from(["http://h.example/d/p", "https://h.example:8443/", "http://[::1]/x",
                        "http://u:p@h.example/", "http://h.example?q=/x"]))
def test_root_relative_shortcut_agrees_with_the_full_join(href: str, base: str) -> None:
    assert_shortcut_agrees(base, "/" + href)


@settings(max_examples=2000)
@given(st.text(alphabet="abc./?=&#:%\\ @~;-", max_size=20),
       st.sampled_from(["http://h.example/d/p", "https://h.example:8443/", "http://[::1]/x/",
                        "http://h.example/a/b/c?q=1", "http://h.example/", "http://10.0.0.1/a",
                        "http://h.example/a/./b", "https://h.example/a%20b/c",
                        "http://h.example/a/b/"]))
def test_relative_shortcut_agrees_with_the_full_join(href: str, base: str) -> None:
    """Plain path-relative links are joined without the WHATWG parser: the same result."""
    assert_shortcut_agrees(base, href)


@settings(max_examples=1000)
@given(st.builds("{}#{}".format, st.text(alphabet="htp:/.abc?=&%#[]@ ", max_size=24),
                 st.text(alphabet="abc#?/ %", max_size=6)))
def test_fragment_shortcut_agrees_with_the_full_path(url: str) -> None:
    from scraper.urls import _canonical_from_whatwg, whatwg_href

    url = "http://h.example/" + url
    try:
        fast = canonicalize.__wrapped__(url, False)
    except BadURL:
        fast = None
    try:
        full = _canonical_from_whatwg(whatwg_href(url), url, False)
    except BadURL:
        full = None
    assert fast == full


@settings(max_examples=1000)
@given(st.text(alphabet="abc./?=&#:%@~;-", max_size=20),
       st.sampled_from(["http://h.example/d/p", "http://h.example/a/b/c?q=1",
                        "http://h.example/", "http://10.0.0.1/a", "https://h.example:8443/x/",
                        "http://h.example/a/b/"]),
       st.sampled_from(["other.html", "x?y=1", "", "?q=2"]))
def test_the_join_cache_is_shared_by_a_directory_only(href: str, base: str,
                                                       sibling_name: str) -> None:
    """A path-relative link is cached per directory of the page: resolving it first from
    another page of the directory (another name, another query) changes nothing."""
    sibling = base[:base.split("?")[0].rfind("/") + 1] + sibling_name
    with contextlib.suppress(BadURL):
        resolve(sibling, href)
    assert_shortcut_agrees(base, href)


def test_relative_links_resolve_against_their_own_directory() -> None:
    assert resolve("http://h.example/a/b/x.html", "../c.html") == "http://h.example/a/c.html"
    assert resolve("http://h.example/a/y.html?q=1", "../c.html") == "http://h.example/c.html"
    assert resolve("http://h.example/a/b/x.html", "../c.html#top") == \
        "http://h.example/a/c.html"
    assert resolve("http://h.example/a/b/", "./../../../c/./d/../e?x=1#f") == \
        "http://h.example/c/e?x=1"
    assert resolve("http://h.example/a/b/", "..") == "http://h.example/a/"
    assert resolve("http://h.example/a/b/", ".hidden/x") == "http://h.example/a/b/.hidden/x"
    assert resolve("http://h.example/a/b/", "c/.../d") == "http://h.example/a/b/c/.../d"


def test_a_link_request_is_a_plain_request() -> None:
    def callback(response: Any) -> None:
        return None

    made = Request._link("http://h.example/a", callback)
    plain = Request("http://h.example/a", callback)
    assert {name: getattr(made, name) for name in Request.__slots__} == \
        {name: getattr(plain, name) for name in Request.__slots__}
    assert made.meta is not Request._link("http://h.example/b", None).meta


def test_follow_all_keeps_request_arguments() -> None:
    response = page("http://h.example/d/p", '<a href="q">q</a><a href="/r">r</a>')
    requests = response.follow_all("a", meta={"k": 1}, priority=3, dont_filter=True)
    assert [(r.url, r.meta, r.priority, r.dont_filter) for r in requests] == [
        ("http://h.example/d/q", {"k": 1}, 3, True), ("http://h.example/r", {"k": 1}, 3, True)]


ADMITTED_URLS = st.builds(
    "{}://{}{}{}".format,
    st.sampled_from(["http", "https", "ftp"]),
    st.sampled_from(["h.example", "sub.h.example", "h.example.evil", "evil", "u@h.example",
                     "h.example@evil", "h.example:8080", "xh.example", "H.Example"]),
    st.sampled_from(["/", "/a/b", "/a/a/a/a/a", "/a/b/a/b/a/b/a/b", "/" + "x" * 90,
                     "/p?next=/a/a/a/a/a", "/%7Ea", "/a b"]),
    st.sampled_from(["", "?q=1", "#f", "?b=2&a=1"]))


@settings(max_examples=300)
@given(st.lists(st.tuples(ADMITTED_URLS, st.integers(0, 3)), max_size=12),
       st.sampled_from([frozenset({"h.example"}), frozenset()]),
       st.booleans(), st.sampled_from([(0, 0), (64, 3), (2083, 2)]))
def test_admitting_a_batch_agrees_with_each_request_alone(
        links: list[tuple[str, int]], allowed: frozenset[str], sort_query: bool,
        limits: tuple[int, int]) -> None:
    """`Admission.admit` (with what a batch shares worked out once) decides and counts as
    `reason_to_skip` does for each request alone."""
    from scraper.frontier.admission import Admission
    from scraper.frontier.base import FrontierOptions
    from scraper.stats import Stats

    options = FrontierOptions(per_host=1, allowed_domains=allowed, depth_limit=2,
                              sort_query=sort_query, max_url_length=limits[0],
                              max_repeated_segments=limits[1])

    def requests() -> list[Request]:
        made = []
        for url, depth in links:
            request = Request(url)
            request.depth = depth
            made.append(request)
        return made

    stats = Stats()
    admitted = Admission(options, stats).admit(requests())
    alone = Admission(options, Stats())
    expected = []
    reasons: dict[str, int] = {}
    for request in requests():
        reason = alone.reason_to_skip(request)
        if reason is None:
            expected.append(request.url)
        else:
            reasons[reason] = reasons.get(reason, 0) + 1
    assert [r.url for r in admitted] == expected
    counts = stats.snapshot()
    assert {k: counts.get(k, 0) for k in reasons} == reasons
    assert sum(counts.get(k, 0) for k in ("filtered_bad_url", "filtered_trap",
                                          "filtered_offsite", "filtered_depth")) == \
        sum(reasons.values())


# -- end to end ---------------------------------------------------------------------------


def test_a_link_or_redirect_with_a_query_after_the_host_fetches_the_root(server: Any) -> None:
    from conftest import crawl, link_spider

    origin_url = server.url("/").rstrip("/")
    server.add_page("/", [f"{origin_url}?next=/secret", "/moved"])
    server.add_redirect("/moved", f"{origin_url}?next=/secret2")
    server.add_page("/secret")
    server.add_page("/secret2")
    crawl(link_spider(server.url("/")))
    targets = {r.path for r in server.requests}
    assert "/?next=/secret" in targets and "/?next=/secret2" in targets
    assert "/secret" not in targets and "/secret2" not in targets


def test_the_fetch_command_parses_urls_as_the_crawler_does(server: Any) -> None:
    from click.testing import CliRunner

    from scraper.cli import main

    server.add_page("/")
    url = server.url("/").rstrip("/") + "?next=/secret"
    result = CliRunner().invoke(main, ["fetch", url])
    assert result.exit_code == 0, result.output
    assert [r.path for r in server.requests] == ["/?next=/secret"]
