"""URL canonicalisation: the dedup key."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scraper.urls import BadURL, canonicalize, origin


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
        ("http://example.com/%7euser?q=%2f", "http://example.com/%7Euser?q=%2F"),
        ("http://[::1]:8080/a", "http://[::1]:8080/a"),
        ("  http://example.com/a  ", "http://example.com/a"),
    ],
)
def test_canonical_forms(url: str, expected: str) -> None:
    assert canonicalize(url) == expected


@pytest.mark.parametrize(
    "url",
    ["javascript:void(0)", "mailto:a@b.c", "data:text/html,x", "ftp://example.com/",
     "http://[::1/a", "http:///path", "/relative", "http://exa mple.com/"],
)
def test_unfetchable_urls_raise_bad_url(url: str) -> None:
    with pytest.raises(BadURL):
        canonicalize(url)


def test_origin_has_explicit_port() -> None:
    assert origin("http://example.com/a") == "http://example.com:80"
    assert origin("https://example.com:8443/a") == "https://example.com:8443"
    assert origin("http://[::1]/a") == "http://[::1]:80"


@given(st.text())
def test_canonicalize_never_raises_anything_but_bad_url(text: str) -> None:
    with contextlib.suppress(BadURL):
        canonicalize(text)


@given(st.builds(
    "{}://{}{}/{}{}".format,
    st.sampled_from(["http", "HTTPS", "Http"]),
    st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?(\.[a-z]{2,5})?", fullmatch=True),
    st.sampled_from(["", ":80", ":443", ":8080"]),
    st.text(alphabet="abc./%20", max_size=20),
    st.sampled_from(["", "?a=1", "#frag", "?b=%2f#x"]),
))
def test_canonicalize_is_idempotent(url: str) -> None:
    try:
        once = canonicalize(url)
    except BadURL:
        return
    assert canonicalize(once) == once


@settings(max_examples=1000)
@given(st.builds(
    "{}://{}{}{}{}".format,
    st.sampled_from(["http", "https", "HTTP"]),
    st.text(alphabet="abcXYZ09.-:[]@", min_size=0, max_size=12),
    st.sampled_from(["", ":80", ":443", ":8080", ":", ":x"]),
    st.text(alphabet="/abc.%#?&= \t", max_size=16),
    st.sampled_from(["", "?a=1&b=2", "#x"]),
))
def test_fast_path_agrees_with_full_canonicalisation(url: str) -> None:
    """The shortcut for already-canonical URLs returns what the full path would."""
    from scraper.urls import _already_canonical

    if not _already_canonical(url, False):
        return
    canonicalize.cache_clear()
    try:
        full = canonicalize.__wrapped__(url + "#", False)  # '#' forces the full path
    except BadURL:
        pytest.fail(f"fast path accepted {url!r}, which the full path rejects")
    assert full == url
