"""The Referer policy's shortcut for links to the page's own origin agrees with parsing."""

from __future__ import annotations

import pytest

from scraper.components.referer import referer_for, referer_parsed

PAGES = ["http://h.example/a/b?q=1", "https://h.example/", "http://h.example:8080/x",
         "http://u:p@h.example/a", "http://h.example/a#frag", "https://[::1]:8443/p",
         "http://h.example"]
TARGETS = ["http://h.example/c", "https://h.example/c", "http://h.example:8080/y",
           "http://h.example.evil/x", "http://h.example:80/z", "https://[::1]:8443/q",
           "http://other.example/", "http://h.example"]


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("target", TARGETS)
def test_shortcut_agrees_with_parsing(page: str, target: str) -> None:
    assert referer_for(page, target) == referer_parsed(page, target)


def test_policy() -> None:
    assert referer_for("http://h.example/a?q=1", "http://h.example/b") == \
        "http://h.example/a?q=1"
    assert referer_for("http://h.example/a?q=1", "http://o.example/") == "http://h.example/"
    assert referer_for("https://h.example/a", "http://h.example/a") is None
    assert referer_for("http://u:p@h.example/a", "http://h.example/b") == "http://h.example/a"
